// GPT-2's byte-level alphabet: each of the 256 bytes as a printable character
// (printable Latin-1 bytes as themselves, the rest from U+0100 upwards), so a
// byte-level BPE vocabulary is plain text.
#pragma once

#include <array>
#include <optional>
#include <string>
#include <string_view>

namespace t2::tokenizer {

class ByteLevelAlphabet {
 public:
  ByteLevelAlphabet();
  // Each byte of `bytes` as its character.
  std::string encode(std::string_view bytes) const;
  // The bytes behind `text`, or nothing where a character is outside the alphabet.
  std::optional<std::string> decode(std::string_view text) const;

 private:
  std::array<std::string, 256> char_of_byte_;
  std::array<int, 0x144> byte_of_char_;  // the alphabet's highest character is U+0143
};

}  // namespace t2::tokenizer
