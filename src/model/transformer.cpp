#include "t2/model/transformer.hpp"

#include <algorithm>
#include <cmath>

#include "t2/common/errors.hpp"

namespace t2::model {

// Everything about where the tokens of one call sit: positions for RoPE, the
// attention mask over keys, and (with a cache) where K/V are written and read.
struct Transformer::Attention {
  at::Tensor cos, sin;   // [B, T, 1, D] in the compute dtype
  at::Tensor mask;       // [B, 1, T, L] bool, true = may attend
  // Cache addressing (undefined without a cache):
  at::Tensor valid_rows;  // flat indices into [B * T] of real tokens; undefined when none is padding
  at::Tensor write_rows;  // flat indices into [slots * capacity] for those tokens
  at::Tensor read_slots;  // [B] slots to read, or undefined when they are first_slot.. contiguous
  int64_t first_slot = 0;
  int64_t key_length = 0;  // L
};

at::Tensor rope_inverse_frequencies(const ModelConfig& c) {
  const auto exponents = at::arange(0, c.head_dim, 2, at::kFloat).div(static_cast<double>(c.head_dim));
  at::Tensor inv_freq = at::pow(c.rope_theta, exponents).reciprocal();
  const RopeScaling& rs = c.rope_scaling;
  if (rs.type == RopeScaling::Type::kLinear) {
    inv_freq = inv_freq / rs.factor;
  } else if (rs.type == RopeScaling::Type::kLlama3) {
    // Llama 3.1: long wavelengths are slowed by `factor`, short ones kept,
    // the band between interpolated smoothly.
    const double old_context = static_cast<double>(rs.original_max_position_embeddings);
    const double low_freq_wavelen = old_context / rs.low_freq_factor;
    const double high_freq_wavelen = old_context / rs.high_freq_factor;
    const at::Tensor wavelen = 2 * M_PI / inv_freq;
    at::Tensor scaled = at::where(wavelen > low_freq_wavelen, inv_freq / rs.factor, inv_freq);
    const at::Tensor smooth = (old_context / wavelen - rs.low_freq_factor) / (rs.high_freq_factor - rs.low_freq_factor);
    const at::Tensor smoothed = (1 - smooth) * scaled / rs.factor + smooth * scaled;
    const at::Tensor is_medium = (wavelen >= high_freq_wavelen).logical_and(wavelen <= low_freq_wavelen);
    inv_freq = at::where(is_medium, smoothed, scaled);
  }
  return inv_freq;
}

Transformer::Transformer(ModelConfig config, ModelWeights weights, Placement placement)
    : config_(std::move(config)), weights_(std::move(weights)), placement_(placement) {
  const at::Tensor inv_freq = rope_inverse_frequencies(config_);
  const at::Tensor positions = at::arange(config_.max_position_embeddings, at::kFloat);
  const at::Tensor freqs = at::outer(positions, inv_freq);
  const at::Tensor angles = at::cat({freqs, freqs}, -1);
  rope_cos_ = angles.cos().to(placement_.device);
  rope_sin_ = angles.sin().to(placement_.device);
}

Transformer Transformer::load(const std::filesystem::path& model_dir, const Placement& placement) {
  const auto config_path = model_dir / "config.json";
  if (!std::filesystem::exists(config_path)) throw LoadError(model_dir.string() + ": no config.json (not a model folder)");
  ModelConfig config = ModelConfig::from_file(config_path);
  ModelWeights weights = ModelWeights::load(model_dir, config, placement);
  return Transformer(std::move(config), std::move(weights), placement);
}

at::Tensor Transformer::rms_norm(const at::Tensor& x, const at::Tensor& weight) const {
  // One fused kernel on CUDA; the same float32 math as HF's LlamaRMSNorm.
  return at::rms_norm(x, {config_.hidden_size}, weight, config_.rms_norm_eps);
}

namespace {

at::Tensor rotate_half(const at::Tensor& x) {
  const int64_t half = x.size(-1) / 2;
  return at::cat({-x.narrow(-1, half, half), x.narrow(-1, 0, half)}, -1);
}

at::Tensor apply_rope(const at::Tensor& x, const at::Tensor& cos, const at::Tensor& sin) {
  return x * cos + rotate_half(x) * sin;
}

at::Tensor linear(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& bias) {
  return bias.defined() ? at::linear(x, weight, bias) : at::linear(x, weight);
}

}  // namespace

at::Tensor Transformer::decode_layers(at::Tensor hidden, const Attention& attn, const ProjectionSet& w,
                                      KVCache* cache) const {
  const int64_t B = hidden.size(0);
  const int64_t T = hidden.size(1);
  const int64_t H = config_.num_heads;
  const int64_t KV = config_.num_kv_heads;
  const int64_t G = H / KV;
  const int64_t D = config_.head_dim;
  const int64_t L = attn.key_length;
  // Grouped-query attention without copying K/V: the G query heads that share a
  // KV head are stacked along the query axis, so the mask repeats G times.
  const at::Tensor mask = attn.mask.unsqueeze(2).expand({B, 1, G, T, L}).reshape({B, 1, G * T, L});
  const double scale = 1.0 / std::sqrt(static_cast<double>(D));

  for (int64_t l = 0; l < config_.num_layers; ++l) {
    const LayerWeights& lw = weights_.layers[static_cast<size_t>(l)];
    const auto bias = [&](Projection p) -> const at::Tensor& { return lw.bias[static_cast<size_t>(p)]; };
    const at::Tensor x = rms_norm(hidden, lw.input_norm);
    at::Tensor q = linear(x, w.get(l, Projection::kQ), bias(Projection::kQ)).view({B, T, H, D});
    at::Tensor k = linear(x, w.get(l, Projection::kK), bias(Projection::kK)).view({B, T, KV, D});
    at::Tensor v = linear(x, w.get(l, Projection::kV), bias(Projection::kV)).view({B, T, KV, D});
    q = apply_rope(q, attn.cos, attn.sin);
    k = apply_rope(k, attn.cos, attn.sin);

    at::Tensor keys, values;  // [B, KV, L, D]
    if (cache != nullptr) {
      at::Tensor& cache_k = cache->keys(l);
      at::Tensor& cache_v = cache->values(l);
      const int64_t rows = cache_k.size(0) * cache_k.size(1);
      const auto real_rows = [&](const at::Tensor& x) {
        const at::Tensor flat = x.reshape({B * T, KV, D});
        return attn.valid_rows.defined() ? flat.index_select(0, attn.valid_rows) : flat;
      };
      cache_k.view({rows, KV, D}).index_copy_(0, attn.write_rows, real_rows(k));
      cache_v.view({rows, KV, D}).index_copy_(0, attn.write_rows, real_rows(v));
      if (attn.read_slots.defined()) {
        keys = cache_k.narrow(1, 0, L).index_select(0, attn.read_slots);
        values = cache_v.narrow(1, 0, L).index_select(0, attn.read_slots);
      } else {
        keys = cache_k.narrow(0, attn.first_slot, B).narrow(1, 0, L);
        values = cache_v.narrow(0, attn.first_slot, B).narrow(1, 0, L);
      }
      keys = keys.transpose(1, 2);
      values = values.transpose(1, 2);
    } else {
      keys = k.transpose(1, 2);
      values = v.transpose(1, 2);
    }
    const at::Tensor grouped_q = q.view({B, T, KV, G, D}).permute({0, 2, 3, 1, 4}).reshape({B, KV, G * T, D});
    const at::Tensor out = at::scaled_dot_product_attention(grouped_q, keys, values, mask, 0.0, false, scale)
                               .view({B, KV, G, T, D})
                               .permute({0, 3, 1, 2, 4})
                               .reshape({B, T, H * D});
    hidden = hidden + linear(out, w.get(l, Projection::kO), bias(Projection::kO));

    const at::Tensor y = rms_norm(hidden, lw.post_attention_norm);
    const at::Tensor gate = linear(y, w.get(l, Projection::kGate), bias(Projection::kGate));
    const at::Tensor up = linear(y, w.get(l, Projection::kUp), bias(Projection::kUp));
    hidden = hidden + linear(at::silu(gate) * up, w.get(l, Projection::kDown), bias(Projection::kDown));
  }
  return rms_norm(hidden, weights_.final_norm);
}

namespace {

// mask[b, t, j] = key j is visible to query t of sequence b, whose first new
// token sits at absolute position start[b] and which has count[b] new tokens.
at::Tensor attention_mask(const at::Tensor& start, const at::Tensor& count, int64_t T, int64_t L,
                          std::optional<int64_t> window) {
  const auto device = start.device();
  const at::Tensor query_pos = start.view({-1, 1, 1}) + at::arange(T, at::TensorOptions().dtype(at::kLong).device(device)).view({1, -1, 1});
  const at::Tensor key_pos = at::arange(L, at::TensorOptions().dtype(at::kLong).device(device)).view({1, 1, -1});
  at::Tensor mask = (key_pos <= query_pos).logical_and(key_pos < (start + count).view({-1, 1, 1}));
  if (window) mask = mask.logical_and(key_pos > query_pos - *window);
  return mask.unsqueeze(1);
}

}  // namespace

at::Tensor Transformer::forward(const std::vector<Chunk>& chunks, KVCache& cache, const ProjectionSet& projections,
                                LogitsScope scope) const {
  if (chunks.empty()) throw InvalidArgument("chunks", "forward needs at least one sequence");
  const auto B = static_cast<int64_t>(chunks.size());
  int64_t T = 0;
  int64_t L = 0;
  std::vector<int64_t> starts, counts, slots;
  for (const Chunk& chunk : chunks) {
    cache.check_in_use(chunk.slot);
    const int64_t start = cache.length(chunk.slot);
    const auto n = static_cast<int64_t>(chunk.tokens.size());
    if (n == 0) throw InvalidArgument("tokens", "a chunk has no tokens");
    if (start + n > cache.capacity() || start + n > config_.max_position_embeddings) {
      throw InvalidArgument("tokens", "sequence of " + std::to_string(start + n) + " tokens exceeds the context of " +
                                          std::to_string(std::min(cache.capacity(), config_.max_position_embeddings)));
    }
    starts.push_back(start);
    counts.push_back(n);
    slots.push_back(chunk.slot);
    T = std::max(T, n);
    L = std::max(L, start + n);
  }

  // Right-padded token and position grids; padding repeats the last real position.
  std::vector<int64_t> token_grid(static_cast<size_t>(B * T), 0), position_grid(static_cast<size_t>(B * T), 0);
  std::vector<int64_t> valid_rows, write_rows;
  for (int64_t b = 0; b < B; ++b) {
    const auto& tokens = chunks[static_cast<size_t>(b)].tokens;
    for (int64_t t = 0; t < T; ++t) {
      const int64_t i = std::min(t, counts[static_cast<size_t>(b)] - 1);
      token_grid[static_cast<size_t>(b * T + t)] = tokens[static_cast<size_t>(i)];
      position_grid[static_cast<size_t>(b * T + t)] = starts[static_cast<size_t>(b)] + i;
      if (t < counts[static_cast<size_t>(b)]) {
        valid_rows.push_back(b * T + t);
        write_rows.push_back(slots[static_cast<size_t>(b)] * cache.capacity() + starts[static_cast<size_t>(b)] + t);
      }
    }
  }
  for (const int64_t token : token_grid) {
    if (token < 0 || token >= config_.vocab_size) {
      throw InvalidArgument("tokens", "token id " + std::to_string(token) + " is outside the vocabulary of " +
                                          std::to_string(config_.vocab_size));
    }
  }
  const auto long_on_device = at::TensorOptions().dtype(at::kLong);
  const auto to_device = [&](const std::vector<int64_t>& v) {
    return at::tensor(v, long_on_device).to(placement_.device);
  };

  Attention attn;
  const at::Tensor positions = to_device(position_grid).view({B, T});
  attn.cos = rope_cos_.index_select(0, positions.view(-1)).view({B, T, 1, -1}).to(placement_.dtype);
  attn.sin = rope_sin_.index_select(0, positions.view(-1)).view({B, T, 1, -1}).to(placement_.dtype);
  attn.mask = attention_mask(to_device(starts), to_device(counts), T, L, config_.sliding_window);
  // Without padding (every decode step) all rows are real.
  if (static_cast<int64_t>(valid_rows.size()) != B * T) attn.valid_rows = to_device(valid_rows);
  attn.write_rows = to_device(write_rows);
  attn.key_length = L;
  bool contiguous = true;
  for (int64_t b = 1; b < B; ++b) contiguous = contiguous && slots[static_cast<size_t>(b)] == slots[0] + b;
  if (contiguous) {
    attn.first_slot = slots[0];
  } else {
    attn.read_slots = to_device(slots);
  }

  const at::Tensor tokens = to_device(token_grid).view({B, T});
  at::Tensor hidden = decode_layers(at::embedding(weights_.embed_tokens, tokens), attn, projections, &cache);
  for (int64_t b = 0; b < B; ++b) cache.advance(slots[static_cast<size_t>(b)], counts[static_cast<size_t>(b)]);

  if (scope == LogitsScope::kLastToken) {
    std::vector<int64_t> last;
    for (int64_t b = 0; b < B; ++b) last.push_back(b * T + counts[static_cast<size_t>(b)] - 1);
    hidden = hidden.reshape({B * T, -1}).index_select(0, to_device(last));
  }
  return at::linear(hidden, weights_.lm_head).to(at::promote_types(placement_.dtype, at::kFloat));
}

at::Tensor Transformer::forward_full(const at::Tensor& tokens, const std::vector<int64_t>& lengths,
                                     const ProjectionSet& projections) const {
  if (tokens.dim() != 2 || static_cast<int64_t>(lengths.size()) != tokens.size(0)) {
    throw InvalidArgument("tokens", "forward_full needs tokens [B, T] and one length per row");
  }
  const int64_t B = tokens.size(0);
  const int64_t T = tokens.size(1);
  if (T > config_.max_position_embeddings) {
    throw InvalidArgument("tokens", "sequence of " + std::to_string(T) + " tokens exceeds the context of " +
                                        std::to_string(config_.max_position_embeddings));
  }
  const auto long_options = at::TensorOptions().dtype(at::kLong).device(placement_.device);
  Attention attn;
  const at::Tensor positions = at::arange(T, long_options);
  attn.cos = rope_cos_.index_select(0, positions).view({1, T, 1, -1}).to(placement_.dtype);
  attn.sin = rope_sin_.index_select(0, positions).view({1, T, 1, -1}).to(placement_.dtype);
  attn.mask = attention_mask(at::zeros({B}, long_options), at::tensor(lengths, at::kLong).to(placement_.device), T, T,
                             config_.sliding_window);
  attn.key_length = T;
  const at::Tensor hidden = decode_layers(at::embedding(weights_.embed_tokens, tokens.to(placement_.device)), attn,
                                          projections, nullptr);
  return at::linear(hidden, weights_.lm_head).to(at::promote_types(placement_.dtype, at::kFloat));
}

}  // namespace t2::model
