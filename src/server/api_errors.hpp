// The one place where t2's error kinds become HTTP: the kinds of engine job
// events and the typed exceptions of t2/common/errors.hpp are mapped to an
// ApiError (status, OpenAI type and code) here and nowhere else. Refusals that
// only the server knows about (401, 503, 409, unknown routes) stay next to the
// check that makes them.
#pragma once

#include <string>

#include "t2/common/errors.hpp"
#include "t2/engine/scheduler.hpp"
#include "t2/server/openai.hpp"

namespace t2::server {

// nginx's "client closed request": counted in metrics and logged, never sent (nobody is listening).
inline constexpr int kClientClosedStatus = 499;

// `param` names the request field at fault ("" for none).
ApiError to_api_error(ErrorKind kind, const std::string& message, const std::string& param = "");
// A typed exception caught while serving a request; InvalidArgument names its own field.
ApiError to_api_error(const Error& error);
// A job's kError event.
ApiError to_api_error(const engine::JobEvent& failure);

// The client went away mid-request.
ApiError client_disconnected();

}  // namespace t2::server
