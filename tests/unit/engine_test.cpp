// The generation loop on the real stories260K model: joining and leaving
// between steps, stop conditions and reproducibility.
#include <limits>
#include <map>

#include <gtest/gtest.h>

#include "support.hpp"
#include "t2/common/errors.hpp"
#include "t2/engine/engine.hpp"

using t2::engine::Engine;
using t2::engine::FinishReason;
using t2::engine::GenerationRequest;
using t2::engine::SequenceId;

namespace {

class EngineTest : public t2::testing::StoriesTest {
 protected:
  void SetUp() override {
    StoriesTest::SetUp();
    if (!ready()) return;
  }

  Engine engine(int64_t slots, int64_t context = 0) const {
    // stories260K's EOS is 2.
    return Engine(*model_, *tokenizer_, {2}, {slots, context});
  }

  GenerationRequest request(const std::string& prompt, int64_t max_tokens, double temperature = 0.0,
                            uint64_t seed = 0) const {
    GenerationRequest r;
    r.prompt = tokenizer_->encode(prompt, true);
    r.max_tokens = max_tokens;
    r.sampling.temperature = temperature;
    r.sampling.seed = seed;
    return r;
  }

  struct Result {
    std::string text;
    std::vector<int64_t> tokens;
    std::optional<FinishReason> finish;
  };

  // Runs every sequence to completion; `on_step` may add or cancel between steps.
  static std::map<SequenceId, Result> drain(Engine& e, const std::function<void(int)>& on_step = {}) {
    std::map<SequenceId, Result> results;
    for (int step = 0; e.active() > 0; ++step) {
      for (const auto& event : e.step().tokens) {
        auto& r = results[event.sequence];
        r.text += event.text;
        r.tokens.push_back(event.token);
        if (event.finish) r.finish = event.finish;
      }
      if (on_step) on_step(step);
    }
    return results;
  }

  Result alone(GenerationRequest r) const {
    Engine e = engine(1);
    const SequenceId id = e.add(std::move(r));
    return drain(e).at(id);
  }

};

}  // namespace

TEST_F(EngineTest, ConcurrentSequencesJoiningLateMatchTheirSoloRuns) {
  const std::vector<std::string> prompts = {"Once upon a time", "Tom had a dog", "The sun was", "Lily"};
  std::vector<Result> expected;
  for (const auto& p : prompts) expected.push_back(alone(request(p, 40)));

  Engine e = engine(4);
  std::vector<SequenceId> ids = {e.add(request(prompts[0], 40)), e.add(request(prompts[1], 40))};
  const auto results = drain(e, [&](int step) {
    if (step == 3) ids.push_back(e.add(request(prompts[2], 40)));
    if (step == 9) ids.push_back(e.add(request(prompts[3], 40)));
  });
  for (size_t i = 0; i < prompts.size(); ++i) {
    EXPECT_EQ(results.at(ids[i]).tokens, expected[i].tokens) << prompts[i];
    EXPECT_EQ(results.at(ids[i]).text, expected[i].text) << prompts[i];
  }
}

TEST_F(EngineTest, SeededSamplingDoesNotDependOnTheBatch) {
  const Result solo = alone(request("Once upon a time", 30, 0.9, 1234));
  Engine e = engine(3);
  e.add(request("A cat", 30, 1.0, 1));
  const SequenceId id = e.add(request("Once upon a time", 30, 0.9, 1234));
  e.add(request("The dog", 30, 0.7, 2));
  EXPECT_EQ(drain(e).at(id).tokens, solo.tokens);
  EXPECT_NE(alone(request("Once upon a time", 30, 0.9, 99)).tokens, solo.tokens);
}

TEST_F(EngineTest, StopsAtMaxTokensStopStringsAndContext) {
  const Result capped = alone(request("Once upon a time", 5));
  EXPECT_EQ(capped.tokens.size(), 5u);
  EXPECT_EQ(capped.finish, FinishReason::kLength);

  GenerationRequest stopped = request("Once upon a time", 100);
  stopped.stop = {"Lily"};
  const Result r = alone(stopped);
  EXPECT_EQ(r.finish, FinishReason::kStop);
  EXPECT_EQ(r.text, ", there was a little girl named ");

  Engine small = engine(1, 16);
  GenerationRequest long_run = request("Once upon a time", 100);
  const auto prompt_tokens = long_run.prompt.size();
  const SequenceId id = small.add(std::move(long_run));
  const Result ctx = drain(small).at(id);
  EXPECT_EQ(ctx.finish, FinishReason::kLength);
  EXPECT_EQ(ctx.tokens.size(), 16 - prompt_tokens + 1);  // the last token is sampled but never fed back
}

TEST_F(EngineTest, EosEndsWithStopAndNoText) {
  // Greedy stories260K runs past 400 tokens without EOS, so let "." end it here.
  const int64_t period = tokenizer_->encode("Lily.", false).back();
  ASSERT_EQ(tokenizer_->piece(period), ".");
  Engine e(*model_, *tokenizer_, {period}, {1, 0});
  const SequenceId id = e.add(request("Once upon a time", 100));
  const Result r = drain(e).at(id);
  EXPECT_EQ(r.finish, FinishReason::kStop);
  EXPECT_EQ(r.tokens.back(), period);
  EXPECT_EQ(r.text, ", there was a little girl named Lily");

  GenerationRequest ignoring = request("Once upon a time", 30);
  ignoring.ignore_eos = true;
  const SequenceId past = e.add(ignoring);
  EXPECT_EQ(drain(e).at(past).finish, FinishReason::kLength);
}

TEST_F(EngineTest, CancelFreesTheSlotAtOnce) {
  Engine e = engine(1);
  const SequenceId id = e.add(request("Once", 50));
  e.step();
  EXPECT_FALSE(e.has_capacity());
  EXPECT_THROW(e.add(request("Twice", 5)), t2::Error);
  e.cancel(id);
  EXPECT_TRUE(e.has_capacity());
  EXPECT_EQ(e.active(), 0u);
  e.add(request("Twice", 5));
  EXPECT_EQ(e.active(), 1u);
}

TEST_F(EngineTest, RejectsBadRequests) {
  Engine e = engine(2, 32);
  GenerationRequest too_long = request(std::string(200, 'a'), 5);
  try {
    e.add(too_long);
    ADD_FAILURE() << "long prompt accepted";
  } catch (const t2::InvalidArgument& err) {
    EXPECT_EQ(err.param(), "prompt");
    EXPECT_NE(std::string(err.what()).find(std::to_string(too_long.prompt.size()) + " tokens"), std::string::npos);
    EXPECT_NE(std::string(err.what()).find("32"), std::string::npos);
  }
  GenerationRequest empty = request("x", 5);
  empty.prompt.clear();
  EXPECT_THROW(e.add(empty), t2::InvalidArgument);
  GenerationRequest bad_token = request("x", 5);
  bad_token.prompt.push_back(100000);
  EXPECT_THROW(e.add(bad_token), t2::InvalidArgument);
  GenerationRequest bad_temperature = request("x", 5, -1.0);
  EXPECT_THROW(e.add(bad_temperature), t2::InvalidArgument);
  EXPECT_EQ(e.active(), 0u);  // nothing half-added
}

// Host and device sampling alike: the step fails before any token.
TEST(EngineNonFinite, AStepWithNonFiniteLogitsFailsInsteadOfSamplingGarbage) {
  const auto config = t2::model::ModelConfig::from_json(t2::testing::tiny_config(), "tiny");
  for (const float bad : {std::numeric_limits<float>::infinity(), std::numeric_limits<float>::quiet_NaN()}) {
    auto weights = t2::model::ModelWeights::random(config, t2::model::Placement{}, 1);
    weights.final_norm.fill_(bad);  // as an overflowing adapter or a broken file would
    const t2::model::Transformer model(config, std::move(weights), t2::model::Placement{});
    for (const bool device_sampling : {false, true}) {
      t2::engine::EngineOptions options{2, 0};
      options.device_sampling = device_sampling;
      Engine engine(model, std::nullopt, {}, options);
      GenerationRequest r;
      r.prompt = {1, 2, 3};
      r.max_tokens = 4;
      r.sampling.temperature = 0.8;
      r.sampling.top_p = 0.9;
      engine.add(std::move(r));
      try {
        engine.step();
        ADD_FAILURE() << "a step with non-finite logits produced tokens (device sampling " << device_sampling << ")";
      } catch (const t2::Error& e) {
        EXPECT_NE(std::string(e.what()).find("non-finite logits"), std::string::npos) << e.what();
      }
    }
  }
}
