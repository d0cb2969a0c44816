// SVF training with REINFORCE, as the paper and its reference code: sample
// from the current expert, reward +1 if it solves the task and -1 otherwise,
// and minimise
//   loss = -mean(r * log pi(sample)) + kl_coef * mean(KL(pi || pi_base))
// where both log pi and the KL are per sampled sequence (sums over its tokens),
// with Adam on p (z = sigmoid(p) * max_mult) and gradient-norm clipping.
// Two objectives:
//   completions - a sampled completion per prompt, judged by the task's reward
//                 (the reference's free-text objective);
//   labels      - a classification expert for pass 1: pi(label | request) is
//                 the softmax of the labels' scores exactly as the dispatcher
//                 scores them (see dispatch/adaptation_prompt.hpp), a sampled
//                 label is right when it is the record's answer.
// Validation every eval_every steps keeps the best expert; a JSONL log holds
// reward, loss, KL and gradient norm per step; training resumes from the
// state file in the output folder and is deterministic under the seed.
#pragma once

#include <filesystem>
#include <functional>
#include <string>
#include <vector>

#include "t2/dispatch/adaptation_prompt.hpp"
#include "t2/svf/expert.hpp"
#include "t2/train/evaluate.hpp"
#include "t2/train/policy.hpp"

namespace t2::train {

enum class Objective { kCompletions, kLabels };
Objective parse_objective(const std::string& name);  // "completions" | "labels"; throws InvalidArgument("objective", ...)

// What the labels objective needs to render pass 1's prompt as the server does.
struct LabelObjective {
  std::string template_text;                   // the dispatch template
  std::vector<dispatch::Category> categories;  // the dispatch targets it will choose among
  dispatch::LabelScoring scoring = dispatch::LabelScoring::kMean;
  int64_t context = 1024;                      // pass 1's token budget
};

// Defaults measured on stories260K (bench/RESULTS.md, "What the KL penalty buys"):
// they learn within 100 steps and keep the expert's text fluent.
struct TrainOptions {
  Objective objective = Objective::kCompletions;
  LabelObjective labels;  // kLabels
  svf::DispatchRole dispatch = svf::DispatchRole::kNone;  // kCompletions: the role written to expert.json
  double lr = 5e-2;
  int64_t batch_size = 16;
  int64_t iters = 100;
  double kl_coef = 0.1;
  double max_grad_norm = 0.0;
  double init = 0.1;
  double max_mult = 1.0;
  uint64_t seed = 0;
  double temperature = 1.0;  // sampling during training
  int64_t eval_every = 10;
  Generation generation;
  std::filesystem::path out_dir;  // expert folder; also holds train_log.jsonl and train_state.safetensors
  std::string name;
  std::string description;
  bool resume = true;
};

struct TrainResult {
  double base_validation = 0;
  double best_validation = 0;
  int64_t best_iter = 0;                 // 0: no checkpoint beat the initial expert
  double base_validation_perplexity = 1;  // completions: the base model's own completions under itself
  double validation_perplexity = 1;       // completions: the best expert's completions under the base model
  svf::Expert expert;
};

// Adam with gradient-norm clipping over the policy's parameters.
class Adam {
 public:
  Adam(const std::vector<at::Tensor>& parameters, double lr, double max_grad_norm);
  // Applies the parameters' gradients; returns their norm before clipping.
  double step(std::vector<at::Tensor>& parameters);
  std::vector<at::Tensor>& first_moments() { return m_; }
  std::vector<at::Tensor>& second_moments() { return v_; }
  void set_steps(int64_t steps) { steps_ = steps; }

 private:
  double lr_, max_grad_norm_;
  std::vector<at::Tensor> m_, v_;
  int64_t steps_ = 0;
};

struct StepStats {
  double loss = 0;
  double kl = 0;
  double grad_norm = 0;  // before clipping
};

// REINFORCE + Adam steps on the policy.
class Reinforce {
 public:
  Reinforce(const model::Transformer& model, SvfPolicy& policy, const TrainOptions& options);
  // One step on completions (prompt tokens, completion tokens, rewards).
  StepStats step(const std::vector<std::vector<int64_t>>& prompts, const std::vector<std::vector<int64_t>>& completions,
                 const std::vector<double>& rewards);
  // The same for prompts that may hold images (options.generation.vision encodes them).
  StepStats step(const std::vector<ModelPrompt>& prompts, const std::vector<std::vector<int64_t>>& completions,
                 const std::vector<double>& rewards);
  // One step on a loss built by the caller: loss + kl_coef * kl, backward, Adam.
  StepStats apply(const at::Tensor& loss, const at::Tensor& kl);
  Adam& optimizer() { return adam_; }

 private:
  const model::Transformer& model_;
  SvfPolicy& policy_;
  TrainOptions options_;
  Adam adam_;
};

// The labels' scores for each request ([requests, labels]) under `weights`,
// as the dispatcher computes them; differentiable in the weights.
at::Tensor label_scores(const model::Transformer& model, const model::ProjectionSet& weights,
                        const dispatch::AdaptationPrompt& prompt, const dispatch::AdaptationPrompt::Prefix& prefix,
                        const std::vector<std::string>& requests, const std::vector<std::string>& labels,
                        dispatch::LabelScoring scoring, const model::ProjectionSet* kl_base, at::Tensor* kl);

// Trains an SVF expert on `task` with options.objective. For kLabels each
// record's answer is its label (a category or "others").
TrainResult train_svf(const model::Transformer& model, const tokenizer::Tokenizer& tokenizer,
                      const svf::AdapterStore& store, const Task& task, const TrainOptions& options);

}  // namespace t2::train
