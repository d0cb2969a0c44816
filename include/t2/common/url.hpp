// http(s) URLs split the way an HTTP client needs them: the origin it connects
// to and the path (with the query) it asks for. Shared by the Hub client and
// the image fetcher.
#pragma once

#include <optional>
#include <string>

namespace t2 {

struct Url {
  std::string origin;  // scheme://host[:port], scheme and host lower-cased
  std::string scheme;  // "http" | "https"
  std::string host;    // a name, an IPv4 address or a bracketed IPv6 address
  std::string path;    // with the query; "/" when the URL has none
};

// nullopt for anything but an absolute http(s) URL.
std::optional<Url> parse_url(const std::string& text);

}  // namespace t2
