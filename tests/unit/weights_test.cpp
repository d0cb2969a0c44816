#include <limits>
#include <fstream>

#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include "support.hpp"
#include "t2/common/errors.hpp"
#include "t2/model/safetensors.hpp"
#include "t2/model/transformer.hpp"
#include "t2/model/weights.hpp"

using t2::model::ModelConfig;
using t2::model::ModelWeights;
using t2::model::Placement;
using t2::model::Projection;

namespace {

std::string load_error(const std::filesystem::path& dir) {
  try {
    t2::model::Transformer::load(dir, Placement{});
  } catch (const t2::LoadError& e) {
    return e.what();
  }
  return "";
}

// Rewrites the checkpoint in `dir` after `edit` changes its tensor list.
template <typename Edit>
void rewrite(const std::filesystem::path& dir, Edit&& edit) {
  std::vector<std::pair<std::string, at::Tensor>> tensors;
  {
    const auto file = t2::model::SafetensorsFile::open(dir / "model.safetensors");
    for (const auto& [name, view] : file.tensors()) tensors.emplace_back(name, view.to_tensor());
  }
  edit(tensors);
  t2::model::write_safetensors(dir / "model.safetensors", tensors);
}

}  // namespace

TEST(Weights, ProjectionNamesFollowHuggingFace) {
  EXPECT_EQ(t2::model::projection_weight_name(3, Projection::kUp), "model.layers.3.mlp.up_proj.weight");
  EXPECT_EQ(t2::model::projection_weight_name(0, Projection::kK), "model.layers.0.self_attn.k_proj.weight");
}

TEST(Weights, ShardedAndSingleFileLoadTheSame) {
  const auto single = t2::testing::fresh_dir("single");
  const auto sharded = t2::testing::fresh_dir("sharded");
  t2::testing::write_random_checkpoint(single, t2::testing::tiny_config(), 7, 1);
  t2::testing::write_random_checkpoint(sharded, t2::testing::tiny_config(), 7, 3);
  const ModelConfig c = ModelConfig::from_json(t2::testing::tiny_config(), "t");
  const ModelWeights a = ModelWeights::load(single, c, Placement{});
  const ModelWeights b = ModelWeights::load(sharded, c, Placement{});
  EXPECT_TRUE(a.embed_tokens.equal(b.embed_tokens));
  EXPECT_TRUE(a.lm_head.equal(b.lm_head));
  for (int64_t l = 0; l < c.num_layers; ++l) {
    for (const Projection p : t2::model::kAllProjections) EXPECT_TRUE(a.projections.get(l, p).equal(b.projections.get(l, p)));
  }
}

TEST(Weights, TiedHeadSharesTheEmbedding) {
  auto config = t2::testing::tiny_config();
  config["tie_word_embeddings"] = true;
  const auto dir = t2::testing::fresh_dir("tied");
  t2::testing::write_random_checkpoint(dir, config, 1);
  const ModelWeights w = ModelWeights::load(dir, ModelConfig::from_json(config, "t"), Placement{});
  EXPECT_TRUE(w.lm_head.is_same(w.embed_tokens));
}

TEST(Weights, ConvertsToTheRequestedDtype) {
  const auto dir = t2::testing::fresh_dir("bf16");
  t2::testing::write_random_checkpoint(dir, t2::testing::tiny_config(), 2);
  rewrite(dir, [](auto& tensors) {
    for (auto& [name, t] : tensors) t = t.to(at::kBFloat16);
  });
  const ModelConfig c = ModelConfig::from_json(t2::testing::tiny_config(), "t");
  const ModelWeights w = ModelWeights::load(dir, c, Placement{at::kCPU, at::kFloat});
  EXPECT_EQ(w.embed_tokens.scalar_type(), at::kFloat);
  EXPECT_EQ(w.projections.get(1, Projection::kDown).scalar_type(), at::kFloat);
}

TEST(Weights, MissingTensorIsNamed) {
  const auto dir = t2::testing::fresh_dir("missing");
  t2::testing::write_random_checkpoint(dir, t2::testing::tiny_config(), 3);
  rewrite(dir, [](auto& tensors) {
    tensors.erase(std::remove_if(tensors.begin(), tensors.end(),
                                 [](const auto& t) { return t.first == "model.layers.1.mlp.up_proj.weight"; }),
                  tensors.end());
  });
  const std::string error = load_error(dir);
  EXPECT_NE(error.find("model.safetensors"), std::string::npos) << error;
  EXPECT_NE(error.find("missing tensor 'model.layers.1.mlp.up_proj.weight'"), std::string::npos) << error;
}

TEST(Weights, WrongShapeIsNamed) {
  const auto dir = t2::testing::fresh_dir("shape");
  t2::testing::write_random_checkpoint(dir, t2::testing::tiny_config(), 4);
  rewrite(dir, [](auto& tensors) {
    for (auto& [name, t] : tensors) {
      if (name == "model.layers.0.self_attn.k_proj.weight") t = at::zeros({8, 32});
    }
  });
  const std::string error = load_error(dir);
  EXPECT_NE(error.find("'model.layers.0.self_attn.k_proj.weight' has shape [8, 32], expected [16, 32]"), std::string::npos)
      << error;
}

TEST(Weights, NonFiniteValuesAreNamed) {
  const auto dir = t2::testing::fresh_dir("nan");
  t2::testing::write_random_checkpoint(dir, t2::testing::tiny_config(), 4);
  rewrite(dir, [](auto& tensors) {
    for (auto& [name, t] : tensors) {
      if (name == "model.layers.1.mlp.down_proj.weight") t[0][0] = std::numeric_limits<float>::quiet_NaN();
    }
  });
  const std::string error = load_error(dir);
  EXPECT_NE(error.find("'model.layers.1.mlp.down_proj.weight' holds NaN or infinite values"), std::string::npos) << error;
}

TEST(Weights, ACheckpointWithMoreLayersThanTheConfigIsRefused) {
  const auto dir = t2::testing::fresh_dir("layers");
  auto config = t2::testing::tiny_config();
  t2::testing::write_random_checkpoint(dir, config, 4);
  config["num_hidden_layers"] = config["num_hidden_layers"].get<int>() - 1;
  std::ofstream(dir / "config.json") << config.dump();
  const std::string error = load_error(dir);
  EXPECT_NE(error.find("config.json says num_hidden_layers = " + std::to_string(config["num_hidden_layers"].get<int>())),
            std::string::npos)
      << error;
}

TEST(Weights, TruncatedShardAndMissingFilesFailCleanly) {
  const auto dir = t2::testing::fresh_dir("trunc");
  t2::testing::write_random_checkpoint(dir, t2::testing::tiny_config(), 5, 2);
  const auto shard = dir / "model-00002-of-00002.safetensors";
  std::filesystem::resize_file(shard, std::filesystem::file_size(shard) / 2);
  const std::string error = load_error(dir);
  EXPECT_NE(error.find("model-00002-of-00002.safetensors"), std::string::npos) << error;
  EXPECT_NE(error.find("truncated"), std::string::npos) << error;

  const auto empty = t2::testing::fresh_dir("empty");
  EXPECT_NE(load_error(empty).find("no config.json"), std::string::npos);
  std::ofstream(empty / "config.json") << t2::testing::tiny_config().dump();
  EXPECT_NE(load_error(empty).find("no model.safetensors"), std::string::npos);
}

TEST(Weights, GroupsAreStackedViewsAndUnstackWhenAMemberIsReplaced) {
  const auto dir = t2::testing::fresh_dir("weights_stacked");
  auto config = t2::testing::tiny_config();
  config["architectures"] = {"Qwen2ForCausalLM"};  // q/k/v biases
  t2::testing::write_random_checkpoint(dir, config, 3);
  const auto model = t2::model::Transformer::load(dir, Placement{});
  t2::model::ProjectionSet set = model.base_projections();
  const at::Tensor& qkv = set.stacked(1, t2::model::ProjectionGroup::kQKV);
  ASSERT_TRUE(qkv.defined());
  const int64_t q_rows = set.get(1, Projection::kQ).size(0), k_rows = set.get(1, Projection::kK).size(0);
  EXPECT_EQ(qkv.size(0), q_rows + 2 * k_rows);
  // The members are the buffer's rows, sharing its memory, in group order.
  EXPECT_EQ(set.get(1, Projection::kK).data_ptr(), qkv[q_rows].data_ptr());
  EXPECT_TRUE(model.weights().layers[1].stacked_bias[0].narrow(0, q_rows, k_rows).equal(
      model.weights().layers[1].bias[static_cast<size_t>(Projection::kK)]));
  EXPECT_TRUE(set.stacked(1, t2::model::ProjectionGroup::kGateUp).defined());
  EXPECT_FALSE(model.weights().layers[1].stacked_bias[1].defined());  // no MLP biases in Qwen2

  set.set(1, Projection::kUp, set.get(1, Projection::kUp).clone());
  EXPECT_FALSE(set.stacked(1, t2::model::ProjectionGroup::kGateUp).defined());
  EXPECT_TRUE(set.stacked(1, t2::model::ProjectionGroup::kQKV).defined());
  EXPECT_TRUE(model.base_projections().stacked(1, t2::model::ProjectionGroup::kGateUp).defined());  // copies are independent
  EXPECT_THROW(set.set_stacked(1, t2::model::ProjectionGroup::kQKV, at::zeros({q_rows, qkv.size(1)})), t2::InvalidArgument);
}

TEST(Placement, ParsesDevicesAndDtypes) {
  const Placement cpu = Placement::parse("cpu", "auto");
  EXPECT_TRUE(cpu.device.is_cpu());
  EXPECT_EQ(cpu.dtype, at::kFloat);
  EXPECT_EQ(Placement::parse("cpu", "bf16").dtype, at::kBFloat16);
  EXPECT_THROW(Placement::parse("tpu", "auto"), t2::InvalidArgument);
  EXPECT_THROW(Placement::parse("cpu", "int3"), t2::InvalidArgument);
  if (!at::hasCUDA()) {
    EXPECT_THROW(Placement::parse("cuda", "auto"), t2::InvalidArgument);
  } else {
    EXPECT_EQ(Placement::parse("cuda", "auto").device, at::Device(at::kCUDA, 0));  // an index to synchronise on
    EXPECT_EQ(Placement::parse("cuda", "auto").dtype, at::kBFloat16);
  }
}
