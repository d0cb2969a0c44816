#include <gtest/gtest.h>

#include "support.hpp"
#include "t2/tokenizer/tokenizer.hpp"

using t2::tokenizer::StreamDecoder;
using t2::tokenizer::Tokenizer;

namespace {

bool is_valid_utf8(const std::string& s) {
  size_t i = 0;
  while (i < s.size()) {
    const auto c = static_cast<unsigned char>(s[i]);
    const size_t n = c < 0x80 ? 1 : (c >> 5) == 0x6 ? 2 : (c >> 4) == 0xE ? 3 : (c >> 3) == 0x1E ? 4 : 0;
    if (n == 0 || i + n > s.size()) return false;
    for (size_t k = 1; k < n; ++k) {
      if ((static_cast<unsigned char>(s[i + k]) >> 6) != 0x2) return false;
    }
    i += n;
  }
  return true;
}

}  // namespace

TEST(Tokenizer, Llama2HelloWorld) {
  const auto path = t2::testing::models_dir() / "llama2-tokenizer" / "tokenizer.model";
  T2_REQUIRE_PATH(path);
  const Tokenizer tok = Tokenizer::load(path);
  EXPECT_EQ(tok.vocab_size(), 32000);
  EXPECT_EQ(tok.encode("Hello world", false), (std::vector<int64_t>{15043, 3186}));
  EXPECT_EQ(tok.encode("Hello world", true), (std::vector<int64_t>{1, 15043, 3186}));
  EXPECT_EQ(tok.decode({1, 15043, 3186, 2}), "Hello world");
}

TEST(Tokenizer, RoundTripsEmojiAndRareBytes) {
  for (const char* model : {"llama2-tokenizer", "stories260K"}) {
    const auto path = t2::testing::models_dir() / model / "tokenizer.model";
    T2_REQUIRE_PATH(path);
    const Tokenizer tok = Tokenizer::load(path);
    for (const std::string text : {"Grüße, 世界! 👩‍🚀🎉", "tab\tand\nnewline", "ǅ ∮ ₿ \xF0\x9F\xA6\x84 end"}) {
      EXPECT_EQ(tok.decode(tok.encode(text, true)), text) << model;
    }
  }
}

TEST(Tokenizer, Stories260KByteFallbackAndWhitespace) {
  const auto path = t2::testing::stories_dir();
  T2_REQUIRE_PATH(path);
  const Tokenizer tok = Tokenizer::load(path);  // a folder works too
  EXPECT_EQ(tok.vocab_size(), 512);
  // 512 pieces cannot hold "世": it falls back to its three UTF-8 bytes.
  const auto ids = tok.encode("世", false);
  ASSERT_GE(ids.size(), 3u);
  EXPECT_EQ(tok.piece(ids[ids.size() - 3]), "<0xE4>");
  // remove_extra_whitespaces: leading, trailing and repeated spaces collapse.
  EXPECT_EQ(tok.encode("  Once   upon a  time ", false), tok.encode("Once upon a time", false));
  EXPECT_EQ(tok.decode(tok.encode("  Once   upon ", false)), "Once upon");
}

TEST(StreamDecoder, NeverEmitsHalfACharacterAndConcatenatesToDecode) {
  const auto path = t2::testing::stories_dir();
  T2_REQUIRE_PATH(path);
  const Tokenizer tok = Tokenizer::load(path);
  const std::string text = "Lily saw 🐶 and said: 世界, très bien!";
  const auto ids = tok.encode(text, true);
  StreamDecoder decoder(tok);
  std::string streamed;
  for (const int64_t id : ids) {
    const std::string piece = decoder.push(id);
    EXPECT_TRUE(is_valid_utf8(piece)) << "half a character after token " << id;
    streamed += piece;
  }
  streamed += decoder.flush();
  EXPECT_EQ(streamed, tok.decode(ids));
}

TEST(StreamDecoder, KeepsTheSpaceAfterAPromptContext) {
  const auto path = t2::testing::stories_dir();
  T2_REQUIRE_PATH(path);
  const Tokenizer tok = Tokenizer::load(path);
  const auto prompt = tok.encode("Once upon a", true);
  const auto full = tok.encode("Once upon a time", true);
  ASSERT_GT(full.size(), prompt.size());
  StreamDecoder decoder(tok, prompt);
  std::string continuation;
  for (size_t i = prompt.size(); i < full.size(); ++i) continuation += decoder.push(full[i]);
  continuation += decoder.flush();
  EXPECT_EQ(continuation, " time");
}
