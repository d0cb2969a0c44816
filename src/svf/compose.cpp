#include "t2/svf/compose.hpp"

namespace t2::svf {

at::Tensor scaled_singular_values(const at::Tensor& s, const at::Tensor& z) {
  // float32 at least; float64 stays float64 (gradient checks).
  const auto precision = at::promote_types(s.scalar_type(), at::kFloat);
  const at::Tensor s32 = s.to(precision);
  const at::Tensor scaled = s32 * z.to(s32.device(), precision);
  return scaled * (s32.sum() / scaled.sum());
}

at::Tensor compose(const at::Tensor& U, const at::Tensor& s, const at::Tensor& Vh, const at::Tensor& z) {
  return at::matmul(U * scaled_singular_values(s, z).to(U.scalar_type()), Vh);
}

}  // namespace t2::svf
