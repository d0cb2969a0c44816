// Shared helpers of the test suite: where the shared checkpoints are, how a
// missing one is reported (a skip here, a failure in CI), and tiny random
// checkpoints written by the tests themselves.
#pragma once

#include <cstdint>
#include <filesystem>
#include <string>

#include <optional>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "t2/model/transformer.hpp"
#include "t2/svf/adapter_store.hpp"
#include "t2/svf/expert.hpp"
#include "t2/tokenizer/tokenizer.hpp"

namespace t2::testing {

// $T2_MODELS_DIR, or ../shared/models beside the source tree.
std::filesystem::path models_dir();
// The default model committed in the repository (models/stories260K).
std::filesystem::path stories_dir();
std::filesystem::path reference_dir();
std::filesystem::path t2_binary();
bool in_ci();
// A fresh empty folder for this test.
std::filesystem::path fresh_dir(const std::string& name);

// The t2 binary run with `args` (a shell command line), to completion.
struct CommandResult {
  int status;       // the exit status, -1 when it did not exit normally
  std::string out;  // stdout: what a script parses
  std::string err;  // stderr: the logs
};
CommandResult run_t2(const std::string& args);

// A small Llama config.json; tweak fields for other architectures.
nlohmann::json tiny_config();
// Writes config.json and random weights (model.safetensors, or `shards` files
// with an index) into `dir`.
void write_random_checkpoint(const std::filesystem::path& dir, const nlohmann::json& config, uint64_t seed,
                             int shards = 1);

// An SVF expert as a trainer would write one, for `fingerprint`'s model:
// z uniform in [0, 2) (seeded) on every MLP matrix of `config`.
svf::Expert random_expert(const model::ModelConfig& config, const std::string& fingerprint, const std::string& name,
                          uint64_t seed, const std::string& description,
                          svf::DispatchRole dispatch = svf::DispatchRole::kNone);

}  // namespace t2::testing

// Skips the test when `path` is absent, except in CI where it fails.
#define T2_REQUIRE_PATH(path)                                                          \
  do {                                                                                 \
    if (!std::filesystem::exists(path)) {                                              \
      if (::t2::testing::in_ci()) FAIL() << "required test file missing: " << (path);  \
      GTEST_SKIP() << "test file missing (set T2_MODELS_DIR): " << (path);             \
    }                                                                                  \
  } while (0)

namespace t2::testing {

// Tests on the real stories260K model and tokenizer (float32, CPU). A subclass
// that overrides SetUp calls this one first and returns if it skipped.
class StoriesTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = stories_dir();  // the committed copy: these tests need no ../shared
    T2_REQUIRE_PATH(dir_);
    model_.emplace(model::Transformer::load(dir_, model::Placement{}));
    tokenizer_.emplace(tokenizer::Tokenizer::load(dir_));
  }
  bool ready() const { return model_.has_value(); }

  std::filesystem::path dir_;
  std::optional<model::Transformer> model_;
  std::optional<tokenizer::Tokenizer> tokenizer_;
};

// StoriesTest with the SVD factors of stories260K's MLP matrices and an
// adapter store over them (1 GiB budget), for tests that add experts.
class StoriesSvfTest : public StoriesTest {
 protected:
  void SetUp() override;
  // A random expert (see random_expert) added to the store.
  void add_expert(const std::string& name, uint64_t seed, const std::string& description, svf::DispatchRole role);

  std::string fingerprint_;
  std::optional<svf::SvdCache> cache_;
  std::optional<svf::AdapterStore> store_;
};

}  // namespace t2::testing
