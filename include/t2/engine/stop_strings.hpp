// Stop strings over streamed text: emits text as soon as it cannot be the
// start of a stop string, and cuts the output before the first match (the
// stop string itself is not returned, as in OpenAI's API).
#pragma once

#include <string>
#include <vector>

namespace t2::engine {

class StopStrings {
 public:
  explicit StopStrings(std::vector<std::string> stops);

  struct Result {
    std::string text;  // safe to emit now
    bool stopped = false;
  };
  Result push(const std::string& text);
  // Text held back because it might have begun a stop string.
  std::string flush();

 private:
  std::vector<std::string> stops_;
  std::string pending_;
};

}  // namespace t2::engine
