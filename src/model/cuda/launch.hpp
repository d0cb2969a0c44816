// What the ATen-side wrappers of t2's kernels share: the element type of a
// tensor, the stream to launch on, and launch errors as t2::Error.
#pragma once

#include <cstdint>
#include <string>

#include <ATen/ATen.h>
#include <c10/cuda/CUDAStream.h>

#include "decode_attention_kernel.hpp"  // ElementType
#include "t2/common/errors.hpp"

namespace t2::model::cuda {

inline ElementType element_type(const at::Tensor& t) {
  switch (t.scalar_type()) {
    case at::kFloat: return ElementType::kFloat32;
    case at::kHalf: return ElementType::kFloat16;
    case at::kBFloat16: return ElementType::kBFloat16;
    default: throw Error(std::string("t2's CUDA kernels do not support ") + c10::toString(t.scalar_type()));
  }
}

// t2's kernels stream 16-byte vectors: their tensors must start on a 16-byte boundary.
inline bool aligned16(const at::Tensor& t) { return reinterpret_cast<uintptr_t>(t.data_ptr()) % 16 == 0; }

inline cudaStream_t stream_of(const at::Tensor& t) { return c10::cuda::getCurrentCUDAStream(t.get_device()); }

inline void check_launch(cudaError_t status, const char* kernel) {
  if (status != cudaSuccess) throw Error(std::string(kernel) + ": " + cudaGetErrorString(status));
}

}  // namespace t2::model::cuda
