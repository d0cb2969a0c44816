// What a LLaVA-NeXT config.json says about the image side: the CLIP vision
// tower (vision_config), which of its layers feed the projector, the
// projector, and the grid pinpoints of anyres tiling.
#pragma once

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json_fwd.hpp>

namespace t2::vision {

// CLIPVisionConfig.
struct VisionConfig {
  int64_t hidden_size = 768;
  int64_t intermediate_size = 3072;
  int64_t num_hidden_layers = 12;
  int64_t num_attention_heads = 12;
  int64_t image_size = 224;
  int64_t patch_size = 32;
  int64_t num_channels = 3;
  double layer_norm_eps = 1e-5;
  std::string hidden_act = "quick_gelu";  // quick_gelu | gelu

  int64_t grid_size() const { return image_size / patch_size; }        // patches along a side
  int64_t num_positions() const { return grid_size() * grid_size() + 1; }  // patches + CLS
  int64_t head_dim() const { return hidden_size / num_attention_heads; }
};

struct LlavaNextConfig {
  VisionConfig vision;
  int64_t text_hidden_size = 0;  // the language model's hidden size, the projector's output
  int64_t image_token_id = 32000;
  // hidden_states index of the tower (negative counts from the end, as in Python).
  int vision_feature_layer = -2;
  std::string select_strategy = "default";  // "default" drops the CLS token
  std::string projector_act = "gelu";       // gelu | quick_gelu
  bool projector_bias = true;
  std::vector<std::pair<int64_t, int64_t>> grid_pinpoints;  // (height, width), multiples of image_size

  // Encoder layers to run: hidden_states[i] is the output of layer i (0 = embeddings).
  int64_t encoder_layers_used() const;

  // Parses a LLaVA-NeXT config.json; `source` names the file in error messages.
  static LlavaNextConfig from_json(const nlohmann::json& config, const std::string& source);
  static bool is_llava_next(const nlohmann::json& config);
};

}  // namespace t2::vision
