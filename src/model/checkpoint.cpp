#include "t2/model/checkpoint.hpp"

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <fstream>

#include <nlohmann/json.hpp>

#include "t2/common/errors.hpp"
#include "t2/model/weights.hpp"

namespace t2::model {
namespace {

std::string shape_string(const std::vector<int64_t>& shape) {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); ++i) s += (i ? ", " : "") + std::to_string(shape[i]);
  return s + "]";
}

}  // namespace

Checkpoint::Checkpoint(const std::filesystem::path& dir) {
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

std::optional<std::string> Checkpoint::prefix_of(const std::string& suffix) const {
  for (const auto& [name, file] : owner_) {
    if (name.size() >= suffix.size() && name.compare(name.size() - suffix.size(), suffix.size(), suffix) == 0) {
      return name.substr(0, name.size() - suffix.size());
    }
  }
  return std::nullopt;
}

std::string Checkpoint::fingerprint() const {
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

at::Tensor Checkpoint::read(const std::string& name, const std::vector<int64_t>& shape, const Placement& placement) const {
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

void Checkpoint::check_layer_count(const std::string& layers_prefix, int64_t num_layers,
                                   const std::string& config_field) const {
  for (const auto& [name, file] : owner_) {
    if (name.compare(0, layers_prefix.size(), layers_prefix) != 0) continue;
    const int64_t layer = std::atoll(name.c_str() + layers_prefix.size());
    if (layer >= num_layers) {
      throw LoadError(source_ + ": holds tensor '" + name + "' but config.json says " + config_field + " = " +
                      std::to_string(num_layers));
    }
  }
}

}  // namespace t2::model
