#include "t2/model/transformer.hpp"

#include <algorithm>
#include <cmath>

#include <ATen/core/grad_mode.h>

#include "t2/common/errors.hpp"
#include "t2/model/decode_attention.hpp"
#include "t2/model/fused_ops.hpp"
#include "t2/model/linear.hpp"

namespace t2::model {

// Chunks whose queries attend as one [B, T] grid over keys [0, L): the
// decode tokens of a step form one group, the longer chunks another, so a
// long prompt pads none of the single-token rows.
struct Transformer::AttentionGroup {
  int64_t batch = 0, length = 0, key_length = 0;  // B, T, L
  // Grid cell -> packed token (padding repeats a chunk's last token); undefined
  // when the grid is exactly packed tokens [offset, offset + B * T).
  at::Tensor gather;
  int64_t offset = 0;
  at::Tensor real_cells;     // grid cells holding real tokens (with `gather`)
  at::Tensor real_tokens;    // their packed token indices
  at::Tensor mask;           // [B, 1, G * T, L] bool, true = may attend (G query heads per KV head); undefined: every key
  at::Tensor read_slots;     // [B] cache slots, or undefined when they are first_slot.. contiguous
  int64_t first_slot = 0;
  // Single-token rows on the decode kernel (instead of `mask`): their slots and visible keys.
  at::Tensor kernel_slots, key_lengths;
};

// Everything about where the N packed tokens of one call sit.
struct Transformer::Attention {
  at::Tensor positions;       // [N] int64 on the device
  at::Tensor cos, sin;        // [N, 1, D] in the compute dtype
  at::Tensor write_rows;      // [N] flat indices into [slots * capacity]; undefined without a cache
  std::vector<AttentionGroup> groups;
  int64_t tokens = 0;         // N
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

at::Tensor Transformer::embed(const std::vector<int64_t>& tokens) const {
  for (const int64_t token : tokens) {
    if (token < 0 || token >= config_.vocab_size) {
      throw InvalidArgument("tokens", "token id " + std::to_string(token) + " is outside the vocabulary of " +
                                          std::to_string(config_.vocab_size));
    }
  }
  const at::Tensor ids = at::tensor(tokens, at::TensorOptions().dtype(at::kLong)).to(placement_.device);
  return at::embedding(weights_.embed_tokens, ids);
}

void Transformer::check_embeddings(const at::Tensor& embeddings, int64_t rows) const {
  if (embeddings.dim() != 2 || embeddings.size(0) != rows || embeddings.size(1) != config_.hidden_size) {
    throw InvalidArgument("embeddings", "expected [" + std::to_string(rows) + ", " + std::to_string(config_.hidden_size) +
                                            "] embeddings, got " + c10::str(embeddings.sizes()));
  }
  if (embeddings.scalar_type() != placement_.dtype || embeddings.device() != placement_.device) {
    throw InvalidArgument("embeddings", "embeddings must be " + std::string(c10::toString(placement_.dtype)) + " on " +
                                            placement_.device.str() + ", got " + c10::toString(embeddings.scalar_type()) +
                                            " on " + embeddings.device().str());
  }
}

namespace {

at::Tensor rotate_half(const at::Tensor& x) {
  const int64_t half = x.size(-1) / 2;
  return at::cat({-x.narrow(-1, half, half), x.narrow(-1, 0, half)}, -1);
}

at::Tensor apply_rope(const at::Tensor& x, const at::Tensor& cos, const at::Tensor& sin) {
  return x * cos + rotate_half(x) * sin;
}

}  // namespace

at::Tensor Transformer::attend(int64_t layer, const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                              const Attention& attn, KVCache* cache) const {
  const int64_t N = attn.tokens;
  const int64_t H = config_.num_heads;
  const int64_t D = config_.head_dim;
  at::Tensor out;
  for (const AttentionGroup& g : attn.groups) {
    const int64_t B = g.batch, T = g.length;
    const auto grid = [&](const at::Tensor& x) {
      return (g.gather.defined() ? x.index_select(0, g.gather) : x.narrow(0, g.offset, B * T)).view({B, T, -1, D});
    };
    const at::Tensor o = g.key_lengths.defined()
                             ? decode_attention(grid(q).view({B, H, D}), cache->keys(layer), cache->values(layer),
                                                g.kernel_slots, g.key_lengths, config_.sliding_window, attention_scale())
                             : attend_masked(layer, grid(q), cache ? at::Tensor() : grid(k), cache ? at::Tensor() : grid(v), g, cache);
    if (attn.groups.size() == 1 && !g.gather.defined() && B * T == N) return o;
    if (!out.defined()) out = at::empty({N, H * D}, o.options());
    if (g.gather.defined()) {
      out.index_copy_(0, g.real_tokens, o.index_select(0, g.real_cells));
    } else {
      out.narrow(0, g.offset, B * T).copy_(o);
    }
  }
  return out;
}

at::Tensor Transformer::attend_masked(int64_t layer, const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                      const AttentionGroup& g, KVCache* cache) const {
  const int64_t H = config_.num_heads;
  const int64_t KV = config_.num_kv_heads;
  const int64_t G = H / KV;
  const int64_t D = config_.head_dim;
  const int64_t B = g.batch, T = g.length, L = g.key_length;
  at::Tensor keys = k, values = v;  // [B, L, KV, D]; from the cache when there is one
  if (cache != nullptr) {
    const at::Tensor& cache_k = cache->keys(layer);
    const at::Tensor& cache_v = cache->values(layer);
    if (g.read_slots.defined()) {
      keys = cache_k.narrow(1, 0, L).index_select(0, g.read_slots);
      values = cache_v.narrow(1, 0, L).index_select(0, g.read_slots);
    } else {
      keys = cache_k.narrow(0, g.first_slot, B).narrow(1, 0, L);
      values = cache_v.narrow(0, g.first_slot, B).narrow(1, 0, L);
    }
  }
  // Grouped-query attention without copying K/V: the G query heads that
  // share a KV head are stacked along the query axis.
  const at::Tensor grouped_q = q.view({B, T, KV, G, D}).permute({0, 2, 3, 1, 4}).reshape({B, KV, G * T, D});
  const std::optional<at::Tensor> mask = g.mask.defined() ? std::optional<at::Tensor>(g.mask) : std::nullopt;
  return at::scaled_dot_product_attention(grouped_q, keys.transpose(1, 2), values.transpose(1, 2), mask, 0.0, false,
                                          attention_scale())
      .view({B, KV, G, T, D})
      .permute({0, 3, 1, 2, 4})
      .reshape({B * T, H * D});
}

void Transformer::set_positions(Attention& attn, at::Tensor positions, bool fused) const {
  // The fused RoPE kernel reads the float32 tables by position; the eager ops need them gathered.
  if (!fused) {
    const int64_t N = positions.size(0);
    attn.cos = rope_cos_.index_select(0, positions).view({N, 1, -1}).to(placement_.dtype);
    attn.sin = rope_sin_.index_select(0, positions).view({N, 1, -1}).to(placement_.dtype);
  }
  attn.positions = std::move(positions);
}

void Transformer::write_kv(int64_t layer, const at::Tensor& k, const at::Tensor& v, const Attention& attn, KVCache& cache) const {
  at::Tensor& cache_k = cache.keys(layer);
  at::Tensor& cache_v = cache.values(layer);
  const int64_t rows = cache_k.size(0) * cache_k.size(1);
  cache_k.view({rows, config_.num_kv_heads, config_.head_dim}).index_copy_(0, attn.write_rows, k);
  cache_v.view({rows, config_.num_kv_heads, config_.head_dim}).index_copy_(0, attn.write_rows, v);
}

bool Transformer::uses_fused_ops() const {
  // Inference only: the fused steps write through raw pointers, so training (autograd) takes the eager ops.
  return fused_ops_available(placement_.device, placement_.dtype) && !at::GradMode::is_enabled();
}

at::Tensor Transformer::decode_layers(at::Tensor hidden, const Attention& attn, const AdapterBatch& adapters,
                                      KVCache* cache) const {
  const int64_t N = attn.tokens;
  const int64_t H = config_.num_heads;
  const int64_t KV = config_.num_kv_heads;
  const int64_t D = config_.head_dim;
  if (cache != nullptr && uses_fused_ops()) return decode_layers_fused(std::move(hidden), attn, adapters, *cache);
  for (int64_t l = 0; l < config_.num_layers; ++l) {
    const LayerWeights& lw = weights_.layers[static_cast<size_t>(l)];
    const auto project = [&](Projection p, const at::Tensor& x) {
      return adapters.project(l, p, x, lw.bias[static_cast<size_t>(p)]);
    };
    const at::Tensor x = rms_norm(hidden, lw.input_norm);
    const std::vector<at::Tensor> qkv = adapters.project_group(l, ProjectionGroup::kQKV, x, lw);
    const at::Tensor q = apply_rope(qkv[0].view({N, H, D}), attn.cos, attn.sin);
    const at::Tensor k = apply_rope(qkv[1].view({N, KV, D}), attn.cos, attn.sin);
    const at::Tensor v = qkv[2].view({N, KV, D});
    if (cache != nullptr) write_kv(l, k, v, attn, *cache);
    hidden = hidden + project(Projection::kO, attend(l, q, k, v, attn, cache));

    const at::Tensor y = rms_norm(hidden, lw.post_attention_norm);
    const std::vector<at::Tensor> gate_up = adapters.project_group(l, ProjectionGroup::kGateUp, y, lw);
    hidden = hidden + project(Projection::kDown, at::silu(gate_up[0]) * gate_up[1]);
  }
  return rms_norm(hidden, weights_.final_norm);
}

at::Tensor Transformer::decode_layers_fused(at::Tensor hidden, const Attention& attn, const AdapterBatch& adapters,
                                            KVCache& cache) const {
  const int64_t N = attn.tokens;
  const int64_t KV = config_.num_kv_heads;
  const int64_t D = config_.head_dim;
  const double eps = config_.rms_norm_eps;
  hidden = hidden.contiguous();  // the residual stream, updated in place
  at::Tensor x = add_rms_norm(hidden, at::Tensor(), weights_.layers[0].input_norm, eps);
  for (int64_t l = 0; l < config_.num_layers; ++l) {
    const LayerWeights& lw = weights_.layers[static_cast<size_t>(l)];
    const auto project = [&](Projection p, const at::Tensor& in) {
      return adapters.project(l, p, in, lw.bias[static_cast<size_t>(p)]);
    };
    const std::vector<at::Tensor> qkv = adapters.project_group(l, ProjectionGroup::kQKV, x, lw);
    const at::Tensor q = rope_and_cache_write(qkv[0], qkv[1], qkv[2], rope_cos_, rope_sin_, attn.positions, attn.write_rows,
                                              cache.keys(l), cache.values(l));
    // The cache holds k and v now; only the masked (prefill) path reads them, from there.
    const at::Tensor k = qkv[1].view({N, KV, D}), v = qkv[2].view({N, KV, D});
    const at::Tensor y = add_rms_norm(hidden, project(Projection::kO, attend(l, q, k, v, attn, &cache)), lw.post_attention_norm, eps);
    const std::vector<at::Tensor> gate_up = adapters.project_group(l, ProjectionGroup::kGateUp, y, lw);
    const at::Tensor mlp = project(Projection::kDown, silu_mul(gate_up[0], gate_up[1]));
    const bool last = l + 1 == config_.num_layers;
    x = add_rms_norm(hidden, mlp, last ? weights_.final_norm : weights_.layers[static_cast<size_t>(l + 1)].input_norm, eps);
  }
  return x;
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

// The [B, 1, G*T, L] mask of a group, its G query heads per KV head stacked along the query axis.
at::Tensor grouped_mask(const at::Tensor& mask, int64_t G) {
  const int64_t B = mask.size(0), T = mask.size(2), L = mask.size(3);
  return mask.unsqueeze(2).expand({B, 1, G, T, L}).reshape({B, 1, G * T, L});
}

}  // namespace

at::Tensor Transformer::forward(const std::vector<Chunk>& chunks, KVCache& cache, const AdapterBatch& adapters) const {
  if (chunks.empty()) throw InvalidArgument("chunks", "forward needs at least one sequence");
  const auto B = static_cast<int64_t>(chunks.size());
  std::vector<int64_t> starts, offsets;
  int64_t N = 0;
  for (const Chunk& chunk : chunks) {
    cache.check_in_use(chunk.slot);
    const int64_t start = cache.length(chunk.slot);
    const auto n = static_cast<int64_t>(chunk.tokens.size());
    if (n == 0) throw InvalidArgument("tokens", "a chunk has no tokens");
    if (chunk.logits < 0 || chunk.logits > n) throw InvalidArgument("logits", "a chunk asks for logits of tokens it lacks");
    if (start + n > cache.capacity() || start + n > config_.max_position_embeddings) {
      throw InvalidArgument("tokens", "sequence of " + std::to_string(start + n) + " tokens exceeds the context of " +
                                          std::to_string(std::min(cache.capacity(), config_.max_position_embeddings)));
    }
    for (const int64_t token : chunk.tokens) {
      if (token < 0 || token >= config_.vocab_size) {
        throw InvalidArgument("tokens", "token id " + std::to_string(token) + " is outside the vocabulary of " +
                                            std::to_string(config_.vocab_size));
      }
    }
    for (size_t other = 0; other < starts.size(); ++other) {
      if (chunks[other].slot == chunk.slot) throw InvalidArgument("chunks", "two chunks write the same cache slot");
    }
    if (chunk.embeddings.defined()) check_embeddings(chunk.embeddings, n);
    starts.push_back(start);
    offsets.push_back(N);
    N += n;
  }
  const auto long_options = at::TensorOptions().dtype(at::kLong);
  const auto to_device = [&](const std::vector<int64_t>& v) { return at::tensor(v, long_options).to(placement_.device); };

  // Packed tokens, chunk after chunk.
  std::vector<int64_t> token_ids, positions, write_rows, logit_rows;
  token_ids.reserve(static_cast<size_t>(N));
  for (int64_t b = 0; b < B; ++b) {
    const Chunk& chunk = chunks[static_cast<size_t>(b)];
    const auto n = static_cast<int64_t>(chunk.tokens.size());
    for (int64_t t = 0; t < n; ++t) {
      token_ids.push_back(chunk.tokens[static_cast<size_t>(t)]);
      positions.push_back(starts[static_cast<size_t>(b)] + t);
      write_rows.push_back(chunk.slot * cache.capacity() + starts[static_cast<size_t>(b)] + t);
      if (t >= n - chunk.logits) logit_rows.push_back(offsets[static_cast<size_t>(b)] + t);
    }
  }

  Attention attn;
  attn.tokens = N;
  set_positions(attn, to_device(positions), /*fused=*/uses_fused_ops());
  attn.write_rows = to_device(write_rows);

  // Single-token chunks attend together; so do the longer ones, padded to the longest.
  const int64_t G = config_.num_heads / config_.num_kv_heads;
  const bool decode_kernel = decode_attention_available(placement_.device, G, config_.head_dim);
  for (const bool single : {true, false}) {
    std::vector<int64_t> members;
    for (int64_t b = 0; b < B; ++b) {
      if ((chunks[static_cast<size_t>(b)].tokens.size() == 1) == single) members.push_back(b);
    }
    if (members.empty()) continue;
    AttentionGroup g;
    g.batch = static_cast<int64_t>(members.size());
    std::vector<int64_t> group_starts, group_counts, slots;
    bool packed_in_order = true;
    for (size_t i = 0; i < members.size(); ++i) {
      const int64_t b = members[i];
      const auto n = static_cast<int64_t>(chunks[static_cast<size_t>(b)].tokens.size());
      g.length = std::max(g.length, n);
      g.key_length = std::max(g.key_length, starts[static_cast<size_t>(b)] + n);
      group_starts.push_back(starts[static_cast<size_t>(b)]);
      group_counts.push_back(n);
      slots.push_back(chunks[static_cast<size_t>(b)].slot);
      if (i > 0 && offsets[static_cast<size_t>(b)] != offsets[static_cast<size_t>(members[i - 1])] + g.length) packed_in_order = false;
    }
    const bool padded = std::any_of(group_counts.begin(), group_counts.end(), [&](int64_t n) { return n != g.length; });
    if (padded || !packed_in_order) {
      std::vector<int64_t> gather, real_cells, real_tokens;
      for (size_t i = 0; i < members.size(); ++i) {
        const int64_t offset = offsets[static_cast<size_t>(members[i])];
        for (int64_t t = 0; t < g.length; ++t) {
          gather.push_back(offset + std::min(t, group_counts[i] - 1));
          if (t < group_counts[i]) {
            real_cells.push_back(static_cast<int64_t>(i) * g.length + t);
            real_tokens.push_back(offset + t);
          }
        }
      }
      g.gather = to_device(gather);
      g.real_cells = to_device(real_cells);
      g.real_tokens = to_device(real_tokens);
    } else {
      g.offset = offsets[static_cast<size_t>(members[0])];
    }
    if (single && decode_kernel) {
      std::vector<int64_t> key_lengths;
      for (size_t i = 0; i < members.size(); ++i) key_lengths.push_back(group_starts[i] + 1);
      g.key_lengths = to_device(key_lengths);
      g.kernel_slots = to_device(slots);
      attn.groups.push_back(std::move(g));
      continue;
    }
    // Decode rows that all see every key of the span need no mask, and SDPA runs faster without one.
    const bool sees_every_key =
        single && std::all_of(group_starts.begin(), group_starts.end(), [&](int64_t start) { return start + 1 == g.key_length; }) &&
        (!config_.sliding_window || g.key_length <= *config_.sliding_window);
    if (!sees_every_key) {
      g.mask = grouped_mask(attention_mask(to_device(group_starts), to_device(group_counts), g.length, g.key_length,
                                           config_.sliding_window),
                            G);
    }
    bool contiguous = true;
    for (size_t i = 1; i < slots.size(); ++i) contiguous = contiguous && slots[i] == slots[0] + static_cast<int64_t>(i);
    if (contiguous) {
      g.first_slot = slots[0];
    } else {
      g.read_slots = to_device(slots);
    }
    attn.groups.push_back(std::move(g));
  }

  const at::Tensor token_embeddings = at::embedding(weights_.embed_tokens, to_device(token_ids));
  const bool any_given = std::any_of(chunks.begin(), chunks.end(), [](const Chunk& c) { return c.embeddings.defined(); });
  at::Tensor inputs = token_embeddings;
  if (any_given) {
    std::vector<at::Tensor> pieces;
    for (int64_t b = 0; b < B; ++b) {
      const Chunk& chunk = chunks[static_cast<size_t>(b)];
      pieces.push_back(chunk.embeddings.defined()
                           ? chunk.embeddings
                           : token_embeddings.narrow(0, offsets[static_cast<size_t>(b)], static_cast<int64_t>(chunk.tokens.size())));
    }
    inputs = at::cat(pieces, 0);
  }
  const at::Tensor hidden = decode_layers(inputs, attn, adapters, &cache);
  for (int64_t b = 0; b < B; ++b) cache.advance(chunks[static_cast<size_t>(b)].slot, static_cast<int64_t>(chunks[static_cast<size_t>(b)].tokens.size()));
  const auto out_dtype = at::promote_types(placement_.dtype, at::kFloat);
  if (logit_rows.empty()) return at::empty({0, config_.vocab_size}, hidden.options().dtype(out_dtype));
  const at::Tensor selected = static_cast<int64_t>(logit_rows.size()) == N ? hidden : hidden.index_select(0, to_device(logit_rows));
  return model::linear(selected, weights_.lm_head).to(out_dtype);
}

at::Tensor Transformer::decode(const DecodeInputs& in, KVCache& cache, const AdapterBatch& adapters) const {
  const int64_t N = in.tokens.size(0);
  const int64_t G = config_.num_heads / config_.num_kv_heads;
  Attention attn;
  attn.tokens = N;
  set_positions(attn, in.positions, /*fused=*/uses_fused_ops());
  attn.write_rows = in.slots * cache.capacity() + in.positions;
  AttentionGroup g;
  g.batch = N;
  g.length = 1;
  if (decode_attention_available(placement_.device, G, config_.head_dim)) {
    g.key_lengths = in.positions + 1;
    g.kernel_slots = in.slots;
  } else {
    g.key_length = in.max_key_length;
    g.read_slots = in.slots;
    g.mask = grouped_mask(attention_mask(in.positions, at::ones_like(in.positions), 1, g.key_length, config_.sliding_window), G);
  }
  attn.groups.push_back(std::move(g));
  const at::Tensor hidden = decode_layers(at::embedding(weights_.embed_tokens, in.tokens), attn, adapters, &cache);
  return model::linear(hidden, weights_.lm_head).to(at::promote_types(placement_.dtype, at::kFloat));
}

at::Tensor Transformer::forward_full(const at::Tensor& tokens, const std::vector<int64_t>& lengths,
                                     const ProjectionSet& projections, const at::Tensor& embeddings) const {
  if (tokens.dim() != 2 || static_cast<int64_t>(lengths.size()) != tokens.size(0)) {
    throw InvalidArgument("tokens", "forward_full needs tokens [B, T] and one length per row");
  }
  const int64_t B = tokens.size(0);
  const int64_t T = tokens.size(1);
  if (T > config_.max_position_embeddings) {
    throw InvalidArgument("tokens", "sequence of " + std::to_string(T) + " tokens exceeds the context of " +
                                        std::to_string(config_.max_position_embeddings));
  }
  // Packed as B * T tokens, padding included: one group over the whole grid.
  const auto long_options = at::TensorOptions().dtype(at::kLong).device(placement_.device);
  Attention attn;
  attn.tokens = B * T;
  set_positions(attn, at::arange(T, long_options).repeat({B}), /*fused=*/false);
  AttentionGroup g;
  g.batch = B;
  g.length = T;
  g.key_length = T;
  g.mask = grouped_mask(attention_mask(at::zeros({B}, long_options), at::tensor(lengths, at::kLong).to(placement_.device),
                                       T, T, config_.sliding_window),
                        config_.num_heads / config_.num_kv_heads);
  attn.groups.push_back(std::move(g));
  at::Tensor inputs;
  if (embeddings.defined()) {
    if (embeddings.dim() != 3 || embeddings.size(0) != B || embeddings.size(1) != T) {
      throw InvalidArgument("embeddings", "forward_full needs embeddings [B, T, hidden] matching tokens [B, T]");
    }
    inputs = embeddings.reshape({B * T, -1});
    check_embeddings(inputs, B * T);
  } else {
    inputs = at::embedding(weights_.embed_tokens, tokens.to(placement_.device).reshape({-1}));
  }
  const at::Tensor hidden = decode_layers(inputs, attn, projections, nullptr);
  return at::linear(hidden, weights_.lm_head)
      .to(at::promote_types(placement_.dtype, at::kFloat))
      .view({B, T, -1});
}

}  // namespace t2::model
