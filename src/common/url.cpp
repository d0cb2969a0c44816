#include "t2/common/url.hpp"

#include <cctype>
#include <regex>

namespace t2 {

std::optional<Url> parse_url(const std::string& text) {
  static const std::regex kUrl(R"(^(https?)://(\[[^\]]+\]|[^/:?#@]+)(:[0-9]+)?([/?].*)?$)", std::regex::icase);
  std::smatch m;
  if (!std::regex_match(text, m, kUrl)) return std::nullopt;
  const auto lower = [](std::string s) {
    for (auto& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    return s;
  };
  Url u;
  u.scheme = lower(m[1].str());
  u.host = lower(m[2].str());
  u.origin = u.scheme + "://" + u.host + m[3].str();
  u.path = m[4].matched ? m[4].str() : "/";
  if (u.path[0] == '?') u.path = "/" + u.path;
  return u;
}

}  // namespace t2
