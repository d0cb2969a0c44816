#include "t2/model/hub.hpp"

#include <httplib.h>
#include <openssl/evp.h>

#include <cstdlib>
#include <fstream>
#include <memory>
#include <optional>
#include <regex>

#include <nlohmann/json.hpp>

#include "t2/common/errors.hpp"
#include "t2/common/progress.hpp"
#include "t2/common/url.hpp"

namespace t2::model {
namespace {

// What t2 reads from a model repo; everything else (pytorch .bin, ONNX, ...) stays remote.
bool wanted(const std::string& file) {
  static const std::regex kWanted(
      R"((config|generation_config|tokenizer_config|special_tokens_map|tokenizer|preprocessor_config|processor_config)\.json|chat_template\.(json|jinja)|tokenizer\.model|.*\.safetensors|model\.safetensors\.index\.json)");
  return file.find('/') == std::string::npos && std::regex_match(file, kWanted);
}

std::string hex(const unsigned char* digest, unsigned int n) {
  static const char* kDigits = "0123456789abcdef";
  std::string out;
  for (unsigned int i = 0; i < n; ++i) {
    out += kDigits[digest[i] >> 4];
    out += kDigits[digest[i] & 15];
  }
  return out;
}

// sha256 of the file, or git's blob sha1 ("blob <size>\0" + content).
std::string file_digest(const std::filesystem::path& path, bool git_blob) {
  std::unique_ptr<EVP_MD_CTX, decltype(&EVP_MD_CTX_free)> ctx(EVP_MD_CTX_new(), EVP_MD_CTX_free);
  EVP_DigestInit_ex(ctx.get(), git_blob ? EVP_sha1() : EVP_sha256(), nullptr);
  if (git_blob) {
    const std::string header = "blob " + std::to_string(std::filesystem::file_size(path)) + std::string(1, '\0');
    EVP_DigestUpdate(ctx.get(), header.data(), header.size());
  }
  std::ifstream in(path, std::ios::binary);
  std::vector<char> buffer(1 << 20);
  while (in) {
    in.read(buffer.data(), static_cast<std::streamsize>(buffer.size()));
    EVP_DigestUpdate(ctx.get(), buffer.data(), static_cast<size_t>(in.gcount()));
  }
  unsigned char digest[EVP_MAX_MD_SIZE];
  unsigned int n = 0;
  EVP_DigestFinal_ex(ctx.get(), digest, &n);
  return hex(digest, n);
}

struct RemoteFile {
  std::string name;
  std::optional<uint64_t> size;  // what the Hub lists; none: the file is not downloaded
  std::string sha256;  // LFS files
  std::string blob_id;  // git blob sha1 of the others
};

bool is_loopback(const std::string& host) {
  return host == "localhost" || host == "[::1]" || host.rfind("127.", 0) == 0;
}

std::string describe(const httplib::Result& r) {
  return r ? "HTTP " + std::to_string(r->status) : "connection failed (" + httplib::to_string(r.error()) + ")";
}

using ResponseCheck = std::function<bool(const httplib::Response&)>;
using Receiver = std::function<bool(const char*, size_t)>;

// GET `url`, following redirects by hand so that the token goes only where token_allowed() says.
// Returns the final status (0 when the connection failed), with `failure` describing it.
int get(const HubOptions& o, std::string url, const httplib::Headers& extra, const ResponseCheck& check,
        const Receiver& receive, std::string& failure) {
  constexpr int kMaxRedirects = 10;
  for (int hop = 0; hop <= kMaxRedirects; ++hop) {
    const auto u = parse_url(url);
    if (!u) throw LoadError(url + ": not an http(s) URL");
    httplib::Client client(u->origin);
    client.set_follow_location(false);
    client.set_connection_timeout(30, 0);
    client.set_read_timeout(120, 0);
    httplib::Headers headers = extra;
    headers.emplace("User-Agent", "t2");
    if (!o.token.empty() && token_allowed(url, o.endpoint)) headers.emplace("Authorization", "Bearer " + o.token);
    std::string location;
    int status = 0;
    const auto r = client.Get(
        u->path.c_str(), headers,
        [&](const httplib::Response& response) {
          status = response.status;
          if (status >= 300 && status < 400 && response.has_header("Location")) {
            location = response.get_header_value("Location");
            return false;  // not this body: the next hop's
          }
          return check(response);
        },
        [&](const char* data, size_t n) { return receive(data, n); });
    if (!location.empty()) {
      url = location[0] == '/' ? u->origin + location : location;
      continue;
    }
    failure = url + ": " + (status > 0 ? "HTTP " + std::to_string(status) : describe(r));
    return r ? r->status : status;
  }
  failure = url + ": more than " + std::to_string(kMaxRedirects) + " redirects";
  return 0;
}

// Appends the rest of `f` to `partial` (HTTP Range from `have`), never past its listed size.
void download(const HubOptions& o, const std::string& repo_id, const std::string& commit, const RemoteFile& f,
              const std::filesystem::path& partial, uint64_t have,
              const std::function<void(const std::string&, uint64_t, uint64_t)>& progress) {
  httplib::Headers headers;
  if (have > 0) headers.emplace("Range", "bytes=" + std::to_string(have) + "-");
  std::ofstream out(partial, std::ios::binary | std::ios::app);
  uint64_t done = have;
  bool oversized = false;
  const uint64_t cap = *f.size;
  std::string failure;
  const int status = get(
      o, o.endpoint + "/" + repo_id + "/resolve/" + commit + "/" + f.name, headers,
      [&](const httplib::Response& response) {
        if (have > 0 && response.status == 200) {  // the server ignored Range: the whole file again
          out.close();
          out.open(partial, std::ios::binary | std::ios::trunc);
          done = 0;
        }
        return response.status == 200 || response.status == 206;
      },
      [&](const char* data, size_t n) {
        if (n > cap - done) {
          oversized = true;
          return false;
        }
        out.write(data, static_cast<std::streamsize>(n));
        done += n;
        if (progress) progress(f.name, done, cap);
        return static_cast<bool>(out);
      },
      failure);
  out.close();
  if (oversized) {
    std::filesystem::remove(partial);
    throw LoadError(f.name + ": the server sent more than the " + std::to_string(cap) + " bytes the Hub lists; the partial file was removed");
  }
  if (status != 200 && status != 206) throw LoadError(failure + " (rerun to resume)");
}

}  // namespace

HubOptions HubOptions::from_environment() {
  HubOptions o;
  if (const char* e = std::getenv("HF_ENDPOINT"); e && *e) o.endpoint = e;
  while (!o.endpoint.empty() && o.endpoint.back() == '/') o.endpoint.pop_back();
  if (const char* t = std::getenv("HF_TOKEN"); t && *t) o.token = t;
  if (const char* h = std::getenv("HF_HOME"); h && *h) {
    o.cache_dir = std::filesystem::path(h) / "hub";
  } else if (const char* home = std::getenv("HOME"); home && *home) {
    o.cache_dir = std::filesystem::path(home) / ".cache" / "huggingface" / "hub";
  } else {
    o.cache_dir = std::filesystem::temp_directory_path() / "huggingface" / "hub";
  }
  return o;
}

bool is_hub_repo_id(const std::string& text) {
  static const std::regex kRepo(R"([A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*)");
  return std::regex_match(text, kRepo) && text.find("..") == std::string::npos;
}

std::filesystem::path pull(const std::string& repo_id, const HubOptions& o,
                           const std::function<void(const std::string&, uint64_t, uint64_t)>& progress) {
  if (!is_hub_repo_id(repo_id)) throw InvalidArgument("model", "'" + repo_id + "' is not a Hub repo id (ORG/NAME)");
  const std::string api = "/api/models/" + repo_id + "/revision/" + o.revision + "?blobs=true";
  constexpr size_t kMaxListing = 64 << 20;
  std::string listing, failure;
  const int status = get(
      o, o.endpoint + api, {}, [](const httplib::Response& r) { return r.status == 200; },
      [&](const char* data, size_t n) {
        listing.append(data, n);
        return listing.size() <= kMaxListing;
      },
      failure);
  if (status != 200) throw LoadError(failure + (status == 401 ? " (set HF_TOKEN for gated or private models)" : ""));
  nlohmann::json meta;
  try {
    meta = nlohmann::json::parse(listing);
  } catch (const nlohmann::json::exception& e) {
    throw LoadError(o.endpoint + api + ": not JSON: " + e.what());
  }
  const std::string commit = meta.value("sha", o.revision);
  if (!std::regex_match(commit, std::regex("[A-Za-z0-9._-]+"))) throw LoadError(o.endpoint + api + ": bad commit id");
  std::vector<RemoteFile> files;
  for (const auto& s : meta.value("siblings", nlohmann::json::array())) {
    RemoteFile f;
    f.name = s.value("rfilename", "");
    if (!wanted(f.name)) continue;
    if (s.contains("size") && s["size"].is_number_unsigned()) f.size = s["size"].get<uint64_t>();
    f.blob_id = s.value("blobId", "");
    if (s.contains("lfs") && s["lfs"].is_object()) {
      f.sha256 = s["lfs"].value("sha256", "");
      if (s["lfs"].contains("size") && s["lfs"]["size"].is_number_unsigned()) f.size = s["lfs"]["size"].get<uint64_t>();
    }
    // Without a listed size a download has no bound, without a hash no check: neither is fetched.
    if (!f.size) throw LoadError(repo_id + ": the Hub lists no size for '" + f.name + "'; refusing an unbounded download");
    if (f.sha256.empty() && f.blob_id.empty()) {
      throw LoadError(repo_id + ": the Hub lists no hash for '" + f.name + "'; refusing a download that cannot be verified");
    }
    files.push_back(f);
  }
  if (files.empty()) throw LoadError(repo_id + ": the repo has no config.json / safetensors files t2 can use");

  std::string folder = "models--" + repo_id;
  folder.replace(folder.find('/'), 1, "--");
  const auto repo_dir = o.cache_dir / folder;
  const auto snapshot = repo_dir / "snapshots" / commit;
  std::filesystem::create_directories(snapshot);
  for (const RemoteFile& f : files) {
    const auto target = snapshot / f.name;
    if (std::filesystem::exists(target)) continue;  // verified when it was kept
    auto partial = target;
    partial += ".incomplete";
    uint64_t have = std::filesystem::exists(partial) ? std::filesystem::file_size(partial) : 0;
    if (have > *f.size) {  // not a prefix of this file: start over
      std::filesystem::remove(partial);
      have = 0;
    }
    if (have < *f.size || !std::filesystem::exists(partial)) download(o, repo_id, commit, f, partial, have, progress);
    if (std::filesystem::file_size(partial) != *f.size) {
      throw LoadError(f.name + ": got " + std::to_string(std::filesystem::file_size(partial)) + " bytes, expected " +
                      std::to_string(*f.size) + " (rerun to resume)");
    }
    const bool lfs = !f.sha256.empty();
    const std::string expected = lfs ? f.sha256 : f.blob_id;
    if (file_digest(partial, !lfs) != expected) {
      std::filesystem::remove(partial);
      throw LoadError(f.name + ": checksum mismatch (expected " + (lfs ? "sha256 " : "git blob ") + expected +
                      "); the partial file was removed");
    }
    std::filesystem::rename(partial, target);
  }
  std::filesystem::create_directories(repo_dir / "refs");
  std::ofstream(repo_dir / "refs" / o.revision) << commit;
  return snapshot;
}

bool token_allowed(const std::string& url, const std::string& endpoint) {
  const auto u = parse_url(url);
  const auto e = parse_url(endpoint);
  return u && e && u->origin == e->origin && (u->scheme == "https" || is_loopback(u->host));
}

std::filesystem::path resolve_model(const std::string& model) {
  if (std::filesystem::exists(model)) return model;
  const std::filesystem::path path(model);
  const bool looks_local = model.rfind("./", 0) == 0 || model.rfind("../", 0) == 0 || model.rfind("~", 0) == 0 ||
                           path.is_absolute() || (path.has_parent_path() && std::filesystem::is_directory(path.parent_path()));
  if (looks_local || !is_hub_repo_id(model)) {
    throw NotFound("model folder '" + model + "' does not exist" +
                   (is_hub_repo_id(model) ? " (it names a local folder, '" + path.parent_path().string() +
                                                "/', so it is not taken for a Hub repo id)"
                                          : ""));
  }
  std::unique_ptr<ProgressBar> bar;
  std::string current;
  return pull(model, HubOptions::from_environment(), [&](const std::string& file, uint64_t done, uint64_t total) {
    if (file != current) {
      if (bar) bar->finish();
      bar = std::make_unique<ProgressBar>("pull " + file, static_cast<int64_t>(total));
      current = file;
    }
    bar->update(static_cast<int64_t>(done));
  });
}

}  // namespace t2::model
