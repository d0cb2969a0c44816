#include "t2/train/adapt.hpp"

#include <c10/core/InferenceMode.h>

#include "t2/common/errors.hpp"
#include "t2/engine/engine.hpp"
#include "t2/train/policy.hpp"

namespace t2::train {

EngineRunner::EngineRunner(const model::Transformer& model, const tokenizer::Tokenizer& tokenizer, svf::AdapterStore& store)
    : model_(model), tokenizer_(tokenizer), store_(store) {}

std::vector<std::string> EngineRunner::complete(const std::shared_ptr<const svf::Adapter>& adapter,
                                                const std::vector<std::vector<int64_t>>& prompts, const Generation& generation) {
  constexpr int64_t kBatch = 16;
  engine::Engine engine(model_, tokenizer_, generation.eos_token_ids, {kBatch, 0}, &store_);
  std::vector<std::string> texts(prompts.size());
  std::map<engine::SequenceId, size_t> index;
  size_t next = 0;
  while (next < prompts.size() || engine.active() > 0) {
    while (next < prompts.size() && engine.has_capacity()) {
      engine::GenerationRequest r;
      r.prompt = prompts[next];
      r.sampling.temperature = 0;
      r.max_tokens = generation.max_tokens;
      r.adapter = adapter;
      index[engine.add(std::move(r))] = next++;
    }
    for (const auto& event : engine.step().tokens) texts[index.at(event.sequence)] += event.text;
  }
  return texts;
}

std::vector<double> EngineRunner::answer_log_likelihoods(const std::shared_ptr<const svf::Adapter>& adapter,
                                                         const std::vector<std::vector<int64_t>>& prompts,
                                                         const std::vector<std::vector<int64_t>>& answers) {
  engine::Engine engine(model_, std::nullopt, {}, {1, 0, 2048, 8}, &store_);
  std::map<engine::SequenceId, size_t> index;
  for (size_t i = 0; i < prompts.size(); ++i) {
    if (answers[i].empty()) continue;
    index[engine.score({{}, prompts[i], {answers[i]}, adapter})] = i;
  }
  std::vector<double> out(prompts.size(), 0.0);
  while (engine.active() > 0) {
    for (const auto& scores : engine.step().scores) {
      for (const double lp : scores.logprobs[0]) out[index.at(scores.request)] += lp;
    }
  }
  return out;
}

svf::Expert adapt_mixture(const tokenizer::Tokenizer& tokenizer, const svf::AdapterStore& store, CandidateRunner& runner,
                          const AdaptRequest& r) {
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
  int64_t candidate = 0;
  const auto accuracy_of = [&](const std::vector<std::string>& texts) {
    Accuracy accuracy;
    for (size_t i = 0; i < r.examples.size(); ++i) {
      accuracy.correct += is_correct(r.reward, texts[i], r.examples[i].answer) ? 1 : 0;
      ++accuracy.total;
    }
    return accuracy;
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
    const auto adapter = store.adapter_for("cem:" + r.name + ":" + std::to_string(candidate++), z);
    const auto accuracy = accuracy_of(runner.complete(adapter, prompts, r.generation));
    const auto log_likelihoods = runner.answer_log_likelihoods(adapter, prompts, answers);
    double mean = 0;
    for (const double ll : log_likelihoods) mean += ll / static_cast<double>(log_likelihoods.size());
    return CemScore{accuracy.value(), mean};
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
  const auto base = accuracy_of(runner.complete(nullptr, prompts, r.generation));
  mixture.provenance = {{"method", "cem"},          {"population", r.cem.population}, {"elite_ratio", r.cem.elite_ratio},
                        {"iters", r.cem.iters},     {"per_matrix", r.per_matrix},     {"seed", r.cem.seed},
                        {"reward", to_string(r.reward)}, {"examples", r.examples.size()}};
  mixture.scores = {{"few_shot_accuracy", result.best_score.accuracy},
                    {"few_shot_log_likelihood", result.best_score.log_likelihood},
                    {"base_few_shot_accuracy", base.value()}};
  return mixture;
}

}  // namespace t2::train
