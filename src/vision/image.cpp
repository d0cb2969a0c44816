// PNG and JPEG decoding. libpng and libjpeg report errors through callbacks that
// must not return; they longjmp back into small functions that hold no objects
// with destructors (the jump would skip them), and the C++ code around them
// turns a failed step into t2::InvalidArgument.
#include "t2/vision/image.hpp"

#include <algorithm>
#include <csetjmp>
#include <cstdio>
#include <cstring>
#include <new>
#include <string>

#include <jpeglib.h>
#include <jerror.h>  // after jpeglib.h: the message codes, for JWRN_JPEG_EOF
#include <png.h>

#include "t2/common/errors.hpp"

namespace t2::vision {
namespace {

[[noreturn]] void fail(const std::string& message) { throw InvalidArgument("image", message); }

bool starts_with(std::string_view bytes, std::string_view magic) { return bytes.substr(0, magic.size()) == magic; }

// Names well-known formats we do not decode, so the error says what was sent.
const char* other_format_name(std::string_view b) {
  if (starts_with(b, "GIF87a") || starts_with(b, "GIF89a")) return "GIF";
  if (b.size() >= 12 && starts_with(b, "RIFF") && b.substr(8, 4) == "WEBP") return "WebP";
  if (starts_with(b, "BM")) return "BMP";
  if (starts_with(b, std::string_view("II*\0", 4)) || starts_with(b, std::string_view("MM\0*", 4))) return "TIFF";
  if (b.size() >= 12 && b.substr(4, 4) == "ftyp") {
    const auto brand = b.substr(8, 4);
    if (brand == "avif" || brand == "avis") return "AVIF";
    if (brand == "heic" || brand == "heix" || brand == "mif1" || brand == "msf1") return "HEIF";
  }
  if (starts_with(b, std::string_view("\0\0\1\0", 4))) return "ICO";
  if (starts_with(b, "%PDF")) return "PDF";
  return nullptr;
}

void check_dimensions(uint64_t width, uint64_t height, const DecodeLimits& limits) {
  if (width == 0 || height == 0) {
    fail("image is " + std::to_string(width) + "x" + std::to_string(height) + ": zero width or height");
  }
  const uint64_t pixels = width * height;  // both come from 31- or 16-bit header fields: no overflow
  if (limits.max_pixels > 0 && pixels > static_cast<uint64_t>(limits.max_pixels)) {
    fail("image is " + std::to_string(width) + "x" + std::to_string(height) + " = " + std::to_string(pixels) +
         " pixels, above the limit of " + std::to_string(limits.max_pixels));
  }
}

// Pillow's alpha_composite of (v, a) over opaque white, its integer arithmetic
// with 7 extra bits and rounded divisions by 255.
uint8_t over_white(uint32_t v, uint32_t a) {
  if (a == 0) return 255;
  constexpr uint32_t kBits = 7;
  const uint32_t out_a255 = a * 255 + 255 * (255 - a);
  const uint32_t coef1 = a * 255 * 255 * (1u << kBits) / out_a255;
  const uint32_t coef2 = 255 * (1u << kBits) - coef1;
  const uint32_t t = v * coef1 + 255 * coef2 + (0x80u << kBits);
  return static_cast<uint8_t>((((t >> 8) + t) >> 8) >> kBits);
}

// ---- PNG ----

struct PngState {
  std::string_view data;
  size_t pos = 0;
  bool truncated = false;
  char message[200] = {};  // libpng's text, kept in a plain buffer: the longjmp skips destructors
  std::jmp_buf jump;
};

extern "C" void png_on_error(png_structp png, png_const_charp message) {
  auto* state = static_cast<PngState*>(png_get_error_ptr(png));
  std::snprintf(state->message, sizeof state->message, "%s", message);
  std::longjmp(state->jump, 1);
}

extern "C" void png_on_warning(png_structp, png_const_charp) {}  // ancillary problems: Pillow ignores them too

extern "C" void png_on_read(png_structp png, png_bytep out, size_t length) {
  auto* state = static_cast<PngState*>(png_get_io_ptr(png));
  if (state->data.size() - state->pos < length) {
    state->truncated = true;
    png_error(png, "truncated");
  }
  std::memcpy(out, state->data.data() + state->pos, length);
  state->pos += length;
}

struct PngReadStructs {
  png_structp png = nullptr;
  png_infop info = nullptr;
  ~PngReadStructs() { png_destroy_read_struct(&png, info ? &info : nullptr, nullptr); }
};

// Reads the header and sets up libpng's transforms to 8-bit gray, gray+alpha,
// RGB or RGBA, except 16-bit gray without alpha, kept at 16 bits (see below).
bool png_read_header(png_structp png, png_infop info, PngState& state) {
  if (setjmp(state.jump)) return false;
  png_read_info(png, info);
  const int color = png_get_color_type(png, info);
  const int depth = png_get_bit_depth(png, info);
  if (color == PNG_COLOR_TYPE_PALETTE) png_set_palette_to_rgb(png);
  if (color == PNG_COLOR_TYPE_GRAY && depth < 8) png_set_expand_gray_1_2_4_to_8(png);
  if (png_get_valid(png, info, PNG_INFO_tRNS)) png_set_tRNS_to_alpha(png);
  if (depth == 16) {
    // 16-bit gray stays big-endian 16-bit; the rest keep the high byte, as Pillow's ;16B raw modes.
    if (color != PNG_COLOR_TYPE_GRAY) png_set_strip_16(png);
  }
  png_set_interlace_handling(png);
  png_read_update_info(png, info);
  return true;
}

bool png_read_pixels(png_structp png, png_infop info, PngState& state, png_bytepp rows) {
  if (setjmp(state.jump)) return false;
  png_read_image(png, rows);
  png_read_end(png, info);  // checks the chunks after the pixels, IEND included
  return true;
}

[[noreturn]] void fail_png(const PngState& state) {
  if (state.truncated) fail("truncated PNG");
  fail(std::string("corrupt PNG data: ") + state.message);
}

uint32_t big_endian32(std::string_view b, size_t at) {
  uint32_t v = 0;
  for (size_t i = 0; i < 4; ++i) v = (v << 8) | static_cast<uint8_t>(b[at + i]);
  return v;
}

Image decode_png(std::string_view bytes, const DecodeLimits& limits) {
  // The size, from IHDR before libpng sees it: libpng refuses a zero size only as
  // "Invalid IHDR data", and any PNG whose first chunk (at byte 8) is not IHDR.
  if (bytes.size() >= 24 && bytes.substr(12, 4) == "IHDR") {
    check_dimensions(big_endian32(bytes, 16), big_endian32(bytes, 20), limits);
  }
  PngState state;
  state.data = bytes;
  PngReadStructs s;
  s.png = png_create_read_struct(PNG_LIBPNG_VER_STRING, &state, png_on_error, png_on_warning);
  if (!s.png) throw std::bad_alloc();
  s.info = png_create_info_struct(s.png);
  if (!s.info) throw std::bad_alloc();
  png_set_read_fn(s.png, &state, png_on_read);
  if (!png_read_header(s.png, s.info, state)) fail_png(state);

  const uint32_t width = png_get_image_width(s.png, s.info);
  const uint32_t height = png_get_image_height(s.png, s.info);
  const int channels = png_get_channels(s.png, s.info);
  const int depth = png_get_bit_depth(s.png, s.info);
  const size_t row_bytes = png_get_rowbytes(s.png, s.info);

  std::vector<uint8_t> raw(row_bytes * height);
  std::vector<png_bytep> rows(height);
  for (uint32_t y = 0; y < height; ++y) rows[y] = raw.data() + y * row_bytes;
  if (!png_read_pixels(s.png, s.info, state, rows.data())) fail_png(state);

  Image image{width, height, std::vector<uint8_t>(static_cast<size_t>(width) * height * 3)};
  const size_t n = static_cast<size_t>(width) * height;
  uint8_t* out = image.rgb.data();
  if (depth == 16) {
    // 16-bit gray (with tRNS: plus 16-bit alpha). Pillow opens it as I;16 and its
    // conversion to RGB clamps each sample to 255 instead of scaling it.
    const auto sample = [&](size_t i) { return static_cast<uint32_t>(raw[i * 2] << 8 | raw[i * 2 + 1]); };
    for (size_t i = 0; i < n; ++i) {
      const uint32_t v = std::min<uint32_t>(sample(i * channels), 255);
      const uint8_t g = channels == 2 ? over_white(v, sample(i * 2 + 1) >> 8) : static_cast<uint8_t>(v);
      out[i * 3] = out[i * 3 + 1] = out[i * 3 + 2] = g;
    }
    return image;
  }
  const uint8_t* in = raw.data();
  for (size_t i = 0; i < n; ++i) {
    const uint8_t* p = in + i * channels;
    uint8_t* o = out + i * 3;
    switch (channels) {
      case 1: o[0] = o[1] = o[2] = p[0]; break;
      case 2: o[0] = o[1] = o[2] = over_white(p[0], p[1]); break;
      case 3: std::memcpy(o, p, 3); break;
      default:
        for (int c = 0; c < 3; ++c) o[c] = over_white(p[c], p[3]);
    }
  }
  return image;
}

// ---- JPEG ----

struct JpegState {
  jpeg_error_mgr manager;  // first member: libjpeg hands callbacks a pointer to it
  bool truncated = false;
  char message[JMSG_LENGTH_MAX] = {};
  std::jmp_buf jump;
};

extern "C" void jpeg_on_error(j_common_ptr cinfo) {
  auto* state = reinterpret_cast<JpegState*>(cinfo->err);
  (*cinfo->err->format_message)(cinfo, state->message);
  std::longjmp(state->jump, 1);
}

// libjpeg only warns when the data ends early and pads the image with grey;
// Pillow refuses such a file ("image file is truncated"), and so do we. Other
// warnings (corrupt but recoverable data) are ignored, as Pillow does.
extern "C" void jpeg_on_message(j_common_ptr cinfo, int level) {
  if (level == -1 && cinfo->err->msg_code == JWRN_JPEG_EOF) {
    auto* state = reinterpret_cast<JpegState*>(cinfo->err);
    state->truncated = true;
    std::longjmp(state->jump, 1);
  }
}

struct JpegDecompress {
  jpeg_decompress_struct cinfo{};
  ~JpegDecompress() { jpeg_destroy_decompress(&cinfo); }
};

bool jpeg_read_header_from(jpeg_decompress_struct& cinfo, JpegState& state, std::string_view bytes) {
  if (setjmp(state.jump)) return false;
  jpeg_create_decompress(&cinfo);
  jpeg_mem_src(&cinfo, reinterpret_cast<const unsigned char*>(bytes.data()), static_cast<unsigned long>(bytes.size()));
  jpeg_read_header(&cinfo, TRUE);
  return true;
}

bool jpeg_read_pixels(jpeg_decompress_struct& cinfo, JpegState& state, uint8_t* out, size_t row_bytes) {
  if (setjmp(state.jump)) return false;
  jpeg_start_decompress(&cinfo);
  while (cinfo.output_scanline < cinfo.output_height) {
    JSAMPROW row = out + cinfo.output_scanline * row_bytes;
    jpeg_read_scanlines(&cinfo, &row, 1);
  }
  jpeg_finish_decompress(&cinfo);
  return true;
}

[[noreturn]] void fail_jpeg(const JpegState& state) {
  if (state.truncated) fail("truncated JPEG");
  fail(std::string("corrupt JPEG data: ") + state.message);
}

Image decode_jpeg(std::string_view bytes, const DecodeLimits& limits) {
  JpegState state;
  JpegDecompress d;
  d.cinfo.err = jpeg_std_error(&state.manager);
  state.manager.error_exit = jpeg_on_error;
  state.manager.emit_message = jpeg_on_message;
  if (!jpeg_read_header_from(d.cinfo, state, bytes)) fail_jpeg(state);

  check_dimensions(d.cinfo.image_width, d.cinfo.image_height, limits);
  switch (d.cinfo.jpeg_color_space) {
    case JCS_GRAYSCALE: d.cinfo.out_color_space = JCS_GRAYSCALE; break;
    case JCS_YCbCr:
    case JCS_RGB: d.cinfo.out_color_space = JCS_RGB; break;
    case JCS_CMYK:
    case JCS_YCCK: fail("CMYK JPEG images are not supported");
    default: fail("JPEG color space " + std::to_string(d.cinfo.jpeg_color_space) + " is not supported");
  }
  const int64_t width = d.cinfo.image_width, height = d.cinfo.image_height;
  const int channels = d.cinfo.out_color_space == JCS_GRAYSCALE ? 1 : 3;
  std::vector<uint8_t> raw(static_cast<size_t>(width * height * channels));
  if (!jpeg_read_pixels(d.cinfo, state, raw.data(), static_cast<size_t>(width * channels))) fail_jpeg(state);
  if (channels == 3) return Image{width, height, std::move(raw)};
  Image image{width, height, std::vector<uint8_t>(raw.size() * 3)};
  for (size_t i = 0; i < raw.size(); ++i) image.rgb[i * 3] = image.rgb[i * 3 + 1] = image.rgb[i * 3 + 2] = raw[i];
  return image;
}

}  // namespace

Image decode_image(std::string_view bytes, const DecodeLimits& limits) {
  if (bytes.empty()) fail("empty image data");
  if (starts_with(bytes, "\x89PNG\r\n\x1a\n")) return decode_png(bytes, limits);
  if (starts_with(bytes, "\xff\xd8\xff")) return decode_jpeg(bytes, limits);
  if (const char* name = other_format_name(bytes)) {
    fail(std::string("unsupported format: ") + name + " (only PNG and JPEG images are supported)");
  }
  fail("not a PNG or JPEG image");
}

}  // namespace t2::vision
