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
#include "t2/server/images.hpp"

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

TEST(OpenAiParsing, ImagePartsKeepTheirOrderAndNameTheirPlace) {
  const json image = {{"type", "image_url"}, {"image_url", {{"url", "data:image/png;base64,AAAA"}, {"detail", "high"}}}};
  const auto r = t2::server::parse_chat_request(
      {{"messages", {{{"role", "user"}, {"content", {{{"type", "text"}, {"text", "Compare "}}, image}}},
                     {{"role", "assistant"}, {"content", "ok"}},
                     {{"role", "user"}, {"content", {{{"type", "image_url"}, {"image_url", "https://x/y.png"}}, image}}}}}});
  ASSERT_EQ(r.images.size(), 3u);
  EXPECT_EQ(r.images[0].param, "messages[0].content[1]");
  EXPECT_EQ(r.images[1].url, "https://x/y.png");
  EXPECT_EQ(r.images[2].param, "messages[2].content[1]");
  EXPECT_EQ(r.messages[0].images, 1);
  EXPECT_EQ(r.messages[0].content, "Compare ");
  EXPECT_EQ(r.messages[1].images, 0);
  EXPECT_EQ(r.messages[2].images, 2);

  const auto user = [](const json& part) { return json{{"messages", {{{"role", "user"}, {"content", {part}}}}}}; };
  EXPECT_EQ(param_of(user({{"type", "image_url"}, {"image_url", {{"detail", "high"}}}}), true), "messages[0].content[0]");
  EXPECT_EQ(param_of(user({{"type", "image_url"}, {"image_url", {{"url", "data:,"}, {"detail", "max"}}}}), true), "messages[0].content[0]");
  EXPECT_EQ(param_of(user({{"type", "input_audio"}}), true), "messages[0].content[0]");
  EXPECT_EQ(param_of({{"messages", {{{"role", "system"}, {"content", {image}}}}}}, true), "messages[0].content[0]");
}

TEST(ImageParts, DataUrlsAreBase64AndRemoteUrlsNeedAnAllowedHost) {
  using t2::server::ImagePart;
  EXPECT_EQ(t2::server::decode_base64("aGVsbG8gd29ybGQ="), std::optional<std::string>("hello world"));
  EXPECT_EQ(t2::server::decode_base64("aGk"), std::optional<std::string>("hi"));
  EXPECT_EQ(t2::server::decode_base64("a"), std::nullopt);
  EXPECT_EQ(t2::server::decode_base64("aGk*"), std::nullopt);
  const t2::server::ImagePolicy policy;
  EXPECT_EQ(t2::server::image_bytes({"data:image/png;base64,aGk=", "p"}, policy), "hi");
  const auto refusal = [&](const std::string& url, const t2::server::ImagePolicy& with) {
    try {
      t2::server::image_bytes({url, "messages[0].content[2]"}, with);
    } catch (const ApiError& e) {
      EXPECT_EQ(e.status(), 400);
      EXPECT_EQ(e.body()["error"]["param"], "messages[0].content[2]");
      return std::string(e.what());
    }
    return std::string("accepted");
  };
  EXPECT_NE(refusal("data:image/png,rawbytes", policy).find("must be base64"), std::string::npos);
  EXPECT_NE(refusal("data:image/png;base64,@@@@", policy).find("malformed"), std::string::npos);
  EXPECT_NE(refusal("http://169.254.169.254/latest/meta-data", policy).find("not fetched by this server"), std::string::npos);
  t2::server::ImagePolicy allowing = policy;
  allowing.url_hosts = {"images.example.com"};
  EXPECT_NE(refusal("http://169.254.169.254/x.png", allowing).find("'169.254.169.254' (not in image_url_hosts)"), std::string::npos);
  EXPECT_NE(refusal("ftp://images.example.com/x.png", allowing).find("data: URL or an http(s) URL"), std::string::npos);
  EXPECT_NE(refusal("http://user@169.254.169.254/x.png", allowing).find("data: URL or an http(s) URL"), std::string::npos);
}

TEST(ServerConfig, FlagsBeatEnvironmentBeatFileBeatDefaults) {
  const auto dir = t2::testing::fresh_dir("config");
  std::ofstream(dir / "server.json") << R"({"port": 9000, "max_batch": 4, "dispatch": "prompt", "api_keys": ["a"], "cuda_graphs": false})";
  t2::server::ServerConfig c;
  EXPECT_EQ(c.port, 8080);
  c.apply_file(dir / "server.json");
  EXPECT_EQ(c.port, 9000);
  EXPECT_EQ(c.max_batch, 4);
  EXPECT_FALSE(c.cuda_graphs);
  setenv("T2_PORT", "9100", 1);
  setenv("T2_CUDA_GRAPHS", "true", 1);
  setenv("T2_API_KEY", "k1,k2", 1);
  c.apply_environment();
  unsetenv("T2_PORT");
  unsetenv("T2_API_KEY");
  unsetenv("T2_CUDA_GRAPHS");
  EXPECT_EQ(c.port, 9100);
  EXPECT_TRUE(c.cuda_graphs);
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

TEST(ChatTemplates, ImagesRenderBeforeTheirMessagesTextAsOnePlaceholderEach) {
  using t2::tokenizer::ChatFormat;
  t2::tokenizer::ChatMessage user{"user", " What is this? ", 2};
  const auto llama3 = t2::tokenizer::render_chat(ChatFormat::kLlama3, {user});
  const std::string head = "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\n";
  EXPECT_EQ(llama3.text, head + "\n\nWhat is this?<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n");
  EXPECT_EQ(llama3.images, (std::vector<size_t>{head.size(), head.size() + 1}));
  const auto plain = t2::tokenizer::render_chat(ChatFormat::kPlain, {{"user", "hi", 1}});
  EXPECT_EQ(plain.text, "User: \nhi\nAssistant:");
  EXPECT_EQ(plain.images, (std::vector<size_t>{6}));

  const auto tok = t2::tokenizer::Tokenizer::load(t2::testing::stories_dir());
  const int64_t image_token = 511;
  const auto ids = t2::tokenizer::encode_chat(tok, plain, image_token);
  // BOS, "User:" and its space, the image, then "\nhi\nAssistant:" tokenized on its own.
  const auto before = tok.encode("User: ", false);
  const auto after = tok.encode_with_specials("\nhi\nAssistant:", {{1, 3}});
  std::vector<int64_t> expected = {tok.bos_id()};
  expected.insert(expected.end(), before.begin(), before.end());
  expected.push_back(image_token);
  expected.insert(expected.end(), after.begin(), after.end());
  EXPECT_EQ(ids, expected);
  EXPECT_THROW(t2::tokenizer::encode_chat(tok, plain), t2::InvalidArgument);  // a text model has no image token
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
