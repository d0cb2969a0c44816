#include "responses.hpp"

#include <chrono>
#include <random>

namespace t2::server {

using nlohmann::json;

std::string dump_json(const json& body) { return body.dump(-1, ' ', false, json::error_handler_t::replace); }

void send_json(httplib::Response& res, int status, const json& body) {
  res.status = status;
  res.set_content(dump_json(body), "application/json");
}

void send_error(httplib::Response& res, const ApiError& error) {
  if (error.status() == 429) res.set_header("Retry-After", "1");
  send_json(res, error.status(), error.body());
}

std::string random_id(const std::string& prefix) {
  // One generator per HTTP worker thread: ids need no lock and no shared state.
  static thread_local std::mt19937_64 rng{std::random_device{}()};
  static const char* kAlphabet = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
  std::string id = prefix;
  for (int i = 0; i < 24; ++i) id += kAlphabet[rng() % 62];
  return id;
}

int64_t unix_time() {
  return std::chrono::duration_cast<std::chrono::seconds>(std::chrono::system_clock::now().time_since_epoch()).count();
}

}  // namespace t2::server
