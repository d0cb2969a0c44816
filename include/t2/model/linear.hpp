// The linear maps of inference: x Wᵀ + b. For the single token of a batch-1
// decode step on CUDA, a GEMV kernel: cuBLAS's GEMM costs at least about
// 15 µs a call, twice what streaming a 4096×4096 bf16 matrix takes
// (bench/linear_bench.cpp measures both). With more rows cuBLAS's tensor-core
// kernels win, and under autograd or on the CPU it is at::linear as well.
#pragma once

#include <ATen/ATen.h>

namespace t2::model {

// x [N, in], weight [out, in], bias [out] or undefined -> [N, out] in x's dtype.
at::Tensor linear(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& bias = {});

// Whether `linear` runs t2's GEMV kernel for these operands (tests compare the two paths).
bool uses_gemv_kernel(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& bias = {});

}  // namespace t2::model
