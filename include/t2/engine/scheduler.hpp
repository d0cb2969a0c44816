// The scheduler: the one thread that owns the model while serving. HTTP
// threads submit jobs into a bounded queue and read each job's events from
// its handle. A job moves queued -> dispatching -> running: it is admitted
// when KV slots free up (continuous batching); pass 1 (dispatch) is a scoring
// request that runs inside the engine's next step beside every other row;
// its decision picks the adapter the job's sequences then generate with.
// Every running sequence advances once per step, whatever the others do.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <deque>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "t2/common/errors.hpp"
#include "t2/dispatch/dispatcher.hpp"
#include "t2/engine/engine.hpp"
#include "t2/svf/adapter_store.hpp"

namespace t2::engine {

struct JobEvent {
  enum class Kind { kDispatch, kToken, kScores, kError };
  Kind kind = Kind::kToken;
  int choice = 0;                 // kToken: which of the n completions
  TokenEvent token;               // kToken
  ScoreEvent scores;              // kScores: a scoring job's one result
  dispatch::Decision decision;    // kDispatch: always the first event
  std::string error;              // kError: the job ended with this message
  ErrorKind error_kind = ErrorKind::kInternal;  // kError: why, for the server to report (never an HTTP status here)

  static JobEvent dispatched(dispatch::Decision decision);
  static JobEvent generated(int choice, TokenEvent token);
  static JobEvent scored(ScoreEvent scores);
  static JobEvent failed(int choice, ErrorKind kind, std::string message);
};

// A job's side of the conversation, shared by the HTTP thread and the scheduler.
class JobHandle {
 public:
  // The next event, or nullopt when the job has ended (all events read) or
  // nothing arrived within `timeout` (then ended() is still false).
  std::optional<JobEvent> next(std::chrono::milliseconds timeout);
  bool ended() const;
  // Asks the scheduler to drop the job; its KV slots are freed before the next step.
  void cancel() { cancelled_ = true; }
  bool cancelled() const { return cancelled_; }

  void push(JobEvent event);
  void close();

 private:
  mutable std::mutex mutex_;
  std::condition_variable ready_;
  std::deque<JobEvent> events_;
  bool closed_ = false;
  std::atomic<bool> cancelled_{false};
};

struct Job {
  std::vector<int64_t> prompt;
  std::string dispatch_text;  // what pass 1 classifies: the user's own words
  dispatch::Strategy strategy = dispatch::Strategy::kNone;
  svf::Adaptation adaptation;  // for the explicit strategy
  // Explicit strategy: run this adapter instead of resolving `adaptation`
  // (CEM candidates, which the store does not hold).
  std::shared_ptr<const svf::Adapter> adapter;
  // A scoring job instead of a generation: its one event is kScores.
  std::optional<ScoringRequest> scoring;
  GenerationRequest generation;
  int n = 1;
  std::chrono::steady_clock::time_point deadline = std::chrono::steady_clock::time_point::max();
};

struct SchedulerOptions {
  int64_t max_batch = 8;        // KV slots = sequences decoded together
  int64_t queue_capacity = 64;  // waiting jobs before submit() refuses
  int64_t context = 0;          // 0: the model's
  int64_t max_step_tokens = 2048;  // tokens per engine step (chunked prefill beyond it)
  int64_t dispatch_slots = 12;     // KV slots for pass 1's scoring rows and cached prefixes
  bool cuda_graphs = true;         // on a GPU, decode steps as CUDA graphs (EngineOptions::decode_path)
};

class Scheduler {
 public:
  struct Stats {
    int64_t queue_depth = 0;
    int64_t dispatching = 0;
    int64_t running = 0;
    int64_t steps = 0;
    int64_t factored_steps = 0;  // steps that ran the per-row SVF path
    int64_t step_tokens = 0;     // tokens through the model, all steps
    int64_t encoder_tokens = 0;  // tokens through the vision encoder, all steps
    int64_t kv_cache_bytes = 0;
    int64_t adapter_table_bytes = 0;
  };

  // All references (and `vision`, the image encoder of a vision-language model, when given) must outlive the scheduler.
  Scheduler(const model::Transformer& model, tokenizer::Tokenizer tokenizer, std::vector<int64_t> eos_token_ids,
            svf::AdapterStore& store, dispatch::Dispatcher& dispatcher, SchedulerOptions options,
            const vision::LlavaNext* vision = nullptr);
  ~Scheduler();
  Scheduler(const Scheduler&) = delete;
  Scheduler& operator=(const Scheduler&) = delete;

  // Queues a job; throws Overloaded when the queue is full and
  // InvalidArgument when it can never run (n above the batch size).
  std::shared_ptr<JobHandle> submit(Job job);
  // Stops taking jobs, finishes the queued and running ones, joins the thread.
  void drain();
  Stats stats() const;
  int64_t context_length() const { return engine_.context_length(); }

 private:
  struct Queued {
    Job job;
    std::shared_ptr<JobHandle> handle;
  };
  struct Running {
    std::shared_ptr<JobHandle> handle;
    int choice;
    std::chrono::steady_clock::time_point deadline;
  };
  // A job whose pass 1 is in the engine (a scoring request or a free-text answer).
  struct Dispatching {
    Queued queued;
    dispatch::Pass1 pass;
    std::string answer;  // free text so far
    int64_t answer_tokens = 0;
  };

  void loop();
  // Starts pass 1, or generation at once when the strategy needs none.
  void admit(Queued queued);
  // Adds the job's sequences under `decision`'s adapter.
  void start_generation(Queued queued, const dispatch::Decision& decision);
  void handle_step(StepOutput output);
  void fail_everything(const std::string& message);
  void drop_cancelled_and_expired();
  void finish_choice(SequenceId id);
  int64_t reserved_slots() const;

  svf::AdapterStore& store_;
  dispatch::Dispatcher& dispatcher_;
  SchedulerOptions options_;
  Engine engine_;  // touched only by the scheduler thread
  const int64_t kv_cache_bytes_;
  const int64_t adapter_table_bytes_;
  std::map<SequenceId, Running> running_;
  std::map<SequenceId, Dispatching> dispatching_;  // by the engine id of pass 1
  std::map<SequenceId, Queued> scoring_;           // scoring jobs by engine id
  std::map<const JobHandle*, int> open_choices_;  // unfinished choices per job

  mutable std::mutex mutex_;
  std::condition_variable wake_;
  std::deque<Queued> queue_;
  bool draining_ = false;
  std::atomic<int64_t> running_count_{0};
  std::atomic<int64_t> dispatching_count_{0};
  std::atomic<int64_t> steps_{0};
  std::atomic<int64_t> factored_steps_{0};
  std::atomic<int64_t> step_tokens_{0};
  std::atomic<int64_t> encoder_tokens_{0};
  std::thread thread_;
};

}  // namespace t2::engine
