// Unit tests of the server's parts: OpenAI request parsing, configuration
// precedence, Prometheus rendering, chat templates, key comparison.
#include <cstdlib>
#include <fstream>

#include <gtest/gtest.h>

#include "support.hpp"
#include "t2/server/auth.hpp"
#include "t2/server/config.hpp"
#include "t2/server/metrics.hpp"
#include "t2/server/openai.hpp"
#include "t2/tokenizer/chat_template.hpp"

using nlohmann::json;
using t2::server::ApiError;

namespace {

std::string param_of(const json& body, bool chat = false) {
  try {
    chat ? (void)t2::server::parse_chat_request(body) : (void)t2::server::parse_completion_request(body);
  } catch (const ApiError& e) {
    EXPECT_EQ(e.status(), 400);
    return e.body()["error"]["param"].is_null() ? "(null)" : e.body()["error"]["param"].get<std::string>();
  }
  return "";
}

}  // namespace

TEST(OpenAiParsing, CompletionFieldsAndPromptShapes) {
  const auto r = t2::server::parse_completion_request(
      {{"model", "m"}, {"prompt", {"a", "b"}}, {"max_tokens", 7}, {"temperature", 0.5}, {"top_p", 0.9}, {"n", 2},
       {"stop", "x"}, {"seed", 3}, {"stream", true}, {"stream_options", {{"include_usage", true}}}, {"logprobs", 2},
       {"echo", true}, {"presence_penalty", 0.1}, {"frequency_penalty", -0.1}, {"user", "u"}, {"expert", "e"},
       {"mixture", {{"a", 0.3}}}});
  EXPECT_EQ(r.text_prompts, (std::vector<std::string>{"a", "b"}));
  EXPECT_EQ(r.fields.max_tokens, 7);
  EXPECT_EQ(r.fields.n, 2);
  EXPECT_EQ(r.fields.stop, std::vector<std::string>{"x"});
  EXPECT_EQ(r.fields.seed, 3u);
  EXPECT_TRUE(r.fields.include_usage);
  EXPECT_EQ(r.fields.logprobs, 2);
  EXPECT_TRUE(r.echo);
  EXPECT_EQ(r.fields.expert, "e");
  EXPECT_EQ(r.fields.mixture.size(), 1u);
  EXPECT_EQ(t2::server::parse_completion_request({{"prompt", {1, 2, 3}}}).token_prompts.size(), 1u);
  EXPECT_EQ(t2::server::parse_completion_request({{"prompt", {{1, 2}, {3}}}}).token_prompts.size(), 2u);
  EXPECT_EQ(t2::server::parse_completion_request({{"prompt", "x"}, {"max_tokens", nullptr}}).fields.max_tokens, 16);
}

TEST(OpenAiParsing, EachBadFieldIsNamed) {
  EXPECT_EQ(param_of({{"prompt", 3}}), "prompt");
  EXPECT_EQ(param_of({{"prompt", "x"}, {"max_tokens", 0}}), "max_tokens");
  EXPECT_EQ(param_of({{"prompt", "x"}, {"max_tokens", 1.5}}), "max_tokens");
  EXPECT_EQ(param_of({{"prompt", "x"}, {"temperature", "hot"}}), "temperature");
  EXPECT_EQ(param_of({{"prompt", "x"}, {"top_p", 1.5}}), "top_p");
  EXPECT_EQ(param_of({{"prompt", "x"}, {"stop", {"a", "b", "c", "d", "e"}}}), "stop");
  EXPECT_EQ(param_of({{"prompt", "x"}, {"stream_options", {{"include_usage", true}}}}), "stream_options");
  EXPECT_EQ(param_of({{"prompt", "x"}, {"logprobs", 21}}), "logprobs");
  EXPECT_EQ(param_of({{"prompt", "x"}, {"mixture", {{"a", "lots"}}}}), "mixture");
  EXPECT_EQ(param_of({{"prompt", "x"}, {"stream", 1}}), "stream");
  EXPECT_EQ(param_of(json::array()), "(null)");
  EXPECT_EQ(param_of({{"messages", json::array()}}, true), "messages");
  EXPECT_EQ(param_of({{"messages", {{{"role", "user"}, {"content", 5}}}}}, true), "messages[0].content");
  EXPECT_EQ(param_of({{"messages", {{{"role", "user"}, {"content", "hi"}}}}, {"top_logprobs", 2}}, true), "top_logprobs");
  EXPECT_THROW(t2::server::parse_body("{oops"), ApiError);
}

TEST(OpenAiParsing, ChatContentParts) {
  const auto r = t2::server::parse_chat_request(
      {{"messages", {{{"role", "developer"}, {"content", "Be brief."}},
                     {{"role", "user"}, {"content", {{{"type", "text"}, {"text", "Hi "}}, {{"type", "text"}, {"text", "there"}}}}}}},
       {"logprobs", true}, {"top_logprobs", 3}});
  ASSERT_EQ(r.messages.size(), 2u);
  EXPECT_EQ(r.messages[0].role, "system");
  EXPECT_EQ(r.messages[1].content, "Hi there");
  EXPECT_EQ(r.fields.logprobs, 3);
}

TEST(ServerConfig, FlagsBeatEnvironmentBeatFileBeatDefaults) {
  const auto dir = t2::testing::fresh_dir("config");
  std::ofstream(dir / "server.json") << R"({"port": 9000, "max_batch": 4, "dispatch": "prompt", "api_keys": ["a"]})";
  t2::server::ServerConfig c;
  EXPECT_EQ(c.port, 8080);
  c.apply_file(dir / "server.json");
  EXPECT_EQ(c.port, 9000);
  EXPECT_EQ(c.max_batch, 4);
  setenv("T2_PORT", "9100", 1);
  setenv("T2_API_KEY", "k1,k2", 1);
  c.apply_environment();
  unsetenv("T2_PORT");
  unsetenv("T2_API_KEY");
  EXPECT_EQ(c.port, 9100);
  EXPECT_EQ(c.max_batch, 4);  // the file still rules where the environment is silent
  EXPECT_EQ(c.api_keys, (std::vector<std::string>{"k1", "k2"}));
  EXPECT_EQ(c.dispatch, "prompt");

  std::ofstream(dir / "bad.json") << R"({"prot": 1})";
  EXPECT_THROW(c.apply_file(dir / "bad.json"), t2::LoadError);
  std::ofstream(dir / "typed.json") << R"({"port": "eighty"})";
  EXPECT_THROW(c.apply_file(dir / "typed.json"), t2::LoadError);
  setenv("T2_MAX_BATCH", "many", 1);
  EXPECT_THROW(c.apply_environment(), t2::InvalidArgument);
  unsetenv("T2_MAX_BATCH");
  c.model_dir = "m";
  c.max_batch = 0;
  EXPECT_THROW(c.validate(), t2::InvalidArgument);

  std::ofstream(dir / "keys") << "# team keys\nsk-one\n\nsk-two\n";
  t2::server::ServerConfig k;
  k.api_key_file = (dir / "keys").string();
  EXPECT_EQ(k.resolved_api_keys(), (std::vector<std::string>{"sk-one", "sk-two"}));
}

TEST(Metrics, HistogramsAreCumulativeAndLabelsEscaped) {
  t2::server::Histogram h({0.1, 1});
  h.observe(0.05);
  h.observe(0.5);
  h.observe(5);
  std::string out;
  h.render(out, "x_seconds", "route=\"a\"");
  EXPECT_NE(out.find("x_seconds_bucket{route=\"a\",le=\"0.1\"} 1\n"), std::string::npos) << out;
  EXPECT_NE(out.find("x_seconds_bucket{route=\"a\",le=\"1\"} 2\n"), std::string::npos) << out;
  EXPECT_NE(out.find("x_seconds_bucket{route=\"a\",le=\"+Inf\"} 3\n"), std::string::npos) << out;
  EXPECT_NE(out.find("x_seconds_count{route=\"a\"} 3\n"), std::string::npos) << out;
  EXPECT_EQ(t2::server::escape_label("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
}

TEST(ChatTemplates, KnownFamilies) {
  const std::vector<t2::tokenizer::ChatMessage> m = {{"system", "S"}, {"user", "U"}, {"assistant", "A"}, {"user", "V"}};
  using t2::tokenizer::ChatFormat;
  EXPECT_EQ(t2::tokenizer::render_chat(ChatFormat::kLlama2, m).text,
            "<s>[INST] <<SYS>>\nS\n<</SYS>>\n\nU [/INST] A </s><s>[INST] V [/INST]");
  EXPECT_EQ(t2::tokenizer::render_chat(ChatFormat::kChatML, {{"user", "U"}}).text, "<|im_start|>user\nU<|im_end|>\n<|im_start|>assistant\n");
  EXPECT_EQ(t2::tokenizer::render_chat(ChatFormat::kLlama3, {{"user", "U"}}).text,
            "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nU<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n");
  EXPECT_EQ(t2::tokenizer::render_chat(ChatFormat::kZephyr, {{"user", "U"}}).text, "<|user|>\nU</s>\n<|assistant|>\n");
  EXPECT_EQ(t2::tokenizer::render_chat(ChatFormat::kMistral, {{"system", "S"}, {"user", "U"}}).text, "<s>[INST] S\n\nU [/INST]");
  EXPECT_EQ(t2::tokenizer::render_chat(ChatFormat::kPlain, {{"user", "U"}}).text, "User: U\nAssistant:");
  EXPECT_EQ(t2::tokenizer::parse_chat_format("chatml"), ChatFormat::kChatML);
  EXPECT_THROW(t2::tokenizer::parse_chat_format("jinja"), t2::InvalidArgument);

  const auto dir = t2::testing::fresh_dir("chat");
  std::ofstream(dir / "tokenizer_config.json") << R"({"chat_template": "{% for m in messages %}<|im_start|>{{ m.role }}{% endfor %}"})";
  EXPECT_EQ(t2::tokenizer::detect_chat_format(dir), ChatFormat::kChatML);
  EXPECT_EQ(t2::tokenizer::detect_chat_format(t2::testing::fresh_dir("none")), ChatFormat::kPlain);
}

TEST(ChatTemplates, SpecialPiecesBecomeControlTokens) {
  const auto path = t2::testing::models_dir() / "llama2-tokenizer" / "tokenizer.model";
  T2_REQUIRE_PATH(path);
  const auto tok = t2::tokenizer::Tokenizer::load(path);
  const auto ids = tok.encode_with_specials("<s>[INST] Hello world [/INST] Hi </s><s>");
  EXPECT_EQ(ids.front(), 1);
  EXPECT_EQ(ids.back(), 1);
  EXPECT_EQ(std::count(ids.begin(), ids.end(), 2), 1);
  EXPECT_EQ(tok.encode_with_specials("a <b> c"), tok.encode("a <b> c", false));  // unknown pieces stay text
}

TEST(ApiKeys, ConstantTimeComparison) {
  EXPECT_TRUE(t2::server::constant_time_equal("sk-abc", "sk-abc"));
  EXPECT_FALSE(t2::server::constant_time_equal("sk-abc", "sk-abd"));
  EXPECT_FALSE(t2::server::constant_time_equal("sk-abc", "sk-ab"));
  EXPECT_FALSE(t2::server::constant_time_equal("", ""));
}
