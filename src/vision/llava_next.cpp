#include "t2/vision/llava_next.hpp"

#include <algorithm>
#include <cmath>
#include <fstream>
#include <limits>

#include <ATen/core/grad_mode.h>
#include <nlohmann/json.hpp>

#include "t2/common/errors.hpp"
#include "t2/model/checkpoint.hpp"
#include "t2/vision/image_processor.hpp"

namespace t2::vision {
namespace {

nlohmann::json read_config(const std::filesystem::path& path) {
  std::ifstream in(path);
  if (!in) throw LoadError(path.string() + ": cannot open file");
  try {
    return nlohmann::json::parse(in);
  } catch (const nlohmann::json::parse_error& e) {
    throw LoadError(path.string() + ": invalid JSON: " + e.what());
  }
}

// The rows and columns of a tile grid of `rows` x `cols` features that hold
// the image rather than padding, as HF's unpad_image (and the processor's
// _get_unpadded_features) compute them, rounding included.
struct Crop {
  int64_t row0 = 0, rows = 0, col0 = 0, cols = 0;
};

Crop unpadded(int64_t height, int64_t width, int64_t rows, int64_t cols) {
  const auto round7 = [](double v) { return static_cast<int64_t>(std::round(v * 1e7) / 1e7); };
  Crop crop{0, rows, 0, cols};
  const double original_aspect = static_cast<double>(width) / static_cast<double>(height);
  const double current_aspect = static_cast<double>(cols) / static_cast<double>(rows);
  if (original_aspect > current_aspect) {
    const int64_t new_rows = round7(static_cast<double>(height) * (static_cast<double>(cols) / static_cast<double>(width)));
    crop.row0 = (rows - new_rows) / 2;
    crop.rows = rows - 2 * crop.row0;
  } else {
    const int64_t new_cols = round7(static_cast<double>(width) * (static_cast<double>(rows) / static_cast<double>(height)));
    crop.col0 = (cols - new_cols) / 2;
    crop.cols = cols - 2 * crop.col0;
  }
  return crop;
}

}  // namespace

bool is_llava_next(const std::filesystem::path& model_dir) {
  const auto config_path = model_dir / "config.json";
  return std::filesystem::exists(config_path) && LlavaNextConfig::is_llava_next(read_config(config_path));
}

LlavaNext LlavaNext::load(const std::filesystem::path& model_dir, const model::Placement& placement) {
  const auto config_path = model_dir / "config.json";
  if (!std::filesystem::exists(config_path)) throw LoadError(model_dir.string() + ": no config.json (not a model folder)");
  LlavaNextConfig config = LlavaNextConfig::from_json(read_config(config_path), config_path.string());
  const model::Checkpoint checkpoint(model_dir);
  // Hub checkpoints (transformers 4) nest CLIP's vision_model; transformers 5
  // writes the tower flat, and its module names put "model." in front.
  const std::string class_embedding = "embeddings.class_embedding";
  const std::optional<std::string> tower_prefix = checkpoint.prefix_of(class_embedding);
  if (!tower_prefix) {
    throw LoadError(checkpoint.source() + ": no vision tower (no tensor named '<prefix>" + class_embedding +
                    "', e.g. 'vision_tower.vision_model." + class_embedding + "')");
  }
  const std::string model_prefix = tower_prefix->rfind("model.", 0) == 0 ? "model." : "";
  ClipVisionTower tower =
      ClipVisionTower::load(checkpoint, *tower_prefix, config.vision, config.encoder_layers_used(), placement);
  LlavaNext llava(std::move(config), std::move(tower), placement);
  const LlavaNextConfig& c = llava.config_;
  const std::string projector = model_prefix + "multi_modal_projector.";
  const int64_t text = c.text_hidden_size;
  llava.projector_1_weight_ = checkpoint.read(projector + "linear_1.weight", {text, c.vision.hidden_size}, placement);
  llava.projector_2_weight_ = checkpoint.read(projector + "linear_2.weight", {text, text}, placement);
  if (c.projector_bias) {
    llava.projector_1_bias_ = checkpoint.read(projector + "linear_1.bias", {text}, placement);
    llava.projector_2_bias_ = checkpoint.read(projector + "linear_2.bias", {text}, placement);
  }
  llava.image_newline_ = checkpoint.read(model_prefix + "image_newline", {text}, placement);
  return llava;
}

void LlavaNext::check_size(int64_t height, int64_t width) const {
  constexpr int64_t kMaxSide = int64_t{1} << 20;  // keeps height * width and the aspect arithmetic exact
  if (height <= 0 || width <= 0 || height > kMaxSide || width > kMaxSide) {
    throw InvalidArgument("image_size", "image size " + std::to_string(height) + "x" + std::to_string(width) +
                                            " is not a positive size of at most " + std::to_string(kMaxSide) + " pixels a side");
  }
}

std::pair<int64_t, int64_t> LlavaNext::best_resolution(int64_t height, int64_t width) const {
  return select_best_resolution(height, width, config_.grid_pinpoints);
}

int64_t LlavaNext::patch_count(int64_t height, int64_t width) const {
  check_size(height, width);
  const auto [best_height, best_width] = best_resolution(height, width);
  const int64_t s = config_.vision.image_size;
  return 1 + (best_height / s) * (best_width / s);
}

int64_t LlavaNext::feature_count(int64_t height, int64_t width) const {
  check_size(height, width);
  const auto [best_height, best_width] = best_resolution(height, width);
  const int64_t s = config_.vision.image_size;
  const int64_t grid = config_.vision.grid_size();
  const Crop crop = unpadded(height, width, grid * (best_height / s), grid * (best_width / s));
  // Base image (CLS dropped), then the tiles' rows, each with its image_newline.
  return grid * grid + crop.rows * (crop.cols + 1);
}

at::Tensor LlavaNext::encode(const at::Tensor& pixel_values, int64_t height, int64_t width) const {
  const int64_t patches = patch_count(height, width);
  const VisionConfig& v = config_.vision;
  if (pixel_values.dim() != 4 || pixel_values.size(0) != patches || pixel_values.size(1) != v.num_channels ||
      pixel_values.size(2) != v.image_size || pixel_values.size(3) != v.image_size) {
    throw InvalidArgument("pixel_values", "an image of " + std::to_string(height) + "x" + std::to_string(width) + " needs [" +
                                              std::to_string(patches) + ", " + std::to_string(v.num_channels) + ", " +
                                              std::to_string(v.image_size) + ", " + std::to_string(v.image_size) +
                                              "] pixel values, got " + c10::str(pixel_values.sizes()));
  }
  if (!at::isFloatingType(pixel_values.scalar_type())) throw InvalidArgument("pixel_values", "pixel values must be floating point");
  const at::NoGradGuard no_grad;  // not InferenceMode: training records may carry these features under autograd
  const at::Tensor hidden = tower_.forward(pixel_values.to(placement_.device, placement_.dtype));
  const at::Tensor selected = hidden.narrow(1, 1, hidden.size(1) - 1);  // "default": CLS dropped
  const at::Tensor features =
      at::linear(activation(config_.projector_act, at::linear(selected, projector_1_weight_, projector_1_bias_)),
                 projector_2_weight_, projector_2_bias_);  // [patches, grid * grid, text_hidden]

  const auto [best_height, best_width] = best_resolution(height, width);
  const int64_t tile_rows = best_height / v.image_size, tile_cols = best_width / v.image_size;
  const int64_t grid = v.grid_size();
  const int64_t text = config_.text_hidden_size;
  // Tiles [tile_rows, tile_cols, grid, grid, text] -> one feature map [text, rows, cols] of the whole image.
  const at::Tensor map = features.narrow(0, 1, patches - 1)
                             .reshape({tile_rows, tile_cols, grid, grid, text})
                             .permute({4, 0, 2, 1, 3})
                             .reshape({text, tile_rows * grid, tile_cols * grid});
  const Crop crop = unpadded(height, width, tile_rows * grid, tile_cols * grid);
  const at::Tensor image = map.narrow(1, crop.row0, crop.rows).narrow(2, crop.col0, crop.cols);
  const at::Tensor newline = image_newline_.view({text, 1, 1}).expand({text, crop.rows, 1});
  const at::Tensor rows = at::cat({image, newline}, 2).flatten(1, 2).transpose(0, 1);
  return at::cat({features[0], rows}, 0).contiguous();
}

}  // namespace t2::vision
