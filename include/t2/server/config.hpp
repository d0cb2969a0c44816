// Server configuration: defaults, overridden by the config file (JSON), then
// by T2_* environment variables, then by flags (applied by `t2 serve`).
#pragma once

#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

#include <nlohmann/json_fwd.hpp>

namespace t2::server {

// What image content parts may be (vision models); see ServerConfig.
struct ImagePolicy {
  int64_t max_pixels = 25'000'000;
  int64_t max_images = 8;              // per request
  std::vector<std::string> url_hosts;  // hosts http(s) URLs may name; "*" any; empty: data: URLs only
  int64_t max_fetch_bytes = 20 << 20;
  double fetch_timeout_s = 10;
};

struct ServerConfig {
  std::string host = "127.0.0.1";
  int port = 8080;
  std::string model_dir;
  std::string model_id;  // the `model` clients name; default: the folder name
  std::string experts_dir = "experts";
  std::vector<std::string> load_experts;  // experts loaded at start; empty = every folder
  std::string cache_dir;
  std::string targets = "mlp";
  std::string device = "auto";
  std::string dtype = "auto";
  std::vector<std::string> api_keys;
  std::string api_key_file;
  int64_t max_body_bytes = 16 << 20;  // a photo in a data: URL fits
  int64_t max_batch = 8;
  bool cuda_graphs = true;          // decode steps replayed as CUDA graphs on a GPU (false: the eager forward)
  int64_t max_step_tokens = 2048;  // tokens per engine step; longer prompts prefill in chunks beside the decodes
  int64_t queue_capacity = 64;
  int64_t context = 0;  // 0: the model's
  double request_timeout_s = 600;
  // Budget for composed W' sets; 0: half the device memory free once the model, SVD factors and KV cache are in place.
  int64_t adapter_cache_bytes = 0;
  // The strategy of requests that name no adaptation: auto (classifier when a
  // classification expert is loaded, prompt when dispatch targets are, else
  // none), explicit, prompt, classifier or none.
  std::string dispatch = "auto";
  std::string dispatch_template = "configs/dispatch/prompt.txt";
  std::string classifier_expert;
  bool constrained_dispatch = true;
  std::string label_scoring = "mean";  // mean (length-normalised) or sum log-probability of each label
  int64_t dispatch_context = 1024;     // pass 1's token budget (capped by the model's context)
  std::string chat_template = "auto";  // or plain, llama-2, llama-3, chatml, zephyr, mistral
  int threads = 0;  // HTTP worker threads; 0: max_batch + queue_capacity + 8, so waiting requests never block /health
  // Images (vision models): decoded only below this many pixels (decompression bombs).
  int64_t max_image_pixels = 25'000'000;
  int64_t max_images_per_request = 8;
  // Hosts that http(s) image URLs may name ("*": any). Empty: data: URLs only,
  // because fetching what a client names lets it probe the server's network.
  std::vector<std::string> image_url_hosts;
  int64_t max_image_fetch_bytes = 20 << 20;
  double image_fetch_timeout_s = 10;

  // Applies the fields present in a config file; throws LoadError naming the
  // file and field on a wrong type.
  void apply_file(const std::filesystem::path& path);
  // Applies T2_* variables (T2_HOST, T2_PORT, T2_API_KEY, ...).
  void apply_environment();
  ImagePolicy image_policy() const {
    return {max_image_pixels, max_images_per_request, image_url_hosts, max_image_fetch_bytes, image_fetch_timeout_s};
  }
  // Checks ranges; throws InvalidArgument naming the setting.
  void validate() const;
  // The keys from api_keys and api_key_file (one per line).
  std::vector<std::string> resolved_api_keys() const;
};

}  // namespace t2::server
