// The adapted matrices of one forward, row by row. Either every token uses
// one dense set (the base weights, or a composed W'), or each token picks an
// SVF scale row: SVF shares U and Vᵀ across experts, so an adapted matrix
// applied to a token that runs adaptation a is
//     y = ((x Vᵀ) ⊙ scale[a]) Uᵀ + bias,   scale[a] = s ⊙ z̃_a
// with z̃ = z · Σs / Σ(s·z) (a mixture pre-combined into one z; the base is
// z̃ = 1). One forward then serves any mix of experts for about the bytes of
// U and Vᵀ, whatever the number of experts.
#pragma once

#include <array>
#include <cstdint>
#include <memory>
#include <optional>
#include <vector>

#include <ATen/ATen.h>

#include "t2/model/weights.hpp"

namespace t2::model {

// The SVF factors of one matrix with one scale row per table slot.
struct FactoredProjection {
  at::Tensor U;       // [out, r]
  at::Tensor Vh;      // [r, in]
  at::Tensor scales;  // [slots, r], the model dtype
};

// Per layer and projection; null where the matrix has no factors.
using FactorTable = std::vector<std::array<const FactoredProjection*, kNumProjections>>;

// What a step's tokens run with, before it is bound to device tensors: one
// dense set for all of them, or a scale row each.
struct StepWeights {
  const ProjectionSet* dense = nullptr;  // every token on this set; null: factored
  std::shared_ptr<const void> owner;     // keeps `dense` alive when the model does not own it
  const FactorTable* table = nullptr;    // factored: the scale table and
  std::vector<bool> adapted;             // the matrices any token adapts (layer * kNumProjections + projection)
  std::vector<int64_t> token_slots;      // each token's table slot, in packed token order
};

class AdapterBatch {
 public:
  // Every token runs `weights` (implicit: a plain ProjectionSet is the common case).
  AdapterBatch(const ProjectionSet& weights) : dense_(&weights) {}  // NOLINT(google-explicit-constructor)

  // Token i uses scale row token_slots[i] ([N] int64 on the model's device)
  // on the matrices marked in `adapted`, and `base` elsewhere. A step whose
  // tokens all share one slot may say so (`shared_slot`), saving a gather.
  static AdapterBatch factored(const ProjectionSet& base, const FactorTable& table, at::Tensor token_slots,
                               std::vector<bool> adapted, std::optional<int64_t> shared_slot = std::nullopt);
  // `weights` bound for an eager forward (its token slots copied to `device`).
  static AdapterBatch bind(const StepWeights& weights, const ProjectionSet& base, at::Device device);

  // x [N, in] -> [N, out] for the N packed tokens of the forward.
  at::Tensor project(int64_t layer, Projection p, const at::Tensor& x, const at::Tensor& bias) const;
  // The group's members applied to x, in member order ([N, out] each): one
  // GEMM whose output columns they are when the group is stacked and none of
  // its members is factored in this batch, else one projection each.
  std::vector<at::Tensor> project_group(int64_t layer, ProjectionGroup group, const at::Tensor& x,
                                        const LayerWeights& weights) const;

 private:
  AdapterBatch() = default;
  // The factors `p` runs through in this batch, or null when it runs dense.
  const FactoredProjection* factored_projection(int64_t layer, Projection p) const;

  const ProjectionSet* dense_ = nullptr;  // the dense set, or the base matrices of a factored batch
  const FactorTable* table_ = nullptr;
  std::vector<bool> adapted_;
  at::Tensor token_slots_;  // [N] on the device; undefined when every token shares `shared_slot_`
  int64_t shared_slot_ = -1;
};

}  // namespace t2::model
