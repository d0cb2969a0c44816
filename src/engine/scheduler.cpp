#include "t2/engine/scheduler.hpp"

#include "t2/common/errors.hpp"
#include "t2/common/log.hpp"

namespace t2::engine {

JobEvent JobEvent::dispatched(dispatch::Decision decision) {
  JobEvent e;
  e.kind = Kind::kDispatch;
  e.decision = std::move(decision);
  return e;
}

JobEvent JobEvent::generated(int choice, TokenEvent token) {
  JobEvent e;
  e.kind = Kind::kToken;
  e.choice = choice;
  e.token = std::move(token);
  return e;
}

JobEvent JobEvent::failed(int choice, ErrorKind kind, std::string message) {
  JobEvent e;
  e.kind = Kind::kError;
  e.choice = choice;
  e.error = std::move(message);
  e.error_kind = kind;
  return e;
}

std::optional<JobEvent> JobHandle::next(std::chrono::milliseconds timeout) {
  std::unique_lock<std::mutex> lock(mutex_);
  ready_.wait_for(lock, timeout, [&] { return !events_.empty() || closed_; });
  if (events_.empty()) return std::nullopt;
  JobEvent event = std::move(events_.front());
  events_.pop_front();
  return event;
}

bool JobHandle::ended() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return closed_ && events_.empty();
}

void JobHandle::push(JobEvent event) {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    events_.push_back(std::move(event));
  }
  ready_.notify_all();
}

void JobHandle::close() {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    closed_ = true;
  }
  ready_.notify_all();
}

Scheduler::Scheduler(const model::Transformer& model, tokenizer::Tokenizer tokenizer, std::vector<int64_t> eos_token_ids,
                     svf::AdapterStore& store, dispatch::Dispatcher& dispatcher, SchedulerOptions options)
    : store_(store),
      dispatcher_(dispatcher),
      options_(options),
      engine_(model, std::move(tokenizer), std::move(eos_token_ids), {options.max_batch, options.context}),
      thread_([this] { loop(); }) {}

Scheduler::~Scheduler() { drain(); }

std::shared_ptr<JobHandle> Scheduler::submit(Job job) {
  if (job.n < 1 || job.n > options_.max_batch) {
    throw InvalidArgument("n", "n must be between 1 and " + std::to_string(options_.max_batch));
  }
  auto handle = std::make_shared<JobHandle>();
  {
    std::lock_guard<std::mutex> lock(mutex_);
    if (draining_) throw Overloaded("the server is shutting down");
    if (static_cast<int64_t>(queue_.size()) >= options_.queue_capacity) {
      throw Overloaded("the request queue is full (" + std::to_string(options_.queue_capacity) + " waiting)");
    }
    queue_.push_back({std::move(job), handle});
  }
  wake_.notify_all();
  return handle;
}

void Scheduler::drain() {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    draining_ = true;
  }
  wake_.notify_all();
  if (thread_.joinable()) thread_.join();
}

Scheduler::Stats Scheduler::stats() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return {static_cast<int64_t>(queue_.size()), running_count_.load(), steps_.load()};
}

void Scheduler::loop() {
  for (;;) {
    std::vector<Queued> admitted;
    {
      std::unique_lock<std::mutex> lock(mutex_);
      // Idle: sleep until a job arrives. Busy: poll briefly for cancellations between steps.
      wake_.wait_for(lock, std::chrono::milliseconds(running_.empty() ? 1000 : 0),
                     [&] { return !queue_.empty() || draining_ || !running_.empty(); });
      if (draining_ && queue_.empty() && running_.empty()) return;
      int64_t free = options_.max_batch - static_cast<int64_t>(running_.size());
      while (!queue_.empty() && queue_.front().job.n <= free) {
        free -= queue_.front().job.n;
        admitted.push_back(std::move(queue_.front()));
        queue_.pop_front();
      }
    }
    for (auto& queued : admitted) admit(std::move(queued));
    drop_cancelled_and_expired();
    if (running_.empty()) continue;
    std::vector<TokenEvent> events;
    try {
      events = engine_.step();
      ++steps_;
    } catch (const std::exception& e) {
      // A failed step (e.g. out of device memory) ends every running job, not the server.
      log::error(std::string("decode step failed: ") + e.what());
      for (auto& [id, r] : running_) r.handle->push(JobEvent::failed(r.choice, ErrorKind::kInternal, e.what()));
      std::vector<SequenceId> ids;
      for (const auto& [id, r] : running_) ids.push_back(id);
      for (const SequenceId id : ids) {
        engine_.cancel(id);
        finish_choice(id);
      }
      continue;
    }
    for (TokenEvent& event : events) {
      const auto it = running_.find(event.sequence);
      if (it == running_.end()) continue;
      const bool finished = event.finish.has_value();
      it->second.handle->push(JobEvent::generated(it->second.choice, std::move(event)));
      if (finished) finish_choice(it->first);
    }
  }
}

void Scheduler::admit(Queued queued) {
  Job& job = queued.job;
  const auto& handle = queued.handle;
  if (handle->cancelled()) {
    handle->close();
    return;
  }
  if (std::chrono::steady_clock::now() > job.deadline) {  // timed out while queued: no pass 1 for it
    handle->push(JobEvent::failed(0, ErrorKind::kTimeout, "the request timed out in the queue"));
    handle->close();
    return;
  }
  std::vector<SequenceId> ids;
  try {
    dispatch::Decision decision;
    switch (job.strategy) {
      case dispatch::Strategy::kPrompt:
      case dispatch::Strategy::kClassifier:
        decision = dispatcher_.decide(job.strategy, job.dispatch_text);
        break;
      case dispatch::Strategy::kExplicit:
        decision.strategy = job.strategy;
        decision.adaptation = job.adaptation;
        decision.label = job.adaptation.key();
        break;
      case dispatch::Strategy::kNone:
        decision.strategy = job.strategy;
        decision.label = "base";
        break;
    }
    job.generation.projections = store_.weights(decision.adaptation);
    job.generation.prompt = std::move(job.prompt);
    for (int choice = 0; choice < job.n; ++choice) {
      GenerationRequest request = job.generation;
      // Choices sample independently yet reproducibly under a seed.
      if (request.sampling.seed) request.sampling.seed = *request.sampling.seed + static_cast<uint64_t>(choice);
      ids.push_back(engine_.add(std::move(request)));
    }
    // Only now is the job sure to run: an error before this point is reported as its own kind.
    handle->push(JobEvent::dispatched(decision));
    open_choices_[handle.get()] = job.n;
    for (int choice = 0; choice < job.n; ++choice) running_[ids[static_cast<size_t>(choice)]] = {handle, choice, job.deadline};
    running_count_ = static_cast<int64_t>(running_.size());
  } catch (const std::exception& e) {
    for (const SequenceId id : ids) engine_.cancel(id);  // choices added before the failure
    handle->push(JobEvent::failed(0, kind_of(e), e.what()));
    handle->close();
  }
}

void Scheduler::drop_cancelled_and_expired() {
  const auto now = std::chrono::steady_clock::now();
  std::vector<SequenceId> dropped;
  for (const auto& [id, r] : running_) {
    if (r.handle->cancelled()) {
      dropped.push_back(id);
    } else if (now > r.deadline) {
      r.handle->push(JobEvent::failed(r.choice, ErrorKind::kTimeout, "the request timed out"));
      dropped.push_back(id);
    }
  }
  for (const SequenceId id : dropped) {
    engine_.cancel(id);
    finish_choice(id);
  }
}

void Scheduler::finish_choice(SequenceId id) {
  const auto it = running_.find(id);
  if (it == running_.end()) return;
  const std::shared_ptr<JobHandle> handle = it->second.handle;
  running_.erase(it);
  running_count_ = static_cast<int64_t>(running_.size());
  if (--open_choices_[handle.get()] == 0) {
    open_choices_.erase(handle.get());
    handle->close();
  }
}

}  // namespace t2::engine
