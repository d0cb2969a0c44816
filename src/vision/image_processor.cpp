// LLaVA-NeXT preprocessing as transformers' LlavaNextImageProcessorPil does it:
// every geometric step runs on 8-bit RGB (Pillow resizes uint8 images), and only
// the final rescale/normalise goes to float32, with numpy's operation order.
#include "t2/vision/image_processor.hpp"

#include <algorithm>
#include <cmath>
#include <fstream>
#include <limits>
#include <sstream>

#include "t2/common/errors.hpp"

namespace t2::vision {
namespace {

// Pillow's bicubic kernel (a = -0.5), support 2.
double bicubic(double x) {
  constexpr double a = -0.5;
  x = std::fabs(x);
  if (x < 1.0) return ((a + 2.0) * x - (a + 3.0)) * x * x + 1.0;
  if (x < 2.0) return (((x - 5.0) * x + 8.0) * x - 4.0) * a;
  return 0.0;
}

// Fixed-point weights of one output sample: taps [first, first + weights.size()).
struct Taps {
  int64_t first = 0;
  std::vector<int32_t> weights;
};

constexpr int kPrecisionBits = 32 - 8 - 2;  // 8-bit samples, 2 bits of headroom for negative lobes

// Pillow's coefficient layout: the filter widened by the downscale factor
// (antialiasing), centred on each output sample, normalised to sum 1 and
// rounded half away from zero to kPrecisionBits.
std::vector<Taps> taps_for(int64_t in_size, int64_t out_size) {
  const double scale = static_cast<double>(in_size) / static_cast<double>(out_size);
  const double filter_scale = std::max(scale, 1.0);
  const double support = 2.0 * filter_scale;
  std::vector<Taps> taps(static_cast<size_t>(out_size));
  std::vector<double> w;
  for (int64_t xx = 0; xx < out_size; ++xx) {
    const double center = (static_cast<double>(xx) + 0.5) * scale;
    // Truncation, not floor: the C int conversion Pillow uses.
    const int64_t lo = std::max<int64_t>(static_cast<int64_t>(center - support + 0.5), 0);
    const int64_t hi = std::min<int64_t>(static_cast<int64_t>(center + support + 0.5), in_size);
    w.assign(static_cast<size_t>(std::max<int64_t>(hi - lo, 0)), 0.0);
    double total = 0.0;
    for (size_t i = 0; i < w.size(); ++i) {
      w[i] = bicubic((static_cast<double>(lo + static_cast<int64_t>(i)) - center + 0.5) / filter_scale);
      total += w[i];
    }
    Taps& t = taps[static_cast<size_t>(xx)];
    t.first = lo;
    t.weights.resize(w.size());
    for (size_t i = 0; i < w.size(); ++i) {
      const double v = (total != 0.0 ? w[i] / total : w[i]) * (1 << kPrecisionBits);
      t.weights[i] = static_cast<int32_t>(v < 0 ? v - 0.5 : v + 0.5);
    }
  }
  return taps;
}

uint8_t clip8(int32_t sum) { return static_cast<uint8_t>(std::clamp(sum >> kPrecisionBits, 0, 255)); }

// One separable pass along x (stride 3 within a row) or along y (stride 3*width).
Image resample_x(const Image& in, int64_t out_w) {
  const auto taps = taps_for(in.width, out_w);
  Image out{out_w, in.height, std::vector<uint8_t>(static_cast<size_t>(out_w * in.height * 3))};
  for (int64_t y = 0; y < in.height; ++y) {
    const uint8_t* row = in.rgb.data() + y * in.width * 3;
    uint8_t* dst = out.rgb.data() + y * out_w * 3;
    for (int64_t x = 0; x < out_w; ++x) {
      const Taps& t = taps[static_cast<size_t>(x)];
      for (int c = 0; c < 3; ++c) {
        int32_t sum = 1 << (kPrecisionBits - 1);
        for (size_t i = 0; i < t.weights.size(); ++i) sum += row[(t.first + static_cast<int64_t>(i)) * 3 + c] * t.weights[i];
        dst[x * 3 + c] = clip8(sum);
      }
    }
  }
  return out;
}

Image resample_y(const Image& in, int64_t out_h) {
  const auto taps = taps_for(in.height, out_h);
  const int64_t stride = in.width * 3;
  Image out{in.width, out_h, std::vector<uint8_t>(static_cast<size_t>(in.width * out_h * 3))};
  for (int64_t y = 0; y < out_h; ++y) {
    const Taps& t = taps[static_cast<size_t>(y)];
    uint8_t* dst = out.rgb.data() + y * stride;
    for (int64_t i = 0; i < stride; ++i) {
      int32_t sum = 1 << (kPrecisionBits - 1);
      for (size_t k = 0; k < t.weights.size(); ++k) sum += in.rgb[(t.first + static_cast<int64_t>(k)) * stride + i] * t.weights[k];
      dst[i] = clip8(sum);
    }
  }
  return out;
}

// HF's get_patch_output_size: fit inside the target keeping the aspect ratio.
std::pair<int64_t, int64_t> patch_output_size(int64_t h, int64_t w, int64_t target_h, int64_t target_w) {
  const double scale_w = static_cast<double>(target_w) / static_cast<double>(w);
  const double scale_h = static_cast<double>(target_h) / static_cast<double>(h);
  if (scale_w < scale_h) {
    return {std::min(static_cast<int64_t>(std::ceil(static_cast<double>(h) * scale_w)), target_h), target_w};
  }
  return {target_h, std::min(static_cast<int64_t>(std::ceil(static_cast<double>(w) * scale_h)), target_w)};
}

// Window [top, top+h) x [left, left+w) of an image; outside it, zeros. Covers
// HF's zero padding to the best resolution, its patch slicing (which clips at
// the border), and center_crop (which pads with zeros when the crop is larger).
Image window(const Image& in, int64_t top, int64_t left, int64_t h, int64_t w) {
  Image out{w, h, std::vector<uint8_t>(static_cast<size_t>(w * h * 3), 0)};
  for (int64_t y = std::max<int64_t>(0, -top); y < h && top + y < in.height; ++y) {
    const int64_t x0 = std::max<int64_t>(0, -left), x1 = std::min(w, in.width - left);
    if (x1 <= x0) continue;
    std::copy_n(in.rgb.data() + ((top + y) * in.width + left + x0) * 3, (x1 - x0) * 3, out.rgb.data() + (y * w + x0) * 3);
  }
  return out;
}

// Python's floor division, which HF's crop offsets use (negative when padding).
int64_t floor_div2(int64_t v) { return v >= 0 ? v / 2 : -((-v + 1) / 2); }

int64_t positive_int(const nlohmann::json& j, const char* key, const std::string& source) {
  if (!j.contains(key) || !j.at(key).is_number_integer() || j.at(key).get<int64_t>() <= 0) {
    throw LoadError(source + ": \"" + key + "\" must be a positive integer");
  }
  return j.at(key).get<int64_t>();
}

std::array<float, 3> three_floats(const nlohmann::json& j, const char* key, const std::string& source) {
  const auto& v = j.at(key);
  if (v.is_number()) {
    const auto f = v.get<float>();
    return {f, f, f};
  }
  if (!v.is_array() || v.size() != 3 || !std::all_of(v.begin(), v.end(), [](const auto& e) { return e.is_number(); })) {
    throw LoadError(source + ": \"" + key + "\" must be a number or a list of 3 numbers");
  }
  // numpy builds the mean/std arrays in the image's dtype, float32.
  return {v[0].get<float>(), v[1].get<float>(), v[2].get<float>()};
}

}  // namespace

Image resize_bicubic(const Image& image, int64_t height, int64_t width) {
  if (height <= 0 || width <= 0) throw InvalidArgument("size", "resize target must be positive");
  // Pillow skips a pass whose size does not change (and copies when neither does).
  Image out = width != image.width ? resample_x(image, width) : image;
  return height != image.height ? resample_y(out, height) : out;
}

std::pair<int64_t, int64_t> select_best_resolution(int64_t height, int64_t width,
                                                   const std::vector<std::pair<int64_t, int64_t>>& pinpoints) {
  std::pair<int64_t, int64_t> best{0, 0};
  int64_t max_effective = 0;
  int64_t min_wasted = std::numeric_limits<int64_t>::max();
  for (const auto& [h, w] : pinpoints) {
    const double scale = std::min(static_cast<double>(w) / static_cast<double>(width),
                                  static_cast<double>(h) / static_cast<double>(height));
    const auto down_w = static_cast<int64_t>(static_cast<double>(width) * scale);
    const auto down_h = static_cast<int64_t>(static_cast<double>(height) * scale);
    const int64_t effective = std::min(down_w * down_h, width * height);
    const int64_t wasted = w * h - effective;
    if (effective > max_effective || (effective == max_effective && wasted < min_wasted)) {
      max_effective = effective;
      min_wasted = wasted;
      best = {h, w};
    }
  }
  return best;
}

ProcessorConfig ProcessorConfig::from_json(const nlohmann::json& j, const std::string& source) {
  try {
    if (!j.is_object()) throw LoadError(source + ": not a JSON object");
    ProcessorConfig c;
    const auto flag = [&](const char* key, bool& out) {
      if (!j.contains(key)) return;
      if (!j.at(key).is_boolean()) throw LoadError(source + ": \"" + key + "\" must be true or false");
      out = j.at(key).get<bool>();
    };
    flag("do_resize", c.do_resize);
    flag("do_center_crop", c.do_center_crop);
    flag("do_rescale", c.do_rescale);
    flag("do_normalize", c.do_normalize);
    flag("do_pad", c.do_pad);
    bool convert_rgb = true;
    flag("do_convert_rgb", convert_rgb);
    // decode_image always yields RGB with transparency composited, which is what do_convert_rgb does.
    if (!convert_rgb) throw LoadError(source + ": do_convert_rgb false is not supported (images are always converted to RGB)");
    if (j.contains("resample") && j.at("resample") != 3) {
      throw LoadError(source + ": resample " + j.at("resample").dump() + " is not supported (only bicubic, 3)");
    }

    if (!j.contains("size") || !j.at("size").is_object()) throw LoadError(source + ": \"size\" must be an object");
    const auto& size = j.at("size");
    if (size.contains("shortest_edge")) {
      c.shortest_edge = positive_int(size, "shortest_edge", source + " size");
    } else {
      c.size_height = positive_int(size, "height", source + " size");
      c.size_width = positive_int(size, "width", source + " size");
    }
    if (j.contains("crop_size")) {
      const auto& crop = j.at("crop_size");
      if (crop.is_number_integer()) {
        c.crop_height = c.crop_width = positive_int(j, "crop_size", source);
      } else if (crop.is_object()) {
        c.crop_height = positive_int(crop, "height", source + " crop_size");
        c.crop_width = positive_int(crop, "width", source + " crop_size");
      } else {
        throw LoadError(source + ": \"crop_size\" must be an integer or {height, width}");
      }
    } else if (c.do_center_crop) {
      throw LoadError(source + ": do_center_crop needs \"crop_size\"");
    }
    c.image_mean = j.contains("image_mean") ? three_floats(j, "image_mean", source)
                                            : std::array<float, 3>{0.48145466f, 0.4578275f, 0.40821073f};
    c.image_std = j.contains("image_std") ? three_floats(j, "image_std", source)
                                          : std::array<float, 3>{0.26862954f, 0.26130258f, 0.27577711f};
    if (j.contains("rescale_factor")) {
      if (!j.at("rescale_factor").is_number()) throw LoadError(source + ": \"rescale_factor\" must be a number");
      c.rescale_factor = j.at("rescale_factor").get<double>();
    }
    const auto& pins = j.contains("image_grid_pinpoints") ? j.at("image_grid_pinpoints") : nlohmann::json();
    if (!pins.is_array() || pins.empty()) throw LoadError(source + ": \"image_grid_pinpoints\" must be a non-empty list");
    for (const auto& p : pins) {
      if (!p.is_array() || p.size() != 2 || !p[0].is_number_integer() || !p[1].is_number_integer() ||
          p[0].get<int64_t>() <= 0 || p[1].get<int64_t>() <= 0) {
        throw LoadError(source + ": image_grid_pinpoints entries must be [height, width] with positive integers");
      }
      c.image_grid_pinpoints.emplace_back(p[0].get<int64_t>(), p[1].get<int64_t>());
    }
    return c;
  } catch (const nlohmann::json::exception& e) {
    throw LoadError(source + ": " + e.what());
  }
}

ProcessorConfig ProcessorConfig::from_model_dir(const std::filesystem::path& dir) {
  const auto path = dir / "preprocessor_config.json";
  std::ifstream in(path);
  if (!in) throw LoadError("cannot read " + path.string());
  std::stringstream text;
  text << in.rdbuf();
  const auto j = nlohmann::json::parse(text.str(), nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) throw LoadError(path.string() + ": invalid JSON");
  return from_json(j, path.string());
}

ImageProcessor::ImageProcessor(ProcessorConfig config) : config_(std::move(config)) {}

ProcessedImage ImageProcessor::process(const Image& image) const {
  if (image.width <= 0 || image.height <= 0 || image.rgb.size() != static_cast<size_t>(image.width * image.height * 3)) {
    throw InvalidArgument("image", "image must be non-empty 8-bit RGB");
  }
  const ProcessorConfig& c = config_;
  const bool by_edge = c.shortest_edge > 0;
  const int64_t base_h = by_edge ? c.shortest_edge : c.size_height;
  const int64_t base_w = by_edge ? c.shortest_edge : c.size_width;
  const int64_t patch = c.crop_height > 0 ? c.crop_height : base_h;

  // The whole image at the base size, then the best-fitting grid cut into patches.
  std::vector<Image> patches{resize_bicubic(image, base_h, base_w)};
  const auto [best_h, best_w] = select_best_resolution(image.height, image.width, c.image_grid_pinpoints);
  const auto [fit_h, fit_w] = patch_output_size(image.height, image.width, best_h, best_w);
  const Image fitted = resize_bicubic(image, fit_h, fit_w);
  const Image padded = window(fitted, -((best_h - fit_h) / 2), -((best_w - fit_w) / 2), best_h, best_w);
  for (int64_t y = 0; y < best_h; y += patch) {
    for (int64_t x = 0; x < best_w; x += patch) {
      patches.push_back(window(padded, y, x, std::min(patch, best_h - y), std::min(patch, best_w - x)));
    }
  }

  ProcessedImage out;
  out.original_height = image.height;
  out.original_width = image.width;
  for (Image& p : patches) {
    if (c.do_resize) {
      if (by_edge) {
        // HF's get_resize_output_image_size: the short side to shortest_edge, the long one truncated.
        const bool portrait = p.width <= p.height;
        const int64_t s = portrait ? p.width : p.height, l = portrait ? p.height : p.width;
        const auto long_side = static_cast<int64_t>(static_cast<double>(c.shortest_edge * l) / static_cast<double>(s));
        p = portrait ? resize_bicubic(p, long_side, c.shortest_edge) : resize_bicubic(p, c.shortest_edge, long_side);
      } else {
        p = resize_bicubic(p, c.size_height, c.size_width);
      }
    }
    if (c.do_center_crop) {
      p = window(p, floor_div2(p.height - c.crop_height), floor_div2(p.width - c.crop_width), c.crop_height, c.crop_width);
    }
    if (out.patches == 0) {
      out.height = p.height;
      out.width = p.width;
    } else if (p.height != out.height || p.width != out.width) {
      // HF's np.array over the patches fails the same way: they cannot be stacked.
      throw Error("image patches differ in size (" + std::to_string(p.height) + "x" + std::to_string(p.width) + " vs " +
                  std::to_string(out.height) + "x" + std::to_string(out.width) + "); check size and crop_size");
    }
    ++out.patches;
  }

  // uint8 -> float64 * rescale_factor -> float32, then (x - mean) / std in float32: numpy's steps.
  const int64_t plane = out.height * out.width;
  out.pixels.resize(static_cast<size_t>(out.patches * 3 * plane));
  float* dst = out.pixels.data();
  for (const Image& p : patches) {
    for (int ch = 0; ch < 3; ++ch) {
      for (int64_t i = 0; i < plane; ++i) {
        const uint8_t v = p.rgb[static_cast<size_t>(i * 3 + ch)];
        float f = c.do_rescale ? static_cast<float>(static_cast<double>(v) * c.rescale_factor) : static_cast<float>(v);
        if (c.do_normalize) f = (f - c.image_mean[ch]) / c.image_std[ch];
        *dst++ = f;
      }
    }
  }
  return out;
}

}  // namespace t2::vision
