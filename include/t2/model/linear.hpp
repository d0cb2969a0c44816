// The linear maps of inference: x Wᵀ + b. For the few rows of a decode step
// on CUDA, a kernel that streams W once at close to the memory bandwidth
// (cuBLAS's GEMM reads it more slowly at those shapes); elsewhere, and under
// autograd, at::linear.
#pragma once

#include <ATen/ATen.h>

namespace t2::model {

// x [N, in], weight [out, in], bias [out] or undefined -> [N, out] in x's dtype.
at::Tensor linear(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& bias = {});

// Whether `linear` runs t2's kernel for these operands (tests compare the two paths).
bool uses_small_batch_kernel(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& bias = {});

}  // namespace t2::model
