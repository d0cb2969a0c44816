#include "t2/model/adapter_batch.hpp"

#include <algorithm>

#include "t2/common/errors.hpp"

namespace t2::model {

AdapterBatch AdapterBatch::factored(const ProjectionSet& base, const FactorTable& table, at::Tensor token_slots,
                                    std::vector<bool> adapted, std::optional<int64_t> shared_slot) {
  if (static_cast<int64_t>(table.size()) != base.num_layers() ||
      static_cast<int64_t>(adapted.size()) != base.num_layers() * kNumProjections) {
    throw InvalidArgument("adapters", "the factor table does not match the model's layers");
  }
  if (!shared_slot && !token_slots.defined()) throw InvalidArgument("adapters", "a factored batch needs its tokens' slots");
  AdapterBatch batch;
  batch.dense_ = &base;
  batch.table_ = &table;
  batch.adapted_ = std::move(adapted);
  batch.token_slots_ = std::move(token_slots);
  batch.shared_slot_ = shared_slot.value_or(-1);
  return batch;
}

AdapterBatch AdapterBatch::bind(const StepWeights& w, const ProjectionSet& base, at::Device device) {
  if (w.dense != nullptr) return AdapterBatch(*w.dense);
  if (w.table == nullptr || w.token_slots.empty()) throw InvalidArgument("adapters", "a factored batch needs its tokens' slots");
  const std::vector<int64_t>& slots = w.token_slots;
  if (std::all_of(slots.begin(), slots.end(), [&](int64_t s) { return s == slots[0]; })) {
    return factored(base, *w.table, at::Tensor(), w.adapted, slots[0]);
  }
  return factored(base, *w.table, at::tensor(slots, at::kLong).to(device), w.adapted);
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
