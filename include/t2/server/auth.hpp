// API key authentication: which requests may use the API when `t2 serve` is
// given keys. Keys are compared in constant time so response timing reveals
// nothing about how much of a guessed key was right.
#pragma once

#include <string>
#include <vector>

namespace t2::server {

// True when no keys are configured, or `authorization_header` is "Bearer <one of api_keys>".
bool authorised(const std::string& authorization_header, const std::vector<std::string>& api_keys);

// Constant-time string comparison, for API keys; an empty key never matches.
bool constant_time_equal(const std::string& a, const std::string& b);

}  // namespace t2::server
