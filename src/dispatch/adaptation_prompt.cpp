#include "t2/dispatch/adaptation_prompt.hpp"

#include <algorithm>

#include "t2/common/errors.hpp"

namespace t2::dispatch {
namespace {

std::string replace_all(std::string text, const std::string& from, const std::string& to) {
  for (size_t at = text.find(from); at != std::string::npos; at = text.find(from, at + to.size())) {
    text.replace(at, from.size(), to);
  }
  return text;
}

std::string category_list(const std::vector<Category>& categories, bool with_descriptions) {
  std::string list;
  for (const auto& c : categories) {
    list += "- " + c.label + (with_descriptions && !c.description.empty() ? ": " + c.description : "") + "\n";
  }
  if (!list.empty()) list.pop_back();
  return list;
}

}  // namespace

LabelScoring parse_label_scoring(const std::string& name) {
  if (name == "mean") return LabelScoring::kMean;
  if (name == "sum") return LabelScoring::kSum;
  throw InvalidArgument("label_scoring", "unknown label scoring '" + name + "' (use mean or sum)");
}

const char* to_string(LabelScoring scoring) { return scoring == LabelScoring::kMean ? "mean_logprob" : "sum_logprob"; }

double label_score(LabelScoring scoring, double log_likelihood, int64_t tokens) {
  return scoring == LabelScoring::kMean ? log_likelihood / static_cast<double>(std::max<int64_t>(tokens, 1)) : log_likelihood;
}

std::vector<std::string> labels_of(const std::vector<Category>& categories) {
  std::vector<std::string> labels;
  for (const auto& c : categories) labels.push_back(c.label);
  labels.emplace_back(kOthersLabel);
  return labels;
}

AdaptationPrompt::AdaptationPrompt(const std::string& template_text, tokenizer::Tokenizer tokenizer, int64_t context)
    : tokenizer_(std::move(tokenizer)), context_(context) {
  const auto at = template_text.find("{prompt}");
  if (at == std::string::npos) throw InvalidArgument("dispatch_template", "the dispatch template has no {prompt}");
  // The request's own leading space comes from SentencePiece's dummy prefix.
  before_prompt_ = template_text.substr(0, at);
  while (!before_prompt_.empty() && (before_prompt_.back() == ' ' || before_prompt_.back() == '\t')) before_prompt_.pop_back();
  after_prompt_ = template_text.substr(at + 8);
  while (!after_prompt_.empty() && after_prompt_.back() == '\n') after_prompt_.pop_back();
  after_prompt_tokens_ = static_cast<int64_t>(tokenizer_.encode(after_prompt_, false).size());
}

AdaptationPrompt::Prefix AdaptationPrompt::render(const std::vector<Category>& categories, bool with_descriptions) const {
  Prefix p;
  p.with_descriptions = with_descriptions;
  p.text = replace_all(before_prompt_, "{experts}", category_list(categories, with_descriptions));
  if (tokenizer_.bos_id() >= 0) p.tokens = {tokenizer_.bos_id()};  // Qwen2 has no BOS
  const auto body = tokenizer_.encode_with_specials(p.text);  // the template's own markup may hold control tokens
  p.tokens.insert(p.tokens.end(), body.begin(), body.end());
  return p;
}

AdaptationPrompt::Prefix AdaptationPrompt::prefix(const std::vector<Category>& categories) const {
  // The fixed part may take at most half the context; the rest is the request's.
  const auto limit = static_cast<size_t>(context_ / 2);
  Prefix described = render(categories, true);
  if (described.tokens.size() <= limit) return described;
  Prefix named = render(categories, false);
  if (named.tokens.size() <= limit) return named;
  throw InvalidArgument("dispatch_template",
                        "the dispatch prompt's fixed part lists " + std::to_string(categories.size()) +
                            " dispatch targets in " + std::to_string(described.tokens.size()) + " tokens (" +
                            std::to_string(named.tokens.size()) + " without descriptions), but pass 1's context of " +
                            std::to_string(context_) + " leaves it " + std::to_string(limit) +
                            ": mark fewer experts \"dispatch\": \"target\" in expert.json, shorten the template, "
                            "or raise --dispatch-context");
}

std::string AdaptationPrompt::fit_request(const std::string& request, int64_t budget) const {
  const auto tokens = tokenizer_.encode(request, false);
  if (static_cast<int64_t>(tokens.size()) <= budget) return request;
  return tokenizer_.decode({tokens.begin(), tokens.begin() + std::max<int64_t>(budget, 0)});
}

AdaptationPrompt::Candidates AdaptationPrompt::candidates(const std::string& request, const std::vector<std::string>& labels,
                                                          int64_t prefix_tokens) const {
  if (labels.empty()) throw InvalidArgument("dispatch", "pass 1 has no labels to choose among");
  size_t longest_label = 0;
  for (const auto& label : labels) longest_label = std::max(longest_label, tokenizer_.encode(label, false).size());
  const std::string context =
      fit_request(request, context_ - prefix_tokens - after_prompt_tokens_ - static_cast<int64_t>(longest_label) - 2) + after_prompt_;

  // The label alone, without the template's closing brace: a model that never
  // saw braces gives "}" a near-random -25 nats that would outweigh the label.
  std::vector<std::vector<int64_t>> sequences;
  for (const auto& label : labels) sequences.push_back(tokenizer_.encode(context + label, false));
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
  Candidates c;
  c.shared.assign(sequences[0].begin(), sequences[0].begin() + static_cast<std::ptrdiff_t>(common));
  for (const auto& s : sequences) c.label_tokens.emplace_back(s.begin() + static_cast<std::ptrdiff_t>(common), s.end());
  return c;
}

std::vector<int64_t> AdaptationPrompt::request_tokens(const std::string& request, int64_t prefix_tokens, int64_t reserve) const {
  return tokenizer_.encode(fit_request(request, context_ - prefix_tokens - after_prompt_tokens_ - reserve - 2) + after_prompt_, false);
}

}  // namespace t2::dispatch
