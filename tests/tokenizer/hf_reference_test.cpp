// t2's tokenizer.json implementation against Hugging Face tokenizers and
// tiktoken on the same 5,000 strings (tests/reference/tokenizer_reference.py):
// ids in every special-token mode, decodes, and decodes of random id sequences.
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "t2/tokenizer/tokenizer.hpp"

namespace {

using t2::tokenizer::Tokenizer;

std::filesystem::path reference_dir() { return std::filesystem::path(T2_REFERENCE_DIR) / "tokenizers"; }

std::string from_hex(const std::string& hex) {
  std::string out;
  for (size_t i = 0; i + 1 < hex.size(); i += 2) out += static_cast<char>(std::stoi(hex.substr(i, 2), nullptr, 16));
  return out;
}

std::string show(const std::vector<int64_t>& ids) {
  std::string s = "[";
  for (size_t i = 0; i < ids.size() && i < 40; ++i) s += (i ? "," : "") + std::to_string(ids[i]);
  return s + (ids.size() > 40 ? ",...]" : "]");
}

// Counts disagreements and describes the first few.
class Mismatches {
 public:
  template <typename T>
  void check(const T& got, const T& want, const std::string& what) {
    ++checked_;
    if (got == want) return;
    if (++count_ <= 3) examples_ += what + "\n";
  }
  void expect_none(const std::string& label) const {
    EXPECT_GT(checked_, 0) << label;
    EXPECT_EQ(count_, 0) << label << ": " << count_ << " of " << checked_ << " differ; first:\n" << examples_;
  }

 private:
  size_t checked_ = 0, count_ = 0;
  std::string examples_;
};

nlohmann::json read(const std::filesystem::path& file) {
  std::ifstream in(file);
  return nlohmann::json::parse(in);
}

class HfTokenizerReference : public ::testing::TestWithParam<const char*> {
 protected:
  void SetUp() override {
    folder_ = reference_dir() / GetParam();
    ASSERT_TRUE(std::filesystem::exists(folder_ / "reference.json")) << "run the tokenizer_reference fixture";
    reference_ = read(folder_ / "reference.json");
  }
  std::filesystem::path folder_;
  nlohmann::json reference_;
};

TEST_P(HfTokenizerReference, EncodesAsHfOnEveryCorpusString) {
  const Tokenizer tok = Tokenizer::load(folder_ / "tokenizer.json");
  EXPECT_EQ(tok.vocab_size(), reference_["vocab_size"].get<int64_t>());
  const auto& cases = reference_["cases"];
  ASSERT_GE(cases.size(), 5000u);
  Mismatches plain, specials, added;
  for (const auto& c : cases) {
    const std::string text = from_hex(c["hex"]);
    const std::string label = "text " + c["text"].get<std::string>() + " -> ";
    const auto got = tok.encode(text, false);
    plain.check(got, c["plain"].get<std::vector<int64_t>>(), label + show(got) + " want " + show(c["plain"]));
    const auto with = tok.encode_with_specials(text);
    specials.check(with, c["with_specials"].get<std::vector<int64_t>>(), label + show(with) + " want " + show(c["with_specials"]));
    const auto bos = tok.encode(text, true);
    added.check(bos, c["add_special"].get<std::vector<int64_t>>(), label + show(bos) + " want " + show(c["add_special"]));
  }
  plain.expect_none("special tokens split (encode_special_tokens=True)");
  specials.expect_none("special tokens matched");
  added.expect_none("add_special_tokens=True");
}

TEST_P(HfTokenizerReference, DecodesAsHf) {
  const Tokenizer tok = Tokenizer::load(folder_ / "tokenizer.json");
  Mismatches text_decodes, skip, keep;
  for (const auto& c : reference_["cases"]) {
    const auto ids = c["plain"].get<std::vector<int64_t>>();
    const std::string want = from_hex(c["decoded"]);
    text_decodes.check(tok.decode(ids), want, show(ids) + " -> '" + tok.decode(ids) + "' want '" + want + "'");
  }
  for (const auto& r : reference_["random_ids"]) {
    const auto ids = r["ids"].get<std::vector<int64_t>>();
    skip.check(tok.decode(ids, true), from_hex(r["skip"]), show(ids) + " -> '" + tok.decode(ids, true) + "'");
    keep.check(tok.decode(ids, false), from_hex(r["keep"]), show(ids) + " -> '" + tok.decode(ids, false) + "'");
  }
  text_decodes.expect_none("decode of the corpus' ids");
  skip.expect_none("random ids, skip_special_tokens=True");
  keep.expect_none("random ids, skip_special_tokens=False");
}

INSTANTIATE_TEST_SUITE_P(Files, HfTokenizerReference,
                         ::testing::Values("cl100k", "llama3", "qwen2", "gpt2", "sp_llama2_style", "sp_metaspace"),
                         [](const auto& info) { return std::string(info.param); });

// Byte-level files without a normalizer give back exactly the text (as Python
// reads ill-formed UTF-8), and tiktoken splits as HF does.
class ByteLevelRoundTrip : public HfTokenizerReference {};

TEST_P(ByteLevelRoundTrip, DecodeOfEncodeIsTheText) {
  const Tokenizer tok = Tokenizer::load(folder_ / "tokenizer.json");
  Mismatches round_trip;
  for (const auto& c : reference_["cases"]) {
    const std::string text = from_hex(c["text"]);
    const auto back = tok.decode(tok.encode(from_hex(c["hex"]), false));
    round_trip.check(back, text, "'" + text + "' -> '" + back + "'");
  }
  round_trip.expect_none("decode(encode(s)) == s");
}

INSTANTIATE_TEST_SUITE_P(Files, ByteLevelRoundTrip, ::testing::Values("cl100k", "llama3", "gpt2"),
                         [](const auto& info) { return std::string(info.param); });

// The files built from tiktoken's own ranks and patterns.
class TiktokenReference : public HfTokenizerReference {};

TEST_P(TiktokenReference, EncodesAsTiktoken) {
  const Tokenizer tok = Tokenizer::load(folder_ / "tokenizer.json");
  Mismatches ordinary, specials;
  for (const auto& c : reference_["cases"]) {
    const std::string text = from_hex(c["hex"]);
    ordinary.check(tok.encode(text, false), c["tiktoken"].get<std::vector<int64_t>>(), "encode_ordinary " + c["text"].get<std::string>());
    specials.check(tok.encode_with_specials(text), c["tiktoken_specials"].get<std::vector<int64_t>>(),
                   "allowed_special=all " + c["text"].get<std::string>());
  }
  ordinary.expect_none("tiktoken encode_ordinary");
  specials.expect_none("tiktoken encode(allowed_special=\"all\")");
}

INSTANTIATE_TEST_SUITE_P(Files, TiktokenReference, ::testing::Values("cl100k", "gpt2"),
                         [](const auto& info) { return std::string(info.param); });

}  // namespace
