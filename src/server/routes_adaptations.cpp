// POST /v1/adaptations (validates a few-shot CEM request and queues it as a
// background job, 202), GET /v1/adaptations/{id} (its progress) and DELETE
// /v1/adaptations/{id} (cancels it). The jobs themselves belong to AdaptationJobs.
#include <limits>
#include <optional>
#include <string>
#include <utility>

#include "api_errors.hpp"
#include "responses.hpp"
#include "routes.hpp"

namespace t2::server {
namespace {

using nlohmann::json;

// Throws ApiError naming the field that is missing or out of range.
train::AdaptRequest parse_adapt_request(const ServingContext& ctx, const json& body) {
  if (!body.is_object()) throw ApiError::bad_request("", "the request body must be a JSON object");
  train::AdaptRequest r;
  if (!body.contains("name") || !body["name"].is_string() || !svf::is_valid_expert_name(body["name"].get<std::string>())) {
    throw ApiError::bad_request("name", "'name' must be a valid expert name (letters, digits, '.', '_', '-')");
  }
  r.name = body["name"].get<std::string>();  // AdaptationJobs reserves it (or refuses a taken one)
  if (!body.contains("experts") || !body["experts"].is_array() || body["experts"].empty()) {
    throw ApiError::bad_request("experts", "'experts' must be a non-empty array of loaded expert names");
  }
  for (const auto& e : body["experts"]) {
    if (!e.is_string() || !ctx.store.find(e.get<std::string>())) {
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
    train::Example example;  // by field: a positional initialiser breaks silently when Example gains a member
    example.prompt = e["prompt"].get<std::string>();
    example.answer = e["answer"].get<std::string>();
    example.split = train::Split::kTrain;
    r.examples.push_back(std::move(example));
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
  r.generation = {integer("max_tokens", 32, 1, 512), ctx.eos_token_ids};
  r.per_matrix = body.value("per_matrix", false);
  r.description = body.value("description", std::string("few-shot CEM mixture of ") + body["experts"].dump());
  return r;
}

void start_adaptation(const RouteContext& routes, const httplib::Request& req, httplib::Response& res) {
  auto ctx = routes.admit(req, res);
  if (!ctx) return;
  try {
    train::AdaptRequest request = parse_adapt_request(*ctx, parse_body(req.body));
    send_json(res, 202, routes.adaptations.start(ctx, std::move(request)));
  } catch (const ApiError& e) {
    send_error(res, e);
  } catch (const Error& e) {
    send_error(res, to_api_error(e));
  }
}

// GET and DELETE /v1/adaptations/{id}: the job's description after `act`, or 404.
template <typename Act>
void answer_with_job(const RouteContext& routes, const httplib::Request& req, httplib::Response& res, Act&& act) {
  auto ctx = routes.admit(req, res);
  if (!ctx) return;
  const std::optional<json> job = act(req.matches[1].str());
  if (!job) return send_error(res, ApiError::not_found("id", "no adaptation " + req.matches[1].str(), "not_found"));
  send_json(res, 200, *job);
}

}  // namespace

void register_adaptation_routes(httplib::Server& http, const RouteContext& routes) {
  http.Post("/v1/adaptations", [routes](const auto& req, auto& res) { start_adaptation(routes, req, res); });
  http.Get(R"(/v1/adaptations/([^/]+))", [routes](const auto& req, auto& res) {
    answer_with_job(routes, req, res, [&](const std::string& id) { return routes.adaptations.describe(id); });
  });
  http.Delete(R"(/v1/adaptations/([^/]+))", [routes](const auto& req, auto& res) {
    answer_with_job(routes, req, res, [&](const std::string& id) { return routes.adaptations.cancel(id); });
  });
}

}  // namespace t2::server
