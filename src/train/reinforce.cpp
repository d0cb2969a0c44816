#include "t2/train/reinforce.hpp"

#include <cmath>
#include <fstream>
#include <random>

#include <ATen/core/grad_mode.h>
#include <c10/core/InferenceMode.h>
#include <nlohmann/json.hpp>

#include "t2/common/errors.hpp"
#include "t2/common/progress.hpp"
#include "t2/engine/engine.hpp"
#include "t2/model/safetensors.hpp"

namespace t2::train {
namespace {

constexpr double kBeta1 = 0.9, kBeta2 = 0.999, kEpsilon = 1e-8;

}  // namespace

Reinforce::Reinforce(const model::Transformer& model, SvfPolicy& policy, const TrainOptions& options)
    : model_(model), policy_(policy), options_(options) {
  for (const auto& p : policy.parameters()) {
    m_.push_back(at::zeros_like(p.detach()));
    v_.push_back(at::zeros_like(p.detach()));
  }
}

StepStats Reinforce::step(const std::vector<std::vector<int64_t>>& prompts,
                          const std::vector<std::vector<int64_t>>& completions, const std::vector<double>& rewards) {
  StepStats stats;
  const model::ProjectionSet adapted = policy_.compose();
  const SequenceScores scores = score_completions(model_, adapted, prompts, completions,
                                                  options_.kl_coef > 0 ? &model_.base_projections() : nullptr);
  const at::Tensor r = at::tensor(rewards, at::kFloat).to(scores.log_likelihood.device());
  const at::Tensor loss = -(r * scores.log_likelihood).mean() + options_.kl_coef * scores.kl;
  for (auto& p : policy_.parameters()) p.mutable_grad() = at::Tensor();
  loss.backward();
  double norm_sq = 0;
  for (const auto& p : policy_.parameters()) norm_sq += p.grad().pow(2).sum().item<double>();
  stats.grad_norm = std::sqrt(norm_sq);
  const double clip = options_.max_grad_norm > 0 && stats.grad_norm > options_.max_grad_norm ? options_.max_grad_norm / stats.grad_norm : 1.0;
  ++steps_;
  {
    at::NoGradGuard no_grad;
    const double correction1 = 1 - std::pow(kBeta1, static_cast<double>(steps_));
    const double correction2 = 1 - std::pow(kBeta2, static_cast<double>(steps_));
    for (size_t i = 0; i < policy_.parameters().size(); ++i) {
      at::Tensor& p = policy_.parameters()[i];
      const at::Tensor g = p.grad() * clip;
      m_[i].mul_(kBeta1).add_(g, 1 - kBeta1);
      v_[i].mul_(kBeta2).addcmul_(g, g, 1 - kBeta2);
      p.sub_(options_.lr * (m_[i] / correction1) / ((v_[i] / correction2).sqrt() + kEpsilon));
    }
  }
  stats.loss = loss.item<double>();
  stats.kl = scores.kl.item<double>();
  return stats;
}

namespace {

// Samples one completion per prompt with the current expert (no gradients).
std::vector<std::vector<int64_t>> sample(const model::Transformer& model, const tokenizer::Tokenizer& tokenizer,
                                         const std::shared_ptr<const model::ProjectionSet>& weights,
                                         const std::vector<std::vector<int64_t>>& prompts, const TrainOptions& o,
                                         uint64_t seed, std::vector<std::string>& texts) {
  engine::Engine engine(model, tokenizer, o.generation.eos_token_ids, {static_cast<int64_t>(prompts.size()), 0});
  std::vector<engine::SequenceId> ids;
  for (size_t b = 0; b < prompts.size(); ++b) {
    engine::GenerationRequest r;
    r.prompt = prompts[b];
    r.sampling.temperature = o.temperature;
    r.sampling.seed = seed + b;
    r.max_tokens = o.generation.max_tokens;
    r.projections = weights;
    ids.push_back(engine.add(std::move(r)));
  }
  std::map<engine::SequenceId, size_t> index;
  for (size_t b = 0; b < ids.size(); ++b) index[ids[b]] = b;
  std::vector<std::vector<int64_t>> completions(prompts.size());
  texts.assign(prompts.size(), "");
  while (engine.active() > 0) {
    for (const auto& event : engine.step()) {
      completions[index.at(event.sequence)].push_back(event.token);
      texts[index.at(event.sequence)] += event.text;
    }
  }
  return completions;
}

}  // namespace

TrainResult train_svf(const model::Transformer& model, const tokenizer::Tokenizer& tokenizer,
                      const svf::AdapterStore& store, const Task& task, const TrainOptions& o) {
  const auto train = task.split(Split::kTrain);
  auto validation = task.split(Split::kValidation);
  if (train.empty()) throw InvalidArgument("task", "the task has no training examples");
  if (validation.empty()) validation = train;
  if (o.batch_size < 1 || o.iters < 1) throw InvalidArgument("iters", "iters and batch size must be positive");
  std::filesystem::create_directories(o.out_dir);
  const auto state_path = o.out_dir / "train_state.safetensors";
  const auto log_path = o.out_dir / "train_log.jsonl";

  SvfPolicy policy(model, store, o.max_mult, o.init);
  Reinforce reinforce(model, policy, o);
  TrainResult result;
  result.base_validation = evaluate(model, tokenizer, nullptr, validation, task.reward, o.generation).value();
  result.best_validation = result.base_validation;
  std::map<svf::MatrixId, at::Tensor> best_z = policy.z();
  int64_t start = 0;

  if (o.resume && std::filesystem::exists(state_path)) {
    const auto file = model::SafetensorsFile::open(state_path);
    for (size_t i = 0; i < policy.parameters().size(); ++i) {
      const std::string key = policy.matrices()[i].weight_name();
      const auto* p = file.find(key + ".p");
      const auto* m = file.find(key + ".m");
      const auto* v = file.find(key + ".v");
      const auto* best = file.find(key + ".best_z");
      if (!p || !m || !v || !best) throw LoadError(state_path.string() + ": no state for '" + key + "'");
      at::NoGradGuard no_grad;
      policy.parameters()[i].copy_(p->to_tensor());
      reinforce.first_moments()[i].copy_(m->to_tensor());
      reinforce.second_moments()[i].copy_(v->to_tensor());
      best_z[policy.matrices()[i]] = best->to_tensor();
    }
    start = std::stoll(file.metadata().at("iter"));
    reinforce.set_steps(start);
    result.best_validation = std::stod(file.metadata().at("best_validation"));
    result.best_iter = std::stoll(file.metadata().at("best_iter"));
  } else {
    std::ofstream(log_path, std::ios::trunc);
  }

  std::ofstream log(log_path, std::ios::app);
  ProgressBar progress("train " + o.name, o.iters);
  for (int64_t iter = start; iter < o.iters; ++iter) {
    // The batch and the samples depend only on (seed, iter): resuming replays exactly.
    std::mt19937_64 rng(o.seed * 1000003 + static_cast<uint64_t>(iter));
    std::vector<std::vector<int64_t>> prompts;
    std::vector<const Example*> picked;
    for (int64_t b = 0; b < o.batch_size; ++b) {
      picked.push_back(&train[rng() % train.size()]);
      prompts.push_back(tokenizer.encode(picked.back()->prompt, true));
    }
    std::vector<std::string> texts;
    const auto completions = sample(model, tokenizer, policy.compose_detached(), prompts, o, rng(), texts);
    std::vector<double> rewards;
    for (size_t b = 0; b < picked.size(); ++b) rewards.push_back(is_correct(task.reward, texts[b], picked[b]->answer) ? 1.0 : -1.0);
    const StepStats stats = reinforce.step(prompts, completions, rewards);
    double mean_reward = 0;
    for (const double r : rewards) mean_reward += r / static_cast<double>(rewards.size());
    nlohmann::json line = {{"iter", iter + 1}, {"reward", mean_reward}, {"loss", stats.loss}, {"kl", stats.kl},
                           {"grad_norm", stats.grad_norm}};
    if ((iter + 1) % o.eval_every == 0 || iter + 1 == o.iters) {
      const double score = evaluate(model, tokenizer, policy.compose_detached(), validation, task.reward, o.generation).value();
      line["validation"] = score;
      if (score > result.best_validation) {
        result.best_validation = score;
        result.best_iter = iter + 1;
        best_z = policy.z();
      }
      std::vector<std::pair<std::string, at::Tensor>> state;
      for (size_t i = 0; i < policy.parameters().size(); ++i) {
        const std::string key = policy.matrices()[i].weight_name();
        state.emplace_back(key + ".p", policy.parameters()[i].detach());
        state.emplace_back(key + ".m", reinforce.first_moments()[i]);
        state.emplace_back(key + ".v", reinforce.second_moments()[i]);
        state.emplace_back(key + ".best_z", best_z.at(policy.matrices()[i]));
      }
      model::write_safetensors(state_path, state,
                               {{"iter", std::to_string(iter + 1)}, {"best_validation", std::to_string(result.best_validation)},
                                {"best_iter", std::to_string(result.best_iter)}});
    }
    log << line.dump() << "\n" << std::flush;
    progress.update(iter + 1, "reward " + std::to_string(mean_reward));
  }
  progress.finish("best validation " + std::to_string(result.best_validation));

  svf::Expert& e = result.expert;
  e.name = o.name;
  e.description = o.description;
  e.base_fingerprint = store.fingerprint();
  for (const auto& [id, z] : best_z) e.z.emplace(id.weight_name(), z);
  e.provenance = {{"method", "reinforce"},
                  {"task", task.name},
                  {"reward", to_string(task.reward)},
                  {"lr", o.lr},
                  {"batch_size", o.batch_size},
                  {"iters", o.iters},
                  {"kl_coef", o.kl_coef},
                  {"max_grad_norm", o.max_grad_norm},
                  {"init", o.init},
                  {"max_mult", o.max_mult},
                  {"seed", o.seed},
                  {"temperature", o.temperature},
                  {"max_tokens", o.generation.max_tokens},
                  {"best_iter", result.best_iter}};
  e.scores = {{"validation_accuracy", result.best_validation}, {"base_validation_accuracy", result.base_validation},
              {"validation_examples", validation.size()}};
  e.save(o.out_dir);
  return result;
}

}  // namespace t2::train
