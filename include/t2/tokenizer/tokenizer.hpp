// Text <-> token ids through SentencePiece (tokenizer.model of the model
// folder), with the model's byte fallback and whitespace normalisation.
#pragma once

#include <cstdint>
#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace sentencepiece {
class SentencePieceProcessor;
}

namespace t2::tokenizer {

class Tokenizer {
 public:
  // `path` is a tokenizer.model file or a model folder that holds one.
  static Tokenizer load(const std::filesystem::path& path);

  std::vector<int64_t> encode(const std::string& text, bool add_bos) const;
  // Like encode, but known special pieces written in the text (e.g. "<s>",
  // "</s>", "<|im_start|>") become their single control ids.
  std::vector<int64_t> encode_with_specials(const std::string& text) const;
  // The id of a control or user-defined piece, if the vocabulary has it.
  std::optional<int64_t> special_id(const std::string& piece) const;
  std::string decode(const std::vector<int64_t>& ids) const;
  // The raw piece, e.g. "▁world" or "<0x0A>".
  std::string piece(int64_t id) const;
  // What the token contributes to text: "▁world" -> " world", "<0x0A>" -> "\n"
  // (a byte piece may be part of a UTF-8 character).
  std::string token_text(int64_t id) const;

  int64_t vocab_size() const;
  int64_t bos_id() const;
  int64_t eos_id() const;

 private:
  explicit Tokenizer(std::shared_ptr<const sentencepiece::SentencePieceProcessor> processor);
  // Immutable after load, so copies share it.
  std::shared_ptr<const sentencepiece::SentencePieceProcessor> processor_;
};

// Turns a stream of token ids into text pieces, never splitting a UTF-8
// character and keeping the spaces SentencePiece attaches to pieces.
class StreamDecoder {
 public:
  // `context`: tokens already in the sequence (e.g. the prompt), not re-emitted.
  explicit StreamDecoder(Tokenizer tokenizer, const std::vector<int64_t>& context = {});

  // The text the token completes; empty while a character is still partial.
  std::string push(int64_t token);
  // Whatever is held back at the end of the stream.
  std::string flush();

 private:
  Tokenizer tokenizer_;
  std::vector<int64_t> tokens_;
  size_t prefix_offset_ = 0;  // decode window start: text before it is settled
  size_t read_offset_ = 0;    // tokens before it have been emitted
};

}  // namespace t2::tokenizer
