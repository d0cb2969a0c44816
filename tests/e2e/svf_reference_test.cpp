// SVF against the reference implementation's own conventions, with data
// written by Python torch (tests/reference/svf_reference.py, a CTest fixture).
#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <fstream>

#include <nlohmann/json.hpp>

#include "support.hpp"
#include "t2/common/errors.hpp"
#include "t2/model/safetensors.hpp"
#include "t2/model/transformer.hpp"
#include "t2/svf/compose.hpp"
#include "t2/svf/reference_import.hpp"

TEST(SvfReference, CompositionMatchesComposeNewParams) {
  const auto path = t2::testing::reference_dir() / "svf" / "compose.safetensors";
  T2_REQUIRE_PATH(path);
  const auto file = t2::model::SafetensorsFile::open(path);
  const auto get = [&](const char* name) { return file.find(name)->to_tensor(); };
  // The reference stores V (torch.svd); t2 stores V^T.
  const at::Tensor ours = t2::svf::compose(get("U"), get("S"), get("V").t(), get("z"));
  const at::Tensor expected = get("expected");
  EXPECT_LT((ours - expected).abs().max().item<double>(), 1e-5 * expected.abs().max().item<double>());
  EXPECT_LT((t2::svf::compose(get("U"), get("S"), get("V").t(), at::ones_like(get("z"))) - get("W")).abs().max().item<double>(), 1e-5);
}

TEST(SvfReference, ImportsATorchSavedPolicy) {
  const auto policy = t2::testing::reference_dir() / "svf" / "reference_policy.pt";
  const auto model_dir = t2::testing::stories_dir();
  T2_REQUIRE_PATH(policy);
  T2_REQUIRE_PATH(model_dir);
  const auto config = t2::model::ModelConfig::from_file(model_dir / "config.json");
  const std::string fingerprint = t2::model::checkpoint_fingerprint(model_dir);
  const t2::svf::Expert e = t2::svf::import_reference_checkpoint(policy, {"imported", "from Python", 2.0}, config, fingerprint);
  EXPECT_EQ(e.base_fingerprint, fingerprint);
  const auto expected = t2::model::SafetensorsFile::open(t2::testing::reference_dir() / "svf" / "reference_policy_z.safetensors");
  ASSERT_EQ(e.z.size(), expected.tensors().size());
  for (const auto& [name, view] : expected.tensors()) {
    ASSERT_TRUE(e.z.count(name)) << name;
    EXPECT_TRUE(at::allclose(e.z.at(name), view.to_tensor(), 1e-6, 1e-6)) << name;
  }
  // max_mult must be positive.
  EXPECT_THROW(t2::svf::import_reference_checkpoint(policy, {"x", "", 0.0}, config, fingerprint), t2::Error);
}

// The tiny Llama-3-style checkpoint and the policies svf_reference.py built for
// it the way the reference's Policy does (see that script).
class SvfReferencePolicy : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = t2::testing::reference_dir() / "svf" / "llama3";
    T2_REQUIRE_PATH(dir_ / "policy_params.pt");
    config_ = t2::model::ModelConfig::from_file(dir_ / "model" / "config.json");
    fingerprint_ = t2::model::checkpoint_fingerprint(dir_ / "model");
  }
  t2::svf::Expert import(const std::string& file, t2::svf::Targets targets = t2::svf::Targets::kMlp) const {
    t2::svf::ReferenceImport options{"imported", "", 2.0};
    options.targets = targets;
    return t2::svf::import_reference_checkpoint(dir_ / file, options, config_, fingerprint_);
  }
  std::vector<std::string> order(const std::string& file) const {
    std::ifstream in(dir_ / file);
    return nlohmann::json::parse(in).get<std::vector<std::string>>();
  }
  void expect_z(const t2::svf::Expert& e, const std::string& file) const {
    const auto expected = t2::model::SafetensorsFile::open(dir_ / file);
    ASSERT_EQ(e.z.size(), expected.tensors().size());
    for (const auto& [name, view] : expected.tensors()) {
      ASSERT_TRUE(e.z.count(name)) << name;
      EXPECT_TRUE(at::allclose(e.z.at(name), view.to_tensor(), 1e-6, 1e-6)) << name;
    }
  }

  std::filesystem::path dir_;
  t2::model::ModelConfig config_;
  std::string fingerprint_;
};

TEST_F(SvfReferencePolicy, StateDictAndNamedFormsGiveTheSameExpert) {
  const t2::svf::Expert from_policy = import("policy_params.pt");
  const t2::svf::Expert from_names = import("learnable_params.pt");
  expect_z(from_policy, "z.safetensors");
  ASSERT_EQ(from_policy.z.size(), from_names.z.size());
  for (const auto& [name, z] : from_names.z) {
    ASSERT_TRUE(from_policy.z.count(name)) << name;
    EXPECT_TRUE(at::equal(from_policy.z.at(name), z)) << name;
  }
  EXPECT_EQ(from_policy.base_fingerprint, fingerprint_);
  EXPECT_EQ(from_policy.provenance.at("targets"), "mlp");
}

TEST_F(SvfReferencePolicy, IndexNIsTheNthTargetedMatrixInHfStateDictOrder) {
  // order.json: the HF names Python's state_dict() gave the policy's list, in order.
  for (const auto& [targets, file] : {std::pair{t2::svf::Targets::kMlp, "order.json"},
                                      std::pair{t2::svf::Targets::kAll, "order_all.json"}}) {
    const auto hf = order(file);
    const auto ours = t2::svf::policy_param_matrices(config_, targets);
    ASSERT_EQ(ours.size(), hf.size()) << file;
    for (size_t n = 0; n < hf.size(); ++n) EXPECT_EQ(ours[n].weight_name(), hf[n]) << file << " N=" << n;
  }
  // An attention-and-MLP policy imports under --targets all, with each vector on its own matrix
  // (q/o have 32 singular values, k/v 16 under GQA); under the default it has the wrong count.
  expect_z(import("policy_all_params.pt", t2::svf::Targets::kAll), "z_all.safetensors");
  EXPECT_THROW(import("policy_all_params.pt"), t2::LoadError);
  EXPECT_THROW(import("policy_params.pt", t2::svf::Targets::kAll), t2::LoadError);
}

TEST_F(SvfReferencePolicy, AWrongCountOrLengthIsALoadError) {
  const auto message = [&](const std::string& file) {
    try {
      import(file);
    } catch (const t2::LoadError& e) {
      return std::string(e.what());
    }
    return std::string("no LoadError");
  };
  EXPECT_NE(message("bad_count.pt").find("holds 8 policy parameters"), std::string::npos) << message("bad_count.pt");
  EXPECT_NE(message("bad_length.pt").find("model.layers.1.mlp.up_proj.weight"), std::string::npos)
      << message("bad_length.pt");
  EXPECT_NE(message("bad_length.pt").find("32 singular values"), std::string::npos);
  // Not a torch.save archive at all.
  EXPECT_THROW(t2::svf::import_reference_checkpoint(dir_ / "z.safetensors", {"x", "", 2.0}, config_, fingerprint_),
               t2::LoadError);
}
