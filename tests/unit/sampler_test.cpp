#include <cmath>
#include <map>
#include <vector>

#include <gtest/gtest.h>

#include "t2/common/errors.hpp"
#include "t2/engine/sampler.hpp"

using t2::engine::Sampler;
using t2::engine::SamplingParams;

namespace {

SamplingParams sampling(double temperature, int64_t top_k = 0, double top_p = 1.0, uint64_t seed = 42) {
  SamplingParams p;
  p.temperature = temperature;
  p.top_k = top_k;
  p.top_p = top_p;
  p.seed = seed;
  return p;
}

std::map<int64_t, int> histogram(Sampler& sampler, const std::vector<float>& logits, int draws) {
  std::map<int64_t, int> counts;
  for (int i = 0; i < draws; ++i) ++counts[sampler.sample(logits.data(), static_cast<int64_t>(logits.size())).token];
  return counts;
}

}  // namespace

TEST(Sampler, GreedyTakesTheArgmaxWithItsLogprob) {
  Sampler s(sampling(0.0));
  const std::vector<float> logits = {0.0f, 2.0f, 1.0f};
  const auto sample = s.sample(logits.data(), 3);
  EXPECT_EQ(sample.token, 1);
  const double expected = 2.0 - std::log(std::exp(0.0) + std::exp(2.0) + std::exp(1.0));
  EXPECT_NEAR(sample.logprob, expected, 1e-6);
}

TEST(Sampler, SeedMakesSamplingReproducible) {
  std::vector<float> logits(100);
  for (size_t i = 0; i < logits.size(); ++i) logits[i] = static_cast<float>(std::sin(i * 1.3));
  Sampler a(sampling(1.0, 0, 1.0, 7)), b(sampling(1.0, 0, 1.0, 7)), c(sampling(1.0, 0, 1.0, 8));
  std::vector<int64_t> ta, tb, tc;
  for (int i = 0; i < 50; ++i) {
    ta.push_back(a.sample(logits.data(), 100).token);
    tb.push_back(b.sample(logits.data(), 100).token);
    tc.push_back(c.sample(logits.data(), 100).token);
  }
  EXPECT_EQ(ta, tb);
  EXPECT_NE(ta, tc);
}

TEST(Sampler, FollowsTheSoftmaxDistribution) {
  Sampler s(sampling(1.0));
  const std::vector<float> logits = {std::log(0.5f), std::log(0.3f), std::log(0.2f)};
  const auto counts = histogram(s, logits, 20000);
  EXPECT_NEAR(counts.at(0) / 20000.0, 0.5, 0.02);
  EXPECT_NEAR(counts.at(1) / 20000.0, 0.3, 0.02);
  EXPECT_NEAR(counts.at(2) / 20000.0, 0.2, 0.02);
}

TEST(Sampler, TopKAndTopPRestrictTheCandidates) {
  const std::vector<float> logits = {std::log(0.4f), std::log(0.3f), std::log(0.2f), std::log(0.1f)};
  Sampler top_k(sampling(1.0, 2));
  auto counts = histogram(top_k, logits, 5000);
  EXPECT_EQ(counts.size(), 2u);
  EXPECT_NEAR(counts.at(0) / 5000.0, 0.4 / 0.7, 0.03);

  Sampler top_p(sampling(1.0, 0, 0.75));  // 0.4 + 0.3 < 0.75 so three tokens stay
  counts = histogram(top_p, logits, 5000);
  EXPECT_EQ(counts.size(), 3u);
  EXPECT_EQ(counts.count(3), 0u);
}

TEST(Sampler, TopPOverALargeVocabularyWidensBeyondTheFirstGuess) {
  std::vector<float> flat(5000, 0.0f);  // uniform: top_p 0.5 needs 2500 tokens
  Sampler s(sampling(1.0, 0, 0.5));
  const auto counts = histogram(s, flat, 4000);
  int64_t max_token = 0;
  for (const auto& [token, n] : counts) max_token = std::max(max_token, token);
  EXPECT_GT(max_token, 1024);
  EXPECT_LT(max_token, 2500);
}

TEST(Sampler, LowTemperatureSharpens) {
  const std::vector<float> logits = {1.0f, 0.0f};
  Sampler cold(sampling(0.05));
  EXPECT_EQ(histogram(cold, logits, 500).count(1), 0u);
}

TEST(Sampler, PenaltiesDiscourageRepeats) {
  SamplingParams p = sampling(0.0);
  p.frequency_penalty = 0.6;
  Sampler s(p);
  const std::vector<float> logits = {1.0f, 0.5f};
  EXPECT_EQ(s.sample(logits.data(), 2).token, 0);
  s.accept(0);
  EXPECT_EQ(s.sample(logits.data(), 2).token, 1);  // 1.0 - 0.6 < 0.5

  SamplingParams q = sampling(0.0);
  q.presence_penalty = 0.3;
  Sampler presence(q);
  presence.accept(0);
  presence.accept(0);
  EXPECT_EQ(presence.sample(logits.data(), 2).token, 0);  // 1.0 - 0.3, once however often, still beats 0.5
}

TEST(Sampler, RejectsOutOfRangeParameters) {
  for (const auto& [field, make] : std::vector<std::pair<std::string, std::function<SamplingParams()>>>{
           {"temperature", [] { auto p = sampling(-1.0); return p; }},
           {"top_p", [] { auto p = sampling(1.0, 0, 0.0); return p; }},
           {"top_k", [] { auto p = sampling(1.0, -2); return p; }},
           {"presence_penalty", [] { auto p = sampling(1.0); p.presence_penalty = 3; return p; }},
           {"frequency_penalty", [] { auto p = sampling(1.0); p.frequency_penalty = -2.5; return p; }},
       }) {
    try {
      Sampler s(make());
      ADD_FAILURE() << field << " accepted";
    } catch (const t2::InvalidArgument& e) {
      EXPECT_EQ(e.param(), field);
    }
  }
}
