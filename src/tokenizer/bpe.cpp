#include "bpe.hpp"

#include <algorithm>
#include <cstdio>
#include <queue>

#include <nlohmann/json.hpp>

#include "t2/common/errors.hpp"
#include "utf8.hpp"

namespace t2::tokenizer {
namespace {

using nlohmann::json;

std::pair<std::string, std::string> merge_pair(const json& entry) {
  if (entry.is_string()) {  // "a b": the older format, split at the first space
    const auto text = entry.get<std::string>();
    const auto space = text.find(' ');
    if (space == std::string::npos) throw LoadError("tokenizer.json: merge '" + text + "' is not two tokens");
    return {text.substr(0, space), text.substr(space + 1)};
  }
  if (entry.is_array() && entry.size() == 2 && entry[0].is_string() && entry[1].is_string()) {
    return {entry[0].get<std::string>(), entry[1].get<std::string>()};
  }
  throw LoadError("tokenizer.json: a merge is neither \"a b\" nor [\"a\", \"b\"]");
}

bool is_unset(const json& model, const char* key) {
  const auto it = model.find(key);
  return it == model.end() || it->is_null() || (it->is_string() && it->get<std::string>().empty());
}

}  // namespace

BpeModel BpeModel::from_json(const json& model) {
  BpeModel m;
  if (!model.contains("vocab") || !model["vocab"].is_object()) throw LoadError("tokenizer.json: the BPE model has no vocab");
  for (const char* key : {"continuing_subword_prefix", "end_of_word_suffix"}) {
    if (!is_unset(model, key)) throw LoadError(std::string("tokenizer.json: BPE ") + key + " is not supported");
  }
  if (model.contains("dropout") && model["dropout"].is_number() && model["dropout"].get<double>() > 0) {
    throw LoadError("tokenizer.json: BPE dropout is not supported (inference tokenizes deterministically)");
  }
  int64_t limit = 0;
  for (const auto& [token, id] : model["vocab"].items()) {
    if (!id.is_number_integer() || id.get<int64_t>() < 0 || id.get<int64_t>() >= (int64_t{1} << 31)) {
      throw LoadError("tokenizer.json: vocab entry '" + token + "' has no valid id");
    }
    m.vocab_.emplace(token, id.get<int32_t>());
    limit = std::max(limit, id.get<int64_t>() + 1);
  }
  m.tokens_.resize(static_cast<size_t>(limit));
  for (const auto& [token, id] : m.vocab_) m.tokens_[static_cast<size_t>(id)] = token;

  int32_t rank = 0;
  for (const auto& entry : model.value("merges", json::array())) {
    const auto [left, right] = merge_pair(entry);
    const auto l = m.vocab_.find(left), r = m.vocab_.find(right), merged = m.vocab_.find(left + right);
    if (l == m.vocab_.end() || r == m.vocab_.end() || merged == m.vocab_.end()) {
      throw LoadError("tokenizer.json: merge '" + left + " " + right + "' names a token outside the vocab");
    }
    m.merges_.emplace(pair_key(l->second, r->second), Merge{rank++, merged->second});  // the first rank of a pair wins
  }
  if (!is_unset(model, "unk_token")) {
    const auto unk = m.vocab_.find(model["unk_token"].get<std::string>());
    if (unk == m.vocab_.end()) throw LoadError("tokenizer.json: BPE unk_token is not in the vocab");
    m.unk_ = unk->second;
  }
  m.fuse_unk_ = model.value("fuse_unk", false);
  m.ignore_merges_ = model.value("ignore_merges", false);
  if (model.value("byte_fallback", false)) {
    m.byte_tokens_.assign(256, -1);
    for (int b = 0; b < 256; ++b) {
      char name[8];
      std::snprintf(name, sizeof(name), "<0x%02X>", b);
      if (const auto it = m.vocab_.find(name); it != m.vocab_.end()) m.byte_tokens_[static_cast<size_t>(b)] = it->second;
    }
  }
  return m;
}

std::optional<int64_t> BpeModel::id_of(const std::string& token) const {
  const auto it = vocab_.find(token);
  if (it == vocab_.end()) return std::nullopt;
  return it->second;
}

void BpeModel::initial_symbols(std::string_view word, std::vector<int32_t>& symbols) const {
  std::string character;
  for (size_t at = 0; at < word.size();) {
    const size_t begin = at;
    utf8::next(word, at);
    character.assign(word.substr(begin, at - begin));
    if (const auto it = vocab_.find(character); it != vocab_.end()) {
      symbols.push_back(it->second);
      continue;
    }
    if (!byte_tokens_.empty()) {
      const bool all_bytes = std::all_of(character.begin(), character.end(),
                                         [&](char b) { return byte_tokens_[static_cast<unsigned char>(b)] >= 0; });
      if (all_bytes) {
        for (const char b : character) symbols.push_back(byte_tokens_[static_cast<unsigned char>(b)]);
        continue;
      }
    }
    if (unk_) {
      // As in HF tokenizers: a run of unknown characters is one unk when fuse_unk is set.
      if (!(fuse_unk_ && !symbols.empty() && symbols.back() == *unk_)) symbols.push_back(*unk_);
    }
    // Without an unk token, HF tokenizers drops the character; so does t2.
  }
}

void BpeModel::merge(std::vector<int32_t>& symbols) const {
  // Lowest rank first, leftmost among equals: a heap of candidate pairs over a
  // linked list of symbols; a stale candidate (a side already merged) is skipped.
  const int n = static_cast<int>(symbols.size());
  std::vector<int> prev(n), next(n);
  std::vector<bool> alive(n, true);
  for (int i = 0; i < n; ++i) {
    prev[i] = i - 1;
    next[i] = i + 1 < n ? i + 1 : -1;
  }
  struct Candidate {
    int32_t rank;
    int pos;
    int32_t merged;
    bool operator>(const Candidate& o) const { return rank != o.rank ? rank > o.rank : pos > o.pos; }
  };
  std::priority_queue<Candidate, std::vector<Candidate>, std::greater<Candidate>> queue;
  const auto consider = [&](int left) {
    if (left < 0 || next[left] < 0) return;
    const auto it = merges_.find(pair_key(symbols[left], symbols[next[left]]));
    if (it != merges_.end()) queue.push({it->second.rank, left, it->second.merged});
  };
  for (int i = 0; i + 1 < n; ++i) consider(i);
  while (!queue.empty()) {
    const Candidate top = queue.top();
    queue.pop();
    if (!alive[top.pos] || next[top.pos] < 0) continue;
    const int right = next[top.pos];
    const auto it = merges_.find(pair_key(symbols[top.pos], symbols[right]));
    if (it == merges_.end() || it->second.merged != top.merged) continue;
    symbols[top.pos] = top.merged;
    alive[right] = false;
    next[top.pos] = next[right];
    if (next[right] >= 0) prev[next[right]] = top.pos;
    consider(prev[top.pos]);
    consider(top.pos);
  }
  int out = 0;
  for (int i = 0; i < n; ++i) {
    if (alive[i]) symbols[out++] = symbols[i];
  }
  symbols.resize(out);
}

void BpeModel::encode_word(std::string_view word, std::vector<int64_t>& out) const {
  if (word.empty()) return;
  if (ignore_merges_) {
    if (const auto it = vocab_.find(std::string(word)); it != vocab_.end()) {
      out.push_back(it->second);
      return;
    }
  }
  std::vector<int32_t> symbols;
  symbols.reserve(word.size());
  initial_symbols(word, symbols);
  merge(symbols);
  out.insert(out.end(), symbols.begin(), symbols.end());
}

}  // namespace t2::tokenizer
