// How the server writes an answer: JSON bodies (invalid UTF-8 replaced, not
// thrown), OpenAI error bodies with their headers, and the ids and timestamps
// responses carry. Every route answers through these.
#pragma once

#include <cstdint>
#include <string>

#include <httplib.h>
#include <nlohmann/json.hpp>

#include "t2/server/openai.hpp"

namespace t2::server {

// Byte-fallback tokens can be partial UTF-8; such bytes become U+FFFD instead of throwing.
std::string dump_json(const nlohmann::json& body);

void send_json(httplib::Response& res, int status, const nlohmann::json& body);
// The error's status and body; a 429 also tells the client when to retry.
void send_error(httplib::Response& res, const ApiError& error);

// `prefix` followed by 24 random letters and digits, e.g. "cmpl-...".
std::string random_id(const std::string& prefix);
// Seconds since the Unix epoch, for `created`.
int64_t unix_time();

}  // namespace t2::server
