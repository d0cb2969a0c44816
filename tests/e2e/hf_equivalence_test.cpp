// t2's logits against Hugging Face transformers' on the same checkpoints
// (written by tests/reference/hf_reference.py, a CTest fixture): the prompt's
// prefill and 30 decode steps over the KV cache, fed HF's greedy tokens.
#include <ATen/ATen.h>
#include <c10/core/InferenceMode.h>
#include <gtest/gtest.h>

#include "support.hpp"
#include "t2/model/decode_runner.hpp"
#include "t2/model/safetensors.hpp"
#include "t2/model/transformer.hpp"

namespace {

const std::vector<std::string> kCases = {"stories260K",       "llama_mha",       "llama_gqa_tied", "llama3_rope",
                                         "llama_linear_rope", "mistral_sliding", "qwen2_bias"};

struct Comparison {
  at::Tensor ours;       // [P + 30, vocab]
  at::Tensor reference;  // same
};

// `graphs`: the decode steps through the decode runner's CUDA graphs instead of the plain forward.
Comparison compare(const std::filesystem::path& folder, const t2::model::Placement& placement, bool graphs = false) {
  c10::InferenceMode guard;
  const auto ref = t2::model::SafetensorsFile::open(folder / "reference.safetensors");
  const at::Tensor prompt = ref.find("prompt")->to_tensor();
  const at::Tensor generated = ref.find("generated")->to_tensor();
  const at::Tensor prefill = ref.find("prefill_logits")->to_tensor();
  const at::Tensor decode = ref.find("decode_logits")->to_tensor();

  const auto model = t2::model::Transformer::load(folder / "model", placement);
  t2::model::KVCache cache(model.config(), 2, 128, placement);
  std::optional<t2::model::DecodeRunner> runner;
  if (graphs) runner.emplace(model, cache, 1, /*use_graphs=*/true);
  const int64_t slot = cache.allocate();
  t2::model::StepWeights base;
  base.dense = &model.base_projections();
  const std::vector<int64_t> prompt_ids(prompt.data_ptr<int64_t>(), prompt.data_ptr<int64_t>() + prompt.numel());
  std::vector<at::Tensor> rows = {
      model.forward({{slot, prompt_ids, static_cast<int64_t>(prompt_ids.size())}}, cache, model.base_projections())};
  // Decode step i feeds HF's i-th greedy token; HF's first decode logits are the prefill's last row.
  for (int64_t i = 0; i + 1 < generated.numel(); ++i) {
    const int64_t token = generated[i].item<int64_t>();
    rows.push_back(runner ? runner->run({{slot, token, 0}}, base).clone()
                          : model.forward({{slot, {token}}}, cache, model.base_projections()));
  }
  const at::Tensor ours = at::cat(rows, 0).cpu();
  const at::Tensor reference = at::cat({prefill, decode.narrow(0, 1, decode.size(0) - 1)}, 0);
  // The prefill's last row and HF's first decode step are the same logits.
  EXPECT_LT((prefill[-1] - decode[0]).abs().max().item<double>(), 1e-3);
  return {ours, reference};
}

class HfEquivalence : public ::testing::TestWithParam<std::string> {};

}  // namespace

TEST_P(HfEquivalence, Float32OnCpuWithin1e4) {
  const auto folder = t2::testing::reference_dir() / "hf" / GetParam() / "float32";
  T2_REQUIRE_PATH(folder / "reference.safetensors");
  const Comparison c = compare(folder, {at::kCPU, at::kFloat});
  ASSERT_EQ(c.ours.sizes(), c.reference.sizes());
  EXPECT_EQ(c.ours.size(0), 12 + 29);
  const double max_abs = (c.ours - c.reference).abs().max().item<double>();
  EXPECT_LT(max_abs, 1e-4) << GetParam();
}

TEST_P(HfEquivalence, Bfloat16OnCudaWithin2e2Relative) {
  if (!at::hasCUDA()) GTEST_SKIP() << "no CUDA device";
  const auto folder = t2::testing::reference_dir() / "hf" / GetParam() / "bfloat16";
  ASSERT_TRUE(std::filesystem::exists(folder / "reference.safetensors")) << "the fixture writes it when CUDA is present";
  for (const bool graphs : {false, true}) {
    const Comparison c = compare(folder, {at::Device(at::kCUDA, 0), at::kBFloat16}, graphs);
    const double relative = (c.ours - c.reference).norm().item<double>() / c.reference.norm().item<double>();
    EXPECT_LT(relative, 2e-2) << GetParam() << (graphs ? " (graphs)" : " (eager)");
  }
}

// The CUDA kernels (decode attention, fused norm/RoPE/SwiGLU) and the decode
// runner's graphs in float32 against HF's float32 logits.
TEST_P(HfEquivalence, Float32OnCudaWithin1e3) {
  if (!at::hasCUDA()) GTEST_SKIP() << "no CUDA device";
  const auto folder = t2::testing::reference_dir() / "hf" / GetParam() / "float32";
  T2_REQUIRE_PATH(folder / "reference.safetensors");
  for (const bool graphs : {false, true}) {
    const Comparison c = compare(folder, {at::Device(at::kCUDA, 0), at::kFloat}, graphs);
    const double max_abs = (c.ours - c.reference).abs().max().item<double>();
    EXPECT_LT(max_abs, 1e-3) << GetParam() << (graphs ? " (graphs)" : " (eager)");
  }
}

INSTANTIATE_TEST_SUITE_P(Checkpoints, HfEquivalence, ::testing::ValuesIn(kCases),
                         [](const auto& info) { return info.param; });
