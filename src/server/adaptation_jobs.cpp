#include "t2/server/adaptation_jobs.hpp"

#include <chrono>

#include "responses.hpp"
#include "t2/common/errors.hpp"
#include "t2/common/log.hpp"

namespace t2::server {
namespace {

using nlohmann::json;

// Runs a candidate's work as scheduler jobs, at most `in_flight` at a time, so
// an adaptation never fills the queue that live requests need.
class SchedulerRunner : public train::CandidateRunner {
 public:
  SchedulerRunner(ServingContext& serving, int64_t in_flight, const std::atomic<bool>& cancel)
      : serving_(serving), in_flight_(in_flight), cancel_(cancel) {}

  std::vector<std::string> complete(const std::shared_ptr<const svf::Adapter>& adapter,
                                    const std::vector<std::vector<int64_t>>& prompts,
                                    const train::Generation& generation) override {
    std::vector<std::string> texts(prompts.size());
    run(prompts.size(),
        [&](size_t i) {
          engine::Job job;
          job.prompt = prompts[i];
          job.strategy = adapter ? dispatch::Strategy::kExplicit : dispatch::Strategy::kNone;
          job.adapter = adapter;
          job.generation.sampling.temperature = 0;
          job.generation.max_tokens = generation.max_tokens;
          return job;
        },
        [&](size_t i, const engine::JobEvent& event) {
          if (event.kind == engine::JobEvent::Kind::kToken) texts[i] += event.token.text;
        });
    return texts;
  }

  std::vector<double> answer_log_likelihoods(const std::shared_ptr<const svf::Adapter>& adapter,
                                             const std::vector<std::vector<int64_t>>& prompts,
                                             const std::vector<std::vector<int64_t>>& answers) override {
    std::vector<double> out(prompts.size(), 0.0);
    run(prompts.size(),
        [&](size_t i) {
          engine::Job job;
          job.scoring = engine::ScoringRequest{{}, prompts[i], {answers[i]}, adapter};
          return job;
        },
        [&](size_t i, const engine::JobEvent& event) {
          if (event.kind != engine::JobEvent::Kind::kScores) return;
          for (const double lp : event.scores.logprobs.at(0)) out[i] += lp;
        });
    return out;
  }

 private:
  template <typename Make, typename OnEvent>
  void run(size_t count, Make&& make, OnEvent&& on_event) {
    std::map<size_t, std::shared_ptr<engine::JobHandle>> open;
    size_t next = 0;
    while (next < count || !open.empty()) {
      if (cancel_) {
        for (auto& [i, handle] : open) handle->cancel();
        throw Error("the adaptation was cancelled");
      }
      while (next < count && static_cast<int64_t>(open.size()) < in_flight_) {
        engine::Job job = make(next);
        try {
          open[next] = serving_.scheduler.submit(std::move(job));
        } catch (const Overloaded&) {
          break;  // the queue is busy with live traffic: retry once ours drain
        }
        ++next;
      }
      if (open.empty()) {
        std::this_thread::sleep_for(std::chrono::milliseconds(10));  // the whole queue was full: back off
        continue;
      }
      const auto handle = [&](size_t i, const engine::JobEvent& event) {
        if (event.kind == engine::JobEvent::Kind::kError) {
          for (auto& [k, h] : open) h->cancel();
          throw Error("a candidate's evaluation failed: " + event.error);
        }
        on_event(i, event);
      };
      bool progressed = false;
      for (auto it = open.begin(); it != open.end();) {
        while (auto event = it->second->next(std::chrono::milliseconds(0))) {
          progressed = true;
          handle(it->first, *event);
        }
        it = it->second->ended() ? open.erase(it) : std::next(it);
      }
      // Nothing new: wait on the oldest job (bounded, so a cancel is seen soon).
      if (!progressed && !open.empty()) {
        if (auto event = open.begin()->second->next(std::chrono::milliseconds(50))) handle(open.begin()->first, *event);
      }
    }
  }

  ServingContext& serving_;
  int64_t in_flight_;
  const std::atomic<bool>& cancel_;
};

}  // namespace

AdaptationJobs::AdaptationJobs(AdaptationLimits limits) : limits_(limits), worker_([this] { work(); }) {}

AdaptationJobs::~AdaptationJobs() { shutdown(); }

json AdaptationJobs::start(std::shared_ptr<ServingContext> serving, train::AdaptRequest request) {
  const int64_t evaluations = request.cem.population * request.cem.iters * static_cast<int64_t>(request.examples.size());
  if (evaluations > limits_.max_evaluations) {
    throw InvalidArgument("population", "population * iters * examples is " + std::to_string(evaluations) +
                                            "; the limit is " + std::to_string(limits_.max_evaluations) + " evaluations per adaptation");
  }
  const std::string id = random_id("adapt-");
  std::lock_guard<std::mutex> lock(mutex_);
  if (stopping_) throw Overloaded("the server is shutting down");
  if (static_cast<int64_t>(queue_.size() + (running_.empty() ? 0 : 1)) >= limits_.max_queued) {
    throw Overloaded("adaptations: " + std::to_string(limits_.max_queued) + " jobs are already queued or running");
  }
  // Reserved under the lock, so two jobs can never both take a name.
  const std::string& name = request.name;
  if (reserved_names_.count(name) > 0) throw NameTaken("name", "another adaptation is already writing '" + name + "'");
  if (serving->store.find(name)) throw NameTaken("name", "expert '" + name + "' already exists");
  if (std::filesystem::exists(serving->experts_dir / name)) {
    throw NameTaken("name", "'" + name + "' exists in the experts folder (delete it there first)");
  }
  reserved_names_.insert(name);
  Job& job = jobs_[id];
  job = {id, name, "queued", "", 0, request.cem.iters, 0, nullptr};
  queue_.push_back({id, std::move(serving), std::move(request)});
  wake_.notify_all();
  return job.to_json();
}

void AdaptationJobs::work() {
  for (;;) {
    Pending pending;
    {
      std::unique_lock<std::mutex> lock(mutex_);
      wake_.wait(lock, [&] { return stopping_ || !queue_.empty(); });
      if (stopping_) return;
      pending = std::move(queue_.front());
      queue_.pop_front();
      running_ = pending.id;
      cancel_running_ = false;
      jobs_[pending.id].status = "running";
    }
    run(pending);
  }
}

void AdaptationJobs::run(Pending& pending) {
  const std::string& id = pending.id;
  ServingContext& serving = *pending.serving;
  train::AdaptRequest& request = pending.request;
  request.cancel = &cancel_running_;
  request.on_iteration = [this, id](int64_t iteration, const train::CemScore& best) {
    std::lock_guard<std::mutex> lock(mutex_);
    jobs_[id].iteration = iteration;
    jobs_[id].best_accuracy = best.accuracy;
  };
  try {
    SchedulerRunner runner(serving, limits_.max_in_flight, cancel_running_);
    svf::Expert mixture = train::adapt_mixture(serving.tokenizer, serving.store, runner, request);
    mixture.save(serving.experts_dir / mixture.name);
    serving.store.load_from(serving.experts_dir, mixture.name);
    log::info("adaptation " + id + " wrote expert " + mixture.name);
    finish(id, "succeeded", "", mixture.to_json());
  } catch (const std::exception& e) {
    const bool cancelled = cancel_running_.load();
    if (!cancelled) log::warn("adaptation " + id + " failed: " + e.what());
    finish(id, cancelled ? "cancelled" : "failed", cancelled ? "" : e.what(), nullptr);
  }
}

void AdaptationJobs::finish(const std::string& id, const std::string& status, const std::string& error, json expert) {
  std::lock_guard<std::mutex> lock(mutex_);
  Job& job = jobs_[id];
  job.status = status;
  job.error = error;
  job.expert = std::move(expert);
  reserved_names_.erase(job.name);
  if (running_ == id) running_.clear();
  finished_.push_back(id);
  while (finished_.size() > limits_.max_records) {
    jobs_.erase(finished_.front());
    finished_.pop_front();
  }
}

std::optional<json> AdaptationJobs::describe(const std::string& id) const {
  std::lock_guard<std::mutex> lock(mutex_);
  const auto it = jobs_.find(id);
  if (it == jobs_.end()) return std::nullopt;
  return it->second.to_json();
}

std::optional<json> AdaptationJobs::cancel(const std::string& id) {
  std::unique_lock<std::mutex> lock(mutex_);
  const auto it = jobs_.find(id);
  if (it == jobs_.end()) return std::nullopt;
  if (running_ == id) {
    cancel_running_ = true;  // the worker finishes it as "cancelled" between scheduler events
    return it->second.to_json();
  }
  for (auto q = queue_.begin(); q != queue_.end(); ++q) {
    if (q->id != id) continue;
    queue_.erase(q);
    lock.unlock();
    finish(id, "cancelled", "", nullptr);
    return describe(id);
  }
  return it->second.to_json();  // already finished
}

void AdaptationJobs::shutdown() {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    stopping_ = true;
    cancel_running_ = true;
  }
  wake_.notify_all();
  if (worker_.joinable()) worker_.join();
}

json AdaptationJobs::Job::to_json() const {
  json out = {{"id", id}, {"object", "adaptation"}, {"name", name}, {"status", status},
              {"progress", {{"iteration", iteration}, {"iters", iters}, {"best_accuracy", best_accuracy}}}};
  if (!expert.is_null()) out["expert"] = expert;
  if (!error.empty()) out["error"] = {{"message", error}};
  return out;
}

}  // namespace t2::server
