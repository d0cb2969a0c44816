#include "t2/dispatch/dispatcher.hpp"

#include <algorithm>
#include <chrono>
#include <fstream>
#include <sstream>

#include <c10/core/InferenceMode.h>

#include "t2/common/errors.hpp"
#include "t2/common/log.hpp"

namespace t2::dispatch {
namespace {

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
             model.placement()),
      prompt_(options_.template_text, tokenizer_, cache_.capacity()) {
  prompt_.prefix(categories());  // fails at startup, not per request, when the targets do not fit
  // A classification expert scores well only under the prompt it was trained with.
  if (const auto trained = store_.find(classifier()); trained && trained->provenance.contains("dispatch_template") &&
                                                      trained->provenance["dispatch_template"] != options_.template_text) {
    log::warn("classification expert '" + trained->name + "' was trained with another dispatch template than the one "
              "configured; its routing will suffer (train it with the server's --dispatch-template)");
  }
}

std::string Dispatcher::classifier_among(const std::vector<svf::Expert>& experts) const {
  if (!options_.classifier_expert.empty()) return options_.classifier_expert;
  std::vector<std::string> marked;
  for (const auto& e : experts) {
    if (e.dispatch == svf::DispatchRole::kClassifier) marked.push_back(e.name);
  }
  if (marked.size() > 1) {
    throw InvalidArgument("classifier_expert", "several classification experts are loaded (" + marked[0] + ", " + marked[1] +
                                                   "): name one with --classifier-expert");
  }
  return marked.empty() ? "" : marked[0];
}

std::vector<Category> categories_of(const std::vector<svf::Expert>& experts, const std::string& excluded) {
  std::vector<Category> categories;
  for (const auto& e : experts) {
    if (e.dispatch == svf::DispatchRole::kTarget && e.name != excluded) categories.push_back({e.name, e.description});
  }
  return categories;
}

std::vector<Category> Dispatcher::categories_among(const std::vector<svf::Expert>& experts) const {
  return categories_of(experts, classifier_among(experts));
}

std::string Dispatcher::classifier() const { return classifier_among(store_.experts()); }

std::vector<Category> Dispatcher::categories() const { return categories_among(store_.experts()); }

std::vector<std::string> Dispatcher::labels() const { return labels_of(categories()); }

Strategy Dispatcher::automatic_strategy() const {
  const auto experts = store_.experts();
  if (!classifier_among(experts).empty()) return Strategy::kClassifier;
  return categories_among(experts).empty() ? Strategy::kNone : Strategy::kPrompt;
}

const Dispatcher::CachedPrefix& Dispatcher::prefix(const std::string& weights_key, const model::ProjectionSet& weights,
                                                   const std::vector<Category>& categories) {
  auto it = prefixes_.find(weights_key);
  if (it != prefixes_.end() && it->second.categories == categories) return it->second;  // no re-rendering per request
  if (it != prefixes_.end()) {
    cache_.release(it->second.slot);
    prefixes_.erase(it);
  }
  CachedPrefix p{categories, prompt_.prefix(categories), cache_.allocate()};
  try {
    model_.forward({{p.slot, p.prompt.tokens}}, cache_, weights);
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
  d.scoring = options_.scoring;
  if (strategy != Strategy::kPrompt && strategy != Strategy::kClassifier) {
    throw InvalidArgument("dispatch", std::string("pass 1 does not run for strategy ") + to_string(strategy));
  }
  const auto experts = store_.experts();  // one snapshot for the whole decision
  std::shared_ptr<const model::ProjectionSet> adapted;
  std::string weights_key = "base";
  if (strategy == Strategy::kClassifier) {
    const std::string name = classifier_among(experts);
    if (name.empty() || !store_.find(name)) {
      throw InvalidArgument("dispatch", name.empty() ? "the classifier strategy needs a classification expert: load one marked "
                                                       "\"dispatch\": \"classifier\" or name it with --classifier-expert"
                                                     : "the classifier strategy needs the classification expert '" + name + "' loaded");
    }
    adapted = store_.weights(svf::Adaptation::expert(name));
    weights_key = name;
  }
  const model::ProjectionSet& weights = adapted ? *adapted : model_.base_projections();
  const std::vector<Category> categories = categories_among(experts);
  const std::vector<std::string> labels = labels_of(categories);
  const CachedPrefix& p = prefix(weights_key, weights, categories);
  d.cached_tokens = static_cast<int64_t>(p.prompt.tokens.size());

  SlotLease work(cache_);
  cache_.copy_prefix(p.slot, work.slot(), d.cached_tokens);
  if (options_.constrained) {
    d.scores = score_labels(labels, work.slot(), prompt, weights, d.prompt_tokens);
    d.label = std::max_element(d.scores.begin(), d.scores.end(), [](const auto& a, const auto& b) { return a.second < b.second; })->first;
  } else {
    const auto context = prompt_.request_tokens(prompt, d.cached_tokens, options_.max_answer_tokens);
    d.prompt_tokens = static_cast<int64_t>(context.size());
    const at::Tensor logits = model_.forward({{work.slot(), context}}, cache_, weights);
    const std::string answer = generate_answer(work.slot(), logits, weights, d.prompt_tokens);
    const std::string label = answer.substr(0, answer.find('}'));
    d.label = std::find(labels.begin(), labels.end(), label) != labels.end() ? label : kOthersLabel;
  }
  d.adaptation = d.label == kOthersLabel ? svf::Adaptation::base() : svf::Adaptation::expert(d.label);
  d.latency_ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count();
  return d;
}

std::map<std::string, double> Dispatcher::score_labels(const std::vector<std::string>& labels, int64_t work_slot,
                                                       const std::string& request, const model::ProjectionSet& weights,
                                                       int64_t& tokens_run) {
  // The shared part runs once, each label's own tokens after it.
  const auto candidates = prompt_.candidates(request, labels, cache_.length(work_slot));
  const at::Tensor first = model_.forward({{work_slot, candidates.shared}}, cache_, weights)[0].log_softmax(-1).cpu();
  tokens_run = static_cast<int64_t>(candidates.shared.size());

  std::map<std::string, double> log_likelihood;
  for (size_t begin = 0; begin < labels.size();) {
    const auto group = std::min<size_t>(static_cast<size_t>(cache_.free_slots()), labels.size() - begin);
    if (group == 0) throw Error("dispatch: no KV slot free for label scoring");
    std::vector<std::unique_ptr<SlotLease>> leases;
    std::vector<model::Chunk> chunks;
    std::vector<size_t> members;
    for (size_t i = begin; i < begin + group; ++i) {
      const auto& own = candidates.label_tokens[i];
      log_likelihood[labels[i]] = first[own[0]].item<double>();
      if (own.size() < 2) continue;  // a one-token label needs no further forward
      leases.push_back(std::make_unique<SlotLease>(cache_));
      cache_.copy_prefix(work_slot, leases.back()->slot(), cache_.length(work_slot));
      chunks.push_back({leases.back()->slot(), {own.begin(), own.end() - 1}});
      members.push_back(i);
      tokens_run += static_cast<int64_t>(chunks.back().tokens.size());
    }
    if (!chunks.empty()) {
      const at::Tensor logp = model_.forward(chunks, cache_, weights, model::LogitsScope::kAllTokens).log_softmax(-1).cpu();
      for (size_t b = 0; b < members.size(); ++b) {
        const auto& own = candidates.label_tokens[members[b]];
        for (size_t t = 1; t < own.size(); ++t) {
          log_likelihood[labels[members[b]]] += logp[static_cast<int64_t>(b)][static_cast<int64_t>(t - 1)][own[t]].item<double>();
        }
      }
    }
    begin += group;
  }
  std::map<std::string, double> scores;
  for (size_t i = 0; i < labels.size(); ++i) {
    scores[labels[i]] = label_score(options_.scoring, log_likelihood.at(labels[i]),
                                    static_cast<int64_t>(candidates.label_tokens[i].size()));
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
