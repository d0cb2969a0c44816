// tokenizer.json's "normalizer": the text transformations before splitting.
// Supported: NFC, NFD, NFKC, NFKD (ICU), Prepend, Replace, Sequence; others
// are refused at load with a LoadError naming them.
#pragma once

#include <string>
#include <vector>

#include <nlohmann/json_fwd.hpp>

#include "unicode_regex.hpp"

namespace t2::tokenizer {

class Normalizer {
 public:
  // `spec` is the "normalizer" value; null means none.
  static Normalizer from_json(const nlohmann::json& spec);

  std::string apply(std::string text) const;
  bool empty() const { return steps_.empty(); }

 private:
  enum class Kind { kNfc, kNfd, kNfkc, kNfkd, kPrepend, kReplaceString, kReplaceRegex };
  struct Step {
    Kind kind;
    std::string argument;  // Prepend's prefix, Replace's pattern string
    std::string content;   // Replace's replacement
    std::vector<UnicodeRegex> regex;  // Replace's pattern regex (zero or one)
  };
  static void add(const nlohmann::json& spec, std::vector<Step>& steps);

  std::vector<Step> steps_;
};

// Replaces every occurrence of `from` in `text` by `to`.
std::string replace_all(std::string_view text, std::string_view from, std::string_view to);

}  // namespace t2::tokenizer
