#include "t2/train/evaluate.hpp"

#include <cmath>
#include <map>

#include "t2/engine/engine.hpp"

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

std::vector<std::string> complete(const model::Transformer& model, const tokenizer::Tokenizer& tokenizer,
                                  const std::shared_ptr<const model::ProjectionSet>& weights,
                                  const std::vector<std::string>& prompts, const Generation& generation) {
  constexpr int64_t kBatch = 16;
  engine::Engine engine(model, tokenizer, generation.eos_token_ids, {kBatch, 0});
  std::vector<std::string> out(prompts.size());
  std::map<engine::SequenceId, size_t> index;
  size_t next = 0;
  while (next < prompts.size() || engine.active() > 0) {
    while (next < prompts.size() && engine.has_capacity()) {
      engine::GenerationRequest r;
      r.prompt = tokenizer.encode(prompts[next], true);
      r.sampling.temperature = 0;
      r.max_tokens = generation.max_tokens;
      r.projections = weights;
      index[engine.add(std::move(r))] = next++;
    }
    for (const auto& event : engine.step()) out[index.at(event.sequence)] += event.text;
  }
  return out;
}

Accuracy evaluate(const model::Transformer& model, const tokenizer::Tokenizer& tokenizer,
                  const std::shared_ptr<const model::ProjectionSet>& weights, const std::vector<Example>& examples,
                  RewardKind reward, const Generation& generation) {
  std::vector<std::string> prompts;
  for (const auto& e : examples) prompts.push_back(e.prompt);
  const auto completions = complete(model, tokenizer, weights, prompts, generation);
  Accuracy a;
  for (size_t i = 0; i < examples.size(); ++i) {
    a.correct += is_correct(reward, completions[i], examples[i].answer) ? 1 : 0;
    ++a.total;
  }
  return a;
}

}  // namespace t2::train
