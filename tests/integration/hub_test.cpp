// `t2 pull` against a local HTTP server on 127.0.0.1 that serves the shared
// stories260K folder in the Hugging Face Hub's URL layout.
#include <httplib.h>
#include <openssl/evp.h>

#include <atomic>
#include <fstream>
#include <sstream>
#include <thread>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "support.hpp"
#include "t2/common/errors.hpp"
#include "t2/model/hub.hpp"

namespace {

std::string read_file(const std::filesystem::path& p) {
  std::ifstream in(p, std::ios::binary);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

std::string digest_hex(const std::string& data, const EVP_MD* md) {
  unsigned char digest[EVP_MAX_MD_SIZE];
  unsigned int n = 0;
  EVP_Digest(data.data(), data.size(), digest, &n, md, nullptr);
  std::string out;
  char buf[3];
  for (unsigned int i = 0; i < n; ++i) {
    std::snprintf(buf, sizeof buf, "%02x", digest[i]);
    out += buf;
  }
  return out;
}

// A Hub look-alike: /api/models/{repo}/revision/{rev} and /{repo}/resolve/{rev}/{file}.
class FakeHub {
 public:
  explicit FakeHub(std::filesystem::path folder) : folder_(std::move(folder)) {
    server_.Get(R"(/api/models/([^/]+/[^/]+)/revision/([^/]+))", [this](const httplib::Request& req, httplib::Response& res) {
      last_auth = req.get_header_value("Authorization");
      nlohmann::json siblings = nlohmann::json::array();
      for (const auto& entry : std::filesystem::directory_iterator(folder_)) {
        const std::string name = entry.path().filename().string();
        const std::string data = read_file(entry.path());
        // As the Hub: git's blob id for every file, sha256 for LFS ones.
        const std::string blob = "blob " + std::to_string(data.size()) + std::string(1, '\0') + data;
        nlohmann::json s = {{"rfilename", name}, {"size", data.size() - (name == "config.json" ? understate_config.load() : 0)},
                            {"blobId", digest_hex(blob, EVP_sha1())}};
        if (omit_size && name == "config.json") s.erase("size");
        if (name.size() > 12 && name.substr(name.size() - 12) == ".safetensors") {
          s["lfs"] = {{"sha256", corrupt_sha ? std::string(64, '0') : digest_hex(data, EVP_sha256())}, {"size", data.size()}};
        }
        siblings.push_back(s);
      }
      siblings.push_back({{"rfilename", "pytorch_model.bin"}, {"size", 10}});  // not something t2 reads
      res.set_content(nlohmann::json{{"sha", "0123abcd"}, {"siblings", siblings}}.dump(), "application/json");
    });
    server_.Get(R"(/([^/]+/[^/]+)/resolve/([^/]+)/([^/]+))", [this](const httplib::Request& req, httplib::Response& res) {
      ++downloads;
      if (req.has_header("Range")) ++ranged;
      resolve_auth = req.get_header_value("Authorization");
      if (!redirect_to.empty()) {
        res.set_redirect(redirect_to + req.path);  // as the Hub sends LFS files to its CDN
        return;
      }
      const auto file = folder_ / req.matches[3].str();
      if (!std::filesystem::exists(file)) {
        res.status = 404;
        return;
      }
      res.set_content(read_file(file), "application/octet-stream");  // httplib answers Range requests itself
    });
    port = server_.bind_to_any_port("127.0.0.1");
    thread_ = std::thread([this] { server_.listen_after_bind(); });
  }
  ~FakeHub() {
    server_.stop();
    thread_.join();
  }
  std::string endpoint() const { return "http://127.0.0.1:" + std::to_string(port); }

  int port = 0;
  std::atomic<int> downloads{0};
  std::atomic<int> ranged{0};
  std::atomic<bool> corrupt_sha{false};
  std::atomic<bool> omit_size{false};
  std::atomic<size_t> understate_config{0};
  std::string redirect_to;  // another origin that serves the files
  std::string last_auth;
  std::string resolve_auth;

 private:
  std::filesystem::path folder_;
  httplib::Server server_;
  std::thread thread_;
};

}  // namespace

TEST(HubPull, DownloadsVerifiesResumesAndReuses) {
  const auto model = t2::testing::stories_dir();
  T2_REQUIRE_PATH(model);
  FakeHub hub(model);
  t2::model::HubOptions options;
  options.endpoint = hub.endpoint();
  options.token = "hf_secret";
  options.cache_dir = t2::testing::fresh_dir("hub");

  const auto snapshot = t2::model::pull("karpathy/stories260K", options);
  EXPECT_EQ(snapshot, options.cache_dir / "models--karpathy--stories260K" / "snapshots" / "0123abcd");
  EXPECT_EQ(hub.last_auth, "Bearer hf_secret");
  for (const char* file : {"config.json", "model.safetensors", "tokenizer.model", "generation_config.json"}) {
    EXPECT_EQ(read_file(snapshot / file), read_file(model / file)) << file;
  }
  EXPECT_FALSE(std::filesystem::exists(snapshot / "pytorch_model.bin"));
  EXPECT_EQ(read_file(options.cache_dir / "models--karpathy--stories260K" / "refs" / "main"), "0123abcd");

  // A second pull downloads nothing.
  const int before = hub.downloads;
  t2::model::pull("karpathy/stories260K", options);
  EXPECT_EQ(hub.downloads, before);

  // An interrupted download resumes from where it stopped.
  const auto weights = snapshot / "model.safetensors";
  const std::string full = read_file(weights);
  std::filesystem::remove(weights);
  std::ofstream(weights.string() + ".incomplete", std::ios::binary) << full.substr(0, full.size() / 3);
  t2::model::pull("karpathy/stories260K", options);
  EXPECT_EQ(hub.ranged, 1);
  EXPECT_EQ(read_file(weights), full);

  // Killed after the last byte but before the rename: verified, not downloaded again.
  std::filesystem::rename(weights, weights.string() + ".incomplete");
  const int downloads = hub.downloads;
  t2::model::pull("karpathy/stories260K", options);
  EXPECT_EQ(hub.downloads, downloads);
  EXPECT_EQ(read_file(weights), full);
}

TEST(HubPull, ChecksumMismatchIsAnErrorAndKeepsNothing) {
  const auto model = t2::testing::stories_dir();
  T2_REQUIRE_PATH(model);
  FakeHub hub(model);
  hub.corrupt_sha = true;
  t2::model::HubOptions options;
  options.endpoint = hub.endpoint();
  options.cache_dir = t2::testing::fresh_dir("hub");
  try {
    t2::model::pull("karpathy/stories260K", options);
    ADD_FAILURE() << "a corrupt download was accepted";
  } catch (const t2::LoadError& e) {
    EXPECT_NE(std::string(e.what()).find("model.safetensors: checksum mismatch"), std::string::npos) << e.what();
  }
  const auto snapshot = options.cache_dir / "models--karpathy--stories260K" / "snapshots" / "0123abcd";
  EXPECT_FALSE(std::filesystem::exists(snapshot / "model.safetensors"));
  EXPECT_FALSE(std::filesystem::exists(snapshot / "model.safetensors.incomplete"));
}

TEST(HubPull, ErrorsNameTheProblem) {
  t2::model::HubOptions options;
  options.endpoint = "http://127.0.0.1:1";  // nothing listens there
  options.cache_dir = t2::testing::fresh_dir("hub");
  EXPECT_THROW(t2::model::pull("org/name", options), t2::LoadError);
  EXPECT_THROW(t2::model::pull("../../etc", options), t2::InvalidArgument);
  EXPECT_TRUE(t2::model::is_hub_repo_id("meta-llama/Llama-3.1-8B"));
  EXPECT_FALSE(t2::model::is_hub_repo_id("/abs/path"));
  EXPECT_FALSE(t2::model::is_hub_repo_id("a/b/c"));
}

TEST(HubPull, ServeAndGenerateAcceptARepoId) {
  const auto model = t2::testing::stories_dir();
  T2_REQUIRE_PATH(model);
  FakeHub hub(model);
  const auto home = t2::testing::fresh_dir("hf-home");
  const std::string command = "HF_ENDPOINT=" + hub.endpoint() + " HF_HOME=" + home.string() + " " +
                              t2::testing::t2_binary().string() +
                              " generate --model karpathy/stories260K --prompt 'Once upon a time' --max-tokens 8 2>/dev/null";
  FILE* pipe = popen(command.c_str(), "r");
  ASSERT_NE(pipe, nullptr);
  std::string out;
  char buffer[256];
  while (fgets(buffer, sizeof buffer, pipe)) out += buffer;
  EXPECT_EQ(pclose(pipe), 0);
  EXPECT_EQ(out.rfind(", there was a little girl", 0), 0u) << out;
  EXPECT_TRUE(std::filesystem::exists(home / "hub" / "models--karpathy--stories260K" / "snapshots" / "0123abcd" / "config.json"));
}

TEST(HubPull, TheTokenGoesOnlyToTheEndpointOverHttpsOrLoopback) {
  using t2::model::token_allowed;
  EXPECT_TRUE(token_allowed("https://huggingface.co/api/models/a/b", "https://huggingface.co"));
  EXPECT_FALSE(token_allowed("https://cdn-lfs.huggingface.co/x", "https://huggingface.co"));
  EXPECT_FALSE(token_allowed("http://huggingface.co/x", "https://huggingface.co"));
  EXPECT_FALSE(token_allowed("http://mirror.example.com/x", "http://mirror.example.com"));  // plain http on a network
  EXPECT_TRUE(token_allowed("http://127.0.0.1:8000/x", "http://127.0.0.1:8000"));
  EXPECT_FALSE(token_allowed("http://127.0.0.1:8001/x", "http://127.0.0.1:8000"));

  // A redirect to another origin (here "localhost" for "127.0.0.1") is followed without the token.
  const auto model = t2::testing::stories_dir();
  T2_REQUIRE_PATH(model);
  FakeHub cdn(model);
  FakeHub hub(model);
  hub.redirect_to = "http://localhost:" + std::to_string(cdn.port);
  t2::model::HubOptions options;
  options.endpoint = hub.endpoint();
  options.token = "hf_secret";
  options.cache_dir = t2::testing::fresh_dir("hub");
  const auto snapshot = t2::model::pull("karpathy/stories260K", options);
  EXPECT_EQ(read_file(snapshot / "model.safetensors"), read_file(model / "model.safetensors"));
  EXPECT_EQ(hub.resolve_auth, "Bearer hf_secret");
  EXPECT_GT(cdn.downloads, 0);
  EXPECT_EQ(cdn.resolve_auth, "");
}

TEST(HubPull, DownloadsStopAtTheListedSizeAndNeedOne) {
  const auto model = t2::testing::stories_dir();
  T2_REQUIRE_PATH(model);
  FakeHub hub(model);
  hub.understate_config = 10;
  t2::model::HubOptions options;
  options.endpoint = hub.endpoint();
  options.cache_dir = t2::testing::fresh_dir("hub");
  try {
    t2::model::pull("karpathy/stories260K", options);
    ADD_FAILURE() << "a file larger than listed was kept";
  } catch (const t2::LoadError& e) {
    EXPECT_NE(std::string(e.what()).find("config.json: the server sent more than the"), std::string::npos) << e.what();
  }
  hub.understate_config = 0;
  hub.omit_size = true;
  try {
    t2::model::pull("karpathy/stories260K", options);
    ADD_FAILURE() << "a file with no listed size was downloaded";
  } catch (const t2::LoadError& e) {
    EXPECT_NE(std::string(e.what()).find("lists no size for 'config.json'"), std::string::npos) << e.what();
  }
}

TEST(HubPull, AMissingLocalLookingPathIsNotTakenForARepoId) {
  const auto dir = t2::testing::fresh_dir("local-paths");
  std::filesystem::create_directories(dir / "models");
  std::filesystem::current_path(dir);
  for (const std::string& path : std::vector<std::string>{"models/stories260k", "./stories260k", (dir / "nope").string()}) {
    try {
      t2::model::resolve_model(path);
      ADD_FAILURE() << path << " was not reported";
    } catch (const t2::NotFound& e) {
      EXPECT_NE(std::string(e.what()).find("model folder '" + path + "' does not exist"), std::string::npos) << e.what();
    }
  }
}
