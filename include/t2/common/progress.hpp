// A progress bar on stderr for long jobs (SVD, training): redrawn in place on
// a terminal, one line per tenth of the work otherwise (logs stay readable).
#pragma once

#include <chrono>
#include <cstdint>
#include <string>

namespace t2 {

class ProgressBar {
 public:
  ProgressBar(std::string label, int64_t total);
  // Marks `done` of `total` units finished; `detail` names the current item.
  void update(int64_t done, const std::string& detail = "");
  // Prints the final line with the elapsed time.
  void finish(const std::string& summary = "");

 private:
  std::string label_;
  int64_t total_;
  int64_t last_decile_ = -1;
  bool terminal_;
  bool finished_ = false;
  std::chrono::steady_clock::time_point start_;
};

}  // namespace t2
