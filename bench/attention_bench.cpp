// t2::model::decode_attention (the split-K decode kernel, reading each row's
// used keys in place from the [slots, capacity, kv_heads, head_dim] cache)
// against SDPA (flash / memory-efficient) on the same keys sliced to the used
// length, and against FlashAttention's varlen kernel on the cache in place;
// Llama-3-8B head layout (32 query heads, 8 KV heads, 128), bf16, one query token per row; the effective bandwidth on the K/V bytes read,
// timed in CUDA graphs as a decode step runs them; one JSON line per case.
//   t2_attention_bench [ITERATIONS [ROWS:LENGTH:CAPACITY ...]]   (on a CUDA machine; default: the cases below)
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <iostream>
#include <vector>

#include <ATen/ATen.h>
#include <ATen/cuda/CUDAGraph.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <c10/core/InferenceMode.h>
#include <nlohmann/json.hpp>

#include "t2/model/decode_attention.hpp"
#include "t2/model/weights.hpp"

namespace {

// GPU time per call, from CUDA graphs of kCallsPerGraph calls each (as a
// decode step replays them), so host launch costs do not hide the kernels'.
template <typename F>
double seconds_per_call(const t2::model::Placement& placement, int iterations, F&& call) {
  constexpr int kCallsPerGraph = 20;
  at::cuda::CUDAGraph graph;
  placement.synchronize();  // the inputs were made on the default stream; the capture runs on a side one
  {
    const c10::cuda::CUDAStreamGuard stream(c10::cuda::getStreamFromPool());
    call();  // outside the capture: first-call set-up
    graph.capture_begin();
    for (int i = 0; i < kCallsPerGraph; ++i) call();
    graph.capture_end();
    c10::cuda::getCurrentCUDAStream().synchronize();
  }
  graph.replay();
  placement.synchronize();
  const int replays = std::max(1, iterations / kCallsPerGraph);
  const auto start = std::chrono::steady_clock::now();
  for (int i = 0; i < replays; ++i) graph.replay();
  placement.synchronize();
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count() / (replays * kCallsPerGraph);
}

}  // namespace

int main(int argc, char** argv) {
  if (!at::hasCUDA()) {
    std::cerr << "t2_attention_bench needs a CUDA device\n";
    return 2;
  }
  const int iterations = argc > 1 ? std::stoi(argv[1]) : 200;
  c10::InferenceMode guard;
  at::manual_seed(0);
  const t2::model::Placement placement{at::Device(at::kCUDA, 0), at::kBFloat16};
  const auto options = at::TensorOptions().device(placement.device).dtype(placement.dtype);
  const int64_t H = 32, KV = 8, D = 128;
  const double scale = 1.0 / std::sqrt(static_cast<double>(D));
  struct Case {
    int64_t rows, length, capacity;  // capacity: the cache's positions per slot (a server's is the model's context)
  };
  std::vector<Case> cases = {{1, 384, 386},      {16, 384, 386},   {64, 384, 386},   {1, 4096, 4098},
                                   {16, 2176, 2178},   {64, 2176, 2178}, {1, 384, 8192},   {64, 384, 8192},
                                   {16, 2176, 8192}};
  if (argc > 2) cases.clear();
  for (int i = 2; i < argc; ++i) {
    Case c{};
    if (std::sscanf(argv[i], "%ld:%ld:%ld", &c.rows, &c.length, &c.capacity) != 3 || c.rows < 1 || c.length < 1 ||
        c.capacity < c.length) {
      std::cerr << "t2_attention_bench: a case is ROWS:LENGTH:CAPACITY with 1 <= LENGTH <= CAPACITY, not " << argv[i] << "\n";
      return 2;
    }
    cases.push_back(c);
  }
  for (const Case& c : cases) {
    const at::Tensor k = at::randn({c.rows, c.capacity, KV, D}, options);
    const at::Tensor v = at::randn({c.rows, c.capacity, KV, D}, options);
    const at::Tensor q = at::randn({c.rows, H, D}, options);
    const auto long_options = at::TensorOptions().device(placement.device).dtype(at::kLong);
    const at::Tensor slots = at::arange(c.rows, long_options);
    const at::Tensor lengths = at::full({c.rows}, c.length, long_options);
    const auto ours_call = [&] { return t2::model::decode_attention(q, k, v, slots, lengths, std::nullopt, scale); };
    const double t2_s = seconds_per_call(placement, iterations, ours_call);
    // The peer reads the used keys as [rows, kv_heads, length, head_dim] views of the cache.
    const at::Tensor used_k = k.narrow(1, 0, c.length).transpose(1, 2);
    const at::Tensor used_v = v.narrow(1, 0, c.length).transpose(1, 2);
    const at::Tensor q4 = q.unsqueeze(2);  // [rows, heads, 1, head_dim]
    const auto peer_call = [&] {
      return at::scaled_dot_product_attention(q4, used_k, used_v, {}, 0.0, false, scale, /*enable_gqa=*/true);
    };
    const double sdpa_s = seconds_per_call(placement, iterations, peer_call);
    // A second peer on t2's own problem: FlashAttention's variable-length kernel reading the cache in
    // place, each row's keys starting at its slot's offset of the flat cache, seqused_k its length.
    const auto i32 = at::TensorOptions().device(placement.device).dtype(at::kInt);
    const at::Tensor cu_q = at::arange(c.rows + 1, i32);
    const at::Tensor cu_k = at::cat({slots.to(at::kInt) * c.capacity, at::full({1}, c.rows * c.capacity, i32)});
    const at::Tensor used = lengths.to(at::kInt);
    const at::Tensor flat_k = k.view({c.rows * c.capacity, KV, D}), flat_v = v.view({c.rows * c.capacity, KV, D});
    const auto varlen_call = [&] {
      return std::get<0>(at::_flash_attention_forward(q, flat_k, flat_v, cu_q, cu_k, 1, c.capacity, 0.0, false, false, scale,
                                                      std::nullopt, std::nullopt, used));
    };
    const double varlen_s = seconds_per_call(placement, iterations, varlen_call);
    const at::Tensor ours = ours_call().view({c.rows, H, D}).to(at::kFloat);
    const at::Tensor peer = peer_call().squeeze(2).to(at::kFloat);
    const at::Tensor varlen = varlen_call().view({c.rows, H, D}).to(at::kFloat);
    const double bytes = 2.0 * static_cast<double>(c.rows * c.length * KV * D) * static_cast<double>(k.element_size());
    std::cout << nlohmann::json{{"rows", c.rows},
                                {"length", c.length},
                                {"capacity", c.capacity},
                                {"t2_us", t2_s * 1e6},
                                {"sdpa_us", sdpa_s * 1e6},
                                {"t2_tb_per_s", bytes / t2_s / 1e12},
                                {"sdpa_tb_per_s", bytes / sdpa_s / 1e12},
                                {"max_abs_diff", (ours - peer).abs().max().item<double>()},
                                {"flash_varlen_us", varlen_s * 1e6},
                                {"flash_varlen_tb_per_s", bytes / varlen_s / 1e12},
                                {"flash_varlen_max_abs_diff", (varlen - peer).abs().max().item<double>()}}
                     .dump()
              << std::endl;
  }
  return 0;
}
