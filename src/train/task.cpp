#include "t2/train/task.hpp"

#include <fstream>
#include <regex>

#include <nlohmann/json.hpp>

#include "t2/common/errors.hpp"

namespace t2::train {
namespace {

std::string trim(const std::string& s) {
  const auto begin = s.find_first_not_of(" \t\r\n");
  if (begin == std::string::npos) return "";
  return s.substr(begin, s.find_last_not_of(" \t\r\n") - begin + 1);
}

std::optional<std::string> boxed(const std::string& text) {
  const auto at = text.rfind("\\boxed{");
  if (at == std::string::npos) return std::nullopt;
  const auto end = text.find('}', at);
  if (end == std::string::npos) return std::nullopt;
  return trim(text.substr(at + 7, end - at - 7));
}

std::optional<double> last_number(const std::string& text) {
  if (const auto b = boxed(text)) return last_number(*b == text ? "" : *b);
  static const std::regex kNumber(R"(-?\d[\d,]*(\.\d+)?)");
  std::optional<double> last;
  for (auto it = std::sregex_iterator(text.begin(), text.end(), kNumber); it != std::sregex_iterator(); ++it) {
    std::string digits = it->str();
    digits.erase(std::remove(digits.begin(), digits.end(), ','), digits.end());
    try {
      last = std::stod(digits);
    } catch (const std::exception&) {
    }
  }
  return last;
}

std::optional<char> choice_letter(const std::string& text) {
  if (const auto b = boxed(text); b && b->size() == 1) return static_cast<char>(std::toupper(static_cast<unsigned char>((*b)[0])));
  static const std::regex kLetter(R"((^|[^A-Za-z])([A-Ea-e])([^A-Za-z]|$))");
  std::smatch m;
  if (std::regex_search(text, m, kLetter)) return static_cast<char>(std::toupper(static_cast<unsigned char>(m[2].str()[0])));
  return std::nullopt;
}

}  // namespace

RewardKind parse_reward(const std::string& name) {
  if (name == "exact") return RewardKind::kExact;
  if (name == "numeric") return RewardKind::kNumeric;
  if (name == "contains") return RewardKind::kContains;
  if (name == "regex") return RewardKind::kRegex;
  if (name == "choice") return RewardKind::kChoice;
  throw InvalidArgument("reward", "unknown reward '" + name + "' (use exact, numeric, contains, regex or choice)");
}

const char* to_string(RewardKind kind) {
  switch (kind) {
    case RewardKind::kExact: return "exact";
    case RewardKind::kNumeric: return "numeric";
    case RewardKind::kContains: return "contains";
    case RewardKind::kRegex: return "regex";
    case RewardKind::kChoice: return "choice";
  }
  return "contains";
}

bool is_correct(RewardKind kind, const std::string& completion, const std::string& answer) {
  switch (kind) {
    case RewardKind::kExact:
      return trim(completion) == trim(answer);
    case RewardKind::kNumeric: {
      const auto got = last_number(completion);
      const auto want = last_number(answer);
      return got && want && std::abs(*got - *want) < 1e-6 * std::max(1.0, std::abs(*want));
    }
    case RewardKind::kContains:
      return completion.find(answer) != std::string::npos;
    case RewardKind::kRegex:
      return std::regex_search(completion, std::regex(answer));
    case RewardKind::kChoice: {
      const auto got = choice_letter(completion);
      const auto want = choice_letter(answer);
      return got && want && *got == *want;
    }
  }
  return false;
}

Split parse_split(const std::string& name) {
  if (name == "train") return Split::kTrain;
  if (name == "validation" || name == "val" || name == "dev") return Split::kValidation;
  if (name == "test") return Split::kTest;
  throw InvalidArgument("split", "unknown split '" + name + "' (use train, validation or test)");
}

Task Task::load(const std::filesystem::path& path, RewardKind reward, const std::string& template_text) {
  if (template_text.find("{prompt}") == std::string::npos) throw InvalidArgument("template", "the template has no {prompt}");
  std::ifstream in(path);
  if (!in) throw LoadError(path.string() + ": cannot open task file");
  Task task;
  task.name = path.stem().string();
  task.reward = reward;
  int line_number = 0;
  for (std::string line; std::getline(in, line);) {
    ++line_number;
    if (trim(line).empty()) continue;
    const std::string where = path.string() + ":" + std::to_string(line_number);
    nlohmann::json record;
    try {
      record = nlohmann::json::parse(line);
    } catch (const nlohmann::json::exception& e) {
      throw LoadError(where + ": not valid JSON: " + e.what());
    }
    if (!record.is_object() || !record.contains("prompt") || !record["prompt"].is_string()) {
      throw LoadError(where + ": a record needs a string \"prompt\"");
    }
    if (!record.contains("answer") || !(record["answer"].is_string() || record["answer"].is_number())) {
      throw LoadError(where + ": a record needs an \"answer\" (string or number)");
    }
    if (reward == RewardKind::kRegex && record["answer"].is_string()) {
      try {
        std::regex check(record["answer"].get<std::string>());
      } catch (const std::regex_error& e) {
        throw LoadError(where + ": the answer is not a valid regex: " + e.what());
      }
    }
    Example e;
    std::string prompt = template_text;
    prompt.replace(prompt.find("{prompt}"), 8, record["prompt"].get<std::string>());
    e.prompt = prompt;
    e.answer = record["answer"].is_string() ? record["answer"].get<std::string>() : record["answer"].dump();
    e.line = line_number;
    if (record.contains("label")) {
      if (!record["label"].is_string()) throw LoadError(where + ": \"label\" must be a string");
      e.label = record["label"].get<std::string>();
    }
    for (const char* key : {"images", "image"}) {
      if (!record.contains(key)) continue;
      const auto& value = record[key];
      const auto files = value.is_string() ? nlohmann::json::array({value}) : value;
      if (!files.is_array()) throw LoadError(where + ": \"" + key + "\" must be a file name or a list of them");
      for (const auto& file : files) {
        if (!file.is_string()) throw LoadError(where + ": \"" + key + "\" must be a file name or a list of them");
        const std::filesystem::path image = path.parent_path() / file.get<std::string>();
        if (!std::filesystem::is_regular_file(image)) throw LoadError(where + ": image " + image.string() + " does not exist");
        e.images.push_back(image);
      }
    }
    if (record.contains("split")) {
      try {
        e.split = parse_split(record["split"].get<std::string>());
      } catch (const std::exception&) {
        throw LoadError(where + ": \"split\" must be train, validation or test");
      }
    } else {
      const int bucket = static_cast<int>(task.examples.size() % 10);
      e.split = bucket < 8 ? Split::kTrain : bucket == 8 ? Split::kValidation : Split::kTest;
    }
    task.examples.push_back(std::move(e));
  }
  if (task.examples.empty()) throw LoadError(path.string() + ": no records");
  return task;
}

std::vector<Example> Task::split(Split which) const {
  std::vector<Example> out;
  for (const auto& e : examples) {
    if (e.split == which) out.push_back(e);
  }
  return out;
}

}  // namespace t2::train
