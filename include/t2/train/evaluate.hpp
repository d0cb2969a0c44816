// Accuracy of a model (base, expert or mixture) on task examples: greedy
// completions scored by the task's reward, with a Wilson 95% interval, and
// how fluent those completions are: their perplexity under the base model (an
// expert that games its reward writes text the base model finds unlikely).
#pragma once

#include <memory>
#include <vector>

#include "t2/model/transformer.hpp"
#include "t2/tokenizer/tokenizer.hpp"
#include "t2/train/model_prompt.hpp"
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
  const Vision* vision = nullptr;  // vision-language models: what encodes the examples' images
};

struct Completion {
  ModelPrompt prompt;
  std::vector<int64_t> tokens;
  std::string text;
};

// Greedy completions of `prompts` (batched).
std::vector<Completion> complete(const model::Transformer& model, const tokenizer::Tokenizer& tokenizer,
                                 const std::shared_ptr<const model::ProjectionSet>& weights,
                                 const std::vector<ModelPrompt>& prompts, const Generation& generation);

// exp(mean negative log-likelihood per token) of the completions under the
// base model; 1 when they hold no tokens. `vision` is needed for prompts with images.
double base_perplexity(const model::Transformer& model, const std::vector<Completion>& completions,
                       const Vision* vision = nullptr);

struct Evaluation {
  Accuracy accuracy;
  double perplexity = 1;  // of the completions under the base model
};

Accuracy evaluate(const model::Transformer& model, const tokenizer::Tokenizer& tokenizer,
                  const std::shared_ptr<const model::ProjectionSet>& weights, const std::vector<Example>& examples,
                  RewardKind reward, const Generation& generation);
// The same, with the completions' perplexity under the base model.
Evaluation evaluate_with_perplexity(const model::Transformer& model, const tokenizer::Tokenizer& tokenizer,
                                    const std::shared_ptr<const model::ProjectionSet>& weights,
                                    const std::vector<Example>& examples, RewardKind reward, const Generation& generation);

}  // namespace t2::train
