#include "api_errors.hpp"

namespace t2::server {

ApiError to_api_error(ErrorKind kind, const std::string& message, const std::string& param) {
  switch (kind) {
    case ErrorKind::kInvalidArgument:
      return ApiError::bad_request(param, message);
    case ErrorKind::kNotFound:
      // While serving, the only things t2's components report missing are experts.
      return ApiError::not_found(param, message, "expert_not_found");
    case ErrorKind::kTimeout:
      return ApiError(504, "timeout_error", message, "", "timeout");
    case ErrorKind::kOverloaded:
      return ApiError(429, "rate_limit_error", message, "", "queue_full");  // send_error adds Retry-After
    case ErrorKind::kNameTaken:
      return ApiError(409, "invalid_request_error", message, param, "exists");
    case ErrorKind::kInternal:
      break;
  }
  return ApiError(500, "server_error", message);
}

ApiError to_api_error(const Error& error) {
  const auto* invalid = dynamic_cast<const InvalidArgument*>(&error);
  return to_api_error(kind_of(error), error.what(), invalid ? invalid->param() : "");
}

ApiError to_api_error(const engine::JobEvent& failure) {
  // A job's request was validated before it was queued, so a missing thing is an
  // expert unloaded meanwhile; the scheduler knows no request field names.
  const std::string param = failure.error_kind == ErrorKind::kNotFound ? "expert" : "";
  return to_api_error(failure.error_kind, failure.error, param);
}

ApiError client_disconnected() { return ApiError(kClientClosedStatus, "client_closed", "the client disconnected"); }

}  // namespace t2::server
