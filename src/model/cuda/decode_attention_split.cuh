// What both partial kernels of decode attention share: the block shape and
// how a row's visible keys are cut into splits (one split per block).
#pragma once

#include <cstdint>

#include "decode_attention_kernel.hpp"

namespace t2::model::cuda {

constexpr int kWarps = 4;
constexpr int kThreads = kWarps * 32;
constexpr int kMaxGroup = 8;  // query heads per KV head
constexpr float kLog2e = 1.4426950408889634f;  // scores are kept in log2 units: exp2 is one instruction

struct KeyRange {
  int64_t begin, end;  // visible keys [begin, end)
};

__device__ inline KeyRange visible_keys(const int64_t* lengths, int n, int window) {
  const int64_t end = lengths[n];
  const int64_t begin = window > 0 && end > window ? end - window : 0;
  return {begin, end};
}

// A row's visible keys in `splits` even parts of whole granules (one
// division per block: 64-bit division is slow on the GPU), so that a short
// row leaves its last splits empty.
struct Splits {
  KeyRange keys;
  int64_t per_split;

  __device__ Splits(const KeyRange& visible, int splits)
      : keys(visible),
        per_split(((visible.end - visible.begin + kDecodeSplitGranule - 1) / kDecodeSplitGranule + splits - 1) / splits *
                  kDecodeSplitGranule) {}

  __device__ KeyRange operator[](int split) const {
    const int64_t begin = keys.begin + split * per_split;
    return {begin, min(keys.end, begin + per_split)};
  }
  // The splits that hold keys: a prefix.
  __device__ int used() const { return static_cast<int>((keys.end - keys.begin + per_split - 1) / per_split); }
};

// A split's softmax partials for the merge, per (row, query head, split):
// the unnormalised sums over head_dim, the max (log2 units) and the sum of
// exp2(score - max); [rows, heads, splits](, head_dim).
struct Partials {
  float* acc;
  float* max;
  float* sum;

  __device__ static int64_t row(const DecodeAttentionArgs& a, int n, int head, int split) {
    return (static_cast<int64_t>(n) * a.heads + head) * a.splits + split;
  }
  __device__ void store(const DecodeAttentionArgs& a, int n, int head, int split, int d, float value, float best,
                        float total) const {
    const int64_t r = row(a, n, head, split);
    acc[r * a.head_dim + d] = value;
    if (d == 0) max[r] = best, sum[r] = total;
  }
};

}  // namespace t2::model::cuda
