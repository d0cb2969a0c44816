#include "t2/dispatch/dispatcher.hpp"

#include <algorithm>
#include <chrono>
#include <fstream>
#include <sstream>

#include <c10/core/InferenceMode.h>

#include "t2/common/errors.hpp"

namespace t2::dispatch {
namespace {

constexpr const char* kOthers = "others";

// A KV slot held for the length of one scope.
class SlotLease {
 public:
  explicit SlotLease(model::KVCache& cache) : cache_(cache), slot_(cache.allocate()) {}
  SlotLease(const SlotLease&) = delete;
  SlotLease& operator=(const SlotLease&) = delete;
  ~SlotLease() { cache_.release(slot_); }
  int64_t slot() const { return slot_; }

 private:
  model::KVCache& cache_;
  int64_t slot_;
};

std::string rstrip(std::string s) {
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.pop_back();
  return s;
}

std::string replace_all(std::string text, const std::string& from, const std::string& to) {
  for (size_t at = text.find(from); at != std::string::npos; at = text.find(from, at + to.size())) {
    text.replace(at, from.size(), to);
  }
  return text;
}

}  // namespace

Strategy parse_strategy(const std::string& name) {
  if (name == "explicit") return Strategy::kExplicit;
  if (name == "prompt") return Strategy::kPrompt;
  if (name == "classifier") return Strategy::kClassifier;
  if (name == "none") return Strategy::kNone;
  throw InvalidArgument("dispatch", "unknown dispatch strategy '" + name + "' (use explicit, prompt, classifier or none)");
}

const char* to_string(Strategy strategy) {
  switch (strategy) {
    case Strategy::kExplicit: return "explicit";
    case Strategy::kPrompt: return "prompt";
    case Strategy::kClassifier: return "classifier";
    case Strategy::kNone: return "none";
  }
  return "none";
}

std::string load_template(const std::filesystem::path& path) {
  std::ifstream in(path);
  if (!in) throw LoadError(path.string() + ": cannot open dispatch template");
  std::stringstream text;
  text << in.rdbuf();
  const std::string t = text.str();
  if (t.find("{prompt}") == std::string::npos) throw LoadError(path.string() + ": the template has no {prompt}");
  return t;
}

Dispatcher::Dispatcher(const model::Transformer& model, tokenizer::Tokenizer tokenizer, svf::AdapterStore& store,
                       DispatchOptions options)
    : model_(model),
      tokenizer_(std::move(tokenizer)),
      store_(store),
      options_(std::move(options)),
      cache_(model.config(), /*max_sequences=*/12, std::min(options_.context, model.config().max_position_embeddings),
             model.placement()) {
  const auto at = options_.template_text.find("{prompt}");
  if (at == std::string::npos) throw InvalidArgument("dispatch_template", "the dispatch template has no {prompt}");
  // The prompt's own leading space comes from SentencePiece's dummy prefix.
  prompt_prefix_template_ = rstrip(options_.template_text.substr(0, at));
  prompt_suffix_ = options_.template_text.substr(at + 8);
  while (!prompt_suffix_.empty() && prompt_suffix_.back() == '\n') prompt_suffix_.pop_back();
}

std::vector<std::string> Dispatcher::labels() const {
  std::vector<std::string> labels;
  for (const auto& e : store_.experts()) {
    if (e.name != options_.classifier_expert) labels.push_back(e.name);
  }
  labels.push_back(kOthers);
  return labels;
}

const Dispatcher::Prefix& Dispatcher::prefix(const std::string& weights_key, const model::ProjectionSet& weights,
                                             const std::vector<std::string>& labels) {
  std::string experts;
  for (const auto& label : labels) {
    if (label == kOthers) continue;
    const auto e = store_.find(label);
    experts += "- " + label + (e && !e->description.empty() ? ": " + e->description : "") + "\n";
  }
  if (!experts.empty()) experts.pop_back();
  const std::string text = replace_all(prompt_prefix_template_, "{experts}", experts);
  auto it = prefixes_.find(weights_key);
  if (it != prefixes_.end() && it->second.text == text) return it->second;
  if (it != prefixes_.end()) {
    cache_.release(it->second.slot);
    prefixes_.erase(it);
  }
  Prefix p;
  p.text = text;
  p.tokens = tokenizer_.encode_with_specials("<s>" + text);
  if (static_cast<int64_t>(p.tokens.size()) * 2 > cache_.capacity()) {
    throw InvalidArgument("dispatch_template", "the dispatch prompt's fixed part has " + std::to_string(p.tokens.size()) +
                                                   " tokens, too many for pass 1's context of " + std::to_string(cache_.capacity()));
  }
  p.slot = cache_.allocate();
  try {
    model_.forward({{p.slot, p.tokens}}, cache_, weights);
  } catch (...) {
    cache_.release(p.slot);  // a failed prefill must not keep its slot
    throw;
  }
  return prefixes_.emplace(weights_key, std::move(p)).first->second;
}

Decision Dispatcher::decide(Strategy strategy, const std::string& prompt) {
  c10::InferenceMode guard;
  const auto start = std::chrono::steady_clock::now();
  Decision d;
  d.strategy = strategy;
  if (strategy != Strategy::kPrompt && strategy != Strategy::kClassifier) {
    throw InvalidArgument("dispatch", std::string("pass 1 does not run for strategy ") + to_string(strategy));
  }
  std::shared_ptr<const model::ProjectionSet> adapted;
  std::string weights_key = "base";
  if (strategy == Strategy::kClassifier) {
    if (options_.classifier_expert.empty() || !store_.find(options_.classifier_expert)) {
      throw InvalidArgument("dispatch", "the classifier strategy needs the classification expert '" +
                                            options_.classifier_expert + "' loaded");
    }
    adapted = store_.weights(svf::Adaptation::expert(options_.classifier_expert));
    weights_key = options_.classifier_expert;
  }
  const model::ProjectionSet& weights = adapted ? *adapted : model_.base_projections();
  const std::vector<std::string> labels = this->labels();
  const Prefix& p = prefix(weights_key, weights, labels);
  d.cached_tokens = static_cast<int64_t>(p.tokens.size());

  // Cut a long prompt so the template, the prompt, its suffix and the longest label fit.
  size_t longest_label = 0;
  for (const auto& label : labels) longest_label = std::max(longest_label, tokenizer_.encode(label + "}", false).size());
  const int64_t budget = cache_.capacity() - d.cached_tokens -
                         static_cast<int64_t>(tokenizer_.encode(prompt_suffix_, false).size() + longest_label) - 2;
  std::string user = prompt;
  if (const auto tokens = tokenizer_.encode(user, false); static_cast<int64_t>(tokens.size()) > budget) {
    user = tokenizer_.decode({tokens.begin(), tokens.begin() + std::max<int64_t>(budget, 0)});
  }

  SlotLease work(cache_);
  cache_.copy_prefix(p.slot, work.slot(), d.cached_tokens);
  if (options_.constrained) {
    d.scores = score_labels(labels, work.slot(), user + prompt_suffix_, weights, d.prompt_tokens);
    d.label = std::max_element(d.scores.begin(), d.scores.end(), [](const auto& a, const auto& b) { return a.second < b.second; })->first;
  } else {
    const auto context = tokenizer_.encode(user + prompt_suffix_, false);
    d.prompt_tokens = static_cast<int64_t>(context.size());
    const at::Tensor logits = model_.forward({{work.slot(), context}}, cache_, weights);
    const std::string answer = generate_answer(work.slot(), logits, weights, d.prompt_tokens);
    const std::string label = answer.substr(0, answer.find('}'));
    d.label = std::find(labels.begin(), labels.end(), label) != labels.end() ? label : kOthers;
  }
  d.adaptation = d.label == kOthers ? svf::Adaptation::base() : svf::Adaptation::expert(d.label);
  d.latency_ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count();
  return d;
}

std::map<std::string, double> Dispatcher::score_labels(const std::vector<std::string>& labels, int64_t work_slot,
                                                       const std::string& context,
                                                       const model::ProjectionSet& weights, int64_t& tokens_run) {
  // Tokenised with the context, so the boundary is what the model would see;
  // the shared part runs once, each label's own tokens after it.
  std::vector<std::vector<int64_t>> sequences;
  for (const auto& label : labels) sequences.push_back(tokenizer_.encode(context + label + "}", false));
  size_t common = sequences[0].size();
  for (const auto& s : sequences) {
    common = std::min(common, s.size() - 1);  // every label keeps at least one token of its own
    for (size_t i = 0; i < common; ++i) {
      if (s[i] != sequences[0][i]) {
        common = i;
        break;
      }
    }
  }
  if (common == 0) throw Error("dispatch: the labels share no context tokens");
  const std::vector<int64_t> shared(sequences[0].begin(), sequences[0].begin() + static_cast<std::ptrdiff_t>(common));
  const at::Tensor first = model_.forward({{work_slot, shared}}, cache_, weights)[0].log_softmax(-1).cpu();
  tokens_run = static_cast<int64_t>(common);

  std::map<std::string, double> scores;
  for (size_t begin = 0; begin < labels.size();) {
    const auto group = std::min<size_t>(static_cast<size_t>(cache_.free_slots()), labels.size() - begin);
    if (group == 0) throw Error("dispatch: no KV slot free for label scoring");
    std::vector<std::unique_ptr<SlotLease>> leases;
    std::vector<model::Chunk> chunks;
    std::vector<size_t> members;
    for (size_t i = begin; i < begin + group; ++i) {
      const auto& rest = sequences[i];
      scores[labels[i]] = first[rest[common]].item<double>();
      if (rest.size() - common < 2) continue;  // a one-token label needs no further forward
      leases.push_back(std::make_unique<SlotLease>(cache_));
      cache_.copy_prefix(work_slot, leases.back()->slot(), cache_.length(work_slot));
      chunks.push_back({leases.back()->slot(), {rest.begin() + static_cast<std::ptrdiff_t>(common), rest.end() - 1}});
      members.push_back(i);
      tokens_run += static_cast<int64_t>(chunks.back().tokens.size());
    }
    if (!chunks.empty()) {
      const at::Tensor logp = model_.forward(chunks, cache_, weights, model::LogitsScope::kAllTokens).log_softmax(-1).cpu();
      for (size_t b = 0; b < members.size(); ++b) {
        const auto& rest = sequences[members[b]];
        for (size_t t = common + 1; t < rest.size(); ++t) {
          scores[labels[members[b]]] += logp[static_cast<int64_t>(b)][static_cast<int64_t>(t - common - 1)][rest[t]].item<double>();
        }
      }
    }
    begin += group;
  }
  return scores;
}

std::string Dispatcher::generate_answer(int64_t work_slot, at::Tensor logits, const model::ProjectionSet& weights,
                                        int64_t& tokens_run) {
  // Greedy free text after "\boxed{", as the reference dispatches, up to the closing brace.
  std::vector<int64_t> answer;
  std::string text;
  for (int64_t i = 0; i < options_.max_answer_tokens; ++i) {
    answer.push_back(logits[0].argmax().item<int64_t>());
    text = tokenizer_.decode(answer);
    if (text.find('}') != std::string::npos || cache_.length(work_slot) >= cache_.capacity()) break;
    logits = model_.forward({{work_slot, {answer.back()}}}, cache_, weights);
    ++tokens_run;
  }
  return text;
}

}  // namespace t2::dispatch
