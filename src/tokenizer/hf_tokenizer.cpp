#include "hf_tokenizer.hpp"

#include <fstream>

#include <nlohmann/json.hpp>

#include "added_tokens.hpp"
#include "bpe.hpp"
#include "decoder.hpp"
#include "normalizer.hpp"
#include "pre_tokenizer.hpp"
#include "t2/common/errors.hpp"
#include "utf8.hpp"

namespace t2::tokenizer {
namespace {

using nlohmann::json;

json read_json(const std::filesystem::path& file) {
  std::ifstream in(file);
  if (!in) throw LoadError(file.string() + ": cannot open");
  auto j = json::parse(in, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) throw LoadError(file.string() + ": not valid JSON");
  return j;
}

bool overlaps(const std::vector<TextSpan>& spans, size_t begin, size_t end) {
  for (const auto& s : spans) {
    if (begin < s.end && s.begin < end) return true;
  }
  return false;
}

// tokenizer_config.json names a token as "text" or {"content": "text", ...}.
std::optional<std::string> token_name(const json& config, const char* key) {
  const auto it = config.find(key);
  if (it == config.end()) return std::nullopt;
  if (it->is_string()) return it->get<std::string>();
  if (it->is_object() && it->contains("content") && (*it)["content"].is_string()) return (*it)["content"].get<std::string>();
  return std::nullopt;
}

class HfTokenizer final : public TokenizerBackend {
 public:
  HfTokenizer(const json& file, const json& config)
      : normalizer_(Normalizer::from_json(file.value("normalizer", json()))),
        pre_tokenizer_(PreTokenizer::from_json(file.value("pre_tokenizer", json()))),
        model_(load_model(file)),
        added_(AddedTokens::from_json(file.value("added_tokens", json()), normalizer_)),
        decoder_(Decoder::from_json(file.value("decoder", json()))) {
    read_post_processor(file.value("post_processor", json()));
    if (const auto bos = token_name(config, "bos_token")) bos_ = id_of(*bos);
    if (bos_ < 0 && !prefix_.empty()) bos_ = prefix_.front();
    if (const auto eos = token_name(config, "eos_token")) eos_ = id_of(*eos);
    // A file without a post-processor leaves BOS to tokenizer_config.json's add_bos_token.
    if (file.value("post_processor", json()).is_null() && config.value("add_bos_token", false) && bos_ >= 0) prefix_ = {bos_};
  }

  std::vector<int64_t> encode(const std::string& raw, bool allow_special, const std::vector<TextSpan>& literal) const override {
    // Ill-formed UTF-8 is read as Python decodes it with errors="replace"; the
    // spans' offsets no longer fit then, so all of such a text is literal.
    const bool valid = utf8::is_valid(raw);
    const std::string text = valid ? raw : utf8::lossy(raw);
    const std::vector<TextSpan> all_literal = {{0, text.size()}};
    const auto& spans = valid ? literal : all_literal;
    const auto accept_raw = [&](const AddedToken& t, size_t begin, size_t end) {
      return !t.special || (allow_special && !overlaps(spans, begin, end));
    };
    std::vector<int64_t> ids;
    for (const auto& segment : added_.split(text, /*normalized=*/false, accept_raw)) {
      if (segment.token) {
        ids.push_back(*segment.token);
        continue;
      }
      const std::string normalized = normalizer_.apply(text.substr(segment.begin, segment.end - segment.begin));
      // Offsets inside normalized text do not map back to the spans: a segment touching one matches no special token.
      const bool specials_here = allow_special && !overlaps(spans, segment.begin, segment.end);
      const auto accept_normalized = [&](const AddedToken& t, size_t, size_t) { return !t.special || specials_here; };
      for (const auto& part : added_.split(normalized, /*normalized=*/true, accept_normalized)) {
        if (part.token) {
          ids.push_back(*part.token);
          continue;
        }
        const bool at_start = segment.begin == 0 && part.begin == 0;
        for (const auto& word : pre_tokenizer_.split(normalized.substr(part.begin, part.end - part.begin), at_start)) {
          model_.encode_word(word.text, ids);
        }
      }
    }
    return ids;
  }

  std::vector<int64_t> sequence_prefix() const override { return prefix_; }
  std::vector<int64_t> sequence_suffix() const override { return suffix_; }

  std::string decode(const std::vector<int64_t>& ids, bool skip_special_tokens) const override {
    std::vector<std::string> tokens;
    tokens.reserve(ids.size());
    for (const int64_t id : ids) {
      check_id(id);
      if (const AddedToken* added = added_.find(id)) {
        if (!(skip_special_tokens && added->special)) tokens.push_back(added_.stream_text(id));
      } else if (id < model_.id_limit() && !model_.token(id).empty()) {
        tokens.push_back(model_.token(id));
      }
    }
    return decoder_.decode(std::move(tokens));
  }

  std::optional<int64_t> special_id(const std::string& piece) const override {
    if (const AddedToken* added = added_.find(piece)) return added->id;
    return std::nullopt;
  }

  std::string piece(int64_t id) const override {
    check_id(id);
    if (const AddedToken* added = added_.find(id)) return added->content;
    return id < model_.id_limit() ? model_.token(id) : std::string();
  }

  std::string token_text(int64_t id) const override {
    check_id(id);
    if (const AddedToken* added = added_.find(id)) return added->special ? "" : decoder_.token_bytes(added_.stream_text(id));
    return id < model_.id_limit() ? decoder_.token_bytes(model_.token(id)) : std::string();
  }

  int64_t vocab_size() const override { return std::max(model_.id_limit(), added_.id_limit()); }
  int64_t bos_id() const override { return bos_; }
  int64_t eos_id() const override { return eos_; }
  const char* kind() const override { return "tokenizer.json"; }

 private:
  static BpeModel load_model(const json& file) {
    const auto& model = file.value("model", json());
    const std::string type = model.is_object() ? model.value("type", "BPE") : "";
    if (type != "BPE") throw LoadError("tokenizer.json: model type '" + type + "' is not supported (supported: BPE)");
    return BpeModel::from_json(model);
  }

  void read_post_processor(const json& spec) {
    if (spec.is_null()) return;
    const std::string type = spec.value("type", "");
    if (type == "Sequence") {
      for (const auto& p : spec.at("processors")) read_post_processor(p);
    } else if (type == "TemplateProcessing") {
      bool after_sequence = false;
      for (const auto& item : spec.at("single")) {
        if (item.contains("Sequence")) {
          after_sequence = true;
        } else if (item.contains("SpecialToken")) {
          const std::string name = item["SpecialToken"].at("id").get<std::string>();
          const auto& special = spec.at("special_tokens").at(name);
          for (const auto& id : special.at("ids")) (after_sequence ? suffix_ : prefix_).push_back(id.get<int64_t>());
        }
      }
    } else if (type != "ByteLevel") {  // ByteLevel only adjusts offsets
      throw LoadError("tokenizer.json: post-processor '" + type + "' is not supported (supported: TemplateProcessing, ByteLevel, Sequence)");
    }
  }

  int64_t id_of(const std::string& token) const {
    if (const AddedToken* added = added_.find(token)) return added->id;
    return model_.id_of(token).value_or(-1);
  }

  void check_id(int64_t id) const {
    if (id < 0 || id >= vocab_size()) throw InvalidArgument("tokens", "token id " + std::to_string(id) + " is outside the vocabulary");
  }

  Normalizer normalizer_;
  PreTokenizer pre_tokenizer_;
  BpeModel model_;
  AddedTokens added_;
  Decoder decoder_;
  std::vector<int64_t> prefix_, suffix_;
  int64_t bos_ = -1;
  int64_t eos_ = -1;
};

}  // namespace

std::shared_ptr<const TokenizerBackend> load_hf_tokenizer(const std::filesystem::path& tokenizer_json) {
  const json file = read_json(tokenizer_json);
  const auto config_path = tokenizer_json.parent_path() / "tokenizer_config.json";
  const json config = std::filesystem::exists(config_path) ? read_json(config_path) : json::object();
  try {
    return std::make_shared<const HfTokenizer>(file, config);
  } catch (const json::exception& e) {
    throw LoadError(tokenizer_json.string() + ": unexpected structure: " + e.what());
  } catch (const LoadError& e) {
    throw LoadError(tokenizer_json.string() + ": " + e.what());
  }
}

}  // namespace t2::tokenizer
