#include "t2/model/adapter_batch.hpp"

#include <algorithm>

#include "t2/common/errors.hpp"
#include "t2/model/linear.hpp"

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

const FactoredProjection* AdapterBatch::factored_projection(int64_t layer, Projection p) const {
  if (table_ == nullptr || !adapted_[static_cast<size_t>(layer * kNumProjections + static_cast<int>(p))]) return nullptr;
  return (*table_)[static_cast<size_t>(layer)][static_cast<size_t>(p)];
}

at::Tensor AdapterBatch::project(int64_t layer, Projection p, const at::Tensor& x, const at::Tensor& bias) const {
  const FactoredProjection* f = factored_projection(layer, p);
  if (f == nullptr) return model::linear(x, dense_->get(layer, p), bias);
  const at::Tensor scale = shared_slot_ >= 0 ? f->scales[shared_slot_] : f->scales.index_select(0, token_slots_);
  return model::linear(model::linear(x, f->Vh) * scale, f->U, bias);
}

std::vector<at::Tensor> AdapterBatch::project_group(int64_t layer, ProjectionGroup group, const at::Tensor& x,
                                                    const LayerWeights& weights) const {
  const std::vector<Projection>& members = group_members(group);
  const at::Tensor& stacked = dense_->stacked(layer, group);
  const at::Tensor& stacked_bias = weights.stacked_bias[static_cast<size_t>(group)];
  const bool any_bias = std::any_of(members.begin(), members.end(), [&](Projection p) { return weights.bias[static_cast<size_t>(p)].defined(); });
  const bool any_factored = std::any_of(members.begin(), members.end(), [&](Projection p) { return factored_projection(layer, p) != nullptr; });
  std::vector<at::Tensor> out;
  if (stacked.defined() && !any_factored && (!any_bias || stacked_bias.defined())) {
    const at::Tensor y = model::linear(x, stacked, stacked_bias);
    int64_t offset = 0;
    for (const Projection p : members) {
      const int64_t rows = dense_->get(layer, p).size(0);
      out.push_back(y.narrow(-1, offset, rows));
      offset += rows;
    }
    return out;
  }
  for (const Projection p : members) out.push_back(project(layer, p, x, weights.bias[static_cast<size_t>(p)]));
  return out;
}

}  // namespace t2::model
