// Attention of single-token decode rows over their KV-cache slots, reading
// only each slot's used positions, with lengths and slots taken from device
// tensors (so a CUDA graph replays it for any lengths). A CUDA kernel where
// the build has one (T2_CUDA_KERNELS); elsewhere the caller uses SDPA.
#pragma once

#include <cstdint>
#include <optional>

#include <ATen/ATen.h>

namespace t2::model {

// True when decode_attention runs for tensors on `device` with this head layout.
bool decode_attention_available(const at::Device& device, int64_t group, int64_t head_dim);

// q [N, heads, D]; cache_k/v [slots, capacity, kv_heads, D]; slots, key_lengths [N] int64 on the device.
// Row n attends to keys [max(0, len - window), len) of its slot, len = key_lengths[n]. Returns [N, heads * D].
at::Tensor decode_attention(const at::Tensor& q, const at::Tensor& cache_k, const at::Tensor& cache_v,
                            const at::Tensor& slots, const at::Tensor& key_lengths, std::optional<int64_t> window,
                            double scale);

}  // namespace t2::model
