#include "t2/train/evaluate.hpp"

#include <cmath>
#include <map>

#include <c10/core/InferenceMode.h>

#include "t2/engine/engine.hpp"
#include "t2/train/policy.hpp"

namespace t2::train {

std::pair<double, double> Accuracy::interval() const {
  if (total == 0) return {0.0, 1.0};
  const double z = 1.959964;
  const double n = static_cast<double>(total);
  const double p = value();
  const double centre = (p + z * z / (2 * n)) / (1 + z * z / n);
  const double half = z * std::sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n);
  return {std::max(0.0, centre - half), std::min(1.0, centre + half)};
}

std::vector<Completion> complete(const model::Transformer& model, const tokenizer::Tokenizer& tokenizer,
                                 const std::shared_ptr<const model::ProjectionSet>& weights,
                                 const std::vector<ModelPrompt>& prompts, const Generation& generation) {
  constexpr int64_t kBatch = 16;
  engine::Engine engine(model, tokenizer, generation.eos_token_ids, {kBatch, 0}, nullptr,
                        generation.vision != nullptr ? &generation.vision->model : nullptr);
  const auto adapter = svf::dense_adapter(weights);
  std::vector<Completion> out(prompts.size());
  std::map<engine::SequenceId, size_t> index;
  size_t next = 0;
  while (next < prompts.size() || engine.active() > 0) {
    while (next < prompts.size() && engine.has_capacity()) {
      engine::GenerationRequest r;
      r.prompt = prompts[next].tokens;
      r.images = prompts[next].images;
      out[next].prompt = prompts[next];
      r.sampling.temperature = 0;
      r.max_tokens = generation.max_tokens;
      r.adapter = adapter;
      index[engine.add(std::move(r))] = next++;
    }
    for (const auto& event : engine.step().tokens) {
      Completion& c = out[index.at(event.sequence)];
      c.text += event.text;
      c.tokens.push_back(event.token);
    }
  }
  return out;
}

double base_perplexity(const model::Transformer& model, const std::vector<Completion>& completions, const Vision* vision) {
  c10::InferenceMode guard;
  constexpr size_t kBatch = 16;
  double log_likelihood = 0;
  int64_t tokens = 0;
  for (size_t begin = 0; begin < completions.size(); begin += kBatch) {
    std::vector<ModelPrompt> prompts;
    std::vector<std::vector<int64_t>> continuations;
    for (size_t i = begin; i < std::min(completions.size(), begin + kBatch); ++i) {
      if (completions[i].tokens.empty()) continue;
      prompts.push_back(completions[i].prompt);
      continuations.push_back(completions[i].tokens);
    }
    if (prompts.empty()) continue;
    const SequenceScores s = score_completions(model, model.base_projections(), prompts, continuations, nullptr,
                                               vision != nullptr ? &vision->model : nullptr);
    log_likelihood += s.log_likelihood.sum().item<double>();
    tokens += s.tokens;
  }
  return tokens > 0 ? std::exp(-log_likelihood / static_cast<double>(tokens)) : 1.0;
}

namespace {

Accuracy score(const std::vector<Completion>& completions, const std::vector<Example>& examples, RewardKind reward) {
  Accuracy a;
  for (size_t i = 0; i < examples.size(); ++i) {
    a.correct += is_correct(reward, completions[i].text, examples[i].answer) ? 1 : 0;
    ++a.total;
  }
  return a;
}

}  // namespace

Accuracy evaluate(const model::Transformer& model, const tokenizer::Tokenizer& tokenizer,
                  const std::shared_ptr<const model::ProjectionSet>& weights, const std::vector<Example>& examples,
                  RewardKind reward, const Generation& generation) {
  return score(complete(model, tokenizer, weights, model_prompts(tokenizer, examples, generation.vision), generation), examples,
               reward);
}

Evaluation evaluate_with_perplexity(const model::Transformer& model, const tokenizer::Tokenizer& tokenizer,
                                    const std::shared_ptr<const model::ProjectionSet>& weights,
                                    const std::vector<Example>& examples, RewardKind reward, const Generation& generation) {
  const auto completions = complete(model, tokenizer, weights, model_prompts(tokenizer, examples, generation.vision), generation);
  return {score(completions, examples, reward), base_perplexity(model, completions, generation.vision)};
}

}  // namespace t2::train
