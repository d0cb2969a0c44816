// Typed errors of t2. Every failure caused by input (a file, a flag, a request)
// is one of these, so callers (the CLI, later the HTTP server) can report it
// cleanly instead of aborting.
#pragma once

#include <exception>
#include <stdexcept>
#include <string>

namespace t2 {

// Base of all t2 errors.
class Error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// A model, tokenizer, cache or expert file is missing, malformed or inconsistent.
class LoadError : public Error {
 public:
  using Error::Error;
};

// A caller passed a value outside what is supported (bad flag, bad parameter).
class InvalidArgument : public Error {
 public:
  InvalidArgument(const std::string& param, const std::string& message)
      : Error(message), param_(param) {}
  const std::string& param() const { return param_; }

 private:
  std::string param_;
};

// A named thing (expert, model, file) does not exist.
class NotFound : public Error {
 public:
  using Error::Error;
};

// The server is at capacity (queue full); the client may retry later.
class Overloaded : public Error {
 public:
  using Error::Error;
};

// A name that is already taken (an expert, a folder, another job's).
class NameTaken : public InvalidArgument {
 public:
  using InvalidArgument::InvalidArgument;
};

// What kind of failure ended an operation, for components that report errors
// as values rather than exceptions (the scheduler's job events). The server
// maps each kind to its HTTP status in one place (src/server/api_errors.cpp).
enum class ErrorKind {
  kInvalidArgument,  // InvalidArgument
  kNotFound,         // NotFound
  kTimeout,          // a deadline passed
  kOverloaded,       // Overloaded
  kNameTaken,        // NameTaken
  kInternal,         // anything else: a bug, a device failure, a malformed file
};

// The kind of a caught exception: the typed errors above by their type, the rest kInternal.
inline ErrorKind kind_of(const std::exception& e) {
  if (dynamic_cast<const NameTaken*>(&e)) return ErrorKind::kNameTaken;
  if (dynamic_cast<const InvalidArgument*>(&e)) return ErrorKind::kInvalidArgument;
  if (dynamic_cast<const NotFound*>(&e)) return ErrorKind::kNotFound;
  if (dynamic_cast<const Overloaded*>(&e)) return ErrorKind::kOverloaded;
  return ErrorKind::kInternal;
}

}  // namespace t2
