// Pass 1's adaptation prompt: the dispatch template filled with the dispatch
// targets, split at {prompt} into a fixed prefix (the part the dispatcher keeps
// in a KV cache) and the request, and the tokens of each candidate label after
// it. The dispatcher scores these tokens and `t2 train --objective labels`
// trains on them, so what a classification expert learns is what the server
// asks it.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "t2/tokenizer/tokenizer.hpp"

namespace t2::dispatch {

// "others" is always the last label: the request fits no expert, run the base weights.
inline constexpr const char* kOthersLabel = "others";

// A dispatch target as the template lists it.
struct Category {
  std::string label;
  std::string description;

  bool operator==(const Category& other) const { return label == other.label && description == other.description; }
};

// How a label's log-likelihood becomes its score.
enum class LabelScoring {
  kMean,  // mean log-probability of the label's own tokens: labels of different lengths compare fairly
  kSum,   // total log-probability (favours labels of fewer tokens)
};
LabelScoring parse_label_scoring(const std::string& name);  // throws InvalidArgument("label_scoring", ...)
const char* to_string(LabelScoring scoring);
// The score of a label from its tokens' log-probabilities.
double label_score(LabelScoring scoring, double log_likelihood, int64_t tokens);

class AdaptationPrompt {
 public:
  // `template_text` holds {prompt} and usually {experts}; `context` is pass 1's
  // token budget. Throws InvalidArgument("dispatch_template", ...) without {prompt}.
  AdaptationPrompt(const std::string& template_text, tokenizer::Tokenizer tokenizer, int64_t context);

  struct Prefix {
    std::string text;
    std::vector<int64_t> tokens;  // BOS, then the template up to {prompt}
    bool with_descriptions = true;
  };
  // The fixed part listing `categories` (targets, without "others"): with
  // their descriptions when that leaves half the context for the request, else
  // with names only. Throws InvalidArgument("dispatch_template", ...) naming
  // the counts when even that does not fit.
  Prefix prefix(const std::vector<Category>& categories) const;

  // The tokens after a prefix: `shared` (the request and the template's end,
  // common to every label) and each label's own tokens (without "}"), tokenised
  // together so the boundary is what the model sees. A request too long for
  // the context is cut to fit.
  struct Candidates {
    std::vector<int64_t> shared;
    std::vector<std::vector<int64_t>> label_tokens;  // one per label, never empty
  };
  Candidates candidates(const std::string& request, const std::vector<std::string>& labels, int64_t prefix_tokens) const;

  // The request and the template's end, for the free-text strategy.
  std::vector<int64_t> request_tokens(const std::string& request, int64_t prefix_tokens, int64_t reserve) const;


 private:
  Prefix render(const std::vector<Category>& categories, bool with_descriptions) const;
  std::string fit_request(const std::string& request, int64_t budget) const;

  tokenizer::Tokenizer tokenizer_;
  int64_t context_;
  std::string before_prompt_;  // the template before {prompt}, trailing blanks dropped
  std::string after_prompt_;   // after {prompt}, trailing newlines dropped
  int64_t after_prompt_tokens_ = 0;
};

// The labels pass 1 chooses among: the categories, then "others".
std::vector<std::string> labels_of(const std::vector<Category>& categories);

}  // namespace t2::dispatch
