#include "t2/model/weights.hpp"

#include <ATen/DeviceAccelerator.h>

#include <limits>

#include <fstream>

#include <c10/core/impl/VirtualGuardImpl.h>

#include "t2/common/errors.hpp"
#include "t2/model/checkpoint.hpp"

namespace t2::model {
namespace {

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

// Stacks every group's matrices, and its biases where each member has one.
void stack_groups(ModelWeights& w) {
  for (int64_t l = 0; l < w.projections.num_layers(); ++l) {
    LayerWeights& layer = w.layers[static_cast<size_t>(l)];
    for (const ProjectionGroup g : {ProjectionGroup::kQKV, ProjectionGroup::kGateUp}) {
      w.projections.stack(l, g);
      std::vector<at::Tensor> biases;
      for (const Projection p : group_members(g)) {
        if (layer.bias[static_cast<size_t>(p)].defined()) biases.push_back(layer.bias[static_cast<size_t>(p)]);
      }
      if (biases.size() != group_members(g).size()) continue;
      at::Tensor stacked = at::cat(biases);
      int64_t offset = 0;
      for (const Projection p : group_members(g)) {
        at::Tensor& bias = layer.bias[static_cast<size_t>(p)];
        const int64_t rows = bias.size(0);
        bias = stacked.narrow(0, offset, rows);
        offset += rows;
      }
      layer.stacked_bias[static_cast<size_t>(g)] = std::move(stacked);
    }
  }
}

template <typename Read>
ModelWeights assemble(const ModelConfig& c, const TextWeightNames& names, Read&& read) {
  ModelWeights w;
  const int64_t h = c.hidden_size;
  w.embed_tokens = read(names.prefix + "embed_tokens.weight", std::vector<int64_t>{c.vocab_size, h});
  w.final_norm = read(names.prefix + "norm.weight", std::vector<int64_t>{h});
  w.lm_head = c.tie_word_embeddings ? w.embed_tokens : read(names.lm_head, std::vector<int64_t>{c.vocab_size, h});
  w.projections = ProjectionSet(c.num_layers);
  for (int64_t l = 0; l < c.num_layers; ++l) {
    const std::string layer_prefix = names.layer_prefix(l);
    LayerWeights layer;
    layer.input_norm = read(layer_prefix + "input_layernorm.weight", std::vector<int64_t>{h});
    layer.post_attention_norm = read(layer_prefix + "post_attention_layernorm.weight", std::vector<int64_t>{h});
    for (const Projection p : kAllProjections) {
      const auto shape = projection_shape(c, p);
      const std::string module = layer_prefix + projection_module(p);
      w.projections.set(l, p, read(module + ".weight", std::vector<int64_t>{shape[0], shape[1]}));
      if (has_bias(c, p)) layer.bias[static_cast<size_t>(p)] = read(module + ".bias", std::vector<int64_t>{shape[0]});
    }
    w.layers.push_back(std::move(layer));
  }
  return w;
}

}  // namespace

const std::vector<Projection>& group_members(ProjectionGroup g) {
  static const std::vector<Projection> qkv = {Projection::kQ, Projection::kK, Projection::kV};
  static const std::vector<Projection> gate_up = {Projection::kGate, Projection::kUp};
  return g == ProjectionGroup::kQKV ? qkv : gate_up;
}

std::optional<ProjectionGroup> group_of(Projection p) {
  switch (p) {
    case Projection::kQ:
    case Projection::kK:
    case Projection::kV: return ProjectionGroup::kQKV;
    case Projection::kGate:
    case Projection::kUp: return ProjectionGroup::kGateUp;
    default: return std::nullopt;
  }
}

void ProjectionSet::set(int64_t layer, Projection p, at::Tensor weight) {
  Layer& l = layers_.at(static_cast<size_t>(layer));
  l.matrices[static_cast<size_t>(p)] = std::move(weight);
  if (const auto g = group_of(p)) l.stacked[static_cast<size_t>(*g)] = at::Tensor();
}

void ProjectionSet::set_stacked(int64_t layer, ProjectionGroup g, at::Tensor weights) {
  Layer& l = layers_.at(static_cast<size_t>(layer));
  int64_t offset = 0;
  for (const Projection p : group_members(g)) {
    at::Tensor& member = l.matrices[static_cast<size_t>(p)];
    const int64_t rows = member.defined() ? member.size(0) : 0;
    if (!member.defined() || member.size(1) != weights.size(1) || offset + rows > weights.size(0)) {
      throw InvalidArgument("weights", "a stacked group must hold its members' rows, in their shapes");
    }
    member = weights.narrow(0, offset, rows);
    offset += rows;
  }
  if (offset != weights.size(0)) throw InvalidArgument("weights", "a stacked group must hold exactly its members' rows");
  l.stacked[static_cast<size_t>(g)] = std::move(weights);
}

void ProjectionSet::stack(int64_t layer, ProjectionGroup g) {
  std::vector<at::Tensor> members;
  for (const Projection p : group_members(g)) members.push_back(get(layer, p));
  set_stacked(layer, g, at::cat(members));
}

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
  return TextWeightNames{}.layer_prefix(layer) + projection_module(p) + ".weight";
}

std::string TextWeightNames::layer_prefix(int64_t layer) const { return prefix + "layers." + std::to_string(layer) + "."; }

TextWeightNames TextWeightNames::detect(const Checkpoint& checkpoint) {
  TextWeightNames names;
  const std::optional<std::string> prefix = checkpoint.prefix_of("embed_tokens.weight");
  if (!prefix) return names;
  names.prefix = *prefix;
  // A nested causal LM ("language_model.model.") keeps its head beside its body ("language_model.lm_head.weight").
  const std::string body = "model.";
  const bool nested = prefix->size() > body.size() && prefix->compare(prefix->size() - body.size(), body.size(), body) == 0 &&
                      (*prefix)[prefix->size() - body.size() - 1] == '.';
  const std::string beside = (nested ? prefix->substr(0, prefix->size() - body.size()) : std::string()) + "lm_head.weight";
  if (checkpoint.contains(beside)) names.lm_head = beside;
  return names;
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

std::vector<TensorSpec> checkpoint_tensor_specs(const ModelConfig& c, const TextWeightNames& names) {
  std::vector<TensorSpec> specs;
  assemble(c, names, [&](const std::string& name, std::vector<int64_t> shape) {
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
  const TextWeightNames names = TextWeightNames::detect(checkpoint);
  checkpoint.check_layer_count(names.prefix + "layers.", config.num_layers, "num_hidden_layers");
  ModelWeights weights = assemble(config, names, [&](const std::string& name, const std::vector<int64_t>& shape) {
    return checkpoint.read(name, shape, placement);
  });
  stack_groups(weights);
  return weights;
}

std::string checkpoint_fingerprint(const std::filesystem::path& model_dir) {
  return Checkpoint(model_dir).fingerprint();
}

ModelWeights ModelWeights::random(const ModelConfig& config, const Placement& placement, uint64_t seed) {
  at::manual_seed(seed);
  const auto options = at::TensorOptions().device(placement.device).dtype(placement.dtype);
  ModelWeights weights = assemble(config, TextWeightNames{}, [&](const std::string& name, const std::vector<int64_t>& shape) {
    if (shape.size() == 1) {
      // Norm weights near 1 and small biases keep activations in range.
      const bool is_norm = name.find("norm") != std::string::npos;
      return is_norm ? at::ones(shape, options) : at::zeros(shape, options);
    }
    return at::randn(shape, options).mul_(0.02);
  });
  stack_groups(weights);
  return weights;
}

}  // namespace t2::model
