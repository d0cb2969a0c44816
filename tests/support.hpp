// Shared helpers of the test suite: where the shared checkpoints are, how a
// missing one is reported (a skip here, a failure in CI), and tiny random
// checkpoints written by the tests themselves.
#pragma once

#include <cstdint>
#include <filesystem>
#include <string>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

namespace t2::testing {

// $T2_MODELS_DIR, or ../shared/models beside the source tree.
std::filesystem::path models_dir();
std::filesystem::path reference_dir();
std::filesystem::path t2_binary();
bool in_ci();
// A fresh empty folder for this test.
std::filesystem::path fresh_dir(const std::string& name);

// A small Llama config.json; tweak fields for other architectures.
nlohmann::json tiny_config();
// Writes config.json and random weights (model.safetensors, or `shards` files
// with an index) into `dir`.
void write_random_checkpoint(const std::filesystem::path& dir, const nlohmann::json& config, uint64_t seed,
                             int shards = 1);

}  // namespace t2::testing

// Skips the test when `path` is absent, except in CI where it fails.
#define T2_REQUIRE_PATH(path)                                                          \
  do {                                                                                 \
    if (!std::filesystem::exists(path)) {                                              \
      if (::t2::testing::in_ci()) FAIL() << "required test file missing: " << (path);  \
      GTEST_SKIP() << "test file missing (set T2_MODELS_DIR): " << (path);             \
    }                                                                                  \
  } while (0)
