// End to end on the real stories260K checkpoint: greedy decoding from BOS
// reproduces the text llama2.c documents for this model.
#include <gtest/gtest.h>

#include "support.hpp"
#include "t2/engine/engine.hpp"

namespace {

const std::string kDocumentedStory =
    "Once upon a time, there was a little girl named Lily. She loved to play outside in the park. One day, she saw "
    "a big, red ball. She wanted to play with it, but it was too high.";

}  // namespace

TEST(Stories260K, GreedyFromBosReproducesLlama2cOutput) {
  const auto dir = t2::testing::stories_dir();
  T2_REQUIRE_PATH(dir);
  const auto model = t2::model::Transformer::load(dir, t2::model::Placement{});
  const auto tokenizer = t2::tokenizer::Tokenizer::load(dir);
  const auto generation = t2::model::GenerationConfig::from_model_dir(dir);
  ASSERT_EQ(generation.eos_token_ids, std::vector<int64_t>{2});
  t2::engine::Engine engine(model, tokenizer, generation.eos_token_ids, {1, 0});
  t2::engine::GenerationRequest request;
  request.prompt = {tokenizer.bos_id()};
  request.sampling.temperature = 0.0;
  request.max_tokens = 120;
  engine.add(request);
  std::string text;
  while (engine.active() > 0) {
    for (const auto& event : engine.step().tokens) text += event.text;
  }
  ASSERT_GE(text.size(), kDocumentedStory.size());
  EXPECT_EQ(text.substr(0, kDocumentedStory.size()), kDocumentedStory);
}
