// A compiled Unicode regular expression (PCRE2 with UTF and UCP, JIT-compiled)
// for the split patterns of tokenizer.json files. PCRE2 because those patterns
// need Unicode properties (\p{L}, \p{N}), possessive quantifiers (?+ ++),
// lookahead (?!\S) and inline flags (?i:...): std::regex has none of the
// first two, RE2 lacks lookaround, and PCRE2's JIT is fast.
#pragma once

#include <cstddef>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace t2::tokenizer {

struct ByteRange {
  size_t begin = 0;
  size_t end = 0;
};

class UnicodeRegex {
 public:
  // `pattern` as HF tokenizers (Oniguruma) and tiktoken (fancy-regex) read it;
  // throws LoadError when PCRE2 cannot compile it.
  explicit UnicodeRegex(const std::string& pattern);

  // The non-overlapping, non-empty matches in `text` (valid UTF-8), left to right.
  std::vector<ByteRange> find_all(std::string_view text) const;

 private:
  struct Compiled;
  std::shared_ptr<const Compiled> compiled_;
};

}  // namespace t2::tokenizer
