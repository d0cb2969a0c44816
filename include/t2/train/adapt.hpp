// Few-shot adaptation (`t2 adapt`, POST /v1/adaptations): CEM over the
// coefficients of a mixture of loaded experts, scored on a handful of
// examples, written as a mixture expert.
#pragma once

#include <atomic>
#include <functional>
#include <string>
#include <vector>

#include "t2/svf/adapter_store.hpp"
#include "t2/train/cem.hpp"
#include "t2/train/evaluate.hpp"

namespace t2::train {

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

// The mixture expert CEM found (not yet saved), with its scores and provenance.
svf::Expert adapt_mixture(const model::Transformer& model, const tokenizer::Tokenizer& tokenizer,
                          const svf::AdapterStore& store, const AdaptRequest& request);

}  // namespace t2::train
