// Text <-> token ids for a model folder: SentencePiece (tokenizer.model) or
// Hugging Face's tokenizer.json (byte-level or SentencePiece-style BPE), with
// the BOS/EOS of the folder's tokenizer_config.json. A cheap-to-copy value:
// copies share one immutable implementation.
#pragma once

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace t2::tokenizer {

class TokenizerBackend;

// Bytes [begin, end) of a text.
struct TextSpan {
  size_t begin = 0;
  size_t end = 0;
};

class Tokenizer {
 public:
  // `path` is a tokenizer.model or tokenizer.json file, or a model folder
  // holding one (tokenizer.model first, as t2 always read it).
  static Tokenizer load(const std::filesystem::path& path);

  // Text from a user: special tokens written in it ("<|eot_id|>", "</s>") stay
  // text; added tokens that are not special still match, as in HF tokenizers.
  // `add_bos` adds what the tokenizer puts around a sequence (its BOS).
  std::vector<int64_t> encode(const std::string& text, bool add_bos) const;
  // Trusted text such as a template's markup: special tokens written in it
  // become their ids, except inside `literal` spans (user content).
  std::vector<int64_t> encode_with_specials(const std::string& text, const std::vector<TextSpan>& literal = {}) const;
  // `ids` with the tokenizer's sequence specials around them (HF's add_special_tokens).
  std::vector<int64_t> add_sequence_specials(const std::vector<int64_t>& ids) const;
  // The id of a special or added token, if the vocabulary has it.
  std::optional<int64_t> special_id(const std::string& piece) const;
  // Special tokens contribute no text unless `skip_special_tokens` is false.
  std::string decode(const std::vector<int64_t>& ids, bool skip_special_tokens = true) const;
  // The raw piece, e.g. "▁world", "<0x0A>" or "Ġworld".
  std::string piece(int64_t id) const;
  // What the token contributes to text: "▁world" -> " world", "<0x0A>" -> "\n"
  // (a byte piece may be part of a UTF-8 character).
  std::string token_text(int64_t id) const;

  int64_t vocab_size() const;
  int64_t bos_id() const;  // -1 without one (Qwen2)
  int64_t eos_id() const;  // tokenizer_config.json's eos_token; -1 without one
  // "sentencepiece" | "tokenizer.json"
  const char* kind() const;

 private:
  explicit Tokenizer(std::shared_ptr<const TokenizerBackend> backend);
  std::shared_ptr<const TokenizerBackend> backend_;
};

// The ids that end generation: `configured` (generation_config.json's
// eos_token_id, one id or a list) and the tokenizer's own EOS.
std::vector<int64_t> stop_token_ids(const Tokenizer& tokenizer, std::vector<int64_t> configured);

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
