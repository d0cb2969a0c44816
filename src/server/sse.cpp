#include "sse.hpp"

#include <string>

#include "responses.hpp"

namespace t2::server {

bool SseWriter::event(const nlohmann::json& data) {
  const std::string record = "data: " + dump_json(data) + "\n\n";
  return sink_.write(record.data(), record.size());
}

void SseWriter::finish() {
  static const std::string kDone = "data: [DONE]\n\n";
  sink_.write(kDone.data(), kDone.size());
  sink_.done();
}

}  // namespace t2::server
