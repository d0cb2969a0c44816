// POST /v1/completions and POST /v1/chat/completions. A request becomes one
// scheduler job per prompt (job_builder.cpp); the handler waits for every
// job's dispatch decision, after which its HTTP status is known, then answers
// with one JSON body or streams server-sent events. This file owns turning a
// job's events into OpenAI responses, the request's metrics and its log line.
#include <chrono>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "api_errors.hpp"
#include "completion_responses.hpp"
#include "job_builder.hpp"
#include "responses.hpp"
#include "routes.hpp"
#include "sse.hpp"
#include "t2/common/log.hpp"

namespace t2::server {
namespace {

using nlohmann::json;
using Clock = std::chrono::steady_clock;

// Cancels a job when its request is gone, whatever the path (a no-op once it ended).
class CancelOnExit {
 public:
  explicit CancelOnExit(std::shared_ptr<engine::JobHandle> handle) : handle_(std::move(handle)) {}
  CancelOnExit(CancelOnExit&&) = default;
  CancelOnExit& operator=(CancelOnExit&&) = default;
  ~CancelOnExit() {
    if (handle_) handle_->cancel();
  }
  engine::JobHandle* operator->() const { return handle_.get(); }

 private:
  std::shared_ptr<engine::JobHandle> handle_;
};

// A submitted prompt and what it is known to have produced so far.
struct Submitted {
  CancelOnExit handle;
  int64_t prompt_tokens = 0;
  std::string echo;  // prompt text to put before the completion
  dispatch::Decision decision;
  std::vector<ChoiceResult> choices;
};

void log_request(const std::string& id, const char* route, int status, const std::string& adaptation, int64_t prompt_tokens,
                 int64_t completion_tokens, Clock::time_point start) {
  const double ms = std::chrono::duration<double, std::milli>(Clock::now() - start).count();
  log::info(id + " " + route + " " + std::to_string(status) + " adaptation=" + adaptation + " prompt_tokens=" +
            std::to_string(prompt_tokens) + " completion_tokens=" + std::to_string(completion_tokens) + " ms=" +
            std::to_string(static_cast<int64_t>(ms)));
}

Submitted submit(const ServingContext& ctx, engine::Job job, std::string echo) {
  const auto prompt_tokens = static_cast<int64_t>(job.prompt.size());
  const auto n = static_cast<size_t>(job.n);
  try {
    Submitted s{CancelOnExit(ctx.scheduler.submit(std::move(job))), prompt_tokens, std::move(echo), {}, {}};
    s.choices.resize(n);
    return s;
  } catch (const Error& e) {  // Overloaded (429) or InvalidArgument (400)
    throw to_api_error(e);
  }
}

// Waits for pass 1 of every job: afterwards the HTTP status is known. A
// client that leaves meanwhile ends the wait (its jobs cancel on the way out).
void await_dispatch(std::vector<Submitted>& jobs, ServingContext& ctx, const httplib::Request& req) {
  const auto deadline = Clock::now() + std::chrono::milliseconds(static_cast<int64_t>(ctx.request_timeout_s * 1000));
  for (auto& job : jobs) {
    for (;;) {
      auto event = job.handle->next(std::chrono::milliseconds(100));
      if (!event) {
        if (job.handle->ended()) throw to_api_error(ErrorKind::kInternal, "the job ended before dispatch");
        if (Clock::now() > deadline) throw to_api_error(ErrorKind::kTimeout, "the request timed out in the queue");
        if (!client_connected(req)) throw client_disconnected();
        continue;
      }
      if (event->kind == engine::JobEvent::Kind::kError) throw to_api_error(*event);
      if (event->kind == engine::JobEvent::Kind::kDispatch) {
        job.decision = event->decision;
        // An explicit decision's label is the request's adaptation: counted as adaptation_label() counts it.
        const bool explicit_choice = job.decision.strategy == dispatch::Strategy::kExplicit;
        ctx.metrics.observe_dispatch(dispatch::to_string(job.decision.strategy),
                                     explicit_choice ? adaptation_label(job.decision.adaptation) : job.decision.label,
                                     job.decision.latency_ms / 1e3);
        break;
      }
    }
  }
}

// Reads a job's token events into its choices; calls `on_piece(choice, event)`
// as they come and `alive()` after each and while waiting (false: the client
// is gone, and the job is cancelled before the scheduler's next step).
template <typename OnPiece, typename Alive>
std::optional<ApiError> collect(Submitted& job, ServingContext& ctx, Clock::time_point start, OnPiece&& on_piece,
                                Alive&& alive) {
  std::optional<Clock::time_point> last_token;
  for (;;) {
    auto event = job.handle->next(std::chrono::milliseconds(200));
    if (!event) {
      if (job.handle->ended()) return std::nullopt;
      if (!alive()) {
        job.handle->cancel();
        return client_disconnected();
      }
      continue;
    }
    if (event->kind == engine::JobEvent::Kind::kError) {
      job.handle->cancel();
      return to_api_error(*event);
    }
    if (event->kind != engine::JobEvent::Kind::kToken) continue;
    const auto now = Clock::now();
    if (event->choice == 0) {
      if (!last_token) ctx.metrics.observe_time_to_first_token(std::chrono::duration<double>(now - start).count());
      else ctx.metrics.observe_inter_token(std::chrono::duration<double>(now - *last_token).count());
      last_token = now;
    }
    ChoiceResult& c = job.choices[static_cast<size_t>(event->choice)];
    const engine::TokenEvent& t = event->token;
    c.text += t.text;
    c.tokens.push_back(t.token);
    c.logprobs.push_back(t.logprob);
    c.top_logprobs.push_back(t.top_logprobs);
    if (t.finish) c.finish_reason = engine::to_string(*t.finish);
    if (!on_piece(event->choice, *event) || !alive()) {
      job.handle->cancel();
      return client_disconnected();
    }
  }
}

// What a request's answer needs once its jobs are dispatched.
struct Answer {
  std::shared_ptr<ServingContext> ctx;
  std::vector<Submitted> jobs;
  ResponseEnvelope envelope;
  int n = 1;  // choices per prompt
  bool wants_logprobs = false;
  const char* route = "";
  std::string adaptation_label;
  Clock::time_point start;
};

// One JSON body, computed before answering so its status reflects how the jobs
// ended; a client that leaves meanwhile cancels every job of its request.
void answer_json(Answer& a, const httplib::Request& req, httplib::Response& res) {
  Usage usage;
  json choices = json::array();
  for (size_t j = 0; j < a.jobs.size(); ++j) {
    Submitted& job = a.jobs[j];
    const auto error = collect(job, *a.ctx, a.start, [](int, const engine::JobEvent&) { return true; },
                               [&req] { return client_connected(req); });
    if (error) throw *error;
    usage.prompt_tokens += job.prompt_tokens;
    for (int c = 0; c < a.n; ++c) {
      const ChoiceResult& r = job.choices[static_cast<size_t>(c)];
      usage.completion_tokens += static_cast<int64_t>(r.tokens.size());
      const int index = static_cast<int>(j) * a.n + c;
      if (a.envelope.chat) {
        choices.push_back({{"index", index},
                           {"message", {{"role", "assistant"}, {"content", r.text}}},
                           {"logprobs", a.wants_logprobs ? chat_logprobs(a.ctx->tokenizer, r) : json(nullptr)},
                           {"finish_reason", r.finish_reason}});
      } else {
        choices.push_back({{"index", index},
                           {"text", job.echo + r.text},
                           {"logprobs", a.wants_logprobs ? completion_logprobs(a.ctx->tokenizer, r, job.echo.size()) : json(nullptr)},
                           {"finish_reason", r.finish_reason}});
      }
    }
  }
  a.ctx->metrics.count_tokens(usage.prompt_tokens, usage.completion_tokens);
  a.ctx->metrics.count_request(a.route, 200, a.adaptation_label);
  log_request(a.envelope.id, a.route, 200, a.adaptation_label, usage.prompt_tokens, usage.completion_tokens, a.start);
  json body = a.envelope.body(std::move(choices));
  body["usage"] = usage.to_json();
  body["t2"] = t2_object(a.jobs.front().decision);
  send_json(res, 200, body);
}

// Streams every job's tokens as they come; false ends the stream early (the client is gone).
// Past the headers nothing can change the status: a job's error becomes an event.
bool stream_events(Answer& a, bool include_usage, httplib::DataSink& sink) {
  SseWriter sse(sink);
  // Each prompt's first chunk, whatever it holds, carries its dispatch decision.
  const dispatch::Decision* pending_decision = nullptr;
  const auto send = [&](json chunk) {
    if (pending_decision != nullptr) {
      chunk["t2"] = t2_object(*pending_decision);
      pending_decision = nullptr;
    }
    return sse.event(chunk);
  };
  const bool chat = a.envelope.chat;
  Usage usage;
  bool ok = true;
  for (size_t j = 0; j < a.jobs.size() && ok; ++j) {
    Submitted& job = a.jobs[j];
    usage.prompt_tokens += job.prompt_tokens;
    pending_decision = &job.decision;
    const int base = static_cast<int>(j) * a.n;
    if (chat) {
      for (int c = 0; c < a.n && ok; ++c) {
        ok = send(a.envelope.chunk(json::array({{{"index", base + c}, {"delta", {{"role", "assistant"}, {"content", ""}}},
                                                 {"logprobs", nullptr}, {"finish_reason", nullptr}}})));
      }
    } else if (!job.echo.empty()) {
      for (int c = 0; c < a.n && ok; ++c) {
        ok = send(a.envelope.chunk(json::array({{{"index", base + c}, {"text", job.echo}, {"logprobs", nullptr}, {"finish_reason", nullptr}}})));
      }
    }
    const auto error = collect(job, *a.ctx, a.start, [&](int choice, const engine::JobEvent& event) {
      const engine::TokenEvent& t = event.token;
      ++usage.completion_tokens;
      const json finish = t.finish ? json(engine::to_string(*t.finish)) : json(nullptr);
      if (t.text.empty() && !t.finish) return true;
      json piece = {{"index", base + choice}, {"logprobs", nullptr}, {"finish_reason", finish}};
      if (chat) {
        piece["delta"] = t.text.empty() ? json::object() : json{{"content", t.text}};
        if (a.wants_logprobs) {
          ChoiceResult single;
          single.tokens = {t.token};
          single.logprobs = {t.logprob};
          single.top_logprobs = {t.top_logprobs};
          piece["logprobs"] = chat_logprobs(a.ctx->tokenizer, single);
        }
      } else {
        piece["text"] = t.text;
      }
      return send(a.envelope.chunk(json::array({piece})));
    }, [&] { return sink.is_writable(); });
    if (error) ok = error->status() != kClientClosedStatus && sse.event(error->body());
  }
  const int status = ok ? 200 : kClientClosedStatus;
  a.ctx->metrics.count_tokens(usage.prompt_tokens, usage.completion_tokens);
  a.ctx->metrics.count_request(a.route, status, a.adaptation_label);
  log_request(a.envelope.id, a.route, status, a.adaptation_label, usage.prompt_tokens, usage.completion_tokens, a.start);
  if (!ok) return false;
  if (include_usage) {
    json last = a.envelope.chunk(json::array());
    last["usage"] = usage.to_json();
    send(last);
  }
  sse.finish();
  return true;
}

void answer_stream(std::shared_ptr<Answer> answer, bool include_usage, httplib::Response& res) {
  res.set_header("Cache-Control", "no-cache");
  res.set_header("X-Accel-Buffering", "no");
  res.set_chunked_content_provider(
      "text/event-stream",
      [answer, include_usage](size_t, httplib::DataSink& sink) {
        try {
          return stream_events(*answer, include_usage, sink);
        } catch (const std::exception& e) {
          // End the stream, never the process.
          log::error(answer->envelope.id + " stream failed: " + e.what());
          return false;
        }
      },
      [answer](bool) {
        for (auto& job : answer->jobs) job.handle->cancel();  // also when the provider never ran
      });
}

// Completions and chat share everything but the shape of a choice.
void generate(const RouteContext& routes, const httplib::Request& req, httplib::Response& res, bool chat) {
  const auto start = Clock::now();
  const char* route = chat ? "/v1/chat/completions" : "/v1/completions";
  const std::string id = random_id(chat ? "chatcmpl-" : "cmpl-");
  res.set_header("X-Request-Id", id);
  auto ctx = routes.admit(req, res);
  if (!ctx) return;
  std::string adaptation = "none";  // its metrics label
  try {
    const json body = parse_body(req.body);
    RequestJobs request = chat ? build_chat_jobs(*ctx, body) : build_completion_jobs(*ctx, body);
    const GenerationFields& fields = request.fields;
    if (!fields.stop.empty() && fields.stop.size() > 4) throw ApiError::bad_request("stop", "at most 4 stop strings");

    std::vector<Submitted> submitted;
    for (auto& job : request.jobs) {
      std::string echo = request.echo ? job.dispatch_text : "";
      submitted.push_back(submit(*ctx, std::move(job), std::move(echo)));  // earlier jobs cancel themselves if this throws
    }
    await_dispatch(submitted, *ctx, req);
    adaptation = adaptation_label(submitted.front().decision.adaptation);

    auto answer = std::make_shared<Answer>(Answer{
        ctx,
        std::move(submitted),
        ResponseEnvelope{id, chat, unix_time(), fields.model.empty() ? ctx->model_id : fields.model, "t2-" + ctx->fingerprint},
        fields.n,
        fields.logprobs >= 0,
        route,
        adaptation,
        start});
    if (fields.stream) return answer_stream(std::move(answer), fields.include_usage, res);
    answer_json(*answer, req, res);
  } catch (const ApiError& e) {
    ctx->metrics.count_request(route, e.status(), adaptation);
    log_request(id, route, e.status(), adaptation, 0, 0, start);
    send_error(res, e);
  } catch (const InvalidArgument& e) {
    ctx->metrics.count_request(route, 400, adaptation);
    send_error(res, to_api_error(e));
  } catch (const json::exception& e) {
    ctx->metrics.count_request(route, 400, adaptation);
    send_error(res, ApiError::bad_request("", std::string("malformed request: ") + e.what()));
  }
}

}  // namespace

void register_completion_routes(httplib::Server& http, const RouteContext& routes) {
  http.Post("/v1/completions", [routes](const auto& req, auto& res) { generate(routes, req, res, false); });
  http.Post("/v1/chat/completions", [routes](const auto& req, auto& res) { generate(routes, req, res, true); });
}

}  // namespace t2::server
