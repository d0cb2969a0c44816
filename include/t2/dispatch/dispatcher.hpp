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
// prefill, no free-text decode), and the template's fixed part (the
// instructions and the category list) stays in a KV cache across requests so
// pass 1 pays only for the user's prompt and the labels.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "t2/dispatch/adaptation_prompt.hpp"
#include "t2/model/kv_cache.hpp"
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
  int64_t context = 1024;          // pass 1's KV cache length; long prompts are cut to fit
};

// The experts marked "dispatch": "target", in the store's (name) order, but `excluded` (the classifier).
std::vector<Category> categories_of(const std::vector<svf::Expert>& experts, const std::string& excluded);

// Reads the template file; throws LoadError when it lacks {prompt}.
std::string load_template(const std::filesystem::path& path);

class Dispatcher {
 public:
  // Model, tokenizer and store must outlive the dispatcher. decide() is not
  // thread-safe: the scheduler calls it from its own thread; the const
  // queries below read only the store (itself thread-safe) and the options,
  // so HTTP threads may call them. Throws InvalidArgument when
  // the loaded targets do not fit the template (see AdaptationPrompt::prefix)
  // or several classification experts are loaded and none is named.
  Dispatcher(const model::Transformer& model, tokenizer::Tokenizer tokenizer, svf::AdapterStore& store,
             DispatchOptions options);

  // Pass 1 for the prompt or classifier strategy.
  Decision decide(Strategy strategy, const std::string& prompt);
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
  // The strategy a server runs when none is configured: classifier when a
  // classification expert is loaded, prompt when there are targets, else none.
  Strategy automatic_strategy() const;

 private:
  std::string classifier_among(const std::vector<svf::Expert>& experts) const;
  std::vector<Category> categories_among(const std::vector<svf::Expert>& experts) const;

  struct CachedPrefix {
    std::vector<Category> categories;  // what it lists
    AdaptationPrompt::Prefix prompt;
    int64_t slot = -1;
  };
  // The cached template prefix under `weights_key`, rebuilt when the categories change.
  const CachedPrefix& prefix(const std::string& weights_key, const model::ProjectionSet& weights,
                             const std::vector<Category>& categories);
  // The score of each label after the request (see AdaptationPrompt::candidates).
  std::map<std::string, double> score_labels(const std::vector<std::string>& labels, int64_t work_slot,
                                             const std::string& request, const model::ProjectionSet& weights,
                                             int64_t& tokens_run);
  // Greedy tokens from `logits` (the context's last) up to "}".
  std::string generate_answer(int64_t work_slot, at::Tensor logits, const model::ProjectionSet& weights,
                              int64_t& tokens_run);

  const model::Transformer& model_;
  tokenizer::Tokenizer tokenizer_;
  svf::AdapterStore& store_;
  DispatchOptions options_;
  model::KVCache cache_;
  AdaptationPrompt prompt_;
  std::map<std::string, CachedPrefix> prefixes_;
};

}  // namespace t2::dispatch
