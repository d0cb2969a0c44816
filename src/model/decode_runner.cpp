#include "t2/model/decode_runner.hpp"

#include <algorithm>

#include "t2/common/errors.hpp"

#ifdef T2_CUDA_KERNELS
#include <ATen/cuda/CUDAEvent.h>
#include <ATen/cuda/CUDAGraph.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#endif

namespace t2::model {
namespace {

constexpr int64_t kMaxGraphs = 48;

enum Input : int64_t { kTokens, kPositions, kSlots, kAdapterSlots, kInputs };

// 1, 2, 4, 8, 16, then steps of 16 (padding costs little in a bandwidth-bound
// step), and max_rows itself.
std::vector<int64_t> batch_buckets(int64_t max_rows) {
  std::vector<int64_t> buckets;
  for (int64_t b = 1; b < max_rows && b <= 16; b *= 2) buckets.push_back(b);
  for (int64_t b = 32; b < max_rows; b += 16) buckets.push_back(b);
  buckets.push_back(max_rows);
  return buckets;
}

// Names the weights a graph was captured with: the dense set's address (kept
// alive by the graph), or the table and which matrices are factored.
std::string weights_key(const StepWeights& w) {
  if (w.dense != nullptr) return "dense:" + std::to_string(reinterpret_cast<uintptr_t>(w.dense));
  std::string key = "factored:" + std::to_string(reinterpret_cast<uintptr_t>(w.table)) + ":";
  for (const bool adapted : w.adapted) key += adapted ? '1' : '0';
  return key;
}

}  // namespace

struct DecodeRunner::Graph {
  std::string key;
  std::shared_ptr<const void> owner;  // the dense weights the graph reads
  at::Tensor logits;                  // the graph's output
#ifdef T2_CUDA_KERNELS
  at::cuda::CUDAGraph graph;
#endif
};

// The copy from pinned staging memory is asynchronous: the host must not
// rewrite the buffer until the device has read it.
struct DecodeRunner::CopyFence {
#ifdef T2_CUDA_KERNELS
  at::cuda::CUDAEvent copied;
  void record() { copied.record(); }
  void wait() { copied.synchronize(); }
#else
  void record() {}
  void wait() {}
#endif
};

DecodeRunner::DecodeRunner(const Transformer& model, KVCache& cache, int64_t max_rows, bool use_graphs)
    : model_(model),
      cache_(cache),
      use_graphs_(use_graphs),
      pad_slot_(cache.allocate()),
      buckets_(batch_buckets(max_rows)),
      fence_(std::make_unique<CopyFence>()) {
  if (max_rows < 1) throw InvalidArgument("max_batch", "a decode runner needs at least one row");
  const at::Device device = model.placement().device;
#ifdef T2_CUDA_KERNELS
  if (use_graphs_ && !device.is_cuda()) throw InvalidArgument("decode_graphs", "CUDA graphs need a CUDA device");
#else
  if (use_graphs_) throw InvalidArgument("decode_graphs", "this build has no CUDA support for graphs");
#endif
  const auto host = at::TensorOptions().dtype(at::kLong).pinned_memory(device.is_cuda());
  staging_ = at::zeros({kInputs, max_rows}, host);
  inputs_ = device.is_cpu() ? staging_ : at::zeros({kInputs, max_rows}, host.device(device).pinned_memory(false));
}

DecodeRunner::~DecodeRunner() {
  graphs_.clear();  // before the cache slot goes: graphs write into the cache
  cache_.release(pad_slot_);
}

at::Tensor DecodeRunner::run(const std::vector<DecodeRow>& rows, const StepWeights& weights) {
  const auto n = static_cast<int64_t>(rows.size());
  const auto bucket = std::lower_bound(buckets_.begin(), buckets_.end(), n);
  if (n == 0 || bucket == buckets_.end()) {
    throw InvalidArgument("rows", "a decode step has 1 to " + std::to_string(buckets_.back()) + " rows, not " + std::to_string(n));
  }
  const int64_t max_key_length = stage(rows, *bucket);
  const at::Tensor logits = execute(*bucket, max_key_length, weights);
  for (const DecodeRow& row : rows) cache_.advance(row.slot, 1);
  return logits.narrow(0, 0, n);
}

int64_t DecodeRunner::capture(const StepWeights& weights) {
  if (!use_graphs_) return 0;
  const int64_t before = captured_;
  for (size_t i = 0; i < buckets_.size() && static_cast<int64_t>(i) < kMaxGraphs / 2; ++i) {
    execute(buckets_[i], stage({}, buckets_[i]), weights);  // padding rows only: they write the runner's own slot
  }
  return captured_ - before;
}

int64_t DecodeRunner::stage(const std::vector<DecodeRow>& rows, int64_t padded) {
  const auto n = static_cast<int64_t>(rows.size());
  // Rows then padding (token 0 at position 0 of the runner's own slot).
  fence_->wait();
  auto* staged = staging_.data_ptr<int64_t>();
  const int64_t stride = staging_.size(1);
  int64_t max_key_length = 1;
  for (int64_t i = 0; i < padded; ++i) {
    DecodeRow row{pad_slot_, 0, 0};
    int64_t position = 0;
    if (i < n) {
      row = rows[static_cast<size_t>(i)];
      cache_.check_in_use(row.slot);
      position = cache_.length(row.slot);
      if (position >= cache_.capacity() || position >= model_.config().max_position_embeddings) {
        throw InvalidArgument("tokens", "sequence of " + std::to_string(position + 1) + " tokens exceeds the context");
      }
      if (row.token < 0 || row.token >= model_.config().vocab_size) {
        throw InvalidArgument("tokens", "token id " + std::to_string(row.token) + " is outside the vocabulary");
      }
      for (int64_t j = 0; j < i; ++j) {
        if (staged[kSlots * stride + j] == row.slot) throw InvalidArgument("rows", "two decode rows write the same cache slot");
      }
    }
    staged[kTokens * stride + i] = row.token;
    staged[kPositions * stride + i] = position;
    staged[kSlots * stride + i] = row.slot;
    staged[kAdapterSlots * stride + i] = row.adapter_slot;
    max_key_length = std::max(max_key_length, position + 1);
  }
  if (inputs_.data_ptr() != staging_.data_ptr()) {
    inputs_.copy_(staging_, /*non_blocking=*/true);
    fence_->record();
  }
  return max_key_length;
}

at::Tensor DecodeRunner::execute(int64_t padded, int64_t max_key_length, const StepWeights& weights) {
  const auto input = [&](Input which) { return inputs_[which].narrow(0, 0, padded); };
  const DecodeInputs decode{input(kTokens), input(kPositions), input(kSlots), max_key_length};
  const AdapterBatch batch = weights.dense != nullptr
                                 ? AdapterBatch(*weights.dense)
                                 : AdapterBatch::factored(model_.base_projections(), *weights.table, input(kAdapterSlots),
                                                          weights.adapted);
  if (use_graphs_) return graph_for(std::to_string(padded) + "/" + weights_key(weights), decode, batch, weights).logits;
  return model_.decode(decode, cache_, batch);
}

#ifdef T2_CUDA_KERNELS

DecodeRunner::Graph& DecodeRunner::graph_for(const std::string& key, const DecodeInputs& inputs, const AdapterBatch& batch,
                                             const StepWeights& weights) {
  const auto found = std::find_if(graphs_.begin(), graphs_.end(), [&](const auto& g) { return g->key == key; });
  if (found != graphs_.end()) {
    graphs_.splice(graphs_.begin(), graphs_, found);
    graphs_.front()->graph.replay();
    return *graphs_.front();
  }
  if (static_cast<int64_t>(graphs_.size()) >= kMaxGraphs) graphs_.pop_back();
  auto entry = std::make_unique<Graph>();
  entry->key = key;
  entry->owner = weights.owner;
  // Captured on a side stream, after one eager run there that does the
  // first-use work (library handles, workspaces) capture must not contain.
  // The eager run writes the same K/V the replay writes, so it is harmless.
  const c10::cuda::CUDAStream current = c10::cuda::getCurrentCUDAStream();
  const c10::cuda::CUDAStream side = c10::cuda::getStreamFromPool(false, current.device_index());
  current.synchronize();
  {
    const c10::cuda::CUDAStreamGuard guard(side);
    model_.decode(inputs, cache_, batch);
    side.synchronize();
    // Thread-local capture: the adapter store composes on its own thread meanwhile.
    const at::cuda::MempoolId_t pool = graphs_.empty() ? at::cuda::MempoolId_t{0, 0} : graphs_.front()->graph.pool();
    entry->graph.capture_begin(pool, cudaStreamCaptureModeThreadLocal);
    try {
      entry->logits = model_.decode(inputs, cache_, batch);
    } catch (...) {
      entry->graph.capture_end();
      throw;
    }
    entry->graph.capture_end();
  }
  entry->graph.replay();
  ++captured_;
  graphs_.push_front(std::move(entry));
  return *graphs_.front();
}

#else

DecodeRunner::Graph& DecodeRunner::graph_for(const std::string&, const DecodeInputs&, const AdapterBatch&, const StepWeights&) {
  throw Error("decode runner: this build has no CUDA graphs");
}

#endif

}  // namespace t2::model
