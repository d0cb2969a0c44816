// Chat templates: OpenAI-style messages rendered to the prompt text a chat
// model was trained on. Special pieces in the text ("<s>", "<|im_start|>")
// become control tokens through Tokenizer::encode_with_specials.
#pragma once

#include <filesystem>
#include <string>
#include <vector>

namespace t2::tokenizer {

struct ChatMessage {
  std::string role;  // "system" | "user" | "assistant"
  std::string content;
};

enum class ChatFormat { kPlain, kLlama2, kLlama3, kChatML, kZephyr, kMistral };

// "plain" | "llama-2" | "llama-3" | "chatml" | "zephyr" | "mistral"; throws InvalidArgument.
ChatFormat parse_chat_format(const std::string& name);
const char* to_string(ChatFormat format);
// The model's own family, recognised from tokenizer_config.json's
// chat_template; plain for base models without one.
ChatFormat detect_chat_format(const std::filesystem::path& model_dir);

// The prompt, ending where the assistant's reply begins.
std::string render_chat(ChatFormat format, const std::vector<ChatMessage>& messages);

}  // namespace t2::tokenizer
