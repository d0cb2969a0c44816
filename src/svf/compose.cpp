#include "t2/svf/compose.hpp"

namespace t2::svf {

at::Tensor compose(const at::Tensor& U, const at::Tensor& s, const at::Tensor& Vh, const at::Tensor& z) {
  const at::Tensor s32 = s.to(at::kFloat);
  const at::Tensor scaled = s32 * z.to(at::kFloat);
  const at::Tensor singular = scaled * (s32.sum() / scaled.sum());
  return at::matmul(U * singular.to(U.scalar_type()), Vh);
}

}  // namespace t2::svf
