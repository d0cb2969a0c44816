#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "support.hpp"
#include "t2/common/errors.hpp"
#include "t2/model/config.hpp"
#include "t2/server/config.hpp"

using t2::model::ModelConfig;
using t2::model::RopeScaling;

TEST(ModelConfig, ReadsStories260K) {
  const auto path = t2::testing::stories_dir() / "config.json";
  T2_REQUIRE_PATH(path);
  const ModelConfig c = ModelConfig::from_file(path);
  EXPECT_EQ(c.architecture, t2::model::Architecture::kLlama);
  EXPECT_EQ(c.hidden_size, 64);
  EXPECT_EQ(c.intermediate_size, 172);
  EXPECT_EQ(c.num_layers, 5);
  EXPECT_EQ(c.num_heads, 8);
  EXPECT_EQ(c.num_kv_heads, 4);
  EXPECT_EQ(c.head_dim, 8);
  EXPECT_EQ(c.vocab_size, 512);
  EXPECT_TRUE(c.tie_word_embeddings);
  EXPECT_EQ(c.rope_scaling.type, RopeScaling::Type::kNone);
}

TEST(ModelConfig, HeadDimDefaultsToHiddenOverHeads) {
  auto j = t2::testing::tiny_config();
  const ModelConfig c = ModelConfig::from_json(j, "t");
  EXPECT_EQ(c.head_dim, 8);
  j["head_dim"] = 16;
  EXPECT_EQ(ModelConfig::from_json(j, "t").head_dim, 16);
}

TEST(ModelConfig, KvHeadsDefaultToHeads) {
  auto j = t2::testing::tiny_config();
  j.erase("num_key_value_heads");
  EXPECT_EQ(ModelConfig::from_json(j, "t").num_kv_heads, 4);
}

TEST(ModelConfig, ArchitectureFeatures) {
  auto j = t2::testing::tiny_config();
  j["architectures"] = {"Qwen2ForCausalLM"};
  const ModelConfig qwen = ModelConfig::from_json(j, "t");
  EXPECT_TRUE(qwen.qkv_bias);
  EXPECT_FALSE(qwen.o_bias);
  EXPECT_FALSE(qwen.sliding_window.has_value());

  j["architectures"] = {"MistralForCausalLM"};
  j["sliding_window"] = 16;
  const ModelConfig mistral = ModelConfig::from_json(j, "t");
  EXPECT_FALSE(mistral.qkv_bias);
  ASSERT_TRUE(mistral.sliding_window.has_value());
  EXPECT_EQ(*mistral.sliding_window, 16);

  j["architectures"] = {"LlamaForCausalLM"};
  j["attention_bias"] = true;
  const ModelConfig llama = ModelConfig::from_json(j, "t");
  EXPECT_TRUE(llama.qkv_bias);
  EXPECT_TRUE(llama.o_bias);
}

TEST(ModelConfig, RopeScalingVariants) {
  auto j = t2::testing::tiny_config();
  j["rope_scaling"] = {{"rope_type", "llama3"}, {"factor", 8.0}, {"low_freq_factor", 1.0},
                       {"high_freq_factor", 4.0}, {"original_max_position_embeddings", 64}};
  const ModelConfig c = ModelConfig::from_json(j, "t");
  EXPECT_EQ(c.rope_scaling.type, RopeScaling::Type::kLlama3);
  EXPECT_DOUBLE_EQ(c.rope_scaling.factor, 8.0);
  EXPECT_EQ(c.rope_scaling.original_max_position_embeddings, 64);

  j["rope_scaling"] = {{"type", "linear"}, {"factor", 2.0}};
  EXPECT_EQ(ModelConfig::from_json(j, "t").rope_scaling.type, RopeScaling::Type::kLinear);

  j["rope_scaling"] = {{"type", "yarn"}, {"factor", 2.0}};
  EXPECT_THROW(ModelConfig::from_json(j, "t"), t2::LoadError);
}

TEST(ModelConfig, RejectsWhatCannotRun) {
  auto expect_error = [](nlohmann::json j, const std::string& fragment) {
    try {
      ModelConfig::from_json(j, "my/config.json");
      ADD_FAILURE() << "no error for " << fragment;
    } catch (const t2::LoadError& e) {
      EXPECT_NE(std::string(e.what()).find(fragment), std::string::npos) << e.what();
      EXPECT_NE(std::string(e.what()).find("my/config.json"), std::string::npos) << e.what();
    }
  };
  auto j = t2::testing::tiny_config();
  j["architectures"] = {"GPT2LMHeadModel"};
  expect_error(j, "unsupported architecture 'GPT2LMHeadModel'");
  j = t2::testing::tiny_config();
  j["num_key_value_heads"] = 3;
  expect_error(j, "not a multiple");
  j = t2::testing::tiny_config();
  j["hidden_size"] = "big";
  expect_error(j, "'hidden_size' has the wrong type");
  j = t2::testing::tiny_config();
  j.erase("vocab_size");
  expect_error(j, "vocab_size");
  j = t2::testing::tiny_config();
  j["hidden_act"] = "gelu";
  expect_error(j, "hidden_act");
  // Values that load but make every output NaN, or positions no machine holds.
  j = t2::testing::tiny_config();
  j["rms_norm_eps"] = -1;
  expect_error(j, "rms_norm_eps must be a finite number > 0");
  j = t2::testing::tiny_config();
  j["rope_theta"] = 0;
  expect_error(j, "rope_theta must be a finite number > 0");
  j = t2::testing::tiny_config();
  j["max_position_embeddings"] = 1000000000000LL;
  expect_error(j, "max_position_embeddings = 1000000000000 needs");
  j = t2::testing::tiny_config();
  j["vocab_size"] = int64_t{1} << 40;
  expect_error(j, "'vocab_size' = 1099511627776 is beyond any supported model");
}

TEST(GenerationConfig, EosMayBeAList) {
  const auto g = t2::model::GenerationConfig::from_json({{"bos_token_id", 128000}, {"eos_token_id", {128001, 128009}}});
  EXPECT_EQ(g.bos_token_id, 128000);
  EXPECT_EQ(g.eos_token_ids, (std::vector<int64_t>{128001, 128009}));
  EXPECT_EQ(t2::model::GenerationConfig::from_json({{"eos_token_id", 2}}).eos_token_ids, std::vector<int64_t>{2});
}

TEST(ServerConfigValidate, DispatchAndLabelScoringValues) {
  t2::server::ServerConfig c;
  c.model_dir = "m";
  EXPECT_EQ(c.dispatch, "auto");  // the default: classifier, prompt or none by what is loaded
  EXPECT_EQ(c.label_scoring, "mean");
  EXPECT_NO_THROW(c.validate());
  for (const char* strategy : {"auto", "explicit", "prompt", "classifier", "none"}) {
    c.dispatch = strategy;
    EXPECT_NO_THROW(c.validate()) << strategy;
  }
  const auto rejects = [](const t2::server::ServerConfig& config, const std::string& param, const std::string& fragment) {
    try {
      config.validate();
      ADD_FAILURE() << "accepted: " << fragment;
    } catch (const t2::InvalidArgument& e) {
      EXPECT_EQ(e.param(), param);
      EXPECT_NE(std::string(e.what()).find(fragment), std::string::npos) << e.what();
    }
  };
  c.dispatch = "astrology";
  rejects(c, "dispatch", "'astrology'");
  c.dispatch = "Auto";
  rejects(c, "dispatch", "'Auto'");
  c.dispatch = "auto";
  for (const char* scoring : {"mean", "sum"}) {
    c.label_scoring = scoring;
    EXPECT_NO_THROW(c.validate()) << scoring;
  }
  c.label_scoring = "max";
  rejects(c, "label_scoring", "'max'");
  c.label_scoring = "mean";
  c.dispatch_context = 8;
  rejects(c, "dispatch_context", "at least 16");
}
