// OpenAI's request and response schemas (completions, chat completions,
// errors), parsed into typed requests with every field checked. t2's
// extensions: `expert` ("auto" | "none" | a name), `dispatch` (a strategy),
// `mixture` ({name: weight}), `top_k`, `ignore_eos` (as vLLM's).
#pragma once

#include <map>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "t2/common/errors.hpp"
#include "t2/tokenizer/chat_template.hpp"

namespace t2::server {

// An error as the API reports it: {"error": {"message", "type", "param", "code"}}.
class ApiError : public Error {
 public:
  ApiError(int status, std::string type, std::string message, std::string param = "", std::string code = "")
      : Error(std::move(message)), status_(status), type_(std::move(type)), param_(std::move(param)), code_(std::move(code)) {}
  int status() const { return status_; }
  nlohmann::json body() const;

  static ApiError bad_request(const std::string& param, const std::string& message);
  static ApiError not_found(const std::string& param, const std::string& message, const std::string& code);

 private:
  int status_;
  std::string type_;
  std::string param_;
  std::string code_;
};

// The fields completions and chat share.
struct GenerationFields {
  std::string model;
  int64_t max_tokens = 16;  // chat: until the context ends unless given
  bool max_tokens_given = false;
  double temperature = 1.0;
  double top_p = 1.0;
  int64_t top_k = 0;
  int n = 1;
  std::vector<std::string> stop;
  std::optional<uint64_t> seed;
  double presence_penalty = 0;
  double frequency_penalty = 0;
  int logprobs = -1;  // -1: none; else how many top tokens (completions: the number; chat: top_logprobs)
  bool stream = false;
  bool include_usage = false;
  std::string user;
  std::optional<std::string> expert;
  std::optional<std::string> dispatch;
  std::vector<std::pair<std::string, double>> mixture;
  bool ignore_eos = false;  // vLLM's extension: generate max_tokens whatever the model says (benchmarks)
};

struct CompletionRequest {
  GenerationFields fields;
  std::vector<std::string> text_prompts;           // prompt as a string or strings
  std::vector<std::vector<int64_t>> token_prompts;  // or as token ids
  bool echo = false;
};

// An image content part ({"type": "image_url"}), in the order the prompt renders them.
struct ImagePart {
  std::string url;    // a data: URL, or http(s) (fetched only from allowed hosts)
  std::string param;  // where it was, e.g. "messages[1].content[0]", for errors
};

struct ChatRequest {
  GenerationFields fields;
  std::vector<tokenizer::ChatMessage> messages;  // each counts its images
  std::vector<ImagePart> images;
};

// Throw ApiError (400) naming the offending field.
CompletionRequest parse_completion_request(const nlohmann::json& body);
ChatRequest parse_chat_request(const nlohmann::json& body);
// Parses the body text; malformed JSON is a 400 too.
nlohmann::json parse_body(const std::string& text);

}  // namespace t2::server
