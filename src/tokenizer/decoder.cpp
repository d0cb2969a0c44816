#include "decoder.hpp"

#include <nlohmann/json.hpp>

#include "normalizer.hpp"
#include "t2/common/errors.hpp"
#include "utf8.hpp"

namespace t2::tokenizer {
namespace {

using nlohmann::json;

// The byte of a "<0xXX>" piece.
int fallback_byte(const std::string& token) {
  if (token.size() != 6 || token.compare(0, 3, "<0x") != 0 || token[5] != '>') return -1;
  const auto hex = [](char c) { return c >= '0' && c <= '9' ? c - '0' : c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1; };
  const int high = hex(token[3]), low = hex(token[4]);
  return high < 0 || low < 0 ? -1 : high * 16 + low;
}

// Removes up to `count` leading (or trailing) copies of `content`.
std::string strip(std::string token, const std::string& content, size_t start, size_t stop) {
  if (content.empty()) return token;
  for (size_t i = 0; i < start && token.compare(0, content.size(), content) == 0; ++i) token.erase(0, content.size());
  for (size_t i = 0; i < stop && token.size() >= content.size() &&
                     token.compare(token.size() - content.size(), content.size(), content) == 0;
       ++i) {
    token.erase(token.size() - content.size());
  }
  return token;
}

}  // namespace

void Decoder::add(const json& spec, std::vector<Step>& steps) {
  const std::string type = spec.value("type", "");
  if (type == "Sequence") {
    for (const auto& s : spec.at("decoders")) add(s, steps);
  } else if (type == "ByteLevel") {
    steps.push_back({Kind::kByteLevel, "", ""});
  } else if (type == "Metaspace") {
    Step step{Kind::kMetaspace, spec.value("replacement", "\xE2\x96\x81"), " "};
    step.prepend = spec.contains("prepend_scheme") ? spec["prepend_scheme"].get<std::string>() != "never"
                                                   : spec.value("add_prefix_space", true);
    steps.push_back(step);
  } else if (type == "ByteFallback") {
    steps.push_back({Kind::kByteFallback, "", ""});
  } else if (type == "Fuse") {
    steps.push_back({Kind::kFuse, "", ""});
  } else if (type == "Strip") {
    Step step{Kind::kStrip, spec.at("content").get<std::string>(), ""};
    step.strip_start = spec.value("start", size_t{0});
    step.strip_stop = spec.value("stop", size_t{0});
    steps.push_back(step);
  } else if (type == "Replace") {
    const auto& pattern = spec.at("pattern");
    if (!pattern.contains("String")) throw LoadError("tokenizer.json: only String patterns are supported in a Replace decoder");
    steps.push_back({Kind::kReplace, pattern["String"].get<std::string>(), spec.at("content").get<std::string>()});
  } else {
    throw LoadError("tokenizer.json: decoder '" + type +
                    "' is not supported (supported: ByteLevel, Metaspace, ByteFallback, Fuse, Strip, Replace, Sequence)");
  }
}

Decoder Decoder::from_json(const json& spec) {
  Decoder d;
  if (spec.is_null()) return d;
  d.has_decoder_ = true;
  add(spec, d.steps_);
  d.alphabet_ = std::make_shared<const ByteLevelAlphabet>();
  return d;
}

std::string Decoder::decode(std::vector<std::string> tokens) const {
  if (!has_decoder_) {
    std::string text;
    for (size_t i = 0; i < tokens.size(); ++i) text += (i ? " " : "") + tokens[i];
    return utf8::lossy(text);
  }
  for (const auto& step : steps_) {
    switch (step.kind) {
      case Kind::kByteLevel: {
        // A token outside the alphabet (an added token such as "你好") keeps its own bytes.
        std::string bytes;
        for (const auto& t : tokens) {
          const auto decoded = alphabet_->decode(t);
          bytes += decoded ? *decoded : t;
        }
        tokens = {utf8::lossy(bytes)};
        break;
      }
      case Kind::kMetaspace:
        for (size_t i = 0; i < tokens.size(); ++i) {
          // The first token's leading replacement is the prefix the pre-tokenizer added.
          if (i == 0 && step.prepend && tokens[i].compare(0, step.from.size(), step.from) == 0) tokens[i].erase(0, step.from.size());
          tokens[i] = replace_all(tokens[i], step.from, step.to);
        }
        break;
      case Kind::kByteFallback: {
        // Runs of <0xXX> become their text; a run that is not UTF-8 becomes one U+FFFD per byte.
        std::vector<std::string> out;
        std::string run;
        size_t run_tokens = 0;
        const auto flush = [&] {
          if (!run_tokens) return;
          if (utf8::is_valid(run)) {
            out.push_back(run);
          } else {
            for (size_t i = 0; i < run_tokens; ++i) out.emplace_back(utf8::kReplacement);
          }
          run.clear();
          run_tokens = 0;
        };
        for (auto& t : tokens) {
          const int byte = fallback_byte(t);
          if (byte >= 0) {
            run += static_cast<char>(byte);
            ++run_tokens;
          } else {
            flush();
            out.push_back(std::move(t));
          }
        }
        flush();
        tokens = std::move(out);
        break;
      }
      case Kind::kFuse: {
        std::string joined;
        for (const auto& t : tokens) joined += t;
        tokens = {std::move(joined)};
        break;
      }
      case Kind::kStrip:
        for (auto& t : tokens) t = strip(std::move(t), step.from, step.strip_start, step.strip_stop);
        break;
      case Kind::kReplace:
        for (auto& t : tokens) t = replace_all(t, step.from, step.to);
        break;
    }
  }
  std::string text;
  for (const auto& t : tokens) text += t;
  return utf8::lossy(text);
}

std::string Decoder::token_bytes(const std::string& token) const {
  std::string text = token;
  for (const auto& step : steps_) {
    switch (step.kind) {
      case Kind::kByteLevel:
        if (const auto decoded = alphabet_->decode(text)) text = *decoded;
        break;
      case Kind::kByteFallback:
        if (const int byte = fallback_byte(text); byte >= 0) text = std::string(1, static_cast<char>(byte));
        break;
      case Kind::kMetaspace:
      case Kind::kReplace:
        text = replace_all(text, step.from, step.to);
        break;
      case Kind::kFuse:
      case Kind::kStrip:  // Strip removes the prefix space of a text's start, not of a token inside it
        break;
    }
  }
  return text;
}

}  // namespace t2::tokenizer
