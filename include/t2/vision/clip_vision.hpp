// The CLIP vision transformer (CLIPVisionModel) of a LLaVA checkpoint: patch
// and position embeddings, pre-LayerNorm, and the encoder layers up to the
// one whose hidden states feed the projector (later layers are not loaded).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include <ATen/ATen.h>

#include "t2/model/checkpoint.hpp"
#include "t2/model/weights.hpp"
#include "t2/vision/vision_config.hpp"

namespace t2::vision {

class ClipVisionTower {
 public:
  // Reads the tensors under `prefix` ("vision_tower.vision_model.", "vision_tower." ...),
  // the first `layers` encoder layers only.
  static ClipVisionTower load(const model::Checkpoint& checkpoint, const std::string& prefix, const VisionConfig& config,
                              int64_t layers, const model::Placement& placement);

  // pixel_values [patches, channels, S, S] in the compute dtype -> the hidden
  // states after the loaded layers: [patches, num_positions, hidden].
  at::Tensor forward(const at::Tensor& pixel_values) const;

 private:
  struct Layer {
    at::Tensor norm1_weight, norm1_bias, norm2_weight, norm2_bias;
    at::Tensor q_weight, q_bias, k_weight, k_bias, v_weight, v_bias, out_weight, out_bias;
    at::Tensor fc1_weight, fc1_bias, fc2_weight, fc2_bias;
  };

  VisionConfig config_;
  at::Tensor class_embedding_;     // [hidden]
  at::Tensor patch_embedding_;     // [hidden, channels, patch, patch]
  at::Tensor position_embedding_;  // [num_positions, hidden]
  at::Tensor pre_norm_weight_, pre_norm_bias_;
  std::vector<Layer> layers_;
};

// The activations CLIP and the LLaVA projector name in config.json: gelu (exact) or quick_gelu.
at::Tensor activation(const std::string& name, const at::Tensor& x);

}  // namespace t2::vision
