// The SVF policy being trained: one raw vector p per adapted matrix, with
// z = sigmoid(p) * max_mult (as the reference implementation), composed into
// weights under autograd so gradients of the language-model loss reach p.
#pragma once

#include <map>
#include <memory>
#include <string>
#include <vector>

#include <ATen/ATen.h>

#include "t2/model/transformer.hpp"
#include "t2/svf/adapter_store.hpp"
#include "t2/train/model_prompt.hpp"

namespace t2::train {

class SvfPolicy {
 public:
  // p starts at `init` everywhere: a uniform z, which the composition's
  // normalisation turns back into the base weights.
  SvfPolicy(const model::Transformer& model, const svf::AdapterStore& store, double max_mult, double init);

  std::vector<at::Tensor>& parameters() { return parameters_; }
  const std::vector<svf::MatrixId>& matrices() const { return matrices_; }
  double max_mult() const { return max_mult_; }

  // z for every matrix, detached, on the CPU.
  std::map<svf::MatrixId, at::Tensor> z() const;
  // The adapted weights, differentiable in p.
  model::ProjectionSet compose() const;
  // The same without autograd, for sampling.
  std::shared_ptr<const model::ProjectionSet> compose_detached() const;

 private:
  const model::Transformer& model_;
  const svf::AdapterStore& store_;
  double max_mult_;
  std::vector<svf::MatrixId> matrices_;
  std::vector<at::Tensor> parameters_;  // in s's precision, requires_grad
};

// Log-likelihoods of completions after prompts, under `weights`:
// sum over completion tokens of log pi(token | prefix), differentiable.
struct SequenceScores {
  at::Tensor log_likelihood;  // [B]
  at::Tensor kl;              // scalar: KL(pi || pi_base) summed over each completion's tokens, mean over completions; 0 without a base
  int64_t tokens = 0;
};
SequenceScores score_completions(const model::Transformer& model, const model::ProjectionSet& weights,
                                 const std::vector<std::vector<int64_t>>& prompts,
                                 const std::vector<std::vector<int64_t>>& completions,
                                 const model::ProjectionSet* kl_base = nullptr);
// The same for prompts that may hold images, which `vision` encodes.
SequenceScores score_completions(const model::Transformer& model, const model::ProjectionSet& weights,
                                 const std::vector<ModelPrompt>& prompts, const std::vector<std::vector<int64_t>>& completions,
                                 const model::ProjectionSet* kl_base, const vision::LlavaNext* vision);

}  // namespace t2::train
