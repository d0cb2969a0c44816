#include "sentencepiece_tokenizer.hpp"

#include <algorithm>

#include <sentencepiece_processor.h>

#include "t2/common/errors.hpp"

namespace t2::tokenizer {
namespace {

class SentencePieceTokenizer final : public TokenizerBackend {
 public:
  explicit SentencePieceTokenizer(std::unique_ptr<sentencepiece::SentencePieceProcessor> processor)
      : processor_(std::move(processor)) {}

  std::vector<int64_t> encode(const std::string& text, bool allow_special, const std::vector<TextSpan>& literal) const override {
    std::vector<int64_t> out;
    size_t start = 0;
    size_t search = 0;
    // Special pieces look like <...>, <|...|>; split on those the vocabulary knows, outside literal spans.
    while (allow_special && search < text.size()) {
      const size_t open = text.find('<', search);
      if (open == std::string::npos) break;
      const size_t close = text.find('>', open);
      if (close == std::string::npos) break;
      const auto id = special_id(text.substr(open, close - open + 1));
      const bool in_literal = std::any_of(literal.begin(), literal.end(), [&](const TextSpan& s) { return open < s.end && s.begin <= close; });
      if (!id || in_literal) {
        search = open + 1;
        continue;
      }
      if (open > start) append_plain(text.substr(start, open - start), out);
      out.push_back(*id);
      start = search = close + 1;
    }
    if (start < text.size()) append_plain(text.substr(start), out);
    return out;
  }

  std::vector<int64_t> sequence_prefix() const override {
    return bos_id() >= 0 ? std::vector<int64_t>{bos_id()} : std::vector<int64_t>{};
  }
  std::vector<int64_t> sequence_suffix() const override { return {}; }

  std::string decode(const std::vector<int64_t>& ids, bool skip_special_tokens) const override {
    // SentencePiece drops control pieces; written out, they keep their place in the text.
    std::string text;
    std::vector<int> run;
    const auto flush = [&] {
      std::string piece_text;
      const auto status = processor_->Decode(run, &piece_text);
      if (!status.ok()) throw Error("cannot decode tokens: " + status.ToString());
      text += piece_text;
      run.clear();
    };
    for (const int64_t id : ids) {
      check_id(id);
      if (!skip_special_tokens && processor_->IsControl(static_cast<int>(id))) {
        flush();
        text += processor_->IdToPiece(static_cast<int>(id));
      } else {
        run.push_back(static_cast<int>(id));
      }
    }
    flush();
    return text;
  }

  std::optional<int64_t> special_id(const std::string& piece) const override {
    // Control pieces (<s>, </s>) and user-defined ones (<|im_start|>): an exact
    // piece that is neither a byte, unknown nor unused.
    const int id = processor_->PieceToId(piece);
    if (processor_->IdToPiece(id) != piece) return std::nullopt;
    if (processor_->IsByte(id) || processor_->IsUnknown(id) || processor_->IsUnused(id)) return std::nullopt;
    return id;
  }

  std::string piece(int64_t id) const override {
    check_id(id);
    return processor_->IdToPiece(static_cast<int>(id));
  }

  std::string token_text(int64_t id) const override {
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

  int64_t vocab_size() const override { return processor_->GetPieceSize(); }
  int64_t bos_id() const override { return processor_->bos_id(); }
  int64_t eos_id() const override { return processor_->eos_id(); }
  const char* kind() const override { return "sentencepiece"; }

 private:
  void append_plain(const std::string& text, std::vector<int64_t>& out) const {
    std::vector<int> ids;
    const auto status = processor_->Encode(text, &ids);
    if (!status.ok()) throw InvalidArgument("prompt", "cannot tokenize text: " + status.ToString());
    out.insert(out.end(), ids.begin(), ids.end());
  }

  void check_id(int64_t id) const {
    if (id < 0 || id >= vocab_size()) throw InvalidArgument("tokens", "token id " + std::to_string(id) + " is outside the vocabulary");
  }

  std::unique_ptr<const sentencepiece::SentencePieceProcessor> processor_;
};

}  // namespace

std::shared_ptr<const TokenizerBackend> load_sentencepiece(const std::filesystem::path& model_file) {
  if (!std::filesystem::exists(model_file)) throw LoadError(model_file.string() + ": tokenizer model not found");
  auto processor = std::make_unique<sentencepiece::SentencePieceProcessor>();
  const auto status = processor->Load(model_file.string());
  if (!status.ok()) throw LoadError(model_file.string() + ": cannot load SentencePiece model: " + status.ToString());
  return std::make_shared<const SentencePieceTokenizer>(std::move(processor));
}

}  // namespace t2::tokenizer
