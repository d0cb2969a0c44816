#include "t2/svf/adapter.hpp"

#include <cmath>

#include "t2/common/errors.hpp"
#include "t2/svf/compose.hpp"

namespace t2::svf {

std::shared_ptr<const Adapter> dense_adapter(std::shared_ptr<const model::ProjectionSet> weights) {
  if (!weights) return nullptr;
  auto adapter = std::make_shared<Adapter>();
  // Unique while the weights live, which the adapter itself guarantees.
  adapter->key = "composed@" + std::to_string(reinterpret_cast<uintptr_t>(weights.get()));
  adapter->dense = std::move(weights);
  return adapter;
}

at::Tensor svf_scale(const SvdFactors& f, const at::Tensor& z, const std::string& matrix) {
  // sum(s * z) is what the normalisation divides by: it must be finite and positive.
  const double total = (f.s.to(at::kDouble) * z.to(f.s.device(), at::kDouble)).sum().item<double>();
  if (!std::isfinite(total) || total <= 0) {
    throw InvalidArgument("mixture", "the z for '" + matrix + "' gives singular values that sum to " + std::to_string(total));
  }
  return scaled_singular_values(f.s, z).to(f.U.scalar_type());
}

}  // namespace t2::svf
