#include "t2/train/adapt.hpp"

#include <c10/core/InferenceMode.h>

#include "t2/common/errors.hpp"
#include "t2/train/policy.hpp"

namespace t2::train {

svf::Expert adapt_mixture(const model::Transformer& model, const tokenizer::Tokenizer& tokenizer,
                          const svf::AdapterStore& store, const AdaptRequest& r) {
  if (r.experts.empty()) throw InvalidArgument("experts", "give the experts to mix");
  if (r.examples.empty()) throw InvalidArgument("examples", "give at least one example");
  if (!svf::is_valid_expert_name(r.name)) throw InvalidArgument("name", "invalid expert name '" + r.name + "'");
  std::vector<std::vector<int64_t>> prompts, answers;
  for (const auto& e : r.examples) {
    prompts.push_back(tokenizer.encode(e.prompt, true));
    answers.push_back(tokenizer.encode(e.answer, false));
  }
  // z of each expert on every matrix any of them adapts (1 where one leaves a matrix alone).
  std::vector<std::map<svf::MatrixId, at::Tensor>> expert_z;
  std::vector<std::pair<std::string, double>> all;
  for (const auto& name : r.experts) all.emplace_back(name, 0.0);
  std::set<svf::MatrixId> union_ids;
  for (const auto& [id, z] : store.resolve(svf::Adaptation{all})) union_ids.insert(id);
  for (const auto& name : r.experts) {
    auto z = store.resolve(svf::Adaptation::expert(name));
    for (const auto& id : union_ids) z.try_emplace(id, at::ones_like(store.factors().at(id).s));
    expert_z.push_back(std::move(z));
  }
  const std::vector<svf::MatrixId> matrices(union_ids.begin(), union_ids.end());
  const auto K = static_cast<int64_t>(r.experts.size());
  const auto M = static_cast<int64_t>(matrices.size());
  const auto coefficient = [&](const std::vector<double>& a, int64_t k, int64_t m) {
    return r.per_matrix ? a[static_cast<size_t>(k * M + m)] : a[static_cast<size_t>(k)];
  };
  const auto objective = [&](const std::vector<double>& a) {
    if (r.cancel != nullptr && r.cancel->load()) throw Error("the adaptation was cancelled");
    std::map<svf::MatrixId, at::Tensor> z;
    for (int64_t m = 0; m < M; ++m) {
      at::Tensor sum = at::zeros_like(store.factors().at(matrices[static_cast<size_t>(m)]).s);
      for (int64_t k = 0; k < K; ++k) sum += expert_z[static_cast<size_t>(k)].at(matrices[static_cast<size_t>(m)]) * coefficient(a, k, m);
      if (sum.sum().item<double>() <= 0) return CemScore{0, -1e30};  // all-zero coefficients compose nothing
      z.emplace(matrices[static_cast<size_t>(m)], sum);
    }
    const auto weights = store.compose(z);
    const auto accuracy = evaluate(model, tokenizer, weights, r.examples, r.reward, r.generation);
    c10::InferenceMode guard;
    const auto scores = score_completions(model, *weights, prompts, answers);
    return CemScore{accuracy.value(), scores.log_likelihood.mean().item<double>()};
  };
  const int64_t dimension = r.per_matrix ? K * M : K;
  const auto result = cross_entropy_method(dimension, std::vector<double>(static_cast<size_t>(dimension), 1.0 / static_cast<double>(K)),
                                           objective, r.cem, r.on_iteration);
  svf::Expert mixture;
  mixture.name = r.name;
  mixture.kind = svf::ExpertKind::kMixture;
  mixture.description = r.description;
  mixture.base_fingerprint = store.fingerprint();
  for (int64_t k = 0; k < K; ++k) {
    svf::MixtureComponent c{r.experts[static_cast<size_t>(k)], r.per_matrix ? 1.0 : coefficient(result.best, k, 0), {}};
    if (r.per_matrix) {
      for (int64_t m = 0; m < M; ++m) c.per_matrix[matrices[static_cast<size_t>(m)].weight_name()] = coefficient(result.best, k, m);
    }
    mixture.components.push_back(std::move(c));
  }
  const auto base = evaluate(model, tokenizer, nullptr, r.examples, r.reward, r.generation);
  mixture.provenance = {{"method", "cem"},          {"population", r.cem.population}, {"elite_ratio", r.cem.elite_ratio},
                        {"iters", r.cem.iters},     {"per_matrix", r.per_matrix},     {"seed", r.cem.seed},
                        {"reward", to_string(r.reward)}, {"examples", r.examples.size()}};
  mixture.scores = {{"few_shot_accuracy", result.best_score.accuracy},
                    {"few_shot_log_likelihood", result.best_score.log_likelihood},
                    {"base_few_shot_accuracy", base.value()}};
  return mixture;
}

}  // namespace t2::train
