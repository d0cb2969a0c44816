// The launch interface of the small-batch linear kernel, free of ATen so that
// nvcc compiles only the kernel; src/model/linear.cpp checks the tensors.
#pragma once

#include <cstdint>

#include <cuda_runtime_api.h>

#include "decode_attention_kernel.hpp"  // ElementType

namespace t2::model::cuda {

// The most rows (tokens) one launch takes.
constexpr int kSmallBatchMaxRows = 16;

// y [rows, out] = x [rows, in] @ w[out, in]ᵀ (+ bias [out] when not null),
// accumulated in float32. Half or bfloat16 only; in % 8 == 0 and every
// pointer 16-byte aligned (the wrapper checks).
cudaError_t launch_small_batch_linear(ElementType type, const void* x, const void* w, const void* bias, void* y, int rows,
                                      int64_t in, int64_t out, cudaStream_t stream);

}  // namespace t2::model::cuda
