// Next-token choice from logits: greedy, temperature, top-k, top-p, and
// OpenAI's presence/frequency penalties over the tokens generated so far.
// Runs on the host with its own seeded generator, so a sequence's samples do
// not depend on what else is in the batch. The device sampler
// (device_sampler.hpp) draws for the same sequence from stream_seed() and
// counts() instead.
#pragma once

#include <cstdint>
#include <optional>
#include <random>
#include <unordered_map>

namespace t2::engine {

struct SamplingParams {
  double temperature = 1.0;  // 0 = greedy
  int64_t top_k = 0;         // 0 = all tokens
  double top_p = 1.0;
  double presence_penalty = 0.0;
  double frequency_penalty = 0.0;
  std::optional<uint64_t> seed;  // unset: a fresh random seed

  // Throws InvalidArgument naming the parameter when out of range.
  void validate() const;
};

struct Sample {
  int64_t token;
  float logprob;  // under the model's unpenalised, untempered distribution
};

class Sampler {
 public:
  explicit Sampler(SamplingParams params);

  // `logits` holds `vocab` float32 values.
  Sample sample(const float* logits, int64_t vocab);
  // Records a generated token for the penalties.
  void accept(int64_t token);

  const SamplingParams& params() const { return params_; }
  // The seed of this sequence's device-side draws: params().seed when set, else random.
  uint64_t stream_seed() const { return stream_seed_; }
  // Generated tokens and how often each came, for penalties applied elsewhere.
  const std::unordered_map<int64_t, int64_t>& counts() const { return counts_; }

 private:
  SamplingParams params_;
  uint64_t stream_seed_;
  std::mt19937_64 rng_;
  std::unordered_map<int64_t, int64_t> counts_;
};

}  // namespace t2::engine
