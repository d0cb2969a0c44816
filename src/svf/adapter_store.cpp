#include "t2/svf/adapter_store.hpp"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <set>
#include <sstream>

#include <ATen/core/grad_mode.h>
#include <c10/core/InferenceMode.h>

#include "t2/common/errors.hpp"
#include "t2/common/log.hpp"
#include "t2/svf/compose.hpp"

namespace t2::svf {
namespace {

constexpr int kMaxMixtureDepth = 4;  // a mixture of mixtures of ... (guards against cycles)
constexpr size_t kMaxResolvedAdapters = 256;  // per-request mixtures must not grow the store without bound

void check_coefficient(const std::string& name, double a) {
  if (!std::isfinite(a) || a < 0) {
    throw InvalidArgument("mixture", "coefficient of '" + name + "' must be finite and >= 0");
  }
}

}  // namespace

Adaptation Adaptation::parse_mixture(const std::string& text) {
  Adaptation a;
  std::stringstream items(text);
  std::string item;
  while (std::getline(items, item, ',')) {
    const auto eq = item.find('=');
    if (eq == std::string::npos || eq == 0) throw InvalidArgument("mixture", "expected name=weight, got '" + item + "'");
    const std::string name = item.substr(0, eq);
    double weight = 0;
    try {
      size_t used = 0;
      weight = std::stod(item.substr(eq + 1), &used);
      if (used != item.size() - eq - 1) throw std::invalid_argument("trailing");
    } catch (const std::exception&) {
      throw InvalidArgument("mixture", "weight of '" + name + "' is not a number");
    }
    check_coefficient(name, weight);
    a.coefficients.emplace_back(name, weight);
  }
  if (a.coefficients.empty()) throw InvalidArgument("mixture", "empty mixture");
  return a;
}

std::string Adaptation::key() const {
  if (coefficients.empty()) return "base";
  if (coefficients.size() == 1 && coefficients[0].second == 1.0) return coefficients[0].first;
  auto sorted = coefficients;
  std::sort(sorted.begin(), sorted.end());
  std::string k;
  for (const auto& [name, weight] : sorted) {
    char buffer[32];
    std::snprintf(buffer, sizeof buffer, "%.9g", weight);
    k += (k.empty() ? "" : ",") + name + "=" + buffer;
  }
  return k;
}

AdapterStore::AdapterStore(const model::Transformer& model, const SvdCache& cache, int64_t budget_bytes)
    : model_(model),
      fingerprint_(cache.fingerprint()),
      targets_(cache.targets()),
      budget_bytes_(budget_bytes),
      composer_([this] { composer_loop(); }) {
  at::NoGradGuard no_grad;  // normal tensors, so training can compose from them under autograd
  const auto& placement = model.placement();
  for (const auto& [id, f] : cache.factors()) {
    factors_.emplace(id, SvdFactors{f.U.to(placement.device, placement.dtype),
                                    f.s.to(placement.device, at::promote_types(placement.dtype, at::kFloat)),
                                    f.Vh.to(placement.device, placement.dtype)});
    stats_.factor_bytes += static_cast<int64_t>(factors_.at(id).U.nbytes() + factors_.at(id).s.nbytes() +
                                                factors_.at(id).Vh.nbytes());
  }
}

AdapterStore::~AdapterStore() {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    stopping_ = true;
  }
  compose_wake_.notify_all();
  composer_.join();
}

void AdapterStore::add(Expert expert, bool force) {
  expert.validate_for(model_.config(), fingerprint_, force);
  for (const auto& matrix : expert.matrices()) {
    const auto id = parse_weight_name(matrix, model_.config().num_layers);
    if (!id || factors_.count(*id) == 0) {
      throw LoadError("expert '" + expert.name + "': adapts '" + matrix + "', which the SVD cache (targets " +
                      to_string(targets_) + ") does not cover; rebuild it with --targets all");
    }
  }
  const std::string name = expert.name;
  std::lock_guard<std::mutex> lock(mutex_);
  experts_.erase(name);
  experts_.emplace(name, std::move(expert));
  ++revision_;
  drop_adapters_using_locked(name);  // they used the older version
}

void AdapterStore::load_from(const std::filesystem::path& experts_dir, const std::string& name, bool force) {
  // Read and validate the whole tree first, so a mixture whose component is
  // broken leaves nothing half-registered; then add components before mixtures.
  std::vector<Expert> tree;
  std::vector<std::string> pending = {name};
  std::set<std::string> seen;
  while (!pending.empty()) {
    const std::string next = pending.back();
    pending.pop_back();
    if (!seen.insert(next).second) continue;
    if (!is_valid_expert_name(next)) throw InvalidArgument("expert", "invalid expert name '" + next + "'");
    Expert expert = Expert::load(experts_dir / next);
    expert.validate_for(model_.config(), fingerprint_, force);
    for (const auto& component : expert.components) pending.push_back(component.expert);
    tree.push_back(std::move(expert));
  }
  for (auto it = tree.rbegin(); it != tree.rend(); ++it) add(std::move(*it), force);
}

bool AdapterStore::remove(const std::string& name) {
  std::lock_guard<std::mutex> lock(mutex_);
  if (experts_.erase(name) == 0) return false;
  ++revision_;
  drop_adapters_using_locked(name);
  return true;
}

std::vector<Expert> AdapterStore::experts() const {
  std::lock_guard<std::mutex> lock(mutex_);
  std::vector<Expert> out;
  for (const auto& [name, e] : experts_) out.push_back(e);
  return out;
}

std::optional<Expert> AdapterStore::find(const std::string& name) const {
  std::lock_guard<std::mutex> lock(mutex_);
  const auto it = experts_.find(name);
  return it == experts_.end() ? std::nullopt : std::optional<Expert>(it->second);
}

std::map<MatrixId, at::Tensor> AdapterStore::resolve(const Adaptation& adaptation) const {
  std::lock_guard<std::mutex> lock(mutex_);
  std::vector<std::string> used;
  return resolve_locked(adaptation, used);
}

std::set<MatrixId> AdapterStore::adapted_locked(const std::string& name, int depth) const {
  if (depth > kMaxMixtureDepth) throw InvalidArgument("mixture", "mixtures nest too deeply (a cycle?)");
  const auto it = experts_.find(name);
  if (it == experts_.end()) throw NotFound("expert '" + name + "' is not loaded");
  std::set<MatrixId> ids;
  for (const auto& [matrix, z] : it->second.z) ids.insert(*parse_weight_name(matrix, model_.config().num_layers));
  for (const auto& c : it->second.components) {
    const auto inner = adapted_locked(c.expert, depth + 1);
    ids.insert(inner.begin(), inner.end());
  }
  return ids;
}

void AdapterStore::accumulate_locked(const std::string& name, double coefficient, const std::set<MatrixId>& matrices,
                                     int depth, std::map<MatrixId, at::Tensor>& mixed, std::vector<std::string>& used) const {
  // z += a * z_e on every matrix of the mixture; a matrix e leaves alone counts as z_e = 1.
  const Expert& e = experts_.at(name);
  used.push_back(name);
  if (e.kind == ExpertKind::kSvf) {
    for (const MatrixId& id : matrices) {
      const auto found = e.z.find(id.weight_name());
      const at::Tensor& s = factors_.at(id).s;
      const at::Tensor z = found != e.z.end() ? found->second.to(s.device()) : at::ones_like(s);
      auto slot = mixed.try_emplace(id, at::zeros_like(s)).first;
      slot->second.add_(z, coefficient);
    }
    return;
  }
  // A stored mixture: each component scaled by its own (global or per-matrix) coefficient.
  for (const MixtureComponent& c : e.components) {
    std::map<MatrixId, at::Tensor> inner;
    accumulate_locked(c.expert, 1.0, matrices, depth + 1, inner, used);
    for (const auto& [id, z] : inner) {
      auto slot = mixed.try_emplace(id, at::zeros_like(z)).first;
      slot->second.add_(z, coefficient * c.coefficient_for(id.weight_name()));
    }
  }
}

std::map<MatrixId, at::Tensor> AdapterStore::resolve_locked(const Adaptation& adaptation, std::vector<std::string>& used) const {
  std::set<MatrixId> matrices;
  for (const auto& [name, coefficient] : adaptation.coefficients) {
    check_coefficient(name, coefficient);
    const auto ids = adapted_locked(name, 0);
    matrices.insert(ids.begin(), ids.end());
  }
  std::map<MatrixId, at::Tensor> mixed;
  for (const auto& [name, coefficient] : adaptation.coefficients) accumulate_locked(name, coefficient, matrices, 0, mixed, used);
  return mixed;
}

std::shared_ptr<const Adapter> AdapterStore::adapter(const Adaptation& adaptation) {
  if (adaptation.is_base()) return nullptr;
  const std::string key = adaptation.key();
  std::map<MatrixId, at::Tensor> mixed;
  std::vector<std::string> used;
  uint64_t revision = 0;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    if (const auto it = adapters_.find(key); it != adapters_.end()) {
      adapter_lru_.splice(adapter_lru_.begin(), adapter_lru_, it->second.lru);
      return it->second.adapter;
    }
    c10::InferenceMode guard;
    mixed = resolve_locked(adaptation, used);
    revision = revision_;
  }
  auto resolved = std::const_pointer_cast<Adapter>(adapter_for(key, mixed));
  resolved->revision = revision;
  std::sort(used.begin(), used.end());
  used.erase(std::unique(used.begin(), used.end()), used.end());

  std::lock_guard<std::mutex> lock(mutex_);
  if (revision != revision_) return resolved;  // an expert changed meanwhile: serve it, but do not cache it
  if (const auto it = adapters_.find(key); it != adapters_.end()) return it->second.adapter;  // another thread won
  adapter_lru_.push_front(key);
  adapters_.emplace(key, ResolvedAdapter{resolved, std::move(used), adapter_lru_.begin()});
  while (adapters_.size() > kMaxResolvedAdapters) {
    const std::string oldest = adapter_lru_.back();
    adapter_lru_.pop_back();
    const std::string id = adapters_.at(oldest).adapter->id();
    adapters_.erase(oldest);
    if (const auto c = cache_.find(id); c != cache_.end()) {
      stats_.cached_bytes -= c->second.bytes;
      lru_.erase(c->second.lru);
      cache_.erase(c);
    }
  }
  return resolved;
}

std::shared_ptr<const Adapter> AdapterStore::adapter_for(const std::string& key,
                                                         const std::map<MatrixId, at::Tensor>& z) const {
  c10::InferenceMode guard;
  auto adapter = std::make_shared<Adapter>();
  adapter->key = key;
  for (const auto& [id, vector] : z) {
    const auto f = factors_.find(id);
    if (f == factors_.end()) throw InvalidArgument("z", "'" + id.weight_name() + "' is not covered by the SVD cache");
    adapter->scales.emplace(id, svf_scale(f->second, vector, id.weight_name()));
  }
  return adapter;
}

std::shared_ptr<const model::ProjectionSet> AdapterStore::dense(const Adapter& adapter) {
  if (adapter.dense) return adapter.dense;
  std::lock_guard<std::mutex> lock(mutex_);
  const auto it = cache_.find(adapter.id());
  if (it == cache_.end()) return nullptr;
  ++stats_.hits;
  lru_.splice(lru_.begin(), lru_, it->second.lru);
  return it->second.weights;
}

void AdapterStore::compose_in_background(std::shared_ptr<const Adapter> adapter) {
  if (!adapter || adapter->dense) return;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    const std::string id = adapter->id();
    // Only adapters the store resolved (and still holds) are worth a composed
    // set; a CEM candidate or a stale adapter keeps the factored path.
    const auto held = adapters_.find(adapter->key);
    if (held == adapters_.end() || held->second.adapter->id() != id) return;
    if (cache_.count(id) > 0 || !composing_.insert(id).second) return;
    compose_queue_.push_back(std::move(adapter));
  }
  compose_wake_.notify_all();
}

void AdapterStore::composer_loop() {
  for (;;) {
    std::shared_ptr<const Adapter> next;
    {
      std::unique_lock<std::mutex> lock(mutex_);
      compose_wake_.wait(lock, [&] { return stopping_ || !compose_queue_.empty(); });
      if (stopping_) return;
      next = std::move(compose_queue_.front());
      compose_queue_.pop_front();
    }
    try {
      const auto start = std::chrono::steady_clock::now();
      auto weights = compose_dense(*next);
      const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
      std::lock_guard<std::mutex> lock(mutex_);
      insert_dense_locked(*next, std::move(weights), seconds);
      composing_.erase(next->id());
    } catch (const std::exception& e) {
      // The factored path keeps serving the adapter; only the dense fast path is lost.
      log::warn("composing '" + next->key + "' failed: " + e.what());
      std::lock_guard<std::mutex> lock(mutex_);
      composing_.erase(next->id());
    }
  }
}

std::shared_ptr<const model::ProjectionSet> AdapterStore::compose_dense(const Adapter& adapter) const {
  c10::InferenceMode guard;
  auto weights = std::make_shared<model::ProjectionSet>(model_.base_projections());
  // W' = U diag(scale) Vh, written into `out`; diag(scale) on the smaller factor:
  // Vh's rows when U is the tall one (gate, up), else U's columns.
  const auto compose_into = [&](const MatrixId& id, at::Tensor out) {
    const SvdFactors& f = factors_.at(id);
    const at::Tensor& scale = adapter.scales.at(id);
    const bool tall = f.U.size(0) > f.Vh.size(1);
    return tall ? at::mm_out(out, f.U, f.Vh * scale.unsqueeze(1)) : at::mm_out(out, f.U * scale, f.Vh);
  };
  std::set<MatrixId> stacked;
  // A group adapted whole is composed into one buffer, so it keeps running as one GEMM.
  for (int64_t layer = 0; layer < weights->num_layers(); ++layer) {
    for (const model::ProjectionGroup group : {model::ProjectionGroup::kQKV, model::ProjectionGroup::kGateUp}) {
      const std::vector<model::Projection>& members = model::group_members(group);
      const bool whole = std::all_of(members.begin(), members.end(), [&](model::Projection p) {
        return adapter.scales.count(MatrixId{layer, p}) > 0;
      });
      if (!whole) continue;
      const at::Tensor& base = model_.base_projections().get(layer, members.front());
      int64_t rows = 0;
      for (const model::Projection p : members) rows += model_.base_projections().get(layer, p).size(0);
      at::Tensor buffer = at::empty({rows, base.size(1)}, base.options());
      int64_t offset = 0;
      for (const model::Projection p : members) {
        const int64_t n = model_.base_projections().get(layer, p).size(0);
        compose_into(MatrixId{layer, p}, buffer.narrow(0, offset, n));
        stacked.insert(MatrixId{layer, p});
        offset += n;
      }
      weights->set_stacked(layer, group, std::move(buffer));
    }
  }
  for (const auto& [id, scale] : adapter.scales) {
    if (stacked.count(id) > 0) continue;
    const at::Tensor& base = model_.base_projections().get(id.layer, id.projection);
    weights->set(id.layer, id.projection, compose_into(id, at::empty_like(base)));
  }
  model_.placement().synchronize();  // count the kernels' time, not their launch
  return weights;
}

void AdapterStore::insert_dense_locked(const Adapter& adapter, std::shared_ptr<const model::ProjectionSet> weights,
                                       double seconds) {
  ++stats_.misses;
  stats_.compose_seconds += seconds;
  const std::string id = adapter.id();
  const auto resolved = adapters_.find(adapter.key);
  if (resolved == adapters_.end() || resolved->second.adapter->id() != id || cache_.count(id) > 0) return;  // stale or known
  int64_t bytes = 0;
  for (const auto& [matrix, scale] : adapter.scales) bytes += static_cast<int64_t>(weights->get(matrix.layer, matrix.projection).nbytes());
  lru_.push_front(id);
  cache_.emplace(id, CachedSet{std::move(weights), bytes, lru_.begin()});
  stats_.cached_bytes += bytes;
  evict_locked();
}

std::shared_ptr<const model::ProjectionSet> AdapterStore::weights(const Adaptation& adaptation) {
  const auto resolved = adapter(adaptation);
  if (!resolved) return nullptr;
  if (auto cached = dense(*resolved)) return cached;
  const auto start = std::chrono::steady_clock::now();
  auto composed = compose_dense(*resolved);
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  std::lock_guard<std::mutex> lock(mutex_);
  insert_dense_locked(*resolved, composed, seconds);
  return composed;
}

std::shared_ptr<const model::ProjectionSet> AdapterStore::compose(const std::map<MatrixId, at::Tensor>& z) const {
  c10::InferenceMode guard;
  auto weights = std::make_shared<model::ProjectionSet>(model_.base_projections());
  for (const auto& [id, vector] : z) {
    const auto f = factors_.find(id);
    if (f == factors_.end()) throw InvalidArgument("z", "'" + id.weight_name() + "' is not covered by the SVD cache");
    if (vector.sum().item<double>() <= 0) throw InvalidArgument("mixture", "the z for '" + id.weight_name() + "' is all zeros");
    weights->set(id.layer, id.projection, svf::compose(f->second.U, f->second.s, f->second.Vh, vector.to(f->second.s.device())));
  }
  return weights;
}

void AdapterStore::drop_adapters_using_locked(const std::string& name) {
  for (auto it = adapters_.begin(); it != adapters_.end();) {
    const auto& used = it->second.experts;
    if (std::find(used.begin(), used.end(), name) == used.end()) {
      ++it;
      continue;
    }
    if (const auto c = cache_.find(it->second.adapter->id()); c != cache_.end()) {
      stats_.cached_bytes -= c->second.bytes;
      lru_.erase(c->second.lru);
      cache_.erase(c);
    }
    adapter_lru_.erase(it->second.lru);
    it = adapters_.erase(it);
  }
}

void AdapterStore::evict_locked() {
  // Oldest first; the newest set stays even when it alone exceeds the budget.
  while (stats_.cached_bytes > budget_bytes_ && cache_.size() > 1) {
    const std::string oldest = lru_.back();
    lru_.pop_back();
    stats_.cached_bytes -= cache_.at(oldest).bytes;
    cache_.erase(oldest);
    ++stats_.evictions;
  }
}

void AdapterStore::set_budget_bytes(int64_t bytes) {
  std::lock_guard<std::mutex> lock(mutex_);
  budget_bytes_ = bytes;
  evict_locked();
}

AdapterStore::Stats AdapterStore::stats() const {
  std::lock_guard<std::mutex> lock(mutex_);
  Stats s = stats_;
  s.cached_sets = static_cast<int64_t>(cache_.size());
  s.budget_bytes = budget_bytes_;
  s.adapters = static_cast<int64_t>(adapters_.size());
  return s;
}

}  // namespace t2::svf
