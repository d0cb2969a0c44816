// Downloading a model from the Hugging Face Hub (or a mirror speaking its URL
// layout) into a local cache: only the files t2 reads (config, tokenizer,
// safetensors), resumable (HTTP Range on a .incomplete file), and verified
// (sha256 of LFS files, git blob sha1 of the others) before they are kept;
// never more bytes than the Hub lists, and nothing it lists no size or hash for.
// Honours HF_ENDPOINT, HF_TOKEN and HF_HOME.
#pragma once

#include <filesystem>
#include <functional>
#include <string>

namespace t2::model {

struct HubOptions {
  std::string endpoint = "https://huggingface.co";
  std::string token;                 // sent as "Authorization: Bearer ..."
  std::filesystem::path cache_dir;   // holds models--ORG--NAME/snapshots/<commit>/
  std::string revision = "main";

  // HF_ENDPOINT, HF_TOKEN, HF_HOME (cache = $HF_HOME/hub, default ~/.cache/huggingface/hub).
  static HubOptions from_environment();
};

// True for "org/name" (what the Hub calls a repo id), false for paths.
bool is_hub_repo_id(const std::string& text);

// Downloads what is missing and returns the snapshot folder. Throws LoadError
// (HTTP failures, checksum mismatches) naming the file.
std::filesystem::path pull(const std::string& repo_id, const HubOptions& options,
                           const std::function<void(const std::string& file, uint64_t done, uint64_t total)>& progress = {});

// Whether a request to `url` may carry the token: only to the endpoint's own
// origin, and only over https (or to a loopback endpoint, which no network sees).
// Redirects elsewhere (the Hub's CDN) go without it.
bool token_allowed(const std::string& url, const std::string& endpoint);

// A model folder for `model`: the path itself if it exists, else the pulled
// repo. Throws NotFound for a missing path that looks local (./x, /x, ~/x, or
// a/b where the folder a exists) instead of taking it for a Hub repo id.
std::filesystem::path resolve_model(const std::string& model);

}  // namespace t2::model
