#include "t2/engine/device_sampler.hpp"

#include <algorithm>
#include <limits>
#include <optional>
#include <tuple>

#include <ATen/ATen.h>

#include "t2/common/errors.hpp"

#ifdef T2_CUDA_KERNELS
#include "../model/cuda/launch.hpp"
#include "cuda/greedy_pick_kernel.hpp"
#endif

namespace t2::engine {
namespace {

// splitmix64 (Steele, Lea and Flood): the state's increment and the output mix's multipliers.
constexpr uint64_t kGolden = 0x9E3779B97F4A7C15ULL;
constexpr uint64_t kMix1 = 0xBF58476D1CE4E5B9ULL;
constexpr uint64_t kMix2 = 0x94D049BB133111EBULL;

// The next output of a splitmix64 generator whose state is `state`.
uint64_t splitmix64(uint64_t state) {
  uint64_t z = state + kGolden;
  z = (z ^ (z >> 30)) * kMix1;
  z = (z ^ (z >> 27)) * kMix2;
  return z ^ (z >> 31);
}

// The same 64 bits as an int64, the widest integer ATen computes in (its int64 arithmetic wraps).
int64_t as_int64(uint64_t bits) { return static_cast<int64_t>(bits); }

// A logical right shift: ATen's >> on int64 copies the sign bit, so the copies are masked off.
at::Tensor shift_right(const at::Tensor& x, int bits) {
  return at::bitwise_and(at::bitwise_right_shift(x, bits), as_int64(~uint64_t{0} >> bits));
}

// splitmix64 of every element, bit for bit the host function above.
at::Tensor splitmix64(const at::Tensor& state) {
  at::Tensor z = state + as_int64(kGolden);
  z = at::bitwise_xor(z, shift_right(z, 30)) * as_int64(kMix1);
  z = at::bitwise_xor(z, shift_right(z, 27)) * as_int64(kMix2);
  return at::bitwise_xor(z, shift_right(z, 31));
}

// Host values onto `device` without waiting for it: a blocking copy would wait
// for the forward still queued there, and the step's one wait is the copy back.
template <typename T>
at::Tensor to_device(const std::vector<T>& values, const at::Device& device) {
  const at::Tensor host = at::tensor(values);
  return device.is_cpu() ? host : host.pin_memory().to(device, /*non_blocking=*/true);
}

bool is_greedy(const SamplingParams& p) { return p.temperature == 0.0 || p.top_k == 1; }

// Frequency and presence penalties on each row's generated tokens, as
// Sampler::sample applies them; `raw` itself when no row has any.
at::Tensor penalise(const at::Tensor& raw, const std::vector<DeviceSampleRow>& rows) {
  const int64_t vocab = raw.size(1);
  std::vector<int64_t> row_ids, token_ids;
  std::vector<float> offsets;
  for (size_t r = 0; r < rows.size(); ++r) {
    const SamplingParams& p = rows[r].params;
    if (rows[r].counts == nullptr || (p.presence_penalty == 0.0 && p.frequency_penalty == 0.0)) continue;
    for (const auto& [token, count] : *rows[r].counts) {
      if (token < 0 || token >= vocab) continue;
      row_ids.push_back(static_cast<int64_t>(r));
      token_ids.push_back(token);
      offsets.push_back(-static_cast<float>(p.frequency_penalty * static_cast<double>(count) + p.presence_penalty));
    }
  }
  if (offsets.empty()) return raw;
  const at::Device device = raw.device();
  at::Tensor penalised = raw.clone();
  penalised.index_put_({to_device(row_ids, device), to_device(token_ids, device)}, to_device(offsets, device),
                       /*accumulate=*/true);
  return penalised;
}

// Gumbel noise per (row, token): token t's uniform is output t + 1 of a
// splitmix64 generator started at its row's state. Added to log-probabilities,
// its argmax draws a token with exactly those probabilities.
at::Tensor gumbel_noise(const at::Tensor& row_states, int64_t vocab) {
  const at::Tensor tokens = at::arange(vocab, row_states.options());
  const at::Tensor bits = splitmix64(row_states.unsqueeze(1) + tokens * as_int64(kGolden));
  // The top 52 bits, centred in their cell: (k + 0.5) / 2^52 is exact in a double and never 0 or 1.
  const at::Tensor uniform = (shift_right(bits, 12).to(at::kDouble) + 0.5) * 0x1.0p-52;
  return uniform.log().neg().log().neg().to(at::kFloat);
}

// The tokens top-k and then top-p keep, chosen as Sampler::sample chooses
// them: ranked by penalised logit (ties: lowest id first), the best k
// renormalised, then the shortest prefix of those whose mass reaches top_p,
// the token that crosses it included.
at::Tensor kept_tokens(const at::Tensor& penalised, const at::Tensor& log_probs, const at::Tensor& top_k,
                       const at::Tensor& top_p) {
  const int64_t vocab = penalised.size(1);
  const at::Tensor order = std::get<1>(penalised.sort(/*stable=*/true, /*dim=*/-1, /*descending=*/true));
  const at::Tensor rank = at::arange(vocab, order.options());
  const at::Tensor in_top_k = rank.unsqueeze(0) < top_k.unsqueeze(1);
  // In double, like the host, so the top-p boundary falls where the host's does.
  at::Tensor probs = log_probs.gather(1, order).to(at::kDouble).exp().masked_fill(in_top_k.logical_not(), 0.0);
  probs = probs / probs.sum(-1, /*keepdim=*/true);
  const at::Tensor mass_before = at::constant_pad_nd(probs.cumsum(-1).narrow(1, 0, vocab - 1), {1, 0}, 0.0);
  const at::Tensor kept_ranks = in_top_k.logical_and(mass_before < top_p.unsqueeze(1));
  return at::zeros_like(kept_ranks).scatter_(1, order, kept_ranks);
}

// A token per row of `penalised`, none of them greedy: temperature, top-k and
// top-p, then the Gumbel-max draw over the kept tokens.
at::Tensor draw(const at::Tensor& penalised, const std::vector<const DeviceSampleRow*>& rows) {
  const int64_t vocab = penalised.size(1);
  std::vector<float> temperatures;
  std::vector<int64_t> states;
  std::vector<int64_t> filtered, top_ks;  // rows that top-k or top-p restricts, and their k
  std::vector<double> top_ps;
  for (size_t i = 0; i < rows.size(); ++i) {
    const SamplingParams& p = rows[i]->params;
    temperatures.push_back(static_cast<float>(p.temperature));
    states.push_back(as_int64(splitmix64(splitmix64(rows[i]->seed) ^ rows[i]->counter)));
    const int64_t top_k = p.top_k > 0 && p.top_k < vocab ? p.top_k : vocab;
    if (top_k < vocab || p.top_p < 1.0) {
      filtered.push_back(static_cast<int64_t>(i));
      top_ks.push_back(top_k);
      top_ps.push_back(p.top_p);
    }
  }
  const at::Device device = penalised.device();
  const at::Tensor log_probs = (penalised / to_device(temperatures, device).unsqueeze(1)).log_softmax(-1);
  at::Tensor scores = log_probs + gumbel_noise(to_device(states, device), vocab);
  // Only the restricted rows pay for the sort.
  if (!filtered.empty()) {
    const at::Tensor index = to_device(filtered, device);
    const at::Tensor kept = kept_tokens(penalised.index_select(0, index), log_probs.index_select(0, index),
                                        to_device(top_ks, device), to_device(top_ps, device));
    scores.index_copy_(0, index, scores.index_select(0, index).masked_fill(kept.logical_not(),
                                                                           -std::numeric_limits<float>::infinity()));
  }
  return scores.argmax(-1);
}

// The host table's columns (token, logprob, finite) for rows all greedy
// without penalties or top logprobs, in one kernel on CUDA; none elsewhere.
#ifdef T2_CUDA_KERNELS
std::optional<at::Tensor> greedy_table(const at::Tensor& raw) {
  if (!raw.is_cuda() || raw.stride(1) != 1) return std::nullopt;
  const at::Tensor table = at::empty({raw.size(0), 3}, raw.options().dtype(at::kDouble));
  model::cuda::check_launch(cuda::launch_greedy_pick(raw.data_ptr<float>(), raw.size(0), raw.size(1), raw.stride(0),
                                                     table.data_ptr<double>(), model::cuda::stream_of(raw)),
                            "greedy pick kernel");
  return table;
}
#else
std::optional<at::Tensor> greedy_table(const at::Tensor&) { return std::nullopt; }
#endif

}  // namespace

DeviceSamples sample_on_device(const at::Tensor& logits, const std::vector<DeviceSampleRow>& rows) {
  const auto batch = static_cast<int64_t>(rows.size());
  if (logits.dim() != 2 || logits.size(0) != batch) throw Error("sample_on_device: logits must be [rows, vocab]");
  DeviceSamples out;
  if (batch == 0) return out;
  const at::Tensor raw = logits.to(at::kFloat);
  const int64_t vocab = raw.size(1);
  const at::Device device = raw.device();

  int top_k = 0;
  for (const DeviceSampleRow& row : rows) top_k = std::max(top_k, row.top_logprobs);
  top_k = static_cast<int>(std::min<int64_t>(top_k, vocab));
  const at::Tensor penalised = penalise(raw, rows);
  std::vector<int64_t> drawing;
  std::vector<const DeviceSampleRow*> drawing_rows;
  for (int64_t r = 0; r < batch; ++r) {
    if (is_greedy(rows[static_cast<size_t>(r)].params)) continue;
    drawing.push_back(r);
    drawing_rows.push_back(&rows[static_cast<size_t>(r)]);
  }
  std::optional<at::Tensor> device_table;
  if (drawing.empty() && top_k == 0 && penalised.is_same(raw)) device_table = greedy_table(raw);
  if (!device_table) {
    at::Tensor chosen = penalised.argmax(-1);  // the greedy rows' tokens; ties go to the lowest id, as on the host
    if (!drawing.empty()) {
      const at::Tensor index = to_device(drawing, device);
      chosen.index_copy_(0, index, draw(penalised.index_select(0, index), drawing_rows));
    }
    // Everything the host needs in one tensor, so the step waits for the device once. Doubles hold
    // token ids and float32 values exactly.
    const at::Tensor logprob = raw.gather(1, chosen.unsqueeze(1)).squeeze(1) - raw.logsumexp(-1);
    std::vector<at::Tensor> columns = {chosen.unsqueeze(1), logprob.unsqueeze(1), at::isfinite(raw).all(-1).unsqueeze(1)};
    if (top_k > 0) {
      const auto [values, indices] = raw.log_softmax(-1).topk(top_k, -1);
      columns.push_back(indices);
      columns.push_back(values);
    }
    for (at::Tensor& column : columns) column = column.to(at::kDouble);
    device_table = at::cat(columns, 1);
  }
  const at::Tensor packed = device_table->to(at::kCPU).contiguous();

  const auto table = packed.accessor<double, 2>();
  for (int64_t r = 0; r < batch; ++r) {
    out.samples.push_back({static_cast<int64_t>(table[r][0]), static_cast<float>(table[r][1])});
    out.finite.push_back(table[r][2] != 0.0);
    std::vector<std::pair<int64_t, float>> top;
    const int wanted = std::min(rows[static_cast<size_t>(r)].top_logprobs, top_k);
    for (int k = 0; k < wanted; ++k) {
      top.emplace_back(static_cast<int64_t>(table[r][3 + k]), static_cast<float>(table[r][3 + top_k + k]));
    }
    out.top.push_back(std::move(top));
  }
  return out;
}

}  // namespace t2::engine
