// Turns a completions or chat request body into scheduler jobs, one per
// prompt: limits and sampling, the adaptation the request asks for (checked
// against the loaded experts), the tokenized prompt (checked against the
// context and the vocabulary) and the deadline. Throws ApiError for anything
// the request cannot have, before any job is queued.
#pragma once

#include <vector>

#include <nlohmann/json.hpp>

#include "t2/engine/scheduler.hpp"
#include "t2/server/http_server.hpp"
#include "t2/server/openai.hpp"

namespace t2::server {

// A request's jobs, and what its response needs to know about them.
struct RequestJobs {
  GenerationFields fields;
  bool echo = false;  // completions: each prompt goes before its completion
  std::vector<engine::Job> jobs;
};

// One job: the rendered conversation, dispatched on the latest user turn.
RequestJobs build_chat_jobs(const ServingContext& ctx, const nlohmann::json& body);
// One job per prompt, text prompts first, then token prompts.
RequestJobs build_completion_jobs(const ServingContext& ctx, const nlohmann::json& body);

}  // namespace t2::server
