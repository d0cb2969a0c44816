// The launch interface of the GEMV kernel, free of ATen so that nvcc compiles
// only the kernel; src/model/linear.cpp checks the tensors.
#pragma once

#include <cstdint>

#include <cuda_runtime_api.h>

#include "decode_attention_kernel.hpp"  // ElementType

namespace t2::model::cuda {

// y [out] = w [out, in] @ x [in] (+ bias [out] when not null), accumulated in
// float32. Half or bfloat16 only; in % 8 == 0 and every pointer 16-byte
// aligned (the wrapper checks).
cudaError_t launch_gemv(ElementType type, const void* x, const void* w, const void* bias, void* y, int64_t in, int64_t out,
                        cudaStream_t stream);

}  // namespace t2::model::cuda
