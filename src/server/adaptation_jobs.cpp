#include "t2/server/adaptation_jobs.hpp"

#include "responses.hpp"
#include "t2/common/log.hpp"

namespace t2::server {

using nlohmann::json;

AdaptationJobs::~AdaptationJobs() { shutdown(); }

json AdaptationJobs::start(std::shared_ptr<ServingContext> serving, train::AdaptRequest request) {
  const std::string id = random_id("adapt-");
  request.cancel = &cancel_;
  request.on_iteration = [this, id](int64_t iteration, const train::CemScore& best) {
    std::lock_guard<std::mutex> lock(mutex_);
    jobs_[id].iteration = iteration;
    jobs_[id].best_accuracy = best.accuracy;
  };
  // Held until the description is taken, so it shows the job as it started.
  std::lock_guard<std::mutex> lock(mutex_);
  Job& job = jobs_[id];
  job = {id, request.name, "running", "", 0, request.cem.iters, 0, nullptr};
  threads_.emplace_back([this, serving = std::move(serving), request = std::move(request), id] { run(serving, request, id); });
  return job.to_json();
}

void AdaptationJobs::run(const std::shared_ptr<ServingContext>& serving, const train::AdaptRequest& request,
                         const std::string& id) {
  try {
    svf::Expert mixture = train::adapt_mixture(serving->model, serving->tokenizer, serving->store, request);
    mixture.save(serving->experts_dir / mixture.name);
    serving->store.load_from(serving->experts_dir, mixture.name);
    log::info("adaptation " + id + " wrote expert " + mixture.name);
    std::lock_guard<std::mutex> done(mutex_);
    jobs_[id].status = "succeeded";
    jobs_[id].expert = mixture.to_json();
  } catch (const std::exception& e) {
    log::warn("adaptation " + id + " failed: " + e.what());
    std::lock_guard<std::mutex> failed(mutex_);
    jobs_[id].status = "failed";
    jobs_[id].error = e.what();
  }
}

std::optional<json> AdaptationJobs::describe(const std::string& id) const {
  std::lock_guard<std::mutex> lock(mutex_);
  const auto it = jobs_.find(id);
  if (it == jobs_.end()) return std::nullopt;
  return it->second.to_json();
}

void AdaptationJobs::shutdown() {
  cancel_ = true;
  std::vector<std::thread> running;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    running.swap(threads_);
  }
  for (auto& t : running) t.join();
}

json AdaptationJobs::Job::to_json() const {
  json out = {{"id", id}, {"object", "adaptation"}, {"name", name}, {"status", status},
              {"progress", {{"iteration", iteration}, {"iters", iters}, {"best_accuracy", best_accuracy}}}};
  if (!expert.is_null()) out["expert"] = expert;
  if (!error.empty()) out["error"] = {{"message", error}};
  return out;
}

}  // namespace t2::server
