// ImageProcessor against transformers' LlavaNextImageProcessorPil on every
// reference image and both configs (llava-hf/llama3-llava-next-8b-hf's and a
// tiny one), plus select_best_resolution and the config's refusals.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <string>

#include <unistd.h>

#include <gtest/gtest.h>

#include "reference.hpp"
#include "t2/common/errors.hpp"
#include "t2/vision/image.hpp"
#include "t2/vision/image_processor.hpp"

namespace {

using t2::vision::Image;
using t2::vision::ImageProcessor;
using t2::vision::ProcessorConfig;
namespace ref = t2::vision::testing;

// The image exactly as transformers saw it (Pillow's decoding), so this test does not depend on the decoder.
Image reference_rgb(const nlohmann::json& entry) {
  const std::string bytes = ref::read_file(ref::reference_dir() / (entry.at("name").get<std::string>() + ".rgb"));
  return Image{entry.at("width").get<int64_t>(), entry.at("height").get<int64_t>(),
               std::vector<uint8_t>(bytes.begin(), bytes.end())};
}

TEST(ImageProcessor, MatchesTransformersOnEveryReferenceImage) {
  for (const char* config : {"llava", "tiny"}) {
    const ImageProcessor processor(ProcessorConfig::from_model_dir(ref::reference_dir() / config));
    for (const auto& entry : ref::manifest().at("images")) {
      const std::string name = entry.at("name");
      SCOPED_TRACE(name + " with " + config);
      const auto& expected = entry.at("processed").at(config);
      const auto out = processor.process(reference_rgb(entry));
      const auto shape = expected.at("shape").get<std::vector<int64_t>>();
      ASSERT_EQ((std::vector<int64_t>{out.patches, 3, out.height, out.width}), shape);
      EXPECT_EQ((std::vector<int64_t>{out.original_height, out.original_width}),
                expected.at("image_size").get<std::vector<int64_t>>());
      const auto pixels = ref::read_floats(ref::reference_dir() / (name + "." + config + ".f32"));
      ASSERT_EQ(out.pixels.size(), pixels.size());
      float max_diff = 0;
      for (size_t i = 0; i < pixels.size(); ++i) max_diff = std::max(max_diff, std::fabs(out.pixels[i] - pixels[i]));
      // Same uint8 pixels and the same float32 operations as numpy: bit-identical.
      EXPECT_EQ(max_diff, 0.0f);
    }
  }
}

TEST(ImageProcessor, DecodesAndProcessesEndToEnd) {
  const ImageProcessor processor(ProcessorConfig::from_model_dir(ref::reference_dir() / "llava"));
  const std::string name = "rgba_120x90.png";
  const auto out = processor.process(
      t2::vision::decode_image(ref::read_file(ref::reference_dir() / "files" / name), {}));
  EXPECT_EQ(out.pixels, ref::read_floats(ref::reference_dir() / (name + ".llava.f32")));
}

TEST(ImageProcessor, SelectsBestResolutionAsTransformers) {
  const std::vector<std::pair<int64_t, int64_t>> pins{{336, 672}, {672, 336}, {672, 672}, {1008, 336}, {336, 1008}};
  using P = std::pair<int64_t, int64_t>;
  EXPECT_EQ(t2::vision::select_best_resolution(375, 500, pins), (P{672, 672}));
  EXPECT_EQ(t2::vision::select_best_resolution(200, 1000, pins), (P{336, 1008}));
  EXPECT_EQ(t2::vision::select_best_resolution(700, 100, pins), (P{1008, 336}));
  EXPECT_EQ(t2::vision::select_best_resolution(30, 40, pins), (P{336, 672}));  // all keep 1200 px: least waste, first
  EXPECT_EQ(t2::vision::select_best_resolution(2000, 1000, pins), (P{672, 336}));  // exact fit beats 1008x336's waste
}

TEST(ImageProcessor, ResizeToTheSameSizeIsACopy) {
  const Image image{3, 2, {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18}};
  EXPECT_EQ(t2::vision::resize_bicubic(image, 2, 3).rgb, image.rgb);
  EXPECT_THROW(t2::vision::resize_bicubic(image, 0, 3), t2::InvalidArgument);
}

nlohmann::json tiny_config() {
  return nlohmann::json::parse(ref::read_file(ref::reference_dir() / "tiny" / "preprocessor_config.json"));
}

std::string load_error(const nlohmann::json& j) {
  try {
    ProcessorConfig::from_json(j, "cfg.json");
  } catch (const t2::LoadError& e) {
    return e.what();
  }
  return "";
}

TEST(ProcessorConfig, ReadsTheLlavaNextConfig) {
  const auto c = ProcessorConfig::from_model_dir(ref::reference_dir() / "llava");
  EXPECT_EQ(c.shortest_edge, 336);
  EXPECT_EQ(c.crop_height, 336);
  EXPECT_EQ(c.crop_width, 336);
  EXPECT_EQ(c.image_grid_pinpoints.size(), 5u);
  EXPECT_EQ(c.image_grid_pinpoints[3], (std::pair<int64_t, int64_t>{1008, 336}));
  EXPECT_FLOAT_EQ(c.image_mean[0], 0.48145466f);
  EXPECT_FLOAT_EQ(c.image_std[2], 0.27577711f);
  EXPECT_TRUE(c.do_pad);
}

TEST(ProcessorConfig, RefusesWhatItDoesNotImplement) {
  auto j = tiny_config();
  j["resample"] = 2;
  EXPECT_EQ(load_error(j), "cfg.json: resample 2 is not supported (only bicubic, 3)");
  j = tiny_config();
  j["do_convert_rgb"] = false;
  EXPECT_NE(load_error(j).find("do_convert_rgb false is not supported"), std::string::npos);
  j = tiny_config();
  j.erase("image_grid_pinpoints");
  EXPECT_EQ(load_error(j), "cfg.json: \"image_grid_pinpoints\" must be a non-empty list");
  j = tiny_config();
  j["image_grid_pinpoints"] = {{32, -64}};
  EXPECT_NE(load_error(j).find("positive integers"), std::string::npos);
  j = tiny_config();
  j["size"] = {{"shortest_edge", "32"}};
  EXPECT_EQ(load_error(j), "cfg.json size: \"shortest_edge\" must be a positive integer");
  j = tiny_config();
  j["image_mean"] = {0.5, 0.5};
  EXPECT_EQ(load_error(j), "cfg.json: \"image_mean\" must be a number or a list of 3 numbers");
  EXPECT_THROW(ProcessorConfig::from_model_dir("/nonexistent-t2-dir"), t2::LoadError);
}

}  // namespace
