// The routes of HttpServer, one file per area (the layout of llama.cpp's tools/server):
//   routes_completions.cpp   POST /v1/completions, POST /v1/chat/completions (JSON or SSE)
//   routes_experts.cpp       GET /v1/models, GET/POST /v1/experts, GET/DELETE /v1/experts/{name}
//   routes_adaptations.cpp   POST /v1/adaptations, GET /v1/adaptations/{id}
//   routes_ops.cpp           GET /health, GET /metrics
//   routes_tokenize.cpp      POST /tokenize, POST /detokenize
// Each file registers its handlers on the httplib::Server; the handlers reach
// their server's state only through the RouteContext they are given.
#pragma once

#include <atomic>
#include <memory>
#include <string>
#include <vector>

#include <httplib.h>

#include "t2/server/adaptation_jobs.hpp"
#include "t2/server/http_server.hpp"

namespace t2::server {

// What the handlers share with their HttpServer. It refers to the server's own
// members: the server owns the httplib::Server that holds the handlers, so it outlives them.
struct RouteContext {
  const std::shared_ptr<ServingContext>& serving;  // null until set_ready; read with std::atomic_load
  const std::atomic<bool>& draining;
  const std::vector<std::string>& api_keys;
  AdaptationJobs& adaptations;

  // The serving context, or null while the model loads.
  std::shared_ptr<ServingContext> ready() const { return std::atomic_load(&serving); }
  // The gate of every route but /health: API key, then readiness, then draining.
  // Returns the serving context, or answers the refusal and returns null.
  std::shared_ptr<ServingContext> admit(const httplib::Request& req, httplib::Response& res) const;
};

// Whether the client of a request being handled is still connected (it may have closed its socket).
bool client_connected(const httplib::Request& req);

void register_completion_routes(httplib::Server& http, const RouteContext& routes);
void register_expert_routes(httplib::Server& http, const RouteContext& routes);
void register_adaptation_routes(httplib::Server& http, const RouteContext& routes);
void register_ops_routes(httplib::Server& http, const RouteContext& routes);
void register_tokenize_routes(httplib::Server& http, const RouteContext& routes);

}  // namespace t2::server
