#include "t2/tokenizer/tokenizer.hpp"

#include <sentencepiece_processor.h>

#include "t2/common/errors.hpp"

namespace t2::tokenizer {
namespace {

// SentencePiece decodes an incomplete UTF-8 sequence as U+FFFD.
bool ends_with_replacement_char(const std::string& s) {
  static const std::string kReplacement = "\xEF\xBF\xBD";
  return s.size() >= kReplacement.size() && s.compare(s.size() - kReplacement.size(), kReplacement.size(), kReplacement) == 0;
}

}  // namespace

Tokenizer::Tokenizer(std::shared_ptr<const sentencepiece::SentencePieceProcessor> processor)
    : processor_(std::move(processor)) {}

Tokenizer Tokenizer::load(const std::filesystem::path& path) {
  const auto file = std::filesystem::is_directory(path) ? path / "tokenizer.model" : path;
  if (!std::filesystem::exists(file)) throw LoadError(file.string() + ": tokenizer model not found");
  auto processor = std::make_shared<sentencepiece::SentencePieceProcessor>();
  const auto status = processor->Load(file.string());
  if (!status.ok()) throw LoadError(file.string() + ": cannot load SentencePiece model: " + status.ToString());
  return Tokenizer(std::move(processor));
}

std::vector<int64_t> Tokenizer::encode(const std::string& text, bool add_bos) const {
  std::vector<int> ids;
  const auto status = processor_->Encode(text, &ids);
  if (!status.ok()) throw InvalidArgument("prompt", "cannot tokenize text: " + status.ToString());
  std::vector<int64_t> out;
  out.reserve(ids.size() + 1);
  if (add_bos && bos_id() >= 0) out.push_back(bos_id());
  out.insert(out.end(), ids.begin(), ids.end());
  return out;
}

std::optional<int64_t> Tokenizer::special_id(const std::string& piece) const {
  // Control pieces (<s>, </s>) and user-defined ones (<|im_start|>): an exact
  // piece that is neither a byte, unknown nor unused.
  const int id = processor_->PieceToId(piece);
  if (processor_->IdToPiece(id) != piece) return std::nullopt;
  if (processor_->IsByte(id) || processor_->IsUnknown(id) || processor_->IsUnused(id)) return std::nullopt;
  return id;
}

std::vector<int64_t> Tokenizer::encode_with_specials(const std::string& text) const {
  // Special pieces look like <...>, <|...|> or [INST]; split on those the vocabulary knows.
  std::vector<int64_t> out;
  size_t start = 0;
  size_t search = 0;
  while (search < text.size()) {
    const size_t open = text.find('<', search);
    if (open == std::string::npos) break;
    const size_t close = text.find('>', open);
    if (close == std::string::npos) break;
    const auto id = special_id(text.substr(open, close - open + 1));
    if (!id) {
      search = open + 1;
      continue;
    }
    if (open > start) {
      const auto piece = encode(text.substr(start, open - start), false);
      out.insert(out.end(), piece.begin(), piece.end());
    }
    out.push_back(*id);
    start = search = close + 1;
  }
  if (start < text.size()) {
    const auto piece = encode(text.substr(start), false);
    out.insert(out.end(), piece.begin(), piece.end());
  }
  return out;
}

std::string Tokenizer::decode(const std::vector<int64_t>& ids) const {
  std::vector<int> narrow;
  narrow.reserve(ids.size());
  for (const int64_t id : ids) {
    if (id < 0 || id >= vocab_size()) throw InvalidArgument("tokens", "token id " + std::to_string(id) + " is outside the vocabulary");
    narrow.push_back(static_cast<int>(id));
  }
  std::string text;
  const auto status = processor_->Decode(narrow, &text);
  if (!status.ok()) throw Error("cannot decode tokens: " + status.ToString());
  return text;
}

std::string Tokenizer::piece(int64_t id) const {
  if (id < 0 || id >= vocab_size()) throw InvalidArgument("tokens", "token id " + std::to_string(id) + " is outside the vocabulary");
  return processor_->IdToPiece(static_cast<int>(id));
}

std::string Tokenizer::token_text(int64_t id) const {
  const std::string p = piece(id);
  if (processor_->IsByte(static_cast<int>(id)) && p.size() == 6) {
    return std::string(1, static_cast<char>(std::stoi(p.substr(3, 2), nullptr, 16)));
  }
  if (processor_->IsControl(static_cast<int>(id))) return "";
  static const std::string kSpace = "\xE2\x96\x81";  // U+2581, SentencePiece's word boundary
  std::string text;
  for (size_t i = 0; i < p.size();) {
    if (p.compare(i, kSpace.size(), kSpace) == 0) {
      text += ' ';
      i += kSpace.size();
    } else {
      text += p[i++];
    }
  }
  return text;
}

int64_t Tokenizer::vocab_size() const { return processor_->GetPieceSize(); }
int64_t Tokenizer::bos_id() const { return processor_->bos_id(); }
int64_t Tokenizer::eos_id() const { return processor_->eos_id(); }

StreamDecoder::StreamDecoder(Tokenizer tokenizer, const std::vector<int64_t>& context)
    : tokenizer_(std::move(tokenizer)), tokens_(context) {
  // A few context tokens suffice to place the leading space of the next piece.
  constexpr size_t kContextWindow = 4;
  read_offset_ = tokens_.size();
  prefix_offset_ = read_offset_ > kContextWindow ? read_offset_ - kContextWindow : 0;
}

std::string StreamDecoder::push(int64_t token) {
  tokens_.push_back(token);
  const auto begin = tokens_.begin() + static_cast<std::ptrdiff_t>(prefix_offset_);
  const std::string prefix_text = tokenizer_.decode({begin, tokens_.begin() + static_cast<std::ptrdiff_t>(read_offset_)});
  const std::string full_text = tokenizer_.decode({begin, tokens_.end()});
  if (full_text.size() <= prefix_text.size() || ends_with_replacement_char(full_text)) return "";
  prefix_offset_ = read_offset_;
  read_offset_ = tokens_.size();
  return full_text.substr(prefix_text.size());
}

std::string StreamDecoder::flush() {
  const auto begin = tokens_.begin() + static_cast<std::ptrdiff_t>(prefix_offset_);
  const std::string prefix_text = tokenizer_.decode({begin, tokens_.begin() + static_cast<std::ptrdiff_t>(read_offset_)});
  const std::string full_text = tokenizer_.decode({begin, tokens_.end()});
  prefix_offset_ = read_offset_ = tokens_.size();
  return full_text.size() > prefix_text.size() ? full_text.substr(prefix_text.size()) : "";
}

}  // namespace t2::tokenizer
