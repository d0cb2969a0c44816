#include "t2/train/reinforce.hpp"

#include <cmath>
#include <fstream>
#include <random>

#include <ATen/core/grad_mode.h>
#include <c10/core/InferenceMode.h>
#include <nlohmann/json.hpp>

#include "t2/common/errors.hpp"
#include "t2/common/log.hpp"
#include "t2/common/progress.hpp"
#include "t2/engine/engine.hpp"
#include "t2/model/safetensors.hpp"

namespace t2::train {
namespace {

constexpr double kBeta1 = 0.9, kBeta2 = 0.999, kEpsilon = 1e-8;

}  // namespace

Objective parse_objective(const std::string& name) {
  if (name == "completions") return Objective::kCompletions;
  if (name == "labels") return Objective::kLabels;
  throw InvalidArgument("objective", "unknown objective '" + name + "' (use completions or labels)");
}

Adam::Adam(const std::vector<at::Tensor>& parameters, double lr, double max_grad_norm) : lr_(lr), max_grad_norm_(max_grad_norm) {
  for (const auto& p : parameters) {
    m_.push_back(at::zeros_like(p.detach()));
    v_.push_back(at::zeros_like(p.detach()));
  }
}

double Adam::step(std::vector<at::Tensor>& parameters) {
  double norm_sq = 0;
  for (const auto& p : parameters) norm_sq += p.grad().pow(2).sum().item<double>();
  const double norm = std::sqrt(norm_sq);
  const double clip = max_grad_norm_ > 0 && norm > max_grad_norm_ ? max_grad_norm_ / norm : 1.0;
  ++steps_;
  at::NoGradGuard no_grad;
  const double correction1 = 1 - std::pow(kBeta1, static_cast<double>(steps_));
  const double correction2 = 1 - std::pow(kBeta2, static_cast<double>(steps_));
  for (size_t i = 0; i < parameters.size(); ++i) {
    at::Tensor& p = parameters[i];
    const at::Tensor g = p.grad() * clip;
    m_[i].mul_(kBeta1).add_(g, 1 - kBeta1);
    v_[i].mul_(kBeta2).addcmul_(g, g, 1 - kBeta2);
    p.sub_(lr_ * (m_[i] / correction1) / ((v_[i] / correction2).sqrt() + kEpsilon));
  }
  return norm;
}

Reinforce::Reinforce(const model::Transformer& model, SvfPolicy& policy, const TrainOptions& options)
    : model_(model), policy_(policy), options_(options), adam_(policy.parameters(), options.lr, options.max_grad_norm) {}

StepStats Reinforce::apply(const at::Tensor& loss, const at::Tensor& kl) {
  const at::Tensor total = loss + options_.kl_coef * kl;
  for (auto& p : policy_.parameters()) p.mutable_grad() = at::Tensor();
  total.backward();
  StepStats stats;
  stats.grad_norm = adam_.step(policy_.parameters());
  stats.loss = total.item<double>();
  stats.kl = kl.item<double>();
  return stats;
}

StepStats Reinforce::step(const std::vector<std::vector<int64_t>>& prompts,
                          const std::vector<std::vector<int64_t>>& completions, const std::vector<double>& rewards) {
  std::vector<ModelPrompt> text_prompts;
  for (const auto& p : prompts) text_prompts.push_back({p, {}});
  return step(text_prompts, completions, rewards);
}

StepStats Reinforce::step(const std::vector<ModelPrompt>& prompts, const std::vector<std::vector<int64_t>>& completions,
                          const std::vector<double>& rewards) {
  const model::ProjectionSet adapted = policy_.compose();
  const Vision* vision = options_.generation.vision;
  const SequenceScores scores = score_completions(model_, adapted, prompts, completions,
                                                  options_.kl_coef > 0 ? &model_.base_projections() : nullptr,
                                                  vision != nullptr ? &vision->model : nullptr);
  const at::Tensor r = at::tensor(rewards, at::kFloat).to(scores.log_likelihood.device());
  return apply(-(r * scores.log_likelihood).mean(), scores.kl);
}

at::Tensor label_scores(const model::Transformer& model, const model::ProjectionSet& weights,
                        const dispatch::AdaptationPrompt& prompt, const dispatch::AdaptationPrompt::Prefix& prefix,
                        const std::vector<std::string>& requests, const std::vector<std::string>& labels,
                        dispatch::LabelScoring scoring, const model::ProjectionSet* kl_base, at::Tensor* kl) {
  std::vector<std::vector<int64_t>> contexts, continuations;
  std::vector<double> lengths;
  for (const auto& request : requests) {
    const auto c = prompt.candidates(request, labels, static_cast<int64_t>(prefix.tokens.size()));
    std::vector<int64_t> context = prefix.tokens;
    context.insert(context.end(), c.shared.begin(), c.shared.end());
    for (const auto& own : c.label_tokens) {
      contexts.push_back(context);
      continuations.push_back(own);
      lengths.push_back(scoring == dispatch::LabelScoring::kMean ? static_cast<double>(own.size()) : 1.0);
    }
  }
  const SequenceScores s = score_completions(model, weights, contexts, continuations, kl_base);
  if (kl != nullptr) *kl = s.kl;
  const at::Tensor divisor = at::tensor(lengths, s.log_likelihood.options());
  return (s.log_likelihood / divisor).view({static_cast<int64_t>(requests.size()), static_cast<int64_t>(labels.size())});
}

namespace {

// Samples one completion per prompt with the current expert (no gradients).
std::vector<std::vector<int64_t>> sample(const model::Transformer& model, const tokenizer::Tokenizer& tokenizer,
                                         const std::shared_ptr<const model::ProjectionSet>& weights,
                                         const std::vector<ModelPrompt>& prompts, const TrainOptions& o,
                                         uint64_t seed, std::vector<std::string>& texts) {
  engine::Engine engine(model, tokenizer, o.generation.eos_token_ids, {static_cast<int64_t>(prompts.size()), 0}, nullptr,
                        o.generation.vision != nullptr ? &o.generation.vision->model : nullptr);
  const auto adapter = svf::dense_adapter(weights);
  std::vector<engine::SequenceId> ids;
  for (size_t b = 0; b < prompts.size(); ++b) {
    engine::GenerationRequest r;
    r.prompt = prompts[b].tokens;
    r.images = prompts[b].images;
    r.sampling.temperature = o.temperature;
    r.sampling.seed = seed + b;
    r.max_tokens = o.generation.max_tokens;
    r.adapter = adapter;
    ids.push_back(engine.add(std::move(r)));
  }
  std::map<engine::SequenceId, size_t> index;
  for (size_t b = 0; b < ids.size(); ++b) index[ids[b]] = b;
  std::vector<std::vector<int64_t>> completions(prompts.size());
  texts.assign(prompts.size(), "");
  while (engine.active() > 0) {
    for (const auto& event : engine.step().tokens) {
      completions[index.at(event.sequence)].push_back(event.token);
      texts[index.at(event.sequence)] += event.text;
    }
  }
  return completions;
}

// One objective as the training loop sees it: a step on a batch of training
// examples, returning the rewards it drew, and a validation score.
struct ObjectiveSteps {
  std::function<std::vector<double>(const std::vector<const Example*>& batch, uint64_t seed, StepStats& stats)> step;
  std::function<double(const std::shared_ptr<const model::ProjectionSet>& weights)> validate;
};

ObjectiveSteps completion_objective(const model::Transformer& model, const tokenizer::Tokenizer& tokenizer, SvfPolicy& policy,
                                    Reinforce& reinforce, const Task& task, const std::vector<Example>& validation,
                                    const TrainOptions& o) {
  ObjectiveSteps steps;
  steps.step = [&, o](const std::vector<const Example*>& batch, uint64_t seed, StepStats& stats) {
    std::vector<ModelPrompt> prompts;
    for (const Example* e : batch) prompts.push_back(model_prompt(tokenizer, *e, o.generation.vision));
    std::vector<std::string> texts;
    const auto completions = sample(model, tokenizer, policy.compose_detached(), prompts, o, seed, texts);
    std::vector<double> rewards;
    for (size_t b = 0; b < batch.size(); ++b) rewards.push_back(is_correct(task.reward, texts[b], batch[b]->answer) ? 1.0 : -1.0);
    stats = reinforce.step(prompts, completions, rewards);
    return rewards;
  };
  steps.validate = [&, o](const std::shared_ptr<const model::ProjectionSet>& weights) {
    return evaluate(model, tokenizer, weights, validation, task.reward, o.generation).value();
  };
  return steps;
}

struct LabelSetup {
  dispatch::AdaptationPrompt prompt;
  dispatch::AdaptationPrompt::Prefix prefix;
  std::vector<std::string> labels;
};

ObjectiveSteps label_objective(const model::Transformer& model, SvfPolicy& policy, Reinforce& reinforce,
                               const LabelSetup& setup, const std::vector<Example>& validation, const TrainOptions& o) {
  ObjectiveSteps steps;
  steps.step = [&, o](const std::vector<const Example*>& batch, uint64_t seed, StepStats& stats) {
    std::vector<std::string> requests;
    for (const Example* e : batch) requests.push_back(e->prompt);
    const model::ProjectionSet adapted = policy.compose();
    at::Tensor kl;
    const at::Tensor scores = label_scores(model, adapted, setup.prompt, setup.prefix, requests, setup.labels, o.labels.scoring,
                                           o.kl_coef > 0 ? &model.base_projections() : nullptr, &kl);
    const at::Tensor log_pi = (scores / o.temperature).log_softmax(-1);  // [B, L]
    const at::Tensor pi = log_pi.detach().exp().to(at::kDouble).cpu();
    std::mt19937_64 rng(seed);
    std::vector<double> rewards;
    std::vector<int64_t> picked;
    for (size_t b = 0; b < batch.size(); ++b) {
      const at::Tensor row = pi[static_cast<int64_t>(b)].contiguous();
      std::discrete_distribution<int64_t> draw(row.data_ptr<double>(), row.data_ptr<double>() + row.numel());
      picked.push_back(draw(rng));
      rewards.push_back(setup.labels[static_cast<size_t>(picked.back())] == batch[b]->answer ? 1.0 : -1.0);
    }
    const auto device = scores.device();
    const at::Tensor chosen = log_pi.gather(1, at::tensor(picked, at::kLong).view({-1, 1}).to(device)).squeeze(1);
    const at::Tensor r = at::tensor(rewards, at::kFloat).to(device).to(chosen.scalar_type());
    stats = reinforce.apply(-(r * chosen).mean(), kl);
    return rewards;
  };
  steps.validate = [&, o](const std::shared_ptr<const model::ProjectionSet>& weights) {
    c10::InferenceMode guard;
    const model::ProjectionSet& w = weights ? *weights : model.base_projections();
    constexpr size_t kBatch = 16;
    int64_t correct = 0;
    for (size_t begin = 0; begin < validation.size(); begin += kBatch) {
      std::vector<std::string> requests;
      for (size_t i = begin; i < std::min(validation.size(), begin + kBatch); ++i) requests.push_back(validation[i].prompt);
      const at::Tensor best = label_scores(model, w, setup.prompt, setup.prefix, requests, setup.labels, o.labels.scoring,
                                           nullptr, nullptr).argmax(-1).cpu();
      for (size_t i = 0; i < requests.size(); ++i) {
        correct += setup.labels[static_cast<size_t>(best[static_cast<int64_t>(i)].item<int64_t>())] == validation[begin + i].answer;
      }
    }
    return static_cast<double>(correct) / static_cast<double>(validation.size());
  };
  return steps;
}

}  // namespace

TrainResult train_svf(const model::Transformer& model, const tokenizer::Tokenizer& tokenizer,
                      const svf::AdapterStore& store, const Task& task, const TrainOptions& o) {
  const auto train = task.split(Split::kTrain);
  auto validation = task.split(Split::kValidation);
  if (train.empty()) throw InvalidArgument("task", "the task has no training examples");
  if (validation.empty()) validation = train;
  if (o.batch_size < 1 || o.iters < 1) throw InvalidArgument("iters", "iters and batch size must be positive");
  if (!(o.temperature > 0)) throw InvalidArgument("temperature", "the training temperature must be > 0");

  std::optional<LabelSetup> setup;
  if (o.objective == Objective::kLabels) {
    dispatch::AdaptationPrompt prompt(o.labels.template_text, tokenizer,
                                      std::min(o.labels.context, model.config().max_position_embeddings));
    auto prefix = prompt.prefix(o.labels.categories);
    setup.emplace(LabelSetup{std::move(prompt), std::move(prefix), dispatch::labels_of(o.labels.categories)});
    for (const auto& e : task.examples) {
      // Pass 1 classifies the request's text; a classification expert learns from text alone.
      if (!e.images.empty()) {
        throw LoadError(task.name + ":" + std::to_string(e.line) + ": --objective labels trains on text; the record has images");
      }
      if (std::find(setup->labels.begin(), setup->labels.end(), e.answer) == setup->labels.end()) {
        throw LoadError(task.name + ":" + std::to_string(e.line) + ": answer '" + e.answer +
                        "' is not a label (the dispatch targets and \"others\")");
      }
    }
  }

  std::filesystem::create_directories(o.out_dir);
  const auto state_path = o.out_dir / "train_state.safetensors";
  const auto log_path = o.out_dir / "train_log.jsonl";

  SvfPolicy policy(model, store, o.max_mult, o.init);
  Reinforce reinforce(model, policy, o);
  const ObjectiveSteps objective = setup ? label_objective(model, policy, reinforce, *setup, validation, o)
                                         : completion_objective(model, tokenizer, policy, reinforce, task, validation, o);
  TrainResult result;
  result.base_validation = objective.validate(nullptr);
  result.best_validation = result.base_validation;
  std::map<svf::MatrixId, at::Tensor> best_z = policy.z();
  int64_t start = 0;
  Adam& adam = reinforce.optimizer();

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
      adam.first_moments()[i].copy_(m->to_tensor());
      adam.second_moments()[i].copy_(v->to_tensor());
      best_z[policy.matrices()[i]] = best->to_tensor();
    }
    start = std::stoll(file.metadata().at("iter"));
    adam.set_steps(start);
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
    std::vector<const Example*> batch;
    for (int64_t b = 0; b < o.batch_size; ++b) batch.push_back(&train[rng() % train.size()]);
    StepStats stats;
    const std::vector<double> rewards = objective.step(batch, rng(), stats);
    double mean_reward = 0;
    for (const double r : rewards) mean_reward += r / static_cast<double>(rewards.size());
    nlohmann::json line = {{"iter", iter + 1}, {"reward", mean_reward}, {"loss", stats.loss}, {"kl", stats.kl},
                           {"grad_norm", stats.grad_norm}};
    if ((iter + 1) % o.eval_every == 0 || iter + 1 == o.iters) {
      const double score = objective.validate(policy.compose_detached());
      line["validation"] = score;
      // A tie with an earlier improvement goes to the later checkpoint, which
      // trained longer; a tie with the starting point is no improvement.
      if (score > result.best_validation || (score == result.best_validation && result.best_iter > 0)) {
        result.best_validation = score;
        result.best_iter = iter + 1;
        best_z = policy.z();
      }
      std::vector<std::pair<std::string, at::Tensor>> state;
      for (size_t i = 0; i < policy.parameters().size(); ++i) {
        const std::string key = policy.matrices()[i].weight_name();
        state.emplace_back(key + ".p", policy.parameters()[i].detach());
        state.emplace_back(key + ".m", adam.first_moments()[i]);
        state.emplace_back(key + ".v", adam.second_moments()[i]);
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
  if (result.best_iter == 0) {
    log::warn("train " + o.name + ": no checkpoint beat the initial expert (validation " + std::to_string(result.base_validation) +
              "), so the saved expert is the starting point, which acts as the base model; try a higher --lr, more --iters "
              "or a task the base model sometimes solves");
  }

  svf::Expert& e = result.expert;
  e.name = o.name;
  e.description = o.description;
  e.base_fingerprint = store.fingerprint();
  for (const auto& [id, z] : best_z) e.z.emplace(id.weight_name(), z);
  e.provenance = {{"method", "reinforce"},
                  {"objective", o.objective == Objective::kLabels ? "labels" : "completions"},
                  {"task", task.name},
                  {"lr", o.lr},
                  {"batch_size", o.batch_size},
                  {"iters", o.iters},
                  {"kl_coef", o.kl_coef},
                  {"max_grad_norm", o.max_grad_norm},
                  {"init", o.init},
                  {"max_mult", o.max_mult},
                  {"seed", o.seed},
                  {"temperature", o.temperature},
                  {"best_iter", result.best_iter}};
  e.scores = {{"validation_accuracy", result.best_validation}, {"base_validation_accuracy", result.base_validation},
              {"validation_examples", validation.size()}};
  if (setup) {
    e.dispatch = svf::DispatchRole::kClassifier;
    e.dispatch_labels = setup->labels;
    e.provenance["label_scoring"] = dispatch::to_string(o.labels.scoring);
    e.provenance["dispatch_template"] = o.labels.template_text;
  } else {
    e.dispatch = o.dispatch;
    e.provenance["reward"] = to_string(task.reward);
    e.provenance["max_tokens"] = o.generation.max_tokens;
    // Fluency beside accuracy: the completions' perplexity under the base model.
    result.base_validation_perplexity =
        evaluate_with_perplexity(model, tokenizer, nullptr, validation, task.reward, o.generation).perplexity;
    result.validation_perplexity =
        evaluate_with_perplexity(model, tokenizer, store.compose(best_z), validation, task.reward, o.generation).perplexity;
    e.scores["validation_perplexity"] = result.validation_perplexity;
    e.scores["base_validation_perplexity"] = result.base_validation_perplexity;
  }
  e.save(o.out_dir);
  return result;
}

}  // namespace t2::train
