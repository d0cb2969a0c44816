#include "t2/engine/scheduler.hpp"

#include <chrono>
#include <cstdio>

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

JobEvent JobEvent::scored(ScoreEvent scores) {
  JobEvent e;
  e.kind = Kind::kScores;
  e.scores = std::move(scores);
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

namespace {

EngineOptions engine_options(const SchedulerOptions& o) {
  EngineOptions e{o.max_batch, o.context, o.max_step_tokens, o.dispatch_slots};
  e.decode_path = o.cuda_graphs ? DecodePath::kAuto : DecodePath::kEager;
  return e;
}

}  // namespace

Scheduler::Scheduler(const model::Transformer& model, tokenizer::Tokenizer tokenizer, std::vector<int64_t> eos_token_ids,
                     svf::AdapterStore& store, dispatch::Dispatcher& dispatcher, SchedulerOptions options,
                     const vision::LlavaNext* vision)
    : store_(store),
      dispatcher_(dispatcher),
      options_(options),
      engine_(model, std::move(tokenizer), std::move(eos_token_ids), engine_options(options), &store, vision),
      kv_cache_bytes_(engine_.kv_cache_bytes()),
      adapter_table_bytes_(engine_.adapter_table_bytes()) {
  if (options_.cuda_graphs) {
    const auto start = std::chrono::steady_clock::now();
    if (const int64_t graphs = engine_.capture_decode_graphs(); graphs > 0) {
      const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
      char took[32];
      std::snprintf(took, sizeof took, "%.1f s", seconds);
      log::info("captured " + std::to_string(graphs) + " decode CUDA graphs in " + took);
    }
  }
  // The engine is the loop's from here on.
  thread_ = std::thread([this] { loop(); });
}

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
  Stats s;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    s.queue_depth = static_cast<int64_t>(queue_.size());
  }
  s.dispatching = dispatching_count_.load();
  s.running = running_count_.load();
  s.steps = steps_.load();
  s.factored_steps = factored_steps_.load();
  s.step_tokens = step_tokens_.load();
  s.encoder_tokens = encoder_tokens_.load();
  s.kv_cache_bytes = kv_cache_bytes_;
  s.adapter_table_bytes = adapter_table_bytes_;
  return s;
}

int64_t Scheduler::reserved_slots() const {
  // Running sequences, plus the n of every job in pass 1 (and its free-text answer's own sequence).
  int64_t reserved = static_cast<int64_t>(running_.size());
  for (const auto& [id, d] : dispatching_) reserved += d.queued.job.n + (d.pass.answer ? 1 : 0);
  return reserved;
}

void Scheduler::loop() {
  for (;;) {
    std::vector<Queued> admitted;
    {
      std::unique_lock<std::mutex> lock(mutex_);
      const bool busy = !running_.empty() || !dispatching_.empty() || !scoring_.empty();
      // Idle: sleep until a job arrives. Busy: poll briefly for cancellations between steps.
      wake_.wait_for(lock, std::chrono::milliseconds(busy ? 0 : 1000),
                     [&] { return !queue_.empty() || draining_ || busy; });
      if (draining_ && queue_.empty() && running_.empty() && dispatching_.empty() && scoring_.empty()) return;
      // A free-text pass 1 needs a sequence slot of its own beside the job's n.
      int64_t free = options_.max_batch - reserved_slots();
      while (!queue_.empty()) {
        const Job& next = queue_.front().job;
        const bool free_text = (next.strategy == dispatch::Strategy::kPrompt || next.strategy == dispatch::Strategy::kClassifier) &&
                               !dispatcher_.constrained();
        // Scoring jobs use the engine's scratch slots, not sequence slots.
        const int64_t need = next.scoring ? 0 : next.n + (free_text ? 1 : 0);
        if (need > free) break;
        free -= need;
        admitted.push_back(std::move(queue_.front()));
        queue_.pop_front();
      }
    }
    for (auto& queued : admitted) admit(std::move(queued));
    drop_cancelled_and_expired();
    if (running_.empty() && dispatching_.empty() && scoring_.empty()) continue;
    StepOutput output;
    try {
      output = engine_.step();
      ++steps_;
      if (output.factored) ++factored_steps_;
      step_tokens_ += output.tokens_run;
      encoder_tokens_ += output.encoder_tokens;
    } catch (const std::exception& e) {
      // A failed step (e.g. out of device memory) ends every job in the engine, not the server.
      log::error(std::string("engine step failed: ") + e.what());
      fail_everything(e.what());
      continue;
    }
    handle_step(std::move(output));
  }
}

void Scheduler::fail_everything(const std::string& message) {
  for (auto& [id, r] : running_) r.handle->push(JobEvent::failed(r.choice, ErrorKind::kInternal, message));
  std::vector<SequenceId> ids;
  for (const auto& [id, r] : running_) ids.push_back(id);
  for (const SequenceId id : ids) {
    engine_.cancel(id);
    finish_choice(id);
  }
  for (auto& [id, d] : dispatching_) {
    engine_.cancel(id);
    d.queued.handle->push(JobEvent::failed(0, ErrorKind::kInternal, message));
    d.queued.handle->close();
  }
  dispatching_.clear();
  dispatching_count_ = 0;
  for (auto& [id, q] : scoring_) {
    engine_.cancel(id);
    q.handle->push(JobEvent::failed(0, ErrorKind::kInternal, message));
    q.handle->close();
  }
  scoring_.clear();
}

void Scheduler::handle_step(StepOutput output) {
  for (ScoreEvent& scores : output.scores) {
    if (const auto job = scoring_.find(scores.request); job != scoring_.end()) {
      job->second.handle->push(JobEvent::scored(std::move(scores)));
      job->second.handle->close();
      scoring_.erase(job);
      continue;
    }
    const auto it = dispatching_.find(scores.request);
    if (it == dispatching_.end()) continue;
    Dispatching d = std::move(it->second);
    dispatching_.erase(it);
    dispatching_count_ = static_cast<int64_t>(dispatching_.size());
    try {
      start_generation(std::move(d.queued), dispatcher_.decide(d.pass, scores));
    } catch (const std::exception& e) {
      d.queued.handle->push(JobEvent::failed(0, kind_of(e), e.what()));
      d.queued.handle->close();
    }
  }
  for (TokenEvent& event : output.tokens) {
    if (const auto d = dispatching_.find(event.sequence); d != dispatching_.end()) {
      d->second.answer += event.text;
      ++d->second.answer_tokens;
      if (!event.finish) continue;
      Dispatching done = std::move(d->second);
      dispatching_.erase(d);
      dispatching_count_ = static_cast<int64_t>(dispatching_.size());
      const auto tokens_run = static_cast<int64_t>(done.pass.answer->prompt.size()) + done.answer_tokens;
      try {
        start_generation(std::move(done.queued), dispatcher_.decide(done.pass, done.answer, tokens_run));
      } catch (const std::exception& e) {
        done.queued.handle->push(JobEvent::failed(0, kind_of(e), e.what()));
        done.queued.handle->close();
      }
      continue;
    }
    const auto it = running_.find(event.sequence);
    if (it == running_.end()) continue;
    const bool finished = event.finish.has_value();
    it->second.handle->push(JobEvent::generated(it->second.choice, std::move(event)));
    if (finished) finish_choice(it->first);
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
  try {
    if (job.scoring) {
      const SequenceId id = engine_.score(*job.scoring);
      scoring_.emplace(id, std::move(queued));
      return;
    }
    dispatch::Decision decision;
    switch (job.strategy) {
      case dispatch::Strategy::kPrompt:
      case dispatch::Strategy::kClassifier: {
        dispatch::Pass1 pass = dispatcher_.plan(job.strategy, job.dispatch_text);
        const SequenceId id = pass.scoring ? engine_.score(*pass.scoring) : engine_.add(*pass.answer);
        dispatching_.emplace(id, Dispatching{std::move(queued), std::move(pass), {}, 0});
        dispatching_count_ = static_cast<int64_t>(dispatching_.size());
        return;
      }
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
    start_generation(std::move(queued), decision);
  } catch (const std::exception& e) {
    handle->push(JobEvent::failed(0, kind_of(e), e.what()));
    handle->close();
  }
}

void Scheduler::start_generation(Queued queued, const dispatch::Decision& decision) {
  Job& job = queued.job;
  const auto& handle = queued.handle;
  std::vector<SequenceId> ids;
  try {
    job.generation.adapter = job.adapter ? job.adapter : store_.adapter(decision.adaptation);
    job.generation.prompt = std::move(job.prompt);
    for (int choice = 0; choice < job.n; ++choice) {
      GenerationRequest request = job.generation;
      // Choices sample independently yet reproducibly under a seed.
      if (request.sampling.seed) request.sampling.seed = *request.sampling.seed + static_cast<uint64_t>(choice);
      ids.push_back(engine_.add(std::move(request)));
    }
  } catch (...) {
    for (const SequenceId id : ids) engine_.cancel(id);  // choices added before the failure
    throw;
  }
  // Only now is the job sure to run: an error before this point is reported as its own kind.
  handle->push(JobEvent::dispatched(decision));
  open_choices_[handle.get()] = job.n;
  for (int choice = 0; choice < job.n; ++choice) running_[ids[static_cast<size_t>(choice)]] = {handle, choice, job.deadline};
  running_count_ = static_cast<int64_t>(running_.size());
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
  // Jobs still in pass 1 or scoring: no choices yet, so one event ends each.
  const auto drop_waiting = [&](auto& jobs, const auto& queued_of) {
    for (auto it = jobs.begin(); it != jobs.end();) {
      const Queued& queued = queued_of(it->second);
      const bool expired = now > queued.job.deadline;
      if (!queued.handle->cancelled() && !expired) {
        ++it;
        continue;
      }
      if (!queued.handle->cancelled()) queued.handle->push(JobEvent::failed(0, ErrorKind::kTimeout, "the request timed out"));
      queued.handle->close();
      engine_.cancel(it->first);
      it = jobs.erase(it);
    }
  };
  drop_waiting(dispatching_, [](const Dispatching& d) -> const Queued& { return d.queued; });
  drop_waiting(scoring_, [](const Queued& q) -> const Queued& { return q; });
  dispatching_count_ = static_cast<int64_t>(dispatching_.size());
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
