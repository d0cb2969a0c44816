// UTF-8 helpers of the tokenizers: validation with the replacement policy of
// Python's bytes.decode("utf-8", "replace") and Rust's from_utf8_lossy (one
// U+FFFD per maximal ill-formed subpart), code point iteration, and Unicode's
// White_Space property (what HF tokenizers' char::is_whitespace tests).
#pragma once

#include <cstddef>
#include <string>
#include <string_view>

namespace t2::tokenizer::utf8 {

inline constexpr std::string_view kReplacement = "\xEF\xBF\xBD";  // U+FFFD

// Length of the well-formed character at text[at], or 0 where it is ill-formed;
// `subpart` receives how many bytes one U+FFFD replaces there.
size_t valid_length(std::string_view text, size_t at, size_t* subpart = nullptr);
// `text` with each ill-formed subpart replaced by U+FFFD (a copy when already valid).
std::string lossy(std::string_view text);
bool is_valid(std::string_view text);

// The code point of the well-formed character at text[at]; advances `at`.
char32_t next(std::string_view text, size_t& at);
void append(std::string& out, char32_t code_point);

bool is_whitespace(char32_t code_point);

}  // namespace t2::tokenizer::utf8
