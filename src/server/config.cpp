#include "t2/server/config.hpp"

#include <cstdlib>
#include <fstream>

#include <nlohmann/json.hpp>

#include "t2/common/errors.hpp"
#include "t2/dispatch/dispatcher.hpp"

namespace t2::server {
namespace {

// One place that names every setting, for the file and the environment alike.
template <typename Visit>
void for_each_setting(ServerConfig& c, Visit&& visit) {
  visit("host", c.host);
  visit("port", c.port);
  visit("model", c.model_dir);
  visit("model_id", c.model_id);
  visit("experts_dir", c.experts_dir);
  visit("load_experts", c.load_experts);
  visit("cache_dir", c.cache_dir);
  visit("targets", c.targets);
  visit("device", c.device);
  visit("dtype", c.dtype);
  visit("api_keys", c.api_keys);
  visit("api_key_file", c.api_key_file);
  visit("max_body_bytes", c.max_body_bytes);
  visit("max_batch", c.max_batch);
  visit("max_step_tokens", c.max_step_tokens);
  visit("cuda_graphs", c.cuda_graphs);
  visit("queue_capacity", c.queue_capacity);
  visit("context", c.context);
  visit("request_timeout_s", c.request_timeout_s);
  visit("adapter_cache_bytes", c.adapter_cache_bytes);
  visit("dispatch", c.dispatch);
  visit("dispatch_template", c.dispatch_template);
  visit("classifier_expert", c.classifier_expert);
  visit("constrained_dispatch", c.constrained_dispatch);
  visit("label_scoring", c.label_scoring);
  visit("dispatch_context", c.dispatch_context);
  visit("chat_template", c.chat_template);
  visit("threads", c.threads);
  visit("max_image_pixels", c.max_image_pixels);
  visit("max_images_per_request", c.max_images_per_request);
  visit("image_url_hosts", c.image_url_hosts);
  visit("max_image_fetch_bytes", c.max_image_fetch_bytes);
  visit("image_fetch_timeout_s", c.image_fetch_timeout_s);
}

template <typename T>
void parse_env(const std::string& name, const char* text, T& value) {
  try {
    if constexpr (std::is_same_v<T, std::string>) {
      value = text;
    } else if constexpr (std::is_same_v<T, std::vector<std::string>>) {
      value.clear();
      std::string item;
      for (const char* p = text;; ++p) {
        if (*p == ',' || *p == '\0') {
          if (!item.empty()) value.push_back(item);
          item.clear();
          if (*p == '\0') break;
        } else {
          item += *p;
        }
      }
    } else if constexpr (std::is_same_v<T, bool>) {
      const std::string t = text;
      if (t != "true" && t != "false" && t != "1" && t != "0") throw std::invalid_argument(t);
      value = t == "true" || t == "1";
    } else if constexpr (std::is_floating_point_v<T>) {
      value = std::stod(text);
    } else {
      value = static_cast<T>(std::stoll(text));
    }
  } catch (const std::exception&) {
    throw InvalidArgument(name, "environment variable " + name + "='" + text + "' has the wrong type");
  }
}

std::string env_name(const char* key) {
  std::string name = "T2_";
  for (const char* p = key; *p; ++p) name += static_cast<char>(std::toupper(static_cast<unsigned char>(*p)));
  return name;
}

}  // namespace

void ServerConfig::apply_file(const std::filesystem::path& path) {
  std::ifstream in(path);
  if (!in) throw LoadError(path.string() + ": cannot open config file");
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(in);
  } catch (const nlohmann::json::exception& e) {
    throw LoadError(path.string() + ": invalid JSON: " + e.what());
  }
  if (!j.is_object()) throw LoadError(path.string() + ": the config must be a JSON object");
  std::vector<std::string> known;
  for_each_setting(*this, [&](const char* key, auto& value) {
    known.push_back(key);
    if (!j.contains(key)) return;
    try {
      value = j.at(key).get<std::decay_t<decltype(value)>>();
    } catch (const nlohmann::json::exception&) {
      throw LoadError(path.string() + ": setting '" + key + "' has the wrong type");
    }
  });
  for (const auto& [key, value] : j.items()) {
    if (std::find(known.begin(), known.end(), key) == known.end()) throw LoadError(path.string() + ": unknown setting '" + key + "'");
  }
}

void ServerConfig::apply_environment() {
  for_each_setting(*this, [&](const char* key, auto& value) {
    const std::string name = std::string(key) == "api_keys" ? "T2_API_KEY" : env_name(key);
    if (const char* text = std::getenv(name.c_str()); text != nullptr && *text != '\0') parse_env(name, text, value);
  });
}

void ServerConfig::validate() const {
  if (model_dir.empty()) throw InvalidArgument("model", "no model folder given (--model or T2_MODEL)");
  if (port < 0 || port > 65535) throw InvalidArgument("port", "port must be in [0, 65535]");
  if (max_body_bytes < 1024) throw InvalidArgument("max_body_bytes", "max_body_bytes must be at least 1024");
  if (max_batch < 1 || max_batch > 1024) throw InvalidArgument("max_batch", "max_batch must be in [1, 1024]");
  if (max_step_tokens < max_batch || max_step_tokens > (int64_t{1} << 20)) {
    throw InvalidArgument("max_step_tokens", "max_step_tokens must be at least max_batch (one decode token each) and at most 2^20");
  }
  if (queue_capacity < 1) throw InvalidArgument("queue_capacity", "queue_capacity must be at least 1");
  if (context < 0) throw InvalidArgument("context", "context must be >= 0");
  if (adapter_cache_bytes < 0) throw InvalidArgument("adapter_cache_bytes", "adapter_cache_bytes must be >= 0 (0: from free device memory)");
  if (!(request_timeout_s > 0)) throw InvalidArgument("request_timeout_s", "request_timeout_s must be > 0");
  if (dispatch != "auto") dispatch::parse_strategy(dispatch);
  dispatch::parse_label_scoring(label_scoring);
  if (dispatch_context < 16) throw InvalidArgument("dispatch_context", "dispatch_context must be at least 16 tokens");
  if (threads < 0) throw InvalidArgument("threads", "threads must be >= 0 (0: automatic)");
  if (max_image_pixels < 1) throw InvalidArgument("max_image_pixels", "max_image_pixels must be at least 1");
  if (max_images_per_request < 0) throw InvalidArgument("max_images_per_request", "max_images_per_request must be >= 0");
  if (max_image_fetch_bytes < 1) throw InvalidArgument("max_image_fetch_bytes", "max_image_fetch_bytes must be at least 1");
  if (!(image_fetch_timeout_s > 0)) throw InvalidArgument("image_fetch_timeout_s", "image_fetch_timeout_s must be > 0");
  for (const auto& host : image_url_hosts) {
    if (host.empty() || host.find_first_of("/:@ ") != std::string::npos) {
      throw InvalidArgument("image_url_hosts", "image_url_hosts holds host names (or *), not '" + host + "'");
    }
  }
}

std::vector<std::string> ServerConfig::resolved_api_keys() const {
  std::vector<std::string> keys = api_keys;
  if (!api_key_file.empty()) {
    std::ifstream in(api_key_file);
    if (!in) throw LoadError(api_key_file + ": cannot open API key file");
    for (std::string line; std::getline(in, line);) {
      while (!line.empty() && (line.back() == '\r' || line.back() == ' ')) line.pop_back();
      if (!line.empty() && line[0] != '#') keys.push_back(line);
    }
  }
  return keys;
}

}  // namespace t2::server
