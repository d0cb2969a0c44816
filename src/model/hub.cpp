#include "t2/model/hub.hpp"

#include <httplib.h>
#include <openssl/evp.h>

#include <cstdlib>
#include <fstream>
#include <memory>
#include <regex>

#include <nlohmann/json.hpp>

#include "t2/common/errors.hpp"
#include "t2/common/progress.hpp"

namespace t2::model {
namespace {

// What t2 reads from a model repo; everything else (pytorch .bin, ONNX, ...) stays remote.
bool wanted(const std::string& file) {
  static const std::regex kWanted(
      R"((config|generation_config|tokenizer_config|special_tokens_map)\.json|tokenizer\.model|.*\.safetensors|model\.safetensors\.index\.json)");
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
  uint64_t size = 0;
  std::string sha256;  // LFS files
  std::string blob_id;  // git blob sha1 of the others
};

httplib::Headers auth_headers(const HubOptions& o) {
  httplib::Headers h = {{"User-Agent", "t2"}};
  if (!o.token.empty()) h.emplace("Authorization", "Bearer " + o.token);
  return h;
}

std::unique_ptr<httplib::Client> client_for(const std::string& endpoint) {
  auto client = std::make_unique<httplib::Client>(endpoint);
  client->set_follow_location(true);
  client->set_connection_timeout(30, 0);
  client->set_read_timeout(120, 0);
  return client;
}

std::string describe(const httplib::Result& r) {
  return r ? "HTTP " + std::to_string(r->status) : "connection failed (" + httplib::to_string(r.error()) + ")";
}

// Appends the rest of `f` to `partial` (HTTP Range from `have`).
void download(httplib::Client& client, const HubOptions& o, const std::string& repo_id, const std::string& commit,
              const RemoteFile& f, const std::filesystem::path& partial, uint64_t have,
              const std::function<void(const std::string&, uint64_t, uint64_t)>& progress) {
  httplib::Headers headers = auth_headers(o);
  if (have > 0) headers.emplace("Range", "bytes=" + std::to_string(have) + "-");
  std::ofstream out(partial, std::ios::binary | std::ios::app);
  uint64_t done = have;
  const std::string path = "/" + repo_id + "/resolve/" + commit + "/" + f.name;
  const auto r = client.Get(
      path.c_str(), headers,
      [&](const httplib::Response& response) {
        if (have > 0 && response.status == 200) {  // the server ignored Range: the whole file again
          out.close();
          out.open(partial, std::ios::binary | std::ios::trunc);
          done = 0;
        }
        return response.status == 200 || response.status == 206;
      },
      [&](const char* data, size_t n) {
        out.write(data, static_cast<std::streamsize>(n));
        done += n;
        if (progress) progress(f.name, done, f.size);
        return static_cast<bool>(out);
      });
  out.close();
  if (!r || (r->status != 200 && r->status != 206)) {
    throw LoadError(o.endpoint + path + ": " + describe(r) + " (rerun to resume)");
  }
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
  auto client = client_for(o.endpoint);
  const std::string api = "/api/models/" + repo_id + "/revision/" + o.revision + "?blobs=true";
  const auto info = client->Get(api.c_str(), auth_headers(o));
  if (!info || info->status != 200) {
    throw LoadError(o.endpoint + api + ": " + describe(info) +
                    (info && info->status == 401 ? " (set HF_TOKEN for gated or private models)" : ""));
  }
  nlohmann::json meta;
  try {
    meta = nlohmann::json::parse(info->body);
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
    f.size = s.value("size", uint64_t{0});
    f.blob_id = s.value("blobId", "");
    if (s.contains("lfs") && s["lfs"].is_object()) {
      f.sha256 = s["lfs"].value("sha256", "");
      f.size = s["lfs"].value("size", f.size);
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
    if (f.size > 0 && have > f.size) {  // not a prefix of this file: start over
      std::filesystem::remove(partial);
      have = 0;
    }
    if (f.size == 0 || have < f.size) download(*client, o, repo_id, commit, f, partial, have, progress);
    if (f.size > 0 && std::filesystem::file_size(partial) != f.size) {
      throw LoadError(f.name + ": got " + std::to_string(std::filesystem::file_size(partial)) + " bytes, expected " +
                      std::to_string(f.size) + " (rerun to resume)");
    }
    const bool lfs = !f.sha256.empty();
    const std::string expected = lfs ? f.sha256 : f.blob_id;
    if (!expected.empty() && file_digest(partial, !lfs) != expected) {
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

std::filesystem::path resolve_model(const std::string& model) {
  if (std::filesystem::exists(model) || !is_hub_repo_id(model)) return model;
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
