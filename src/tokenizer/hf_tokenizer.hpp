// A Hugging Face tokenizer.json (model BPE) with its normalizer, pre-tokenizer,
// added tokens, decoder and post-processor's BOS/EOS, plus the special tokens
// named in tokenizer_config.json beside it.
#pragma once

#include <filesystem>
#include <memory>

#include "backend.hpp"

namespace t2::tokenizer {

// Throws LoadError for a missing or malformed file, or one using a component t2 does not implement.
std::shared_ptr<const TokenizerBackend> load_hf_tokenizer(const std::filesystem::path& tokenizer_json);

}  // namespace t2::tokenizer
