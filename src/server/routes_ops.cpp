// Operations: GET /health (for load balancers: no key needed, 503 while the
// model loads or the server drains) and GET /metrics (Prometheus text).
#include "responses.hpp"
#include "routes.hpp"

namespace t2::server {

void register_ops_routes(httplib::Server& http, const RouteContext& routes) {
  http.Get("/health", [routes](const httplib::Request&, httplib::Response& res) {
    if (!routes.ready()) return send_json(res, 503, {{"status", "loading"}});
    if (routes.draining) return send_json(res, 503, {{"status", "draining"}});
    send_json(res, 200, {{"status", "ok"}});
  });
  http.Get("/metrics", [routes](const httplib::Request& req, httplib::Response& res) {
    auto ctx = routes.admit(req, res);
    if (!ctx) return;
    res.set_content(ctx->metrics.render(ctx->scheduler.stats(), ctx->store.stats()), "text/plain; version=0.0.4; charset=utf-8");
  });
}

}  // namespace t2::server
