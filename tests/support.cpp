#include "support.hpp"

#include <sys/wait.h>
#include <unistd.h>

#include <array>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <sstream>

#include <ATen/ATen.h>

#include "t2/model/config.hpp"
#include "t2/model/safetensors.hpp"
#include "t2/model/weights.hpp"
#include "t2/svf/targets.hpp"

namespace t2::testing {

std::filesystem::path models_dir() {
  const char* env = std::getenv("T2_MODELS_DIR");
  return env != nullptr && *env != '\0' ? std::filesystem::path(env) : std::filesystem::path(T2_DEFAULT_MODELS_DIR);
}

std::filesystem::path stories_dir() { return std::filesystem::path(T2_SOURCE_DIR) / "models" / "stories260K"; }

std::filesystem::path reference_dir() { return T2_REFERENCE_DIR; }
std::filesystem::path t2_binary() { return T2_BINARY; }

CommandResult run_t2(const std::string& args) {
  // A file of its own per run (mkstemp), so runs within one test never share one.
  std::string err_file = (std::filesystem::temp_directory_path() / "t2_stderr_XXXXXX").string();
  const int fd = mkstemp(err_file.data());
  if (fd < 0) return {-1, "", ""};
  close(fd);
  const std::string command = t2_binary().string() + " " + args + " 2>" + err_file;
  FILE* pipe = popen(command.c_str(), "r");
  if (pipe == nullptr) return {-1, "", ""};
  std::string out;
  std::array<char, 4096> buffer{};
  size_t n = 0;
  while ((n = fread(buffer.data(), 1, buffer.size(), pipe)) > 0) out.append(buffer.data(), n);
  const int status = pclose(pipe);
  std::ifstream in(err_file);
  std::stringstream err;
  err << in.rdbuf();
  std::filesystem::remove(err_file);
  return {WIFEXITED(status) ? WEXITSTATUS(status) : -1, out, err.str()};
}

bool in_ci() {
  const char* ci = std::getenv("CI");
  return ci != nullptr && std::string(ci) == "true";
}

std::filesystem::path fresh_dir(const std::string& name) {
  const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
  std::string test = info != nullptr ? std::string(info->test_suite_name()) + "." + info->name() : "global";
  const auto base = std::filesystem::temp_directory_path() / ("t2_test_" + std::to_string(::getpid())) / test / name;
  // A new folder on every call, never a removed one: libtorch.so exports a
  // std::filesystem::remove_all that crashes on non-empty folders.
  auto dir = base;
  for (int i = 2; std::filesystem::exists(dir); ++i) dir = base.string() + "-" + std::to_string(i);
  std::filesystem::create_directories(dir);
  return dir;
}

nlohmann::json tiny_config() {
  return {
      {"architectures", {"LlamaForCausalLM"}},
      {"model_type", "llama"},
      {"hidden_size", 32},
      {"intermediate_size", 48},
      {"num_hidden_layers", 2},
      {"num_attention_heads", 4},
      {"num_key_value_heads", 2},
      {"vocab_size", 64},
      {"max_position_embeddings", 128},
      {"rms_norm_eps", 1e-5},
      {"rope_theta", 10000.0},
      {"tie_word_embeddings", false},
      {"hidden_act", "silu"},
      {"bos_token_id", 1},
      {"eos_token_id", 2},
  };
}

void write_random_checkpoint(const std::filesystem::path& dir, const nlohmann::json& config, uint64_t seed,
                             int shards) {
  std::filesystem::create_directories(dir);
  std::ofstream(dir / "config.json") << config.dump(2);
  const model::ModelConfig parsed = model::ModelConfig::from_json(config, "test config");
  at::manual_seed(seed);
  std::vector<std::vector<std::pair<std::string, at::Tensor>>> files(static_cast<size_t>(shards));
  size_t i = 0;
  for (const auto& spec : model::checkpoint_tensor_specs(parsed)) {
    const bool is_norm = spec.name.find("norm") != std::string::npos;
    at::Tensor t = at::randn(spec.shape) * (is_norm ? 0.1 : 0.3) + (is_norm ? 1.0 : 0.0);
    files[i++ % files.size()].emplace_back(spec.name, t);
  }
  if (shards == 1) {
    model::write_safetensors(dir / "model.safetensors", files[0]);
    return;
  }
  nlohmann::json weight_map = nlohmann::json::object();
  for (size_t f = 0; f < files.size(); ++f) {
    const std::string name = "model-0000" + std::to_string(f + 1) + "-of-0000" + std::to_string(shards) + ".safetensors";
    model::write_safetensors(dir / name, files[f]);
    for (const auto& [tensor, value] : files[f]) weight_map[tensor] = name;
  }
  std::ofstream(dir / "model.safetensors.index.json") << nlohmann::json{{"metadata", nlohmann::json::object()}, {"weight_map", weight_map}}.dump(2);
}

svf::Expert random_expert(const model::ModelConfig& config, const std::string& fingerprint, const std::string& name,
                          uint64_t seed, const std::string& description, svf::DispatchRole dispatch) {
  at::manual_seed(seed);
  svf::Expert e;
  e.name = name;
  e.description = description;
  e.dispatch = dispatch;
  e.base_fingerprint = fingerprint;
  for (const auto& id : svf::target_matrices(config, svf::Targets::kMlp)) e.z.emplace(id.weight_name(), at::rand({64}) * 2);
  return e;
}

void StoriesSvfTest::SetUp() {
  StoriesTest::SetUp();
  if (!ready()) return;
  fingerprint_ = model::checkpoint_fingerprint(dir_);
  cache_.emplace(svf::SvdCache::compute(*model_, fingerprint_, svf::Targets::kMlp, at::kCPU));
  store_.emplace(*model_, *cache_, int64_t{1} << 30);
}

void StoriesSvfTest::add_expert(const std::string& name, uint64_t seed, const std::string& description,
                                svf::DispatchRole role) {
  store_->add(random_expert(model_->config(), fingerprint_, name, seed, description, role));
}

}  // namespace t2::testing
