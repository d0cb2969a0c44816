#include "t2/dispatch/dispatcher.hpp"

#include <algorithm>
#include <chrono>
#include <fstream>
#include <sstream>

#include <c10/core/InferenceMode.h>

#include "t2/common/errors.hpp"
#include "t2/common/log.hpp"

namespace t2::dispatch {
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
    : tokenizer_(std::move(tokenizer)),
      store_(store),
      options_(std::move(options)),
      prompt_(options_.template_text, tokenizer_, std::min(options_.context, model.config().max_position_embeddings)) {
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

const AdaptationPrompt::Prefix& Dispatcher::prefix(const std::vector<Category>& categories) {
  if (!prefix_ || prefix_categories_ != categories) {
    prefix_ = prompt_.prefix(categories);
    prefix_categories_ = categories;
  }
  return *prefix_;
}

Pass1 Dispatcher::plan(Strategy strategy, const std::string& prompt) {
  if (strategy != Strategy::kPrompt && strategy != Strategy::kClassifier) {
    throw InvalidArgument("dispatch", std::string("pass 1 does not run for strategy ") + to_string(strategy));
  }
  Pass1 pass;
  pass.strategy = strategy;
  pass.started = std::chrono::steady_clock::now();
  const auto experts = store_.experts();  // one snapshot for the whole decision
  std::shared_ptr<const svf::Adapter> adapter;
  if (strategy == Strategy::kClassifier) {
    const std::string name = classifier_among(experts);
    if (name.empty() || !store_.find(name)) {
      throw InvalidArgument("dispatch", name.empty() ? "the classifier strategy needs a classification expert: load one marked "
                                                       "\"dispatch\": \"classifier\" or name it with --classifier-expert"
                                                     : "the classifier strategy needs the classification expert '" + name + "' loaded");
    }
    adapter = store_.adapter(svf::Adaptation::expert(name));
  }
  const std::vector<Category> categories = categories_among(experts);
  pass.labels = labels_of(categories);
  const AdaptationPrompt::Prefix& fixed = prefix(categories);
  const auto cached = static_cast<int64_t>(fixed.tokens.size());
  if (options_.constrained) {
    auto candidates = prompt_.candidates(prompt, pass.labels, cached);
    pass.scoring = engine::ScoringRequest{fixed.tokens, std::move(candidates.shared), std::move(candidates.label_tokens), adapter};
  } else {
    // Greedy free text after "\boxed{", as the reference dispatches, up to the closing brace.
    engine::GenerationRequest answer;
    answer.prompt = fixed.tokens;
    const auto rest = prompt_.request_tokens(prompt, cached, options_.max_answer_tokens);
    answer.prompt.insert(answer.prompt.end(), rest.begin(), rest.end());
    answer.sampling.temperature = 0;
    answer.max_tokens = options_.max_answer_tokens;
    answer.stop = {"}"};
    answer.ignore_eos = false;
    answer.adapter = adapter;
    pass.answer = std::move(answer);
  }
  return pass;
}

Decision Dispatcher::decision(const Pass1& pass, const std::string& label) const {
  Decision d;
  d.strategy = pass.strategy;
  d.scoring = options_.scoring;
  d.label = label;
  d.adaptation = label == kOthersLabel ? svf::Adaptation::base() : svf::Adaptation::expert(label);
  d.latency_ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - pass.started).count();
  return d;
}

Decision Dispatcher::decide(const Pass1& pass, const engine::ScoreEvent& scores) const {
  if (!pass.scoring || scores.logprobs.size() != pass.labels.size()) throw Error("dispatch: scores do not match the labels");
  std::map<std::string, double> by_label;
  for (size_t i = 0; i < pass.labels.size(); ++i) {
    double log_likelihood = 0;
    for (const double lp : scores.logprobs[i]) log_likelihood += lp;
    by_label[pass.labels[i]] = label_score(options_.scoring, log_likelihood, static_cast<int64_t>(scores.logprobs[i].size()));
  }
  const auto best = std::max_element(by_label.begin(), by_label.end(), [](const auto& a, const auto& b) { return a.second < b.second; });
  Decision d = decision(pass, best->first);
  d.scores = std::move(by_label);
  d.prompt_tokens = scores.tokens_run;
  d.cached_tokens = scores.cached_tokens;
  return d;
}

Decision Dispatcher::decide(const Pass1& pass, const std::string& answer, int64_t tokens_run) const {
  const std::string label = answer.substr(0, answer.find('}'));
  const bool known = std::find(pass.labels.begin(), pass.labels.end(), label) != pass.labels.end();
  Decision d = decision(pass, known ? label : kOthersLabel);
  d.prompt_tokens = tokens_run;
  return d;
}

std::vector<Decision> run_pass1(Dispatcher& dispatcher, engine::Engine& engine, Strategy strategy,
                                const std::vector<std::string>& prompts) {
  struct Pending {
    size_t index;
    Pass1 pass;
    std::string answer;
    int64_t answer_tokens = 0;
  };
  std::vector<Decision> decisions(prompts.size());
  std::map<engine::SequenceId, Pending> pending;
  size_t next = 0;
  while (next < prompts.size() || !pending.empty()) {
    // Free-text answers take sequence slots; scoring requests queue in the engine.
    while (next < prompts.size() && (dispatcher.constrained() || engine.has_capacity())) {
      Pass1 pass = dispatcher.plan(strategy, prompts[next]);
      const engine::SequenceId id = pass.scoring ? engine.score(*pass.scoring) : engine.add(*pass.answer);
      pending.emplace(id, Pending{next++, std::move(pass), {}, 0});
    }
    const engine::StepOutput out = engine.step();
    for (const auto& scores : out.scores) {
      const auto it = pending.find(scores.request);
      if (it == pending.end()) continue;
      decisions[it->second.index] = dispatcher.decide(it->second.pass, scores);
      pending.erase(it);
    }
    for (const auto& token : out.tokens) {
      const auto it = pending.find(token.sequence);
      if (it == pending.end()) continue;
      it->second.answer += token.text;
      ++it->second.answer_tokens;
      if (!token.finish) continue;
      const auto tokens_run = static_cast<int64_t>(it->second.pass.answer->prompt.size()) + it->second.answer_tokens;
      decisions[it->second.index] = dispatcher.decide(it->second.pass, it->second.answer, tokens_run);
      pending.erase(it);
    }
  }
  return decisions;
}

}  // namespace t2::dispatch
