// The Llama-family decoder (Llama 1/2/3, Mistral, Qwen2): RMSNorm, RoPE,
// grouped-query attention, SwiGLU MLP. One forward serves any mix of prefill
// chunks and decode tokens over a KV cache: tokens are packed, the matrices
// run on all of them at once (each token with its own adaptation, see
// AdapterBatch), and attention runs per group of equal-shaped chunks. A
// cache-free variant runs under autograd.
#pragma once

#include <cmath>
#include <cstdint>
#include <filesystem>
#include <vector>

#include <ATen/ATen.h>

#include "t2/model/adapter_batch.hpp"
#include "t2/model/config.hpp"
#include "t2/model/kv_cache.hpp"
#include "t2/model/weights.hpp"

namespace t2::model {

// Tokens to append to the sequence in `slot` of a KV cache.
struct Chunk {
  int64_t slot = 0;
  std::vector<int64_t> tokens;
  // Logits are returned for this many trailing tokens: 1 for the next token,
  // all of them to score a continuation, 0 for a prefill chunk that is not
  // the prompt's last.
  int64_t logits = 1;
  // [tokens.size(), hidden] in the compute dtype on the model's device; when
  // defined, used in place of the tokens' embeddings (image features). The
  // tokens still give the chunk's length. (`= {}` keeps {slot, tokens, logits}
  // initialisation free of -Wmissing-field-initializers.)
  at::Tensor embeddings = {};
};

// One decode token per row at a fixed shape, every index already on the
// device (persistent buffers a CUDA graph reads in place).
struct DecodeInputs {
  at::Tensor tokens;     // [N] int64
  at::Tensor positions;  // [N] int64: each token's position in its sequence
  at::Tensor slots;      // [N] int64: each row's cache slot
  // A bound on positions + 1: the key span where attention runs without the
  // decode kernel (the CPU); the kernel reads each row's own length.
  int64_t max_key_length = 0;
};

class Transformer {
 public:
  Transformer(ModelConfig config, ModelWeights weights, Placement placement);
  // Loads config.json and the safetensors of a Hugging Face model folder.
  static Transformer load(const std::filesystem::path& model_dir, const Placement& placement);

  const ModelConfig& config() const { return config_; }
  const Placement& placement() const { return placement_; }
  const ModelWeights& weights() const { return weights_; }
  // The base model's adaptable matrices; SVF supplies other sets of the same shape.
  const ProjectionSet& base_projections() const { return weights_.projections; }

  // Appends each chunk to its cache slot and returns the logits the chunks
  // ask for, chunk after chunk: [sum of Chunk::logits, vocab] (float32, or
  // float64 for a float64 model).
  at::Tensor forward(const std::vector<Chunk>& chunks, KVCache& cache, const AdapterBatch& adapters) const;

  // The execute half of a decode step: appends each row's K/V at its position
  // and returns logits [N, vocab] as forward does. Nothing in it waits on the
  // host, so it can be captured as a CUDA graph; the caller checks the inputs
  // and advances the cache's lengths (DecodeRunner).
  at::Tensor decode(const DecodeInputs& inputs, KVCache& cache, const AdapterBatch& adapters) const;

  // The input embeddings of `tokens`: [n, hidden] in the compute dtype.
  at::Tensor embed(const std::vector<int64_t>& tokens) const;

  // Whole right-padded sequences without a cache: tokens [B, T] (int64),
  // lengths [B]; returns float32 logits [B, T, vocab]. Differentiable in the
  // projections, for training. `embeddings` [B, T, hidden], when defined,
  // replace the tokens' embeddings (records with images).
  at::Tensor forward_full(const at::Tensor& tokens, const std::vector<int64_t>& lengths,
                          const ProjectionSet& projections, const at::Tensor& embeddings = {}) const;

 private:
  struct Attention;  // per-call positions, attention groups and cache addressing
  struct AttentionGroup;
  // hidden [N, hidden] for N packed tokens -> the final norm's output [N, hidden].
  at::Tensor decode_layers(at::Tensor hidden, const Attention& attention, const AdapterBatch& adapters,
                           KVCache* cache) const;
  // The same with the elementwise steps fused (fused_ops.hpp), for inference.
  bool uses_fused_ops() const;
  at::Tensor decode_layers_fused(at::Tensor hidden, const Attention& attention, const AdapterBatch& adapters,
                                 KVCache& cache) const;
  // The call's token positions, and the RoPE tables gathered for them unless the fused kernels run.
  void set_positions(Attention& attention, at::Tensor positions, bool fused) const;
  void write_kv(int64_t layer, const at::Tensor& k, const at::Tensor& v, const Attention& attention, KVCache& cache) const;
  at::Tensor attend(int64_t layer, const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                    const Attention& attention, KVCache* cache) const;
  // One group through SDPA with its mask; q, k, v are the group's [B, T, heads, D] grid.
  at::Tensor attend_masked(int64_t layer, const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                           const AttentionGroup& group, KVCache* cache) const;
  double attention_scale() const { return 1.0 / std::sqrt(static_cast<double>(config_.head_dim)); }
  at::Tensor rms_norm(const at::Tensor& x, const at::Tensor& weight) const;
  // Throws unless `embeddings` is [rows, hidden] in the compute dtype on the model's device.
  void check_embeddings(const at::Tensor& embeddings, int64_t rows) const;

  ModelConfig config_;
  ModelWeights weights_;
  Placement placement_;
  at::Tensor rope_cos_;  // [max_positions, head_dim], float32
  at::Tensor rope_sin_;
};

// Inverse RoPE frequencies [head_dim / 2] with the config's scaling applied.
at::Tensor rope_inverse_frequencies(const ModelConfig& config);

}  // namespace t2::model
