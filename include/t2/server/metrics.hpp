// Server metrics in the Prometheus text exposition format (version 0.0.4).
// Counters and histograms are recorded by the HTTP threads; gauges are read
// from the scheduler and the adapter store when /metrics is scraped.
#pragma once

#include <cstdint>
#include <map>
#include <mutex>
#include <string>
#include <vector>

#include "t2/engine/scheduler.hpp"
#include "t2/svf/adapter_store.hpp"

namespace t2::server {

class Histogram {
 public:
  explicit Histogram(std::vector<double> bounds);
  void observe(double value);
  // Appends the _bucket/_sum/_count lines of `name` with extra `labels` ("" or `k="v"`).
  void render(std::string& out, const std::string& name, const std::string& labels) const;

 private:
  std::vector<double> bounds_;
  std::vector<uint64_t> counts_;  // per bucket (not cumulative)
  double sum_ = 0;
  uint64_t count_ = 0;
};

class Metrics {
 public:
  void count_request(const std::string& route, int status, const std::string& adaptation);
  void count_tokens(int64_t prompt, int64_t generated);
  void observe_dispatch(const std::string& strategy, const std::string& label, double seconds);
  void observe_time_to_first_token(double seconds);
  void observe_inter_token(double seconds);

  std::string render(const engine::Scheduler::Stats& scheduler, const svf::AdapterStore::Stats& store) const;

 private:
  mutable std::mutex mutex_;
  std::map<std::string, uint64_t> requests_;   // label set -> count
  std::map<std::string, uint64_t> decisions_;  // label set -> count
  std::map<std::string, Histogram> dispatch_seconds_;
  uint64_t prompt_tokens_ = 0;
  uint64_t generated_tokens_ = 0;
  Histogram time_to_first_token_{{0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10}};
  Histogram inter_token_{{0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5}};
};

// The adaptation label requests are counted under: "base", a stored expert's
// name, or "mixture" for every per-request mixture, so that the label set is
// bounded by the loaded experts whatever mixtures clients send.
std::string adaptation_label(const svf::Adaptation& adaptation);

// Escapes a Prometheus label value.
std::string escape_label(const std::string& value);

}  // namespace t2::server
