#include "normalizer.hpp"

#include <algorithm>

#include <nlohmann/json.hpp>
#include <unicode/bytestream.h>
#include <unicode/normalizer2.h>

#include "t2/common/errors.hpp"

namespace t2::tokenizer {
namespace {

using nlohmann::json;

std::string pattern_string(const json& spec, const std::string& where, bool* is_regex) {
  const auto& pattern = spec.at("pattern");
  if (pattern.contains("String")) {
    *is_regex = false;
    return pattern["String"].get<std::string>();
  }
  if (pattern.contains("Regex")) {
    *is_regex = true;
    return pattern["Regex"].get<std::string>();
  }
  throw LoadError("tokenizer.json: " + where + " pattern is neither String nor Regex");
}

const icu::Normalizer2& icu_normalizer(const std::string& form) {
  UErrorCode status = U_ZERO_ERROR;
  const icu::Normalizer2* n = form == "NFC"    ? icu::Normalizer2::getNFCInstance(status)
                              : form == "NFD"  ? icu::Normalizer2::getNFDInstance(status)
                              : form == "NFKC" ? icu::Normalizer2::getNFKCInstance(status)
                                               : icu::Normalizer2::getNFKDInstance(status);
  if (U_FAILURE(status) || !n) throw LoadError("ICU has no " + form + " normalizer: " + u_errorName(status));
  return *n;
}

std::string unicode_normalize(const std::string& form, std::string text) {
  // ASCII is in every normal form; most text takes this exit.
  if (std::all_of(text.begin(), text.end(), [](char c) { return static_cast<unsigned char>(c) < 0x80; })) return text;
  const auto& n = icu_normalizer(form);
  std::string out;
  icu::StringByteSink<std::string> sink(&out);
  UErrorCode status = U_ZERO_ERROR;
  n.normalizeUTF8(0, icu::StringPiece(text.data(), static_cast<int32_t>(text.size())), sink, nullptr, status);
  if (U_FAILURE(status)) throw InvalidArgument("text", std::string("cannot normalize text: ") + u_errorName(status));
  return out;
}

}  // namespace

std::string replace_all(std::string_view text, std::string_view from, std::string_view to) {
  if (from.empty()) return std::string(text);
  std::string out;
  out.reserve(text.size());
  size_t at = 0;
  for (size_t hit = text.find(from); hit != std::string_view::npos; hit = text.find(from, at)) {
    out.append(text.substr(at, hit - at));
    out.append(to);
    at = hit + from.size();
  }
  out.append(text.substr(at));
  return out;
}

void Normalizer::add(const json& spec, std::vector<Step>& steps) {
  if (spec.is_null()) return;
  const std::string type = spec.value("type", "");
  if (type == "Sequence") {
    for (const auto& s : spec.at("normalizers")) add(s, steps);
  } else if (type == "NFC" || type == "NFD" || type == "NFKC" || type == "NFKD") {
    icu_normalizer(type);  // fail at load, not on the first request
    steps.push_back({type == "NFC" ? Kind::kNfc : type == "NFD" ? Kind::kNfd : type == "NFKC" ? Kind::kNfkc : Kind::kNfkd, type, "", {}});
  } else if (type == "Prepend") {
    steps.push_back({Kind::kPrepend, spec.at("prepend").get<std::string>(), "", {}});
  } else if (type == "Replace") {
    bool is_regex = false;
    const std::string pattern = pattern_string(spec, "Replace normalizer", &is_regex);
    Step step{is_regex ? Kind::kReplaceRegex : Kind::kReplaceString, pattern, spec.at("content").get<std::string>(), {}};
    if (is_regex) step.regex.emplace_back(pattern);
    steps.push_back(std::move(step));
  } else {
    throw LoadError("tokenizer.json: normalizer '" + type + "' is not supported (supported: NFC, NFD, NFKC, NFKD, Prepend, Replace, Sequence)");
  }
}

Normalizer Normalizer::from_json(const json& spec) {
  Normalizer n;
  add(spec, n.steps_);
  return n;
}

std::string Normalizer::apply(std::string text) const {
  for (const auto& step : steps_) {
    switch (step.kind) {
      case Kind::kNfc:
      case Kind::kNfd:
      case Kind::kNfkc:
      case Kind::kNfkd:
        text = unicode_normalize(step.argument, std::move(text));
        break;
      case Kind::kPrepend:
        if (!text.empty()) text = step.argument + text;  // HF prepends to non-empty text only
        break;
      case Kind::kReplaceString:
        text = replace_all(text, step.argument, step.content);
        break;
      case Kind::kReplaceRegex: {
        std::string out;
        size_t at = 0;
        for (const auto& m : step.regex.front().find_all(text)) {
          out.append(text, at, m.begin - at);
          out += step.content;
          at = m.end;
        }
        out.append(text, at, std::string::npos);
        text = std::move(out);
        break;
      }
    }
  }
  return text;
}

}  // namespace t2::tokenizer
