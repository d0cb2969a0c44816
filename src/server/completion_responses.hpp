// The bodies completions and chat answer with, as types: what one choice
// produced, its logprobs in either API's shape, the envelope every body and
// stream chunk shares, usage, and t2's `t2` extension object. The JSON is
// OpenAI's schema plus `t2`; keys and values must not drift (clients parse them).
#pragma once

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "t2/dispatch/dispatcher.hpp"
#include "t2/tokenizer/tokenizer.hpp"

namespace t2::server {

// What one choice produced.
struct ChoiceResult {
  std::string text;
  std::vector<int64_t> tokens;
  std::vector<float> logprobs;
  std::vector<std::vector<std::pair<int64_t, float>>> top_logprobs;
  std::string finish_reason = "length";
};

// Completions' logprobs: parallel arrays, offsets counted from `text_start` (after an echoed prompt).
nlohmann::json completion_logprobs(const tokenizer::Tokenizer& tokenizer, const ChoiceResult& c, size_t text_start);
// Chat's logprobs: one object per token, with its bytes and alternatives.
nlohmann::json chat_logprobs(const tokenizer::Tokenizer& tokenizer, const ChoiceResult& c);

// The `t2` object: which adaptation answered and how pass 1 chose it.
nlohmann::json t2_object(const dispatch::Decision& decision);

struct Usage {
  int64_t prompt_tokens = 0;
  int64_t completion_tokens = 0;

  nlohmann::json to_json() const;
};

// The fields every body and stream chunk of one request starts with.
struct ResponseEnvelope {
  std::string id;
  bool chat = false;
  int64_t created = 0;
  std::string model;
  std::string system_fingerprint;

  // A whole response ("chat.completion" / "text_completion").
  nlohmann::json body(nlohmann::json choices) const;
  // One server-sent event ("chat.completion.chunk" / "text_completion").
  nlohmann::json chunk(nlohmann::json choices) const;

 private:
  nlohmann::json with(const char* object, nlohmann::json choices) const;
};

}  // namespace t2::server
