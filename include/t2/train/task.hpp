// Tasks for training and evaluating experts: JSONL records
// {"prompt", "answer", "split"?, "label"?, "images"?, ...}, a prompt template and a reward that
// says whether a completion solves the record.
#pragma once

#include <filesystem>
#include <optional>
#include <string>
#include <vector>

namespace t2::train {

enum class RewardKind {
  kExact,     // the completion (trimmed) equals the answer
  kNumeric,   // the last number (or \boxed{}) in the completion equals the answer's
  kContains,  // the completion contains the answer
  kRegex,     // the completion matches the answer as an ECMAScript regex
  kChoice,    // the first standalone letter A-E (or \boxed{X}) equals the answer's letter
};
RewardKind parse_reward(const std::string& name);  // throws InvalidArgument("reward", ...)
const char* to_string(RewardKind kind);

// True when `completion` solves a record whose reference answer is `answer`.
bool is_correct(RewardKind kind, const std::string& completion, const std::string& answer);

enum class Split { kTrain, kValidation, kTest };
Split parse_split(const std::string& name);

struct Example {
  std::string prompt;  // after the template
  std::string answer;
  Split split = Split::kTrain;
  std::string label;   // optional "label": the expert that should serve it ("others": the base model)
  std::vector<std::filesystem::path> images;  // optional "images" (or "image"): PNG/JPEG files, relative to the task file
  int line = 0;        // in the JSONL file
};

struct Task {
  std::string name;
  RewardKind reward = RewardKind::kContains;
  std::vector<Example> examples;

  // Reads a JSONL file. `template_text` wraps each prompt ("{prompt}" is
  // replaced). Records without "split" are assigned 80/10/10 by line number.
  // A bad record is a LoadError naming the file and line.
  static Task load(const std::filesystem::path& path, RewardKind reward, const std::string& template_text = "{prompt}");
  std::vector<Example> split(Split which) const;
};

}  // namespace t2::train
