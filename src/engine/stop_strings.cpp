#include "t2/engine/stop_strings.hpp"

#include <algorithm>

namespace t2::engine {

StopStrings::StopStrings(std::vector<std::string> stops) : stops_(std::move(stops)) {
  stops_.erase(std::remove(stops_.begin(), stops_.end(), std::string()), stops_.end());
}

StopStrings::Result StopStrings::push(const std::string& text) {
  pending_ += text;
  size_t first_match = std::string::npos;
  for (const auto& stop : stops_) first_match = std::min(first_match, pending_.find(stop));
  if (first_match != std::string::npos) {
    Result result{pending_.substr(0, first_match), true};
    pending_.clear();
    return result;
  }
  // Hold back the longest tail that is a proper prefix of some stop string.
  size_t hold = 0;
  for (const auto& stop : stops_) {
    for (size_t n = std::min(stop.size() - 1, pending_.size()); n > hold; --n) {
      if (pending_.compare(pending_.size() - n, n, stop, 0, n) == 0) {
        hold = n;
        break;
      }
    }
  }
  Result result{pending_.substr(0, pending_.size() - hold), false};
  pending_.erase(0, pending_.size() - hold);
  return result;
}

std::string StopStrings::flush() {
  std::string rest;
  rest.swap(pending_);
  return rest;
}

}  // namespace t2::engine
