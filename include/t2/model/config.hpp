// Model configuration: what config.json and generation_config.json of a
// Hugging Face model folder say about the architecture and decoding defaults.
#pragma once

#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json_fwd.hpp>

namespace t2::model {

enum class Architecture { kLlama, kMistral, kQwen2 };

// RoPE frequency scaling (config.json "rope_scaling").
struct RopeScaling {
  enum class Type { kNone, kLinear, kLlama3 };
  Type type = Type::kNone;
  double factor = 1.0;
  double low_freq_factor = 1.0;                 // llama3 only
  double high_freq_factor = 4.0;                // llama3 only
  int64_t original_max_position_embeddings = 8192;  // llama3 only
};

struct ModelConfig {
  Architecture architecture = Architecture::kLlama;
  std::string architecture_name;  // as written in config.json, for messages
  int64_t hidden_size = 0;
  int64_t intermediate_size = 0;
  int64_t num_layers = 0;
  int64_t num_heads = 0;
  int64_t num_kv_heads = 0;
  int64_t head_dim = 0;
  int64_t vocab_size = 0;
  int64_t max_position_embeddings = 2048;
  double rms_norm_eps = 1e-6;
  double rope_theta = 10000.0;
  RopeScaling rope_scaling;
  bool tie_word_embeddings = false;
  bool qkv_bias = false;  // q/k/v projections carry a bias (Qwen2, Llama attention_bias)
  bool o_bias = false;    // o_proj carries a bias (Llama attention_bias)
  bool mlp_bias = false;  // gate/up/down carry a bias (Llama mlp_bias)
  std::optional<int64_t> sliding_window;  // Mistral / Qwen2 local attention
  std::string torch_dtype = "float32";    // the dtype the checkpoint was saved in

  // Parses a config.json document; `source` names the file in error messages.
  // For a LLaVA-NeXT config, the language model's (its text_config).
  static ModelConfig from_json(const nlohmann::json& j, const std::string& source);
  static ModelConfig from_file(const std::filesystem::path& path);

  // Throws LoadError when the numbers cannot describe a working model.
  void validate(const std::string& source) const;
};

// A LlavaNextForConditionalGeneration config.json (by architectures or model_type).
bool is_llava_next_config(const nlohmann::json& config);

// Decoding defaults from generation_config.json (optional file).
struct GenerationConfig {
  std::optional<int64_t> bos_token_id;
  std::vector<int64_t> eos_token_ids;  // eos_token_id may be one id or a list
  std::optional<double> temperature;
  std::optional<double> top_p;
  std::optional<int64_t> top_k;
  bool do_sample = false;

  static GenerationConfig from_json(const nlohmann::json& j);
  // Reads the file if it exists; otherwise falls back to config.json's bos/eos.
  static GenerationConfig from_model_dir(const std::filesystem::path& dir);
};

}  // namespace t2::model
