// Images through the real server (tests/reference/llava_reference.py writes a
// tiny random LLaVA-NeXT with stories260K's tokenizer, PNG and JPEG files, and
// HF's processor output for them): a chat with an image generates exactly what
// the engine generates from HF's pixel values, streamed or not, batched with
// text requests or alone; every kind of bad image is a 400 naming its content
// part, and the server stays up. Training and evaluation take task records
// with images, and score them as the engine generates.
#include <ATen/ATen.h>
#include <c10/core/InferenceMode.h>
#include <gtest/gtest.h>

#include <httplib.h>

#include <cmath>
#include <fstream>
#include <future>
#include <thread>
#include <sstream>

#include "server_process.hpp"
#include "support.hpp"
#include "t2/engine/engine.hpp"
#include "t2/model/safetensors.hpp"
#include "t2/model/transformer.hpp"
#include "t2/server/images.hpp"
#include "t2/tokenizer/chat_template.hpp"
#include "t2/train/model_prompt.hpp"
#include "t2/train/policy.hpp"
#include "t2/vision/llava_next.hpp"

namespace {

using nlohmann::json;

const char* const kQuestion = "What is in the picture?";
constexpr int kMaxTokens = 12;

std::filesystem::path llava_dir() { return t2::testing::reference_dir() / "llava"; }
std::filesystem::path served_model() { return llava_dir() / "served"; }

std::string read_file(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

std::string base64(const std::string& bytes) {
  static const char* kAlphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  std::string out;
  size_t i = 0;
  for (; i + 2 < bytes.size(); i += 3) {
    const uint32_t v = (static_cast<uint8_t>(bytes[i]) << 16) | (static_cast<uint8_t>(bytes[i + 1]) << 8) | static_cast<uint8_t>(bytes[i + 2]);
    for (int k = 3; k >= 0; --k) out += kAlphabet[(v >> (6 * k)) & 63];
  }
  if (i < bytes.size()) {
    uint32_t v = static_cast<uint8_t>(bytes[i]) << 16;
    if (i + 1 < bytes.size()) v |= static_cast<uint8_t>(bytes[i + 1]) << 8;
    out += kAlphabet[(v >> 18) & 63];
    out += kAlphabet[(v >> 12) & 63];
    out += i + 1 < bytes.size() ? kAlphabet[(v >> 6) & 63] : '=';
    out += '=';
  }
  return out;
}

json image_part(const std::string& url) { return {{"type", "image_url"}, {"image_url", {{"url", url}}}}; }
json data_url_part(const std::string& file, const std::string& mime) {
  return image_part("data:" + mime + ";base64," + base64(read_file(llava_dir() / "images" / file)));
}

json image_chat(const json& image, bool stream = false) {
  return {{"messages", {{{"role", "user"}, {"content", {{{"type", "text"}, {"text", kQuestion}}, image}}}}},
          {"max_tokens", kMaxTokens}, {"temperature", 0}, {"stream", stream}};
}

// The served checkpoint loaded in-process (float32, CPU): what the engine and training run.
struct ServedParts {
  t2::model::Transformer model = t2::model::Transformer::load(served_model(), {});
  t2::vision::LlavaNext vision = t2::vision::LlavaNext::load(served_model(), {});
  t2::vision::ImageProcessor processor{t2::vision::ProcessorConfig::from_model_dir(served_model())};
  t2::tokenizer::Tokenizer tok = t2::tokenizer::Tokenizer::load(served_model());
  t2::train::Vision parts{vision, processor};

  // The question about the fixture's photos, as a task record with images becomes.
  t2::train::ModelPrompt question_about(const std::vector<std::string>& photos) const {
    t2::train::Example example;
    example.prompt = kQuestion;
    for (const auto& photo : photos) example.images.push_back(llava_dir() / "images" / photo);
    return t2::train::model_prompt(tok, example, &parts);
  }
};

class VisionServer : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    if (!std::filesystem::exists(served_model() / "config.json")) return;
    server_ = std::make_unique<t2::testing::ServerProcess>(std::vector<std::string>{
        "--model", served_model().string(), "--experts-dir", t2::testing::fresh_dir("vision-experts").string(),
        "--max-batch", "4", "--max-step-tokens", "64", "--max-image-pixels", "1000000", "--dispatch-template",
        std::string(T2_SOURCE_DIR) + "/configs/dispatch/prompt.txt"});
  }
  static void TearDownTestSuite() { server_.reset(); }
  void SetUp() override { ASSERT_TRUE(server_) << "run the llava_reference fixture"; }

  static httplib::Result post(const json& body) {
    httplib::Client c("127.0.0.1", server_->port());
    c.set_read_timeout(60, 0);
    return c.Post("/v1/chat/completions", body.dump(), "application/json");
  }
  static json ok(const json& body) {
    const auto r = post(body);
    EXPECT_TRUE(r);
    if (!r) return json();
    EXPECT_EQ(r->status, 200) << r->body;
    return json::parse(r->body);
  }

  // What the engine generates for the chat from HF's pixel values of `which` ("png" or "jpg").
  static std::pair<std::string, int64_t> engine_reference(const std::string& which) {
    c10::InferenceMode guard;
    const ServedParts served;
    const auto& [model, vision, processor, tok, parts] = served;
    const auto reference = t2::model::SafetensorsFile::open(llava_dir() / "served_pixels.safetensors");
    const at::Tensor sizes = reference.find("image_sizes_" + which)->to_tensor();
    t2::vision::PromptImage image;
    image.pixel_values = reference.find("pixel_values_" + which)->to_tensor().to(at::kFloat);
    image.height = sizes[0].item<int64_t>();
    image.width = sizes[1].item<int64_t>();
    std::vector<t2::vision::PromptImage> images{image};
    const auto prompt = t2::tokenizer::encode_chat(
        tok, t2::tokenizer::render_chat(t2::tokenizer::ChatFormat::kPlain, {{"user", kQuestion, 1}}), vision.image_token_id());
    t2::engine::GenerationRequest request;
    request.prompt = t2::vision::expand_image_tokens(vision, prompt, images);
    request.images = std::move(images);
    request.sampling.temperature = 0;
    request.max_tokens = kMaxTokens;
    const auto prompt_tokens = static_cast<int64_t>(request.prompt.size());
    t2::engine::Engine engine(model, tok, {tok.eos_id()}, {1, 0, 64}, nullptr, &vision);
    engine.add(std::move(request));
    std::string text;
    while (engine.active() > 0) {
      for (const auto& event : engine.step().tokens) text += event.text;
    }
    return {text, prompt_tokens};
  }

  static std::unique_ptr<t2::testing::ServerProcess> server_;
};
std::unique_ptr<t2::testing::ServerProcess> VisionServer::server_;

}  // namespace

TEST_F(VisionServer, PngAndJpegChatsGenerateWhatTheEngineDoesFromHfPixels) {
  for (const auto& [which, mime] : {std::pair<std::string, std::string>{"png", "image/png"}, {"jpg", "image/jpeg"}}) {
    const auto [want, prompt_tokens] = engine_reference(which);
    const json reply = ok(image_chat(data_url_part("photo." + which, mime)));
    EXPECT_EQ(reply["choices"][0]["message"]["content"], want) << which;
    EXPECT_EQ(reply["usage"]["prompt_tokens"], prompt_tokens) << which;
  }
}

TEST_F(VisionServer, StreamingGivesTheSameText) {
  const json plain = ok(image_chat(data_url_part("photo.png", "image/png")));
  const auto r = post(image_chat(data_url_part("photo.png", "image/png"), /*stream=*/true));
  ASSERT_TRUE(r);
  ASSERT_EQ(r->status, 200) << r->body;
  std::string streamed;
  std::istringstream lines(r->body);
  for (std::string line; std::getline(lines, line);) {
    if (line.rfind("data: {", 0) != 0) continue;
    const json event = json::parse(line.substr(6));
    if (!event["choices"].empty() && event["choices"][0]["delta"].contains("content")) {
      streamed += event["choices"][0]["delta"]["content"].get<std::string>();
    }
  }
  EXPECT_EQ(streamed, plain["choices"][0]["message"]["content"]);
}

TEST_F(VisionServer, ImageRequestsBatchWithTextRequestsAndKeepTheirAnswers) {
  const json alone = ok(image_chat(data_url_part("photo.png", "image/png")));
  const json text_chat = {{"messages", {{{"role", "user"}, {"content", "Tell me a story."}}}}, {"max_tokens", 40}, {"temperature", 0}};
  const json text_alone = ok(text_chat);
  // Three text streams and an image request at once, in a 64-token step budget:
  // the image's encoder work and prefill share steps with the text decodes.
  std::vector<std::future<json>> texts;
  for (int i = 0; i < 3; ++i) texts.push_back(std::async(std::launch::async, [&] { return ok(text_chat); }));
  const json image = ok(image_chat(data_url_part("photo.png", "image/png")));
  EXPECT_EQ(image["choices"][0]["message"]["content"], alone["choices"][0]["message"]["content"]);
  for (auto& t : texts) EXPECT_EQ(t.get()["choices"][0]["message"]["content"], text_alone["choices"][0]["message"]["content"]);
}

TEST_F(VisionServer, TheImageChangesTheAnswer) {
  const auto first_logprob = [&](const json& content) {
    json body = {{"messages", {{{"role", "user"}, {"content", content}}}}, {"max_tokens", 1}, {"logprobs", true}, {"temperature", 0}};
    return ok(body)["choices"][0]["logprobs"]["content"][0]["logprob"].get<double>();
  };
  const json text = {{"type", "text"}, {"text", kQuestion}};
  const double png = first_logprob(json::array({text, data_url_part("photo.png", "image/png")}));
  const double jpg = first_logprob(json::array({text, data_url_part("photo.jpg", "image/jpeg")}));
  const double none = first_logprob(json::array({text}));
  EXPECT_NE(png, jpg);
  EXPECT_NE(png, none);
}

TEST_F(VisionServer, ModelsListSaysItTakesImages) {
  httplib::Client c("127.0.0.1", server_->port());
  const auto r = c.Get("/v1/models");
  ASSERT_TRUE(r);
  const json models = json::parse(r->body);
  EXPECT_EQ(models["data"][0]["input_modalities"], json::array({"text", "image"}));
}

TEST_F(VisionServer, EveryBadImageIsA400NamingItsPartAndTheServerStaysUp) {
  const std::string png = read_file(llava_dir() / "images" / "photo.png");
  const std::string jpg = read_file(llava_dir() / "images" / "photo.jpg");
  const std::vector<std::pair<json, std::string>> cases = {
      {image_part("data:image/png;base64," + base64(png.substr(0, png.size() / 2))), "PNG"},
      {image_part("data:image/jpeg;base64," + base64(jpg.substr(0, jpg.size() / 2))), "JPEG"},
      {image_part("data:image/png;base64," + base64("GIF89a" + std::string(64, '\0'))), "GIF"},
      {image_part("data:image/png;base64," + base64(std::string(200, 'x'))), "not a PNG or JPEG"},
      {data_url_part("bomb.png", "image/png"), "limit"},
      {image_part("data:image/png;base64,!!!!"), "base64"},
      {image_part("data:image/png,raw"), "base64"},
      {image_part("http://169.254.169.254/latest/meta-data/"), "not fetched"},
      {image_part("file:///etc/passwd"), "not fetched"},
  };
  for (const auto& [part, expected] : cases) {
    const auto r = post(image_chat(part));
    ASSERT_TRUE(r);
    EXPECT_EQ(r->status, 400) << r->body;
    const json error = json::parse(r->body)["error"];
    EXPECT_EQ(error["param"], "messages[0].content[1]") << r->body;
    EXPECT_NE(error["message"].get<std::string>().find(expected), std::string::npos) << r->body;
  }
  httplib::Client c("127.0.0.1", server_->port());
  const auto health = c.Get("/health");
  ASSERT_TRUE(health);
  EXPECT_EQ(health->status, 200);
  EXPECT_FALSE(ok(image_chat(data_url_part("photo.png", "image/png")))["choices"][0]["message"]["content"].get<std::string>().empty());
}

TEST(VisionRemoteImages, FetchedOnlyFromAllowedHostsWithoutRedirectsAndUnderTheSizeLimit) {
  T2_REQUIRE_PATH(served_model() / "config.json");
  const std::string png = read_file(llava_dir() / "images" / "photo.png");
  // An image host on 127.0.0.1, stopped and joined however the test ends.
  struct ImageHost {
    httplib::Server http;
    std::thread thread;
    int port = 0;
    explicit ImageHost(const std::string& png) {
      http.Get("/photo.png", [png](const httplib::Request&, httplib::Response& res) { res.set_content(png, "image/png"); });
      http.Get("/moved.png", [](const httplib::Request&, httplib::Response& res) { res.set_redirect("/photo.png"); });
      http.Get("/huge.png", [png](const httplib::Request&, httplib::Response& res) {
        res.set_content(png + std::string(4096, 'x'), "image/png");
      });
      port = http.bind_to_any_port("127.0.0.1");
      thread = std::thread([this] { http.listen_after_bind(); });
      while (!http.is_running()) std::this_thread::yield();
    }
    ~ImageHost() {
      http.stop();
      thread.join();
    }
  } images(png);
  const int port = images.port;
  t2::testing::ServerProcess server({"--model", served_model().string(), "--experts-dir", t2::testing::fresh_dir("remote-experts").string(),
                                     "--targets", "none", "--image-url-host", "127.0.0.1", "--max-image-fetch-bytes",
                                     std::to_string(png.size() + 1024), "--dispatch-template",
                                     std::string(T2_SOURCE_DIR) + "/configs/dispatch/prompt.txt"});
  const std::string base = "http://127.0.0.1:" + std::to_string(port);
  httplib::Client c("127.0.0.1", server.port());
  c.set_read_timeout(60, 0);
  const auto answer = [&](const json& part) { return c.Post("/v1/chat/completions", image_chat(part).dump(), "application/json"); };
  const auto fetched = answer(image_part(base + "/photo.png"));
  const auto inline_data = answer(data_url_part("photo.png", "image/png"));
  ASSERT_TRUE(fetched && inline_data);
  ASSERT_EQ(fetched->status, 200) << fetched->body;
  EXPECT_EQ(json::parse(fetched->body)["choices"][0]["message"]["content"], json::parse(inline_data->body)["choices"][0]["message"]["content"]);
  const auto moved = answer(image_part(base + "/moved.png"));
  ASSERT_TRUE(moved);
  EXPECT_EQ(moved->status, 400);
  EXPECT_NE(moved->body.find("HTTP 302"), std::string::npos) << moved->body;
  const auto huge = answer(image_part(base + "/huge.png"));
  ASSERT_TRUE(huge);
  EXPECT_EQ(huge->status, 400);
  EXPECT_NE(huge->body.find("larger than"), std::string::npos) << huge->body;
  const auto other_host = answer(image_part("http://localhost:" + std::to_string(port) + "/photo.png"));
  ASSERT_TRUE(other_host);
  EXPECT_EQ(other_host->status, 400);
  EXPECT_NE(other_host->body.find("not in image_url_hosts"), std::string::npos) << other_host->body;
}

TEST(VisionRefusals, ATextModelRefusesImages) {
  T2_REQUIRE_PATH(t2::testing::stories_dir());
  t2::testing::ServerProcess server({"--model", t2::testing::stories_dir().string(), "--experts-dir",
                                     t2::testing::fresh_dir("text-experts").string(), "--dispatch-template",
                                     std::string(T2_SOURCE_DIR) + "/configs/dispatch/prompt.txt"});
  httplib::Client c("127.0.0.1", server.port());
  const auto r = c.Post("/v1/chat/completions", image_chat(image_part("data:image/png;base64,AAAA")).dump(), "application/json");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 400);
  EXPECT_NE(r->body.find("does not accept images"), std::string::npos) << r->body;
  const auto models = c.Get("/v1/models");
  ASSERT_TRUE(models);
  EXPECT_EQ(json::parse(models->body)["data"][0]["input_modalities"], json::array({"text"}));
}

namespace {

// A task whose records carry the fixture's images; `with_images` false drops them.
std::filesystem::path image_task(bool with_images) {
  const auto dir = t2::testing::fresh_dir(with_images ? "image-task" : "text-task");
  std::ofstream out(dir / "task.jsonl");
  const std::vector<std::string> photos = {"photo.png", "photo.jpg"};
  for (int i = 0; i < 10; ++i) {
    json record = {{"prompt", "What is in picture " + std::to_string(i) + "?"}, {"answer", "dog"}};
    if (with_images) record["images"] = {(llava_dir() / "images" / photos[static_cast<size_t>(i % 2)]).string()};
    out << record.dump() << "\n";
  }
  return dir / "task.jsonl";
}

}  // namespace

TEST(VisionTraining, TrainingScoresAnImagePromptAsTheEngineGeneratesFromIt) {
  T2_REQUIRE_PATH(served_model() / "config.json");
  c10::InferenceMode guard;
  const ServedParts served;
  const auto& [model, vision, processor, tok, parts] = served;
  const t2::train::ModelPrompt prompt = served.question_about({"photo.png"});
  ASSERT_EQ(prompt.images.size(), 1u);
  EXPECT_EQ(prompt.images[0].length, vision.feature_count(30, 48));

  t2::engine::GenerationRequest request;
  request.prompt = prompt.tokens;
  request.images = prompt.images;
  request.sampling.temperature = 0;
  request.max_tokens = 8;
  request.ignore_eos = true;
  t2::engine::Engine engine(model, tok, {tok.eos_id()}, {1, 0, 64}, nullptr, &vision);
  engine.add(std::move(request));
  std::vector<int64_t> tokens;
  double logprob = 0;
  while (engine.active() > 0) {
    for (const auto& event : engine.step().tokens) {
      tokens.push_back(event.token);
      logprob += event.logprob;
    }
  }
  // Training's forward (forward_full, the image's features in place) gives the numbers the engine
  // sampled from. The engine normalises over the ids the tokenizer has; training over the whole vocabulary.
  std::vector<int64_t> sequence = prompt.tokens;
  sequence.insert(sequence.end(), tokens.begin(), tokens.end());
  const auto T = static_cast<int64_t>(sequence.size());
  const at::Tensor embeddings = t2::train::embeddings_with_images(model, vision, sequence, prompt.images).unsqueeze(0);
  const at::Tensor logits = model.forward_full(at::tensor(sequence, at::kLong).view({1, T}), {T}, model.base_projections(), embeddings)[0];
  const at::Tensor sampled_over = logits.narrow(1, 0, tok.vocab_size()).log_softmax(-1);
  const at::Tensor whole = logits.log_softmax(-1);
  double engine_view = 0, whole_view = 0;
  const auto first = static_cast<int64_t>(prompt.tokens.size());
  for (int64_t t = 0; t < static_cast<int64_t>(tokens.size()); ++t) {
    engine_view += sampled_over[first + t - 1][tokens[static_cast<size_t>(t)]].item<double>();
    whole_view += whole[first + t - 1][tokens[static_cast<size_t>(t)]].item<double>();
  }
  EXPECT_NEAR(engine_view, logprob, 1e-3);
  const auto scores = t2::train::score_completions(model, model.base_projections(), {prompt}, {tokens}, nullptr, &vision);
  EXPECT_NEAR(scores.log_likelihood.item<double>(), whole_view, 1e-4);
  // Without the image the same completion scores differently.
  const t2::train::ModelPrompt without_image{tok.encode(kQuestion, true), {}};
  const auto text_only = t2::train::score_completions(model, model.base_projections(), {without_image}, {tokens}, nullptr, &vision);
  EXPECT_GT(std::abs(text_only.log_likelihood.item<double>() - whole_view), 1e-2);
}

TEST(VisionTraining, EvalAndTrainTakeTasksWithImages) {
  T2_REQUIRE_PATH(served_model() / "config.json");
  const std::string model = " --model " + served_model().string() + " --device cpu --max-tokens 4 --cache-dir " +
                            t2::testing::fresh_dir("image-cache").string();
  const auto task = image_task(true);
  const auto with_images = t2::testing::run_t2("eval --task " + task.string() + " --split train" + model);
  ASSERT_EQ(with_images.status, 0) << with_images.err;
  const json report = json::parse(with_images.out);
  EXPECT_EQ(report["total"], 8);
  const auto text_only = t2::testing::run_t2("eval --task " + image_task(false).string() + " --split train" + model);
  ASSERT_EQ(text_only.status, 0) << text_only.err;
  // The images reach the model: the completions (and their perplexity) differ.
  EXPECT_NE(report["perplexity"], json::parse(text_only.out)["perplexity"]);

  const auto out = t2::testing::fresh_dir("image-expert") / "pictures";
  const auto trained = t2::testing::run_t2("train --task " + task.string() + " --out " + out.string() +
                                           " --iters 2 --batch-size 2 --eval-every 1" + model);
  ASSERT_EQ(trained.status, 0) << trained.err;
  EXPECT_TRUE(std::filesystem::exists(out / "expert.json"));
  std::ifstream log(out / "train_log.jsonl");
  int steps = 0;
  for (std::string line; std::getline(log, line);) {
    const json entry = json::parse(line);
    if (!entry.contains("loss")) continue;
    EXPECT_TRUE(std::isfinite(entry["loss"].get<double>())) << line;
    ++steps;
  }
  EXPECT_EQ(steps, 2);
  // The expert adapts the VLM's language model; evaluation runs under it.
  const auto adapted = t2::testing::run_t2("eval --task " + task.string() + " --split train --experts-dir " +
                                           out.parent_path().string() + " --expert pictures" + model);
  ASSERT_EQ(adapted.status, 0) << adapted.err;
  EXPECT_EQ(json::parse(adapted.out)["adaptation"], "pictures");
}

TEST(VisionTraining, ATextModelRefusesATaskWithImages) {
  T2_REQUIRE_PATH(t2::testing::stories_dir());
  const auto r = t2::testing::run_t2("eval --task " + image_task(true).string() + " --split train --model " +
                                     t2::testing::stories_dir().string() + " --device cpu --max-tokens 4");
  EXPECT_NE(r.status, 0);
  EXPECT_NE(r.err.find("does not accept them"), std::string::npos) << r.err;
}

TEST(VisionEngine, AnImageEncodesWithinTheStepBudgetWhileTextKeepsDecoding) {
  T2_REQUIRE_PATH(served_model() / "config.json");
  c10::InferenceMode guard;
  const ServedParts served;
  const auto& [model, vision, processor, tok, parts] = served;
  const t2::train::ModelPrompt prompt = served.question_about({"photo.png", "photo.jpg"});

  constexpr int64_t kBudget = 32;  // below one image's encoder tokens: each image gets a step of its own
  t2::engine::Engine engine(model, tok, {tok.eos_id()}, {2, 0, kBudget}, nullptr, &vision);
  t2::engine::GenerationRequest text;
  text.prompt = tok.encode("Once upon a time", true);
  text.sampling.temperature = 0;
  text.max_tokens = 200;
  text.ignore_eos = true;
  const auto decoding = engine.add(text);
  engine.step();  // its prompt
  t2::engine::GenerationRequest with_images;
  with_images.prompt = prompt.tokens;
  with_images.images = prompt.images;
  with_images.sampling.temperature = 0;
  with_images.max_tokens = 1;
  const auto image_request = engine.add(with_images);
  int64_t encoder_tokens = 0, steps = 0;
  std::vector<int64_t> encodes_per_step;
  for (bool answered = false; !answered; ++steps) {
    ASSERT_LT(steps, 200);
    const auto out = engine.step();
    int64_t decoded = 0;
    for (const auto& event : out.tokens) {
      decoded += event.sequence == decoding ? 1 : 0;
      answered = answered || event.sequence == image_request;
    }
    EXPECT_EQ(decoded, 1) << "step " << steps;  // the text stream never waits for the images
    EXPECT_LE(out.tokens_run, kBudget);
    if (out.encoder_tokens > 0) encodes_per_step.push_back(out.encoder_tokens);
    encoder_tokens += out.encoder_tokens;
  }
  const int64_t first = vision.encoder_tokens(prompt.images[0].pixel_values.size(0));
  const int64_t second = vision.encoder_tokens(prompt.images[1].pixel_values.size(0));
  EXPECT_GT(first, kBudget);
  EXPECT_EQ(encodes_per_step, (std::vector<int64_t>{first, second}));  // one image per step, each once
  EXPECT_EQ(encoder_tokens, first + second);
  EXPECT_GE(steps, static_cast<int64_t>(prompt.tokens.size()) / (kBudget - 1));
}
