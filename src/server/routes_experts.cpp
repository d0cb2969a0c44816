// The experts as the API shows them: GET /v1/models (the base model and every
// loaded expert, OpenAI's list), GET/POST /v1/experts (list, load from the
// experts folder) and GET/DELETE /v1/experts/{name} (describe, unload).
#include <algorithm>
#include <string>

#include "api_errors.hpp"
#include "responses.hpp"
#include "routes.hpp"
#include "t2/common/log.hpp"

namespace t2::server {
namespace {

using nlohmann::json;

json expert_json(const svf::Expert& e, const std::string& parent) {
  json j = e.to_json();
  j["id"] = e.name;
  j["object"] = "expert";
  j["parent"] = parent;
  return j;
}

ApiError not_loaded(const std::string& name) {
  return ApiError::not_found("name", "expert '" + name + "' is not loaded", "expert_not_found");
}

void list_models(const RouteContext& routes, const httplib::Request& req, httplib::Response& res) {
  auto ctx = routes.admit(req, res);
  if (!ctx) return;
  // What each model takes as input; experts adapt the language model, so they accept what the base does.
  const json modalities = ctx->vision != nullptr ? json::array({"text", "image"}) : json::array({"text"});
  json data = json::array({{{"id", ctx->model_id}, {"object", "model"}, {"created", 0}, {"owned_by", "t2"},
                            {"input_modalities", modalities}}});
  for (const auto& e : ctx->store.experts()) {
    data.push_back({{"id", e.name}, {"object", "model"}, {"created", 0}, {"owned_by", "t2"}, {"parent", ctx->model_id},
                    {"root", ctx->model_id}, {"input_modalities", modalities},
                    {"t2", {{"kind", svf::to_string(e.kind)}, {"description", e.description}}}});
  }
  ctx->metrics.count_request("/v1/models", 200, "none");
  send_json(res, 200, {{"object", "list"}, {"data", data}});
}

void list_experts(const RouteContext& routes, const httplib::Request& req, httplib::Response& res) {
  auto ctx = routes.admit(req, res);
  if (!ctx) return;
  json data = json::array();
  for (const auto& e : ctx->store.experts()) data.push_back(expert_json(e, ctx->model_id));
  send_json(res, 200, {{"object", "list"}, {"data", data}});
}

void get_expert(const RouteContext& routes, const httplib::Request& req, httplib::Response& res) {
  auto ctx = routes.admit(req, res);
  if (!ctx) return;
  const std::string name = req.matches[1];
  const auto e = ctx->store.find(name);
  if (!e) return send_error(res, not_loaded(name));
  send_json(res, 200, expert_json(*e, ctx->model_id));
}

void load_expert(const RouteContext& routes, const httplib::Request& req, httplib::Response& res) {
  auto ctx = routes.admit(req, res);
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
      // A new dispatch target must still fit pass 1's prompt: refuse it here, not on every later request.
      if (const auto e = svf::Expert::load(ctx->experts_dir / name); e.dispatch == svf::DispatchRole::kTarget) {
        auto categories = ctx->dispatcher.categories();
        if (std::none_of(categories.begin(), categories.end(), [&](const auto& c) { return c.label == name; })) {
          categories.push_back({name, e.description});
        }
        try {
          ctx->dispatcher.check_fits(categories);
        } catch (const InvalidArgument& fit) {
          throw ApiError(400, "invalid_request_error", fit.what(), "name", "dispatch_prompt_too_long");
        }
      }
      ctx->store.load_from(ctx->experts_dir, name, force);
    } catch (const NotFound& e) {
      throw to_api_error(ErrorKind::kNotFound, e.what(), "name");
    } catch (const ApiError&) {
      throw;
    } catch (const Error& e) {
      // Whatever else is wrong lies in the folder the client named: its request, not the server, is at fault.
      throw ApiError(400, "invalid_request_error", e.what(), "name", "invalid_expert");
    }
    log::info("loaded expert " + name);
    send_json(res, 201, expert_json(*ctx->store.find(name), ctx->model_id));
  } catch (const ApiError& e) {
    send_error(res, e);
  }
}

void unload_expert(const RouteContext& routes, const httplib::Request& req, httplib::Response& res) {
  auto ctx = routes.admit(req, res);
  if (!ctx) return;
  const std::string name = req.matches[1];
  if (!ctx->store.remove(name)) return send_error(res, not_loaded(name));
  log::info("unloaded expert " + name);
  send_json(res, 200, {{"id", name}, {"object", "expert"}, {"deleted", true}});
}

}  // namespace

void register_expert_routes(httplib::Server& http, const RouteContext& routes) {
  http.Get("/v1/models", [routes](const auto& req, auto& res) { list_models(routes, req, res); });
  http.Get("/v1/experts", [routes](const auto& req, auto& res) { list_experts(routes, req, res); });
  http.Post("/v1/experts", [routes](const auto& req, auto& res) { load_expert(routes, req, res); });
  http.Get(R"(/v1/experts/([^/]+))", [routes](const auto& req, auto& res) { get_expert(routes, req, res); });
  http.Delete(R"(/v1/experts/([^/]+))", [routes](const auto& req, auto& res) { unload_expert(routes, req, res); });
}

}  // namespace t2::server
