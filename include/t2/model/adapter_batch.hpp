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

class AdapterBatch {
 public:
  // Every token runs `weights` (implicit: a plain ProjectionSet is the common case).
  AdapterBatch(const ProjectionSet& weights) : dense_(&weights) {}  // NOLINT(google-explicit-constructor)

  // Token i uses scale row token_slots[i] on the matrices marked in `adapted`
  // (indexed layer * kNumProjections + projection), and `base` elsewhere.
  // `token_slots` is in the forward's packed token order (chunk after chunk).
  static AdapterBatch factored(const ProjectionSet& base, const FactorTable& table, const std::vector<int64_t>& token_slots,
                               std::vector<bool> adapted, at::Device device);

  // x [N, in] -> [N, out] for the N packed tokens of the forward.
  at::Tensor project(int64_t layer, Projection p, const at::Tensor& x, const at::Tensor& bias) const;

 private:
  AdapterBatch() = default;

  const ProjectionSet* dense_ = nullptr;  // the dense set, or the base matrices of a factored batch
  const FactorTable* table_ = nullptr;
  std::vector<bool> adapted_;
  at::Tensor token_slots_;  // [N] on the device; undefined when every token shares `shared_slot_`
  int64_t shared_slot_ = -1;
};

}  // namespace t2::model
