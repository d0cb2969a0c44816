#include "t2/common/log.hpp"

#include <spdlog/spdlog.h>

namespace t2::log {

void debug(const std::string& message) { spdlog::debug(message); }
void info(const std::string& message) { spdlog::info(message); }
void warn(const std::string& message) { spdlog::warn(message); }
void error(const std::string& message) { spdlog::error(message); }
void set_level(const std::string& level) { spdlog::set_level(spdlog::level::from_str(level)); }

}  // namespace t2::log
