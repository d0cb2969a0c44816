// POST /tokenize and POST /detokenize, as vLLM's and llama.cpp's servers offer
// them. /tokenize answers the ids t2 itself would feed the model: a "prompt"
// (vLLM; llama.cpp's "content") tokenized as /v1/completions does, special
// tokens written in it staying text, or "messages" rendered with the model's
// chat template as /v1/chat/completions does. /detokenize writes special
// tokens out, so a prompt's markup is visible.
#include <string>
#include <vector>

#include "responses.hpp"
#include "routes.hpp"
#include "t2/tokenizer/chat_template.hpp"

namespace t2::server {
namespace {

using nlohmann::json;

bool flag(const json& body, const char* name, bool fallback) {
  if (!body.contains(name)) return fallback;
  if (!body[name].is_boolean()) throw ApiError::bad_request(name, std::string("'") + name + "' must be a boolean");
  return body[name].get<bool>();
}

std::vector<int64_t> tokenize_body(const ServingContext& ctx, const json& body) {
  if (body.contains("messages")) {
    const ChatRequest chat = parse_chat_request(body);
    return tokenizer::encode_chat(ctx.tokenizer,
                                  tokenizer::render_chat(ctx.chat_format, chat.messages, flag(body, "add_generation_prompt", true)));
  }
  const char* key = body.contains("prompt") ? "prompt" : "content";
  if (!body.contains(key) || !body[key].is_string()) {
    throw ApiError::bad_request("prompt", "'prompt' (or 'content') must be a string, or give 'messages'");
  }
  // vLLM ("prompt", add_special_tokens) adds BOS by default; llama.cpp ("content", add_special) does not.
  const bool vllm = std::string(key) == "prompt";
  const bool add_special = body.contains("add_special_tokens") ? flag(body, "add_special_tokens", true)
                           : body.contains("add_special")      ? flag(body, "add_special", false)
                                                               : vllm;
  return ctx.tokenizer.encode(body[key].get<std::string>(), add_special);
}

void tokenize(const RouteContext& routes, const httplib::Request& req, httplib::Response& res) {
  auto ctx = routes.admit(req, res);
  if (!ctx) return;
  try {
    const json body = parse_body(req.body);
    if (!body.is_object()) throw ApiError::bad_request("", "the body must be a JSON object");
    const auto ids = tokenize_body(*ctx, body);
    ctx->metrics.count_request("/tokenize", 200, "none");
    send_json(res, 200, {{"tokens", ids}, {"count", ids.size()}, {"max_model_len", ctx->scheduler.context_length()}});
  } catch (const ApiError& e) {
    send_error(res, e);
  }
}

void detokenize(const RouteContext& routes, const httplib::Request& req, httplib::Response& res) {
  auto ctx = routes.admit(req, res);
  if (!ctx) return;
  try {
    const json body = parse_body(req.body);
    if (!body.is_object() || !body.contains("tokens") || !body["tokens"].is_array()) {
      throw ApiError::bad_request("tokens", "'tokens' must be an array of token ids");
    }
    std::vector<int64_t> ids;
    for (const auto& t : body["tokens"]) {
      if (!t.is_number_integer()) throw ApiError::bad_request("tokens", "'tokens' must be an array of token ids");
      const auto id = t.get<int64_t>();
      if (id < 0 || id >= ctx->tokenizer.vocab_size()) {
        throw ApiError::bad_request("tokens", "token id " + std::to_string(id) + " is outside the vocabulary");
      }
      ids.push_back(id);
    }
    const std::string text = ctx->tokenizer.decode(ids, /*skip_special_tokens=*/false);
    ctx->metrics.count_request("/detokenize", 200, "none");
    // vLLM answers "prompt", llama.cpp "content": both, so either client reads it.
    send_json(res, 200, {{"prompt", text}, {"content", text}});
  } catch (const ApiError& e) {
    send_error(res, e);
  }
}

}  // namespace

void register_tokenize_routes(httplib::Server& http, const RouteContext& routes) {
  http.Post("/tokenize", [routes](const httplib::Request& req, httplib::Response& res) { tokenize(routes, req, res); });
  http.Post("/detokenize", [routes](const httplib::Request& req, httplib::Response& res) { detokenize(routes, req, res); });
}

}  // namespace t2::server
