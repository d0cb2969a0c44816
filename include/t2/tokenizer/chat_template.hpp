// Chat templates: OpenAI-style messages rendered to the prompt a chat model
// was trained on, as its tokenizer_config.json template (apply_chat_template)
// renders them, and tokenized so that only the template's own markup yields
// control tokens: "<|im_start|>" written in a message stays text.
#pragma once

#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <vector>

#include "t2/tokenizer/tokenizer.hpp"

namespace t2::tokenizer {

struct ChatMessage {
  std::string role;  // "system" | "user" | "assistant"
  std::string content;
  int64_t images = 0;  // images in the message, rendered before its text
};

enum class ChatFormat { kPlain, kLlama2, kLlama3, kChatML, kQwen2, kZephyr, kMistral };

// "plain" | "llama-2" | "llama-3" | "chatml" | "qwen2" | "zephyr" | "mistral"; throws InvalidArgument.
ChatFormat parse_chat_format(const std::string& name);
const char* to_string(ChatFormat format);
// The model's own family, recognised from its chat template (tokenizer_config.json's
// chat_template or chat_template.jinja); plain for base models without one.
// Throws LoadError naming --chat-template for a template t2 does not know.
ChatFormat detect_chat_format(const std::filesystem::path& model_dir);

struct ChatPrompt {
  std::string text;
  std::vector<TextSpan> content;  // the messages' own text inside `text`
  std::vector<size_t> images;     // where an image token goes in `text` (byte offsets, in order)
  bool prepend_bos = false;       // the format leaves BOS to the tokenizer
};

// The prompt; with `add_generation_prompt` it ends where the assistant's reply begins.
ChatPrompt render_chat(ChatFormat format, const std::vector<ChatMessage>& messages, bool add_generation_prompt = true);
// The prompt's ids: markup may name control tokens, message content may not.
// Each image becomes one `image_token` (a vision model's placeholder, which
// the model expands to the image's features); images without one are an
// InvalidArgument.
std::vector<int64_t> encode_chat(const Tokenizer& tokenizer, const ChatPrompt& prompt,
                                 std::optional<int64_t> image_token = std::nullopt);

}  // namespace t2::tokenizer
