// The adapter store: the experts a server or CLI has loaded, and what an
// adaptation (base, one expert, or a mixture) runs with: its Adapter (the
// per-matrix SVF scales the factored forward uses, cheap and resolved on
// demand) and, when asked for, its dense W' composed on the model's device
// from the cached SVD factors. Composition runs on the store's own thread
// (compose_in_background) or the caller's (weights), never under the lock
// that HTTP threads take; composed sets are cached under a memory budget with
// LRU eviction. All methods are thread-safe.
#pragma once

#include <cstdint>
#include <list>
#include <map>
#include <memory>
#include <condition_variable>
#include <deque>
#include <mutex>
#include <thread>
#include <optional>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "t2/model/transformer.hpp"
#include "t2/svf/adapter.hpp"
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
    int64_t budget_bytes = 0;  // for composed sets
    int64_t adapters = 0;      // resolved adapters held
  };

  // Copies the factors to the model's device: U and Vh in the model dtype, s in float32
  // (float64 for a float64 model). Plain tensors, so training can compose under autograd.
  AdapterStore(const model::Transformer& model, const SvdCache& cache, int64_t budget_bytes);
  ~AdapterStore();
  AdapterStore(const AdapterStore&) = delete;
  AdapterStore& operator=(const AdapterStore&) = delete;

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

  // What `adaptation` runs with, or nullptr for the base model; resolved once
  // and shared until one of its experts changes. Throws NotFound for an
  // unknown expert and InvalidArgument for a bad mixture.
  std::shared_ptr<const Adapter> adapter(const Adaptation& adaptation);
  // An adapter for raw z vectors (training, CEM candidates); not cached.
  std::shared_ptr<const Adapter> adapter_for(const std::string& key, const std::map<MatrixId, at::Tensor>& z) const;
  // The composed dense set of `adapter` if it is cached; never waits.
  std::shared_ptr<const model::ProjectionSet> dense(const Adapter& adapter);
  // Queues the composition of `adapter`'s dense set on the store's thread
  // (once; a no-op when cached or queued, or when the store did not resolve it).
  void compose_in_background(std::shared_ptr<const Adapter> adapter);
  // The adapted matrices, composed now on the caller's thread when not
  // cached, or nullptr for the base model (for CLIs that run one adaptation).
  std::shared_ptr<const model::ProjectionSet> weights(const Adaptation& adaptation);
  // The base matrices with those in `z` replaced by their composition; not cached.
  std::shared_ptr<const model::ProjectionSet> compose(const std::map<MatrixId, at::Tensor>& z) const;
  // The SVD factors on the device, for callers that compose under autograd.
  const std::map<MatrixId, SvdFactors>& factors() const { return factors_; }
  // The mixed z vectors of an adaptation, by matrix (what weights() composes).
  std::map<MatrixId, at::Tensor> resolve(const Adaptation& adaptation) const;

  // A new budget for composed sets, evicting at once if they exceed it.
  void set_budget_bytes(int64_t bytes);
  Stats stats() const;
  const std::string& fingerprint() const { return fingerprint_; }

 private:
  struct CachedSet {
    std::shared_ptr<const model::ProjectionSet> weights;
    int64_t bytes = 0;
    std::list<std::string>::iterator lru;
  };
  struct ResolvedAdapter {
    std::shared_ptr<const Adapter> adapter;
    std::vector<std::string> experts;  // every expert it was mixed from
    std::list<std::string>::iterator lru;
  };

  // U diag(scale) Vh for each of `adapter`'s matrices over the base set; no lock held.
  std::shared_ptr<const model::ProjectionSet> compose_dense(const Adapter& adapter) const;
  // Caches a composed set unless its adapter went stale meanwhile.
  void insert_dense_locked(const Adapter& adapter, std::shared_ptr<const model::ProjectionSet> weights, double seconds);
  void composer_loop();
  std::map<MatrixId, at::Tensor> resolve_locked(const Adaptation& adaptation, std::vector<std::string>& used) const;
  // Every matrix `name` adapts, through nested mixtures.
  std::set<MatrixId> adapted_locked(const std::string& name, int depth) const;
  void accumulate_locked(const std::string& name, double coefficient, const std::set<MatrixId>& matrices, int depth,
                         std::map<MatrixId, at::Tensor>& mixed, std::vector<std::string>& used) const;
  void evict_locked();
  void drop_adapters_using_locked(const std::string& name);

  const model::Transformer& model_;
  std::string fingerprint_;
  Targets targets_;
  std::map<MatrixId, SvdFactors> factors_;  // on the device
  int64_t budget_bytes_;

  mutable std::mutex mutex_;
  std::map<std::string, Expert> experts_;
  uint64_t revision_ = 0;                          // bumped whenever an expert is added or removed
  std::map<std::string, ResolvedAdapter> adapters_;  // by adaptation key
  std::list<std::string> adapter_lru_;             // most recent first
  std::map<std::string, CachedSet> cache_;         // composed sets by adapter id
  std::list<std::string> lru_;                     // most recent first
  Stats stats_;

  std::condition_variable compose_wake_;
  std::deque<std::shared_ptr<const Adapter>> compose_queue_;
  std::set<std::string> composing_;  // adapter ids queued or in progress
  bool stopping_ = false;
  std::thread composer_;  // last: started once everything above exists
};

}  // namespace t2::svf
