#include "t2/model/config.hpp"

#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <fstream>

#include <nlohmann/json.hpp>

#include "t2/common/errors.hpp"
#include "t2/common/json_fields.hpp"

namespace t2::model {
namespace {

using nlohmann::json;

nlohmann::json read_json_file(const std::filesystem::path& path) {
  std::ifstream in(path);
  if (!in) throw LoadError(path.string() + ": cannot open file");
  try {
    return json::parse(in);
  } catch (const json::parse_error& e) {
    throw LoadError(path.string() + ": invalid JSON: " + e.what());
  }
}

Architecture parse_architecture(const std::string& name, const std::string& source) {
  if (name == "LlamaForCausalLM") return Architecture::kLlama;
  if (name == "MistralForCausalLM") return Architecture::kMistral;
  if (name == "Qwen2ForCausalLM") return Architecture::kQwen2;
  throw LoadError(source + ": unsupported architecture '" + name +
                  "' (supported: LlamaForCausalLM, MistralForCausalLM, Qwen2ForCausalLM)");
}

RopeScaling parse_rope_scaling(const json& j, const std::string& source) {
  RopeScaling scaling;
  const auto it = j.find("rope_scaling");
  if (it == j.end() || it->is_null()) return scaling;
  if (!it->is_object()) throw LoadError(source + ": rope_scaling must be an object or null");
  const json& rs = *it;
  // Transformers writes "rope_type"; older configs write "type".
  std::string type = json_value_or<std::string>(rs, "rope_type", "", source);
  if (type.empty()) type = json_value_or<std::string>(rs, "type", "default", source);
  if (type == "default") return scaling;
  scaling.factor = json_value_or<double>(rs, "factor", 1.0, source);
  if (type == "linear") {
    scaling.type = RopeScaling::Type::kLinear;
  } else if (type == "llama3") {
    scaling.type = RopeScaling::Type::kLlama3;
    scaling.low_freq_factor = json_value_or<double>(rs, "low_freq_factor", 1.0, source);
    scaling.high_freq_factor = json_value_or<double>(rs, "high_freq_factor", 4.0, source);
    scaling.original_max_position_embeddings =
        json_value_or<int64_t>(rs, "original_max_position_embeddings", 8192, source);
  } else {
    throw LoadError(source + ": unsupported rope_scaling type '" + type +
                    "' (supported: linear, llama3)");
  }
  if (!(scaling.factor > 0)) throw LoadError(source + ": rope_scaling.factor must be > 0");
  return scaling;
}

// A LLaVA-NeXT text_config as a causal LM's config.json: the architecture
// from its model_type (transformers' default text_config is a LlamaConfig) and
// that config class's defaults for the fields it leaves out.
json llava_next_text_config(const json& j, const std::string& source) {
  json text = j.contains("text_config") && !j["text_config"].is_null() ? j["text_config"] : json::object();
  if (!text.is_object()) throw LoadError(source + ": text_config must be an object");
  const std::string model_type = json_value_or<std::string>(text, "model_type", "llama", source);
  json defaults = {{"hidden_size", 4096}, {"num_hidden_layers", 32}, {"num_attention_heads", 32},
                   {"vocab_size", 32000}, {"rms_norm_eps", 1e-6}, {"rope_theta", 10000.0}};
  if (model_type == "llama") {
    defaults.update({{"architectures", {"LlamaForCausalLM"}}, {"intermediate_size", 11008}, {"max_position_embeddings", 2048}});
  } else if (model_type == "mistral") {
    defaults.update({{"architectures", {"MistralForCausalLM"}}, {"intermediate_size", 14336}, {"num_key_value_heads", 8},
                     {"max_position_embeddings", 4096 * 32}, {"sliding_window", 4096}});
  } else if (model_type == "qwen2") {
    defaults.update({{"architectures", {"Qwen2ForCausalLM"}}, {"intermediate_size", 22016}, {"vocab_size", 151936},
                     {"max_position_embeddings", 32768}});
  } else {
    throw LoadError(source + ": unsupported text_config model_type '" + model_type + "' (supported: llama, mistral, qwen2)");
  }
  for (const auto& [key, value] : defaults.items()) {
    if (!text.contains(key)) text[key] = value;
  }
  // The composite model decides whether its head is tied (LlavaNextConfig.tie_word_embeddings, default false).
  text["tie_word_embeddings"] = json_value_or<bool>(j, "tie_word_embeddings", false, source);
  if (!text.contains("torch_dtype") && !text.contains("dtype")) {
    text["dtype"] = json_value_or<std::string>(j, "torch_dtype", json_value_or<std::string>(j, "dtype", "float32", source), source);
  }
  return text;
}

}  // namespace

bool is_llava_next_config(const json& j) {
  if (!j.is_object()) return false;
  if (const auto type = j.find("model_type"); type != j.end() && type->is_string() && *type == "llava_next") return true;
  const auto archs = j.find("architectures");
  if (archs == j.end() || !archs->is_array()) return false;
  return std::any_of(archs->begin(), archs->end(),
                     [](const json& a) { return a.is_string() && a == "LlavaNextForConditionalGeneration"; });
}

ModelConfig ModelConfig::from_json(const json& j, const std::string& source) {
  if (!j.is_object()) throw LoadError(source + ": config must be a JSON object");
  if (is_llava_next_config(j)) return from_json(llava_next_text_config(j, source), source + " (text_config)");
  ModelConfig c;
  const auto archs = j.find("architectures");
  if (archs == j.end() || !archs->is_array() || archs->empty() || !(*archs)[0].is_string()) {
    throw LoadError(source + ": missing 'architectures'");
  }
  c.architecture_name = (*archs)[0].get<std::string>();
  c.architecture = parse_architecture(c.architecture_name, source);

  c.hidden_size = json_value_or<int64_t>(j, "hidden_size", 0, source);
  c.intermediate_size = json_value_or<int64_t>(j, "intermediate_size", 0, source);
  c.num_layers = json_value_or<int64_t>(j, "num_hidden_layers", 0, source);
  c.num_heads = json_value_or<int64_t>(j, "num_attention_heads", 0, source);
  c.num_kv_heads = json_value_or<int64_t>(j, "num_key_value_heads", c.num_heads, source);
  c.head_dim = json_value_or<int64_t>(j, "head_dim", 0, source);
  if (c.head_dim == 0 && c.num_heads > 0) c.head_dim = c.hidden_size / c.num_heads;
  c.vocab_size = json_value_or<int64_t>(j, "vocab_size", 0, source);
  c.max_position_embeddings = json_value_or<int64_t>(j, "max_position_embeddings", 2048, source);
  c.rms_norm_eps = json_value_or<double>(j, "rms_norm_eps", 1e-6, source);
  // Transformers 5 may nest rope_theta inside rope_parameters.
  c.rope_theta = json_value_or<double>(j, "rope_theta", 10000.0, source);
  if (const auto rp = j.find("rope_parameters"); rp != j.end() && rp->is_object()) {
    c.rope_theta = json_value_or<double>(*rp, "rope_theta", c.rope_theta, source);
    json with_scaling = j;
    if (!j.contains("rope_scaling") || j["rope_scaling"].is_null()) with_scaling["rope_scaling"] = *rp;
    c.rope_scaling = parse_rope_scaling(with_scaling, source);
  } else {
    c.rope_scaling = parse_rope_scaling(j, source);
  }
  c.tie_word_embeddings = json_value_or<bool>(j, "tie_word_embeddings", false, source);
  c.torch_dtype = json_value_or<std::string>(j, "torch_dtype", json_value_or<std::string>(j, "dtype", "float32", source), source);

  const std::string act = json_value_or<std::string>(j, "hidden_act", "silu", source);
  if (act != "silu") throw LoadError(source + ": unsupported hidden_act '" + act + "' (supported: silu)");

  switch (c.architecture) {
    case Architecture::kQwen2:
      c.qkv_bias = true;
      if (json_value_or<bool>(j, "use_sliding_window", false, source)) {
        c.sliding_window = json_value_or<int64_t>(j, "sliding_window", 0, source);
      }
      break;
    case Architecture::kMistral:
      if (j.contains("sliding_window") && !j["sliding_window"].is_null()) {
        c.sliding_window = json_value_or<int64_t>(j, "sliding_window", 0, source);
      }
      break;
    case Architecture::kLlama:
      c.qkv_bias = c.o_bias = json_value_or<bool>(j, "attention_bias", false, source);
      c.mlp_bias = json_value_or<bool>(j, "mlp_bias", false, source);
      break;
  }
  c.validate(source);
  return c;
}

ModelConfig ModelConfig::from_file(const std::filesystem::path& path) {
  return from_json(read_json_file(path), path.string());
}

void ModelConfig::validate(const std::string& source) const {
  auto require_positive = [&](int64_t v, const char* name) {
    if (v <= 0) throw LoadError(source + ": '" + name + "' must be a positive integer");
  };
  require_positive(hidden_size, "hidden_size");
  require_positive(intermediate_size, "intermediate_size");
  require_positive(num_layers, "num_hidden_layers");
  require_positive(num_heads, "num_attention_heads");
  require_positive(num_kv_heads, "num_key_value_heads");
  require_positive(head_dim, "head_dim");
  require_positive(vocab_size, "vocab_size");
  require_positive(max_position_embeddings, "max_position_embeddings");
  if (num_heads % num_kv_heads != 0) {
    throw LoadError(source + ": num_attention_heads (" + std::to_string(num_heads) +
                    ") is not a multiple of num_key_value_heads (" + std::to_string(num_kv_heads) + ")");
  }
  if (head_dim % 2 != 0) throw LoadError(source + ": head_dim must be even for RoPE");
  // Values that would make every output NaN, or positions no machine can hold.
  if (!(rms_norm_eps > 0) || !std::isfinite(rms_norm_eps)) throw LoadError(source + ": rms_norm_eps must be a finite number > 0");
  if (!(rope_theta > 0) || !std::isfinite(rope_theta)) throw LoadError(source + ": rope_theta must be a finite number > 0");
  if (!std::isfinite(rope_scaling.factor)) throw LoadError(source + ": rope_scaling.factor must be finite");
  constexpr int64_t kMaxDimension = int64_t{1} << 24;  // keeps every product of two dimensions inside int64
  const std::pair<int64_t, const char*> dimensions[] = {{hidden_size, "hidden_size"}, {intermediate_size, "intermediate_size"},
                                                       {num_heads, "num_attention_heads"}, {head_dim, "head_dim"},
                                                       {vocab_size, "vocab_size"}, {num_layers, "num_hidden_layers"}};
  for (const auto& [v, name] : dimensions) {
    if (v > kMaxDimension) throw LoadError(source + ": '" + name + "' = " + std::to_string(v) + " is beyond any supported model");
  }
  // The RoPE tables (cos and sin, float32, one row per position) live in memory for the model's life.
  const double rope_bytes = 2.0 * 4.0 * static_cast<double>(max_position_embeddings) * static_cast<double>(head_dim);
  const double memory = static_cast<double>(sysconf(_SC_PHYS_PAGES)) * static_cast<double>(sysconf(_SC_PAGESIZE));
  if (memory > 0 && rope_bytes > memory / 4) {
    throw LoadError(source + ": max_position_embeddings = " + std::to_string(max_position_embeddings) + " needs " +
                    std::to_string(static_cast<int64_t>(rope_bytes / (1 << 20))) +
                    " MiB of RoPE tables alone, more than a quarter of this machine's memory");
  }
  if (sliding_window && *sliding_window <= 0) throw LoadError(source + ": sliding_window must be > 0");
}

GenerationConfig GenerationConfig::from_json(const json& j) {
  GenerationConfig g;
  const std::string source = "generation_config.json";
  if (const auto it = j.find("bos_token_id"); it != j.end() && it->is_number_integer()) {
    g.bos_token_id = it->get<int64_t>();
  }
  if (const auto it = j.find("eos_token_id"); it != j.end()) {
    if (it->is_number_integer()) g.eos_token_ids.push_back(it->get<int64_t>());
    if (it->is_array()) {
      for (const auto& id : *it) {
        if (id.is_number_integer()) g.eos_token_ids.push_back(id.get<int64_t>());
      }
    }
  }
  if (const auto it = j.find("temperature"); it != j.end() && it->is_number()) g.temperature = it->get<double>();
  if (const auto it = j.find("top_p"); it != j.end() && it->is_number()) g.top_p = it->get<double>();
  if (const auto it = j.find("top_k"); it != j.end() && it->is_number_integer()) g.top_k = it->get<int64_t>();
  g.do_sample = json_value_or<bool>(j, "do_sample", false, source);
  return g;
}

GenerationConfig GenerationConfig::from_model_dir(const std::filesystem::path& dir) {
  const auto gen_path = dir / "generation_config.json";
  GenerationConfig g;
  if (std::filesystem::exists(gen_path)) g = from_json(read_json_file(gen_path));
  // config.json carries the same ids when the generation config lacks them.
  const GenerationConfig from_model = from_json(read_json_file(dir / "config.json"));
  if (g.eos_token_ids.empty()) g.eos_token_ids = from_model.eos_token_ids;
  if (!g.bos_token_id) g.bos_token_id = from_model.bos_token_id;
  return g;
}

}  // namespace t2::model
