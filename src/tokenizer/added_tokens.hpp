// tokenizer.json's "added_tokens": pieces matched in the text before any
// normalizing or splitting (leftmost, then longest), with their lstrip,
// rstrip, single_word and normalized options, as HF tokenizers' AddedVocabulary.
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include <nlohmann/json_fwd.hpp>

namespace t2::tokenizer {

class Normalizer;

struct AddedToken {
  int64_t id = 0;
  std::string content;
  bool special = false;
  bool lstrip = false;
  bool rstrip = false;
  bool single_word = false;
  bool normalized = false;
};

class AddedTokens {
 public:
  // `normalizer` turns the content of normalized tokens into what they match.
  static AddedTokens from_json(const nlohmann::json& added_tokens, const Normalizer& normalizer);

  struct Segment {
    size_t begin = 0;
    size_t end = 0;
    std::optional<int64_t> token;  // an added token, else text to tokenize
  };
  // May this match (of `token`, at [begin, end) of the text) become the token?
  using Accept = std::function<bool(const AddedToken& token, size_t begin, size_t end)>;
  // `text` cut at the tokens of one kind: normalized (matched in normalized
  // text) or not (matched in the raw text).
  std::vector<Segment> split(std::string_view text, bool normalized, const Accept& accept) const;

  const AddedToken* find(int64_t id) const;
  // The token as it stands in the token stream: a normalized token's content
  // normalized, as HF tokenizers decodes it.
  const std::string& stream_text(int64_t id) const { return patterns_[index_of_id_.at(id)]; }
  const AddedToken* find(const std::string& content) const;
  int64_t id_limit() const { return id_limit_; }

 private:
  std::vector<AddedToken> tokens_;
  std::vector<std::string> patterns_;  // what each token matches
  // Candidates by first byte, longest pattern first, for each kind.
  std::vector<std::vector<size_t>> by_first_byte_[2];
  std::unordered_map<int64_t, size_t> index_of_id_;
  std::unordered_map<std::string, size_t> index_of_content_;
  int64_t id_limit_ = 0;
};

}  // namespace t2::tokenizer
