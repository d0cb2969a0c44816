// The image side of a LLaVA-NeXT checkpoint (LlavaNextForConditionalGeneration):
// the CLIP vision tower, the projector into the language model's embedding
// space, and image_newline; with the anyres arithmetic of HF's processor (how
// many tiles and image tokens an image of some size gets). The language model
// itself is a model::Transformer loaded from the same folder.
#pragma once

#include <cstdint>
#include <filesystem>
#include <utility>

#include <ATen/ATen.h>

#include "t2/model/weights.hpp"
#include "t2/vision/clip_vision.hpp"
#include "t2/vision/vision_config.hpp"

namespace t2::vision {

// Whether `model_dir`'s config.json describes a LLaVA-NeXT checkpoint.
bool is_llava_next(const std::filesystem::path& model_dir);

class LlavaNext {
 public:
  static LlavaNext load(const std::filesystem::path& model_dir, const model::Placement& placement);

  const LlavaNextConfig& config() const { return config_; }
  int64_t image_token_id() const { return config_.image_token_id; }

  // How many image-token positions an image of this original size occupies in
  // the prompt (what LlavaNextProcessor expands <image> to).
  int64_t feature_count(int64_t height, int64_t width) const;
  // Patches (base image + tiles) HF's processor makes for that size: 1 + tiles of the best pinpoint.
  int64_t patch_count(int64_t height, int64_t width) const;
  // Vision-encoder tokens for `patches` patches, for step budgets.
  int64_t encoder_tokens(int64_t patches) const { return patches * config_.vision.num_positions(); }

  // pixel_values [patch_count, channels, S, S] (HF's processor output for one
  // image, any float dtype and device) and the original size -> the packed
  // image features [feature_count, text_hidden] in the compute dtype on the
  // model's device, as LlavaNextModel.get_image_features + pack_image_features.
  at::Tensor encode(const at::Tensor& pixel_values, int64_t height, int64_t width) const;

 private:
  LlavaNext(LlavaNextConfig config, ClipVisionTower tower, model::Placement placement)
      : config_(std::move(config)), tower_(std::move(tower)), placement_(placement) {}

  // The pinpoint (height, width) HF's select_best_resolution picks for the size.
  std::pair<int64_t, int64_t> best_resolution(int64_t height, int64_t width) const;
  void check_size(int64_t height, int64_t width) const;

  LlavaNextConfig config_;
  ClipVisionTower tower_;
  model::Placement placement_;
  at::Tensor projector_1_weight_, projector_1_bias_;  // biases undefined without multimodal_projector_bias
  at::Tensor projector_2_weight_, projector_2_bias_;
  at::Tensor image_newline_;  // [text_hidden]
};

}  // namespace t2::vision
