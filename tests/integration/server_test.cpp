// The real server on 127.0.0.1 with stories260K, driven over HTTP.
#include <httplib.h>

#include <algorithm>
#include <atomic>
#include <future>
#include <regex>
#include <thread>

#include <ATen/ATen.h>
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "server_process.hpp"
#include "support.hpp"
#include "t2/dispatch/adaptation_prompt.hpp"
#include "t2/dispatch/dispatcher.hpp"
#include "t2/model/weights.hpp"
#include "t2/svf/expert.hpp"
#include "t2/svf/targets.hpp"

using nlohmann::json;
using t2::testing::ServerProcess;

namespace {

const std::string kStoryStart = ", there was a little girl named Lily";

// An SVF expert of stories260K with random z on one matrix (enough to load).
void write_expert(const std::filesystem::path& experts, const std::string& name, t2::svf::DispatchRole role,
                  const std::string& description, uint64_t seed) {
  static const std::string fingerprint = t2::model::checkpoint_fingerprint(t2::testing::stories_dir());
  at::manual_seed(seed);
  t2::svf::Expert e;
  e.name = name;
  e.description = description;
  e.dispatch = role;
  e.base_fingerprint = fingerprint;
  e.z.emplace("model.layers.0.mlp.up_proj.weight", at::rand({64}) + 0.5);
  e.save(experts / name);
}

const std::string& dispatch_template_path() {
  static const std::string path = std::string(T2_SOURCE_DIR) + "/configs/dispatch/prompt.txt";
  return path;
}

// Folders shared by the servers of this file: experts with random z and an SVD cache.
struct Fixture {
  std::filesystem::path model = t2::testing::stories_dir();
  std::filesystem::path experts;
  std::filesystem::path cache;

  Fixture() {
    const auto root = std::filesystem::temp_directory_path() / ("t2_server_test_" + std::to_string(::getpid()));
    experts = root / "experts";
    cache = root / "cache";
    if (!std::filesystem::exists(model)) return;
    const auto config = t2::model::ModelConfig::from_file(model / "config.json");
    const std::string fingerprint = t2::model::checkpoint_fingerprint(model);
    for (const auto& [name, seed] : std::vector<std::pair<std::string, uint64_t>>{{"dragons", 1}, {"friends", 2}, {"router", 3}}) {
      t2::testing::random_expert(config, fingerprint, name, seed, "stories about " + name, name == "router" ? t2::svf::DispatchRole::kClassifier : t2::svf::DispatchRole::kTarget)
          .save(experts / name);
    }
  }
  std::vector<std::string> args(std::vector<std::string> extra = {}) const {
    std::vector<std::string> a = {"--model", model.string(), "--experts-dir", experts.string(), "--cache-dir", cache.string(),
                                  "--dispatch-template", dispatch_template_path()};
    a.insert(a.end(), extra.begin(), extra.end());
    return a;
  }
};

const Fixture& fixture() {
  static const Fixture f;
  return f;
}

class ServerTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    if (!std::filesystem::exists(fixture().model)) return;
    server_ = std::make_unique<ServerProcess>(fixture().args({"--max-batch", "8", "--max-body-bytes", "65536"}));
  }
  static void TearDownTestSuite() { server_.reset(); }
  void SetUp() override { T2_REQUIRE_PATH(fixture().model); }

  static httplib::Client client() {
    httplib::Client c("127.0.0.1", server_->port());
    c.set_read_timeout(60, 0);
    return c;
  }
  // The JSON body of a reply expected to carry `expected_status`.
  static json body_of(const httplib::Result& r, const std::string& path, int expected_status) {
    EXPECT_TRUE(r) << path;
    if (!r) return json();
    EXPECT_EQ(r->status, expected_status) << r->body;
    return json::parse(r->body);
  }
  static json post(const std::string& path, const json& body, int expected_status = 200) {
    return body_of(client().Post(path.c_str(), body.dump(), "application/json"), path, expected_status);
  }
  static json get(const std::string& path, int expected_status = 200) {
    return body_of(client().Get(path.c_str()), path, expected_status);
  }
  static json del(const std::string& path, int expected_status = 200) {
    return body_of(client().Delete(path.c_str()), path, expected_status);
  }
  // The data: payloads of a server-sent event stream, [DONE] excluded; `done` says whether it came.
  static std::vector<json> stream(const std::string& path, json body, bool* done = nullptr) {
    body["stream"] = true;
    std::string raw;
    auto r = client().Post(path.c_str(), body.dump(), "application/json");
    EXPECT_TRUE(r);
    if (!r) return {};
    EXPECT_EQ(r->status, 200);
    EXPECT_NE(r->get_header_value("Content-Type").find("text/event-stream"), std::string::npos);
    raw = r->body;
    std::vector<json> events;
    bool saw_done = false;
    size_t at = 0;
    while ((at = raw.find("data: ", at)) != std::string::npos) {
      const size_t end = raw.find("\n\n", at);
      const std::string payload = raw.substr(at + 6, end - at - 6);
      if (payload == "[DONE]") {
        saw_done = true;
      } else {
        events.push_back(json::parse(payload));
      }
      at = end;
    }
    if (done) *done = saw_done;
    return events;
  }

  static inline std::unique_ptr<ServerProcess> server_;
};

void expect_error(const json& body, const std::string& param_fragment) {
  ASSERT_TRUE(body.contains("error")) << body;
  const json& e = body["error"];
  for (const char* key : {"message", "type", "param", "code"}) EXPECT_TRUE(e.contains(key)) << key << " in " << body;
  EXPECT_TRUE(e["message"].is_string());
  if (!param_fragment.empty()) {
    ASSERT_TRUE(e["param"].is_string()) << body;
    EXPECT_NE(e["param"].get<std::string>().find(param_fragment), std::string::npos) << body;
  }
}

}  // namespace

TEST_F(ServerTest, HealthAndModels) {
  EXPECT_EQ(get("/health")["status"], "ok");
  const json models = get("/v1/models");
  EXPECT_EQ(models["object"], "list");
  ASSERT_GE(models["data"].size(), 4u);
  EXPECT_EQ(models["data"][0]["id"], "stories260K");
  for (size_t i = 1; i < models["data"].size(); ++i) EXPECT_EQ(models["data"][i]["parent"], "stories260K");
}

TEST_F(ServerTest, CompletionFollowsTheSchema) {
  // The fixture's server routes unnamed requests through its classifier (auto);
  // "dispatch": "none" asks for the base model itself.
  const json r = post("/v1/completions", {{"model", "stories260K"}, {"prompt", "Once upon a time"}, {"max_tokens", 12}, {"temperature", 0},
                                          {"dispatch", "none"}});
  EXPECT_EQ(r["object"], "text_completion");
  EXPECT_EQ(r["id"].get<std::string>().rfind("cmpl-", 0), 0u);
  EXPECT_TRUE(r["created"].is_number_integer());
  EXPECT_EQ(r["model"], "stories260K");
  EXPECT_TRUE(r["system_fingerprint"].is_string());
  ASSERT_EQ(r["choices"].size(), 1u);
  EXPECT_EQ(r["choices"][0]["text"].get<std::string>().rfind(kStoryStart, 0), 0u) << r;
  EXPECT_EQ(r["choices"][0]["finish_reason"], "length");
  EXPECT_TRUE(r["choices"][0]["logprobs"].is_null());
  EXPECT_EQ(r["usage"]["prompt_tokens"], 5);
  EXPECT_EQ(r["usage"]["completion_tokens"], 12);
  EXPECT_EQ(r["usage"]["total_tokens"], 17);
  EXPECT_EQ(r["t2"]["strategy"], "none");
  EXPECT_EQ(r["t2"]["adaptation"], "base");

  const json stopped = post("/v1/completions", {{"prompt", "Once upon a time"}, {"max_tokens", 50}, {"temperature", 0}, {"stop", "Lily"},
                                                {"dispatch", "none"}});
  EXPECT_EQ(stopped["choices"][0]["text"], ", there was a little girl named ");
  EXPECT_EQ(stopped["choices"][0]["finish_reason"], "stop");

  const json echoed = post("/v1/completions", {{"prompt", "Once upon a time"}, {"max_tokens", 3}, {"temperature", 0}, {"echo", true},
                                               {"logprobs", 2}, {"dispatch", "none"}});
  EXPECT_EQ(echoed["choices"][0]["text"].get<std::string>().rfind("Once upon a time, there", 0), 0u) << echoed;
  const json& lp = echoed["choices"][0]["logprobs"];
  EXPECT_EQ(lp["tokens"].size(), 3u);
  EXPECT_EQ(lp["top_logprobs"][0].size(), 2u);
  EXPECT_LE(lp["token_logprobs"][0].get<double>(), 0.0);

  // Byte-fallback tokens (partial UTF-8) in logprobs must not break the JSON.
  const json bytes = post("/v1/completions", {{"prompt", "Lily saw a 🐶 and a 世界"}, {"max_tokens", 4}, {"logprobs", 5}});
  EXPECT_EQ(bytes["choices"][0]["logprobs"]["top_logprobs"][0].size(), 5u);
  const json chat_bytes = post("/v1/chat/completions", {{"messages", {{{"role", "user"}, {"content", "🐶世界"}}}}, {"max_tokens", 3},
                                                        {"logprobs", true}, {"top_logprobs", 5}});
  EXPECT_EQ(chat_bytes["choices"][0]["logprobs"]["content"].size(), 3u);

  const json batch = post("/v1/completions", {{"prompt", {"Once upon a time", "Tom"}}, {"max_tokens", 4}, {"n", 2}, {"seed", 5}});
  EXPECT_EQ(batch["choices"].size(), 4u);
  for (int i = 0; i < 4; ++i) EXPECT_EQ(batch["choices"][i]["index"], i);
}

TEST_F(ServerTest, StreamingMatchesTheWholeResponse) {
  const json body = {{"prompt", "Once upon a time"}, {"max_tokens", 20}, {"temperature", 0}, {"stream_options", {{"include_usage", true}}}};
  bool done = false;
  const auto events = stream("/v1/completions", body, &done);
  EXPECT_TRUE(done);
  ASSERT_GE(events.size(), 2u);
  std::string text;
  for (size_t i = 0; i + 1 < events.size(); ++i) {
    EXPECT_EQ(events[i]["object"], "text_completion");
    text += events[i]["choices"][0]["text"].get<std::string>();
  }
  EXPECT_EQ(events[events.size() - 2]["choices"][0]["finish_reason"], "length");
  const json& usage = events.back();
  EXPECT_TRUE(usage["choices"].empty());
  EXPECT_EQ(usage["usage"]["completion_tokens"], 20);
  EXPECT_TRUE(events[0].contains("t2")) << events[0];
  // The first chunk carries the decision even when the first token's text is held back by a stop prefix.
  const auto held = stream("/v1/completions", {{"prompt", "Once upon a time"}, {"max_tokens", 3}, {"temperature", 0}, {"stop", ", but"}});
  ASSERT_FALSE(held.empty());
  EXPECT_TRUE(held[0].contains("t2")) << held[0];
  json whole = body;
  whole.erase("stream_options");
  EXPECT_EQ(text, post("/v1/completions", whole)["choices"][0]["text"]);
}

TEST_F(ServerTest, ChatPlainAndStreamed) {
  const json body = {{"messages", {{{"role", "system"}, {"content", "You tell stories."}}, {{"role", "user"}, {"content", "A story"}}}},
                     {"max_tokens", 10}, {"temperature", 0}};
  const json r = post("/v1/chat/completions", body);
  EXPECT_EQ(r["object"], "chat.completion");
  EXPECT_EQ(r["id"].get<std::string>().rfind("chatcmpl-", 0), 0u);
  EXPECT_EQ(r["choices"][0]["message"]["role"], "assistant");
  const std::string content = r["choices"][0]["message"]["content"];
  EXPECT_FALSE(content.empty());
  bool done = false;
  const auto events = stream("/v1/chat/completions", body, &done);
  EXPECT_TRUE(done);
  ASSERT_FALSE(events.empty());
  EXPECT_EQ(events[0]["choices"][0]["delta"]["role"], "assistant");
  std::string streamed;
  for (const auto& e : events) {
    EXPECT_EQ(e["object"], "chat.completion.chunk");
    const json& delta = e["choices"][0]["delta"];
    if (delta.contains("content")) streamed += delta["content"].get<std::string>();
  }
  EXPECT_EQ(streamed, content);
  EXPECT_EQ(events.back()["choices"][0]["finish_reason"], "length");
}

TEST_F(ServerTest, EachDispatchStrategyReportsItsDecision) {
  const json base = {{"prompt", "Once upon a time"}, {"max_tokens", 8}, {"temperature", 0}};
  auto with = [&](json extra) {
    json b = base;
    b.update(extra);
    return post("/v1/completions", b);
  };
  const json by_field = with({{"expert", "dragons"}});
  EXPECT_EQ(by_field["t2"]["strategy"], "explicit");
  EXPECT_EQ(by_field["t2"]["adaptation"], "dragons");
  const json by_model = with({{"model", "dragons"}});
  EXPECT_EQ(by_model["t2"]["adaptation"], "dragons");
  EXPECT_EQ(by_model["choices"][0]["text"], by_field["choices"][0]["text"]);
  EXPECT_NE(by_field["choices"][0]["text"], with({{"dispatch", "none"}})["choices"][0]["text"]);  // the expert changes the output

  const json mixed = with({{"mixture", {{"dragons", 0.5}, {"friends", 0.5}}}});
  EXPECT_EQ(mixed["t2"]["adaptation"], "dragons=0.5,friends=0.5");

  for (const char* strategy : {"prompt", "classifier"}) {
    const json r = with({{"dispatch", strategy}});
    EXPECT_EQ(r["t2"]["strategy"], strategy);
    EXPECT_EQ(r["t2"]["scores"]["method"], "mean_logprob");
    const json& scores = r["t2"]["scores"]["labels"];
    EXPECT_TRUE(scores.contains("dragons") && scores.contains("friends") && scores.contains("others")) << r;
    EXPECT_FALSE(scores.contains("router"));  // the classifier expert is not a label
    std::string best;
    double best_score = -1e300;
    for (const auto& [label, s] : scores.items()) {
      if (s.get<double>() > best_score) best_score = s.get<double>(), best = label;
    }
    EXPECT_EQ(r["t2"]["label"], best);
    EXPECT_EQ(r["t2"]["adaptation"], best == "others" ? "base" : best);
    EXPECT_GT(r["t2"]["dispatch_cached_tokens"].get<int>(), 0);
    EXPECT_GT(r["t2"]["dispatch_ms"].get<double>(), 0.0);
  }
  EXPECT_EQ(with({{"expert", "none"}})["t2"]["strategy"], "none");
  EXPECT_EQ(with({{"expert", "auto"}, {"dispatch", "prompt"}})["t2"]["strategy"], "prompt");
}

TEST_F(ServerTest, ExpertsLoadAndUnloadFromTheExpertsFolderOnly) {
  const json list = get("/v1/experts");
  EXPECT_EQ(list["data"].size(), 3u);
  EXPECT_EQ(get("/v1/experts/friends")["kind"], "svf");
  auto c = client();
  auto deleted = c.Delete("/v1/experts/friends");
  ASSERT_TRUE(deleted);
  EXPECT_EQ(deleted->status, 200);
  EXPECT_EQ(json::parse(deleted->body)["deleted"], true);
  EXPECT_EQ(c.Delete("/v1/experts/friends")->status, 404);
  expect_error(post("/v1/completions", {{"prompt", "x"}, {"expert", "friends"}}, 404), "expert");
  const json loaded = post("/v1/experts", {{"name", "friends"}}, 201);
  EXPECT_EQ(loaded["id"], "friends");
  EXPECT_EQ(get("/v1/experts")["data"].size(), 3u);
  expect_error(post("/v1/experts", {{"name", "../experts/friends"}}, 400), "name");
  expect_error(post("/v1/experts", {{"name", "missing"}}, 404), "name");
}

TEST_F(ServerTest, EveryErrorClassIsWellFormed) {
  auto c = client();
  auto malformed = c.Post("/v1/completions", "{not json", "application/json");
  EXPECT_EQ(malformed->status, 400);
  expect_error(json::parse(malformed->body), "");
  expect_error(post("/v1/completions", {{"prompt", "x"}, {"max_tokens", "ten"}}, 400), "max_tokens");
  expect_error(post("/v1/completions", {{"prompt", "x"}, {"temperature", 3}}, 400), "temperature");
  expect_error(post("/v1/completions", {{"prompt", "x"}, {"n", 100}}, 400), "n");
  expect_error(post("/v1/completions", {{"max_tokens", 3}}, 400), "prompt");
  expect_error(post("/v1/completions", {{"prompt", {1, 2, 99999}}}, 400), "prompt");
  expect_error(post("/v1/chat/completions", {{"messages", {{{"role", "robot"}, {"content", "hi"}}}}}, 400), "messages[0].role");
  expect_error(post("/v1/completions", {{"prompt", "x"}, {"model", "gpt-9"}}, 404), "model");
  expect_error(post("/v1/completions", {{"prompt", "x"}, {"expert", "nobody"}}, 404), "expert");
  expect_error(post("/v1/completions", {{"prompt", "x"}, {"mixture", {{"dragons", -1}}}}, 400), "mixture");
  expect_error(post("/v1/completions", {{"prompt", "x"}, {"dispatch", "astrology"}}, 400), "dispatch");
  std::string long_prompt;
  for (int i = 0; i < 700; ++i) long_prompt += "Lily ";
  const json too_long = post("/v1/completions", {{"prompt", long_prompt}, {"max_tokens", 10}}, 400);
  expect_error(too_long, "prompt");
  EXPECT_NE(too_long["error"]["message"].get<std::string>().find("maximum context length is 512"), std::string::npos) << too_long;
  EXPECT_EQ(too_long["error"]["code"], "context_length_exceeded");
  auto huge = c.Post("/v1/completions", json{{"prompt", std::string(100000, 'a')}}.dump(), "application/json");
  EXPECT_EQ(huge->status, 413);
  auto unknown = c.Get("/v2/nothing");
  EXPECT_EQ(unknown->status, 404);
  expect_error(json::parse(unknown->body), "");
}

TEST_F(ServerTest, ThirtyTwoConcurrentGreedyStreamsEqualSequentialOutputs) {
  const std::vector<std::string> prompts = {"Once upon a time", "Tom had a dog", "The sun was", "Lily", "A cat", "The park", "Sam", "One day"};
  const auto body = [&](int i) { return json{{"prompt", prompts[static_cast<size_t>(i) % prompts.size()]}, {"max_tokens", 24}, {"temperature", 0}}; };
  std::vector<std::string> sequential;
  for (size_t i = 0; i < prompts.size(); ++i) sequential.push_back(post("/v1/completions", body(static_cast<int>(i)))["choices"][0]["text"]);
  std::vector<std::future<std::string>> futures;
  for (int i = 0; i < 32; ++i) {
    futures.push_back(std::async(std::launch::async, [&, i] {
      std::string text;
      for (const auto& e : stream("/v1/completions", body(i))) {
        if (!e["choices"].empty()) text += e["choices"][0]["text"].get<std::string>();
      }
      return text;
    }));
  }
  for (int i = 0; i < 32; ++i) EXPECT_EQ(futures[static_cast<size_t>(i)].get(), sequential[static_cast<size_t>(i) % prompts.size()]) << i;
}

TEST_F(ServerTest, MetricsAreParsablePrometheusText) {
  post("/v1/completions", {{"prompt", "Once"}, {"max_tokens", 3}, {"dispatch", "prompt"}});
  auto r = client().Get("/metrics");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 200);
  EXPECT_NE(r->get_header_value("Content-Type").find("text/plain"), std::string::npos);
  const std::regex sample(R"(^[a-zA-Z_:][a-zA-Z0-9_:]*(\{([a-zA-Z_][a-zA-Z0-9_]*="([^"\\]|\\.)*",?)*\})? [-+0-9.eE]+|[-+]Inf|NaN$)");
  const std::regex comment(R"(^# (HELP|TYPE) [a-zA-Z_:][a-zA-Z0-9_:]* .+$)");
  std::istringstream lines(r->body);
  int samples = 0;
  for (std::string line; std::getline(lines, line);) {
    if (line.empty()) continue;
    EXPECT_TRUE(std::regex_match(line, line[0] == '#' ? comment : sample)) << line;
    samples += line[0] != '#';
  }
  EXPECT_GT(samples, 20);
  for (const char* name : {"t2_requests_total{", "t2_dispatch_latency_seconds_bucket{strategy=\"prompt\"", "t2_time_to_first_token_seconds_count",
                           "t2_inter_token_latency_seconds_bucket", "t2_adapter_store_hits_total", "t2_queue_depth", "t2_running_sequences"}) {
    EXPECT_NE(r->body.find(name), std::string::npos) << name;
  }
}

TEST_F(ServerTest, ADisconnectedClientIsCancelled) {
  // Read one event of a long stream, then hang up.
  httplib::Client c("127.0.0.1", server_->port());
  std::atomic<int> chunks{0};
  httplib::Request req;
  req.method = "POST";
  req.path = "/v1/completions";
  req.body = json{{"prompt", "Once upon a time"}, {"max_tokens", 2000}, {"stream", true}}.dump();
  req.set_header("Content-Type", "application/json");
  req.content_receiver = [&](const char*, size_t, uint64_t, uint64_t) { return ++chunks < 2; };
  httplib::Response res;
  httplib::Error error = httplib::Error::Success;
  c.send(req, res, error);
  EXPECT_GE(chunks.load(), 1);
  // The server records the request as closed by the client (status 499) once it notices.
  for (int attempt = 0; attempt < 200; ++attempt) {
    auto m = client().Get("/metrics");
    if (m && m->body.find("status=\"499\"") != std::string::npos) {
      SUCCEED();
      return;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(50));  // polling the server's own record
  }
  ADD_FAILURE() << "the server never recorded the disconnect";
}

TEST(ServerLimits, QueueOverflowGets429WithRetryAfter) {
  T2_REQUIRE_PATH(fixture().model);
  ServerProcess server(fixture().args({"--max-batch", "1", "--queue", "1"}));
  std::vector<std::future<httplib::Result>> futures;
  for (int i = 0; i < 6; ++i) {
    futures.push_back(std::async(std::launch::async, [&] {
      httplib::Client c("127.0.0.1", server.port());
      c.set_read_timeout(60, 0);
      return c.Post("/v1/completions", json{{"prompt", "Once upon a time"}, {"max_tokens", 400}, {"temperature", 0}}.dump(), "application/json");
    }));
  }
  int ok = 0, limited = 0;
  for (auto& f : futures) {
    auto r = f.get();
    ASSERT_TRUE(r);
    if (r->status == 200) ++ok;
    if (r->status == 429) {
      ++limited;
      EXPECT_EQ(r->get_header_value("Retry-After"), "1");
      expect_error(json::parse(r->body), "");
    }
  }
  EXPECT_GE(ok, 1);
  EXPECT_GE(limited, 1);
  EXPECT_EQ(ok + limited, 6);
}

TEST(ServerLimits, ApiKeysGuardEverythingButHealth) {
  T2_REQUIRE_PATH(fixture().model);
  ServerProcess server(fixture().args({"--api-key", "sk-test-123"}));
  httplib::Client c("127.0.0.1", server.port());
  EXPECT_EQ(c.Get("/health")->status, 200);
  auto denied = c.Get("/v1/models");
  EXPECT_EQ(denied->status, 401);
  expect_error(json::parse(denied->body), "");
  EXPECT_EQ(c.Get("/v1/models", {{"Authorization", "Bearer sk-wrong-12"}})->status, 401);
  EXPECT_EQ(c.Get("/v1/models", {{"Authorization", "Bearer sk-test-123"}})->status, 200);
  EXPECT_EQ(server.stop(), 0);  // SIGTERM drains and exits cleanly
  EXPECT_NE(server.output().find("t2 stopped"), std::string::npos);
}

TEST_F(ServerTest, FewShotAdaptationRunsInTheBackgroundAndAddsAnExpert) {
  const json examples = json::array({{{"prompt", "Once upon a time"}, {"answer", "dog"}}, {{"prompt", "One day"}, {"answer", "dog"}},
                                     {{"prompt", "Tom had a"}, {"answer", "dog"}}});
  const json started = post("/v1/adaptations", {{"name", "pets"}, {"experts", {"dragons", "friends"}}, {"examples", examples},
                                                {"population", 4}, {"iters", 2}, {"max_tokens", 16}}, 202);
  EXPECT_EQ(started["object"], "adaptation");
  const std::string id = started["id"];
  json state;
  for (int attempt = 0; attempt < 600; ++attempt) {  // polling the job's own record
    state = get("/v1/adaptations/" + id);
    if (state["status"] != "queued" && state["status"] != "running") break;
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  ASSERT_EQ(state["status"], "succeeded") << state;
  EXPECT_EQ(state["progress"]["iteration"], 2);
  EXPECT_EQ(state["expert"]["kind"], "mixture");
  EXPECT_EQ(get("/v1/experts/pets")["kind"], "mixture");
  EXPECT_EQ(post("/v1/completions", {{"prompt", "Once"}, {"max_tokens", 4}, {"model", "pets"}})["t2"]["adaptation"], "pets");

  expect_error(get("/v1/adaptations/adapt-nothing", 404), "id");
  expect_error(post("/v1/adaptations", {{"name", "x"}, {"experts", {"nobody"}}, {"examples", examples}}, 404), "experts");
  expect_error(post("/v1/adaptations", {{"name", "../x"}, {"experts", {"dragons"}}, {"examples", examples}}, 400), "name");
  expect_error(post("/v1/adaptations", {{"name", "y"}, {"experts", {"dragons"}}, {"examples", json::array()}}, 400), "examples");
  expect_error(post("/v1/adaptations", {{"name", "pets"}, {"experts", {"dragons"}}, {"examples", examples}}, 409), "name");
}

TEST_F(ServerTest, AdaptationNamesAreReservedJobsCappedAndCancellable) {
  const json examples = json::array({{{"prompt", "Once upon a time"}, {"answer", "dog"}}, {{"prompt", "One day"}, {"answer", "dog"}}});
  const json slow = {{"name", "held"}, {"experts", {"dragons", "friends"}}, {"examples", examples}, {"population", 64},
                     {"iters", 100}, {"max_tokens", 64}};
  const json first = post("/v1/adaptations", slow, 202);
  // The name is reserved from the moment the job is accepted, running or queued.
  expect_error(post("/v1/adaptations", slow, 409), "name");
  // A loaded expert's name is taken too.
  json taken = slow;
  taken["name"] = "dragons";
  expect_error(post("/v1/adaptations", taken, 409), "name");
  // Too big a job: population * iters * examples over the limit, named.
  json huge = slow;
  huge["name"] = "huge";
  huge["population"] = 256;
  const json refused = post("/v1/adaptations", huge, 400);
  expect_error(refused, "population");
  EXPECT_NE(refused["error"]["message"].get<std::string>().find("limit"), std::string::npos) << refused;

  // DELETE cancels; the job ends "cancelled" and its name is free again.
  EXPECT_EQ(del("/v1/adaptations/" + first["id"].get<std::string>())["id"], first["id"]);
  json state;
  for (int attempt = 0; attempt < 600; ++attempt) {
    state = get("/v1/adaptations/" + first["id"].get<std::string>());
    if (state["status"] == "cancelled" || state["status"] == "failed" || state["status"] == "succeeded") break;
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  EXPECT_EQ(state["status"], "cancelled") << state;
  expect_error(get("/v1/experts/held", 404), "");
  // At most 8 jobs queued or running: the ninth gets 429.
  std::vector<std::string> ids = {post("/v1/adaptations", slow, 202)["id"]};
  for (int i = 1; i < 8; ++i) {
    json queued = slow;
    queued["name"] = "held" + std::to_string(i);
    ids.push_back(post("/v1/adaptations", queued, 202)["id"]);
  }
  json ninth = slow;
  ninth["name"] = "held9";
  expect_error(post("/v1/adaptations", ninth, 429), "");
  for (const auto& id : ids) EXPECT_EQ(del("/v1/adaptations/" + id)["id"], id);
  expect_error(del("/v1/adaptations/adapt-nothing", 404), "id");
}

TEST_F(ServerTest, ADefaultRequestRunsTheClassifierMarkedInExpertJson) {
  // No --dispatch and no --classifier-expert: auto picks the classifier strategy
  // because "router" is marked "dispatch": "classifier".
  const json r = post("/v1/completions", {{"prompt", "The dragon flew over the castle"}, {"max_tokens", 4}, {"temperature", 0}});
  EXPECT_EQ(r["t2"]["strategy"], "classifier") << r;
  EXPECT_EQ(r["t2"]["scores"]["method"], "mean_logprob");
  const json& labels = r["t2"]["scores"]["labels"];
  EXPECT_EQ(labels.size(), 3u) << r;
  for (const char* label : {"dragons", "friends", "others"}) EXPECT_TRUE(labels.contains(label)) << label << " in " << r;
  EXPECT_EQ(r["t2"]["adaptation"], r["t2"]["label"] == "others" ? "base" : r["t2"]["label"].get<std::string>());
  // "dispatch": "auto" is the same as sending nothing; naming the base model does not turn pass 1 off.
  const json by_auto = post("/v1/completions", {{"prompt", "The dragon flew over the castle"}, {"max_tokens", 4}, {"temperature", 0},
                                                {"dispatch", "auto"}, {"model", "stories260K"}});
  EXPECT_EQ(by_auto["t2"]["strategy"], "classifier");
  // The same scores, up to float rounding: the second request reads pass 1's template prefix from the cache.
  EXPECT_EQ(by_auto["t2"]["label"], r["t2"]["label"]);
  for (const auto& [label, score] : r["t2"]["scores"]["labels"].items()) {
    EXPECT_NEAR(by_auto["t2"]["scores"]["labels"][label].get<double>(), score.get<double>(), 1e-4) << label;
  }
  EXPECT_EQ(by_auto["choices"][0]["text"], r["choices"][0]["text"]);
  // Without pass 1 the scores are an empty object.
  const json none = post("/v1/completions", {{"prompt", "Once"}, {"max_tokens", 2}, {"dispatch", "none"}});
  EXPECT_EQ(none["t2"]["strategy"], "none");
  EXPECT_TRUE(none["t2"]["scores"].is_object() && none["t2"]["scores"].empty()) << none;
}

TEST(ServerDispatchBudget, TooManyTargetsForTheDispatchContextFailStartup) {
  T2_REQUIRE_PATH(t2::testing::stories_dir());
  const auto root = t2::testing::fresh_dir("crowded");
  for (int i = 0; i < 120; ++i) {
    write_expert(root / "experts", "target" + std::to_string(i), t2::svf::DispatchRole::kTarget, "stories", static_cast<uint64_t>(i));
  }
  try {
    ServerProcess server({"--model", t2::testing::stories_dir().string(), "--experts-dir", (root / "experts").string(), "--cache-dir",
                          (root / "cache").string(), "--dispatch-template", dispatch_template_path(), "--dispatch-context", "64"});
    ADD_FAILURE() << "the server started:\n" << server.output();
  } catch (const std::runtime_error& e) {
    const std::string what = e.what();
    EXPECT_NE(what.find("server exited (exit status 2)"), std::string::npos) << what;  // an invalid setting, not a crash
    EXPECT_NE(what.find("120 dispatch targets"), std::string::npos) << what;
    EXPECT_NE(what.find("--dispatch_template"), std::string::npos) << what;
    EXPECT_NE(what.find("pass 1's context of 64"), std::string::npos) << what;
    EXPECT_EQ(what.find("t2 ready"), std::string::npos) << what;
  }
}

TEST(ServerDispatchBudget, LoadingATargetThePromptCannotListIsRefused) {
  T2_REQUIRE_PATH(t2::testing::stories_dir());
  const auto root = t2::testing::fresh_dir("tight");
  const auto experts = root / "experts";
  const std::string description = "stories about a brave little animal who runs over the big green hill every single day";
  const std::vector<std::string> names = {"cats", "dogs", "birds"};
  for (size_t i = 0; i < names.size(); ++i) write_expert(experts, names[i], t2::svf::DispatchRole::kTarget, description, i);

  // A context whose half is exactly the template listing the three by name:
  // their descriptions are dropped, and a fourth name does not fit.
  const auto tokenizer = t2::tokenizer::Tokenizer::load(t2::testing::stories_dir());
  const std::string template_text = t2::dispatch::load_template(dispatch_template_path());
  const t2::dispatch::AdaptationPrompt roomy(template_text, tokenizer, 4096);
  const auto tokens = [&](const std::vector<std::string>& labels, const std::string& with) {
    std::vector<t2::dispatch::Category> categories;
    for (const auto& l : labels) categories.push_back({l, with});
    return static_cast<int64_t>(roomy.prefix(categories).tokens.size());
  };
  const int64_t named = tokens(names, "");
  ASSERT_GT(tokens(names, description), named);
  ASSERT_GT(tokens({"cats", "dogs", "birds", "fish"}, ""), named);
  ServerProcess server({"--model", t2::testing::stories_dir().string(), "--experts-dir", experts.string(), "--cache-dir",
                        (root / "cache").string(), "--dispatch-template", dispatch_template_path(), "--dispatch-context",
                        std::to_string(2 * named)});
  EXPECT_NE(server.output().find("dispatch prompt (auto)"), std::string::npos) << server.output();
  httplib::Client c("127.0.0.1", server.port());
  c.set_read_timeout(60, 0);

  // The server routes among the three it could list.
  auto routed = c.Post("/v1/completions", json{{"prompt", "A cat"}, {"max_tokens", 2}}.dump(), "application/json");
  ASSERT_TRUE(routed);
  ASSERT_EQ(routed->status, 200) << routed->body;
  EXPECT_EQ(json::parse(routed->body)["t2"]["scores"]["labels"].size(), 4u) << routed->body;

  write_expert(experts, "fish", t2::svf::DispatchRole::kTarget, description, 7);
  auto refused = c.Post("/v1/experts", json{{"name", "fish"}}.dump(), "application/json");
  ASSERT_TRUE(refused);
  EXPECT_EQ(refused->status, 400) << refused->body;
  const json error = json::parse(refused->body);
  expect_error(error, "name");
  EXPECT_EQ(error["error"]["code"], "dispatch_prompt_too_long") << error;
  EXPECT_NE(error["error"]["message"].get<std::string>().find("4 dispatch targets"), std::string::npos) << error;
  auto listed = c.Get("/v1/experts");
  ASSERT_TRUE(listed);
  EXPECT_EQ(json::parse(listed->body)["data"].size(), 3u);  // not loaded

  // The same folder as an expert used only by name loads: only targets must fit the prompt.
  write_expert(experts, "fish", t2::svf::DispatchRole::kNone, description, 7);
  auto loaded = c.Post("/v1/experts", json{{"name", "fish"}}.dump(), "application/json");
  ASSERT_TRUE(loaded);
  EXPECT_EQ(loaded->status, 201) << loaded->body;
}

TEST_F(ServerTest, TokenizeAndDetokenize) {
  const auto tok = t2::tokenizer::Tokenizer::load(t2::testing::stories_dir());
  // A prompt tokenizes as /v1/completions feeds it: BOS by default (vLLM), "</s>" written in it stays text.
  const json vllm = post("/tokenize", {{"model", "stories260K"}, {"prompt", "Once upon a time</s>"}});
  EXPECT_EQ(vllm["tokens"].get<std::vector<int64_t>>(), tok.encode("Once upon a time</s>", true));
  EXPECT_EQ(vllm["count"], vllm["tokens"].size());
  EXPECT_GT(vllm["max_model_len"].get<int64_t>(), 0);
  const auto tokens = vllm["tokens"].get<std::vector<int64_t>>();
  EXPECT_EQ(std::count(tokens.begin(), tokens.end(), tok.eos_id()), 0);
  // llama.cpp's field names, whose add_special defaults to false.
  EXPECT_EQ(post("/tokenize", {{"content", "Lily"}})["tokens"].get<std::vector<int64_t>>(), tok.encode("Lily", false));
  EXPECT_EQ(post("/tokenize", {{"prompt", "Lily"}, {"add_special_tokens", false}})["tokens"].get<std::vector<int64_t>>(),
            tok.encode("Lily", false));
  // Messages render with the model's chat template; a user's "<s>" is no BOS.
  const json chat = post("/tokenize", {{"messages", {{{"role", "user"}, {"content", "<s>hi"}}}}});
  const auto chat_ids = chat["tokens"].get<std::vector<int64_t>>();
  EXPECT_EQ(std::count(chat_ids.begin(), chat_ids.end(), tok.bos_id()), 1);

  const json text = post("/detokenize", {{"tokens", tok.encode("Once upon a time", true)}});
  EXPECT_EQ(text["prompt"], "<s>" + tok.decode(tok.encode("Once upon a time", false)));  // special tokens written out
  EXPECT_EQ(text["content"], text["prompt"]);
  expect_error(post("/detokenize", {{"tokens", {1, 999999}}}, 400), "tokens");
  expect_error(post("/detokenize", {{"tokens", "1 2"}}, 400), "tokens");
  expect_error(post("/tokenize", {{"prompt", 5}}, 400), "prompt");
  expect_error(post("/tokenize", {{"prompt", "x"}, {"add_special_tokens", "yes"}}, 400), "add_special_tokens");
}

namespace {

// The value of an unlabelled sample in /metrics (-1 when absent).
double metric(const std::string& text, const std::string& name) {
  const std::regex line("(^|\n)" + name + " ([-+0-9.eE]+)");
  std::smatch m;
  return std::regex_search(text, m, line) ? std::stod(m[2].str()) : -1;
}

}  // namespace

TEST_F(ServerTest, AnAbandonedNonStreamedRequestIsCancelled) {
  const auto metrics = [] { return client().Get("/metrics")->body; };
  // 8 choices of up to 511 tokens (the whole context), as in the issue.
  const std::string body = json{{"prompt", "Once"}, {"max_tokens", 511}, {"n", 8}, {"expert", "none"}}.dump();
  httplib::Client c("127.0.0.1", server_->port());
  std::thread abandoned([&] {
    c.set_read_timeout(60, 0);
    c.Post("/v1/completions", body, "application/json");
  });
  bool running = false;
  for (int attempt = 0; attempt < 400 && !running; ++attempt) {  // polling the server's own record
    running = metric(metrics(), "t2_running_sequences") > 0;
    if (!running) std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  ASSERT_TRUE(running);
  c.stop();  // the client leaves: its socket closes
  abandoned.join();
  bool recorded = false;
  for (int attempt = 0; attempt < 400 && !recorded; ++attempt) {
    const std::string m = metrics();
    recorded = m.find("route=\"/v1/completions\",status=\"499\"") != std::string::npos && metric(m, "t2_running_sequences") == 0;
    if (!recorded) std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  // Before, the request ran to its end and was counted as a 200.
  EXPECT_TRUE(recorded) << "the abandoned request was not cancelled";
}

TEST_F(ServerTest, PerRequestMixturesShareOneBoundedMetricsLabel) {
  for (int i = 1; i <= 6; ++i) {
    post("/v1/completions", {{"prompt", "Once"}, {"max_tokens", 1}, {"mixture", {{"dragons", 0.1 * i}, {"friends", 1}}}});
  }
  const std::string m = client().Get("/metrics")->body;
  EXPECT_EQ(m.find("dragons=0"), std::string::npos) << "a per-request mixture became its own label";
  EXPECT_NE(m.find("route=\"/v1/completions\",status=\"200\",adaptation=\"mixture\"} "), std::string::npos);
  EXPECT_NE(m.find("t2_dispatch_decisions_total{strategy=\"explicit\",label=\"mixture\"}"), std::string::npos);
  // The composed sets stay within the cache's byte budget and the resolved adapters within their bound.
  EXPECT_LE(metric(m, "t2_adapter_store_cached_bytes"), metric(m, "t2_adapter_store_budget_bytes"));
  EXPECT_LE(metric(m, "t2_adapter_store_adapters"), 256);
}

TEST_F(ServerTest, NumericOverflowInARequestIs400) {
  for (const json& extra : {json{{"mixture", {{"dragons", 3e38}, {"friends", 3e38}}}}, json{{"mixture", {{"dragons", 1e300}}}},
                            json{{"max_tokens", 1e300}}, json{{"seed", 1e300}}, json{{"seed", 9.3e18}},
                            json{{"n", 18446744073709551615ull}}, json{{"top_k", -1e300}}}) {
    json body = {{"prompt", "Once"}, {"max_tokens", 2}};
    body.update(extra);
    expect_error(post("/v1/completions", body, 400), "");
  }
}
