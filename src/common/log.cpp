#include "t2/common/log.hpp"

#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>

namespace t2::log {
namespace {

// Logs go to stderr, so a command's stdout carries only its output (JSON, text).
spdlog::logger& logger() {
  static const std::shared_ptr<spdlog::logger> instance = spdlog::stderr_color_mt("t2");
  return *instance;
}

}  // namespace

void debug(const std::string& message) { logger().debug(message); }
void info(const std::string& message) { logger().info(message); }
void warn(const std::string& message) { logger().warn(message); }
void error(const std::string& message) { logger().error(message); }
void set_level(const std::string& level) { logger().set_level(spdlog::level::from_str(level)); }

}  // namespace t2::log
