// HttpServer: the httplib server (its connections go through a ConnectionGate,
// so only whole requests take a worker; its listen backlog), the gate every
// route passes through (RouteContext::admit), the answers for requests no
// route took, and the server's lifecycle. The routes themselves live in routes_*.cpp.
#include "t2/server/http_server.hpp"

#include <httplib.h>
#include <sys/socket.h>

#include <thread>

#include "connection_gate.hpp"
#include "responses.hpp"
#include "routes.hpp"
#include "t2/common/log.hpp"
#include "t2/server/adaptation_jobs.hpp"
#include "t2/server/auth.hpp"

namespace t2::server {
namespace {

// Set by the server on every request to the socket it came on; a client's own copy is dropped.
constexpr const char* kSocketHeader = "T2-Internal-Socket";
constexpr int kListenBacklog = 4096;  // httplib listens with 5: a burst of connects would wait on SYN retries

// httplib's accept loop hands each socket to process_and_close_socket through
// its task queue; this one runs that at once, and the override gives the socket to the gate.
class AcceptQueue : public httplib::TaskQueue {
 public:
  explicit AcceptQueue(ConnectionGate& gate) : gate_(gate) {}
  void enqueue(std::function<void()> fn) override { fn(); }
  void shutdown() override { gate_.shutdown(); }

 private:
  ConnectionGate& gate_;
};

}  // namespace

// httplib's Server with its connections in a ConnectionGate: the gate reads each
// request whole, then a gate worker has httplib parse, route and answer it.
class GatedServer : public httplib::Server {
 public:
  explicit GatedServer(GateLimits limits)
      : gate_(limits, [this](ConnectionStream& stream, bool last) { return serve(stream, last); },
              [](int status) { return refusal(status); }) {
    new_task_queue = [this] { return new AcceptQueue(gate_); };  // httplib owns the queue
  }
  ~GatedServer() override { gate_.shutdown(); }
  void raise_backlog() { ::listen(svr_sock_, kListenBacklog); }

 private:
  bool process_and_close_socket(socket_t sock) override {
    gate_.adopt(sock);
    return true;
  }
  bool serve(ConnectionStream& stream, bool last) {
    bool closed = false;
    const std::string fd = std::to_string(stream.socket());
    const bool ok = process_request(stream, last, closed, [&fd](httplib::Request& req) {
      req.headers.erase(kSocketHeader);
      req.set_header(kSocketHeader, fd);
    });
    return ok && !closed && !last;
  }
  static std::string refusal(int status) {
    const char* reason = status == 431 ? "Request Header Fields Too Large" : status == 413 ? "Payload Too Large" : "Request Timeout";
    const ApiError error = status == 431   ? ApiError(431, "invalid_request_error", "the request headers are too large", "", "headers_too_large")
                           : status == 413 ? ApiError(413, "invalid_request_error", "the request body is too large", "", "payload_too_large")
                                           : ApiError(408, "invalid_request_error", "the request did not arrive in time", "", "request_timeout");
    const std::string body = error.body().dump();
    return "HTTP/1.1 " + std::to_string(status) + " " + reason + "\r\nContent-Type: application/json\r\nContent-Length: " +
           std::to_string(body.size()) + "\r\nConnection: close\r\n\r\n" + body;
  }

  ConnectionGate gate_;
};

bool client_connected(const httplib::Request& req) {
  const std::string fd = req.get_header_value(kSocketHeader);
  return fd.empty() || peer_connected(std::stoi(fd));
}

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
    : api_keys_(std::move(api_keys)), adaptations_(std::make_unique<AdaptationJobs>()) {
  GateLimits limits;
  // Every running or queued generation holds a worker; the rest answer /health and 429s.
  limits.workers = static_cast<size_t>(config.threads > 0 ? config.threads : config.max_batch + config.queue_capacity + 8);
  limits.max_body_bytes = static_cast<size_t>(config.max_body_bytes);
  http_ = std::make_unique<GatedServer>(limits);
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
  http_->raise_backlog();
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
