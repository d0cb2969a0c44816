#include <fstream>

#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include "support.hpp"
#include "t2/common/errors.hpp"
#include "t2/model/safetensors.hpp"

using t2::model::SafetensorsFile;
using t2::model::write_safetensors;

TEST(Safetensors, RoundTripsDtypesShapesAndMetadata) {
  const auto path = t2::testing::fresh_dir("st") / "a.safetensors";
  at::manual_seed(1);
  const at::Tensor f32 = at::randn({3, 5});
  const at::Tensor bf16 = at::randn({7}).to(at::kBFloat16);
  const at::Tensor f16 = at::randn({2, 2, 2}).to(at::kHalf);
  const at::Tensor i64 = at::arange(6, at::kLong).view({2, 3});
  write_safetensors(path, {{"f32", f32}, {"bf16", bf16}, {"f16", f16}, {"i64", i64}, {"view", f32.t()}},
                    {{"fingerprint", "abc"}});
  const SafetensorsFile file = SafetensorsFile::open(path);
  EXPECT_EQ(file.metadata().at("fingerprint"), "abc");
  ASSERT_EQ(file.tensors().size(), 5u);
  EXPECT_TRUE(file.find("f32")->to_tensor().equal(f32));
  EXPECT_TRUE(file.find("bf16")->to_tensor().equal(bf16));
  EXPECT_TRUE(file.find("f16")->to_tensor().equal(f16));
  EXPECT_TRUE(file.find("i64")->to_tensor().equal(i64));
  EXPECT_TRUE(file.find("view")->to_tensor().equal(f32.t()));  // non-contiguous input is written in logical order
  EXPECT_EQ(file.find("missing"), nullptr);
  EXPECT_FALSE(std::filesystem::exists(path.string() + ".tmp." + std::to_string(::getpid())));
}

TEST(Safetensors, ReadsFilesWrittenByPython) {
  // The shared checkpoint was written by the Python safetensors library.
  const auto path = t2::testing::stories_dir() / "model.safetensors";
  T2_REQUIRE_PATH(path);
  const SafetensorsFile file = SafetensorsFile::open(path);
  const auto* embed = file.find("model.embed_tokens.weight");
  ASSERT_NE(embed, nullptr);
  EXPECT_EQ(embed->shape, (std::vector<int64_t>{512, 64}));
  EXPECT_EQ(embed->dtype, at::kFloat);
}

namespace {

std::string error_of(const std::filesystem::path& path) {
  try {
    SafetensorsFile::open(path);
  } catch (const t2::LoadError& e) {
    return e.what();
  }
  return "";
}

}  // namespace

TEST(Safetensors, TruncatedFileNamesFileAndTensor) {
  const auto dir = t2::testing::fresh_dir("st");
  const auto path = dir / "full.safetensors";
  write_safetensors(path, {{"a", at::ones({4})}, {"b", at::ones({64, 64})}});
  const auto size = std::filesystem::file_size(path);
  std::filesystem::resize_file(path, size - 100);
  const std::string error = error_of(path);
  EXPECT_NE(error.find("full.safetensors"), std::string::npos) << error;
  EXPECT_NE(error.find("'b'"), std::string::npos) << error;
  EXPECT_NE(error.find("truncated"), std::string::npos) << error;

  std::filesystem::resize_file(path, 4);
  EXPECT_NE(error_of(path).find("truncated"), std::string::npos);
}

TEST(Safetensors, CorruptHeadersAreErrors) {
  const auto dir = t2::testing::fresh_dir("st");
  const auto write_raw = [&](const std::string& header, size_t data_bytes) {
    const auto path = dir / "raw.safetensors";
    std::ofstream out(path, std::ios::binary);
    const uint64_t n = header.size();
    out.write(reinterpret_cast<const char*>(&n), 8);
    out << header << std::string(data_bytes, '\0');
    return path;
  };
  EXPECT_NE(error_of(write_raw("{not json", 0)).find("corrupt header"), std::string::npos);
  EXPECT_NE(error_of(write_raw(R"({"x":{"dtype":"F32","shape":[4],"data_offsets":[0,8]}})", 16)).find("needs 16"),
            std::string::npos);
  EXPECT_NE(error_of(write_raw(R"({"x":{"dtype":"Q4","shape":[4],"data_offsets":[0,16]}})", 16)).find("unsupported dtype"),
            std::string::npos);
  EXPECT_NE(error_of(write_raw(R"({"x":{"dtype":"F32","shape":[4]}})", 16)).find("malformed"), std::string::npos);
  EXPECT_NE(error_of(dir / "absent.safetensors").find("cannot open"), std::string::npos);
  // Element and byte counts past 64 bits are errors, never wrapped (UBSan watches the arithmetic).
  EXPECT_NE(error_of(write_raw(R"({"x":{"dtype":"F32","shape":[4611686018427387904,4],"data_offsets":[0,0]}})", 0)).find("overflows"),
            std::string::npos);
  EXPECT_NE(error_of(write_raw(R"({"x":{"dtype":"F32","shape":[4611686018427387904],"data_offsets":[0,0]}})", 0)).find("overflows"),
            std::string::npos);
}
