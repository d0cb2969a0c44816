// The model runner: sequences join (prefill), advance one token per step
// (decode) and leave (EOS, stop string, length, cancel); scoring requests
// (pass 1's label likelihoods) run beside them. Each step is ONE forward over
// every row: all decode tokens, the scoring rows, and prompt chunks up to a
// per-step token budget (chunked prefill, so a long prompt never stalls the
// decodes). Each row runs its own adapter: when a step's rows share one
// adaptation whose dense W' is ready, the dense path; otherwise the factored
// per-row SVF path (AdapterBatch), while the store composes W' off this
// thread. A step of decode tokens only goes through the decode runner (fixed
// shapes; CUDA graphs on a GPU), and on a GPU its tokens are sampled on the
// device. The caller (a CLI, the scheduler) decides when to add, step and
// cancel; the engine owns the KV cache, the decode runner, the adapter table
// and per-sequence sampling and detokenisation.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "t2/engine/device_sampler.hpp"
#include "t2/engine/sampler.hpp"
#include "t2/engine/stop_strings.hpp"
#include "t2/model/decode_runner.hpp"
#include "t2/model/kv_cache.hpp"
#include "t2/model/transformer.hpp"
#include "t2/svf/adapter_store.hpp"
#include "t2/svf/adapter_table.hpp"
#include "t2/tokenizer/tokenizer.hpp"
#include "t2/vision/llava_next.hpp"
#include "t2/vision/prompt_images.hpp"

namespace t2::engine {

enum class FinishReason { kStop, kLength };
const char* to_string(FinishReason reason);  // "stop" | "length", as OpenAI

using SequenceId = uint64_t;

struct GenerationRequest {
  std::vector<int64_t> prompt;  // at least one token (usually BOS first)
  std::vector<vision::PromptImage> images;  // in prompt order; needs a vision model
  SamplingParams sampling;
  int64_t max_tokens = 16;
  std::vector<std::string> stop;
  bool ignore_eos = false;
  int top_logprobs = 0;  // also report the k most likely tokens at each step
  // What to run with; null means the base model.
  std::shared_ptr<const svf::Adapter> adapter;
};

// Log-likelihoods of continuations after a context, as pass 1 scores labels.
// `prefix` is KV-cached across requests (per adapter), so only `context` and
// the continuations run each time.
struct ScoringRequest {
  std::vector<int64_t> prefix;
  std::vector<int64_t> context;  // at least one token
  std::vector<std::vector<int64_t>> continuations;  // each at least one token
  std::shared_ptr<const svf::Adapter> adapter;
};

struct ScoreEvent {
  SequenceId request = 0;
  std::vector<std::vector<double>> logprobs;  // per continuation, per token
  int64_t tokens_run = 0;     // tokens this request put through the model
  int64_t cached_tokens = 0;  // prefix tokens served from the cache
};

// What one step produced for one sequence.
struct TokenEvent {
  SequenceId sequence = 0;
  int64_t token = -1;
  float logprob = 0.0f;
  std::vector<std::pair<int64_t, float>> top_logprobs;  // when requested, most likely first
  std::string text;  // newly completed text; may be empty mid-character
  std::optional<FinishReason> finish;
};

// What one step produced.
struct StepOutput {
  std::vector<TokenEvent> tokens;
  std::vector<ScoreEvent> scores;
  int64_t rows = 0;           // chunks in the forward
  int64_t tokens_run = 0;     // tokens in the forward
  int64_t encoder_tokens = 0; // vision-encoder tokens (images encoded this step)
  bool factored = false;      // ran the per-row SVF path
  bool fixed_shape = false;   // ran the decode runner (a CUDA graph when the engine uses them)
};

// How decode-only steps run: the plain forward, or the fixed-shape decode
// runner (padded batch buckets, persistent inputs), replayed as CUDA graphs.
enum class DecodePath {
  kAuto,        // CUDA graphs on a CUDA device, else the plain forward
  kEager,       // the plain forward
  kFixedShape,  // the runner without graphs (what the graphs replay; tests)
  kGraphs,      // the runner with CUDA graphs
};

struct EngineOptions {
  int64_t max_sequences = 8;
  int64_t context_length = 0;     // 0: the model's max_position_embeddings
  int64_t max_step_tokens = 2048;  // tokens per forward; prompts beyond it prefill in chunks
  int64_t scratch_slots = 0;       // extra KV slots for scoring requests and their cached prefixes
  // Run a step whose rows share one adapter on its composed W' once the store
  // has it (1.0x the bytes against ~1.3x for the factored path); off, every
  // adapted step runs factored (benchmarks, equivalence tests).
  bool dense_fast_path = true;
  DecodePath decode_path = DecodePath::kAuto;
  // Sample on the logits' device (device_sampler.hpp), copying back only the
  // tokens and logprobs; off, rows are sampled on the host (Sampler). Unset:
  // on when the model runs on CUDA.
  std::optional<bool> device_sampling = std::nullopt;
};

class Engine {
 public:
  // `model`, `store` and `vision` must outlive the engine. Without a
  // tokenizer, events carry token ids only and stop strings are not
  // available. Without a store, every step's rows must share one adapter that
  // carries its dense weights. Without `vision` (the image encoder of a
  // vision-language model), requests cannot carry images.
  Engine(const model::Transformer& model, std::optional<tokenizer::Tokenizer> tokenizer,
         std::vector<int64_t> eos_token_ids, EngineOptions options, svf::AdapterStore* store = nullptr,
         const vision::LlavaNext* vision = nullptr);

  // Throws InvalidArgument for an empty or too long prompt or bad parameters,
  // and t2::Error when every slot is busy (check has_capacity() first).
  SequenceId add(GenerationRequest request);
  // Queues a scoring request; its ScoreEvent comes from a later step (one
  // step, or two while its prefix is not cached yet). Throws InvalidArgument.
  SequenceId score(ScoringRequest request);
  // Drops a sequence or scoring request and frees its slots; unknown ids are ignored.
  void cancel(SequenceId id);
  // One forward: every decode, the scoring requests that fit, and prompt
  // chunks up to the token budget.
  StepOutput step();
  // Captures the decode steps' CUDA graphs for the base weights and for the
  // per-row SVF path, so that the first requests do not pay for them (about
  // 0.4 s per graph on an 8B model). Returns how many it captured: none
  // without CUDA graphs.
  int64_t capture_decode_graphs();

  bool has_capacity() const { return static_cast<int64_t>(sequences_.size()) < options_.max_sequences; }
  size_t active() const { return sequences_.size() + scorings_.size(); }
  int64_t context_length() const { return cache_.capacity(); }
  int64_t kv_cache_bytes() const { return cache_.bytes(); }
  int64_t adapter_table_bytes() const { return table_ ? table_->bytes() : 0; }

 private:
  struct Sequence {
    SequenceId id;
    int64_t slot;
    GenerationRequest request;
    Sampler sampler;
    std::optional<tokenizer::StreamDecoder> decoder;
    StopStrings stops;
    int64_t prefilled = 0;  // prompt tokens in the cache
    int64_t generated = 0;
    int64_t last_token = -1;
    std::vector<at::Tensor> image_features = {};  // per request image, from its encoding until its span is prefilled
  };
  // A continuation head (all but its last token) -> the continuations that share it.
  using Heads = std::map<std::vector<int64_t>, std::vector<size_t>>;
  struct Scoring {
    SequenceId id;
    ScoringRequest request;
    std::string prefix_key;
    Heads heads;  // one forward row each: its logits score every continuation that shares it
  };
  struct CachedPrefix {
    int64_t slot;
    int64_t length;
    uint64_t last_step;
  };
  // One chunk of the step's forward and whom it serves.
  struct Row {
    model::Chunk chunk;
    std::shared_ptr<const svf::Adapter> adapter;
    Sequence* sequence = nullptr;  // a decode token or a prompt chunk
    Scoring* scoring = nullptr;    // a scoring row for `continuations`
    std::vector<size_t> continuations;
    bool prefix = false;           // fills a cached prefix

    // Ends its sequence's prompt or decodes: its one logits row gives the next token.
    bool yields_token() const { return sequence != nullptr && chunk.logits == 1; }
  };

  void plan_scoring(std::vector<Row>& rows, int64_t& budget, std::vector<int64_t>& scratch);
  // Prompt chunks in admission order within the budget, encoding the images they reach.
  void plan_prefill(std::vector<Row>& rows, int64_t& budget, StepOutput& out);
  // The weights the rows run with: dense when they share one ready set, else factored.
  model::StepWeights weights_for(const std::vector<Row>& rows, StepOutput& out);
  // The step's logits: through the decode runner when every row is one token, else the plain forward.
  at::Tensor run_forward(const std::vector<Row>& rows, const model::StepWeights& weights, StepOutput& out);
  // The logits rows of the rows that produce a token, in row order, cut to the tokenizer's vocabulary.
  at::Tensor token_logits(const std::vector<Row>& rows, const at::Tensor& all_logits) const;
  // Every token row sampled on the logits' device in one call; throws when any of them is not finite.
  DeviceSamples sample_tokens(const std::vector<Row>& rows, const at::Tensor& all_logits) const;
  // `device_samples`: the token rows' samples when the step took them on the device.
  void emit(const std::vector<Row>& rows, const at::Tensor& logits, std::optional<DeviceSamples> device_samples,
            StepOutput& out);
  // The host path: greedy rows from the device's argmax, the others through their Sampler.
  void emit_host_sampled(const std::vector<const Row*>& token_rows, const at::Tensor& logits, StepOutput& out);
  // Encodes the images the next `take` prompt tokens of `s` reach, within the
  // step's budget; returns how many tokens the chunk may take (it stops before
  // an image there is no budget left to encode this step).
  int64_t encode_images(Sequence& s, int64_t take, int64_t& budget, bool& encoded_any, StepOutput& out);
  // The chunk's input embeddings with its image spans' features in place; undefined when it has none.
  at::Tensor chunk_embeddings(Sequence& s, int64_t begin, int64_t count) const;
  void check_images(const GenerationRequest& request) const;
  int64_t free_scratch_slots() const;
  // A slot for scoring work, evicting the least recently used cached prefix if need be; -1 when none.
  int64_t take_scratch_slot();
  TokenEvent advance(Sequence& sequence, const Sample& sample);
  static std::string decode(Sequence& sequence, int64_t token);
  static std::string flush(Sequence& sequence);

  const model::Transformer& model_;
  std::optional<tokenizer::Tokenizer> tokenizer_;
  std::vector<int64_t> eos_token_ids_;
  EngineOptions options_;  // decode_path and device_sampling resolved for the model's device
  svf::AdapterStore* store_;
  const vision::LlavaNext* vision_;
  model::KVCache cache_;
  std::optional<model::DecodeRunner> runner_;
  std::optional<svf::AdapterTable> table_;
  std::map<SequenceId, Sequence> sequences_;  // in admission order (ids grow)
  std::map<SequenceId, Scoring> scorings_;
  std::map<std::string, CachedPrefix> prefixes_;  // by adapter id and tokens
  uint64_t steps_ = 0;
  SequenceId next_id_ = 1;
};

}  // namespace t2::engine
