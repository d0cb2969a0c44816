// Self-consistency of the forward pass on tiny random checkpoints, one per
// architecture feature: incremental decode, batching and padding must not
// change the logits. (Agreement with transformers is in e2e/.)
#include <ATen/ATen.h>
#include <c10/core/InferenceMode.h>
#include <gtest/gtest.h>

#include "support.hpp"
#include "t2/common/errors.hpp"
#include "t2/model/transformer.hpp"

using t2::model::Chunk;
using t2::model::KVCache;
using t2::model::Transformer;

namespace {

struct Variant {
  std::string name;
  nlohmann::json config;
};

void PrintTo(const Variant& v, std::ostream* os) { *os << v.name; }

std::vector<Variant> variants() {
  std::vector<Variant> v;
  v.push_back({"llama_gqa_untied", t2::testing::tiny_config()});
  auto mha = t2::testing::tiny_config();
  mha["num_key_value_heads"] = 4;
  mha["tie_word_embeddings"] = true;
  v.push_back({"llama_mha_tied", mha});
  auto qwen = t2::testing::tiny_config();
  qwen["architectures"] = {"Qwen2ForCausalLM"};
  v.push_back({"qwen2_qkv_bias", qwen});
  auto llama3 = t2::testing::tiny_config();
  llama3["rope_scaling"] = {{"rope_type", "llama3"}, {"factor", 8.0}, {"low_freq_factor", 1.0},
                            {"high_freq_factor", 4.0}, {"original_max_position_embeddings", 16}};
  llama3["rope_theta"] = 500000.0;
  v.push_back({"llama3_rope_scaling", llama3});
  auto mistral = t2::testing::tiny_config();
  mistral["architectures"] = {"MistralForCausalLM"};
  mistral["sliding_window"] = 6;
  v.push_back({"mistral_sliding_window", mistral});
  auto biases = t2::testing::tiny_config();
  biases["attention_bias"] = true;
  biases["mlp_bias"] = true;
  biases["head_dim"] = 12;
  v.push_back({"llama_biases_head_dim", biases});
  return v;
}

std::vector<int64_t> tokens(int64_t n, int64_t offset) {
  std::vector<int64_t> t;
  for (int64_t i = 0; i < n; ++i) t.push_back((i * 7 + offset * 13 + 3) % 64);
  return t;
}

class TransformerConsistency : public ::testing::TestWithParam<Variant> {
 protected:
  void SetUp() override {
    dir_ = t2::testing::fresh_dir(GetParam().name);
    t2::testing::write_random_checkpoint(dir_, GetParam().config, 11);
    model_.emplace(Transformer::load(dir_, t2::model::Placement{}));
  }
  const Transformer& model() const { return *model_; }

  at::Tensor full_logits(const std::vector<int64_t>& seq) const {
    const at::Tensor t = at::tensor(seq, at::kLong).view({1, -1});
    return model().forward_full(t, {static_cast<int64_t>(seq.size())}, model().base_projections())[0];
  }

  std::filesystem::path dir_;
  std::optional<Transformer> model_;
};

}  // namespace

TEST_P(TransformerConsistency, IncrementalDecodeMatchesOneFullForward) {
  c10::InferenceMode guard;
  const auto seq = tokens(20, 0);
  const at::Tensor expected = full_logits(seq);  // [20, V]
  KVCache cache(model().config(), 2, 64, model().placement());
  const int64_t slot = cache.allocate();
  std::vector<at::Tensor> rows;
  const std::vector<int64_t> prompt(seq.begin(), seq.begin() + 7);
  rows.push_back(model().forward({{slot, prompt, static_cast<int64_t>(prompt.size())}}, cache, model().base_projections()));
  for (size_t i = 7; i < seq.size(); ++i) {
    rows.push_back(model().forward({{slot, {seq[i]}}}, cache, model().base_projections()));
  }
  const at::Tensor incremental = at::cat(rows, 0);
  EXPECT_EQ(cache.length(slot), 20);
  EXPECT_LT((incremental - expected).abs().max().item<double>(), 1e-4);
}

TEST_P(TransformerConsistency, BatchOfDifferentLengthsMatchesEachAlone) {
  c10::InferenceMode guard;
  const std::vector<std::vector<int64_t>> prompts = {tokens(5, 1), tokens(11, 2), tokens(8, 3)};
  const std::vector<std::vector<int64_t>> continuations = {tokens(4, 4), tokens(4, 5), tokens(4, 6)};

  // Alone: each sequence in its own cache.
  std::vector<at::Tensor> alone;
  for (size_t i = 0; i < prompts.size(); ++i) {
    KVCache cache(model().config(), 1, 64, model().placement());
    const int64_t slot = cache.allocate();
    std::vector<at::Tensor> rows = {model().forward({{slot, prompts[i]}}, cache, model().base_projections())};
    for (const int64_t t : continuations[i]) rows.push_back(model().forward({{slot, {t}}}, cache, model().base_projections()));
    alone.push_back(at::cat(rows, 0));
  }

  // Together, in non-contiguous slots, prefilled in one padded forward.
  KVCache cache(model().config(), 5, 64, model().placement());
  std::vector<int64_t> slots;
  for (int i = 0; i < 5; ++i) slots.push_back(cache.allocate());
  cache.release(slots[1]);
  cache.release(slots[3]);
  const std::vector<int64_t> used = {slots[4], slots[0], slots[2]};
  std::vector<Chunk> prefill;
  for (size_t i = 0; i < prompts.size(); ++i) prefill.push_back({used[i], prompts[i]});
  std::vector<at::Tensor> together = {model().forward(prefill, cache, model().base_projections())};
  for (size_t step = 0; step < 4; ++step) {
    std::vector<Chunk> decode;
    for (size_t i = 0; i < prompts.size(); ++i) decode.push_back({used[i], {continuations[i][step]}});
    together.push_back(model().forward(decode, cache, model().base_projections()));
  }
  for (size_t i = 0; i < prompts.size(); ++i) {
    std::vector<at::Tensor> rows;
    for (const auto& step : together) rows.push_back(step[static_cast<int64_t>(i)].unsqueeze(0));
    EXPECT_LT((at::cat(rows, 0) - alone[i]).abs().max().item<double>(), 1e-4) << "sequence " << i;
  }
}

TEST_P(TransformerConsistency, PaddedFullForwardMatchesEachAlone) {
  c10::InferenceMode guard;
  const auto a = tokens(9, 7);
  const auto b = tokens(4, 8);
  std::vector<int64_t> grid = a;
  grid.insert(grid.end(), b.begin(), b.end());
  grid.insert(grid.end(), 5, 0);  // right padding
  const at::Tensor batch = at::tensor(grid, at::kLong).view({2, 9});
  const at::Tensor logits = model().forward_full(batch, {9, 4}, model().base_projections());
  EXPECT_LT((logits[0] - full_logits(a)).abs().max().item<double>(), 1e-4);
  EXPECT_LT((logits[1].narrow(0, 0, 4) - full_logits(b)).abs().max().item<double>(), 1e-4);
}

// Loaded weights run Q/K/V and gate/up as one GEMM each; the same matrices
// set one by one (unstacked, as training sets them) must give the same logits.
TEST_P(TransformerConsistency, StackedGroupsMatchTheirMatricesOneByOne) {
  c10::InferenceMode guard;
  const t2::model::ProjectionSet& stacked = model().base_projections();
  t2::model::ProjectionSet separate = stacked;
  for (int64_t l = 0; l < stacked.num_layers(); ++l) {
    for (const auto group : {t2::model::ProjectionGroup::kQKV, t2::model::ProjectionGroup::kGateUp}) {
      ASSERT_TRUE(stacked.stacked(l, group).defined());
      for (const auto p : t2::model::group_members(group)) separate.set(l, p, stacked.get(l, p).clone());
      EXPECT_FALSE(separate.stacked(l, group).defined());
    }
  }
  const auto seq = tokens(12, 9);
  KVCache a(model().config(), 1, 32, model().placement()), b(model().config(), 1, 32, model().placement());
  const int64_t slot_a = a.allocate(), slot_b = b.allocate();
  const std::vector<int64_t> prompt(seq.begin(), seq.begin() + 8);
  const at::Tensor together = model().forward({{slot_a, prompt, 8}}, a, stacked);
  const at::Tensor alone = model().forward({{slot_b, prompt, 8}}, b, separate);
  EXPECT_LT((together - alone).abs().max().item<double>(), 1e-5);
  for (size_t i = 8; i < seq.size(); ++i) {
    const at::Tensor x = model().forward({{slot_a, {seq[i]}}}, a, stacked);
    const at::Tensor y = model().forward({{slot_b, {seq[i]}}}, b, separate);
    EXPECT_LT((x - y).abs().max().item<double>(), 1e-5) << "token " << i;
  }
}

INSTANTIATE_TEST_SUITE_P(Architectures, TransformerConsistency, ::testing::ValuesIn(variants()),
                         [](const auto& info) { return info.param.name; });

TEST(Transformer, FullForwardIsDifferentiableInTheProjections) {
  const auto dir = t2::testing::fresh_dir("grad");
  t2::testing::write_random_checkpoint(dir, t2::testing::tiny_config(), 12);
  const Transformer model = Transformer::load(dir, t2::model::Placement{});
  t2::model::ProjectionSet projections = model.base_projections();
  const at::Tensor up = projections.get(1, t2::model::Projection::kUp).detach().clone().requires_grad_(true);
  projections.set(1, t2::model::Projection::kUp, up);
  const at::Tensor t = at::tensor(tokens(6, 1), at::kLong).view({1, -1});
  model.forward_full(t, {6}, projections).logsumexp(-1).sum().backward();
  ASSERT_TRUE(up.grad().defined());
  EXPECT_GT(up.grad().abs().sum().item<double>(), 0.0);
}

TEST(Transformer, RejectsSequencesBeyondTheContextAndBadTokens) {
  c10::InferenceMode guard;
  const auto dir = t2::testing::fresh_dir("ctx");
  t2::testing::write_random_checkpoint(dir, t2::testing::tiny_config(), 13);
  const Transformer model = Transformer::load(dir, t2::model::Placement{});
  KVCache cache(model.config(), 1, 16, model.placement());
  const int64_t slot = cache.allocate();
  EXPECT_THROW(model.forward({{slot, tokens(17, 0)}}, cache, model.base_projections()), t2::InvalidArgument);
  EXPECT_THROW(model.forward({{slot, {64}}}, cache, model.base_projections()), t2::InvalidArgument);
  EXPECT_EQ(cache.length(slot), 0);  // nothing was written
  EXPECT_THROW(model.forward({{slot + 1, {3}}}, cache, model.base_projections()), t2::Error);
}
