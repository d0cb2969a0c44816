#include "t2/server/metrics.hpp"

#include <cstdio>

namespace t2::server {
namespace {

const std::vector<double> kDispatchBounds = {0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1};

std::string number(double v) {
  char buffer[32];
  std::snprintf(buffer, sizeof buffer, "%.9g", v);
  return buffer;
}

void header(std::string& out, const char* name, const char* type, const char* help) {
  out += std::string("# HELP ") + name + " " + help + "\n# TYPE " + name + " " + type + "\n";
}

// A metric with one unlabelled sample.
void single(std::string& out, const char* name, const char* type, const char* help, const std::string& value) {
  header(out, name, type, help);
  out += std::string(name) + " " + value + "\n";
}

}  // namespace

std::string adaptation_label(const svf::Adaptation& adaptation) {
  if (adaptation.is_base()) return "base";
  if (adaptation.coefficients.size() == 1 && adaptation.coefficients[0].second == 1.0) return adaptation.coefficients[0].first;
  return "mixture";
}

std::string escape_label(const std::string& value) {
  std::string out;
  for (const char c : value) {
    if (c == '\\' || c == '"') out += '\\';
    out += c == '\n' ? std::string("\\n") : std::string(1, c);
  }
  return out;
}

Histogram::Histogram(std::vector<double> bounds) : bounds_(std::move(bounds)), counts_(bounds_.size() + 1, 0) {}

void Histogram::observe(double value) {
  size_t i = 0;
  while (i < bounds_.size() && value > bounds_[i]) ++i;
  ++counts_[i];
  sum_ += value;
  ++count_;
}

void Histogram::render(std::string& out, const std::string& name, const std::string& labels) const {
  uint64_t cumulative = 0;
  const std::string sep = labels.empty() ? "" : labels + ",";
  for (size_t i = 0; i <= bounds_.size(); ++i) {
    cumulative += counts_[i];
    const std::string le = i < bounds_.size() ? number(bounds_[i]) : "+Inf";
    out += name + "_bucket{" + sep + "le=\"" + le + "\"} " + std::to_string(cumulative) + "\n";
  }
  const std::string braces = labels.empty() ? "" : "{" + labels + "}";
  out += name + "_sum" + braces + " " + number(sum_) + "\n";
  out += name + "_count" + braces + " " + std::to_string(count_) + "\n";
}

void Metrics::count_request(const std::string& route, int status, const std::string& adaptation) {
  std::lock_guard<std::mutex> lock(mutex_);
  ++requests_["route=\"" + escape_label(route) + "\",status=\"" + std::to_string(status) + "\",adaptation=\"" +
              escape_label(adaptation) + "\""];
}

void Metrics::count_tokens(int64_t prompt, int64_t generated) {
  std::lock_guard<std::mutex> lock(mutex_);
  prompt_tokens_ += static_cast<uint64_t>(prompt);
  generated_tokens_ += static_cast<uint64_t>(generated);
}

void Metrics::observe_dispatch(const std::string& strategy, const std::string& label, double seconds) {
  std::lock_guard<std::mutex> lock(mutex_);
  const std::string key = "strategy=\"" + escape_label(strategy) + "\"";
  dispatch_seconds_.try_emplace(key, kDispatchBounds).first->second.observe(seconds);
  ++decisions_[key + ",label=\"" + escape_label(label) + "\""];
}

void Metrics::observe_time_to_first_token(double seconds) {
  std::lock_guard<std::mutex> lock(mutex_);
  time_to_first_token_.observe(seconds);
}

void Metrics::observe_inter_token(double seconds) {
  std::lock_guard<std::mutex> lock(mutex_);
  inter_token_.observe(seconds);
}

std::string Metrics::render(const engine::Scheduler::Stats& scheduler, const svf::AdapterStore::Stats& store) const {
  std::lock_guard<std::mutex> lock(mutex_);
  std::string out;
  header(out, "t2_requests_total", "counter", "HTTP requests by route, status and adaptation.");
  for (const auto& [labels, n] : requests_) out += "t2_requests_total{" + labels + "} " + std::to_string(n) + "\n";
  single(out, "t2_prompt_tokens_total", "counter", "Prompt tokens processed.", std::to_string(prompt_tokens_));
  single(out, "t2_generated_tokens_total", "counter", "Tokens generated.", std::to_string(generated_tokens_));
  single(out, "t2_queue_depth", "gauge", "Requests waiting for a batch slot.", std::to_string(scheduler.queue_depth));
  single(out, "t2_running_sequences", "gauge", "Sequences in the running batch.", std::to_string(scheduler.running));
  single(out, "t2_dispatching_requests", "gauge", "Requests whose pass 1 is in the engine.", std::to_string(scheduler.dispatching));
  single(out, "t2_decode_steps_total", "counter", "Engine steps run.", std::to_string(scheduler.steps));
  single(out, "t2_factored_steps_total", "counter", "Engine steps that ran the per-row SVF path (mixed adapters).",
         std::to_string(scheduler.factored_steps));
  single(out, "t2_step_tokens_total", "counter", "Tokens through the model in engine steps (prefill, decode and pass 1).",
         std::to_string(scheduler.step_tokens));
  single(out, "t2_image_encoder_tokens_total", "counter", "Tokens through the vision encoder (image patches), all steps.",
         std::to_string(scheduler.encoder_tokens));
  single(out, "t2_kv_cache_bytes", "gauge", "Device memory held by the KV cache.", std::to_string(scheduler.kv_cache_bytes));
  single(out, "t2_adapter_table_bytes", "gauge", "Device memory held by the active adapters' scale rows.",
         std::to_string(scheduler.adapter_table_bytes));
  header(out, "t2_dispatch_decisions_total", "counter", "Pass-1 decisions by strategy and chosen label.");
  for (const auto& [labels, n] : decisions_) out += "t2_dispatch_decisions_total{" + labels + "} " + std::to_string(n) + "\n";
  header(out, "t2_dispatch_latency_seconds", "histogram", "Pass-1 (dispatch) latency.");
  for (const auto& [labels, h] : dispatch_seconds_) h.render(out, "t2_dispatch_latency_seconds", labels);
  header(out, "t2_time_to_first_token_seconds", "histogram", "Time from request to first generated token.");
  time_to_first_token_.render(out, "t2_time_to_first_token_seconds", "");
  header(out, "t2_inter_token_latency_seconds", "histogram", "Time between generated tokens of a sequence.");
  inter_token_.render(out, "t2_inter_token_latency_seconds", "");
  single(out, "t2_adapter_store_hits_total", "counter", "Adapted weight sets served from the cache.", std::to_string(store.hits));
  single(out, "t2_adapter_store_misses_total", "counter", "Adapted weight sets composed.", std::to_string(store.misses));
  single(out, "t2_adapter_store_evictions_total", "counter", "Composed sets evicted under the memory budget.", std::to_string(store.evictions));
  single(out, "t2_adapter_store_compose_seconds_total", "counter", "Time spent composing adapted weights.", number(store.compose_seconds));
  single(out, "t2_adapter_store_cached_bytes", "gauge", "Device memory held by cached composed sets.", std::to_string(store.cached_bytes));
  single(out, "t2_adapter_store_factor_bytes", "gauge", "Device memory held by the SVD factors.", std::to_string(store.factor_bytes));
  single(out, "t2_adapter_store_budget_bytes", "gauge", "Memory budget for cached composed sets.", std::to_string(store.budget_bytes));
  single(out, "t2_adapter_store_adapters", "gauge", "Resolved adapters held (bounded).", std::to_string(store.adapters));
  return out;
}

}  // namespace t2::server
