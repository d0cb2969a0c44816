// Image bytes -> 8-bit RGB pixels: PNG (libpng) and JPEG (libjpeg-turbo), decoded
// as Pillow decodes them and converted to RGB as Hugging Face's image processors
// do (transparency composited onto white), so the vision preprocessing downstream
// sees the pixels the reference implementation sees.
#pragma once

#include <cstdint>
#include <string_view>
#include <vector>

namespace t2::vision {

// 8-bit RGB, row-major HWC: pixel (y, x) channel c is rgb[(y * width + x) * 3 + c].
struct Image {
  int64_t width = 0, height = 0;
  std::vector<uint8_t> rgb;
};

struct DecodeLimits {
  // 0: no limit. Otherwise width*height above it is refused from the header,
  // before any pixel memory is allocated (decompression bombs).
  int64_t max_pixels = 0;
};

// Decodes PNG or JPEG, detected by magic bytes (not by a caller's claim).
// PNG: gray, gray+alpha, palette (with tRNS), RGB, RGBA, 16-bit, interlaced.
// JPEG: gray, YCbCr/RGB; CMYK is refused. Pillow's conversions are matched:
// 16-bit samples keep their high byte, except 16-bit gray without alpha, which
// Pillow clamps to 255 (its I;16 -> RGB conversion); alpha and tRNS are
// composited onto white with Pillow's integer alpha_composite.
// Throws t2::InvalidArgument (param "image") for any input it cannot decode:
// unknown or unsupported formats, corrupt or truncated data, zero size, limits.
Image decode_image(std::string_view bytes, const DecodeLimits& limits);

}  // namespace t2::vision
