#include "t2/model/linear.hpp"

#include <cstdint>

#include <ATen/core/grad_mode.h>

#ifdef T2_CUDA_KERNELS
#include "cuda/launch.hpp"
#include "cuda/gemv_kernel.hpp"
#endif

namespace t2::model {

#ifdef T2_CUDA_KERNELS

bool uses_gemv_kernel(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& bias) {
  const bool tracked = at::GradMode::is_enabled() && (x.requires_grad() || weight.requires_grad() ||
                                                      (bias.defined() && bias.requires_grad()));
  const auto type = x.scalar_type();
  return !tracked && x.is_cuda() && (type == at::kBFloat16 || type == at::kHalf) && x.dim() == 2 && x.size(0) == 1 && weight.dim() == 2 && weight.scalar_type() == type &&
         weight.device() == x.device() && weight.size(1) == x.size(1) && x.size(1) % 8 == 0 && weight.is_contiguous() &&
         cuda::aligned16(weight) && (!bias.defined() || (bias.scalar_type() == type && bias.is_contiguous() && bias.dim() == 1));
}

at::Tensor linear(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& bias) {
  if (!uses_gemv_kernel(x, weight, bias)) return bias.defined() ? at::linear(x, weight, bias) : at::linear(x, weight);
  at::Tensor input = x.contiguous();
  if (!cuda::aligned16(input)) input = input.clone();
  at::Tensor y = at::empty({1, weight.size(0)}, x.options());
  cuda::check_launch(cuda::launch_gemv(cuda::element_type(x), input.data_ptr(), weight.data_ptr(),
                                       bias.defined() ? bias.data_ptr() : nullptr, y.data_ptr(), x.size(1), weight.size(0),
                                       cuda::stream_of(x)),
                     "GEMV kernel");
  return y;
}

#else

bool uses_gemv_kernel(const at::Tensor&, const at::Tensor&, const at::Tensor&) { return false; }

at::Tensor linear(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& bias) {
  return bias.defined() ? at::linear(x, weight, bias) : at::linear(x, weight);
}

#endif

}  // namespace t2::model
