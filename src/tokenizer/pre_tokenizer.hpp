// tokenizer.json's "pre_tokenizer": splits normalized text into the words BPE
// sees. Supported: Split (the file's own regex or string, every split
// behaviour, invert), ByteLevel (GPT-2's regex, add_prefix_space, byte
// alphabet), Metaspace (replacement, prepend_scheme, split) and Sequence.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include <nlohmann/json_fwd.hpp>

#include "byte_level.hpp"
#include "unicode_regex.hpp"

namespace t2::tokenizer {

struct Word {
  std::string text;
  bool at_input_start;  // begins where the input text begins (Metaspace's "first" scheme)
};

class PreTokenizer {
 public:
  // `spec` is the "pre_tokenizer" value; null keeps each segment one word.
  static PreTokenizer from_json(const nlohmann::json& spec);

  std::vector<Word> split(std::string text, bool at_input_start) const;
  bool is_byte_level() const;

 private:
  enum class Kind { kSplit, kByteLevel, kMetaspace };
  enum class Behaviour { kRemoved, kIsolated, kMergedWithPrevious, kMergedWithNext, kContiguous };
  enum class Prepend { kAlways, kFirst, kNever };
  struct Step {
    Kind kind = Kind::kSplit;
    std::vector<UnicodeRegex> regex;  // Split's regex or ByteLevel's GPT-2 regex (zero or one)
    std::string literal;              // Split's string pattern
    Behaviour behaviour = Behaviour::kIsolated;
    bool invert = false;
    bool add_prefix_space = false;  // ByteLevel
    std::string replacement;        // Metaspace
    Prepend prepend = Prepend::kAlways;
    bool metaspace_split = true;
  };
  static void add(const nlohmann::json& spec, std::vector<Step>& steps);
  void apply(const Step& step, std::vector<Word>& words) const;

  std::vector<Step> steps_;
  std::shared_ptr<const ByteLevelAlphabet> alphabet_;
};

}  // namespace t2::tokenizer
