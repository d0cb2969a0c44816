// The device sampler on the CPU: its distributions against the host Sampler's
// and the exact ones, greedy and logprob values, batch independence of its
// draws, the finite flags, and the engine with device sampling on.
#include <algorithm>
#include <cmath>
#include <limits>
#include <map>
#include <numeric>
#include <set>

#include <gtest/gtest.h>

#include "support.hpp"
#include "t2/common/errors.hpp"
#include "t2/engine/device_sampler.hpp"
#include "t2/engine/engine.hpp"

using t2::engine::DeviceSampleRow;
using t2::engine::DeviceSamples;
using t2::engine::Sampler;
using t2::engine::SamplingParams;
using t2::engine::sample_on_device;

namespace {

using Counts = std::unordered_map<int64_t, int64_t>;

// Ids deliberately out of logit order, so ranking matters.
const std::vector<float> kLogits = {0.3f, 2.0f, -1.0f, 1.2f, 0.0f, -2.0f, 1.5f, -0.4f, 0.7f, -1.5f, 1.0f, -0.8f};

SamplingParams params(double temperature, int64_t top_k = 0, double top_p = 1.0) {
  SamplingParams p;
  p.temperature = temperature;
  p.top_k = top_k;
  p.top_p = top_p;
  p.seed = 1234;
  return p;
}

// The distribution Sampler::sample is specified to draw from, computed here in double from scratch.
std::vector<double> expected_distribution(const std::vector<float>& logits, const SamplingParams& p, const Counts& counts) {
  const size_t vocab = logits.size();
  std::vector<double> penalised(logits.begin(), logits.end());
  for (const auto& [token, count] : counts) {
    penalised[static_cast<size_t>(token)] -= p.frequency_penalty * static_cast<double>(count) + p.presence_penalty;
  }
  std::vector<size_t> order(vocab);
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) { return penalised[a] > penalised[b]; });
  if (p.top_k > 0) order.resize(std::min(vocab, static_cast<size_t>(p.top_k)));
  std::vector<double> weight(vocab, 0.0);
  double total = 0;
  for (const size_t t : order) total += weight[t] = std::exp(penalised[t] / p.temperature);
  std::vector<double> dist(vocab, 0.0);
  double mass = 0, kept = 0;
  for (const size_t t : order) {
    dist[t] = weight[t];
    kept += weight[t];
    mass += weight[t] / total;
    if (mass >= p.top_p) break;
  }
  for (double& d : dist) d /= kept;
  return dist;
}

std::vector<double> frequencies(const std::vector<int64_t>& tokens, size_t vocab) {
  std::vector<double> f(vocab, 0.0);
  for (const int64_t t : tokens) f.at(static_cast<size_t>(t)) += 1.0 / static_cast<double>(tokens.size());
  return f;
}

// Each token's frequency within 5 standard errors of its probability; impossible tokens never drawn.
void expect_matches(const std::vector<double>& observed, const std::vector<double>& expected, int draws,
                    const std::string& what) {
  for (size_t t = 0; t < expected.size(); ++t) {
    if (expected[t] == 0.0) {
      EXPECT_EQ(observed[t], 0.0) << what << ": token " << t << " is outside top-k/top-p";
      continue;
    }
    const double standard_error = std::sqrt(expected[t] * (1 - expected[t]) / draws);
    EXPECT_NEAR(observed[t], expected[t], 5 * standard_error) << what << ": token " << t;
  }
}

at::Tensor rows_of(const std::vector<float>& logits, int64_t rows) {
  return at::tensor(logits).unsqueeze(0).expand({rows, static_cast<int64_t>(logits.size())}).contiguous();
}

DeviceSampleRow row(const SamplingParams& p, uint64_t counter, const Counts* counts = nullptr, int top_logprobs = 0) {
  return {p, *p.seed, counter, counts, top_logprobs};
}

// One token of `row` sampled at position `at` among `others`.
int64_t token_in_batch(const at::Tensor& logits, const DeviceSampleRow& r, const std::vector<DeviceSampleRow>& others,
                       size_t at) {
  std::vector<DeviceSampleRow> batch = others;
  batch.insert(batch.begin() + static_cast<std::ptrdiff_t>(at), r);
  std::vector<at::Tensor> logit_rows;
  for (size_t i = 0; i < batch.size(); ++i) logit_rows.push_back(i == at ? logits : at::randn_like(logits));
  return sample_on_device(at::stack(logit_rows), batch).samples.at(at).token;
}

}  // namespace

TEST(DeviceSampler, DrawsTheHostSamplersDistribution) {
  constexpr int kDraws = 20000;
  constexpr int64_t kBatch = 1000;
  const Counts counts = {{1, 2}, {6, 1}, {3, 4}};
  SamplingParams penalties = params(1.2, 0, 0.9);
  penalties.presence_penalty = 0.5;
  penalties.frequency_penalty = 0.3;
  const std::vector<std::pair<std::string, SamplingParams>> cases = {
      {"temperature 0.7", params(0.7)},          {"top_k 3", params(1.0, 3)},
      {"top_p 0.8", params(1.0, 0, 0.8)},        {"top_k 5 + top_p 0.85", params(1.0, 5, 0.85)},
      {"penalties + top_p 0.9", penalties},
  };
  const auto vocab = kLogits.size();
  const at::Tensor logits = rows_of(kLogits, kBatch);
  for (const auto& [name, p] : cases) {
    const bool penalised = p.presence_penalty != 0.0;
    const std::vector<double> expected = expected_distribution(kLogits, p, penalised ? counts : Counts{});

    Sampler host(p);
    if (penalised) {
      for (const auto& [token, n] : counts) {
        for (int64_t i = 0; i < n; ++i) host.accept(token);
      }
    }
    std::vector<int64_t> host_tokens;
    for (int i = 0; i < kDraws; ++i) host_tokens.push_back(host.sample(kLogits.data(), static_cast<int64_t>(vocab)).token);
    expect_matches(frequencies(host_tokens, vocab), expected, kDraws, "host, " + name);

    std::vector<int64_t> device_tokens;
    for (int64_t first = 0; first < kDraws; first += kBatch) {
      std::vector<DeviceSampleRow> rows;
      for (int64_t i = 0; i < kBatch; ++i) rows.push_back(row(p, static_cast<uint64_t>(first + i), penalised ? &counts : nullptr));
      for (const auto& s : sample_on_device(logits, rows).samples) device_tokens.push_back(s.token);
    }
    expect_matches(frequencies(device_tokens, vocab), expected, kDraws, "device, " + name);
  }
}

TEST(DeviceSampler, TopKBreaksTiesTowardsTheLowestIdLikeTheHost) {
  const std::vector<float> tied = {1.0f, 2.0f, 1.0f, 1.0f, 0.0f, 1.0f};
  const SamplingParams p = params(1.0, 2);  // token 1, then token 0 of the four tied at 1.0
  std::vector<DeviceSampleRow> rows;
  for (uint64_t c = 0; c < 2000; ++c) rows.push_back(row(p, c));
  std::set<int64_t> drawn;
  for (const auto& s : sample_on_device(rows_of(tied, 2000), rows).samples) drawn.insert(s.token);
  EXPECT_EQ(drawn, (std::set<int64_t>{0, 1}));
  Sampler host(p);
  std::set<int64_t> host_drawn;
  for (int i = 0; i < 2000; ++i) host_drawn.insert(host.sample(tied.data(), 6).token);
  EXPECT_EQ(host_drawn, drawn);
}

TEST(DeviceSampler, GreedyRowsTakeTheArgmaxAndReportRawLogprobs) {
  at::manual_seed(3);
  const at::Tensor logits = at::randn({4, 50}) * 3;
  const Counts counts = {{logits[2].argmax().item<int64_t>(), 3}};  // enough to knock row 2's best off the top
  SamplingParams penalised = params(0.0);
  penalised.frequency_penalty = 2.0;
  const std::vector<DeviceSampleRow> rows = {row(params(0.0), 0, nullptr, 5), row(params(1.0, 1), 9, nullptr, 0),
                                             row(penalised, 0, &counts, 20), row(params(0.0), 4, &counts, 1)};
  const DeviceSamples out = sample_on_device(logits, rows);

  at::Tensor expected_penalised = logits.clone();
  expected_penalised[2][counts.begin()->first] -= 6.0f;
  const at::Tensor expected_tokens = expected_penalised.argmax(-1);  // row 3 has no penalties: counts without them do nothing
  const at::Tensor log_softmax = logits.log_softmax(-1);
  for (int64_t r = 0; r < 4; ++r) {
    const auto& s = out.samples[static_cast<size_t>(r)];
    EXPECT_EQ(s.token, expected_tokens[r].item<int64_t>()) << "row " << r;
    EXPECT_NEAR(s.logprob, log_softmax[r][s.token].item<float>(), 1e-6) << "row " << r;
    const int k = rows[static_cast<size_t>(r)].top_logprobs;
    const auto& top = out.top[static_cast<size_t>(r)];
    ASSERT_EQ(top.size(), static_cast<size_t>(k));
    if (k == 0) continue;
    const auto [values, indices] = log_softmax[r].topk(k);
    for (int i = 0; i < k; ++i) {
      EXPECT_EQ(top[static_cast<size_t>(i)].first, indices[i].item<int64_t>()) << "row " << r << " rank " << i;
      EXPECT_NEAR(top[static_cast<size_t>(i)].second, values[i].item<float>(), 1e-6) << "row " << r << " rank " << i;
    }
  }
  EXPECT_NE(out.samples[2].token, logits[2].argmax().item<int64_t>());

  const std::vector<float> tied = {0.5f, 3.0f, 3.0f, -1.0f};
  EXPECT_EQ(sample_on_device(rows_of(tied, 1), {row(params(0.0), 0)}).samples[0].token, 1);
}

TEST(DeviceSampler, SampledLogprobsAreOfTheRawLogits) {
  at::manual_seed(4);
  const at::Tensor logits = at::randn({3, 40});
  const Counts counts = {{5, 1}, {7, 2}};
  SamplingParams penalised = params(0.5, 10, 0.9);
  penalised.presence_penalty = 1.0;
  const DeviceSamples out = sample_on_device(logits, {row(params(1.3), 1), row(params(0.8, 4), 2), row(penalised, 3, &counts)});
  const at::Tensor log_softmax = logits.log_softmax(-1);
  for (int64_t r = 0; r < 3; ++r) {
    const auto& s = out.samples[static_cast<size_t>(r)];
    EXPECT_NEAR(s.logprob, log_softmax[r][s.token].item<float>(), 1e-6) << "row " << r;
  }
}

TEST(DeviceSampler, ARowsDrawDependsOnlyOnItsSeedAndCounter) {
  at::manual_seed(5);
  const at::Tensor logits = at::randn({100});
  const Counts counts = {{3, 1}};
  SamplingParams seven = params(1.0, 0, 0.95);
  seven.seed = 7;
  SamplingParams penalised = params(0.9, 20);
  penalised.frequency_penalty = 1.0;
  const std::vector<DeviceSampleRow> others = {row(params(0.0), 0), row(params(1.5, 0, 0.5), 3),
                                               row(penalised, 8, &counts, 4), row(params(0.6, 7), 1)};
  for (uint64_t counter = 0; counter < 20; ++counter) {
    const DeviceSampleRow r = row(seven, counter);
    const int64_t alone = sample_on_device(logits.unsqueeze(0), {r}).samples[0].token;
    EXPECT_EQ(sample_on_device(logits.unsqueeze(0), {r}).samples[0].token, alone) << "counter " << counter;
    for (size_t at = 0; at <= others.size(); at += 2) {
      EXPECT_EQ(token_in_batch(logits, r, others, at), alone) << "counter " << counter << " at " << at;
    }
  }

  std::vector<DeviceSampleRow> steps;
  for (uint64_t counter = 0; counter < 50; ++counter) steps.push_back(row(seven, counter));
  std::set<int64_t> distinct;
  for (const auto& s : sample_on_device(rows_of(std::vector<float>(100, 0.0f), 50), steps).samples) distinct.insert(s.token);
  EXPECT_GT(distinct.size(), 30u) << "50 counters over 100 equally likely tokens";

  SamplingParams eight = seven;
  eight.seed = 8;
  std::vector<DeviceSampleRow> other_seed;
  for (uint64_t counter = 0; counter < 50; ++counter) other_seed.push_back(row(eight, counter));
  const at::Tensor flat = rows_of(std::vector<float>(100, 0.0f), 50);
  const DeviceSamples a = sample_on_device(flat, steps), b = sample_on_device(flat, other_seed);
  int same = 0;
  for (size_t i = 0; i < 50; ++i) same += a.samples[i].token == b.samples[i].token ? 1 : 0;
  EXPECT_LT(same, 10) << "another seed is another stream";
}

TEST(DeviceSampler, FlagsNonFiniteRowsOnly) {
  at::Tensor logits = at::randn({4, 16});
  logits[1][3] = std::numeric_limits<float>::quiet_NaN();
  logits[3][0] = std::numeric_limits<float>::infinity();
  const DeviceSamples out =
      sample_on_device(logits, {row(params(1.0), 0), row(params(0.7, 5, 0.9), 1), row(params(0.0), 2), row(params(0.0), 3)});
  EXPECT_EQ(out.finite, (std::vector<bool>{true, false, true, false}));
}

// On CUDA a batch all greedy without penalties or top logprobs takes one
// kernel; it must give the ATen path's table (here run on the CPU): ties to
// the lowest id, the logprobs, the finite flags, and logits narrowed from a
// wider row as the engine narrows a padded vocabulary.
TEST(DeviceSampler, GreedyKernelGivesTheAtenPathsTableOnCuda) {
  if (!at::hasCUDA()) GTEST_SKIP() << "no CUDA device";
  at::manual_seed(6);
  const int64_t vocab = 128256;
  at::Tensor wide = at::randn({6, vocab + 64}) * 4;
  wide[1][70000] = 50.0f, wide[1][9] = 50.0f;      // a tie: id 9 wins
  wide[2][vocab - 1] = 60.0f;                     // the last id
  wide[3][5] = std::numeric_limits<float>::quiet_NaN();
  wide[4][77] = -std::numeric_limits<float>::infinity();
  wide[5][vocab + 10] = 1000.0f;                  // past the narrowed vocabulary: not seen
  const at::Tensor logits = wide.narrow(1, 0, vocab);
  std::vector<DeviceSampleRow> rows;
  for (uint64_t r = 0; r < 6; ++r) rows.push_back(row(params(0.0), r));
  const DeviceSamples cpu = sample_on_device(logits, rows);
  const DeviceSamples cuda = sample_on_device(wide.cuda().narrow(1, 0, vocab), rows);
  EXPECT_EQ(cuda.finite, cpu.finite);
  EXPECT_EQ(cuda.finite, (std::vector<bool>{true, true, true, false, false, true}));
  EXPECT_EQ(cuda.samples[1].token, 9);
  EXPECT_EQ(cuda.samples[2].token, vocab - 1);
  for (size_t r = 0; r < rows.size(); ++r) {
    if (!cpu.finite[r]) continue;
    EXPECT_EQ(cuda.samples[r].token, cpu.samples[r].token) << "row " << r;
    EXPECT_NEAR(cuda.samples[r].logprob, cpu.samples[r].logprob, 1e-4) << "row " << r;
    EXPECT_TRUE(cuda.top[r].empty());
  }
}

TEST(DeviceSampler, RejectsLogitsThatDoNotMatchTheRows) {
  EXPECT_THROW(sample_on_device(at::zeros({2, 8}), {row(params(0.0), 0)}), t2::Error);
}

namespace {

class DeviceSamplingEngineTest : public t2::testing::StoriesTest {
 protected:
  struct Run {
    std::map<t2::engine::SequenceId, std::vector<int64_t>> tokens;
    std::map<t2::engine::SequenceId, std::vector<t2::engine::TokenEvent>> events;
  };

  Run generate(bool device_sampling, const std::vector<t2::engine::GenerationRequest>& requests) const {
    t2::engine::EngineOptions options;
    options.max_sequences = static_cast<int64_t>(requests.size());
    options.device_sampling = device_sampling;
    t2::engine::Engine engine(*model_, *tokenizer_, {2}, options);
    for (const auto& r : requests) engine.add(r);
    Run run;
    while (engine.active() > 0) {
      for (auto& event : engine.step().tokens) {
        run.tokens[event.sequence].push_back(event.token);
        run.events[event.sequence].push_back(std::move(event));
      }
    }
    return run;
  }

  t2::engine::GenerationRequest request(const std::string& prompt, const SamplingParams& sampling,
                                        int top_logprobs = 0) const {
    t2::engine::GenerationRequest r;
    r.prompt = tokenizer_->encode(prompt, true);
    r.max_tokens = 30;
    r.sampling = sampling;
    r.top_logprobs = top_logprobs;
    return r;
  }
};

}  // namespace

TEST_F(DeviceSamplingEngineTest, GreedyTokensMatchTheHostPath) {
  if (!ready()) return;
  SamplingParams penalised = params(0.0);
  penalised.frequency_penalty = 0.8;
  const std::vector<t2::engine::GenerationRequest> requests = {
      request("Once upon a time", params(0.0), 3), request("Tom had a dog", penalised), request("Lily", params(1.0, 1), 2)};
  const Run host = generate(false, requests), device = generate(true, requests);
  EXPECT_EQ(device.tokens, host.tokens);
  for (const auto& [id, events] : host.events) {
    const auto& others = device.events.at(id);
    ASSERT_EQ(others.size(), events.size());
    for (size_t i = 0; i < events.size(); ++i) {
      EXPECT_NEAR(others[i].logprob, events[i].logprob, 1e-5);
      ASSERT_EQ(others[i].top_logprobs.size(), events[i].top_logprobs.size());
      for (size_t k = 0; k < events[i].top_logprobs.size(); ++k) {
        EXPECT_EQ(others[i].top_logprobs[k].first, events[i].top_logprobs[k].first);
        EXPECT_NEAR(others[i].top_logprobs[k].second, events[i].top_logprobs[k].second, 1e-5);
      }
    }
  }
}

TEST_F(DeviceSamplingEngineTest, SeededSamplingIsReproducible) {
  if (!ready()) return;
  SamplingParams penalised = params(0.9, 40, 0.95);
  penalised.presence_penalty = 0.4;
  const std::vector<t2::engine::GenerationRequest> requests = {request("Once upon a time", params(1.0)),
                                                               request("Tom had a dog", penalised)};
  const Run first = generate(true, requests);
  EXPECT_EQ(generate(true, requests).tokens, first.tokens);
  SamplingParams reseeded = params(1.0);
  reseeded.seed = 99;
  EXPECT_NE(generate(true, {request("Once upon a time", reseeded)}).tokens.begin()->second, first.tokens.begin()->second);
}
