#include "t2/tokenizer/tokenizer.hpp"

#include <algorithm>

#include "backend.hpp"
#include "hf_tokenizer.hpp"
#include "sentencepiece_tokenizer.hpp"
#include "t2/common/errors.hpp"

namespace t2::tokenizer {
namespace {

// Both implementations decode an incomplete UTF-8 sequence as U+FFFD.
bool ends_with_replacement_char(const std::string& s) {
  static const std::string kReplacement = "\xEF\xBF\xBD";
  return s.size() >= kReplacement.size() && s.compare(s.size() - kReplacement.size(), kReplacement.size(), kReplacement) == 0;
}

}  // namespace

Tokenizer::Tokenizer(std::shared_ptr<const TokenizerBackend> backend) : backend_(std::move(backend)) {}

Tokenizer Tokenizer::load(const std::filesystem::path& path) {
  if (!std::filesystem::is_directory(path)) {
    return Tokenizer(path.extension() == ".json" ? load_hf_tokenizer(path) : load_sentencepiece(path));
  }
  if (std::filesystem::exists(path / "tokenizer.model")) return Tokenizer(load_sentencepiece(path / "tokenizer.model"));
  if (std::filesystem::exists(path / "tokenizer.json")) return Tokenizer(load_hf_tokenizer(path / "tokenizer.json"));
  throw LoadError(path.string() + ": no tokenizer.model or tokenizer.json");
}

std::vector<int64_t> Tokenizer::encode(const std::string& text, bool add_bos) const {
  const auto ids = backend_->encode(text, /*allow_special=*/false, {});
  return add_bos ? add_sequence_specials(ids) : ids;
}

std::vector<int64_t> Tokenizer::encode_with_specials(const std::string& text, const std::vector<TextSpan>& literal) const {
  return backend_->encode(text, /*allow_special=*/true, literal);
}

std::vector<int64_t> Tokenizer::add_sequence_specials(const std::vector<int64_t>& ids) const {
  std::vector<int64_t> out = backend_->sequence_prefix();
  out.insert(out.end(), ids.begin(), ids.end());
  const auto suffix = backend_->sequence_suffix();
  out.insert(out.end(), suffix.begin(), suffix.end());
  return out;
}

std::optional<int64_t> Tokenizer::special_id(const std::string& piece) const { return backend_->special_id(piece); }
std::string Tokenizer::decode(const std::vector<int64_t>& ids, bool skip_special_tokens) const {
  return backend_->decode(ids, skip_special_tokens);
}
std::string Tokenizer::piece(int64_t id) const { return backend_->piece(id); }
std::string Tokenizer::token_text(int64_t id) const { return backend_->token_text(id); }
int64_t Tokenizer::vocab_size() const { return backend_->vocab_size(); }
int64_t Tokenizer::bos_id() const { return backend_->bos_id(); }
int64_t Tokenizer::eos_id() const { return backend_->eos_id(); }
const char* Tokenizer::kind() const { return backend_->kind(); }

std::vector<int64_t> stop_token_ids(const Tokenizer& tokenizer, std::vector<int64_t> configured) {
  const int64_t eos = tokenizer.eos_id();
  if (eos >= 0 && std::find(configured.begin(), configured.end(), eos) == configured.end()) configured.push_back(eos);
  return configured;
}

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
