// The few-shot CEM adaptations (POST /v1/adaptations): a bounded queue of
// jobs run one at a time by this object's own worker thread. Each candidate's
// generations and answer scores go through the scheduler as ordinary jobs (a
// few in flight at once), so CEM shares the engine's steps and memory with
// live traffic instead of building engines of its own. A job's name is
// reserved when it is accepted, so no two jobs, loaded experts or folders on
// disk can share it; the finished mixture is saved and loaded into the store.
// shutdown() cancels everything and joins the worker (the jobs read the
// model, which dies after the server).
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <thread>

#include <nlohmann/json.hpp>

#include "t2/server/http_server.hpp"
#include "t2/train/adapt.hpp"

namespace t2::server {

struct AdaptationLimits {
  int64_t max_queued = 8;  // accepted jobs not yet finished, beyond which POST gets 429
  // Candidate-example evaluations per job: population * iters * examples.
  int64_t max_evaluations = 16384;
  int64_t max_in_flight = 4;  // scheduler jobs one adaptation keeps in flight
  size_t max_records = 256;   // finished jobs remembered for GET
};

class AdaptationJobs {
 public:
  explicit AdaptationJobs(AdaptationLimits limits = {});
  ~AdaptationJobs();
  AdaptationJobs(const AdaptationJobs&) = delete;
  AdaptationJobs& operator=(const AdaptationJobs&) = delete;

  // Queues `request` and returns the new job's description. Throws
  // Overloaded when max_queued jobs are waiting or running, InvalidArgument
  // naming the limit for a job beyond max_evaluations, and NameTaken when
  // the name is a loaded expert, a folder in the experts directory or
  // another job's.
  nlohmann::json start(std::shared_ptr<ServingContext> serving, train::AdaptRequest request);
  // The job's description ({"id", "object": "adaptation", "status", "progress", ...}), if it exists.
  std::optional<nlohmann::json> describe(const std::string& id) const;
  // Cancels a queued or running job; its description, or nullopt when unknown.
  std::optional<nlohmann::json> cancel(const std::string& id);
  // Cancels every job and joins the worker.
  void shutdown();

 private:
  struct Job {
    std::string id, name, status = "queued", error;
    int64_t iteration = 0, iters = 0;
    double best_accuracy = 0;
    nlohmann::json expert;  // the saved expert, once succeeded

    nlohmann::json to_json() const;
  };
  struct Pending {
    std::string id;
    std::shared_ptr<ServingContext> serving;
    train::AdaptRequest request;
  };

  void work();
  void run(Pending& pending);
  void finish(const std::string& id, const std::string& status, const std::string& error, nlohmann::json expert);

  AdaptationLimits limits_;
  mutable std::mutex mutex_;  // guards everything below
  std::condition_variable wake_;
  std::map<std::string, Job> jobs_;
  std::deque<std::string> finished_;  // oldest first, to bound jobs_
  std::deque<Pending> queue_;
  std::set<std::string> reserved_names_;
  std::string running_;  // the job id the worker runs, if any
  std::atomic<bool> cancel_running_{false};
  bool stopping_ = false;
  std::thread worker_;  // last: started once everything above exists
};

}  // namespace t2::server
