#include "t2/engine/engine.hpp"

#include <algorithm>
#include <set>

#include <c10/core/InferenceMode.h>

#include "t2/common/errors.hpp"

namespace t2::engine {
namespace {

bool is_greedy(const SamplingParams& p) {
  return (p.temperature == 0.0 || p.top_k == 1) && p.presence_penalty == 0.0 && p.frequency_penalty == 0.0;
}

EngineOptions resolve(EngineOptions options, const model::Placement& placement) {
  if (options.decode_path == DecodePath::kAuto) {
    options.decode_path = placement.device.is_cuda() ? DecodePath::kGraphs : DecodePath::kEager;
  }
  if (!options.device_sampling) options.device_sampling = placement.device.is_cuda();
  return options;
}

bool uses_runner(const EngineOptions& options) { return options.decode_path != DecodePath::kEager; }

const char* const kNonFiniteLogits = "the model produced non-finite logits (NaN or Inf) in this step; its requests are failed";

}  // namespace

const char* to_string(FinishReason reason) {
  switch (reason) {
    case FinishReason::kStop: return "stop";
    case FinishReason::kLength: return "length";
  }
  return "stop";
}

Engine::Engine(const model::Transformer& model, std::optional<tokenizer::Tokenizer> tokenizer,
               std::vector<int64_t> eos_token_ids, EngineOptions options, svf::AdapterStore* store,
               const vision::LlavaNext* vision)
    : model_(model),
      tokenizer_(std::move(tokenizer)),
      eos_token_ids_(std::move(eos_token_ids)),
      options_(resolve(options, model.placement())),
      store_(store),
      vision_(vision),
      // One more slot for the decode runner's padding rows.
      cache_(model.config(), options.max_sequences + options.scratch_slots + (uses_runner(options_) ? 1 : 0),
             options.context_length > 0 ? std::min(options.context_length, model.config().max_position_embeddings)
                                        : model.config().max_position_embeddings,
             model.placement()) {
  if (options_.max_step_tokens < options_.max_sequences) {
    throw InvalidArgument("max_step_tokens", "the step token budget must cover one decode token per sequence");
  }
  if (uses_runner(options_)) {
    runner_.emplace(model_, cache_, options_.max_sequences, options_.decode_path == DecodePath::kGraphs);
  }
  // One slot per row a step can hold at most, plus the base.
  if (store_ != nullptr && !store_->factors().empty()) {
    table_.emplace(model_, store_->factors(), options_.max_sequences + options_.scratch_slots + 1);
  }
}

int64_t Engine::capture_decode_graphs() {
  if (!runner_ || !runner_->uses_graphs()) return 0;
  c10::InferenceMode inference;  // as in step(): the graphs must hold the inference path (fused ops) that steps replay
  model::StepWeights base;
  base.dense = &model_.base_projections();
  int64_t captured = runner_->capture(base);
  if (table_) {
    // Experts over every matrix the SVD cache covers: the adapted pattern of a step that mixes them.
    model::StepWeights factored;
    factored.table = &table_->factor_table();
    for (const auto& layer : table_->factor_table()) {
      for (const model::FactoredProjection* matrix : layer) factored.adapted.push_back(matrix != nullptr);
    }
    captured += runner_->capture(factored);
  }
  return captured;
}

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
  if (request.adapter && request.adapter->dense && request.adapter->dense->num_layers() != model_.config().num_layers) {
    throw InvalidArgument("adapter", "adapted weights do not match the model's layer count");
  }
  if (!tokenizer_ && !request.stop.empty()) throw InvalidArgument("stop", "stop strings need a tokenizer");
  check_images(request);
  if (!has_capacity()) throw Error("engine: all " + std::to_string(options_.max_sequences) + " sequence slots are in use");
  const int64_t slot = cache_.allocate();
  const SequenceId id = next_id_++;
  Sampler sampler(request.sampling);
  std::optional<tokenizer::StreamDecoder> decoder;
  if (tokenizer_) decoder.emplace(*tokenizer_, request.prompt);
  StopStrings stops(request.stop);
  const size_t images = request.images.size();
  auto& sequence = sequences_.emplace(id, Sequence{id, slot, std::move(request), std::move(sampler), std::move(decoder),
                                                   std::move(stops)}).first->second;
  sequence.image_features.resize(images);
  return id;
}

void Engine::check_images(const GenerationRequest& request) const {
  if (vision_ == nullptr) {
    if (!request.images.empty()) throw InvalidArgument("images", "this model does not accept images");
    return;
  }
  // Placeholders must be exactly the images' spans: a stray one would embed as an untrained token.
  const int64_t placeholder = vision_->image_token_id();
  const auto n = static_cast<int64_t>(request.prompt.size());
  std::vector<bool> in_span(static_cast<size_t>(n), false);
  int64_t covered = 0;
  for (const vision::PromptImage& image : request.images) {
    if (image.offset < covered || image.length <= 0 || image.offset + image.length > n) {
      throw InvalidArgument("images", "image spans must be in order and inside the prompt");
    }
    const int64_t features = vision_->feature_count(image.height, image.width);
    if (image.length != features) {
      throw InvalidArgument("images", "an image of " + std::to_string(image.width) + "x" + std::to_string(image.height) +
                                          " has " + std::to_string(features) + " features, not " + std::to_string(image.length));
    }
    if (!image.pixel_values.defined() || image.pixel_values.dim() != 4 ||
        image.pixel_values.size(0) != vision_->patch_count(image.height, image.width)) {
      throw InvalidArgument("images", "pixel values do not match the image processor's tiling for this size");
    }
    std::fill(in_span.begin() + image.offset, in_span.begin() + image.offset + image.length, true);
    covered = image.offset + image.length;
  }
  for (int64_t i = 0; i < n; ++i) {
    const bool is_placeholder = request.prompt[static_cast<size_t>(i)] == placeholder;
    if (is_placeholder == in_span[static_cast<size_t>(i)]) continue;
    if (is_placeholder) {
      throw InvalidArgument("prompt", "token " + std::to_string(placeholder) +
                                          " is the image placeholder; images are sent as image_url content parts");
    }
    throw InvalidArgument("images", "an image span holds other tokens than the placeholder");
  }
}

int64_t Engine::encode_images(Sequence& s, int64_t take, int64_t& budget, bool& encoded_any, StepOutput& out) {
  const std::vector<vision::PromptImage>& images = s.request.images;
  for (size_t i = 0; i < images.size(); ++i) {
    const vision::PromptImage& image = images[i];
    if (image.offset >= s.prefilled + take) break;
    if (image.offset + image.length <= s.prefilled || s.image_features[i].defined()) continue;
    const int64_t cost = vision_->encoder_tokens(image.pixel_values.size(0));
    // One image larger than the whole budget still runs, as the step's first; others wait their turn.
    if (cost > budget && encoded_any) return std::max<int64_t>(0, image.offset - s.prefilled);
    s.image_features[i] = vision_->encode(image.pixel_values, image.height, image.width);
    encoded_any = true;
    budget -= cost;
    out.encoder_tokens += cost;
    take = std::min(take, std::max<int64_t>(budget, 0));
  }
  return take;
}

at::Tensor Engine::chunk_embeddings(Sequence& s, int64_t begin, int64_t count) const {
  at::Tensor embeddings;
  const std::vector<vision::PromptImage>& images = s.request.images;
  for (size_t i = 0; i < images.size(); ++i) {
    const vision::PromptImage& image = images[i];
    const int64_t lo = std::max(begin, image.offset), hi = std::min(begin + count, image.offset + image.length);
    if (lo >= hi) continue;
    if (!embeddings.defined()) {
      const auto first = s.request.prompt.begin() + begin;
      embeddings = model_.embed({first, first + count});
    }
    embeddings.narrow(0, lo - begin, hi - lo).copy_(s.image_features[i].narrow(0, lo - image.offset, hi - lo));
    // The span's last features go into the cache with this chunk.
    if (hi == image.offset + image.length) s.image_features[i] = at::Tensor();
  }
  return embeddings;
}

SequenceId Engine::score(ScoringRequest request) {
  if (request.context.empty()) throw InvalidArgument("context", "a scoring request needs context tokens");
  if (request.continuations.empty()) throw InvalidArgument("continuations", "nothing to score");
  int64_t longest = 0;
  for (const auto& c : request.continuations) {
    if (c.empty()) throw InvalidArgument("continuations", "a continuation has no tokens");
    longest = std::max<int64_t>(longest, static_cast<int64_t>(c.size()));
  }
  const auto length = static_cast<int64_t>(request.prefix.size() + request.context.size()) + longest;
  if (length > cache_.capacity()) {
    throw InvalidArgument("prompt", "pass 1 needs " + std::to_string(length) + " tokens; the context holds " +
                                        std::to_string(cache_.capacity()));
  }
  Heads heads;
  for (size_t c = 0; c < request.continuations.size(); ++c) {
    const auto& tokens = request.continuations[c];
    heads[{tokens.begin(), tokens.end() - 1}].push_back(c);
  }
  if (static_cast<int64_t>(heads.size()) + 1 > options_.scratch_slots) {
    throw InvalidArgument("continuations", "scoring " + std::to_string(heads.size()) + " continuations needs more than the " +
                                               std::to_string(options_.scratch_slots) + " scratch KV slots");
  }
  const SequenceId id = next_id_++;
  std::string key = request.adapter ? request.adapter->id() : "base";
  for (const int64_t t : request.prefix) key += "," + std::to_string(t);
  scorings_.emplace(id, Scoring{id, std::move(request), std::move(key), std::move(heads)});
  return id;
}

void Engine::cancel(SequenceId id) {
  if (const auto it = sequences_.find(id); it != sequences_.end()) {
    cache_.release(it->second.slot);
    sequences_.erase(it);
  }
  scorings_.erase(id);  // scoring slots live only within a step
}

int64_t Engine::free_scratch_slots() const {
  // Slots not reserved for sequences that may still be added.
  return cache_.free_slots() - (options_.max_sequences - static_cast<int64_t>(sequences_.size()));
}

int64_t Engine::take_scratch_slot() {
  if (free_scratch_slots() <= 0) {
    auto victim = prefixes_.end();
    for (auto it = prefixes_.begin(); it != prefixes_.end(); ++it) {
      if (it->second.last_step < steps_ && (victim == prefixes_.end() || it->second.last_step < victim->second.last_step)) victim = it;
    }
    if (victim == prefixes_.end()) return -1;
    cache_.release(victim->second.slot);
    prefixes_.erase(victim);
  }
  return cache_.allocate();
}

void Engine::plan_scoring(std::vector<Row>& rows, int64_t& budget, std::vector<int64_t>& scratch) {
  std::set<std::string> filling;  // prefixes being filled this step
  for (auto& [id, s] : scorings_) {
    const ScoringRequest& r = s.request;
    const auto cached = prefixes_.find(s.prefix_key);
    if (!r.prefix.empty() && cached == prefixes_.end()) {
      // Fill the prefix this step; the request scores in the next.
      if (filling.count(s.prefix_key) > 0) continue;
      const auto n = static_cast<int64_t>(r.prefix.size());
      if (n > budget && !rows.empty()) break;
      const int64_t slot = take_scratch_slot();
      if (slot < 0) break;
      prefixes_[s.prefix_key] = {slot, n, steps_};
      filling.insert(s.prefix_key);
      Row row;
      row.chunk = {slot, r.prefix, 0};
      row.adapter = r.adapter;
      row.prefix = true;
      rows.push_back(std::move(row));
      budget -= n;
      continue;
    }
    if (filling.count(s.prefix_key) > 0) continue;
    const Heads& heads = s.heads;
    int64_t tokens = 0;
    for (const auto& [head, members] : heads) tokens += static_cast<int64_t>(r.context.size() + head.size());
    if ((tokens > budget && !rows.empty()) || free_scratch_slots() < static_cast<int64_t>(heads.size())) break;
    if (cached != prefixes_.end()) cached->second.last_step = steps_;  // not evicted while copied from
    for (const auto& [head, members] : heads) {
      const int64_t slot = take_scratch_slot();
      scratch.push_back(slot);
      if (cached != prefixes_.end()) cache_.copy_prefix(cached->second.slot, slot, cached->second.length);
      Row row;
      row.chunk.slot = slot;
      row.chunk.tokens = r.context;
      row.chunk.tokens.insert(row.chunk.tokens.end(), head.begin(), head.end());
      row.chunk.logits = static_cast<int64_t>(head.size()) + 1;
      row.adapter = r.adapter;
      row.scoring = &s;
      row.continuations = members;
      rows.push_back(std::move(row));
    }
    budget -= tokens;
  }
}

StepOutput Engine::step() {
  c10::InferenceMode inference;
  StepOutput out;
  ++steps_;
  // Decodes first (they form one contiguous single-token attention group),
  // then scoring rows, then prompt chunks in admission order within the budget.
  std::vector<Row> rows;
  int64_t budget = options_.max_step_tokens;
  for (auto& [id, s] : sequences_) {
    if (s.prefilled < static_cast<int64_t>(s.request.prompt.size())) continue;
    Row row;
    row.chunk = {s.slot, {s.last_token}, 1};
    row.adapter = s.request.adapter;
    row.sequence = &s;
    rows.push_back(std::move(row));
    --budget;
  }
  std::vector<int64_t> scratch;  // scoring slots, freed after the step
  plan_scoring(rows, budget, scratch);
  at::Tensor logits;
  std::optional<DeviceSamples> device_samples;
  try {
    plan_prefill(rows, budget, out);  // may run the image encoder
    if (rows.empty()) return out;
    for (const Row& row : rows) out.tokens_run += static_cast<int64_t>(row.chunk.tokens.size());
    out.rows = static_cast<int64_t>(rows.size());
    logits = run_forward(rows, weights_for(rows, out), out);
    // NaN or Inf (broken weights, an adapter that overflows) would be sampled as garbage: fail the step instead.
    // The device sampler checks its rows in the copy that brings their tokens; scoring rows it does not see.
    if (*options_.device_sampling) device_samples = sample_tokens(rows, logits);
    const bool all_checked =
        *options_.device_sampling && std::none_of(rows.begin(), rows.end(), [](const Row& row) { return row.scoring != nullptr; });
    if (!all_checked && !at::isfinite(logits).all().item<bool>()) throw Error(kNonFiniteLogits);
  } catch (...) {
    for (const int64_t slot : scratch) cache_.release(slot);
    for (const Row& row : rows) {
      if (row.prefix) {
        for (auto it = prefixes_.begin(); it != prefixes_.end(); ++it) {
          if (it->second.slot == row.chunk.slot) {
            cache_.release(it->second.slot);
            prefixes_.erase(it);
            break;
          }
        }
      }
    }
    throw;
  }
  emit(rows, logits, std::move(device_samples), out);
  for (const int64_t slot : scratch) cache_.release(slot);
  for (const TokenEvent& event : out.tokens) {
    if (event.finish) cancel(event.sequence);
  }
  for (const ScoreEvent& event : out.scores) scorings_.erase(event.request);
  return out;
}

void Engine::plan_prefill(std::vector<Row>& rows, int64_t& budget, StepOutput& out) {
  bool encoded_images = false;
  for (auto& [id, s] : sequences_) {
    const auto prompt = static_cast<int64_t>(s.request.prompt.size());
    if (s.prefilled >= prompt) continue;
    if (budget <= 0) break;
    int64_t take = std::min(prompt - s.prefilled, budget);
    if (!s.request.images.empty()) take = encode_images(s, take, budget, encoded_images, out);
    if (take == 0) break;  // its next image waits for the next step, and so does everyone behind it
    const auto begin = s.request.prompt.begin() + s.prefilled;
    Row row;
    row.chunk = {s.slot, {begin, begin + take}, s.prefilled + take == prompt ? 1 : 0};
    if (!s.request.images.empty()) row.chunk.embeddings = chunk_embeddings(s, s.prefilled, take);
    row.adapter = s.request.adapter;
    row.sequence = &s;
    rows.push_back(std::move(row));
    budget -= take;
  }
}

model::StepWeights Engine::weights_for(const std::vector<Row>& rows, StepOutput& out) {
  std::map<std::string, const std::shared_ptr<const svf::Adapter>*> distinct;
  for (const Row& row : rows) distinct.emplace(row.adapter ? row.adapter->id() : "base", &row.adapter);
  if (distinct.size() == 1) {
    const std::shared_ptr<const svf::Adapter>& only = *distinct.begin()->second;
    model::StepWeights dense;
    if (!only) {
      dense.dense = &model_.base_projections();
      return dense;
    }
    if (only->dense) {
      dense.dense = only->dense.get();
      dense.owner = only->dense;
      return dense;
    }
    if (store_ != nullptr && options_.dense_fast_path) {
      if (auto composed = store_->dense(*only)) {
        // The store may evict it meanwhile; `owner` keeps it for the step.
        dense.dense = composed.get();
        dense.owner = std::move(composed);
        return dense;
      }
      // Alone in the batch: worth its dense fast path, composed off this thread.
      store_->compose_in_background(only);
    }
  }
  if (!table_) throw InvalidArgument("adapter", "rows with different adaptations need the SVD factors (an adapter store)");
  // The factored path: every row's scale row in the table.
  table_->begin_step();
  model::StepWeights factored;
  factored.table = &table_->factor_table();
  factored.adapted.assign(static_cast<size_t>(model_.config().num_layers * model::kNumProjections), false);
  std::map<std::string, int64_t> slots;
  for (const auto& [id, adapter] : distinct) {
    if (!*adapter) {
      slots[id] = svf::AdapterTable::kBaseSlot;
      continue;
    }
    if ((*adapter)->scales.empty() && (*adapter)->dense) {
      throw InvalidArgument("adapter", "adapter '" + (*adapter)->key + "' has dense weights only and cannot share a step");
    }
    slots[id] = table_->slot_for(**adapter);
    table_->mark_adapted(**adapter, factored.adapted);
  }
  for (const Row& row : rows) {
    const int64_t slot = slots.at(row.adapter ? row.adapter->id() : "base");
    factored.token_slots.insert(factored.token_slots.end(), row.chunk.tokens.size(), slot);
  }
  out.factored = true;
  return factored;
}

at::Tensor Engine::run_forward(const std::vector<Row>& rows, const model::StepWeights& weights, StepOutput& out) {
  const bool decode_only = std::all_of(rows.begin(), rows.end(), [](const Row& row) {
    return row.chunk.tokens.size() == 1 && row.chunk.logits == 1 && !row.chunk.embeddings.defined();
  });
  if (runner_ && decode_only && static_cast<int64_t>(rows.size()) <= runner_->buckets().back()) {
    std::vector<model::DecodeRow> decode_rows;
    for (size_t i = 0; i < rows.size(); ++i) {
      decode_rows.push_back({rows[i].chunk.slot, rows[i].chunk.tokens[0], weights.dense ? 0 : weights.token_slots[i]});
    }
    out.fixed_shape = true;
    return runner_->run(decode_rows, weights);
  }
  std::vector<model::Chunk> chunks;
  for (const Row& row : rows) chunks.push_back(row.chunk);
  return model_.forward(chunks, cache_, model::AdapterBatch::bind(weights, model_.base_projections(), model_.placement().device));
}

at::Tensor Engine::token_logits(const std::vector<Row>& rows, const at::Tensor& all_logits) const {
  std::vector<int64_t> token_rows;
  int64_t offset = 0;
  for (const Row& row : rows) {
    if (row.yields_token()) token_rows.push_back(offset);
    offset += row.chunk.logits;
  }
  // Without scoring rows every logits row is a token row: no index to copy to the device (a synchronisation).
  at::Tensor logits = static_cast<int64_t>(token_rows.size()) == all_logits.size(0)
                          ? all_logits
                          : all_logits.index_select(0, at::tensor(token_rows, at::kLong).to(all_logits.device()));
  // Models pad their vocabulary past the tokenizer's; those ids have no text.
  if (tokenizer_ && tokenizer_->vocab_size() < logits.size(1)) logits = logits.narrow(1, 0, tokenizer_->vocab_size());
  return logits;
}

DeviceSamples Engine::sample_tokens(const std::vector<Row>& rows, const at::Tensor& all_logits) const {
  std::vector<DeviceSampleRow> requests;
  for (const Row& row : rows) {
    if (!row.yields_token()) continue;
    const Sequence& s = *row.sequence;
    requests.push_back({s.request.sampling, s.sampler.stream_seed(), static_cast<uint64_t>(s.generated),
                        &s.sampler.counts(), s.request.top_logprobs});
  }
  if (requests.empty()) return {};
  DeviceSamples samples = sample_on_device(token_logits(rows, all_logits), requests);
  if (std::find(samples.finite.begin(), samples.finite.end(), false) != samples.finite.end()) {
    throw Error(kNonFiniteLogits);
  }
  return samples;
}

void Engine::emit(const std::vector<Row>& rows, const at::Tensor& all_logits,
                  std::optional<DeviceSamples> device_samples, StepOutput& out) {
  // Rows that produce a token; scoring rows apart with their first logits row.
  std::vector<const Row*> token_rows;
  int64_t offset = 0;
  std::map<const Scoring*, ScoreEvent> scores;
  at::Tensor host_logprobs;  // scoring rows' log-softmax, on the host when any
  std::vector<std::pair<const Row*, int64_t>> scoring_rows;
  for (const Row& row : rows) {
    if (row.yields_token()) {
      token_rows.push_back(&row);
    } else if (row.scoring != nullptr) {
      scoring_rows.emplace_back(&row, offset);
    }
    offset += row.chunk.logits;
  }
  if (!scoring_rows.empty()) host_logprobs = all_logits.log_softmax(-1).to(at::kCPU, at::kDouble);
  for (const auto& [row, first] : scoring_rows) {
    const Scoring& s = *row->scoring;
    ScoreEvent& event = scores[&s];
    event.request = s.id;
    event.logprobs.resize(s.request.continuations.size());
    event.tokens_run += static_cast<int64_t>(row->chunk.tokens.size());
    event.cached_tokens = static_cast<int64_t>(s.request.prefix.size());
    const auto* data = host_logprobs.data_ptr<double>();
    const int64_t vocab = host_logprobs.size(1);
    for (const size_t c : row->continuations) {
      const auto& tokens = s.request.continuations[c];
      for (size_t t = 0; t < tokens.size(); ++t) {
        event.logprobs[c].push_back(data[(first + static_cast<int64_t>(t)) * vocab + tokens[t]]);
      }
    }
  }
  for (auto& [scoring, event] : scores) out.scores.push_back(std::move(event));
  for (const Row& row : rows) {
    Sequence* s = row.sequence;
    if (s != nullptr && s->prefilled < static_cast<int64_t>(s->request.prompt.size())) {
      s->prefilled += static_cast<int64_t>(row.chunk.tokens.size());
    }
  }
  if (token_rows.empty()) return;
  if (!device_samples) {
    emit_host_sampled(token_rows, token_logits(rows, all_logits), out);
    return;
  }
  for (size_t b = 0; b < token_rows.size(); ++b) {
    out.tokens.push_back(advance(*token_rows[b]->sequence, device_samples->samples[b]));
    out.tokens.back().top_logprobs = std::move(device_samples->top[b]);
  }
}

void Engine::emit_host_sampled(const std::vector<const Row*>& token_rows, const at::Tensor& logits, StepOutput& out) {
  // Greedy rows need only argmax and the normaliser from the device; the
  // others take their whole row to the host sampler.
  const at::Tensor best = logits.argmax(-1);
  const at::Tensor logprob_of_best = logits.gather(-1, best.unsqueeze(-1)).squeeze(-1) - logits.logsumexp(-1);
  const at::Tensor best_host = best.to(at::kCPU);
  const at::Tensor logprob_host = logprob_of_best.to(at::kCPU);
  const int64_t vocab = logits.size(1);
  int top_k = 0;
  for (const Row* row : token_rows) top_k = std::max(top_k, row->sequence->request.top_logprobs);
  at::Tensor top_values, top_indices;
  if (top_k > 0) {
    auto [values, indices] = logits.log_softmax(-1).topk(std::min<int64_t>(top_k, vocab), -1);
    top_values = values.to(at::kCPU);
    top_indices = indices.to(at::kCPU);
  }
  for (size_t b = 0; b < token_rows.size(); ++b) {
    Sequence& s = *token_rows[b]->sequence;
    const auto i = static_cast<int64_t>(b);
    Sample sample{};
    if (is_greedy(s.request.sampling)) {
      sample = {best_host[i].item<int64_t>(), logprob_host[i].item<float>()};
    } else {
      const at::Tensor row = logits[i].to(at::kCPU).contiguous();
      sample = s.sampler.sample(row.data_ptr<float>(), vocab);
    }
    out.tokens.push_back(advance(s, sample));
    for (int k = 0; k < s.request.top_logprobs; ++k) {
      out.tokens.back().top_logprobs.emplace_back(top_indices[i][k].item<int64_t>(), top_values[i][k].item<float>());
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
