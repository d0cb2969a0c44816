// What a tokenizer implementation provides behind t2::tokenizer::Tokenizer:
// SentencePiece's tokenizer.model or Hugging Face's tokenizer.json.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "t2/tokenizer/tokenizer.hpp"

namespace t2::tokenizer {

class TokenizerBackend {
 public:
  virtual ~TokenizerBackend() = default;

  // Special tokens written in `text` become their ids when `allow_special`,
  // except where a match overlaps a `literal` span.
  virtual std::vector<int64_t> encode(const std::string& text, bool allow_special, const std::vector<TextSpan>& literal) const = 0;
  // What the tokenizer puts around a sequence (BOS and the like).
  virtual std::vector<int64_t> sequence_prefix() const = 0;
  virtual std::vector<int64_t> sequence_suffix() const = 0;
  virtual std::string decode(const std::vector<int64_t>& ids, bool skip_special_tokens) const = 0;
  virtual std::optional<int64_t> special_id(const std::string& piece) const = 0;
  virtual std::string piece(int64_t id) const = 0;
  virtual std::string token_text(int64_t id) const = 0;
  virtual int64_t vocab_size() const = 0;
  virtual int64_t bos_id() const = 0;
  virtual int64_t eos_id() const = 0;
  virtual const char* kind() const = 0;
};

}  // namespace t2::tokenizer
