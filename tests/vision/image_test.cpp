// decode_image against Pillow + transformers' convert_to_rgb on every reference
// file, and its refusals: each bad input must give a clear InvalidArgument.
#include <algorithm>
#include <cstdlib>
#include <random>
#include <string>

#include <gtest/gtest.h>

#include "reference.hpp"
#include "t2/common/errors.hpp"
#include "t2/vision/image.hpp"

namespace {

using t2::vision::decode_image;
using t2::vision::DecodeLimits;
using t2::vision::Image;
namespace ref = t2::vision::testing;

bool is_jpeg(const std::string& name) { return name.size() > 4 && name.substr(name.size() - 4) == ".jpg"; }

// The message of the InvalidArgument decoding `bytes` throws ("" if it decodes).
std::string refusal(const std::string& bytes, const DecodeLimits& limits = {}) {
  try {
    decode_image(bytes, limits);
  } catch (const t2::InvalidArgument& e) {
    EXPECT_EQ(e.param(), "image");
    return e.what();
  }
  return "";
}

std::string good(const std::string& name) { return ref::read_file(ref::reference_dir() / "files" / name); }
std::string bad(const std::string& name) { return ref::read_file(ref::reference_dir() / "bad" / name); }

TEST(ImageDecode, MatchesPillowOnEveryReferenceFile) {
  for (const auto& entry : ref::manifest().at("images")) {
    const std::string name = entry.at("name");
    SCOPED_TRACE(name + " (Pillow mode " + entry.at("mode").get<std::string>() + ")");
    const Image image = decode_image(good(name), {});
    ASSERT_EQ(image.width, entry.at("width").get<int64_t>());
    ASSERT_EQ(image.height, entry.at("height").get<int64_t>());
    const std::string expected = ref::read_file(ref::reference_dir() / (name + ".rgb"));
    ASSERT_EQ(image.rgb.size(), expected.size());
    int max_diff = 0;
    for (size_t i = 0; i < expected.size(); ++i) {
      max_diff = std::max(max_diff, std::abs(int(image.rgb[i]) - int(static_cast<uint8_t>(expected[i]))));
    }
    // Debian's libjpeg-turbo 2.1 and the one in Pillow's wheel use the same
    // default IDCT (islow) and fancy upsampling: JPEG is exact too.
    EXPECT_EQ(max_diff, 0) << (is_jpeg(name) ? "JPEG" : "PNG");
  }
}

TEST(ImageDecode, RefusesEmptyAndUnknownData) {
  EXPECT_EQ(refusal(""), "empty image data");
  std::mt19937 rng(7);
  std::string noise(1000, '\0');
  for (char& c : noise) c = static_cast<char>(rng() & 0xff);
  noise[0] = 'x';  // not accidentally a signature
  EXPECT_EQ(refusal(noise), "not a PNG or JPEG image");
  EXPECT_EQ(refusal("\x89PN"), "not a PNG or JPEG image");
}

TEST(ImageDecode, NamesOtherFormats) {
  EXPECT_EQ(refusal("GIF89a\x01\x00\x01\x00"), "unsupported format: GIF (only PNG and JPEG images are supported)");
  EXPECT_EQ(refusal("GIF87a..."), "unsupported format: GIF (only PNG and JPEG images are supported)");
  EXPECT_EQ(refusal(std::string("RIFF\x10\0\0\0WEBPVP8 ", 16)),
            "unsupported format: WebP (only PNG and JPEG images are supported)");
  EXPECT_EQ(refusal("BM\x36\x00\x00\x00"), "unsupported format: BMP (only PNG and JPEG images are supported)");
  EXPECT_EQ(refusal(std::string("II*\0\x08\0\0\0", 8)), "unsupported format: TIFF (only PNG and JPEG images are supported)");
}

TEST(ImageDecode, RefusesTruncatedPng) {
  const std::string png = good("rgb_500x375.png");
  // Inside the signature's tail, IHDR, the IDAT data, and just before IEND.
  for (const size_t cut : {size_t{10}, size_t{20}, png.size() / 2, png.size() - 12, png.size() - 1}) {
    SCOPED_TRACE(cut);
    EXPECT_EQ(refusal(png.substr(0, cut)), "truncated PNG");
  }
  const std::string interlaced = good("interlaced_rgb_77x51.png");
  EXPECT_EQ(refusal(interlaced.substr(0, interlaced.size() * 2 / 3)), "truncated PNG");
}

TEST(ImageDecode, RefusesTruncatedJpeg) {
  for (const char* name : {"rgb_500x375.jpg", "progressive_336x200.jpg", "gray_50x70.jpg"}) {
    const std::string jpeg = good(name);
    for (const size_t cut : {size_t{4}, size_t{100}, jpeg.size() / 2, jpeg.size() - 2}) {
      SCOPED_TRACE(std::string(name) + " cut at " + std::to_string(cut));
      EXPECT_EQ(refusal(jpeg.substr(0, cut)), "truncated JPEG");
    }
  }
}

TEST(ImageDecode, RefusesPngWithCorruptIdat) {
  std::string png = good("rgb_336x336.png");
  const size_t idat = png.find("IDAT");
  ASSERT_NE(idat, std::string::npos);
  png[idat + 4 + 1000] ^= 0x5a;  // in the compressed data: the chunk's CRC no longer matches
  const std::string message = refusal(png);
  EXPECT_EQ(message.rfind("corrupt PNG data: ", 0), 0u) << message;
  EXPECT_NE(message.find("CRC error"), std::string::npos) << message;
}

TEST(ImageDecode, RefusesBombsFromTheHeader) {
  const DecodeLimits limits{50'000'000};
  EXPECT_EQ(refusal(bad("bomb_30000x30000.png"), limits),
            "image is 30000x30000 = 900000000 pixels, above the limit of 50000000");
  EXPECT_EQ(refusal(bad("bomb_60000x60000.jpg"), limits),
            "image is 60000x60000 = 3600000000 pixels, above the limit of 50000000");
  // At the limit itself an image decodes.
  EXPECT_EQ(decode_image(good("rgb_40x30.png"), DecodeLimits{1200}).width, 40);
  EXPECT_EQ(refusal(good("rgb_40x30.png"), DecodeLimits{1199}), "image is 40x30 = 1200 pixels, above the limit of 1199");
}

TEST(ImageDecode, RefusesZeroWidthAndCmyk) {
  EXPECT_EQ(refusal(bad("zero_width.png")), "image is 0x10: zero width or height");
  EXPECT_EQ(refusal(bad("cmyk_20x10.jpg")), "CMYK JPEG images are not supported");
}

// Random byte flips and cuts in valid files: each must decode or be refused, never crash.
TEST(ImageDecode, SurvivesMutatedFiles) {
  std::mt19937 rng(1234);
  int refused = 0;
  for (const char* name : {"palette_trns_80x60.png", "interlaced_rgba16_13x9.png", "rgb_41x29.jpg", "progressive_336x200.jpg"}) {
    const std::string original = good(name);
    for (int round = 0; round < 150; ++round) {
      std::string bytes = original;
      for (int flips = 1 + static_cast<int>(rng() % 4); flips > 0; --flips) {
        bytes[8 + rng() % (bytes.size() - 8)] = static_cast<char>(rng() & 0xff);  // keep the signature
      }
      if (rng() % 3 == 0) bytes.resize(8 + rng() % (bytes.size() - 8));
      try {
        const Image image = decode_image(bytes, DecodeLimits{4'000'000});
        EXPECT_EQ(image.rgb.size(), static_cast<size_t>(image.width * image.height * 3));
      } catch (const t2::InvalidArgument& e) {
        EXPECT_FALSE(std::string(e.what()).empty());
        ++refused;
      }
    }
  }
  EXPECT_GT(refused, 0);
}

}  // namespace
