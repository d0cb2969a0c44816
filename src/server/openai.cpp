#include "t2/server/openai.hpp"

#include <cmath>

namespace t2::server {
namespace {

using nlohmann::json;

// Only the ratios of a mixture's weights matter (W' keeps the nuclear norm); this bound is far past any useful one.
constexpr double kMaxMixtureWeight = 1000;

// Typed access to a request object; wrong types are 400s naming the field.
class Fields {
 public:
  explicit Fields(const json& j) : j_(j) {
    if (!j.is_object()) throw ApiError::bad_request("", "the request body must be a JSON object");
  }

  bool has(const char* key) const { return j_.contains(key) && !j_.at(key).is_null(); }
  const json& raw(const char* key) const { return j_.at(key); }

  std::optional<double> number(const char* key, double lo, double hi) const {
    if (!has(key)) return std::nullopt;
    if (!j_.at(key).is_number()) throw ApiError::bad_request(key, std::string("'") + key + "' must be a number");
    const double v = j_.at(key).get<double>();
    if (!(v >= lo && v <= hi)) {
      throw ApiError::bad_request(key, std::string("'") + key + "' must be between " + fmt(lo) + " and " + fmt(hi));
    }
    return v;
  }
  std::optional<int64_t> integer(const char* key, int64_t lo, int64_t hi) const {
    if (!has(key)) return std::nullopt;
    const json& v = j_.at(key);
    if (!v.is_number_integer() && !(v.is_number_float() && std::floor(v.get<double>()) == v.get<double>())) {
      throw ApiError::bad_request(key, std::string("'") + key + "' must be an integer");
    }
    // Out-of-range values never reach a cast (a double past int64, an unsigned past its max, would overflow).
    const bool in_range = v.is_number_unsigned()  ? v.get<uint64_t>() <= static_cast<uint64_t>(hi) && (lo <= 0 || v.get<uint64_t>() >= static_cast<uint64_t>(lo))
                          : v.is_number_integer() ? v.get<int64_t>() >= lo && v.get<int64_t>() <= hi
                                                  : v.get<double>() >= static_cast<double>(lo) && v.get<double>() <= static_cast<double>(hi) &&
                                                    std::fabs(v.get<double>()) < 9.2e18;  // 2^63 itself rounds in
    const auto i = in_range ? (v.is_number_float() ? static_cast<int64_t>(v.get<double>()) : v.get<int64_t>()) : int64_t{0};
    if (!in_range || i < lo || i > hi) {
      throw ApiError::bad_request(key, std::string("'") + key + "' must be between " + std::to_string(lo) + " and " + std::to_string(hi));
    }
    return i;
  }
  std::optional<bool> boolean(const char* key) const {
    if (!has(key)) return std::nullopt;
    if (!j_.at(key).is_boolean()) throw ApiError::bad_request(key, std::string("'") + key + "' must be a boolean");
    return j_.at(key).get<bool>();
  }
  std::optional<std::string> string(const char* key) const {
    if (!has(key)) return std::nullopt;
    if (!j_.at(key).is_string()) throw ApiError::bad_request(key, std::string("'") + key + "' must be a string");
    return j_.at(key).get<std::string>();
  }

 private:
  static std::string fmt(double v) {
    std::string s = std::to_string(v);
    s.erase(s.find_last_not_of('0') + 1);
    if (!s.empty() && s.back() == '.') s.pop_back();
    return s;
  }
  const json& j_;
};

GenerationFields parse_common(const Fields& f) {
  GenerationFields g;
  g.model = f.string("model").value_or("");
  if (auto v = f.integer("max_tokens", 1, 1 << 20)) {
    g.max_tokens = *v;
    g.max_tokens_given = true;
  }
  if (auto v = f.integer("max_completion_tokens", 1, 1 << 20)) {
    g.max_tokens = *v;
    g.max_tokens_given = true;
  }
  g.temperature = f.number("temperature", 0, 2).value_or(1.0);
  g.top_p = f.number("top_p", 0, 1).value_or(1.0);
  if (g.top_p == 0) g.top_p = 1e-9;  // OpenAI accepts 0: only the most likely token
  g.top_k = f.integer("top_k", 0, 1 << 20).value_or(0);
  g.n = static_cast<int>(f.integer("n", 1, 128).value_or(1));
  g.presence_penalty = f.number("presence_penalty", -2, 2).value_or(0);
  g.frequency_penalty = f.number("frequency_penalty", -2, 2).value_or(0);
  if (auto v = f.integer("seed", std::numeric_limits<int64_t>::min(), std::numeric_limits<int64_t>::max())) {
    g.seed = static_cast<uint64_t>(*v);
  }
  g.stream = f.boolean("stream").value_or(false);
  if (f.has("stream_options")) {
    const json& o = f.raw("stream_options");
    if (!o.is_object()) throw ApiError::bad_request("stream_options", "'stream_options' must be an object");
    if (!g.stream) throw ApiError::bad_request("stream_options", "'stream_options' is only allowed with stream: true");
    g.include_usage = Fields(o).boolean("include_usage").value_or(false);
  }
  if (f.has("stop")) {
    const json& s = f.raw("stop");
    if (s.is_string()) {
      g.stop.push_back(s.get<std::string>());
    } else if (s.is_array() && s.size() <= 4) {
      for (const auto& item : s) {
        if (!item.is_string()) throw ApiError::bad_request("stop", "'stop' must be a string or up to 4 strings");
        g.stop.push_back(item.get<std::string>());
      }
    } else {
      throw ApiError::bad_request("stop", "'stop' must be a string or up to 4 strings");
    }
  }
  g.user = f.string("user").value_or("");
  g.ignore_eos = f.boolean("ignore_eos").value_or(false);
  g.expert = f.string("expert");
  g.dispatch = f.string("dispatch");
  if (f.has("mixture")) {
    const json& m = f.raw("mixture");
    if (!m.is_object() || m.empty()) throw ApiError::bad_request("mixture", "'mixture' must be an object of expert name -> weight");
    for (const auto& [name, weight] : m.items()) {
      // Bounded so that sums of weighted z vectors stay finite in float32 (3e38 + 3e38 would not).
      if (!weight.is_number() || !(weight.get<double>() >= 0) || !(weight.get<double>() <= kMaxMixtureWeight)) {
        throw ApiError::bad_request("mixture", "mixture weight of '" + name + "' must be a number in [0, " +
                                                   std::to_string(static_cast<int>(kMaxMixtureWeight)) + "]");
      }
      g.mixture.emplace_back(name, weight.get<double>());
    }
  }
  return g;
}

// OpenAI's {"type": "image_url", "image_url": {"url": ..., "detail": ...}}; a bare URL string is accepted too.
std::string image_url_of(const json& part, const std::string& param) {
  const json empty;
  const json& image = part.contains("image_url") ? part.at("image_url") : empty;
  if (image.is_string()) return image.get<std::string>();
  if (!image.is_object() || !image.contains("url") || !image["url"].is_string()) {
    throw ApiError::bad_request(param, param + ".image_url must be an object with a 'url' string");
  }
  if (image.contains("detail") && !image["detail"].is_null()) {
    const json& detail = image["detail"];
    if (!detail.is_string() || (detail != "auto" && detail != "low" && detail != "high")) {
      throw ApiError::bad_request(param, param + ".image_url.detail must be auto, low or high");
    }
  }
  return image["url"].get<std::string>();
}

}  // namespace

json ApiError::body() const {
  return {{"error",
           {{"message", what()},
            {"type", type_},
            {"param", param_.empty() ? json(nullptr) : json(param_)},
            {"code", code_.empty() ? json(nullptr) : json(code_)}}}};
}

ApiError ApiError::bad_request(const std::string& param, const std::string& message) {
  return ApiError(400, "invalid_request_error", message, param);
}

ApiError ApiError::not_found(const std::string& param, const std::string& message, const std::string& code) {
  return ApiError(404, "invalid_request_error", message, param, code);
}

json parse_body(const std::string& text) {
  try {
    return json::parse(text);
  } catch (const json::parse_error& e) {
    throw ApiError::bad_request("", std::string("the request body is not valid JSON: ") + e.what());
  }
}

CompletionRequest parse_completion_request(const json& body) {
  const Fields f(body);
  CompletionRequest r;
  r.fields = parse_common(f);
  if (auto v = f.integer("logprobs", 0, 20)) r.fields.logprobs = static_cast<int>(*v);
  r.echo = f.boolean("echo").value_or(false);
  if (f.has("suffix")) throw ApiError::bad_request("suffix", "'suffix' (insertion) is not supported by this model");
  if (!f.has("prompt")) throw ApiError::bad_request("prompt", "'prompt' is required");
  const json& p = f.raw("prompt");
  const auto token_list = [](const json& a) {
    std::vector<int64_t> ids;
    for (const auto& t : a) {
      if (!t.is_number_integer()) throw ApiError::bad_request("prompt", "token prompts must be integers");
      ids.push_back(t.get<int64_t>());
    }
    return ids;
  };
  if (p.is_string()) {
    r.text_prompts.push_back(p.get<std::string>());
  } else if (p.is_array() && !p.empty() && p[0].is_string()) {
    for (const auto& item : p) {
      if (!item.is_string()) throw ApiError::bad_request("prompt", "'prompt' must be a string, strings, tokens or token lists");
      r.text_prompts.push_back(item.get<std::string>());
    }
  } else if (p.is_array() && !p.empty() && p[0].is_number_integer()) {
    r.token_prompts.push_back(token_list(p));
  } else if (p.is_array() && !p.empty() && p[0].is_array()) {
    for (const auto& item : p) {
      if (!item.is_array()) throw ApiError::bad_request("prompt", "'prompt' must be a string, strings, tokens or token lists");
      r.token_prompts.push_back(token_list(item));
    }
  } else {
    throw ApiError::bad_request("prompt", "'prompt' must be a string, strings, tokens or token lists");
  }
  return r;
}

ChatRequest parse_chat_request(const json& body) {
  const Fields f(body);
  ChatRequest r;
  r.fields = parse_common(f);
  if (f.boolean("logprobs").value_or(false)) {
    r.fields.logprobs = static_cast<int>(f.integer("top_logprobs", 0, 20).value_or(0));
  } else if (f.has("top_logprobs")) {
    throw ApiError::bad_request("top_logprobs", "'top_logprobs' needs 'logprobs': true");
  }
  if (!f.has("messages") || !f.raw("messages").is_array() || f.raw("messages").empty()) {
    throw ApiError::bad_request("messages", "'messages' must be a non-empty array");
  }
  size_t i = 0;
  for (const auto& m : f.raw("messages")) {
    const std::string param = "messages[" + std::to_string(i++) + "]";
    if (!m.is_object()) throw ApiError::bad_request(param, param + " must be an object");
    const auto role = Fields(m).string("role");
    if (!role || (*role != "system" && *role != "user" && *role != "assistant" && *role != "developer")) {
      throw ApiError::bad_request(param + ".role", param + ".role must be system, developer, user or assistant");
    }
    tokenizer::ChatMessage message{*role == "developer" ? "system" : *role, "", 0};
    const json empty;
    const json& c = m.contains("content") ? m.at("content") : empty;
    if (c.is_string()) {
      message.content = c.get<std::string>();
    } else if (c.is_array()) {
      size_t k = 0;
      for (const auto& part : c) {
        const std::string part_param = param + ".content[" + std::to_string(k++) + "]";
        const std::string type = part.is_object() && part.contains("type") && part["type"].is_string() ? part["type"].get<std::string>() : "";
        if (type == "text") {
          if (!part.contains("text") || !part["text"].is_string()) throw ApiError::bad_request(part_param, part_param + ".text must be a string");
          message.content += part["text"].get<std::string>();
        } else if (type == "image_url") {
          if (*role != "user") throw ApiError::bad_request(part_param, part_param + ": only user messages may carry images");
          r.images.push_back({image_url_of(part, part_param), part_param});
          ++message.images;
        } else {
          throw ApiError::bad_request(part_param, part_param + " has type '" + type + "'; supported content parts are text and image_url");
        }
      }
    } else if (!(c.is_null() && *role == "assistant")) {
      throw ApiError::bad_request(param + ".content", param + ".content must be a string or an array of content parts");
    }
    r.messages.push_back(std::move(message));
  }
  return r;
}

}  // namespace t2::server
