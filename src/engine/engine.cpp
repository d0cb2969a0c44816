#include "t2/engine/engine.hpp"

#include <algorithm>

#include <c10/core/InferenceMode.h>

#include "t2/common/errors.hpp"

namespace t2::engine {
namespace {

bool is_greedy(const SamplingParams& p) {
  return (p.temperature == 0.0 || p.top_k == 1) && p.presence_penalty == 0.0 && p.frequency_penalty == 0.0;
}

}  // namespace

const char* to_string(FinishReason reason) {
  switch (reason) {
    case FinishReason::kStop: return "stop";
    case FinishReason::kLength: return "length";
  }
  return "stop";
}

Engine::Engine(const model::Transformer& model, std::optional<tokenizer::Tokenizer> tokenizer,
               std::vector<int64_t> eos_token_ids, EngineOptions options)
    : model_(model),
      tokenizer_(std::move(tokenizer)),
      eos_token_ids_(std::move(eos_token_ids)),
      cache_(model.config(), options.max_sequences,
             options.context_length > 0 ? std::min(options.context_length, model.config().max_position_embeddings)
                                        : model.config().max_position_embeddings,
             model.placement()) {}

SequenceId Engine::add(GenerationRequest request) {
  request.sampling.validate();
  const auto prompt_tokens = static_cast<int64_t>(request.prompt.size());
  if (prompt_tokens == 0) throw InvalidArgument("prompt", "the prompt has no tokens");
  if (prompt_tokens >= cache_.capacity()) {
    throw InvalidArgument("prompt", "the prompt has " + std::to_string(prompt_tokens) +
                                        " tokens; the context holds " + std::to_string(cache_.capacity()) +
                                        " including at least one generated token");
  }
  if (request.max_tokens < 1) throw InvalidArgument("max_tokens", "max_tokens must be at least 1");
  if (request.top_logprobs < 0 || request.top_logprobs > 20) throw InvalidArgument("logprobs", "logprobs must be in [0, 20]");
  for (const int64_t token : request.prompt) {
    if (token < 0 || token >= model_.config().vocab_size) {
      throw InvalidArgument("prompt", "token id " + std::to_string(token) + " is outside the vocabulary");
    }
  }
  if (request.projections && request.projections->num_layers() != model_.config().num_layers) {
    throw InvalidArgument("projections", "adapted weights do not match the model's layer count");
  }
  if (!tokenizer_ && !request.stop.empty()) throw InvalidArgument("stop", "stop strings need a tokenizer");
  const int64_t slot = cache_.allocate();
  const SequenceId id = next_id_++;
  Sampler sampler(request.sampling);
  std::optional<tokenizer::StreamDecoder> decoder;
  if (tokenizer_) decoder.emplace(*tokenizer_, request.prompt);
  StopStrings stops(request.stop);
  sequences_.emplace(id, Sequence{id, slot, std::move(request), std::move(sampler), std::move(decoder),
                                  std::move(stops)});
  return id;
}

void Engine::cancel(SequenceId id) {
  const auto it = sequences_.find(id);
  if (it == sequences_.end()) return;
  cache_.release(it->second.slot);
  sequences_.erase(it);
}

const model::ProjectionSet& Engine::projections_of(const Sequence& sequence) const {
  return sequence.request.projections ? *sequence.request.projections : model_.base_projections();
}

std::vector<TokenEvent> Engine::step() {
  c10::InferenceMode inference;
  std::vector<TokenEvent> events;
  // Prompts run one per forward so a long prompt pads nothing else; decodes
  // batch together, one forward per set of weights.
  std::map<const model::ProjectionSet*, std::vector<Sequence*>> decode_groups;
  std::vector<Sequence*> prefills;
  for (auto& [id, sequence] : sequences_) {
    if (sequence.prefilled) {
      decode_groups[&projections_of(sequence)].push_back(&sequence);
    } else {
      prefills.push_back(&sequence);
    }
  }
  for (Sequence* sequence : prefills) run({sequence}, /*prefill=*/true, events);
  for (const auto& [weights, group] : decode_groups) run(group, /*prefill=*/false, events);

  for (const TokenEvent& event : events) {
    if (event.finish) cancel(event.sequence);
  }
  return events;
}

void Engine::run(const std::vector<Sequence*>& group, bool prefill, std::vector<TokenEvent>& events) {
  std::vector<model::Chunk> chunks;
  chunks.reserve(group.size());
  for (const Sequence* s : group) {
    chunks.push_back({s->slot, prefill ? s->request.prompt : std::vector<int64_t>{s->last_token}});
  }
  at::Tensor logits = model_.forward(chunks, cache_, projections_of(*group.front()));  // [B, V] float32
  // Models pad their vocabulary past the tokenizer's; those ids have no text.
  if (tokenizer_ && tokenizer_->vocab_size() < logits.size(1)) logits = logits.narrow(1, 0, tokenizer_->vocab_size());

  // Greedy rows need only argmax and the normaliser from the device; the
  // others take their whole row to the host sampler.
  const at::Tensor best = logits.argmax(-1);
  const at::Tensor logprob_of_best = logits.gather(-1, best.unsqueeze(-1)).squeeze(-1) - logits.logsumexp(-1);
  const at::Tensor best_host = best.to(at::kCPU);
  const at::Tensor logprob_host = logprob_of_best.to(at::kCPU);
  const int64_t vocab = logits.size(1);
  int top_k = 0;
  for (const Sequence* s : group) top_k = std::max(top_k, s->request.top_logprobs);
  at::Tensor top_values, top_indices;
  if (top_k > 0) {
    auto [values, indices] = logits.log_softmax(-1).topk(std::min<int64_t>(top_k, vocab), -1);
    top_values = values.to(at::kCPU);
    top_indices = indices.to(at::kCPU);
  }
  for (size_t b = 0; b < group.size(); ++b) {
    Sequence& s = *group[b];
    Sample sample{};
    if (is_greedy(s.request.sampling)) {
      sample = {best_host[static_cast<int64_t>(b)].item<int64_t>(), logprob_host[static_cast<int64_t>(b)].item<float>()};
    } else {
      const at::Tensor row = logits[static_cast<int64_t>(b)].to(at::kCPU).contiguous();
      sample = s.sampler.sample(row.data_ptr<float>(), vocab);
    }
    s.prefilled = true;
    events.push_back(advance(s, sample));
    for (int k = 0; k < s.request.top_logprobs; ++k) {
      events.back().top_logprobs.emplace_back(top_indices[static_cast<int64_t>(b)][k].item<int64_t>(),
                                              top_values[static_cast<int64_t>(b)][k].item<float>());
    }
  }
}

std::string Engine::decode(Sequence& s, int64_t token) { return s.decoder ? s.decoder->push(token) : std::string(); }

std::string Engine::flush(Sequence& s) { return s.decoder ? s.decoder->flush() : std::string(); }

TokenEvent Engine::advance(Sequence& s, const Sample& sample) {
  TokenEvent event;
  event.sequence = s.id;
  event.token = sample.token;
  event.logprob = sample.logprob;
  s.sampler.accept(sample.token);
  s.last_token = sample.token;
  ++s.generated;

  const bool is_eos = !s.request.ignore_eos &&
                      std::find(eos_token_ids_.begin(), eos_token_ids_.end(), sample.token) != eos_token_ids_.end();
  if (is_eos) {
    event.text = s.stops.push(flush(s)).text + s.stops.flush();
    event.finish = FinishReason::kStop;
    return event;
  }
  const StopStrings::Result piece = s.stops.push(decode(s, sample.token));
  event.text = piece.text;
  if (piece.stopped) {
    event.finish = FinishReason::kStop;
  } else if (s.generated >= s.request.max_tokens || cache_.length(s.slot) >= cache_.capacity()) {
    // Out of budget or context: release whatever text was held back.
    const StopStrings::Result rest = s.stops.push(flush(s));
    event.text += rest.text + (rest.stopped ? "" : s.stops.flush());
    event.finish = rest.stopped ? FinishReason::kStop : FinishReason::kLength;
  }
  return event;
}

}  // namespace t2::engine
