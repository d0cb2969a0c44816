// Logging through spdlog, behind plain functions: spdlog's headers need
// Debian's fmt 9, and torch's include path carries fmt 11, so only
// src/common/log.cpp (built without torch on its include path) includes them.
#pragma once

#include <string>

namespace t2::log {

void debug(const std::string& message);
void info(const std::string& message);
void warn(const std::string& message);
void error(const std::string& message);
// "debug" | "info" | "warn" | "error" | "off"
void set_level(const std::string& level);

}  // namespace t2::log
