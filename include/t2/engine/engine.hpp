// The generation loop: sequences join (prefill), advance one token per step
// in batches (decode) and leave (EOS, stop string, length, cancel). The caller
// (the CLI now, the scheduler later) decides when to add, step and cancel; the
// engine owns the KV cache and per-sequence sampling and detokenisation.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "t2/engine/sampler.hpp"
#include "t2/engine/stop_strings.hpp"
#include "t2/model/kv_cache.hpp"
#include "t2/model/transformer.hpp"
#include "t2/tokenizer/tokenizer.hpp"

namespace t2::engine {

enum class FinishReason { kStop, kLength };
const char* to_string(FinishReason reason);  // "stop" | "length", as OpenAI

using SequenceId = uint64_t;

struct GenerationRequest {
  std::vector<int64_t> prompt;  // at least one token (usually BOS first)
  SamplingParams sampling;
  int64_t max_tokens = 16;
  std::vector<std::string> stop;
  bool ignore_eos = false;
  int top_logprobs = 0;  // also report the k most likely tokens at each step
  // The adapted matrices to run with; null means the base model's.
  std::shared_ptr<const model::ProjectionSet> projections;
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

struct EngineOptions {
  int64_t max_sequences = 8;
  int64_t context_length = 0;  // 0: the model's max_position_embeddings
};

class Engine {
 public:
  // `model` must outlive the engine. Without a tokenizer, events carry token
  // ids only and stop strings are not available.
  Engine(const model::Transformer& model, std::optional<tokenizer::Tokenizer> tokenizer,
         std::vector<int64_t> eos_token_ids, EngineOptions options);

  // Throws InvalidArgument for an empty or too long prompt or bad parameters,
  // and t2::Error when every slot is busy (check has_capacity() first).
  SequenceId add(GenerationRequest request);
  // Drops a sequence and frees its slot at once; unknown ids are ignored.
  void cancel(SequenceId id);
  // Prefills the sequences added since the last step, decodes the others.
  std::vector<TokenEvent> step();

  bool has_capacity() const { return cache_.free_slots() > 0; }
  size_t active() const { return sequences_.size(); }
  int64_t context_length() const { return cache_.capacity(); }

 private:
  struct Sequence {
    SequenceId id;
    int64_t slot;
    GenerationRequest request;
    Sampler sampler;
    std::optional<tokenizer::StreamDecoder> decoder;
    StopStrings stops;
    int64_t generated = 0;
    int64_t last_token = -1;
    bool prefilled = false;
  };

  // Runs one forward for `group` and turns its logits into events.
  void run(const std::vector<Sequence*>& group, bool prefill, std::vector<TokenEvent>& events);
  TokenEvent advance(Sequence& sequence, const Sample& sample);
  static std::string decode(Sequence& sequence, int64_t token);
  static std::string flush(Sequence& sequence);
  const model::ProjectionSet& projections_of(const Sequence& sequence) const;

  const model::Transformer& model_;
  std::optional<tokenizer::Tokenizer> tokenizer_;
  std::vector<int64_t> eos_token_ids_;
  model::KVCache cache_;
  std::map<SequenceId, Sequence> sequences_;
  SequenceId next_id_ = 1;
};

}  // namespace t2::engine
