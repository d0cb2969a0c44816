// The t2 binary as a user runs it.
#include <array>
#include <cstdio>

#include <gtest/gtest.h>

#include "support.hpp"

namespace {

struct CommandResult {
  int status;
  std::string output;  // stdout and stderr
};

CommandResult run(const std::string& args) {
  const std::string command = t2::testing::t2_binary().string() + " " + args + " 2>&1";
  FILE* pipe = popen(command.c_str(), "r");
  if (pipe == nullptr) return {-1, ""};
  std::string output;
  std::array<char, 4096> buffer{};
  size_t n = 0;
  while ((n = fread(buffer.data(), 1, buffer.size(), pipe)) > 0) output.append(buffer.data(), n);
  const int status = pclose(pipe);
  return {WIFEXITED(status) ? WEXITSTATUS(status) : -1, output};
}

}  // namespace

TEST(Cli, HelpListsSubcommandsAndOptions) {
  const CommandResult top = run("--help");
  EXPECT_EQ(top.status, 0);
  EXPECT_NE(top.output.find("generate"), std::string::npos);
  EXPECT_NE(top.output.find("bench"), std::string::npos);
  const CommandResult generate = run("generate --help");
  EXPECT_EQ(generate.status, 0);
  for (const char* flag : {"--model", "--prompt", "--max-tokens", "--temperature", "--top-p", "--top-k", "--seed",
                           "--device", "--dtype"}) {
    EXPECT_NE(generate.output.find(flag), std::string::npos) << flag;
  }
  EXPECT_EQ(run("bench --help").status, 0);
}

TEST(Cli, GenerateStreamsTheStory) {
  const auto dir = t2::testing::models_dir() / "stories260K";
  T2_REQUIRE_PATH(dir);
  const CommandResult r = run("generate --model " + dir.string() + " --prompt 'Once upon a time' --max-tokens 20 --device cpu");
  EXPECT_EQ(r.status, 0) << r.output;
  EXPECT_EQ(r.output.rfind(", there was a little girl named Lily.", 0), 0u) << r.output;
  EXPECT_NE(r.output.find("finish_reason=length"), std::string::npos);
}

TEST(Cli, BadInputGivesAMessageNotACrash) {
  const CommandResult missing = run("generate --model /nonexistent/model");
  EXPECT_EQ(missing.status, 1);
  EXPECT_NE(missing.output.find("/nonexistent/model: no config.json"), std::string::npos) << missing.output;
  const auto dir = t2::testing::models_dir() / "stories260K";
  T2_REQUIRE_PATH(dir);
  const CommandResult bad_dtype = run("generate --model " + dir.string() + " --dtype int3");
  EXPECT_EQ(bad_dtype.status, 2);
  EXPECT_NE(bad_dtype.output.find("--dtype"), std::string::npos) << bad_dtype.output;
  const CommandResult bad_top_p = run("generate --model " + dir.string() + " --top-p 1.5");
  EXPECT_EQ(bad_top_p.status, 2);
  EXPECT_NE(bad_top_p.output.find("top_p"), std::string::npos) << bad_top_p.output;
  EXPECT_NE(run("generate").status, 0);  // --model is required
}
