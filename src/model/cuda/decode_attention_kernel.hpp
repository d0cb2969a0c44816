// The launch interface of the decode-attention kernels, free of ATen so that
// nvcc compiles only the kernels; src/model/decode_attention.cpp checks the
// tensors and calls it.
#pragma once

#include <cstdint>

#include <cuda_runtime_api.h>

namespace t2::model::cuda {

// A split's keys are a multiple of this many.
constexpr int kDecodeSplitGranule = 64;

enum class ElementType { kFloat32, kFloat16, kBFloat16 };

struct DecodeAttentionArgs {
  const int64_t* slots;    // [rows] cache slot of each query row
  const int64_t* lengths;  // [rows] visible keys: the row's position + 1
  int rows, heads, kv_heads, group, head_dim;
  int64_t capacity;        // positions per cache slot
  int splits;              // blocks per row and KV head, each over an even share of the row's keys (decode_attention_splits)
  int team;                // lanes that share one key (set by the launcher)
  int window;              // sliding window (keys), 0 = none
  float scale;             // softmax scale, 1/sqrt(head_dim)
};

// Query-heads-per-KV-head and head sizes the kernels handle. The query and
// cache rows must start on 16-byte boundaries.
bool decode_attention_supports(int group, int head_dim);

// The splits for a step of this shape (rows, kv_heads, group, head_dim, capacity):
// enough blocks for one wave of the GPU, fixed by the shape so that a graph serves any lengths.
int decode_attention_splits(const DecodeAttentionArgs& shape, ElementType type);

// q [rows, heads, head_dim]; caches [slots, capacity, kv_heads, head_dim];
// out [rows, heads, head_dim]; the partials [rows, heads, splits](, head_dim) are scratch.
cudaError_t launch_decode_attention(const DecodeAttentionArgs& args, ElementType type, const void* q, const void* k_cache,
                                    const void* v_cache, float* part_acc, float* part_max, float* part_sum, void* out,
                                    cudaStream_t stream);

}  // namespace t2::model::cuda
