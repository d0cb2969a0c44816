// A SentencePiece tokenizer.model through libsentencepiece.
#pragma once

#include <filesystem>
#include <memory>

#include "backend.hpp"

namespace t2::tokenizer {

// Throws LoadError when the file is missing or not a SentencePiece model.
std::shared_ptr<const TokenizerBackend> load_sentencepiece(const std::filesystem::path& model_file);

}  // namespace t2::tokenizer
