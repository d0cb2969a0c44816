// The few-shot CEM adaptations (POST /v1/adaptations) running beside the
// scheduler. AdaptationJobs owns their threads and their progress records:
// each job reads the model (forward is thread-safe; it owns its KV caches)
// and, when done, saves its mixture into the experts folder and loads it into
// the store. shutdown() cancels and joins them, because they read the model,
// which dies after the server.
#pragma once

#include <atomic>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include <nlohmann/json.hpp>

#include "t2/server/http_server.hpp"
#include "t2/train/adapt.hpp"

namespace t2::server {

class AdaptationJobs {
 public:
  AdaptationJobs() = default;
  ~AdaptationJobs();
  AdaptationJobs(const AdaptationJobs&) = delete;
  AdaptationJobs& operator=(const AdaptationJobs&) = delete;

  // Starts `request` on its own thread (its cancel flag and progress callback
  // are this object's) and returns the new job's description.
  nlohmann::json start(std::shared_ptr<ServingContext> serving, train::AdaptRequest request);
  // The job's description ({"id", "object": "adaptation", "status", "progress", ...}), if it exists.
  std::optional<nlohmann::json> describe(const std::string& id) const;
  // Cancels the running jobs and waits for them.
  void shutdown();

 private:
  struct Job {
    std::string id, name, status = "running", error;
    int64_t iteration = 0, iters = 0;
    double best_accuracy = 0;
    nlohmann::json expert;  // the saved expert, once succeeded

    nlohmann::json to_json() const;
  };

  void run(const std::shared_ptr<ServingContext>& serving, const train::AdaptRequest& request, const std::string& id);

  mutable std::mutex mutex_;  // guards jobs_ and threads_
  std::map<std::string, Job> jobs_;
  std::vector<std::thread> threads_;
  std::atomic<bool> cancel_{false};
};

}  // namespace t2::server
