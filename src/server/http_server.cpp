#include "t2/server/http_server.hpp"

#include <httplib.h>

#include <chrono>
#include <random>
#include <thread>

#include "t2/common/log.hpp"
#include "t2/server/openai.hpp"
#include "t2/train/adapt.hpp"

namespace t2::server {
namespace {

using nlohmann::json;
using Clock = std::chrono::steady_clock;

std::string random_id(const std::string& prefix) {
  static thread_local std::mt19937_64 rng{std::random_device{}()};
  static const char* kAlphabet = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
  std::string id = prefix;
  for (int i = 0; i < 24; ++i) id += kAlphabet[rng() % 62];
  return id;
}

int64_t unix_time() {
  return std::chrono::duration_cast<std::chrono::seconds>(std::chrono::system_clock::now().time_since_epoch()).count();
}

// Byte-fallback tokens can be partial UTF-8; such bytes become U+FFFD instead of throwing.
std::string dump(const json& body) { return body.dump(-1, ' ', false, json::error_handler_t::replace); }

void send_json(httplib::Response& res, int status, const json& body) {
  res.status = status;
  res.set_content(dump(body), "application/json");
}

void send_error(httplib::Response& res, const ApiError& e) {
  if (e.status() == 429) res.set_header("Retry-After", "1");
  send_json(res, e.status(), e.body());
}

ApiError from_job_error(const engine::JobEvent& event) {
  switch (event.status) {
    case 400: return ApiError::bad_request("", event.error);
    case 404: return ApiError::not_found("expert", event.error, "expert_not_found");
    case 504: return ApiError(504, "timeout_error", event.error, "", "timeout");
    default: return ApiError(500, "server_error", event.error);
  }
}

// What one choice produced.
struct ChoiceResult {
  std::string text;
  std::vector<int64_t> tokens;
  std::vector<float> logprobs;
  std::vector<std::vector<std::pair<int64_t, float>>> top_logprobs;
  std::string finish_reason = "length";
};

// Cancels a job when its request is gone, whatever the path (a no-op once it ended).
struct CancelOnExit {
  std::shared_ptr<engine::JobHandle> handle;
  CancelOnExit(std::shared_ptr<engine::JobHandle> h) : handle(std::move(h)) {}
  CancelOnExit(CancelOnExit&&) = default;
  CancelOnExit& operator=(CancelOnExit&&) = default;
  ~CancelOnExit() {
    if (handle) handle->cancel();
  }
  engine::JobHandle* operator->() const { return handle.get(); }
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

json t2_object(const dispatch::Decision& d) {
  return {{"adaptation", d.adaptation.key()},
          {"strategy", dispatch::to_string(d.strategy)},
          {"label", d.label},
          {"scores", d.scores},
          {"dispatch_ms", d.latency_ms},
          {"dispatch_tokens", d.prompt_tokens},
          {"dispatch_cached_tokens", d.cached_tokens}};
}

}  // namespace

bool constant_time_equal(const std::string& a, const std::string& b) {
  unsigned char diff = a.size() == b.size() ? 0 : 1;
  for (size_t i = 0; i < b.size(); ++i) diff |= static_cast<unsigned char>(a[i % (a.empty() ? 1 : a.size())] ^ b[i]);
  return diff == 0 && !a.empty();
}

// Few-shot adaptations running beside the scheduler: each reads the model
// (forward is thread-safe; it owns its KV caches) and, when done, saves its
// mixture into the experts folder and loads it into the store.
struct HttpServer::Adaptations {
  struct Job {
    std::string id, name, status = "running", error;
    int64_t iteration = 0, iters = 0;
    double best_accuracy = 0;
    json expert;
  };
  std::mutex mutex;
  std::map<std::string, Job> jobs;
  std::vector<std::thread> threads;
  std::atomic<bool> cancel{false};

  ~Adaptations() { shutdown(); }
  // Cancels the running jobs and waits for them: they read the model, which dies after the server.
  void shutdown() {
    cancel = true;
    std::vector<std::thread> running;
    {
      std::lock_guard<std::mutex> lock(mutex);
      running.swap(threads);
    }
    for (auto& t : running) t.join();
  }

  json describe(const Job& j) {
    json out = {{"id", j.id}, {"object", "adaptation"}, {"name", j.name}, {"status", j.status},
                {"progress", {{"iteration", j.iteration}, {"iters", j.iters}, {"best_accuracy", j.best_accuracy}}}};
    if (!j.expert.is_null()) out["expert"] = j.expert;
    if (!j.error.empty()) out["error"] = {{"message", j.error}};
    return out;
  }
};

// The route handlers, with the state of one server.
struct HttpServer::Routes {
  HttpServer& server;

  std::shared_ptr<ServingContext> context() const { return std::atomic_load(&server.context_); }

  // 401 unless a configured key is presented as a Bearer token.
  bool authorised(const httplib::Request& req) const {
    if (server.api_keys_.empty()) return true;
    const std::string header = req.get_header_value("Authorization");
    static const std::string kBearer = "Bearer ";
    if (header.rfind(kBearer, 0) != 0) return false;
    const std::string key = header.substr(kBearer.size());
    bool ok = false;
    for (const auto& k : server.api_keys_) ok = constant_time_equal(k, key) || ok;  // no early exit
    return ok;
  }

  // Common gate: auth, readiness; returns the context or answers the error.
  std::shared_ptr<ServingContext> admit(const httplib::Request& req, httplib::Response& res) const {
    if (!authorised(req)) {
      send_error(res, ApiError(401, "invalid_request_error", "invalid or missing API key (Authorization: Bearer ...)", "", "invalid_api_key"));
      return nullptr;
    }
    auto ctx = context();
    if (!ctx) {
      send_error(res, ApiError(503, "server_error", "the model is still loading", "", "model_loading"));
      return nullptr;
    }
    if (server.draining_) {
      send_error(res, ApiError(503, "server_error", "the server is shutting down", "", "shutting_down"));
      return nullptr;
    }
    return ctx;
  }

  // Which adaptation and strategy a request asks for.
  static void choose_adaptation(const ServingContext& ctx, const GenerationFields& f, engine::Job& job) {
    const auto require_loaded = [&](const std::string& name, const char* param) {
      if (!ctx.store.find(name)) throw ApiError::not_found(param, "expert '" + name + "' is not loaded", "expert_not_found");
    };
    if (!f.mixture.empty()) {
      for (const auto& [name, w] : f.mixture) require_loaded(name, "mixture");
      job.strategy = dispatch::Strategy::kExplicit;
      job.adaptation.coefficients = f.mixture;
      return;
    }
    if (f.expert && *f.expert != "auto") {
      if (*f.expert == "none") {
        job.strategy = dispatch::Strategy::kNone;
        return;
      }
      require_loaded(*f.expert, "expert");
      job.strategy = dispatch::Strategy::kExplicit;
      job.adaptation = svf::Adaptation::expert(*f.expert);
      return;
    }
    if (!f.model.empty() && f.model != ctx.model_id) {
      if (!ctx.store.find(f.model)) {
        throw ApiError::not_found("model", "the model '" + f.model + "' does not exist", "model_not_found");
      }
      job.strategy = dispatch::Strategy::kExplicit;
      job.adaptation = svf::Adaptation::expert(f.model);
      return;
    }
    try {
      job.strategy = f.dispatch ? dispatch::parse_strategy(*f.dispatch) : ctx.default_strategy;
    } catch (const InvalidArgument& e) {
      throw ApiError::bad_request("dispatch", e.what());
    }
    // "explicit" with nothing named (or "auto" with an explicit default) is the base model.
    if (job.strategy == dispatch::Strategy::kExplicit) job.strategy = dispatch::Strategy::kNone;
  }

  static engine::Job base_job(const ServingContext& ctx, const GenerationFields& f) {
    engine::Job job;
    job.n = f.n;
    job.generation.max_tokens = f.max_tokens;
    job.generation.stop = f.stop;
    job.generation.top_logprobs = std::max(f.logprobs, 0);
    auto& s = job.generation.sampling;
    s.temperature = f.temperature;
    s.top_p = f.top_p;
    s.top_k = f.top_k;
    s.presence_penalty = f.presence_penalty;
    s.frequency_penalty = f.frequency_penalty;
    s.seed = f.seed;
    job.deadline = Clock::now() + std::chrono::milliseconds(static_cast<int64_t>(ctx.request_timeout_s * 1000));
    choose_adaptation(ctx, f, job);
    return job;
  }

  static void check_prompt(const ServingContext& ctx, const std::vector<int64_t>& prompt, const GenerationFields& f) {
    const int64_t context = ctx.scheduler.context_length();
    const auto n = static_cast<int64_t>(prompt.size());
    if (n >= context) {
      throw ApiError(400, "invalid_request_error",
                     "This model's maximum context length is " + std::to_string(context) + " tokens, however you requested " +
                         std::to_string(n + (f.max_tokens_given ? f.max_tokens : 1)) + " tokens (" + std::to_string(n) +
                         " in the prompt, " + std::to_string(f.max_tokens_given ? f.max_tokens : 1) + " for the completion).",
                     "prompt", "context_length_exceeded");
    }
    for (const int64_t t : prompt) {
      if (t < 0 || t >= ctx.model.config().vocab_size) {
        throw ApiError::bad_request("prompt", "token id " + std::to_string(t) + " is outside the vocabulary");
      }
    }
  }

  static Submitted submit(const ServingContext& ctx, engine::Job job) {
    Submitted s{CancelOnExit(nullptr), static_cast<int64_t>(job.prompt.size()), "", {}, {}};
    s.choices.resize(static_cast<size_t>(job.n));
    try {
      s.handle = CancelOnExit(ctx.scheduler.submit(std::move(job)));
    } catch (const Overloaded& e) {
      throw ApiError(429, "rate_limit_error", e.what(), "", "queue_full");
    } catch (const InvalidArgument& e) {
      throw ApiError::bad_request(e.param(), e.what());
    }
    return s;
  }

  // Waits for pass 1 of every job: afterwards the HTTP status is known.
  static void await_dispatch(std::vector<Submitted>& jobs, ServingContext& ctx) {
    const auto deadline = Clock::now() + std::chrono::milliseconds(static_cast<int64_t>(ctx.request_timeout_s * 1000));
    for (auto& job : jobs) {
      for (;;) {
        auto event = job.handle->next(std::chrono::milliseconds(100));
        if (!event) {
          if (job.handle->ended()) throw ApiError(500, "server_error", "the job ended before dispatch");
          if (Clock::now() > deadline) throw ApiError(504, "timeout_error", "the request timed out in the queue", "", "timeout");
          continue;
        }
        if (event->kind == engine::JobEvent::Kind::kError) throw from_job_error(*event);
        if (event->kind == engine::JobEvent::Kind::kDispatch) {
          job.decision = event->decision;
          ctx.metrics.observe_dispatch(dispatch::to_string(job.decision.strategy), job.decision.label,
                                       job.decision.latency_ms / 1e3);
          break;
        }
      }
    }
  }

  // Reads a job's token events into its choices; calls `on_piece(choice, event)`
  // as they come and `alive()` while waiting (false: the client is gone).
  template <typename OnPiece, typename Alive>
  static std::optional<ApiError> collect(Submitted& job, ServingContext& ctx, Clock::time_point start, OnPiece&& on_piece,
                                         Alive&& alive) {
    std::optional<Clock::time_point> last_token;
    for (;;) {
      auto event = job.handle->next(std::chrono::milliseconds(200));
      if (!event) {
        if (job.handle->ended()) return std::nullopt;
        if (!alive()) {
          job.handle->cancel();
          return ApiError(499, "client_closed", "the client disconnected");
        }
        continue;
      }
      if (event->kind == engine::JobEvent::Kind::kError) {
        job.handle->cancel();
        return from_job_error(*event);
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
      if (!on_piece(event->choice, *event)) {
        job.handle->cancel();
        return ApiError(499, "client_closed", "the client disconnected");
      }
    }
  }

  static json completion_logprobs(const ServingContext& ctx, const ChoiceResult& c, size_t text_start) {
    json tokens = json::array(), logprobs = json::array(), top = json::array(), offsets = json::array();
    size_t offset = text_start;
    for (size_t i = 0; i < c.tokens.size(); ++i) {
      const std::string piece = ctx.tokenizer.token_text(c.tokens[i]);
      tokens.push_back(piece);
      logprobs.push_back(c.logprobs[i]);
      json alternatives = json::object();
      for (const auto& [id, lp] : c.top_logprobs[i]) alternatives[ctx.tokenizer.token_text(id)] = lp;
      top.push_back(alternatives);
      offsets.push_back(offset);
      offset += piece.size();
    }
    return {{"tokens", tokens}, {"token_logprobs", logprobs}, {"top_logprobs", top}, {"text_offset", offsets}};
  }

  static json chat_logprobs(const ServingContext& ctx, const ChoiceResult& c) {
    json content = json::array();
    for (size_t i = 0; i < c.tokens.size(); ++i) {
      const std::string piece = ctx.tokenizer.token_text(c.tokens[i]);
      json top = json::array();
      for (const auto& [id, lp] : c.top_logprobs[i]) {
        const std::string alt = ctx.tokenizer.token_text(id);
        top.push_back({{"token", alt}, {"logprob", lp}, {"bytes", std::vector<unsigned char>(alt.begin(), alt.end())}});
      }
      content.push_back({{"token", piece}, {"logprob", c.logprobs[i]},
                         {"bytes", std::vector<unsigned char>(piece.begin(), piece.end())}, {"top_logprobs", top}});
    }
    return {{"content", content}};
  }

  // Completions and chat share everything but the shape of a choice.
  void generate(const httplib::Request& req, httplib::Response& res, bool chat) const {
    const auto start = Clock::now();
    const char* route = chat ? "/v1/chat/completions" : "/v1/completions";
    const std::string id = random_id(chat ? "chatcmpl-" : "cmpl-");
    res.set_header("X-Request-Id", id);
    auto ctx = admit(req, res);
    if (!ctx) return;
    std::string adaptation_label = "none";
    try {
      const json body = parse_body(req.body);
      GenerationFields fields;
      std::vector<engine::Job> jobs;
      bool echo = false;
      if (chat) {
        ChatRequest r = parse_chat_request(body);
        fields = r.fields;
        engine::Job job = base_job(*ctx, fields);
        job.prompt = ctx->tokenizer.encode_with_specials(tokenizer::render_chat(ctx->chat_format, r.messages));
        for (const auto& m : r.messages) {
          if (m.role == "user") job.dispatch_text = m.content;  // the latest user turn
        }
        if (!fields.max_tokens_given) job.generation.max_tokens = ctx->scheduler.context_length();
        check_prompt(*ctx, job.prompt, fields);
        jobs.push_back(std::move(job));
      } else {
        CompletionRequest r = parse_completion_request(body);
        fields = r.fields;
        echo = r.echo;
        for (const auto& text : r.text_prompts) {
          engine::Job job = base_job(*ctx, fields);
          job.prompt = ctx->tokenizer.encode(text, /*add_bos=*/true);
          job.dispatch_text = text;
          check_prompt(*ctx, job.prompt, fields);
          jobs.push_back(std::move(job));
        }
        for (const auto& tokens : r.token_prompts) {
          engine::Job job = base_job(*ctx, fields);
          job.prompt = tokens;
          check_prompt(*ctx, job.prompt, fields);
          job.dispatch_text = ctx->tokenizer.decode(tokens);
          jobs.push_back(std::move(job));
        }
      }
      if (!fields.stop.empty() && fields.stop.size() > 4) throw ApiError::bad_request("stop", "at most 4 stop strings");

      std::vector<Submitted> submitted;
      for (auto& job : jobs) {
        const std::string echo_text = echo ? (job.dispatch_text) : "";
        submitted.push_back(submit(*ctx, std::move(job)));  // earlier jobs cancel themselves if this throws
        submitted.back().echo = echo_text;
      }
      await_dispatch(submitted, *ctx);
      adaptation_label = submitted.front().decision.adaptation.key();

      const int64_t created = unix_time();
      const std::string model = fields.model.empty() ? ctx->model_id : fields.model;
      const std::string fingerprint = "t2-" + ctx->fingerprint;
      const int n = fields.n;
      if (fields.stream) {
        res.set_header("Cache-Control", "no-cache");
        res.set_header("X-Accel-Buffering", "no");
        auto jobs_ptr = std::make_shared<std::vector<Submitted>>(std::move(submitted));
        const bool include_usage = fields.include_usage;
        const bool wants_logprobs = fields.logprobs >= 0;
        res.set_chunked_content_provider(
            "text/event-stream",
            [ctx, jobs_ptr, id, created, model, fingerprint, chat, n, include_usage, wants_logprobs, start, route,
             adaptation_label](size_t, httplib::DataSink& sink) {
             try {
              // Each prompt's first chunk, whatever it holds, carries its dispatch decision.
              const dispatch::Decision* pending_decision = nullptr;
              const auto send = [&](json chunk) {
                if (pending_decision != nullptr) {
                  chunk["t2"] = t2_object(*pending_decision);
                  pending_decision = nullptr;
                }
                const std::string line = "data: " + dump(chunk) + "\n\n";
                return sink.write(line.data(), line.size());
              };
              const auto chunk = [&](json choices) {
                return json{{"id", id}, {"object", chat ? "chat.completion.chunk" : "text_completion"}, {"created", created},
                            {"model", model}, {"system_fingerprint", fingerprint}, {"choices", std::move(choices)}};
              };
              int64_t prompt_tokens = 0, completion_tokens = 0;
              bool ok = true;
              for (size_t j = 0; j < jobs_ptr->size() && ok; ++j) {
                Submitted& job = (*jobs_ptr)[j];
                prompt_tokens += job.prompt_tokens;
                pending_decision = &job.decision;
                const int base = static_cast<int>(j) * n;
                if (chat) {
                  for (int c = 0; c < n && ok; ++c) {
                    ok = send(chunk(json::array({{{"index", base + c}, {"delta", {{"role", "assistant"}, {"content", ""}}},
                                                  {"logprobs", nullptr}, {"finish_reason", nullptr}}})));
                  }
                } else if (!job.echo.empty()) {
                  for (int c = 0; c < n && ok; ++c) {
                    ok = send(chunk(json::array({{{"index", base + c}, {"text", job.echo}, {"logprobs", nullptr}, {"finish_reason", nullptr}}})));
                  }
                }
                const auto error = collect(job, *ctx, start, [&](int choice, const engine::JobEvent& event) {
                  const engine::TokenEvent& t = event.token;
                  ++completion_tokens;
                  const json finish = t.finish ? json(engine::to_string(*t.finish)) : json(nullptr);
                  if (t.text.empty() && !t.finish) return true;
                  json piece = {{"index", base + choice}, {"logprobs", nullptr}, {"finish_reason", finish}};
                  if (chat) {
                    piece["delta"] = t.text.empty() ? json::object() : json{{"content", t.text}};
                    if (wants_logprobs) {
                      ChoiceResult single;
                      single.tokens = {t.token};
                      single.logprobs = {t.logprob};
                      single.top_logprobs = {t.top_logprobs};
                      piece["logprobs"] = chat_logprobs(*ctx, single);
                    }
                  } else {
                    piece["text"] = t.text;
                  }
                  return send(chunk(json::array({piece})));
                }, [&] { return sink.is_writable(); });
                if (error) {
                  if (error->status() == 499) {
                    ok = false;
                  } else {
                    const std::string line = "data: " + dump(error->body()) + "\n\n";
                    ok = sink.write(line.data(), line.size());
                  }
                }
              }
              ctx->metrics.count_tokens(prompt_tokens, completion_tokens);
              ctx->metrics.count_request(route, ok ? 200 : 499, adaptation_label);
              log_request(id, route, ok ? 200 : 499, adaptation_label, prompt_tokens, completion_tokens, start);
              if (!ok) return false;
              if (include_usage) {
                json usage = chunk(json::array());
                usage["usage"] = {{"prompt_tokens", prompt_tokens}, {"completion_tokens", completion_tokens},
                                  {"total_tokens", prompt_tokens + completion_tokens}};
                send(usage);
              }
              static const std::string kDone = "data: [DONE]\n\n";
              sink.write(kDone.data(), kDone.size());
              sink.done();
              return true;
             } catch (const std::exception& e) {
              // Past the headers nothing can change the status; end the stream, never the process.
              log::error(id + " stream failed: " + e.what());
              return false;
             }
            },
            [jobs_ptr](bool) {
              for (auto& job : *jobs_ptr) job.handle->cancel();  // also when the provider never ran
            });
        return;
      }

      // One JSON body, computed here so its status reflects how the job ended.
      int64_t prompt_tokens = 0, completion_tokens = 0;
      json choices = json::array();
      for (size_t j = 0; j < submitted.size(); ++j) {
        Submitted& job = submitted[j];
        const auto error = collect(job, *ctx, start, [](int, const engine::JobEvent&) { return true; }, [] { return true; });
        if (error) throw *error;
        prompt_tokens += job.prompt_tokens;
        for (int c = 0; c < n; ++c) {
          const ChoiceResult& r = job.choices[static_cast<size_t>(c)];
          completion_tokens += static_cast<int64_t>(r.tokens.size());
          const int index = static_cast<int>(j) * n + c;
          if (chat) {
            choices.push_back({{"index", index},
                               {"message", {{"role", "assistant"}, {"content", r.text}}},
                               {"logprobs", fields.logprobs >= 0 ? chat_logprobs(*ctx, r) : json(nullptr)},
                               {"finish_reason", r.finish_reason}});
          } else {
            choices.push_back({{"index", index},
                               {"text", job.echo + r.text},
                               {"logprobs", fields.logprobs >= 0 ? completion_logprobs(*ctx, r, job.echo.size()) : json(nullptr)},
                               {"finish_reason", r.finish_reason}});
          }
        }
      }
      ctx->metrics.count_tokens(prompt_tokens, completion_tokens);
      ctx->metrics.count_request(route, 200, adaptation_label);
      log_request(id, route, 200, adaptation_label, prompt_tokens, completion_tokens, start);
      send_json(res, 200, {{"id", id},
                           {"object", chat ? "chat.completion" : "text_completion"},
                           {"created", created},
                           {"model", model},
                           {"system_fingerprint", fingerprint},
                           {"choices", choices},
                           {"usage", {{"prompt_tokens", prompt_tokens},
                                      {"completion_tokens", completion_tokens},
                                      {"total_tokens", prompt_tokens + completion_tokens}}},
                           {"t2", t2_object(submitted.front().decision)}});
    } catch (const ApiError& e) {
      ctx->metrics.count_request(route, e.status(), adaptation_label);
      log_request(id, route, e.status(), adaptation_label, 0, 0, start);
      send_error(res, e);
    } catch (const InvalidArgument& e) {
      const ApiError error = ApiError::bad_request(e.param(), e.what());
      ctx->metrics.count_request(route, 400, adaptation_label);
      send_error(res, error);
    } catch (const json::exception& e) {
      const ApiError error = ApiError::bad_request("", std::string("malformed request: ") + e.what());
      ctx->metrics.count_request(route, 400, adaptation_label);
      send_error(res, error);
    }
  }

  json expert_json(const svf::Expert& e, const std::string& parent) const {
    json j = e.to_json();
    j["id"] = e.name;
    j["object"] = "expert";
    j["parent"] = parent;
    return j;
  }

  void models(const httplib::Request& req, httplib::Response& res) const {
    auto ctx = admit(req, res);
    if (!ctx) return;
    json data = json::array({{{"id", ctx->model_id}, {"object", "model"}, {"created", 0}, {"owned_by", "t2"}}});
    for (const auto& e : ctx->store.experts()) {
      data.push_back({{"id", e.name}, {"object", "model"}, {"created", 0}, {"owned_by", "t2"}, {"parent", ctx->model_id},
                      {"root", ctx->model_id}, {"t2", {{"kind", svf::to_string(e.kind)}, {"description", e.description}}}});
    }
    ctx->metrics.count_request("/v1/models", 200, "none");
    send_json(res, 200, {{"object", "list"}, {"data", data}});
  }

  void experts(const httplib::Request& req, httplib::Response& res) const {
    auto ctx = admit(req, res);
    if (!ctx) return;
    json data = json::array();
    for (const auto& e : ctx->store.experts()) data.push_back(expert_json(e, ctx->model_id));
    send_json(res, 200, {{"object", "list"}, {"data", data}});
  }

  void expert(const httplib::Request& req, httplib::Response& res) const {
    auto ctx = admit(req, res);
    if (!ctx) return;
    const std::string name = req.matches[1];
    const auto e = ctx->store.find(name);
    if (!e) return send_error(res, ApiError::not_found("name", "expert '" + name + "' is not loaded", "expert_not_found"));
    send_json(res, 200, expert_json(*e, ctx->model_id));
  }

  void load_expert(const httplib::Request& req, httplib::Response& res) const {
    auto ctx = admit(req, res);
    if (!ctx) return;
    try {
      const json body = parse_body(req.body);
      if (!body.is_object() || !body.contains("name") || !body["name"].is_string()) {
        throw ApiError::bad_request("name", "'name' (an expert folder in the experts directory) is required");
      }
      const std::string name = body["name"].get<std::string>();
      if (!svf::is_valid_expert_name(name)) throw ApiError::bad_request("name", "invalid expert name '" + name + "'");
      if (body.contains("force") && !body["force"].is_boolean()) throw ApiError::bad_request("force", "'force' must be a boolean");
      const bool force = body.value("force", false);
      try {
        ctx->store.load_from(ctx->experts_dir, name, force);
      } catch (const NotFound& e) {
        throw ApiError::not_found("name", e.what(), "expert_not_found");
      } catch (const Error& e) {
        throw ApiError(400, "invalid_request_error", e.what(), "name", "invalid_expert");
      }
      log::info("loaded expert " + name);
      send_json(res, 201, expert_json(*ctx->store.find(name), ctx->model_id));
    } catch (const ApiError& e) {
      send_error(res, e);
    }
  }

  void unload_expert(const httplib::Request& req, httplib::Response& res) const {
    auto ctx = admit(req, res);
    if (!ctx) return;
    const std::string name = req.matches[1];
    if (!ctx->store.remove(name)) {
      return send_error(res, ApiError::not_found("name", "expert '" + name + "' is not loaded", "expert_not_found"));
    }
    log::info("unloaded expert " + name);
    send_json(res, 200, {{"id", name}, {"object", "expert"}, {"deleted", true}});
  }

  void start_adaptation(const httplib::Request& req, httplib::Response& res) const {
    auto ctx = admit(req, res);
    if (!ctx) return;
    try {
      const json body = parse_body(req.body);
      if (!body.is_object()) throw ApiError::bad_request("", "the request body must be a JSON object");
      train::AdaptRequest r;
      if (!body.contains("name") || !body["name"].is_string() || !svf::is_valid_expert_name(body["name"].get<std::string>())) {
        throw ApiError::bad_request("name", "'name' must be a valid expert name (letters, digits, '.', '_', '-')");
      }
      r.name = body["name"].get<std::string>();
      if (ctx->store.find(r.name)) throw ApiError(409, "invalid_request_error", "expert '" + r.name + "' already exists", "name", "exists");
      if (!body.contains("experts") || !body["experts"].is_array() || body["experts"].empty()) {
        throw ApiError::bad_request("experts", "'experts' must be a non-empty array of loaded expert names");
      }
      for (const auto& e : body["experts"]) {
        if (!e.is_string() || !ctx->store.find(e.get<std::string>())) {
          throw ApiError::not_found("experts", "expert " + e.dump() + " is not loaded", "expert_not_found");
        }
        r.experts.push_back(e.get<std::string>());
      }
      if (!body.contains("examples") || !body["examples"].is_array() || body["examples"].empty() || body["examples"].size() > 256) {
        throw ApiError::bad_request("examples", "'examples' must be 1 to 256 {\"prompt\", \"answer\"} objects");
      }
      for (const auto& e : body["examples"]) {
        if (!e.is_object() || !e.contains("prompt") || !e["prompt"].is_string() || !e.contains("answer") || !e["answer"].is_string()) {
          throw ApiError::bad_request("examples", "each example needs string 'prompt' and 'answer'");
        }
        r.examples.push_back({e["prompt"].get<std::string>(), e["answer"].get<std::string>(), train::Split::kTrain, 0});
      }
      try {
        r.reward = train::parse_reward(body.value("reward", std::string("contains")));
      } catch (const InvalidArgument& e) {
        throw ApiError::bad_request("reward", e.what());
      }
      const auto integer = [&](const char* key, int64_t fallback, int64_t lo, int64_t hi) {
        if (!body.contains(key)) return fallback;
        if (!body[key].is_number_integer() || body[key].get<int64_t>() < lo || body[key].get<int64_t>() > hi) {
          throw ApiError::bad_request(key, std::string("'") + key + "' must be an integer in [" + std::to_string(lo) + ", " + std::to_string(hi) + "]");
        }
        return body[key].get<int64_t>();
      };
      r.cem.population = integer("population", 16, 2, 256);
      r.cem.iters = integer("iters", 5, 1, 100);
      r.cem.seed = static_cast<uint64_t>(integer("seed", 0, 0, std::numeric_limits<int32_t>::max()));
      r.generation = {integer("max_tokens", 32, 1, 512), ctx->eos_token_ids};
      r.per_matrix = body.value("per_matrix", false);
      r.description = body.value("description", std::string("few-shot CEM mixture of ") + body["experts"].dump());
      r.cancel = &server.adaptations_->cancel;

      auto& jobs = *server.adaptations_;
      const std::string id = random_id("adapt-");
      {
        std::lock_guard<std::mutex> lock(jobs.mutex);
        jobs.jobs[id] = {id, r.name, "running", "", 0, r.cem.iters, 0, nullptr};
      }
      r.on_iteration = [&jobs, id](int64_t iteration, const train::CemScore& best) {
        std::lock_guard<std::mutex> lock(jobs.mutex);
        jobs.jobs[id].iteration = iteration;
        jobs.jobs[id].best_accuracy = best.accuracy;
      };
      std::lock_guard<std::mutex> lock(jobs.mutex);
      jobs.threads.emplace_back([ctx, r, &jobs, id] {
        try {
          svf::Expert mixture = train::adapt_mixture(ctx->model, ctx->tokenizer, ctx->store, r);
          mixture.save(ctx->experts_dir / mixture.name);
          ctx->store.load_from(ctx->experts_dir, mixture.name);
          log::info("adaptation " + id + " wrote expert " + mixture.name);
          std::lock_guard<std::mutex> done(jobs.mutex);
          jobs.jobs[id].status = "succeeded";
          jobs.jobs[id].expert = mixture.to_json();
        } catch (const std::exception& e) {
          log::warn("adaptation " + id + " failed: " + e.what());
          std::lock_guard<std::mutex> failed(jobs.mutex);
          jobs.jobs[id].status = "failed";
          jobs.jobs[id].error = e.what();
        }
      });
      send_json(res, 202, jobs.describe(jobs.jobs[id]));
    } catch (const ApiError& e) {
      send_error(res, e);
    }
  }

  void adaptation(const httplib::Request& req, httplib::Response& res) const {
    auto ctx = admit(req, res);
    if (!ctx) return;
    auto& jobs = *server.adaptations_;
    std::lock_guard<std::mutex> lock(jobs.mutex);
    const auto it = jobs.jobs.find(req.matches[1]);
    if (it == jobs.jobs.end()) return send_error(res, ApiError::not_found("id", "no adaptation " + req.matches[1].str(), "not_found"));
    send_json(res, 200, jobs.describe(it->second));
  }

  void health(const httplib::Request&, httplib::Response& res) const {
    if (!context()) return send_json(res, 503, {{"status", "loading"}});
    if (server.draining_) return send_json(res, 503, {{"status", "draining"}});
    send_json(res, 200, {{"status", "ok"}});
  }

  void metrics(const httplib::Request& req, httplib::Response& res) const {
    auto ctx = admit(req, res);
    if (!ctx) return;
    res.set_content(ctx->metrics.render(ctx->scheduler.stats(), ctx->store.stats()), "text/plain; version=0.0.4; charset=utf-8");
  }
};

HttpServer::HttpServer(const ServerConfig& config, std::vector<std::string> api_keys)
    : http_(std::make_unique<httplib::Server>()), adaptations_(std::make_shared<Adaptations>()), api_keys_(std::move(api_keys)) {
  auto routes = std::make_shared<Routes>(Routes{*this});
  // Every running or queued generation holds a worker; the rest answer /health and 429s.
  const int threads = config.threads > 0 ? config.threads : static_cast<int>(config.max_batch + config.queue_capacity + 8);
  http_->new_task_queue = [threads] { return new httplib::ThreadPool(static_cast<size_t>(threads)); };
  http_->set_payload_max_length(static_cast<size_t>(config.max_body_bytes));
  http_->set_tcp_nodelay(true);  // streamed tokens are small writes; Nagle would hold them ~40 ms
  http_->Post("/v1/completions", [routes](const auto& req, auto& res) { routes->generate(req, res, false); });
  http_->Post("/v1/chat/completions", [routes](const auto& req, auto& res) { routes->generate(req, res, true); });
  http_->Get("/v1/models", [routes](const auto& req, auto& res) { routes->models(req, res); });
  http_->Get("/v1/experts", [routes](const auto& req, auto& res) { routes->experts(req, res); });
  http_->Post("/v1/experts", [routes](const auto& req, auto& res) { routes->load_expert(req, res); });
  http_->Get(R"(/v1/experts/([^/]+))", [routes](const auto& req, auto& res) { routes->expert(req, res); });
  http_->Delete(R"(/v1/experts/([^/]+))", [routes](const auto& req, auto& res) { routes->unload_expert(req, res); });
  http_->Post("/v1/adaptations", [routes](const auto& req, auto& res) { routes->start_adaptation(req, res); });
  http_->Get(R"(/v1/adaptations/([^/]+))", [routes](const auto& req, auto& res) { routes->adaptation(req, res); });
  http_->Get("/health", [routes](const auto& req, auto& res) { routes->health(req, res); });
  http_->Get("/metrics", [routes](const auto& req, auto& res) { routes->metrics(req, res); });
  http_->set_error_handler([](const httplib::Request& req, httplib::Response& res) {
    // Only errors no route answered: unknown paths, oversized bodies.
    if (!res.body.empty()) return;
    if (res.status == 413) {
      send_json(res, 413, ApiError(413, "invalid_request_error", "the request body is too large", "", "payload_too_large").body());
    } else if (res.status == 404) {
      send_json(res, 404, ApiError(404, "invalid_request_error", "no route " + req.method + " " + req.path, "", "unknown_route").body());
    }
  });
  http_->set_exception_handler([](const httplib::Request&, httplib::Response& res, std::exception_ptr ep) {
    std::string message = "internal error";
    try {
      std::rethrow_exception(ep);
    } catch (const std::exception& e) {
      message = e.what();
    } catch (...) {
    }
    log::error("request failed: " + message);
    send_json(res, 500, ApiError(500, "server_error", message).body());
  });
}

HttpServer::~HttpServer() { stop(); }

int HttpServer::bind(const std::string& host, int port) {
  const int bound = port == 0 ? http_->bind_to_any_port(host) : (http_->bind_to_port(host, port) ? port : -1);
  if (bound <= 0) throw Error("cannot listen on " + host + ":" + std::to_string(port));
  return bound;
}

void HttpServer::serve() { http_->listen_after_bind(); }

void HttpServer::wait_until_running() const {
  while (!http_->is_running()) std::this_thread::yield();
}

void HttpServer::set_ready(std::shared_ptr<ServingContext> context) { std::atomic_store(&context_, std::move(context)); }

void HttpServer::set_draining() { draining_ = true; }

void HttpServer::stop() {
  if (http_) http_->stop();
  if (adaptations_) adaptations_->shutdown();
}

}  // namespace t2::server
