// The launch interface of the fused elementwise kernels of a decoder layer,
// free of ATen so that nvcc compiles only the kernels; src/model/fused_ops.cpp
// checks the tensors and calls it.
#pragma once

#include <cstdint>

#include <cuda_runtime_api.h>

#include "decode_attention_kernel.hpp"  // ElementType

namespace t2::model::cuda {

// hidden [rows, width] += delta (when not null), then
// out = (hidden * rsqrt(mean(hidden²) + eps)) * weight, each step rounded to the element type as HF's LlamaRMSNorm.
cudaError_t launch_add_rms_norm(ElementType type, void* hidden, const void* delta, const void* weight, void* out, int64_t rows,
                                int64_t width, float eps, cudaStream_t stream);

// RoPE (rotate-half, HF's layout) on q [rows, heads, head_dim] in place, and
// k rotated and v copied into the caches' rows write_rows[row] ([*, kv_heads, head_dim]).
// cos/sin: float32 tables [positions, head_dim].
cudaError_t launch_rope_and_cache_write(ElementType type, void* q, const void* k, const void* v, const float* cos, const float* sin,
                                        const int64_t* positions, const int64_t* write_rows, void* cache_k, void* cache_v,
                                        int64_t rows, int heads, int kv_heads, int head_dim, cudaStream_t stream);

// out [rows, width] = silu(gate) * up.
cudaError_t launch_silu_mul(ElementType type, const void* gate, const void* up, void* out, int64_t rows, int64_t width,
                            cudaStream_t stream);

}  // namespace t2::model::cuda
