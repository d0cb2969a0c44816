// Reading optional fields of a JSON configuration file (config.json and its
// relatives): a missing or null field takes its default, a field of the wrong
// type is a LoadError naming the file and the field.
#pragma once

#include <string>

#include <nlohmann/json.hpp>

#include "t2/common/errors.hpp"

namespace t2 {

template <typename T>
T json_value_or(const nlohmann::json& j, const char* key, T fallback, const std::string& source) {
  const auto it = j.find(key);
  if (it == j.end() || it->is_null()) return fallback;
  try {
    return it->get<T>();
  } catch (const nlohmann::json::exception&) {
    throw LoadError(source + ": field '" + key + "' has the wrong type");
  }
}

}  // namespace t2
