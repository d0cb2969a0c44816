#include "completion_responses.hpp"

namespace t2::server {

using nlohmann::json;

json completion_logprobs(const tokenizer::Tokenizer& tokenizer, const ChoiceResult& c, size_t text_start) {
  json tokens = json::array(), logprobs = json::array(), top = json::array(), offsets = json::array();
  size_t offset = text_start;
  for (size_t i = 0; i < c.tokens.size(); ++i) {
    const std::string piece = tokenizer.token_text(c.tokens[i]);
    tokens.push_back(piece);
    logprobs.push_back(c.logprobs[i]);
    json alternatives = json::object();
    for (const auto& [id, lp] : c.top_logprobs[i]) alternatives[tokenizer.token_text(id)] = lp;
    top.push_back(alternatives);
    offsets.push_back(offset);
    offset += piece.size();
  }
  return {{"tokens", tokens}, {"token_logprobs", logprobs}, {"top_logprobs", top}, {"text_offset", offsets}};
}

json chat_logprobs(const tokenizer::Tokenizer& tokenizer, const ChoiceResult& c) {
  json content = json::array();
  for (size_t i = 0; i < c.tokens.size(); ++i) {
    const std::string piece = tokenizer.token_text(c.tokens[i]);
    json top = json::array();
    for (const auto& [id, lp] : c.top_logprobs[i]) {
      const std::string alt = tokenizer.token_text(id);
      top.push_back({{"token", alt}, {"logprob", lp}, {"bytes", std::vector<unsigned char>(alt.begin(), alt.end())}});
    }
    content.push_back({{"token", piece}, {"logprob", c.logprobs[i]},
                       {"bytes", std::vector<unsigned char>(piece.begin(), piece.end())}, {"top_logprobs", top}});
  }
  return {{"content", content}};
}

json t2_object(const dispatch::Decision& d) {
  return {{"adaptation", d.adaptation.key()},
          {"strategy", dispatch::to_string(d.strategy)},
          {"label", d.label},
          // Which score it is travels with the numbers: labels are compared by it.
          {"scores", d.scores.empty() ? json::object() : json{{"method", dispatch::to_string(d.scoring)}, {"labels", d.scores}}},
          {"dispatch_ms", d.latency_ms},
          {"dispatch_tokens", d.prompt_tokens},
          {"dispatch_cached_tokens", d.cached_tokens}};
}

json Usage::to_json() const {
  return {{"prompt_tokens", prompt_tokens},
          {"completion_tokens", completion_tokens},
          {"total_tokens", prompt_tokens + completion_tokens}};
}

json ResponseEnvelope::body(json choices) const {
  return with(chat ? "chat.completion" : "text_completion", std::move(choices));
}

json ResponseEnvelope::chunk(json choices) const {
  return with(chat ? "chat.completion.chunk" : "text_completion", std::move(choices));
}

json ResponseEnvelope::with(const char* object, json choices) const {
  return {{"id", id},
          {"object", object},
          {"created", created},
          {"model", model},
          {"system_fingerprint", system_fingerprint},
          {"choices", std::move(choices)}};
}

}  // namespace t2::server
