#include "t2/vision/clip_vision.hpp"

#include "t2/common/errors.hpp"

namespace t2::vision {

at::Tensor activation(const std::string& name, const at::Tensor& x) {
  if (name == "quick_gelu") return x * at::sigmoid(1.702 * x);
  if (name == "gelu") return at::gelu(x);
  throw InvalidArgument("activation", "unsupported activation '" + name + "'");
}

ClipVisionTower ClipVisionTower::load(const model::Checkpoint& checkpoint, const std::string& prefix,
                                      const VisionConfig& config, int64_t layers, const model::Placement& placement) {
  checkpoint.check_layer_count(prefix + "encoder.layers.", config.num_hidden_layers, "vision_config.num_hidden_layers");
  const int64_t h = config.hidden_size;
  const auto read = [&](const std::string& name, const std::vector<int64_t>& shape) {
    return checkpoint.read(prefix + name, shape, placement);
  };
  ClipVisionTower tower;
  tower.config_ = config;
  tower.class_embedding_ = read("embeddings.class_embedding", {h});
  tower.patch_embedding_ = read("embeddings.patch_embedding.weight", {h, config.num_channels, config.patch_size, config.patch_size});
  tower.position_embedding_ = read("embeddings.position_embedding.weight", {config.num_positions(), h});
  tower.pre_norm_weight_ = read("pre_layrnorm.weight", {h});  // sic: CLIP's module name
  tower.pre_norm_bias_ = read("pre_layrnorm.bias", {h});
  for (int64_t l = 0; l < layers; ++l) {
    const std::string p = "encoder.layers." + std::to_string(l) + ".";
    Layer layer;
    layer.norm1_weight = read(p + "layer_norm1.weight", {h});
    layer.norm1_bias = read(p + "layer_norm1.bias", {h});
    layer.norm2_weight = read(p + "layer_norm2.weight", {h});
    layer.norm2_bias = read(p + "layer_norm2.bias", {h});
    layer.q_weight = read(p + "self_attn.q_proj.weight", {h, h});
    layer.q_bias = read(p + "self_attn.q_proj.bias", {h});
    layer.k_weight = read(p + "self_attn.k_proj.weight", {h, h});
    layer.k_bias = read(p + "self_attn.k_proj.bias", {h});
    layer.v_weight = read(p + "self_attn.v_proj.weight", {h, h});
    layer.v_bias = read(p + "self_attn.v_proj.bias", {h});
    layer.out_weight = read(p + "self_attn.out_proj.weight", {h, h});
    layer.out_bias = read(p + "self_attn.out_proj.bias", {h});
    layer.fc1_weight = read(p + "mlp.fc1.weight", {config.intermediate_size, h});
    layer.fc1_bias = read(p + "mlp.fc1.bias", {config.intermediate_size});
    layer.fc2_weight = read(p + "mlp.fc2.weight", {h, config.intermediate_size});
    layer.fc2_bias = read(p + "mlp.fc2.bias", {h});
    tower.layers_.push_back(std::move(layer));
  }
  return tower;
}

at::Tensor ClipVisionTower::forward(const at::Tensor& pixel_values) const {
  const int64_t P = pixel_values.size(0);
  const int64_t N = config_.num_positions();
  const int64_t H = config_.num_attention_heads;
  const int64_t D = config_.head_dim();
  const int64_t h = config_.hidden_size;
  const at::Tensor patches = at::conv2d(pixel_values, patch_embedding_, {}, config_.patch_size)
                                 .flatten(2)
                                 .transpose(1, 2);  // [P, grid * grid, hidden]
  const at::Tensor cls = class_embedding_.view({1, 1, h}).expand({P, 1, h});
  at::Tensor x = at::cat({cls, patches}, 1) + position_embedding_.unsqueeze(0);
  x = at::layer_norm(x, {h}, pre_norm_weight_, pre_norm_bias_, config_.layer_norm_eps);
  const auto heads = [&](const at::Tensor& t) { return t.view({P, N, H, D}).transpose(1, 2); };
  for (const Layer& layer : layers_) {
    const at::Tensor y = at::layer_norm(x, {h}, layer.norm1_weight, layer.norm1_bias, config_.layer_norm_eps);
    const at::Tensor attended =
        at::scaled_dot_product_attention(heads(at::linear(y, layer.q_weight, layer.q_bias)),
                                         heads(at::linear(y, layer.k_weight, layer.k_bias)),
                                         heads(at::linear(y, layer.v_weight, layer.v_bias)))
            .transpose(1, 2)
            .reshape({P, N, h});
    x = x + at::linear(attended, layer.out_weight, layer.out_bias);
    const at::Tensor z = at::layer_norm(x, {h}, layer.norm2_weight, layer.norm2_bias, config_.layer_norm_eps);
    x = x + at::linear(activation(config_.hidden_act, at::linear(z, layer.fc1_weight, layer.fc1_bias)), layer.fc2_weight,
                       layer.fc2_bias);
  }
  return x;
}

}  // namespace t2::vision
