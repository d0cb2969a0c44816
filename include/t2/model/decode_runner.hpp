// Decode steps at fixed shapes, split into prepare and execute. Prepare pads
// the step's rows to a batch bucket and stages their tokens, positions,
// slots and adapter rows into persistent device buffers with one copy;
// execute is Transformer::decode over those buffers. On CUDA, execute is
// captured once per (bucket, weights) as a CUDA graph and replayed, so a step
// costs one graph launch instead of about a thousand kernel launches; the
// per-row adapter path is a gather from device tensors, so one graph serves
// any mix of experts. Elsewhere execute runs eagerly (same shapes and
// padding, which the tests compare against the plain forward).
#pragma once

#include <cstdint>
#include <list>
#include <memory>
#include <string>
#include <vector>

#include <ATen/ATen.h>

#include "t2/model/adapter_batch.hpp"
#include "t2/model/kv_cache.hpp"
#include "t2/model/transformer.hpp"

namespace t2::model {

struct DecodeRow {
  int64_t slot = 0;          // KV-cache slot (allocated), which gets the token appended
  int64_t token = 0;
  int64_t adapter_slot = 0;  // scale-table row when the weights are factored
};

class DecodeRunner {
 public:
  // Takes one slot of `cache` for the padding rows. `max_rows` bounds a step.
  DecodeRunner(const Transformer& model, KVCache& cache, int64_t max_rows, bool use_graphs);
  ~DecodeRunner();
  DecodeRunner(const DecodeRunner&) = delete;
  DecodeRunner& operator=(const DecodeRunner&) = delete;

  // Appends each row's token to its slot and returns logits [rows, vocab]
  // (float32, as Transformer::forward). The tensor is the runner's: read it
  // before the next run. `weights.token_slots` is ignored (rows carry theirs).
  at::Tensor run(const std::vector<DecodeRow>& rows, const StepWeights& weights);

  // Captures the graphs of the smallest buckets (up to half the graphs the
  // runner keeps) for `weights` now, so the first steps that need them do not
  // pay for the captures. Returns how many it captured; none without graphs.
  int64_t capture(const StepWeights& weights);

  // The batch sizes a step is padded to.
  const std::vector<int64_t>& buckets() const { return buckets_; }
  bool uses_graphs() const { return use_graphs_; }
  int64_t captured_graphs() const { return captured_; }

 private:
  struct Graph;      // a captured step and what it holds alive
  struct CopyFence;  // when the last staged inputs reached the device
  // Prepare: stages the rows and `padded - rows` padding rows; returns the longest key span.
  int64_t stage(const std::vector<DecodeRow>& rows, int64_t padded);
  // Execute over the staged rows: the step's logits [padded, vocab].
  at::Tensor execute(int64_t padded, int64_t max_key_length, const StepWeights& weights);
  Graph& graph_for(const std::string& key, const DecodeInputs& inputs, const AdapterBatch& batch, const StepWeights& weights);

  const Transformer& model_;
  KVCache& cache_;
  bool use_graphs_;
  int64_t pad_slot_;
  std::vector<int64_t> buckets_;
  at::Tensor staging_;  // [4, max_rows] int64 on the host (pinned on CUDA): tokens, positions, slots, adapter slots
  at::Tensor inputs_;   // the same on the model's device
  std::unique_ptr<CopyFence> fence_;  // the host waits on it before rewriting staging_
  std::list<std::unique_ptr<Graph>> graphs_;  // most recently used first
  int64_t captured_ = 0;
};

}  // namespace t2::model
