// Which weight matrices SVF adapts: the MLP projections (the paper's default),
// the attention projections, or both; and the mapping between a matrix's HF
// weight name and its (layer, projection).
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "t2/model/config.hpp"
#include "t2/model/weights.hpp"

namespace t2::svf {

// kNone: no SVF at all (no SVD at start, no experts): the base model alone.
enum class Targets { kMlp, kAttn, kAll, kNone };

Targets parse_targets(const std::string& text);  // "mlp" | "attn" | "all" | "none"
const char* to_string(Targets targets);
bool covers(Targets targets, model::Projection projection);

struct MatrixId {
  int64_t layer = 0;
  model::Projection projection = model::Projection::kQ;

  std::string weight_name() const { return model::projection_weight_name(layer, projection); }
  bool operator<(const MatrixId& o) const {
    return layer != o.layer ? layer < o.layer : static_cast<int>(projection) < static_cast<int>(o.projection);
  }
  bool operator==(const MatrixId& o) const { return layer == o.layer && projection == o.projection; }
};

// Every matrix of `config` that `targets` covers, by layer then projection.
std::vector<MatrixId> target_matrices(const model::ModelConfig& config, Targets targets);
// "model.layers.3.mlp.up_proj.weight" -> {3, kUp}; nullopt if it names no
// projection of a model with `num_layers` layers. A VLM's spellings of the same
// matrix ("language_model.model.layers.3...", "model.language_model.layers.3...")
// map to the same id.
std::optional<MatrixId> parse_weight_name(const std::string& name, int64_t num_layers);
// min(m, n): the number of singular values, i.e. the length of z.
int64_t singular_value_count(const model::ModelConfig& config, model::Projection projection);

}  // namespace t2::svf
