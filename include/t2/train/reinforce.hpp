// SVF training with REINFORCE, as the paper and its reference code: sample a
// completion per prompt with the current expert, reward +1 if it solves the
// task and -1 otherwise, and minimise
//   loss = -mean(r * log pi(y|x)) + kl_coef * KL(pi || pi_base)
// with Adam on p (z = sigmoid(p) * max_mult) and gradient-norm clipping.
// Validation every eval_every steps keeps the best expert; a JSONL log holds
// reward, loss, KL and gradient norm per step; training resumes from the
// state file in the output folder and is deterministic under the seed.
#pragma once

#include <filesystem>
#include <functional>
#include <string>
#include <vector>

#include "t2/svf/expert.hpp"
#include "t2/train/evaluate.hpp"
#include "t2/train/policy.hpp"

namespace t2::train {

struct TrainOptions {
  double lr = 2e-3;
  int64_t batch_size = 16;
  int64_t iters = 50;
  double kl_coef = 0.0;
  double max_grad_norm = 1e-3;
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
  int64_t best_iter = 0;
  svf::Expert expert;
};

// One REINFORCE + Adam step on the given samples (prompt tokens, completion
// tokens, rewards); returns {loss, kl, grad_norm before clipping}.
struct StepStats {
  double loss = 0;
  double kl = 0;
  double grad_norm = 0;
};
class Reinforce {
 public:
  Reinforce(const model::Transformer& model, SvfPolicy& policy, const TrainOptions& options);
  StepStats step(const std::vector<std::vector<int64_t>>& prompts, const std::vector<std::vector<int64_t>>& completions,
                 const std::vector<double>& rewards);
  int64_t steps() const { return steps_; }
  std::vector<at::Tensor>& first_moments() { return m_; }
  std::vector<at::Tensor>& second_moments() { return v_; }
  void set_steps(int64_t steps) { steps_ = steps; }

 private:
  const model::Transformer& model_;
  SvfPolicy& policy_;
  TrainOptions options_;
  std::vector<at::Tensor> m_, v_;
  int64_t steps_ = 0;
};

TrainResult train_svf(const model::Transformer& model, const tokenizer::Tokenizer& tokenizer,
                      const svf::AdapterStore& store, const Task& task, const TrainOptions& options);

}  // namespace t2::train
