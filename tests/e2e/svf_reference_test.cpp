// SVF against the reference implementation's own conventions, with data
// written by Python torch (tests/reference/svf_reference.py, a CTest fixture).
#include <ATen/ATen.h>
#include <gtest/gtest.h>

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
