#include "t2/server/images.hpp"

#include <httplib.h>

#include <algorithm>
#include <array>

#include "t2/common/url.hpp"

namespace t2::server {
namespace {

ApiError part_error(const ImagePart& part, const std::string& message) {
  return ApiError::bad_request(part.param, part.param + ": " + message);
}

bool host_allowed(const std::string& host, const std::vector<std::string>& hosts) {
  return std::any_of(hosts.begin(), hosts.end(), [&](const std::string& allowed) {
    if (allowed == "*") return true;
    std::string lower = allowed;
    for (auto& c : lower) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    return lower == host;
  });
}

std::string fetch(const ImagePart& part, const ImagePolicy& policy) {
  if (policy.url_hosts.empty()) {
    throw part_error(part, "image URLs are not fetched by this server; send the image inline as a data: URL "
                           "(data:image/png;base64,...)");
  }
  const auto url = parse_url(part.url);
  if (!url) throw part_error(part, "the image URL must be a data: URL or an http(s) URL");
  if (!host_allowed(url->host, policy.url_hosts)) {
    throw part_error(part, "images are not fetched from '" + url->host + "' (not in image_url_hosts)");
  }
  httplib::Client client(url->origin);
  client.set_follow_location(false);  // a redirect could lead anywhere the allow-list does not
  const auto seconds = static_cast<time_t>(policy.fetch_timeout_s);
  const auto micros = static_cast<time_t>((policy.fetch_timeout_s - static_cast<double>(seconds)) * 1e6);
  client.set_connection_timeout(seconds, micros);
  client.set_read_timeout(seconds, micros);
  std::string body;
  bool too_large = false;
  int status = 0;
  const auto result = client.Get(
      url->path.c_str(), httplib::Headers{{"User-Agent", "t2"}},
      [&](const httplib::Response& response) {
        status = response.status;
        return status == 200;
      },
      [&](const char* data, size_t n) {
        if (static_cast<int64_t>(body.size() + n) > policy.max_fetch_bytes) {
          too_large = true;
          return false;
        }
        body.append(data, n);
        return true;
      });
  if (too_large) throw part_error(part, "the image at the URL is larger than " + std::to_string(policy.max_fetch_bytes) + " bytes");
  if (status != 0 && status != 200) throw part_error(part, "fetching the image URL gave HTTP " + std::to_string(status));
  if (!result) throw part_error(part, "fetching the image URL failed: " + httplib::to_string(result.error()));
  return body;
}

}  // namespace

std::optional<std::string> decode_base64(std::string_view text) {
  static const std::array<int8_t, 256> kValue = [] {
    std::array<int8_t, 256> v{};
    v.fill(-1);
    const char* alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    for (int i = 0; i < 64; ++i) v[static_cast<unsigned char>(alphabet[i])] = static_cast<int8_t>(i);
    return v;
  }();
  while (!text.empty() && text.back() == '=') text.remove_suffix(1);
  if (text.size() % 4 == 1) return std::nullopt;
  std::string out;
  out.reserve(text.size() / 4 * 3 + 2);
  uint32_t bits = 0;
  int count = 0;
  for (const char c : text) {
    const int8_t v = kValue[static_cast<unsigned char>(c)];
    if (v < 0) return std::nullopt;
    bits = (bits << 6) | static_cast<uint32_t>(v);
    count += 6;
    if (count >= 8) {
      count -= 8;
      out.push_back(static_cast<char>((bits >> count) & 0xFF));
    }
  }
  return out;
}

std::string image_bytes(const ImagePart& part, const ImagePolicy& policy) {
  const std::string& url = part.url;
  if (url.rfind("data:", 0) != 0) return fetch(part, policy);
  const size_t comma = url.find(',');
  if (comma == std::string::npos) throw part_error(part, "the data: URL has no ',' before its data");
  const std::string header = url.substr(5, comma - 5);  // e.g. "image/png;base64"
  if (header.size() < 7 || header.compare(header.size() - 7, 7, ";base64") != 0) {
    throw part_error(part, "data: URLs must be base64 (data:image/png;base64,...)");
  }
  auto bytes = decode_base64(std::string_view(url).substr(comma + 1));
  if (!bytes) throw part_error(part, "the data: URL's base64 is malformed");
  return std::move(*bytes);
}

vision::Image load_image(const ImagePart& part, const ImagePolicy& policy) {
  const std::string bytes = image_bytes(part, policy);
  try {
    return vision::decode_image(bytes, vision::DecodeLimits{policy.max_pixels});
  } catch (const InvalidArgument& e) {
    throw part_error(part, e.what());
  }
}

vision::PromptImage prepare_image(const ImagePart& part, const ImagePolicy& policy, const vision::ImageProcessor& processor) {
  const vision::Image image = load_image(part, policy);
  try {
    return vision::prepare_image(image, processor);
  } catch (const InvalidArgument& e) {
    throw part_error(part, e.what());
  }
}

}  // namespace t2::server
