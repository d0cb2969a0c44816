#include "t2/model/weights.hpp"

#include <ATen/DeviceAccelerator.h>

#include <limits>

#include <algorithm>
#include <cstdlib>
#include <cstdio>
#include <fstream>
#include <map>

#include <c10/core/impl/VirtualGuardImpl.h>
#include <nlohmann/json.hpp>

#include "t2/common/errors.hpp"
#include "t2/model/safetensors.hpp"

namespace t2::model {
namespace {

std::string shape_string(const std::vector<int64_t>& shape) {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); ++i) s += (i ? ", " : "") + std::to_string(shape[i]);
  return s + "]";
}

std::string layer_prefix(int64_t layer) { return "model.layers." + std::to_string(layer) + "."; }

bool has_bias(const ModelConfig& c, Projection p) {
  switch (p) {
    case Projection::kQ:
    case Projection::kK:
    case Projection::kV:
      return c.qkv_bias;
    case Projection::kO:
      return c.o_bias;
    default:
      return c.mlp_bias;
  }
}

std::string bias_name(int64_t layer, Projection p) {
  return layer_prefix(layer) + projection_module(p) + ".bias";
}

// The safetensors files of a model folder, and which file holds which tensor.
class Checkpoint {
 public:
  explicit Checkpoint(const std::filesystem::path& dir) {
    const auto index_path = dir / "model.safetensors.index.json";
    const auto single_path = dir / "model.safetensors";
    if (std::filesystem::exists(index_path)) {
      std::ifstream in(index_path);
      nlohmann::json index;
      try {
        index = nlohmann::json::parse(in);
      } catch (const nlohmann::json::exception& e) {
        throw LoadError(index_path.string() + ": invalid JSON: " + e.what());
      }
      if (!index.contains("weight_map") || !index["weight_map"].is_object()) {
        throw LoadError(index_path.string() + ": missing 'weight_map'");
      }
      std::map<std::string, size_t> file_ids;
      for (const auto& [tensor, file] : index["weight_map"].items()) {
        if (!file.is_string()) throw LoadError(index_path.string() + ": weight_map['" + tensor + "'] is not a file name");
        const auto name = file.get<std::string>();
        if (name.find('/') != std::string::npos) throw LoadError(index_path.string() + ": shard '" + name + "' is outside the folder");
        auto [it, inserted] = file_ids.emplace(name, files_.size());
        if (inserted) files_.push_back(SafetensorsFile::open(dir / name));
        owner_[tensor] = it->second;
      }
      source_ = index_path.string();
    } else if (std::filesystem::exists(single_path)) {
      files_.push_back(SafetensorsFile::open(single_path));
      for (const auto& [name, view] : files_[0].tensors()) owner_[name] = 0;
      source_ = single_path.string();
    } else {
      throw LoadError(dir.string() + ": no model.safetensors or model.safetensors.index.json");
    }
  }

  // 64-bit FNV-1a over each tensor's name, dtype, shape and a sample of its
  // bytes (head, tail and one 4 KiB block per MiB): any re-training changes it,
  // and it costs milliseconds even for an 8B model.
  std::string fingerprint() const {
    uint64_t h = 1469598103934665603ull;
    const auto mix = [&h](const void* data, size_t n) {
      const auto* p = static_cast<const unsigned char*>(data);
      for (size_t i = 0; i < n; ++i) h = (h ^ p[i]) * 1099511628211ull;
    };
    for (const auto& [name, file_index] : owner_) {
      const TensorView* view = files_[file_index].find(name);
      if (view == nullptr) continue;
      mix(name.data(), name.size());
      const int dtype = static_cast<int>(view->dtype);
      mix(&dtype, sizeof dtype);
      mix(view->shape.data(), view->shape.size() * sizeof(int64_t));
      constexpr size_t kBlock = 4096, kStride = 1 << 20;
      for (size_t offset = 0; offset < view->nbytes; offset += kStride) {
        mix(view->data + offset, std::min(kBlock, view->nbytes - offset));
      }
      if (view->nbytes > kBlock) mix(view->data + view->nbytes - kBlock, kBlock);
    }
    char hex[17];
    std::snprintf(hex, sizeof hex, "%016llx", static_cast<unsigned long long>(h));
    return hex;
  }

  // The tensor, checked for shape, converted to the placement.
  at::Tensor read(const std::string& name, const std::vector<int64_t>& shape, const Placement& placement) const {
    const auto it = owner_.find(name);
    if (it == owner_.end()) throw LoadError(source_ + ": missing tensor '" + name + "'");
    const SafetensorsFile& file = files_[it->second];
    const TensorView* view = file.find(name);
    if (view == nullptr) throw LoadError(file.path().string() + ": missing tensor '" + name + "' (listed in the index)");
    if (view->shape != shape) {
      throw LoadError(file.path().string() + ": tensor '" + name + "' has shape " + shape_string(view->shape) +
                      ", expected " + shape_string(shape));
    }
    if (!at::isFloatingType(view->dtype)) {
      throw LoadError(file.path().string() + ": tensor '" + name + "' has non-float dtype " + c10::toString(view->dtype));
    }
    // from_blob + to() copies once, straight into the target device and dtype.
    const at::Tensor mapped = at::from_blob(const_cast<std::byte*>(view->data), view->shape,
                                            at::TensorOptions().dtype(view->dtype));
    at::Tensor tensor = mapped.to(placement.device, placement.dtype, /*non_blocking=*/false, /*copy=*/true);
    // Checked after the conversion: a float32 value past the target dtype's range becomes Inf there.
    if (!at::isfinite(tensor).all().item<bool>()) {
      throw LoadError(file.path().string() + ": tensor '" + name + "' holds NaN or infinite values");
    }
    return tensor;
  }

  // The checkpoint's layers (model.layers.N.*) must be exactly the config's: a
  // layer the config leaves out would be silently skipped.
  void check_layer_count(int64_t num_layers) const {
    static const std::string kPrefix = "model.layers.";
    for (const auto& [name, file] : owner_) {
      if (name.compare(0, kPrefix.size(), kPrefix) != 0) continue;
      const int64_t layer = std::atoll(name.c_str() + kPrefix.size());
      if (layer >= num_layers) {
        throw LoadError(source_ + ": holds tensor '" + name + "' but config.json says num_hidden_layers = " +
                        std::to_string(num_layers));
      }
    }
  }

 private:
  std::vector<SafetensorsFile> files_;
  std::map<std::string, size_t> owner_;
  std::string source_;
};

template <typename Read>
ModelWeights assemble(const ModelConfig& c, Read&& read) {
  ModelWeights w;
  const int64_t h = c.hidden_size;
  w.embed_tokens = read("model.embed_tokens.weight", std::vector<int64_t>{c.vocab_size, h});
  w.final_norm = read("model.norm.weight", std::vector<int64_t>{h});
  w.lm_head = c.tie_word_embeddings ? w.embed_tokens : read("lm_head.weight", std::vector<int64_t>{c.vocab_size, h});
  w.projections = ProjectionSet(c.num_layers);
  for (int64_t l = 0; l < c.num_layers; ++l) {
    LayerWeights layer;
    layer.input_norm = read(layer_prefix(l) + "input_layernorm.weight", std::vector<int64_t>{h});
    layer.post_attention_norm = read(layer_prefix(l) + "post_attention_layernorm.weight", std::vector<int64_t>{h});
    for (const Projection p : kAllProjections) {
      const auto shape = projection_shape(c, p);
      w.projections.set(l, p, read(projection_weight_name(l, p), std::vector<int64_t>{shape[0], shape[1]}));
      if (has_bias(c, p)) layer.bias[static_cast<size_t>(p)] = read(bias_name(l, p), std::vector<int64_t>{shape[0]});
    }
    w.layers.push_back(std::move(layer));
  }
  return w;
}

}  // namespace

const char* projection_module(Projection p) {
  switch (p) {
    case Projection::kQ: return "self_attn.q_proj";
    case Projection::kK: return "self_attn.k_proj";
    case Projection::kV: return "self_attn.v_proj";
    case Projection::kO: return "self_attn.o_proj";
    case Projection::kGate: return "mlp.gate_proj";
    case Projection::kUp: return "mlp.up_proj";
    case Projection::kDown: return "mlp.down_proj";
  }
  return "";
}

std::string projection_weight_name(int64_t layer, Projection p) {
  return layer_prefix(layer) + projection_module(p) + ".weight";
}

std::array<int64_t, 2> projection_shape(const ModelConfig& c, Projection p) {
  const int64_t q_out = c.num_heads * c.head_dim;
  const int64_t kv_out = c.num_kv_heads * c.head_dim;
  switch (p) {
    case Projection::kQ: return {q_out, c.hidden_size};
    case Projection::kK:
    case Projection::kV: return {kv_out, c.hidden_size};
    case Projection::kO: return {c.hidden_size, q_out};
    case Projection::kGate:
    case Projection::kUp: return {c.intermediate_size, c.hidden_size};
    case Projection::kDown: return {c.hidden_size, c.intermediate_size};
  }
  return {0, 0};
}

std::vector<TensorSpec> checkpoint_tensor_specs(const ModelConfig& c) {
  std::vector<TensorSpec> specs;
  assemble(c, [&](const std::string& name, std::vector<int64_t> shape) {
    specs.push_back({name, shape});
    return at::Tensor();
  });
  return specs;
}

Placement Placement::parse(const std::string& device, const std::string& dtype) {
  Placement p;
  if (device == "auto") {
    p.device = at::hasCUDA() ? at::Device(at::kCUDA, 0) : at::Device(at::kCPU);
  } else {
    try {
      p.device = at::Device(device);
    } catch (const c10::Error&) {
      throw InvalidArgument("device", "unknown device '" + device + "' (use auto, cpu, cuda or cuda:N)");
    }
    if (p.device.is_cuda() && !at::hasCUDA()) {
      throw InvalidArgument("device", "device '" + device + "' requested but CUDA is not available");
    }
    if (!p.device.is_cpu() && !p.device.is_cuda()) {
      throw InvalidArgument("device", "unsupported device '" + device + "' (use auto, cpu, cuda or cuda:N)");
    }
    if (p.device.is_cuda() && !p.device.has_index()) p.device = at::Device(at::kCUDA, 0);
  }
  if (dtype == "auto") {
    p.dtype = p.device.is_cuda() ? at::kBFloat16 : at::kFloat;
  } else if (dtype == "float32" || dtype == "fp32") {
    p.dtype = at::kFloat;
  } else if (dtype == "bfloat16" || dtype == "bf16") {
    p.dtype = at::kBFloat16;
  } else if (dtype == "float16" || dtype == "fp16") {
    p.dtype = at::kHalf;
  } else {
    throw InvalidArgument("dtype", "unknown dtype '" + dtype + "' (use auto, float32, bfloat16 or float16)");
  }
  return p;
}

int64_t Placement::free_memory_bytes() const {
  if (device.is_cuda()) return static_cast<int64_t>(at::accelerator::getMemoryInfo(device.has_index() ? device.index() : 0).first);
  std::ifstream meminfo("/proc/meminfo");
  std::string key;
  int64_t kib = 0;
  while (meminfo >> key >> kib) {
    if (key == "MemAvailable:") return kib * 1024;
    meminfo.ignore(std::numeric_limits<std::streamsize>::max(), '\n');
  }
  return 0;
}

void Placement::synchronize() const {
  if (device.is_cpu()) return;
  c10::impl::VirtualGuardImpl(device.type()).synchronizeDevice(device.index());
}

ModelWeights ModelWeights::load(const std::filesystem::path& model_dir, const ModelConfig& config,
                                const Placement& placement) {
  const Checkpoint checkpoint(model_dir);
  checkpoint.check_layer_count(config.num_layers);
  return assemble(config, [&](const std::string& name, const std::vector<int64_t>& shape) {
    return checkpoint.read(name, shape, placement);
  });
}

std::string checkpoint_fingerprint(const std::filesystem::path& model_dir) {
  return Checkpoint(model_dir).fingerprint();
}

ModelWeights ModelWeights::random(const ModelConfig& config, const Placement& placement, uint64_t seed) {
  at::manual_seed(seed);
  const auto options = at::TensorOptions().device(placement.device).dtype(placement.dtype);
  return assemble(config, [&](const std::string& name, const std::vector<int64_t>& shape) {
    if (shape.size() == 1) {
      // Norm weights near 1 and small biases keep activations in range.
      const bool is_norm = name.find("norm") != std::string::npos;
      return is_norm ? at::ones(shape, options) : at::zeros(shape, options);
    }
    return at::randn(shape, options).mul_(0.02);
  });
}

}  // namespace t2::model
