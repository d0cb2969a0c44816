// The adapter store: the experts a server or CLI has loaded, and the adapted
// weights for an adaptation (base, one expert, or a mixture) composed on the
// model's device from the cached SVD factors. Composed sets are cached under a
// memory budget with LRU eviction. All methods are thread-safe: the scheduler
// thread asks for weights while HTTP threads add or remove experts.
#pragma once

#include <cstdint>
#include <list>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "t2/model/transformer.hpp"
#include "t2/svf/expert.hpp"
#include "t2/svf/svd_cache.hpp"

namespace t2::svf {

// What a request runs with: a linear combination of experts (each of them an
// SVF expert or a stored mixture). Empty means the base weights.
struct Adaptation {
  std::vector<std::pair<std::string, double>> coefficients;

  static Adaptation base() { return {}; }
  static Adaptation expert(const std::string& name) { return {{{name, 1.0}}}; }
  // "a=0.7,b=0.3"; throws InvalidArgument("mixture", ...) on bad syntax or
  // NaN / negative coefficients.
  static Adaptation parse_mixture(const std::string& text);

  bool is_base() const { return coefficients.empty(); }
  // Canonical text, e.g. "base", "math", "code=0.3,math=0.7".
  std::string key() const;
};

class AdapterStore {
 public:
  struct Stats {
    int64_t hits = 0;
    int64_t misses = 0;
    int64_t evictions = 0;
    double compose_seconds = 0;
    int64_t cached_sets = 0;
    int64_t cached_bytes = 0;
    int64_t factor_bytes = 0;  // the SVD factors on the device
  };

  // Copies the factors to the model's device: U and Vh in the model dtype, s in float32
  // (float64 for a float64 model). Plain tensors, so training can compose under autograd.
  AdapterStore(const model::Transformer& model, const SvdCache& cache, int64_t budget_bytes);

  // Validates the expert against the model and the cached targets (see
  // Expert::validate_for) and adds or replaces it.
  void add(Expert expert, bool force = false);
  // Loads `name` from `experts_dir` (and, for a mixture, its components),
  // never reading outside that folder. Throws NotFound / LoadError.
  void load_from(const std::filesystem::path& experts_dir, const std::string& name, bool force = false);
  // Removes an expert and the composed sets that used it; false if absent.
  bool remove(const std::string& name);
  std::vector<Expert> experts() const;
  std::optional<Expert> find(const std::string& name) const;

  // The adapted matrices, or nullptr for the base model. Throws NotFound for
  // an unknown expert and InvalidArgument for a bad mixture.
  std::shared_ptr<const model::ProjectionSet> weights(const Adaptation& adaptation);
  // The base matrices with those in `z` replaced by their composition; not cached.
  std::shared_ptr<const model::ProjectionSet> compose(const std::map<MatrixId, at::Tensor>& z) const;
  // The SVD factors on the device, for callers that compose under autograd.
  const std::map<MatrixId, SvdFactors>& factors() const { return factors_; }
  // The mixed z vectors of an adaptation, by matrix (what weights() composes).
  std::map<MatrixId, at::Tensor> resolve(const Adaptation& adaptation) const;

  Stats stats() const;
  const std::string& fingerprint() const { return fingerprint_; }

 private:
  struct CachedSet {
    std::shared_ptr<const model::ProjectionSet> weights;
    int64_t bytes = 0;
    std::vector<std::string> experts;  // every expert it was mixed from
    std::list<std::string>::iterator lru;
  };

  std::map<MatrixId, at::Tensor> resolve_locked(const Adaptation& adaptation, std::vector<std::string>& used) const;
  // Every matrix `name` adapts, through nested mixtures.
  std::set<MatrixId> adapted_locked(const std::string& name, int depth) const;
  void accumulate_locked(const std::string& name, double coefficient, const std::set<MatrixId>& matrices, int depth,
                         std::map<MatrixId, at::Tensor>& mixed, std::vector<std::string>& used) const;
  void evict_locked();
  void drop_compositions_using_locked(const std::string& name);

  const model::Transformer& model_;
  std::string fingerprint_;
  Targets targets_;
  std::map<MatrixId, SvdFactors> factors_;  // on the device
  int64_t budget_bytes_;

  mutable std::mutex mutex_;
  std::map<std::string, Expert> experts_;
  std::map<std::string, CachedSet> cache_;
  std::list<std::string> lru_;  // most recent first
  Stats stats_;
};

}  // namespace t2::svf
