#include "t2/model/adapter_batch.hpp"

#include <algorithm>

#include "t2/common/errors.hpp"

namespace t2::model {

AdapterBatch AdapterBatch::factored(const ProjectionSet& base, const FactorTable& table,
                                    const std::vector<int64_t>& token_slots, std::vector<bool> adapted,
                                    at::Device device) {
  if (static_cast<int64_t>(table.size()) != base.num_layers() ||
      static_cast<int64_t>(adapted.size()) != base.num_layers() * kNumProjections) {
    throw InvalidArgument("adapters", "the factor table does not match the model's layers");
  }
  if (token_slots.empty()) throw InvalidArgument("adapters", "a factored batch needs its tokens' slots");
  AdapterBatch batch;
  batch.dense_ = &base;
  batch.table_ = &table;
  batch.adapted_ = std::move(adapted);
  const bool shared = std::all_of(token_slots.begin(), token_slots.end(), [&](int64_t s) { return s == token_slots[0]; });
  if (shared) {
    batch.shared_slot_ = token_slots[0];
  } else {
    batch.token_slots_ = at::tensor(token_slots, at::kLong).to(device);
  }
  return batch;
}

at::Tensor AdapterBatch::project(int64_t layer, Projection p, const at::Tensor& x, const at::Tensor& bias) const {
  const auto index = static_cast<size_t>(layer * kNumProjections + static_cast<int>(p));
  const FactoredProjection* f = table_ != nullptr && adapted_[index]
                                    ? (*table_)[static_cast<size_t>(layer)][static_cast<size_t>(p)]
                                    : nullptr;
  if (f == nullptr) return bias.defined() ? at::linear(x, dense_->get(layer, p), bias) : at::linear(x, dense_->get(layer, p));
  const at::Tensor scale = shared_slot_ >= 0 ? f->scales[shared_slot_] : f->scales.index_select(0, token_slots_);
  const at::Tensor scaled = at::linear(x, f->Vh) * scale;
  return bias.defined() ? at::linear(scaled, f->U, bias) : at::linear(scaled, f->U);
}

}  // namespace t2::model
