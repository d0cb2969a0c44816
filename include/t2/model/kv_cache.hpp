// The KV cache: keys and values of every layer for a fixed number of sequence
// slots. A sequence owns one slot from allocate() to release(); the scheduler
// may add and remove sequences between decode steps.
#pragma once

#include <cstdint>
#include <vector>

#include <ATen/ATen.h>

#include "t2/model/config.hpp"
#include "t2/model/weights.hpp"

namespace t2::model {

class KVCache {
 public:
  // Preallocates [max_sequences, capacity, kv_heads, head_dim] per layer for K and V.
  KVCache(const ModelConfig& config, int64_t max_sequences, int64_t capacity, const Placement& placement);

  // A free slot, emptied; throws t2::Error when all are taken.
  int64_t allocate();
  void release(int64_t slot);
  int64_t free_slots() const;

  int64_t length(int64_t slot) const { return lengths_.at(static_cast<size_t>(slot)); }
  int64_t capacity() const { return capacity_; }
  int64_t max_sequences() const { return static_cast<int64_t>(lengths_.size()); }
  int64_t bytes() const;

  // Copies the first `length` positions of `from` into `to` (for shared prompt prefixes).
  void copy_prefix(int64_t from, int64_t to, int64_t length);

  // For the forward pass: the tensors of one layer and the bookkeeping.
  at::Tensor& keys(int64_t layer) { return keys_[static_cast<size_t>(layer)]; }
  at::Tensor& values(int64_t layer) { return values_[static_cast<size_t>(layer)]; }
  void advance(int64_t slot, int64_t tokens);
  void check_in_use(int64_t slot) const;

 private:
  int64_t capacity_;
  std::vector<at::Tensor> keys_;
  std::vector<at::Tensor> values_;
  std::vector<int64_t> lengths_;
  std::vector<bool> in_use_;
};

}  // namespace t2::model
