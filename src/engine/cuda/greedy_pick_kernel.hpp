// The launch interface of the greedy-pick kernel, free of ATen so that nvcc
// compiles only the kernel; src/engine/device_sampler.cpp checks the tensor.
#pragma once

#include <cstdint>

#include <cuda_runtime_api.h>

namespace t2::engine::cuda {

// Per row of float32 logits [rows, vocab] (row_stride apart, columns
// contiguous), into out [rows, 3] as doubles: the argmax (ties to the lowest
// id), its logprob (logit - logsumexp) and 1 if every logit is finite, else 0.
// The columns of sample_on_device's table, in one launch.
cudaError_t launch_greedy_pick(const float* logits, int64_t rows, int64_t vocab, int64_t row_stride, double* out,
                               cudaStream_t stream);

}  // namespace t2::engine::cuda
