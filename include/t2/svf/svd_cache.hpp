// The SVD cache: W = U diag(s) Vh for every targeted matrix of a base model,
// computed once in float32 and stored as one safetensors file keyed by the
// model's fingerprint and the targets.
#pragma once

#include <cstdint>
#include <filesystem>
#include <map>
#include <string>

#include <ATen/ATen.h>

#include "t2/model/transformer.hpp"
#include "t2/svf/targets.hpp"

namespace t2::svf {

struct SvdFactors {
  at::Tensor U;   // [m, r]
  at::Tensor s;   // [r], descending
  at::Tensor Vh;  // [r, n]
};

class SvdCache {
 public:
  // float32 thin SVD of the model's base matrices, computed and kept on
  // `device` (a float64 Gram eigendecomposition), with a progress bar.
  // Loaded caches hold their factors on the host.
  static SvdCache compute(const model::Transformer& model, const std::string& fingerprint, Targets targets,
                          at::Device device);
  // Reads a cache file; throws LoadError if it is corrupt or does not belong
  // to this model (fingerprint, targets, shapes).
  static SvdCache load(const std::filesystem::path& path, const model::ModelConfig& config,
                       const std::string& fingerprint, Targets targets);
  // `cache_dir`/svd-<fingerprint>-<targets>.safetensors
  static std::filesystem::path path_for(const std::filesystem::path& cache_dir, const std::string& fingerprint,
                                        Targets targets);

  struct Loaded;
  // The cached factors if valid; otherwise computes and saves them, warning
  // when a stale or corrupt file is replaced.
  static Loaded load_or_build(const model::Transformer& model, const std::string& fingerprint, Targets targets,
                              const std::filesystem::path& cache_dir, at::Device device);

  // Writes atomically (temp file + rename).
  void save(const std::filesystem::path& path) const;

  const std::map<MatrixId, SvdFactors>& factors() const { return factors_; }
  const SvdFactors* find(const MatrixId& id) const;
  Targets targets() const { return targets_; }
  const std::string& fingerprint() const { return fingerprint_; }
  int64_t bytes() const;

 private:
  std::string fingerprint_;
  Targets targets_ = Targets::kMlp;
  std::map<MatrixId, SvdFactors> factors_;
};

struct SvdCache::Loaded {
  SvdCache cache;
  std::filesystem::path path;
  bool built = false;  // computed now rather than read
  double seconds = 0;
};

// The default cache folder: $T2_CACHE_DIR, else $XDG_CACHE_HOME/t2, else ~/.cache/t2.
std::filesystem::path default_cache_dir();

}  // namespace t2::svf
