// LLaVA-NeXT against Hugging Face transformers on a tiny random checkpoint
// (written by tests/reference/llava_reference.py, a CTest fixture): the
// processor's patch and image-token counts, the packed image features, and the
// logits of prompts whose image tokens carry those features, through the
// language model's KV-cache forward.
#include <ATen/ATen.h>
#include <c10/core/InferenceMode.h>
#include <gtest/gtest.h>

#include <iostream>

#include <optional>

#include "support.hpp"
#include "t2/common/errors.hpp"
#include "t2/model/safetensors.hpp"
#include "t2/model/transformer.hpp"
#include "t2/svf/targets.hpp"
#include "t2/vision/llava_next.hpp"

namespace {

using t2::model::Chunk;
using t2::model::KVCache;
using t2::model::Placement;
using t2::model::Transformer;
using t2::vision::LlavaNext;

std::vector<int64_t> ids_of(const at::Tensor& t) {
  const at::Tensor c = t.contiguous();
  return {c.data_ptr<int64_t>(), c.data_ptr<int64_t>() + c.numel()};
}

// The prompt's input embeddings: its tokens', with the runs of image tokens
// replaced by the images' features in order.
at::Tensor prompt_embeddings(const Transformer& model, const LlavaNext& llava, const std::vector<int64_t>& prompt,
                             const std::vector<at::Tensor>& images) {
  at::Tensor embeddings = model.embed(prompt);
  size_t image = 0;
  for (size_t t = 0; t < prompt.size();) {
    if (prompt[t] != llava.image_token_id()) {
      ++t;
      continue;
    }
    const at::Tensor& features = images.at(image++);
    embeddings.narrow(0, static_cast<int64_t>(t), features.size(0)).copy_(features);
    t += static_cast<size_t>(features.size(0));
  }
  EXPECT_EQ(image, images.size());
  return embeddings;
}

// Logits of every prompt position, the prompt fed as chunks that end at `splits`.
at::Tensor prompt_logits(const Transformer& model, const std::vector<int64_t>& prompt, const at::Tensor& embeddings,
                         const std::vector<int64_t>& splits = {}) {
  KVCache cache(model.config(), 1, 512, model.placement());
  const int64_t slot = cache.allocate();
  std::vector<at::Tensor> rows;
  int64_t begin = 0;
  std::vector<int64_t> ends = splits;
  ends.push_back(static_cast<int64_t>(prompt.size()));
  for (const int64_t end : ends) {
    Chunk chunk{slot, std::vector<int64_t>(prompt.begin() + begin, prompt.begin() + end), end - begin};
    chunk.embeddings = embeddings.narrow(0, begin, end - begin);
    rows.push_back(model.forward({chunk}, cache, model.base_projections()));
    begin = end;
  }
  return at::cat(rows, 0).cpu();
}

double max_abs(const at::Tensor& a, const at::Tensor& b) { return (a.cpu().to(at::kFloat) - b).abs().max().item<double>(); }

class Llava : public ::testing::Test {
 protected:
  void SetUp() override {
    folder_ = t2::testing::reference_dir() / "llava" / "llava_tiny";
    T2_REQUIRE_PATH(folder_ / "reference.safetensors");
    reference_.emplace(t2::model::SafetensorsFile::open(folder_ / "reference.safetensors"));
  }
  at::Tensor ref(const std::string& name) const {
    const auto* view = reference_->find(name);
    if (view == nullptr) throw std::runtime_error("reference lacks " + name);
    return view->to_tensor();
  }
  at::Tensor features(const LlavaNext& llava, int image) const {
    const at::Tensor size = ref("image" + std::to_string(image) + "_size");
    return llava.encode(ref("image" + std::to_string(image) + "_pixel_values"), size[0].item<int64_t>(),
                        size[1].item<int64_t>());
  }

  std::filesystem::path folder_;
  std::optional<t2::model::SafetensorsFile> reference_;
};

}  // namespace

TEST_F(Llava, FeatureAndPatchCountsMatchTheProcessor) {
  const LlavaNext llava = LlavaNext::load(folder_ / "model", Placement{});
  const at::Tensor sizes = ref("count_sizes");
  const at::Tensor features = ref("count_features");
  const at::Tensor patches = ref("count_patches");
  ASSERT_GE(sizes.size(0), 10);
  for (int64_t i = 0; i < sizes.size(0); ++i) {
    const int64_t height = sizes[i][0].item<int64_t>(), width = sizes[i][1].item<int64_t>();
    EXPECT_EQ(llava.feature_count(height, width), features[i].item<int64_t>()) << height << "x" << width;
    EXPECT_EQ(llava.patch_count(height, width), patches[i].item<int64_t>()) << height << "x" << width;
  }
  EXPECT_EQ(llava.encoder_tokens(3), 3 * 17);  // 4x4 patches + CLS per 32-pixel tile
  EXPECT_THROW(llava.feature_count(0, 10), t2::InvalidArgument);
}

TEST_F(Llava, ImageFeaturesMatchTransformersWithin1e4) {
  c10::InferenceMode guard;
  const LlavaNext llava = LlavaNext::load(folder_ / "model", Placement{});
  for (int image = 0; image < 3; ++image) {
    const at::Tensor ours = features(llava, image);
    const at::Tensor theirs = ref("image" + std::to_string(image) + "_features");
    ASSERT_EQ(ours.sizes(), theirs.sizes()) << image;
    const at::Tensor size = ref("image" + std::to_string(image) + "_size");
    EXPECT_EQ(ours.size(0), llava.feature_count(size[0].item<int64_t>(), size[1].item<int64_t>()));
    const double gap = max_abs(ours, theirs);
    std::cout << "image " << image << ": features max |t2 - HF| = " << gap << "\n";
    EXPECT_LT(gap, 1e-4) << "image " << image;
  }
  EXPECT_THROW(llava.encode(at::zeros({2, 3, 32, 32}), 40, 30), t2::InvalidArgument);  // 40x30 takes 3 patches
}

TEST_F(Llava, PromptLogitsMatchTransformersWithin1e4) {
  c10::InferenceMode guard;
  const Transformer model = Transformer::load(folder_ / "model", Placement{});
  const LlavaNext llava = LlavaNext::load(folder_ / "model", Placement{});
  for (int image = 0; image < 3; ++image) {
    const std::vector<int64_t> prompt = ids_of(ref("image" + std::to_string(image) + "_prompt"));
    const at::Tensor embeddings = prompt_embeddings(model, llava, prompt, {features(llava, image)});
    const at::Tensor theirs = ref("image" + std::to_string(image) + "_logits");
    const at::Tensor whole = prompt_logits(model, prompt, embeddings);
    ASSERT_EQ(whole.sizes(), theirs.sizes());
    std::cout << "image " << image << ": prompt logits max |t2 - HF| = " << max_abs(whole, theirs) << "\n";
    EXPECT_LT(max_abs(whole, theirs), 1e-4) << "image " << image;
    // Chunked prefill with the split inside the image span (text is 6 tokens before it).
    const at::Tensor chunked = prompt_logits(model, prompt, embeddings, {6 + 10});
    EXPECT_LT(max_abs(chunked, theirs), 1e-4) << "image " << image << ", two chunks";
  }
}

TEST_F(Llava, TwoImagePromptLogitsMatchTransformers) {
  c10::InferenceMode guard;
  const Transformer model = Transformer::load(folder_ / "model", Placement{});
  const LlavaNext llava = LlavaNext::load(folder_ / "model", Placement{});
  const std::vector<int64_t> prompt = ids_of(ref("two_images_prompt"));
  const at::Tensor embeddings = prompt_embeddings(model, llava, prompt, {features(llava, 0), features(llava, 1)});
  EXPECT_LT(max_abs(prompt_logits(model, prompt, embeddings), ref("two_images_logits")), 1e-4);
}

TEST_F(Llava, HubAndModuleNameLayoutsLoadToTheSameLogits) {
  c10::InferenceMode guard;
  const std::vector<int64_t> prompt = ids_of(ref("image0_prompt"));
  for (const char* layout : {"model_v4", "model_v5_names"}) {
    const Transformer model = Transformer::load(folder_ / layout, Placement{});
    const LlavaNext llava = LlavaNext::load(folder_ / layout, Placement{});
    const at::Tensor embeddings = prompt_embeddings(model, llava, prompt, {features(llava, 0)});
    EXPECT_LT(max_abs(prompt_logits(model, prompt, embeddings), ref("image0_logits")), 1e-4) << layout;
  }
}

TEST_F(Llava, Bfloat16OnCudaWithin2e2Relative) {
  if (!at::hasCUDA()) GTEST_SKIP() << "no CUDA device";
  c10::InferenceMode guard;
  const Placement cuda{at::Device(at::kCUDA, 0), at::kBFloat16};
  const Transformer model = Transformer::load(folder_ / "model", cuda);
  const LlavaNext llava = LlavaNext::load(folder_ / "model", cuda);
  const std::vector<int64_t> prompt = ids_of(ref("image0_prompt"));
  const at::Tensor embeddings = prompt_embeddings(model, llava, prompt, {features(llava, 0)});
  const at::Tensor ours = prompt_logits(model, prompt, embeddings);
  // The fixture's bf16 reference where it ran on CUDA, else HF's float32 logits.
  const at::Tensor theirs = reference_->find("image0_logits_bfloat16") ? ref("image0_logits_bfloat16") : ref("image0_logits");
  const double relative = (ours - theirs).norm().item<double>() / theirs.norm().item<double>();
  std::cout << "bf16 prompt logits: relative norm error " << relative << "\n";
  EXPECT_LT(relative, 2e-2);
}

TEST_F(Llava, MissingVisionTensorIsALoadErrorNamingIt) {
  const auto dir = t2::testing::fresh_dir("llava_missing_tensor");
  std::filesystem::copy_file(folder_ / "model" / "config.json", dir / "config.json");
  const auto original = t2::model::SafetensorsFile::open(folder_ / "model" / "model.safetensors");
  const std::string missing = "vision_tower.encoder.layers.1.mlp.fc1.weight";
  std::vector<std::pair<std::string, at::Tensor>> kept;
  for (const auto& [name, view] : original.tensors()) {
    if (name != missing) kept.emplace_back(name, view.to_tensor());
  }
  t2::model::write_safetensors(dir / "model.safetensors", kept);
  try {
    LlavaNext::load(dir, Placement{});
    FAIL() << "loaded without " << missing;
  } catch (const t2::LoadError& e) {
    EXPECT_NE(std::string(e.what()).find("missing tensor '" + missing + "'"), std::string::npos) << e.what();
  }
  // The language model alone still loads: it reads none of the vision tensors.
  EXPECT_NO_THROW(Transformer::load(dir, Placement{}));
}

TEST_F(Llava, LanguageModelConfigAndTensorNamesComeFromTheVlm) {
  const Transformer model = Transformer::load(folder_ / "model", Placement{});
  EXPECT_EQ(model.config().architecture, t2::model::Architecture::kLlama);
  EXPECT_EQ(model.config().hidden_size, 32);
  EXPECT_EQ(model.config().num_layers, 2);
  EXPECT_EQ(model.config().vocab_size, 96);
  const auto up = t2::svf::MatrixId{1, t2::model::Projection::kUp};
  EXPECT_EQ(t2::svf::parse_weight_name("language_model.model.layers.1.mlp.up_proj.weight", 2), up);
  EXPECT_EQ(t2::svf::parse_weight_name("model.language_model.layers.1.mlp.up_proj.weight", 2), up);
  EXPECT_EQ(t2::svf::parse_weight_name("model.layers.1.mlp.up_proj.weight", 2), up);
  EXPECT_FALSE(t2::svf::parse_weight_name("vision_tower.encoder.layers.1.mlp.fc1.weight", 2).has_value());
}

TEST_F(Llava, TokenEmbeddingsAsChunkEmbeddingsGiveTheTokensLogits) {
  c10::InferenceMode guard;
  const Transformer model = Transformer::load(folder_ / "model", Placement{});
  const std::vector<int64_t> tokens = {1, 17, 42, 5, 88, 3, 60};
  KVCache cache(model.config(), 2, 64, model.placement());
  const int64_t plain = cache.allocate(), embedded = cache.allocate();
  Chunk with_embeddings{embedded, tokens, 7};
  with_embeddings.embeddings = model.embed(tokens);
  // One call: a chunk with embeddings beside one without, both prefilled.
  const at::Tensor logits = model.forward({{plain, tokens, 7}, with_embeddings}, cache, model.base_projections());
  EXPECT_TRUE(at::equal(logits.narrow(0, 0, 7), logits.narrow(0, 7, 7)));
  Chunk wrong_shape{embedded, {4}, 1};
  wrong_shape.embeddings = model.embed({4, 5});
  EXPECT_THROW(model.forward({wrong_shape}, cache, model.base_projections()), t2::InvalidArgument);
}
