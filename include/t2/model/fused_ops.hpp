// Fused elementwise steps of a decoder layer (residual add + RMSNorm, RoPE
// with the KV-cache write, SwiGLU), each one kernel on CUDA or one loop on
// the CPU (float32) instead of several eager ops. Inference only (no
// autograd); elsewhere the transformer runs the same math as eager ATen ops.
#pragma once

#include <ATen/ATen.h>

namespace t2::model {

// CUDA in a build with t2's kernels (float32, float16, bfloat16), or the CPU in float32.
bool fused_ops_available(const at::Device& device, at::ScalarType dtype);

// hidden += delta (when defined), in place; returns rms_norm(hidden) * weight.
at::Tensor add_rms_norm(at::Tensor& hidden, const at::Tensor& delta, const at::Tensor& weight, double eps);

// Returns q rotated ([N, heads, D]); rotates k into cache_k's rows write_rows
// and copies v into cache_v's (caches [slots, capacity, kv_heads, D]).
// q [N, heads * D], k and v [N, kv_heads * D] may be column blocks of one
// stacked projection output (rows strided, columns dense).
// cos/sin: float32 tables [positions, D]; positions, write_rows: [N] int64.
at::Tensor rope_and_cache_write(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const at::Tensor& cos,
                                const at::Tensor& sin, const at::Tensor& positions, const at::Tensor& write_rows,
                                at::Tensor& cache_k, at::Tensor& cache_v);

// silu(gate) * up, [N, width] each (rows may be strided, as column blocks of one output).
at::Tensor silu_mul(const at::Tensor& gate, const at::Tensor& up);

}  // namespace t2::model
