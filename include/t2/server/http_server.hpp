// The HTTP front: OpenAI-compatible routes on cpp-httplib. Each request is
// validated and parsed on an HTTP worker thread, submitted to the scheduler,
// and answered from its job's events (one JSON body, or server-sent events).
//   POST /v1/completions, /v1/chat/completions   GET /v1/models
//   GET/POST /v1/experts, GET/DELETE /v1/experts/{name}
//   POST /v1/adaptations, GET /v1/adaptations/{id}  (few-shot CEM, a background job)
//   GET /health (503 until the model is loaded), GET /metrics (Prometheus)
// The handlers live in src/server/routes_*.cpp, one file per area (see src/server/routes.hpp).
#pragma once

#include <atomic>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "t2/engine/scheduler.hpp"
#include "t2/server/config.hpp"
#include "t2/server/metrics.hpp"
#include "t2/svf/adapter_store.hpp"
#include "t2/tokenizer/chat_template.hpp"
#include "t2/tokenizer/tokenizer.hpp"
#include "t2/vision/image_processor.hpp"
#include "t2/vision/llava_next.hpp"

namespace t2::server {

// Everything a request needs once the model is loaded; owned by `t2 serve`.
struct ServingContext {
  const model::Transformer& model;
  tokenizer::Tokenizer tokenizer;
  svf::AdapterStore& store;
  engine::Scheduler& scheduler;
  const dispatch::Dispatcher& dispatcher;  // its const queries only; the scheduler thread runs pass 1
  Metrics& metrics;
  tokenizer::ChatFormat chat_format;
  std::string model_id;
  std::string fingerprint;
  std::filesystem::path experts_dir;
  dispatch::Strategy default_strategy;
  double request_timeout_s;
  std::vector<int64_t> eos_token_ids;
  // Vision-language models: the image encoder and the images' preprocessing; null for text models.
  const vision::LlavaNext* vision = nullptr;
  std::shared_ptr<const vision::ImageProcessor> image_processor;
  ImagePolicy images;
};

class AdaptationJobs;  // t2/server/adaptation_jobs.hpp
class GatedServer;     // src/server/http_server.cpp

class HttpServer {
 public:
  HttpServer(const ServerConfig& config, std::vector<std::string> api_keys);
  ~HttpServer();
  HttpServer(const HttpServer&) = delete;
  HttpServer& operator=(const HttpServer&) = delete;

  // Binds host:port (port 0: any free port) and returns the port; throws Error.
  int bind(const std::string& host, int port);
  // Serves until stop(); call from its own thread.
  void serve();
  // Returns once serve() is accepting connections (so stop() takes effect).
  void wait_until_running() const;
  // From then on requests are answered (before: 503 "loading").
  void set_ready(std::shared_ptr<ServingContext> context);
  // New requests get 503 while in-flight ones finish.
  void set_draining();
  void stop();

 private:
  // The routes refer to these (src/server/routes.hpp), so they are declared before http_ and die after it.
  std::shared_ptr<ServingContext> context_;  // read with std::atomic_load
  std::vector<std::string> api_keys_;
  std::atomic<bool> draining_{false};
  std::unique_ptr<AdaptationJobs> adaptations_;  // background CEM jobs, joined by stop()
  std::unique_ptr<GatedServer> http_;
};

}  // namespace t2::server
