// The safetensors files of a Hugging Face model folder (one file, or shards
// named by model.safetensors.index.json) and which file holds which tensor:
// checked reads into a placement, name lookups for layout detection, and the
// checkpoint's fingerprint.
#pragma once

#include <cstdint>
#include <filesystem>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include <ATen/ATen.h>

#include "t2/model/safetensors.hpp"

namespace t2::model {

struct Placement;

class Checkpoint {
 public:
  explicit Checkpoint(const std::filesystem::path& dir);

  // The file (or index) the tensors come from, for messages.
  const std::string& source() const { return source_; }
  bool contains(const std::string& name) const { return owner_.count(name) > 0; }
  // The prefix of the first tensor (in name order) called "<prefix><suffix>";
  // nullopt when no tensor ends in `suffix`.
  std::optional<std::string> prefix_of(const std::string& suffix) const;

  // The tensor, checked for shape, dtype and finiteness, converted to the placement.
  at::Tensor read(const std::string& name, const std::vector<int64_t>& shape, const Placement& placement) const;

  // The checkpoint's layers ("<layers_prefix>N.*") must be exactly the
  // config's: a layer the config leaves out would be silently skipped.
  void check_layer_count(const std::string& layers_prefix, int64_t num_layers, const std::string& config_field) const;

  // 64-bit FNV-1a over each tensor's name, dtype, shape and a sample of its
  // bytes (head, tail and one 4 KiB block per MiB): any re-training changes it,
  // and it costs milliseconds even for an 8B model.
  std::string fingerprint() const;

 private:
  std::vector<SafetensorsFile> files_;
  std::map<std::string, size_t> owner_;
  std::string source_;
};

}  // namespace t2::model
