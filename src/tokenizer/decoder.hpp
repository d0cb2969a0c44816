// tokenizer.json's "decoder": token strings back to text. Supported:
// ByteLevel, Metaspace, ByteFallback, Fuse, Strip, Replace and Sequence, each
// as HF tokenizers applies it to the list of token strings.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include <nlohmann/json_fwd.hpp>

#include "byte_level.hpp"

namespace t2::tokenizer {

class Decoder {
 public:
  // `spec` is the "decoder" value; null joins tokens with spaces, as HF does.
  static Decoder from_json(const nlohmann::json& spec);

  // The text (valid UTF-8: ill-formed bytes become U+FFFD, as HF decodes them).
  std::string decode(std::vector<std::string> tokens) const;
  // The bytes one token contributes in the middle of a text; may be part of a character.
  std::string token_bytes(const std::string& token) const;

 private:
  enum class Kind { kByteLevel, kMetaspace, kByteFallback, kFuse, kStrip, kReplace };
  struct Step {
    Kind kind;
    std::string from, to;  // Replace's pattern and content; Metaspace's replacement; Strip's content
    size_t strip_start = 0, strip_stop = 0;
    bool prepend = true;  // Metaspace: the first token's leading replacement is the added prefix
  };
  static void add(const nlohmann::json& spec, std::vector<Step>& steps);

  std::vector<Step> steps_;
  bool has_decoder_ = false;
  std::shared_ptr<const ByteLevelAlphabet> alphabet_;
};

}  // namespace t2::tokenizer
