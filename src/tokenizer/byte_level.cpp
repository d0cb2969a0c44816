#include "byte_level.hpp"

#include "utf8.hpp"

namespace t2::tokenizer {

ByteLevelAlphabet::ByteLevelAlphabet() {
  byte_of_char_.fill(-1);
  char32_t next_free = 0x100;
  for (int b = 0; b < 256; ++b) {
    const bool printable = (b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
    const char32_t c = printable ? static_cast<char32_t>(b) : next_free++;
    utf8::append(char_of_byte_[static_cast<size_t>(b)], c);
    byte_of_char_[c] = b;
  }
}

std::string ByteLevelAlphabet::encode(std::string_view bytes) const {
  std::string out;
  out.reserve(bytes.size() * 2);
  for (const char b : bytes) out += char_of_byte_[static_cast<unsigned char>(b)];
  return out;
}

std::optional<std::string> ByteLevelAlphabet::decode(std::string_view text) const {
  std::string out;
  out.reserve(text.size());
  for (size_t at = 0; at < text.size();) {
    if (!utf8::valid_length(text, at)) return std::nullopt;
    const char32_t c = utf8::next(text, at);
    if (c >= byte_of_char_.size() || byte_of_char_[c] < 0) return std::nullopt;
    out += static_cast<char>(byte_of_char_[c]);
  }
  return out;
}

}  // namespace t2::tokenizer
