// Next-token choice for a batch of logits rows on the logits' own device, so a
// decode step copies back token ids and logprobs instead of whole rows. It
// owns the device half of sampling: penalties, greedy, temperature, top-k,
// top-p and the draw, with the same distribution as Sampler::sample, plus the
// logprobs, top logprobs and finiteness of each row, all returned in one
// device-to-host copy. Pure ATen ops, so the CPU runs the code the GPU runs,
// but for batches all greedy without penalties or top logprobs: on CUDA one
// kernel takes those (src/engine/cuda/greedy_pick.cu).
//
// Draws are counter-based: a row's uniforms are a hash of (seed, counter,
// token id), so its token depends on nothing else in the batch, and a
// sequence's tokens are reproducible from its seed. They are not the host
// Sampler's mt19937_64 stream: the two paths agree in distribution, not token
// for token.
#pragma once

#include <cstdint>
#include <unordered_map>
#include <utility>
#include <vector>

#include <ATen/core/Tensor.h>

#include "t2/engine/sampler.hpp"

namespace t2::engine {

// What one logits row asks for.
struct DeviceSampleRow {
  SamplingParams params;  // temperature 0 or top_k 1: greedy (after penalties)
  uint64_t seed = 0;      // the sequence's stream (Sampler::stream_seed)
  uint64_t counter = 0;   // tokens generated so far, so each step draws afresh
  const std::unordered_map<int64_t, int64_t>* counts = nullptr;  // generated tokens for the penalties; may be null
  int top_logprobs = 0;   // 0..20
};

// Per row, in the rows' order.
struct DeviceSamples {
  std::vector<Sample> samples;
  std::vector<std::vector<std::pair<int64_t, float>>> top;  // its top_logprobs most likely tokens, first the likeliest
  std::vector<bool> finite;  // all its logits finite; its sample means nothing otherwise
};

// `logits` is [rows.size(), vocab], float32 (others are converted), on any device.
DeviceSamples sample_on_device(const at::Tensor& logits, const std::vector<DeviceSampleRow>& rows);

}  // namespace t2::engine
