#include "pre_tokenizer.hpp"

#include <algorithm>

#include <nlohmann/json.hpp>

#include "normalizer.hpp"
#include "t2/common/errors.hpp"

namespace t2::tokenizer {
namespace {

using nlohmann::json;

// GPT-2's pattern, which ByteLevel applies when use_regex is set.
constexpr const char* kGpt2Pattern =
    R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)";

struct Piece {
  ByteRange range;
  bool is_match;
};

// The text cut at `matches`, each part marked as a match or the text between.
std::vector<Piece> pieces_of(size_t size, const std::vector<ByteRange>& matches, bool invert) {
  std::vector<Piece> pieces;
  size_t at = 0;
  for (const auto& m : matches) {
    if (m.begin > at) pieces.push_back({{at, m.begin}, invert});
    pieces.push_back({m, !invert});
    at = m.end;
  }
  if (at < size) pieces.push_back({{at, size}, invert});
  return pieces;
}

}  // namespace

void PreTokenizer::add(const json& spec, std::vector<Step>& steps) {
  if (spec.is_null()) return;
  const std::string type = spec.value("type", "");
  if (type == "Sequence") {
    for (const auto& s : spec.at("pretokenizers")) add(s, steps);
  } else if (type == "Split") {
    Step step;
    step.kind = Kind::kSplit;
    const auto& pattern = spec.at("pattern");
    if (pattern.contains("Regex")) {
      step.regex.emplace_back(pattern["Regex"].get<std::string>());
    } else if (pattern.contains("String")) {
      step.literal = pattern["String"].get<std::string>();
      if (step.literal.empty()) throw LoadError("tokenizer.json: Split pre-tokenizer with an empty String pattern");
    } else {
      throw LoadError("tokenizer.json: Split pre-tokenizer pattern is neither String nor Regex");
    }
    const std::string behaviour = spec.value("behavior", "Isolated");
    if (behaviour == "Removed") step.behaviour = Behaviour::kRemoved;
    else if (behaviour == "Isolated") step.behaviour = Behaviour::kIsolated;
    else if (behaviour == "MergedWithPrevious") step.behaviour = Behaviour::kMergedWithPrevious;
    else if (behaviour == "MergedWithNext") step.behaviour = Behaviour::kMergedWithNext;
    else if (behaviour == "Contiguous") step.behaviour = Behaviour::kContiguous;
    else throw LoadError("tokenizer.json: unknown Split behavior '" + behaviour + "'");
    step.invert = spec.value("invert", false);
    steps.push_back(std::move(step));
  } else if (type == "ByteLevel") {
    Step step;
    step.kind = Kind::kByteLevel;
    if (spec.value("use_regex", true)) step.regex.emplace_back(kGpt2Pattern);
    step.add_prefix_space = spec.value("add_prefix_space", true);
    steps.push_back(std::move(step));
  } else if (type == "Metaspace") {
    Step step;
    step.kind = Kind::kMetaspace;
    step.replacement = spec.value("replacement", "\xE2\x96\x81");
    // Older files carry add_prefix_space instead of prepend_scheme.
    const std::string scheme = spec.contains("prepend_scheme") ? spec["prepend_scheme"].get<std::string>()
                               : spec.value("add_prefix_space", true) ? "always" : "never";
    if (scheme == "always") step.prepend = Prepend::kAlways;
    else if (scheme == "first") step.prepend = Prepend::kFirst;
    else if (scheme == "never") step.prepend = Prepend::kNever;
    else throw LoadError("tokenizer.json: unknown Metaspace prepend_scheme '" + scheme + "'");
    step.metaspace_split = spec.value("split", true);
    steps.push_back(std::move(step));
  } else {
    throw LoadError("tokenizer.json: pre-tokenizer '" + type + "' is not supported (supported: Split, ByteLevel, Metaspace, Sequence)");
  }
}

PreTokenizer PreTokenizer::from_json(const json& spec) {
  PreTokenizer p;
  add(spec, p.steps_);
  if (p.is_byte_level()) p.alphabet_ = std::make_shared<const ByteLevelAlphabet>();
  return p;
}

bool PreTokenizer::is_byte_level() const {
  for (const auto& s : steps_) {
    if (s.kind == Kind::kByteLevel) return true;
  }
  return false;
}

std::vector<Word> PreTokenizer::split(std::string text, bool at_input_start) const {
  std::vector<Word> words;
  words.push_back({std::move(text), at_input_start});
  for (const auto& step : steps_) apply(step, words);
  return words;
}

void PreTokenizer::apply(const Step& step, std::vector<Word>& words) const {
  std::vector<Word> out;
  out.reserve(words.size());
  for (auto& word : words) {
    std::string text = std::move(word.text);
    if (step.kind == Kind::kMetaspace) {
      text = replace_all(text, " ", step.replacement);
      const bool starts_with_replacement = text.compare(0, step.replacement.size(), step.replacement) == 0;
      if (!starts_with_replacement &&
          (step.prepend == Prepend::kAlways || (step.prepend == Prepend::kFirst && word.at_input_start))) {
        text = step.replacement + text;
      }
      if (!step.metaspace_split) {
        out.push_back({std::move(text), word.at_input_start});
        continue;
      }
    }
    if (step.kind == Kind::kByteLevel && step.add_prefix_space && text.compare(0, 1, " ") != 0) text = " " + text;

    std::vector<ByteRange> matches;
    Behaviour behaviour = Behaviour::kIsolated;
    bool invert = false;
    if (step.kind == Kind::kMetaspace || !step.literal.empty()) {
      const std::string& literal = step.kind == Kind::kMetaspace ? step.replacement : step.literal;
      for (size_t hit = text.find(literal); hit != std::string::npos; hit = text.find(literal, hit + literal.size())) {
        matches.push_back({hit, hit + literal.size()});
      }
      behaviour = step.kind == Kind::kMetaspace ? Behaviour::kMergedWithNext : step.behaviour;
      invert = step.kind == Kind::kSplit && step.invert;
    } else if (!step.regex.empty()) {
      matches = step.regex.front().find_all(text);
      behaviour = step.behaviour;
      invert = step.kind == Kind::kSplit && step.invert;
    } else {
      matches = {{0, text.size()}};
    }

    // Merge the pieces as HF tokenizers' SplitDelimiterBehavior does.
    const auto pieces = pieces_of(text.size(), matches, invert);
    std::vector<ByteRange> parts;
    bool previous_match = false;
    switch (behaviour) {
      case Behaviour::kIsolated:
        for (const auto& p : pieces) parts.push_back(p.range);
        break;
      case Behaviour::kRemoved:
        for (const auto& p : pieces) {
          if (!p.is_match) parts.push_back(p.range);
        }
        break;
      case Behaviour::kMergedWithPrevious:
        for (const auto& p : pieces) {
          if (p.is_match && !previous_match && !parts.empty()) parts.back().end = p.range.end;
          else parts.push_back(p.range);
          previous_match = p.is_match;
        }
        break;
      case Behaviour::kMergedWithNext:
        for (auto p = pieces.rbegin(); p != pieces.rend(); ++p) {
          if (p->is_match && !previous_match && !parts.empty()) parts.back().begin = p->range.begin;
          else parts.push_back(p->range);
          previous_match = p->is_match;
        }
        std::reverse(parts.begin(), parts.end());
        break;
      case Behaviour::kContiguous:
        for (const auto& p : pieces) {
          if (p.is_match == previous_match && !parts.empty()) parts.back().end = p.range.end;
          else parts.push_back(p.range);
          previous_match = p.is_match;
        }
        break;
    }
    for (const auto& part : parts) {
      if (part.end <= part.begin) continue;
      std::string piece = text.substr(part.begin, part.end - part.begin);
      if (step.kind == Kind::kByteLevel) piece = alphabet_->encode(piece);
      out.push_back({std::move(piece), word.at_input_start && part.begin == 0});
    }
  }
  words = std::move(out);
}

}  // namespace t2::tokenizer
