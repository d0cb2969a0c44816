#include "t2/svf/adapter_table.hpp"

#include <c10/core/InferenceMode.h>

#include "t2/common/errors.hpp"

namespace t2::svf {

AdapterTable::AdapterTable(const model::Transformer& model, const std::map<MatrixId, SvdFactors>& factors,
                           int64_t slots)
    : table_(static_cast<size_t>(model.config().num_layers)), slots_(slots), slot_taken_(static_cast<size_t>(slots), false) {
  if (slots < 2) throw InvalidArgument("adapter_slots", "the adapter table needs the base slot and at least one more");
  c10::InferenceMode guard;
  for (const auto& [id, f] : factors) {
    // Every slot starts as the base (z̃ = 1: the scale is s itself).
    at::Tensor scales = f.s.to(f.U.scalar_type()).unsqueeze(0).repeat({slots, 1});
    auto& m = matrices_.emplace(id, model::FactoredProjection{f.U, f.Vh, std::move(scales)}).first->second;
    table_[static_cast<size_t>(id.layer)][static_cast<size_t>(id.projection)] = &m;
  }
  slot_taken_[kBaseSlot] = true;
}

void AdapterTable::begin_step() { ++step_; }

int64_t AdapterTable::slot_for(const Adapter& adapter) {
  const std::string id = adapter.id();
  for (const auto& [matrix, scale] : adapter.scales) {
    if (matrices_.count(matrix) == 0) throw InvalidArgument("adapter", "'" + matrix.weight_name() + "' has no SVD factors");
  }
  if (const auto it = entries_.find(id); it != entries_.end()) {
    it->second.last_step = step_;
    return it->second.slot;
  }
  int64_t slot = -1;
  for (int64_t s = 1; s < slots_ && slot < 0; ++s) {
    if (!slot_taken_[static_cast<size_t>(s)]) slot = s;
  }
  if (slot < 0) {  // evict the least recently used adapter not needed this step
    auto victim = entries_.end();
    for (auto it = entries_.begin(); it != entries_.end(); ++it) {
      if (it->second.last_step < step_ && (victim == entries_.end() || it->second.last_step < victim->second.last_step)) victim = it;
    }
    if (victim == entries_.end()) throw Error("adapter table: all " + std::to_string(slots_ - 1) + " slots are in use this step");
    slot = victim->second.slot;
    entries_.erase(victim);
  }
  c10::InferenceMode guard;
  for (auto& [matrix, m] : matrices_) {
    const auto found = adapter.scales.find(matrix);
    if (found != adapter.scales.end()) {
      m.scales[slot].copy_(found->second);
    } else {
      m.scales[slot].copy_(m.scales[kBaseSlot]);
    }
  }
  slot_taken_[static_cast<size_t>(slot)] = true;
  entries_[id] = {slot, step_};
  return slot;
}

void AdapterTable::mark_adapted(const Adapter& adapter, std::vector<bool>& adapted) const {
  for (const auto& [matrix, scale] : adapter.scales) {
    adapted[static_cast<size_t>(matrix.layer * model::kNumProjections + static_cast<int>(matrix.projection))] = true;
  }
}

int64_t AdapterTable::bytes() const {
  int64_t total = 0;
  for (const auto& [id, m] : matrices_) total += static_cast<int64_t>(m.scales.nbytes());
  return total;
}

}  // namespace t2::svf
