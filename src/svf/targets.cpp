#include "t2/svf/targets.hpp"

#include <algorithm>
#include <cctype>

#include "t2/common/errors.hpp"

namespace t2::svf {

Targets parse_targets(const std::string& text) {
  if (text == "mlp") return Targets::kMlp;
  if (text == "attn") return Targets::kAttn;
  if (text == "all") return Targets::kAll;
  if (text == "none") return Targets::kNone;
  throw InvalidArgument("targets", "unknown targets '" + text + "' (use mlp, attn, all or none)");
}

const char* to_string(Targets targets) {
  switch (targets) {
    case Targets::kMlp: return "mlp";
    case Targets::kAttn: return "attn";
    case Targets::kAll: return "all";
    case Targets::kNone: return "none";
  }
  return "mlp";
}

bool covers(Targets targets, model::Projection p) {
  const bool is_mlp = p == model::Projection::kGate || p == model::Projection::kUp || p == model::Projection::kDown;
  if (targets == Targets::kNone) return false;
  return targets == Targets::kAll || (targets == Targets::kMlp) == is_mlp;
}

std::vector<MatrixId> target_matrices(const model::ModelConfig& config, Targets targets) {
  std::vector<MatrixId> ids;
  for (int64_t layer = 0; layer < config.num_layers; ++layer) {
    for (const model::Projection p : model::kAllProjections) {
      if (covers(targets, p)) ids.push_back({layer, p});
    }
  }
  return ids;
}

std::optional<MatrixId> parse_weight_name(const std::string& spelled, int64_t num_layers) {
  // A vision-language checkpoint nests the language model: LLaVA's hub layout
  // and transformers 5's module names spell its matrices these ways.
  static const std::string kVlmPrefixes[] = {"language_model.model.", "model.language_model."};
  std::string name = spelled;
  for (const std::string& vlm : kVlmPrefixes) {
    if (name.rfind(vlm, 0) == 0) name = "model." + name.substr(vlm.size());
  }
  static const std::string kPrefix = "model.layers.";
  if (name.rfind(kPrefix, 0) != 0) return std::nullopt;
  size_t end = kPrefix.size();
  while (end < name.size() && std::isdigit(static_cast<unsigned char>(name[end]))) ++end;
  if (end == kPrefix.size() || end - kPrefix.size() > 6) return std::nullopt;
  const int64_t layer = std::stoll(name.substr(kPrefix.size(), end - kPrefix.size()));
  if (layer >= num_layers) return std::nullopt;
  for (const model::Projection p : model::kAllProjections) {
    if (name == model::projection_weight_name(layer, p)) return MatrixId{layer, p};
  }
  return std::nullopt;
}

int64_t singular_value_count(const model::ModelConfig& config, model::Projection projection) {
  const auto shape = model::projection_shape(config, projection);
  return std::min(shape[0], shape[1]);
}

}  // namespace t2::svf
