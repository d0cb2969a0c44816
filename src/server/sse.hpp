// Server-sent events framing for streamed completions: each event is one
// "data: <json>\n\n" record, and an OpenAI stream ends with "data: [DONE]".
#pragma once

#include <httplib.h>
#include <nlohmann/json.hpp>

namespace t2::server {

class SseWriter {
 public:
  explicit SseWriter(httplib::DataSink& sink) : sink_(sink) {}

  // False once the client is gone.
  bool event(const nlohmann::json& data);
  // Writes the [DONE] record and ends the stream.
  void finish();

 private:
  httplib::DataSink& sink_;
};

}  // namespace t2::server
