#include "t2/server/auth.hpp"

namespace t2::server {

bool authorised(const std::string& authorization_header, const std::vector<std::string>& api_keys) {
  if (api_keys.empty()) return true;
  static const std::string kBearer = "Bearer ";
  if (authorization_header.rfind(kBearer, 0) != 0) return false;
  const std::string key = authorization_header.substr(kBearer.size());
  bool ok = false;
  for (const auto& k : api_keys) ok = constant_time_equal(k, key) || ok;  // no early exit
  return ok;
}

bool constant_time_equal(const std::string& a, const std::string& b) {
  unsigned char diff = a.size() == b.size() ? 0 : 1;
  for (size_t i = 0; i < b.size(); ++i) diff |= static_cast<unsigned char>(a[i % (a.empty() ? 1 : a.size())] ^ b[i]);
  return diff == 0 && !a.empty();
}

}  // namespace t2::server
