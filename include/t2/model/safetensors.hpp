// The safetensors file format: a memory-mapped reader that validates the
// header against the file, and an atomic writer (temp file + rename).
#pragma once

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include <ATen/ATen.h>

namespace t2::model {

// A tensor inside a mapped file; valid while its SafetensorsFile lives.
struct TensorView {
  std::string name;
  at::ScalarType dtype;
  std::vector<int64_t> shape;
  const std::byte* data = nullptr;
  size_t nbytes = 0;

  int64_t numel() const;
  // A CPU tensor holding a copy of the data, in the file's dtype.
  at::Tensor to_tensor() const;
};

class SafetensorsFile {
 public:
  // Maps the file and checks every header entry against its size; throws
  // LoadError naming the file and tensor on any inconsistency.
  static SafetensorsFile open(const std::filesystem::path& path);

  const std::filesystem::path& path() const { return path_; }
  const std::map<std::string, std::string>& metadata() const { return metadata_; }
  const std::map<std::string, TensorView>& tensors() const { return tensors_; }
  // nullptr when absent.
  const TensorView* find(const std::string& name) const;

 private:
  struct Mapping;  // owns the mmap
  std::filesystem::path path_;
  std::shared_ptr<const Mapping> mapping_;
  std::map<std::string, std::string> metadata_;
  std::map<std::string, TensorView> tensors_;
};

// Writes tensors (any device, any layout) to `path` atomically: the data goes to
// a temporary file in the same folder, which is then renamed over `path`.
void write_safetensors(const std::filesystem::path& path,
                       const std::vector<std::pair<std::string, at::Tensor>>& tensors,
                       const std::map<std::string, std::string>& metadata = {});

}  // namespace t2::model
