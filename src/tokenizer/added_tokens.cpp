#include "added_tokens.hpp"

#include <algorithm>

#include <nlohmann/json.hpp>

#include "normalizer.hpp"
#include "t2/common/errors.hpp"
#include "utf8.hpp"

namespace t2::tokenizer {
namespace {

bool is_word_char(char32_t c) {
  // HF's single_word test: alphanumeric or underscore; non-ASCII letters count as word characters.
  return c == '_' || (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= 0x80 && !utf8::is_whitespace(c));
}

char32_t last_char(std::string_view text) {
  size_t at = text.size();
  while (at > 0 && (static_cast<unsigned char>(text[at - 1]) & 0xC0) == 0x80) --at;
  if (at > 0) --at;
  return utf8::next(text, at);
}

}  // namespace

AddedTokens AddedTokens::from_json(const nlohmann::json& added_tokens, const Normalizer& normalizer) {
  AddedTokens a;
  a.by_first_byte_[0].resize(256);
  a.by_first_byte_[1].resize(256);
  if (added_tokens.is_null()) return a;
  for (const auto& t : added_tokens) {
    AddedToken token;
    token.id = t.at("id").get<int64_t>();
    token.content = t.at("content").get<std::string>();
    token.special = t.value("special", false);
    token.lstrip = t.value("lstrip", false);
    token.rstrip = t.value("rstrip", false);
    token.single_word = t.value("single_word", false);
    token.normalized = t.value("normalized", !token.special);
    if (token.content.empty() || token.id < 0) throw LoadError("tokenizer.json: an added token has no content or a negative id");
    a.patterns_.push_back(token.normalized ? normalizer.apply(token.content) : token.content);
    a.index_of_id_[token.id] = a.tokens_.size();
    a.index_of_content_[token.content] = a.tokens_.size();
    a.id_limit_ = std::max(a.id_limit_, token.id + 1);
    a.tokens_.push_back(std::move(token));
  }
  for (size_t i = 0; i < a.tokens_.size(); ++i) {
    if (a.patterns_[i].empty()) continue;
    a.by_first_byte_[a.tokens_[i].normalized][static_cast<unsigned char>(a.patterns_[i][0])].push_back(i);
  }
  for (auto& kind : a.by_first_byte_) {
    for (auto& bucket : kind) {
      std::stable_sort(bucket.begin(), bucket.end(), [&](size_t l, size_t r) { return a.patterns_[l].size() > a.patterns_[r].size(); });
    }
  }
  return a;
}

std::vector<AddedTokens::Segment> AddedTokens::split(std::string_view text, bool normalized, const Accept& accept) const {
  std::vector<Segment> segments;
  const auto& buckets = by_first_byte_[normalized];
  size_t emitted = 0;  // text before it is in `segments`
  size_t at = 0;
  while (at < text.size()) {
    const auto& bucket = buckets[static_cast<unsigned char>(text[at])];
    const size_t* hit = nullptr;
    for (const size_t& i : bucket) {
      if (text.compare(at, patterns_[i].size(), patterns_[i]) == 0) {
        hit = &i;
        break;
      }
    }
    if (!hit) {
      ++at;
      continue;
    }
    const AddedToken& token = tokens_[*hit];
    size_t begin = at, end = at + patterns_[*hit].size();
    at = end;  // as HF's automaton: a refused match still consumes its text
    if (token.single_word) {
      const bool word_before = begin > 0 && is_word_char(last_char(text.substr(0, begin)));
      size_t next = end;
      const bool word_after = end < text.size() && is_word_char(utf8::next(text, next));
      if (word_before || word_after) continue;
    }
    if (!accept(token, begin, end)) continue;
    if (token.lstrip) {
      while (begin > emitted) {
        const char32_t c = last_char(text.substr(0, begin));
        if (!utf8::is_whitespace(c)) break;
        std::string encoded;
        utf8::append(encoded, c);
        begin -= encoded.size();
      }
    }
    if (token.rstrip) {
      while (end < text.size()) {
        size_t next = end;
        if (!utf8::is_whitespace(utf8::next(text, next))) break;
        end = next;
      }
    }
    if (begin > emitted) segments.push_back({emitted, begin, std::nullopt});
    segments.push_back({begin, end, token.id});
    emitted = end;
    at = std::max(at, end);
  }
  if (emitted < text.size()) segments.push_back({emitted, text.size(), std::nullopt});
  return segments;
}

const AddedToken* AddedTokens::find(int64_t id) const {
  const auto it = index_of_id_.find(id);
  return it == index_of_id_.end() ? nullptr : &tokens_[it->second];
}

const AddedToken* AddedTokens::find(const std::string& content) const {
  const auto it = index_of_content_.find(content);
  return it == index_of_content_.end() ? nullptr : &tokens_[it->second];
}

}  // namespace t2::tokenizer
