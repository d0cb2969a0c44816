#include "t2/tokenizer/chat_template.hpp"

#include <fstream>
#include <sstream>

#include <nlohmann/json.hpp>

#include "t2/common/errors.hpp"
#include "utf8.hpp"

namespace t2::tokenizer {
namespace {

struct FormatName {
  ChatFormat format;
  const char* name;
};
constexpr FormatName kFormats[] = {{ChatFormat::kPlain, "plain"},   {ChatFormat::kLlama2, "llama-2"},
                                   {ChatFormat::kLlama3, "llama-3"}, {ChatFormat::kChatML, "chatml"},
                                   {ChatFormat::kQwen2, "qwen2"},    {ChatFormat::kZephyr, "zephyr"},
                                   {ChatFormat::kMistral, "mistral"}};
constexpr const char* kFormatList = "plain, llama-2, llama-3, chatml, qwen2, zephyr or mistral";

// Appends markup and content, remembering where content lies.
class PromptBuilder {
 public:
  PromptBuilder& markup(const std::string& text) {
    prompt_.text += text;
    return *this;
  }
  PromptBuilder& content(const std::string& text) {
    if (!text.empty()) prompt_.content.push_back({prompt_.text.size(), prompt_.text.size() + text.size()});
    prompt_.text += text;
    return *this;
  }
  // A message's images, then its text, as LLaVA's templates render "<image>\n" per image.
  PromptBuilder& message(const ChatMessage& m, bool trimmed = false);
  ChatPrompt take() { return std::move(prompt_); }
  ChatPrompt& prompt() { return prompt_; }

 private:
  ChatPrompt prompt_;
};

// Jinja's trim, which is Python's str.strip(): Unicode whitespace at both ends.
std::string trim(const std::string& text) {
  size_t begin = 0, end = text.size();
  while (begin < end) {
    size_t next = begin;
    if (!utf8::valid_length(text, begin) || !utf8::is_whitespace(utf8::next(text, next))) break;
    begin = next;
  }
  while (end > begin) {
    size_t start = end - 1;
    while (start > begin && (static_cast<unsigned char>(text[start]) & 0xC0) == 0x80) --start;
    size_t next = start;
    if (!utf8::valid_length(text, start) || !utf8::is_whitespace(utf8::next(text, next)) || next != end) break;
    end = start;
  }
  return text.substr(begin, end - begin);
}

PromptBuilder& PromptBuilder::message(const ChatMessage& m, bool trimmed) {
  for (int64_t i = 0; i < m.images; ++i) {
    prompt_.images.push_back(prompt_.text.size());
    markup("\n");
  }
  return content(trimmed ? trim(m.content) : m.content);
}

std::string system_text(const std::vector<ChatMessage>& messages) {
  std::string text;
  for (const auto& m : messages) {
    if (m.role == "system") text += (text.empty() ? "" : "\n") + m.content;
  }
  return text;
}

ChatPrompt render_llama2(const std::vector<ChatMessage>& messages, bool mistral) {
  // <s>[INST] <<SYS>>\n{system}\n<</SYS>>\n\n{user} [/INST] {assistant} </s><s>[INST] ...
  const std::string system = system_text(messages);
  PromptBuilder b;
  bool first_user = true;
  for (const auto& m : messages) {
    if (m.role == "user") {
      b.markup("<s>[INST] ");
      if (first_user && !system.empty()) {
        if (mistral) {
          b.content(system).markup("\n\n");
        } else {
          b.markup("<<SYS>>\n").content(system).markup("\n<</SYS>>\n\n");
        }
      }
      b.message(m).markup(" [/INST]");
      first_user = false;
    } else if (m.role == "assistant") {
      b.markup(" ").message(m).markup(" </s>");
    }
  }
  return b.take();
}

std::string read_chat_template(const std::filesystem::path& model_dir) {
  // transformers 5 writes the template to chat_template.jinja beside tokenizer_config.json.
  if (std::ifstream jinja(model_dir / "chat_template.jinja"); jinja) {
    std::stringstream text;
    text << jinja.rdbuf();
    return text.str();
  }
  std::ifstream in(model_dir / "tokenizer_config.json");
  if (!in) return "";
  const auto config = nlohmann::json::parse(in, nullptr, /*allow_exceptions=*/false);
  if (!config.is_object() || !config.contains("chat_template")) return "";
  const auto& t = config["chat_template"];
  if (t.is_string()) return t.get<std::string>();
  if (t.is_array()) {  // named templates: [{"name": "default", "template": ...}, ...]
    for (const auto& named : t) {
      if (named.value("name", "") == "default" && named.contains("template")) return named["template"].get<std::string>();
    }
  }
  return "";
}

}  // namespace

ChatFormat parse_chat_format(const std::string& name) {
  for (const auto& f : kFormats) {
    if (name == f.name) return f.format;
  }
  throw InvalidArgument("chat_template", "unknown chat template '" + name + "' (use " + kFormatList + ")");
}

const char* to_string(ChatFormat format) {
  for (const auto& f : kFormats) {
    if (format == f.format) return f.name;
  }
  return "plain";
}

ChatFormat detect_chat_format(const std::filesystem::path& model_dir) {
  const std::string t = read_chat_template(model_dir);
  if (t.empty()) return ChatFormat::kPlain;
  const auto has = [&](const char* s) { return t.find(s) != std::string::npos; };
  if (has("<|start_header_id|>")) return ChatFormat::kLlama3;
  if (has("<|im_start|>")) return has("You are a helpful assistant.") ? ChatFormat::kQwen2 : ChatFormat::kChatML;
  if (has("<|user|>")) return ChatFormat::kZephyr;
  if (has("<<SYS>>")) return ChatFormat::kLlama2;
  if (has("[INST]")) return ChatFormat::kMistral;
  throw LoadError((model_dir / "tokenizer_config.json").string() +
                  ": the model's chat template is not one t2 renders; start t2 serve with --chat-template " +
                  "(" + kFormatList + ") to choose one");
}

ChatPrompt render_chat(ChatFormat format, const std::vector<ChatMessage>& messages, bool add_generation_prompt) {
  PromptBuilder b;
  switch (format) {
    case ChatFormat::kLlama2:
      return render_llama2(messages, false);
    case ChatFormat::kMistral:
      return render_llama2(messages, true);
    case ChatFormat::kLlama3:
      // Meta's template trims each message.
      b.markup("<|begin_of_text|>");
      for (const auto& m : messages) b.markup("<|start_header_id|>").content(m.role).markup("<|end_header_id|>\n\n").message(m, /*trimmed=*/true).markup("<|eot_id|>");
      if (add_generation_prompt) b.markup("<|start_header_id|>assistant<|end_header_id|>\n\n");
      return b.take();
    case ChatFormat::kQwen2:
    case ChatFormat::kChatML:
      // Qwen2's template opens with a default system message when the chat has none.
      if (format == ChatFormat::kQwen2 && (messages.empty() || messages.front().role != "system")) {
        b.markup("<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n");
      }
      for (const auto& m : messages) b.markup("<|im_start|>").content(m.role).markup("\n").message(m).markup("<|im_end|>\n");
      if (add_generation_prompt) b.markup("<|im_start|>assistant\n");
      return b.take();
    case ChatFormat::kZephyr:
      for (const auto& m : messages) b.markup("<|").content(m.role).markup("|>\n").message(m).markup("</s>\n");
      if (add_generation_prompt) b.markup("<|assistant|>\n");
      return b.take();
    case ChatFormat::kPlain:
      // Base models: a transcript the model continues after "Assistant:".
      b.prompt().prepend_bos = true;
      for (const auto& m : messages) {
        const std::string speaker = m.role == "system" ? "System" : m.role == "user" ? "User" : "Assistant";
        b.markup(speaker + ": ").message(m).markup("\n");
      }
      if (add_generation_prompt) b.markup("Assistant:");
      return b.take();
  }
  return b.take();
}

std::vector<int64_t> encode_chat(const Tokenizer& tokenizer, const ChatPrompt& prompt, std::optional<int64_t> image_token) {
  if (!prompt.images.empty() && !image_token) throw InvalidArgument("messages", "this model does not accept images");
  std::vector<int64_t> ids;
  if (prompt.prepend_bos && tokenizer.bos_id() >= 0) ids.push_back(tokenizer.bos_id());
  // The text between images tokenizes on its own: an image token bounds tokens as any special token does.
  size_t begin = 0;
  const auto encode_until = [&](size_t end) {
    std::vector<TextSpan> literal;
    for (const TextSpan& span : prompt.content) {
      if (span.begin >= begin && span.end <= end) literal.push_back({span.begin - begin, span.end - begin});
    }
    const auto piece = tokenizer.encode_with_specials(prompt.text.substr(begin, end - begin), literal);
    ids.insert(ids.end(), piece.begin(), piece.end());
    begin = end;
  };
  for (const size_t image : prompt.images) {
    encode_until(image);
    ids.push_back(*image_token);
  }
  encode_until(prompt.text.size());
  return ids;
}

}  // namespace t2::tokenizer
