#include "t2/vision/vision_config.hpp"

#include <nlohmann/json.hpp>

#include "t2/common/errors.hpp"
#include "t2/common/json_fields.hpp"
#include "t2/model/config.hpp"

namespace t2::vision {
namespace {

using nlohmann::json;

void require_positive(int64_t v, const std::string& name, const std::string& source) {
  if (v <= 0) throw LoadError(source + ": '" + name + "' must be a positive integer");
}

bool is_supported_activation(const std::string& act) { return act == "gelu" || act == "quick_gelu"; }

VisionConfig parse_vision(const json& j, const std::string& source) {
  VisionConfig v;
  const auto it = j.find("vision_config");
  if (it == j.end() || it->is_null()) {
    // LlavaNextConfig's default vision tower (CLIP ViT-L/14 at 336 px).
    v.hidden_size = 1024;
    v.intermediate_size = 4096;
    v.num_hidden_layers = 24;
    v.num_attention_heads = 16;
    v.image_size = 336;
    v.patch_size = 14;
    return v;
  }
  if (!it->is_object()) throw LoadError(source + ": vision_config must be an object");
  const json& vc = *it;
  const std::string model_type = json_value_or<std::string>(vc, "model_type", "clip_vision_model", source);
  if (model_type != "clip_vision_model") {
    throw LoadError(source + ": unsupported vision_config model_type '" + model_type + "' (supported: clip_vision_model)");
  }
  v.hidden_size = json_value_or<int64_t>(vc, "hidden_size", v.hidden_size, source);
  v.intermediate_size = json_value_or<int64_t>(vc, "intermediate_size", v.intermediate_size, source);
  v.num_hidden_layers = json_value_or<int64_t>(vc, "num_hidden_layers", v.num_hidden_layers, source);
  v.num_attention_heads = json_value_or<int64_t>(vc, "num_attention_heads", v.num_attention_heads, source);
  v.image_size = json_value_or<int64_t>(vc, "image_size", v.image_size, source);
  v.patch_size = json_value_or<int64_t>(vc, "patch_size", v.patch_size, source);
  v.num_channels = json_value_or<int64_t>(vc, "num_channels", v.num_channels, source);
  v.layer_norm_eps = json_value_or<double>(vc, "layer_norm_eps", v.layer_norm_eps, source);
  v.hidden_act = json_value_or<std::string>(vc, "hidden_act", v.hidden_act, source);
  const std::string field = source + ": vision_config";
  require_positive(v.hidden_size, "vision_config.hidden_size", source);
  require_positive(v.intermediate_size, "vision_config.intermediate_size", source);
  require_positive(v.num_hidden_layers, "vision_config.num_hidden_layers", source);
  require_positive(v.num_attention_heads, "vision_config.num_attention_heads", source);
  require_positive(v.image_size, "vision_config.image_size", source);
  require_positive(v.patch_size, "vision_config.patch_size", source);
  require_positive(v.num_channels, "vision_config.num_channels", source);
  if (v.hidden_size % v.num_attention_heads != 0) throw LoadError(field + ".hidden_size is not a multiple of num_attention_heads");
  if (v.image_size % v.patch_size != 0) throw LoadError(field + ".image_size is not a multiple of patch_size");
  if (!(v.layer_norm_eps > 0)) throw LoadError(field + ".layer_norm_eps must be > 0");
  if (!is_supported_activation(v.hidden_act)) {
    throw LoadError(field + ".hidden_act '" + v.hidden_act + "' is unsupported (supported: quick_gelu, gelu)");
  }
  return v;
}

}  // namespace

int64_t LlavaNextConfig::encoder_layers_used() const {
  return vision_feature_layer >= 0 ? vision_feature_layer : vision.num_hidden_layers + 1 + vision_feature_layer;
}

bool LlavaNextConfig::is_llava_next(const json& config) { return model::is_llava_next_config(config); }

LlavaNextConfig LlavaNextConfig::from_json(const json& j, const std::string& source) {
  if (!is_llava_next(j)) throw LoadError(source + ": not a LlavaNextForConditionalGeneration config");
  LlavaNextConfig c;
  c.vision = parse_vision(j, source);
  c.text_hidden_size = model::ModelConfig::from_json(j, source).hidden_size;
  // Transformers reads either spelling (image_token_id is an alias of image_token_index).
  c.image_token_id = json_value_or<int64_t>(j, "image_token_index", json_value_or<int64_t>(j, "image_token_id", c.image_token_id, source), source);
  if (const auto layer = j.find("vision_feature_layer"); layer != j.end() && layer->is_array()) {
    throw LoadError(source + ": vision_feature_layer as a list (features of several layers concatenated) is unsupported");
  }
  c.vision_feature_layer = json_value_or<int>(j, "vision_feature_layer", c.vision_feature_layer, source);
  if (c.vision_feature_layer > c.vision.num_hidden_layers || c.vision_feature_layer < -(c.vision.num_hidden_layers + 1)) {
    throw LoadError(source + ": vision_feature_layer " + std::to_string(c.vision_feature_layer) + " is outside the " +
                    std::to_string(c.vision.num_hidden_layers + 1) + " hidden states of the vision tower");
  }
  c.select_strategy = json_value_or<std::string>(j, "vision_feature_select_strategy", c.select_strategy, source);
  if (c.select_strategy == "full") {
    // Each tile would keep its CLS token and no longer form a square grid of patch features.
    throw LoadError(source + ": vision_feature_select_strategy 'full' keeps CLIP's CLS token, which anyres packing "
                             "cannot lay out as a grid (transformers fails on it too); use 'default'");
  }
  if (c.select_strategy != "default") {
    throw LoadError(source + ": unknown vision_feature_select_strategy '" + c.select_strategy + "' (supported: default)");
  }
  c.projector_act = json_value_or<std::string>(j, "projector_hidden_act", c.projector_act, source);
  if (!is_supported_activation(c.projector_act)) {
    throw LoadError(source + ": projector_hidden_act '" + c.projector_act + "' is unsupported (supported: gelu, quick_gelu)");
  }
  c.projector_bias = json_value_or<bool>(j, "multimodal_projector_bias", c.projector_bias, source);
  const auto pinpoints = j.find("image_grid_pinpoints");
  if (pinpoints == j.end() || pinpoints->is_null()) {
    c.grid_pinpoints = {{336, 672}, {672, 336}, {672, 672}, {1008, 336}, {336, 1008}};
  } else {
    if (!pinpoints->is_array() || pinpoints->empty()) throw LoadError(source + ": image_grid_pinpoints must be a non-empty list");
    for (const json& p : *pinpoints) {
      if (!p.is_array() || p.size() != 2 || !p[0].is_number_integer() || !p[1].is_number_integer()) {
        throw LoadError(source + ": image_grid_pinpoints entries must be [height, width] integer pairs");
      }
      c.grid_pinpoints.emplace_back(p[0].get<int64_t>(), p[1].get<int64_t>());
    }
  }
  for (const auto& [height, width] : c.grid_pinpoints) {
    if (height <= 0 || width <= 0 || height % c.vision.image_size != 0 || width % c.vision.image_size != 0) {
      throw LoadError(source + ": image_grid_pinpoints entry [" + std::to_string(height) + ", " + std::to_string(width) +
                      "] is not a positive multiple of vision_config.image_size " + std::to_string(c.vision.image_size));
    }
  }
  return c;
}

}  // namespace t2::vision
