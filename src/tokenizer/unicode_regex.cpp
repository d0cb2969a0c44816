#include "unicode_regex.hpp"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include <vector>

#include "t2/common/errors.hpp"

namespace t2::tokenizer {
namespace {

// Rewrites a tokenizer.json pattern so PCRE2 reads it as Oniguruma (HF tokenizers) does:
//  - Oniguruma takes \s as Unicode's White_Space, which includes U+0085 (NEXT
//    LINE); PCRE2's UCP \s leaves it out, so it is spelled out;
//  - in Oniguruma's Ruby syntax X{n,m}+ is (?:X{n,m})+, not PCRE2's possessive
//    form (cl100k's \p{N}{1,3}+ splits "1234567890" into one run in HF).
std::string translate_pattern(const std::string& pattern) {
  std::string out;
  bool in_class = false;
  size_t atom = 0;                 // where the last complete atom starts in `out`
  std::vector<size_t> open_groups;  // where each open group starts in `out`
  for (size_t i = 0; i < pattern.size(); ++i) {
    const char c = pattern[i];
    if (c == '\\' && i + 1 < pattern.size()) {
      const size_t begin = out.size();
      const char e = pattern[++i];
      if (e == 's') {
        out += in_class ? "\\s\\x{85}" : "[\\s\\x{85}]";
      } else if (e == 'S' && !in_class) {
        out += "[^\\s\\x{85}]";
      } else {
        out += c;
        out += e;
        if ((e == 'p' || e == 'P' || e == 'x') && i + 1 < pattern.size() && pattern[i + 1] == '{') {
          const size_t close = pattern.find('}', i);
          if (close != std::string::npos) {
            out.append(pattern, i + 1, close - i);
            i = close;
          }
        }
      }
      if (!in_class) atom = begin;
      continue;
    }
    if (in_class) {
      if (c == ']') in_class = false;
      out += c;
      continue;
    }
    if (c == '[') {
      in_class = true;
      atom = out.size();
      out += c;
      if (i + 1 < pattern.size() && pattern[i + 1] == '^') out += pattern[++i];
      if (i + 1 < pattern.size() && pattern[i + 1] == ']') out += pattern[++i];  // a leading ] is literal
      continue;
    }
    if (c == '(') {
      open_groups.push_back(out.size());
      out += c;
      continue;
    }
    if (c == ')' && !open_groups.empty()) {
      atom = open_groups.back();
      open_groups.pop_back();
      out += c;
      continue;
    }
    if (c == '{') {
      const size_t close = pattern.find('}', i);
      const bool interval = close != std::string::npos && close > i + 1 &&
                            pattern.find_first_not_of("0123456789,", i + 1) == close;
      if (interval && close + 1 < pattern.size() && pattern[close + 1] == '+') {
        out.insert(atom, "(?:");
        out.append(pattern, i, close - i + 1);
        out += ")+";
        i = close + 1;
        continue;
      }
      if (interval) {
        out.append(pattern, i, close - i + 1);
        i = close;
        continue;
      }
    }
    if (c != '*' && c != '+' && c != '?' && c != '|' && (static_cast<unsigned char>(c) & 0xC0) != 0x80) atom = out.size();
    out += c;
  }
  return out;
}

}  // namespace

struct UnicodeRegex::Compiled {
  explicit Compiled(pcre2_code* c) : code(c) {}
  ~Compiled() { pcre2_code_free(code); }
  Compiled(const Compiled&) = delete;
  Compiled& operator=(const Compiled&) = delete;
  pcre2_code* code;
};

UnicodeRegex::UnicodeRegex(const std::string& pattern) {
  const std::string translated = translate_pattern(pattern);
  int error = 0;
  PCRE2_SIZE offset = 0;
  // DOLLAR_ENDONLY: $ is the end of the text, as in fancy-regex (tiktoken).
  pcre2_code* code = pcre2_compile(reinterpret_cast<PCRE2_SPTR>(translated.data()), translated.size(),
                                   PCRE2_UTF | PCRE2_UCP | PCRE2_DOLLAR_ENDONLY, &error, &offset, nullptr);
  if (!code) {
    PCRE2_UCHAR message[256];
    pcre2_get_error_message(error, message, sizeof(message));
    throw LoadError("tokenizer.json: cannot compile split pattern at offset " + std::to_string(offset) + ": " +
                    reinterpret_cast<const char*>(message));
  }
  compiled_ = std::make_shared<const Compiled>(code);
  pcre2_jit_compile(code, PCRE2_JIT_COMPLETE);  // without JIT support PCRE2 interprets: slower, same matches
}

std::vector<ByteRange> UnicodeRegex::find_all(std::string_view text) const {
  std::vector<ByteRange> matches;
  const std::unique_ptr<pcre2_match_data, decltype(&pcre2_match_data_free)> data(
      pcre2_match_data_create_from_pattern(compiled_->code, nullptr), &pcre2_match_data_free);
  const auto subject = reinterpret_cast<PCRE2_SPTR>(text.data());
  size_t start = 0;
  while (start < text.size()) {
    // The text was validated on entry; NOTEMPTY skips patterns' empty matches.
    const int rc = pcre2_match(compiled_->code, subject, text.size(), start, PCRE2_NO_UTF_CHECK | PCRE2_NOTEMPTY,
                               data.get(), nullptr);
    if (rc == PCRE2_ERROR_NOMATCH) break;
    if (rc < 0) {
      PCRE2_UCHAR message[256];
      pcre2_get_error_message(rc, message, sizeof(message));
      throw InvalidArgument("text", std::string("cannot split text for tokenization: ") + reinterpret_cast<const char*>(message));
    }
    const PCRE2_SIZE* ovector = pcre2_get_ovector_pointer(data.get());
    matches.push_back({ovector[0], ovector[1]});
    start = ovector[1];
  }
  return matches;
}

}  // namespace t2::tokenizer
