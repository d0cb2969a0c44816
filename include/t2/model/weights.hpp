// Model weights: the tensors of a Hugging Face Llama-family checkpoint, placed
// on a device in a dtype. The matrices that SVF adapts live apart, in a
// ProjectionSet, so a batch can run with an adapted set in their place.
#pragma once

#include <array>
#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <vector>

#include <ATen/ATen.h>

#include "t2/model/config.hpp"

namespace t2::model {

// The seven linear maps of a decoder layer, all candidates for SVF.
enum class Projection : int { kQ, kK, kV, kO, kGate, kUp, kDown };
constexpr int kNumProjections = 7;
constexpr std::array<Projection, kNumProjections> kAllProjections = {
    Projection::kQ, Projection::kK, Projection::kV, Projection::kO,
    Projection::kGate, Projection::kUp, Projection::kDown};

// Projections that read the same input: with their matrices stacked row-wise
// into one buffer, the group runs as one GEMM instead of two or three.
enum class ProjectionGroup : int { kQKV, kGateUp };
constexpr int kNumProjectionGroups = 2;
// The group's members in stacking order.
const std::vector<Projection>& group_members(ProjectionGroup g);
// The group a projection belongs to, if any (o_proj and down_proj are alone).
std::optional<ProjectionGroup> group_of(Projection p);

// HF module path, e.g. "self_attn.q_proj" or "mlp.up_proj".
const char* projection_module(Projection p);
// HF weight name of a causal LM, e.g. "model.layers.3.mlp.up_proj.weight".
std::string projection_weight_name(int64_t layer, Projection p);
// [out_features, in_features] of a projection under `config`.
std::array<int64_t, 2> projection_shape(const ModelConfig& config, Projection p);

// One weight matrix per layer and projection. Copies are cheap and share
// storage, so an adapted set that replaces a few matrices costs only those.
// A group's matrices may be row blocks of one stacked buffer (see stacked()).
class ProjectionSet {
 public:
  ProjectionSet() = default;
  explicit ProjectionSet(int64_t num_layers) : layers_(static_cast<size_t>(num_layers)) {}

  const at::Tensor& get(int64_t layer, Projection p) const { return layers_.at(static_cast<size_t>(layer)).matrices[static_cast<size_t>(p)]; }
  // Replaces one matrix; its group is no longer stacked.
  void set(int64_t layer, Projection p, at::Tensor weight);
  int64_t num_layers() const { return static_cast<int64_t>(layers_.size()); }

  // The group's matrices as one [Σ out, in] buffer whose row blocks are the
  // members; undefined unless the group was stacked and no member set since.
  const at::Tensor& stacked(int64_t layer, ProjectionGroup g) const {
    return layers_.at(static_cast<size_t>(layer)).stacked[static_cast<size_t>(g)];
  }
  // Makes `weights` ([Σ out, in], the members' rows in group order) the group's buffer.
  void set_stacked(int64_t layer, ProjectionGroup g, at::Tensor weights);
  // Copies the group's current matrices into one buffer (set_stacked).
  void stack(int64_t layer, ProjectionGroup g);

 private:
  struct Layer {
    std::array<at::Tensor, kNumProjections> matrices;
    std::array<at::Tensor, kNumProjectionGroups> stacked;
  };
  std::vector<Layer> layers_;
};

struct LayerWeights {
  at::Tensor input_norm;           // [hidden]
  at::Tensor post_attention_norm;  // [hidden]
  // Biases by projection; undefined where the architecture has none.
  std::array<at::Tensor, kNumProjections> bias;
  // A group's biases as one vector (members are views of it) when every member has one.
  std::array<at::Tensor, kNumProjectionGroups> stacked_bias;
};

class Checkpoint;

// Where a checkpoint keeps the language model's tensors: a causal LM under
// "model." beside "lm_head.weight"; a vision-language checkpoint nests them
// (LLaVA: "language_model.model." and "language_model.lm_head.weight", or
// transformers 5's module names "model.language_model." and "lm_head.weight").
struct TextWeightNames {
  std::string prefix = "model.";
  std::string lm_head = "lm_head.weight";

  std::string layer_prefix(int64_t layer) const;  // "<prefix>layers.<layer>."
  // From the checkpoint's embed_tokens and lm_head tensors; the defaults where it has neither.
  static TextWeightNames detect(const Checkpoint& checkpoint);
};

// A tensor a checkpoint must provide: its HF name and shape.
struct TensorSpec {
  std::string name;
  std::vector<int64_t> shape;
};
// Every tensor the loader reads for `config` under `names`, in a stable order.
std::vector<TensorSpec> checkpoint_tensor_specs(const ModelConfig& config, const TextWeightNames& names = {});

// Where weights live and in which dtype they compute.
struct Placement {
  at::Device device = at::kCPU;
  at::ScalarType dtype = at::kFloat;

  // "auto" picks CUDA when present; dtype "auto" is float32 on CPU, bfloat16 on CUDA.
  static Placement parse(const std::string& device, const std::string& dtype);
  // Waits for the work queued on the device (no-op on the CPU).
  void synchronize() const;
  // Free memory of the device: the CUDA allocator's view, or MemAvailable on the CPU.
  int64_t free_memory_bytes() const;
};

// A short hex digest identifying a checkpoint's weights (names, shapes, dtypes
// and sampled bytes), used to key SVD caches and to match experts to models.
std::string checkpoint_fingerprint(const std::filesystem::path& model_dir);

struct ModelWeights {
  at::Tensor embed_tokens;  // [vocab, hidden]
  at::Tensor final_norm;    // [hidden]
  at::Tensor lm_head;       // [vocab, hidden]; the embedding itself when tied
  std::vector<LayerWeights> layers;
  ProjectionSet projections;  // the base model's matrices

  // Reads model.safetensors or the shards named by model.safetensors.index.json.
  // Grouped projections (and their biases) come stacked.
  static ModelWeights load(const std::filesystem::path& model_dir, const ModelConfig& config,
                           const Placement& placement);
  // Random weights of the config's shape (for benchmarks of shapes with no checkpoint).
  static ModelWeights random(const ModelConfig& config, const Placement& placement, uint64_t seed);
};

}  // namespace t2::model
