// HttpServer: the httplib server (its worker pool, body limit and socket
// options), the gate every route passes through (RouteContext::admit), the
// answers for requests no route took, and the server's lifecycle. The routes
// themselves live in routes_*.cpp.
#include "t2/server/http_server.hpp"

#include <httplib.h>

#include <thread>

#include "responses.hpp"
#include "routes.hpp"
#include "t2/common/log.hpp"
#include "t2/server/adaptation_jobs.hpp"
#include "t2/server/auth.hpp"

namespace t2::server {

std::shared_ptr<ServingContext> RouteContext::admit(const httplib::Request& req, httplib::Response& res) const {
  if (!authorised(req.get_header_value("Authorization"), api_keys)) {
    send_error(res, ApiError(401, "invalid_request_error", "invalid or missing API key (Authorization: Bearer ...)", "", "invalid_api_key"));
    return nullptr;
  }
  auto ctx = ready();
  if (!ctx) {
    send_error(res, ApiError(503, "server_error", "the model is still loading", "", "model_loading"));
    return nullptr;
  }
  if (draining) {
    send_error(res, ApiError(503, "server_error", "the server is shutting down", "", "shutting_down"));
    return nullptr;
  }
  return ctx;
}

HttpServer::HttpServer(const ServerConfig& config, std::vector<std::string> api_keys)
    : api_keys_(std::move(api_keys)), adaptations_(std::make_unique<AdaptationJobs>()), http_(std::make_unique<httplib::Server>()) {
  // Every running or queued generation holds a worker; the rest answer /health and 429s.
  const int threads = config.threads > 0 ? config.threads : static_cast<int>(config.max_batch + config.queue_capacity + 8);
  http_->new_task_queue = [threads] { return new httplib::ThreadPool(static_cast<size_t>(threads)); };
  http_->set_payload_max_length(static_cast<size_t>(config.max_body_bytes));
  http_->set_tcp_nodelay(true);  // streamed tokens are small writes; Nagle would hold them ~40 ms

  const RouteContext routes{context_, draining_, api_keys_, *adaptations_};
  register_completion_routes(*http_, routes);
  register_expert_routes(*http_, routes);
  register_adaptation_routes(*http_, routes);
  register_ops_routes(*http_, routes);
  register_tokenize_routes(*http_, routes);

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
  http_->stop();
  adaptations_->shutdown();
}

}  // namespace t2::server
