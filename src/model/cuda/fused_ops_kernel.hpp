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

// One token's rows of the projections: q, k, v each [heads * head_dim]
// elements at row * its stride.
struct QkvRows {
  const void* q;
  const void* k;
  const void* v;
  int64_t q_stride, k_stride, v_stride;
};

// RoPE (rotate-half, HF's layout): q rotated into q_out [rows, heads, head_dim],
// k rotated and v copied into the caches' rows write_rows[row] ([*, kv_heads, head_dim]).
// cos/sin: float32 tables [positions, head_dim].
cudaError_t launch_rope_and_cache_write(ElementType type, const QkvRows& in, void* q_out, const float* cos, const float* sin,
                                        const int64_t* positions, const int64_t* write_rows, void* cache_k, void* cache_v,
                                        int64_t rows, int heads, int kv_heads, int head_dim, cudaStream_t stream);

// out [rows, width] = silu(gate) * up; gate and up rows at row * their strides.
cudaError_t launch_silu_mul(ElementType type, const void* gate, int64_t gate_stride, const void* up, int64_t up_stride, void* out,
                            int64_t rows, int64_t width, cudaStream_t stream);

}  // namespace t2::model::cuda
