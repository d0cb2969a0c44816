// LLaVA-NeXT's image preprocessing ("anyres"): an RGB image -> the pixel_values
// and image_sizes that transformers' LlavaNextImageProcessorPil produces, bit for
// bit, including Pillow's fixed-point bicubic resampling of 8-bit images.
#pragma once

#include <array>
#include <cstdint>
#include <filesystem>
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "t2/vision/image.hpp"

namespace t2::vision {

// preprocessor_config.json of a LLaVA-NeXT model folder.
struct ProcessorConfig {
  // "size": either {"shortest_edge": N} (shortest_edge > 0) or {"height", "width"}.
  int64_t shortest_edge = 0;
  int64_t size_height = 0, size_width = 0;
  int64_t crop_height = 0, crop_width = 0;
  std::array<float, 3> image_mean{};
  std::array<float, 3> image_std{};
  double rescale_factor = 1.0 / 255.0;
  bool do_resize = true, do_center_crop = true, do_rescale = true, do_normalize = true;
  // Padding the patch dimension to the largest image of a batch; a batcher's job,
  // since process() sees one image.
  bool do_pad = true;
  std::vector<std::pair<int64_t, int64_t>> image_grid_pinpoints;  // (height, width)

  // Throws t2::LoadError naming `source` for missing/ill-typed fields and for
  // settings t2 does not implement (resample other than bicubic=3, do_convert_rgb false).
  static ProcessorConfig from_json(const nlohmann::json& j, const std::string& source);
  static ProcessorConfig from_model_dir(const std::filesystem::path& dir);  // reads preprocessor_config.json
};

struct ProcessedImage {
  std::vector<float> pixels;  // [patches, 3, height, width], float32, normalised
  int64_t patches = 0, height = 0, width = 0;
  int64_t original_height = 0, original_width = 0;  // HF's image_sizes entry
};

// HF's select_best_resolution: the (height, width) pinpoint that keeps the most of
// an image's resolution, then wastes the least.
std::pair<int64_t, int64_t> select_best_resolution(int64_t height, int64_t width,
                                                   const std::vector<std::pair<int64_t, int64_t>>& pinpoints);

// Pillow's Image.resize(..., BICUBIC) of an 8-bit image: separable, antialiased
// when downscaling, 22-bit fixed-point weights, horizontal pass first and clipped
// to 8 bits before the vertical one.
Image resize_bicubic(const Image& image, int64_t height, int64_t width);

class ImageProcessor {
 public:
  explicit ImageProcessor(ProcessorConfig config);
  const ProcessorConfig& config() const { return config_; }
  ProcessedImage process(const Image& image) const;

 private:
  ProcessorConfig config_;
};

}  // namespace t2::vision
