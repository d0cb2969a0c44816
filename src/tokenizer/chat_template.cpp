#include "t2/tokenizer/chat_template.hpp"

#include <fstream>

#include <nlohmann/json.hpp>

#include "t2/common/errors.hpp"

namespace t2::tokenizer {
namespace {

struct FormatName {
  ChatFormat format;
  const char* name;
};
constexpr FormatName kFormats[] = {{ChatFormat::kPlain, "plain"},   {ChatFormat::kLlama2, "llama-2"},
                                   {ChatFormat::kLlama3, "llama-3"}, {ChatFormat::kChatML, "chatml"},
                                   {ChatFormat::kZephyr, "zephyr"},  {ChatFormat::kMistral, "mistral"}};

std::string system_text(const std::vector<ChatMessage>& messages) {
  std::string text;
  for (const auto& m : messages) {
    if (m.role == "system") text += (text.empty() ? "" : "\n") + m.content;
  }
  return text;
}

std::string render_llama2(const std::vector<ChatMessage>& messages, bool mistral) {
  // <s>[INST] <<SYS>>\n{system}\n<</SYS>>\n\n{user} [/INST] {assistant} </s><s>[INST] ...
  const std::string system = system_text(messages);
  std::string out;
  bool first_user = true;
  for (const auto& m : messages) {
    if (m.role == "user") {
      std::string content = m.content;
      if (first_user && !system.empty()) content = mistral ? system + "\n\n" + content : "<<SYS>>\n" + system + "\n<</SYS>>\n\n" + content;
      out += "<s>[INST] " + content + " [/INST]";
      first_user = false;
    } else if (m.role == "assistant") {
      out += " " + m.content + " </s>";
    }
  }
  return out;
}

}  // namespace

ChatFormat parse_chat_format(const std::string& name) {
  for (const auto& f : kFormats) {
    if (name == f.name) return f.format;
  }
  throw InvalidArgument("chat_template", "unknown chat template '" + name +
                                              "' (use plain, llama-2, llama-3, chatml, zephyr or mistral)");
}

const char* to_string(ChatFormat format) {
  for (const auto& f : kFormats) {
    if (format == f.format) return f.name;
  }
  return "plain";
}

ChatFormat detect_chat_format(const std::filesystem::path& model_dir) {
  std::ifstream in(model_dir / "tokenizer_config.json");
  if (!in) return ChatFormat::kPlain;
  const auto config = nlohmann::json::parse(in, nullptr, /*allow_exceptions=*/false);
  if (!config.is_object() || !config.contains("chat_template") || !config["chat_template"].is_string()) {
    return ChatFormat::kPlain;
  }
  const std::string t = config["chat_template"].get<std::string>();
  const auto has = [&](const char* s) { return t.find(s) != std::string::npos; };
  if (has("<|start_header_id|>")) return ChatFormat::kLlama3;
  if (has("<|im_start|>")) return ChatFormat::kChatML;
  if (has("<|user|>")) return ChatFormat::kZephyr;
  if (has("<<SYS>>")) return ChatFormat::kLlama2;
  if (has("[INST]")) return ChatFormat::kMistral;
  return ChatFormat::kPlain;
}

std::string render_chat(ChatFormat format, const std::vector<ChatMessage>& messages) {
  std::string out;
  switch (format) {
    case ChatFormat::kLlama2:
      return render_llama2(messages, false);
    case ChatFormat::kMistral:
      return render_llama2(messages, true);
    case ChatFormat::kLlama3:
      out = "<|begin_of_text|>";
      for (const auto& m : messages) out += "<|start_header_id|>" + m.role + "<|end_header_id|>\n\n" + m.content + "<|eot_id|>";
      return out + "<|start_header_id|>assistant<|end_header_id|>\n\n";
    case ChatFormat::kChatML:
      for (const auto& m : messages) out += "<|im_start|>" + m.role + "\n" + m.content + "<|im_end|>\n";
      return out + "<|im_start|>assistant\n";
    case ChatFormat::kZephyr:
      for (const auto& m : messages) out += "<|" + m.role + "|>\n" + m.content + "</s>\n";
      return out + "<|assistant|>\n";
    case ChatFormat::kPlain:
      // Base models: a transcript the model continues after "Assistant:".
      out = "<s>";
      for (const auto& m : messages) {
        const std::string speaker = m.role == "system" ? "System" : m.role == "user" ? "User" : "Assistant";
        out += speaker + ": " + m.content + "\n";
      }
      return out + "Assistant:";
  }
  return out;
}

}  // namespace t2::tokenizer
