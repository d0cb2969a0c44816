// The BPE model of a tokenizer.json ("model": {"type": "BPE"}): the vocabulary,
// the ranked merges (either file format: "a b" or ["a", "b"]), byte fallback to
// <0xXX> pieces, and ignore_merges (a word already in the vocabulary is one token).
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include <nlohmann/json_fwd.hpp>

namespace t2::tokenizer {

class BpeModel {
 public:
  // Throws LoadError for a malformed model or one using what t2 does not implement.
  static BpeModel from_json(const nlohmann::json& model);

  // Appends the ids of one pre-tokenized word (its pieces' alphabet, e.g. byte-level characters).
  void encode_word(std::string_view word, std::vector<int64_t>& out) const;

  std::optional<int64_t> id_of(const std::string& token) const;
  // The largest id plus one.
  int64_t id_limit() const { return static_cast<int64_t>(tokens_.size()); }
  // The vocabulary entry, empty for an id the vocabulary skips.
  const std::string& token(int64_t id) const { return tokens_[static_cast<size_t>(id)]; }

 private:
  struct Merge {
    int32_t rank;
    int32_t merged;
  };
  static uint64_t pair_key(int32_t left, int32_t right) {
    return (static_cast<uint64_t>(static_cast<uint32_t>(left)) << 32) | static_cast<uint32_t>(right);
  }
  // The symbols a word starts from: its characters, else their <0xXX> bytes, else unk.
  void initial_symbols(std::string_view word, std::vector<int32_t>& symbols) const;
  void merge(std::vector<int32_t>& symbols) const;

  std::unordered_map<std::string, int32_t> vocab_;
  std::vector<std::string> tokens_;
  std::unordered_map<uint64_t, Merge> merges_;
  std::vector<int32_t> byte_tokens_;  // <0xXX> ids, -1 where missing; empty without byte_fallback
  std::optional<int32_t> unk_;
  bool fuse_unk_ = false;
  bool ignore_merges_ = false;
};

}  // namespace t2::tokenizer
