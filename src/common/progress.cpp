#include "t2/common/progress.hpp"

#include <unistd.h>

#include <algorithm>
#include <cstdio>

namespace t2 {

ProgressBar::ProgressBar(std::string label, int64_t total)
    : label_(std::move(label)),
      total_(std::max<int64_t>(total, 1)),
      terminal_(isatty(STDERR_FILENO) == 1),
      start_(std::chrono::steady_clock::now()) {}

void ProgressBar::update(int64_t done, const std::string& detail) {
  const double fraction = static_cast<double>(std::min(done, total_)) / static_cast<double>(total_);
  const double elapsed = std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
  const double eta = fraction > 0 ? elapsed * (1 - fraction) / fraction : 0;
  if (terminal_) {
    constexpr int kWidth = 30;
    const int filled = static_cast<int>(fraction * kWidth);
    std::fprintf(stderr, "\r%s [%.*s%*s] %lld/%lld %.1fs eta %.1fs %-40.40s", label_.c_str(), filled,
                 "##############################", kWidth - filled, "", static_cast<long long>(done),
                 static_cast<long long>(total_), elapsed, eta, detail.c_str());
    std::fflush(stderr);
    return;
  }
  const auto decile = static_cast<int64_t>(fraction * 10);
  if (decile == last_decile_) return;
  last_decile_ = decile;
  std::fprintf(stderr, "%s %3.0f%% (%lld/%lld) %.1fs %s\n", label_.c_str(), fraction * 100,
               static_cast<long long>(done), static_cast<long long>(total_), elapsed, detail.c_str());
}

void ProgressBar::finish(const std::string& summary) {
  if (finished_) return;
  finished_ = true;
  const double elapsed = std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
  std::fprintf(stderr, "%s%s done in %.2fs %s\n", terminal_ ? "\r\033[K" : "", label_.c_str(), elapsed, summary.c_str());
}

}  // namespace t2
