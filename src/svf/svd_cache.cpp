#include "t2/svf/svd_cache.hpp"

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <cstdlib>

#include <ATen/core/grad_mode.h>

#include "t2/common/errors.hpp"
#include "t2/common/log.hpp"
#include "t2/common/progress.hpp"
#include "t2/model/safetensors.hpp"

namespace t2::svf {
namespace {

constexpr const char* kFormat = "t2-svd-v2";  // v2: a checksum of the data

std::string key(const MatrixId& id, const char* part) { return id.weight_name() + "." + part; }

// 64-bit FNV-1a over 8-byte words (then the tail bytes) of each tensor's name and data, in name order.
class Checksum {
 public:
  void add(const std::string& name, const void* data, size_t n) {
    mix(name.data(), name.size());
    mix(data, n);
  }
  std::string hex() const {
    char text[17];
    std::snprintf(text, sizeof text, "%016llx", static_cast<unsigned long long>(h_));
    return text;
  }

 private:
  void mix(const void* data, size_t n) {
    const auto* p = static_cast<const unsigned char*>(data);
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
      uint64_t word = 0;
      std::memcpy(&word, p + i, 8);
      h_ = (h_ ^ word) * 1099511628211ull;
    }
    for (; i < n; ++i) h_ = (h_ ^ p[i]) * 1099511628211ull;
  }
  uint64_t h_ = 1469598103934665603ull;
};

}  // namespace

std::filesystem::path default_cache_dir() {
  if (const char* dir = std::getenv("T2_CACHE_DIR"); dir != nullptr && *dir != '\0') return dir;
  if (const char* xdg = std::getenv("XDG_CACHE_HOME"); xdg != nullptr && *xdg != '\0') return std::filesystem::path(xdg) / "t2";
  if (const char* home = std::getenv("HOME"); home != nullptr && *home != '\0') return std::filesystem::path(home) / ".cache" / "t2";
  return std::filesystem::temp_directory_path() / "t2-cache";
}

namespace {

// The thin SVD of W [out, in] through the eigendecomposition of its smaller
// Gram matrix, in float64: 8x faster than torch.linalg.svd on an H200
// (bench/svd_methods.py) and closer to W. With G = W Wᵀ = U diag(s²) Uᵀ,
// Vh = diag(1/s) Uᵀ W (and the transpose for a tall W). Where s spans too
// wide a range for s² in float64, linalg_svd does it.
std::tuple<at::Tensor, at::Tensor, at::Tensor> thin_svd(const at::Tensor& weight) {
  const at::Tensor w = weight.to(at::kDouble);
  const bool tall = w.size(0) > w.size(1);
  const at::Tensor a = tall ? w.t() : w;  // [m, n], m <= n
  auto [eigenvalues, eigenvectors] = at::linalg_eigh(at::matmul(a, a.t()));
  const at::Tensor s = eigenvalues.flip(0).clamp_min(0).sqrt();
  if (s[-1].item<double>() <= 1e-4 * s[0].item<double>()) {
    auto [U, S, Vh] = at::linalg_svd(weight.to(at::kFloat), /*full_matrices=*/false);
    return {U, S, Vh};
  }
  const at::Tensor left = eigenvectors.flip(1);  // [m, m]
  const at::Tensor right = at::matmul(left.t(), a) / s.unsqueeze(1);  // [m, n], orthonormal rows
  if (tall) return {right.t().to(at::kFloat).contiguous(), s.to(at::kFloat), left.t().to(at::kFloat).contiguous()};
  return {left.to(at::kFloat).contiguous(), s.to(at::kFloat), right.to(at::kFloat).contiguous()};
}

}  // namespace

SvdCache SvdCache::compute(const model::Transformer& model, const std::string& fingerprint, Targets targets,
                           at::Device device) {
  at::NoGradGuard no_grad;  // not InferenceMode: training composes from these factors under autograd
  SvdCache cache;
  cache.fingerprint_ = fingerprint;
  cache.targets_ = targets;
  const auto ids = target_matrices(model.config(), targets);
  ProgressBar progress("svd", static_cast<int64_t>(ids.size()));
  for (size_t i = 0; i < ids.size(); ++i) {
    auto [U, s, Vh] = thin_svd(model.base_projections().get(ids[i].layer, ids[i].projection).to(device));
    cache.factors_.emplace(ids[i], SvdFactors{U, s, Vh});  // on `device`: the store uses them there; save() copies to the host
    progress.update(static_cast<int64_t>(i + 1), ids[i].weight_name());
  }
  progress.finish(std::to_string(ids.size()) + " matrices");
  return cache;
}

const SvdFactors* SvdCache::find(const MatrixId& id) const {
  const auto it = factors_.find(id);
  return it == factors_.end() ? nullptr : &it->second;
}

int64_t SvdCache::bytes() const {
  int64_t n = 0;
  for (const auto& [id, f] : factors_) n += static_cast<int64_t>(f.U.nbytes() + f.s.nbytes() + f.Vh.nbytes());
  return n;
}

std::filesystem::path SvdCache::path_for(const std::filesystem::path& cache_dir, const std::string& fingerprint,
                                         Targets targets) {
  return cache_dir / ("svd-" + fingerprint + "-" + to_string(targets) + ".safetensors");
}

void SvdCache::save(const std::filesystem::path& path) const {
  std::vector<std::pair<std::string, at::Tensor>> tensors;
  for (const auto& [id, f] : factors_) {
    tensors.emplace_back(key(id, "U"), f.U.to(at::kCPU).contiguous());
    tensors.emplace_back(key(id, "s"), f.s.to(at::kCPU).contiguous());
    tensors.emplace_back(key(id, "Vh"), f.Vh.to(at::kCPU).contiguous());
  }
  std::sort(tensors.begin(), tensors.end(), [](const auto& a, const auto& b) { return a.first < b.first; });
  Checksum checksum;
  for (const auto& [name, t] : tensors) {
    if (!at::isfinite(t).all().item<bool>()) throw Error("SVD factor '" + name + "' is not finite; the cache is not written");
    checksum.add(name, t.data_ptr(), t.nbytes());
  }
  std::filesystem::create_directories(path.parent_path());
  model::write_safetensors(path, tensors,
                           {{"format", kFormat}, {"fingerprint", fingerprint_}, {"targets", to_string(targets_)},
                            {"checksum", checksum.hex()}});
}

SvdCache SvdCache::load(const std::filesystem::path& path, const model::ModelConfig& config,
                        const std::string& fingerprint, Targets targets) {
  const auto file = model::SafetensorsFile::open(path);
  const auto meta = [&](const char* k) {
    const auto it = file.metadata().find(k);
    return it == file.metadata().end() ? std::string() : it->second;
  };
  const std::string where = path.string();
  if (meta("format") != kFormat) throw LoadError(where + ": not a t2 SVD cache (format '" + meta("format") + "')");
  if (meta("fingerprint") != fingerprint) {
    throw LoadError(where + ": made for weights " + meta("fingerprint") + ", the model is " + fingerprint);
  }
  if (meta("targets") != to_string(targets)) throw LoadError(where + ": holds targets '" + meta("targets") + "'");
  Checksum checksum;
  for (const auto& [name, view] : file.tensors()) checksum.add(name, view.data, view.nbytes);
  if (meta("checksum") != checksum.hex()) {
    throw LoadError(where + ": checksum mismatch (stored '" + meta("checksum") + "', data " + checksum.hex() + "): the file is corrupt");
  }
  SvdCache cache;
  cache.fingerprint_ = fingerprint;
  cache.targets_ = targets;
  for (const MatrixId& id : target_matrices(config, targets)) {
    const auto shape = model::projection_shape(config, id.projection);
    const int64_t r = std::min(shape[0], shape[1]);
    const auto read = [&](const char* part, std::vector<int64_t> expected) {
      const model::TensorView* view = file.find(key(id, part));
      if (view == nullptr) throw LoadError(where + ": missing tensor '" + key(id, part) + "'");
      if (view->shape != expected || view->dtype != at::kFloat) {
        throw LoadError(where + ": tensor '" + key(id, part) + "' has the wrong shape or dtype");
      }
      at::Tensor t = view->to_tensor();
      if (!at::isfinite(t).all().item<bool>()) throw LoadError(where + ": tensor '" + key(id, part) + "' holds NaN or infinite values");
      return t;
    };
    cache.factors_.emplace(id, SvdFactors{read("U", {shape[0], r}), read("s", {r}), read("Vh", {r, shape[1]})});
  }
  return cache;
}

SvdCache::Loaded SvdCache::load_or_build(const model::Transformer& model, const std::string& fingerprint,
                                         Targets targets, const std::filesystem::path& cache_dir, at::Device device) {
  const auto start = std::chrono::steady_clock::now();
  const auto seconds = [&] { return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count(); };
  const auto path = path_for(cache_dir, fingerprint, targets);
  if (std::filesystem::exists(path)) {
    try {
      SvdCache cache = load(path, model.config(), fingerprint, targets);
      return {std::move(cache), path, false, seconds()};
    } catch (const LoadError& e) {
      log::warn("SVD cache " + path.string() + " is stale or corrupt, rebuilding: " + e.what());
    }
  }
  SvdCache cache = compute(model, fingerprint, targets, device);
  cache.save(path);
  return {std::move(cache), path, true, seconds()};
}

}  // namespace t2::svf
