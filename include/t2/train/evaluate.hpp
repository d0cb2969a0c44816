// Accuracy of a model (base, expert or mixture) on task examples: greedy
// completions scored by the task's reward, with a Wilson 95% interval.
#pragma once

#include <memory>
#include <vector>

#include "t2/model/transformer.hpp"
#include "t2/tokenizer/tokenizer.hpp"
#include "t2/train/task.hpp"

namespace t2::train {

struct Accuracy {
  int64_t correct = 0;
  int64_t total = 0;
  double value() const { return total > 0 ? static_cast<double>(correct) / static_cast<double>(total) : 0.0; }
  // Wilson score interval at 95%.
  std::pair<double, double> interval() const;
};

struct Generation {
  int64_t max_tokens = 32;
  std::vector<int64_t> eos_token_ids;
};

// Greedy completions of `prompts` (batched), as text.
std::vector<std::string> complete(const model::Transformer& model, const tokenizer::Tokenizer& tokenizer,
                                  const std::shared_ptr<const model::ProjectionSet>& weights,
                                  const std::vector<std::string>& prompts, const Generation& generation);

Accuracy evaluate(const model::Transformer& model, const tokenizer::Tokenizer& tokenizer,
                  const std::shared_ptr<const model::ProjectionSet>& weights, const std::vector<Example>& examples,
                  RewardKind reward, const Generation& generation);

}  // namespace t2::train
