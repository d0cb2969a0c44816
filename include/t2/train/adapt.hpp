// Few-shot adaptation (`t2 adapt`, POST /v1/adaptations): CEM over the
// coefficients of a mixture of loaded experts, scored on a handful of
// examples, written as a mixture expert.
#pragma once

#include <atomic>
#include <memory>
#include <functional>
#include <string>
#include <vector>

#include "t2/svf/adapter_store.hpp"
#include "t2/train/cem.hpp"
#include "t2/train/evaluate.hpp"

namespace t2::train {

// How CEM runs a candidate: greedy completions of the examples' prompts, and
// the log-likelihood of each example's answer after its prompt. The CLI runs
// them on a local engine (EngineRunner); the server through its scheduler,
// in the same steps as live traffic.
class CandidateRunner {
 public:
  virtual ~CandidateRunner() = default;
  virtual std::vector<std::string> complete(const std::shared_ptr<const svf::Adapter>& adapter,
                                            const std::vector<std::vector<int64_t>>& prompts, const Generation& generation) = 0;
  virtual std::vector<double> answer_log_likelihoods(const std::shared_ptr<const svf::Adapter>& adapter,
                                                     const std::vector<std::vector<int64_t>>& prompts,
                                                     const std::vector<std::vector<int64_t>>& answers) = 0;
};

// Candidates on an engine of its own over `store`'s factors (no composition per candidate).
class EngineRunner : public CandidateRunner {
 public:
  EngineRunner(const model::Transformer& model, const tokenizer::Tokenizer& tokenizer, svf::AdapterStore& store);
  std::vector<std::string> complete(const std::shared_ptr<const svf::Adapter>& adapter,
                                    const std::vector<std::vector<int64_t>>& prompts, const Generation& generation) override;
  std::vector<double> answer_log_likelihoods(const std::shared_ptr<const svf::Adapter>& adapter,
                                             const std::vector<std::vector<int64_t>>& prompts,
                                             const std::vector<std::vector<int64_t>>& answers) override;

 private:
  const model::Transformer& model_;
  const tokenizer::Tokenizer& tokenizer_;
  svf::AdapterStore& store_;
};

struct AdaptRequest {
  std::string name;
  std::string description;
  std::vector<std::string> experts;  // loaded in the store
  std::vector<Example> examples;
  RewardKind reward = RewardKind::kContains;
  Generation generation;
  CemOptions cem;
  bool per_matrix = false;
  const std::atomic<bool>* cancel = nullptr;  // checked between candidates
  std::function<void(int64_t iteration, const CemScore& best)> on_iteration;
};

// The mixture expert CEM found (not yet saved), with its scores and
// provenance. Each candidate is an adapter of raw z vectors run by `runner`.
svf::Expert adapt_mixture(const tokenizer::Tokenizer& tokenizer, const svf::AdapterStore& store,
                          CandidateRunner& runner, const AdaptRequest& request);

}  // namespace t2::train
