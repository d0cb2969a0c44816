// The device table of the adaptations a model runner has active: for every
// factored matrix, one scale row per slot (slot 0 is the base model, z̃ = 1).
// A step's rows name slots, so any mix of adapters runs in one forward
// without copying anything per step; a new adapter costs one row write per
// matrix. Owned by one thread (the engine's).
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "t2/model/adapter_batch.hpp"
#include "t2/model/transformer.hpp"
#include "t2/svf/adapter.hpp"

namespace t2::svf {

class AdapterTable {
 public:
  static constexpr int64_t kBaseSlot = 0;

  // `factors` (U, s, Vh on the model's device) must outlive the table.
  AdapterTable(const model::Transformer& model, const std::map<MatrixId, SvdFactors>& factors, int64_t slots);

  // Starts a step: slots handed out after this are kept until the next one.
  void begin_step();
  // The slot holding `adapter`'s scales; writes them into a free or least
  // recently used slot when absent. Throws Error when every slot is taken this step.
  int64_t slot_for(const Adapter& adapter);
  // Marks in `adapted` (layer * kNumProjections + projection) the matrices `adapter` changes.
  void mark_adapted(const Adapter& adapter, std::vector<bool>& adapted) const;

  const model::FactorTable& factor_table() const { return table_; }
  int64_t slots() const { return slots_; }
  int64_t bytes() const;  // the scale rows

 private:
  struct Entry {
    int64_t slot;
    uint64_t last_step;
  };

  std::map<MatrixId, model::FactoredProjection> matrices_;
  model::FactorTable table_;
  int64_t slots_;
  std::map<std::string, Entry> entries_;  // adapter id -> slot
  std::vector<bool> slot_taken_;
  uint64_t step_ = 0;
};

}  // namespace t2::svf
