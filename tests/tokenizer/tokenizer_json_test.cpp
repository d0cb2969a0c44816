// The pieces of t2's tokenizer.json support that the HF reference corpus does
// not single out: how split patterns are read, ill-formed UTF-8, refusals.
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include <unistd.h>

#include <gtest/gtest.h>

#include "t2/common/errors.hpp"
#include "t2/tokenizer/chat_template.hpp"
#include "t2/tokenizer/tokenizer.hpp"
#include "unicode_regex.hpp"
#include "utf8.hpp"

namespace {

using t2::tokenizer::UnicodeRegex;

std::vector<std::string> matches(const std::string& pattern, const std::string& text) {
  std::vector<std::string> out;
  for (const auto& m : UnicodeRegex(pattern).find_all(text)) out.push_back(text.substr(m.begin, m.end - m.begin));
  return out;
}

std::filesystem::path fresh_dir(const std::string& name) {
  const auto dir = std::filesystem::temp_directory_path() / ("t2-tokenizer-json-" + name + "-" + std::to_string(::getpid()));
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  return dir;
}

TEST(SplitPatterns, IntervalThenPlusRepeatsAsInOniguruma) {
  // HF tokenizers (Oniguruma) reads X{1,3}+ as (?:X{1,3})+: one run of digits.
  EXPECT_EQ(matches(R"(\p{N}{1,3}+|\s+|\p{L}+)", "1234567890 ab 12"), (std::vector<std::string>{"1234567890", " ", "ab", " ", "12"}));
  EXPECT_EQ(matches(R"(\p{N}{1,3})", "12345"), (std::vector<std::string>{"123", "45"}));
}

TEST(SplitPatterns, WhitespaceIncludesNextLine) {
  EXPECT_EQ(matches(R"(\s+|\S+)", "a\xC2\x85" "b"), (std::vector<std::string>{"a", "\xC2\x85", "b"}));
  EXPECT_EQ(matches(R"([^\s\p{L}]+|\p{L}+|\s+)", "x\xC2\x85!"), (std::vector<std::string>{"x", "\xC2\x85", "!"}));
}

TEST(Utf8, IllFormedBytesBecomeOneReplacementPerMaximalSubpart) {
  const std::string fffd = "\xEF\xBF\xBD";
  EXPECT_EQ(t2::tokenizer::utf8::lossy("\xE2\x82" "A"), fffd + "A");     // a truncated sequence is one U+FFFD
  EXPECT_EQ(t2::tokenizer::utf8::lossy("\xF0\x80"), fffd + fffd);         // F0 80 is no prefix of a character
  EXPECT_EQ(t2::tokenizer::utf8::lossy("\xED\xA0\x80"), fffd + fffd + fffd);  // surrogates are ill-formed
  EXPECT_EQ(t2::tokenizer::utf8::lossy("ok \xC3\xA9"), "ok \xC3\xA9");
}

TEST(TokenizerJson, RefusesWhatItDoesNotImplementByName) {
  const auto dir = fresh_dir("wordpiece");
  std::ofstream(dir / "tokenizer.json") << R"({"model": {"type": "WordPiece", "vocab": {"a": 0}}})";
  try {
    t2::tokenizer::Tokenizer::load(dir);
    FAIL() << "loaded a WordPiece model";
  } catch (const t2::LoadError& e) {
    EXPECT_NE(std::string(e.what()).find("WordPiece"), std::string::npos) << e.what();
  }
  std::ofstream(dir / "tokenizer.json") << "{not json";
  EXPECT_THROW(t2::tokenizer::Tokenizer::load(dir), t2::LoadError);
  EXPECT_THROW(t2::tokenizer::Tokenizer::load(fresh_dir("empty")), t2::LoadError);
}

TEST(TokenizerJson, BothMergeFormatsAndOutOfRangeIds) {
  for (const char* merges : {R"(["a b", "ab c"])", R"([["a", "b"], ["ab", "c"]])"}) {
    const auto dir = fresh_dir("merges");
    std::ofstream(dir / "tokenizer.json") << R"({"model": {"type": "BPE", "vocab": {"a": 0, "b": 1, "c": 2, "ab": 3, "abc": 4}, "merges": )"
                                          << merges << "}}";
    const auto tok = t2::tokenizer::Tokenizer::load(dir);
    EXPECT_EQ(tok.encode("abcab", false), (std::vector<int64_t>{4, 3})) << merges;
    EXPECT_THROW(tok.decode({5}), t2::InvalidArgument);
  }
}

TEST(ChatTemplateDetection, UnknownTemplateNamesTheFlag) {
  const auto dir = fresh_dir("template");
  std::ofstream(dir / "tokenizer_config.json") << R"({"chat_template": "{% for m in messages %}### {{ m.content }}{% endfor %}"})";
  try {
    t2::tokenizer::detect_chat_format(dir);
    FAIL() << "an unknown template was accepted";
  } catch (const t2::LoadError& e) {
    EXPECT_NE(std::string(e.what()).find("--chat-template"), std::string::npos) << e.what();
  }
  std::ofstream(dir / "chat_template.jinja") << "{{ '<|im_start|>' }}You are a helpful assistant.";
  EXPECT_EQ(t2::tokenizer::detect_chat_format(dir), t2::tokenizer::ChatFormat::kQwen2);
}

}  // namespace
