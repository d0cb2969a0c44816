// Pass 1 of Transformer² inference: deciding which adaptation a request runs
// with. Strategies:
//   explicit   - the request names an expert or mixture
//   prompt     - the base model answers an adaptation prompt listing the
//                experts; its label picks the expert ("others" = base)
//   classifier - the same prompt under the classification expert's weights
//   none       - base weights
// The categories are the loaded experts marked "dispatch": "target" in
// expert.json, then "others" (base weights). Beyond the reference: labels are
// scored by their length-normalised log-likelihood after the prompt (one
// scoring request, no free-text decode), and the template's fixed part (the
// instructions and the category list) is a cached prefix, so pass 1 pays
// only for the user's prompt and the labels. The dispatcher only plans and
// decides: pass 1's rows run in the engine's steps beside everyone else's.
#pragma once

#include <chrono>
#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "t2/dispatch/adaptation_prompt.hpp"
#include "t2/engine/engine.hpp"
#include "t2/model/transformer.hpp"
#include "t2/svf/adapter_store.hpp"
#include "t2/tokenizer/tokenizer.hpp"

namespace t2::dispatch {

enum class Strategy { kExplicit, kPrompt, kClassifier, kNone };
Strategy parse_strategy(const std::string& name);  // throws InvalidArgument("dispatch", ...)
const char* to_string(Strategy strategy);

struct Decision {
  Strategy strategy = Strategy::kNone;
  svf::Adaptation adaptation;            // what pass 2 runs with
  std::string label;                     // the label pass 1 chose, or the explicit adaptation's key
  std::map<std::string, double> scores;  // label -> score (prompt, classifier), as `scoring` says
  LabelScoring scoring = LabelScoring::kMean;
  double latency_ms = 0;
  int64_t prompt_tokens = 0;  // tokens pass 1 ran through the model
  int64_t cached_tokens = 0;  // template tokens served from the prefix cache
};

struct DispatchOptions {
  std::string template_text;      // contains {experts} and {prompt}
  std::string classifier_expert;  // the expert the classifier strategy runs under; empty: the one marked "classifier"
  bool constrained = true;        // score labels; false = greedy free text parsed for \boxed{label}
  LabelScoring scoring = LabelScoring::kMean;
  int64_t max_answer_tokens = 16;
  int64_t context = 1024;          // pass 1's token budget; long prompts are cut to fit
};

// Pass 1 of one request, planned for the engine: a scoring request over the
// labels (constrained), or a greedy answer up to "}" (free text).
struct Pass1 {
  Strategy strategy = Strategy::kNone;
  std::vector<std::string> labels;
  std::optional<engine::ScoringRequest> scoring;
  std::optional<engine::GenerationRequest> answer;
  std::chrono::steady_clock::time_point started;
};

// The experts marked "dispatch": "target", in the store's (name) order, but `excluded` (the classifier).
std::vector<Category> categories_of(const std::vector<svf::Expert>& experts, const std::string& excluded);

// Reads the template file; throws LoadError when it lacks {prompt}.
std::string load_template(const std::filesystem::path& path);

class Dispatcher {
 public:
  // The store must outlive the dispatcher (the model only sizes pass 1's context). plan() is not
  // thread-safe: the scheduler calls it from its own thread; the const
  // queries below read only the store (itself thread-safe) and the options,
  // so HTTP threads may call them. Throws InvalidArgument when
  // the loaded targets do not fit the template (see AdaptationPrompt::prefix)
  // or several classification experts are loaded and none is named.
  Dispatcher(const model::Transformer& model, tokenizer::Tokenizer tokenizer, svf::AdapterStore& store,
             DispatchOptions options);

  // Pass 1 for the prompt or classifier strategy, to run in the engine.
  Pass1 plan(Strategy strategy, const std::string& prompt);
  // The decision from the engine's scores of `pass.scoring`.
  Decision decide(const Pass1& pass, const engine::ScoreEvent& scores) const;
  // The decision from the free-text answer of `pass.answer`.
  Decision decide(const Pass1& pass, const std::string& answer, int64_t tokens_run) const;
  // The dispatch targets among the loaded experts (the classifier excluded), by name.
  std::vector<Category> categories() const;
  // The labels pass 1 chooses among: the categories, then "others".
  std::vector<std::string> labels() const;
  // The classification expert: the one named in the options, else the loaded
  // expert marked "classifier"; empty when there is none.
  std::string classifier() const;
  // Throws InvalidArgument("dispatch_template", ...) when the template cannot
  // list `categories` within pass 1's context.
  void check_fits(const std::vector<Category>& categories) const { prompt_.prefix(categories); }
  // Whether pass 1 scores labels (else it generates free text).
  bool constrained() const { return options_.constrained; }
  // The strategy a server runs when none is configured: classifier when a
  // classification expert is loaded, prompt when there are targets, else none.
  Strategy automatic_strategy() const;

 private:
  std::string classifier_among(const std::vector<svf::Expert>& experts) const;
  std::vector<Category> categories_among(const std::vector<svf::Expert>& experts) const;

  // The rendered template prefix for `categories`, re-rendered only when they change.
  const AdaptationPrompt::Prefix& prefix(const std::vector<Category>& categories);
  Decision decision(const Pass1& pass, const std::string& label) const;

  tokenizer::Tokenizer tokenizer_;
  svf::AdapterStore& store_;
  DispatchOptions options_;
  AdaptationPrompt prompt_;
  std::vector<Category> prefix_categories_;
  std::optional<AdaptationPrompt::Prefix> prefix_;
};

// Pass 1 for each prompt, run to the end on `engine` (which must have room
// for the scoring rows: scratch slots, or one sequence for free text). For
// CLIs and tests; the server's scheduler interleaves pass 1 with its steps.
std::vector<Decision> run_pass1(Dispatcher& dispatcher, engine::Engine& engine, Strategy strategy,
                                const std::vector<std::string>& prompts);

}  // namespace t2::dispatch
