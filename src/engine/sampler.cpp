#include "t2/engine/sampler.hpp"

#include <algorithm>
#include <cmath>
#include <numeric>
#include <vector>

#include "t2/common/errors.hpp"

namespace t2::engine {
namespace {

// Tokens ranked by descending logit; only the first `keep` are sorted.
std::vector<int64_t> top_tokens(const std::vector<float>& logits, int64_t keep) {
  std::vector<int64_t> order(logits.size());
  std::iota(order.begin(), order.end(), 0);
  const auto by_logit = [&](int64_t a, int64_t b) {
    return logits[static_cast<size_t>(a)] > logits[static_cast<size_t>(b)] ||
           (logits[static_cast<size_t>(a)] == logits[static_cast<size_t>(b)] && a < b);
  };
  keep = std::min<int64_t>(keep, static_cast<int64_t>(order.size()));
  std::partial_sort(order.begin(), order.begin() + keep, order.end(), by_logit);
  order.resize(static_cast<size_t>(keep));
  return order;
}

float log_softmax_at(const float* logits, int64_t vocab, int64_t token) {
  const float max = *std::max_element(logits, logits + vocab);
  double sum = 0;
  for (int64_t i = 0; i < vocab; ++i) sum += std::exp(static_cast<double>(logits[i] - max));
  return static_cast<float>(logits[token] - max - std::log(sum));
}

}  // namespace

void SamplingParams::validate() const {
  if (!(temperature >= 0.0 && temperature <= 100.0)) throw InvalidArgument("temperature", "temperature must be in [0, 100]");
  if (top_k < 0) throw InvalidArgument("top_k", "top_k must be >= 0");
  if (!(top_p > 0.0 && top_p <= 1.0)) throw InvalidArgument("top_p", "top_p must be in (0, 1]");
  if (!(presence_penalty >= -2.0 && presence_penalty <= 2.0)) throw InvalidArgument("presence_penalty", "presence_penalty must be in [-2, 2]");
  if (!(frequency_penalty >= -2.0 && frequency_penalty <= 2.0)) throw InvalidArgument("frequency_penalty", "frequency_penalty must be in [-2, 2]");
}

Sampler::Sampler(SamplingParams params) : params_(params) {
  params_.validate();
  std::random_device random;
  // Seeding rng_ with the seed itself keeps the host streams of seeded requests as they always were.
  stream_seed_ = params_.seed ? *params_.seed : (uint64_t{random()} << 32) | random();
  rng_.seed(stream_seed_);
}

void Sampler::accept(int64_t token) { ++counts_[token]; }

Sample Sampler::sample(const float* raw, int64_t vocab) {
  std::vector<float> logits(raw, raw + vocab);
  for (const auto& [token, count] : counts_) {
    if (token >= 0 && token < vocab) {
      logits[static_cast<size_t>(token)] -= static_cast<float>(params_.frequency_penalty * static_cast<double>(count) + params_.presence_penalty);
    }
  }
  int64_t chosen = 0;
  if (params_.temperature == 0.0 || params_.top_k == 1) {
    chosen = std::max_element(logits.begin(), logits.end()) - logits.begin();
  } else {
    const float max = *std::max_element(logits.begin(), logits.end());
    const auto weight = [&](int64_t token) {
      return std::exp(static_cast<double>(logits[static_cast<size_t>(token)] - max) / params_.temperature);
    };
    std::vector<int64_t> candidates;
    double normaliser = 0;
    if (params_.top_k > 0) {
      candidates = top_tokens(logits, params_.top_k);
      for (const int64_t t : candidates) normaliser += weight(t);
    } else {
      for (int64_t t = 0; t < vocab; ++t) normaliser += weight(t);
      if (params_.top_p >= 1.0) {
        candidates.resize(static_cast<size_t>(vocab));  // plain sampling needs no order
        std::iota(candidates.begin(), candidates.end(), 0);
      } else {
        // Top-p rarely needs more than the best 1024 tokens; sort those first.
        candidates = top_tokens(logits, 1024);
        double mass = 0;
        for (const int64_t t : candidates) mass += weight(t);
        if (mass < params_.top_p * normaliser) candidates = top_tokens(logits, vocab);
      }
    }
    std::vector<double> probs;
    double mass = 0;
    for (const int64_t t : candidates) {
      probs.push_back(weight(t) / normaliser);
      mass += probs.back();
      if (mass >= params_.top_p) break;  // the smallest set holding top_p of the mass
    }
    candidates.resize(probs.size());
    const double u = static_cast<double>(rng_() >> 11) * 0x1.0p-53 * mass;
    double acc = 0;
    chosen = candidates.back();
    for (size_t i = 0; i < candidates.size(); ++i) {
      acc += probs[i];
      if (u < acc) {
        chosen = candidates[i];
        break;
      }
    }
  }
  return {chosen, log_softmax_at(raw, vocab, chosen)};
}

}  // namespace t2::engine
