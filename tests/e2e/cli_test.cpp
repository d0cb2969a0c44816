// The t2 binary as a user runs it.
#include <array>
#include <cstdio>
#include <fstream>
#include <sstream>

#include <gtest/gtest.h>

#include <ATen/ATen.h>

#include <nlohmann/json.hpp>

#include "support.hpp"
#include "t2/svf/expert.hpp"
#include "t2/svf/targets.hpp"

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

// The story `t2 generate` printed, without its [t2] status lines.
std::string generated_text(const std::string& output) {
  const auto adaptation = output.find("[t2] adaptation");
  const size_t start = adaptation == std::string::npos ? 0 : output.find('\n', adaptation) + 1;
  return output.substr(start, output.find("\n[t2] prompt") - start);
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
  for (const char* sub : {"bench", "svd", "experts", "experts list", "experts show", "experts validate", "experts mix",
                          "experts import", "tokenize"}) {
    EXPECT_EQ(run(std::string(sub) + " --help").status, 0) << sub;
  }
}

TEST(Cli, GenerateStreamsTheStory) {
  const auto dir = t2::testing::stories_dir();
  T2_REQUIRE_PATH(dir);
  const CommandResult r = run("generate --model " + dir.string() + " --prompt 'Once upon a time' --max-tokens 20 --device cpu");
  EXPECT_EQ(r.status, 0) << r.output;
  EXPECT_EQ(r.output.rfind(", there was a little girl named Lily.", 0), 0u) << r.output;
  EXPECT_NE(r.output.find("finish_reason=length"), std::string::npos);
}

TEST(Cli, BadInputGivesAMessageNotACrash) {
  const CommandResult missing = run("generate --model /nonexistent/model");
  EXPECT_EQ(missing.status, 1);
  EXPECT_NE(missing.output.find("model folder '/nonexistent/model' does not exist"), std::string::npos) << missing.output;
  // A mistyped relative path whose folder exists is reported too, not taken for a Hub repo id and downloaded.
  const CommandResult mistyped = run("generate --model " + std::string(T2_SOURCE_DIR) + "/models/stories260k");
  EXPECT_EQ(mistyped.status, 1);
  EXPECT_NE(mistyped.output.find("does not exist"), std::string::npos) << mistyped.output;
  const auto dir = t2::testing::stories_dir();
  T2_REQUIRE_PATH(dir);
  const CommandResult bad_dtype = run("generate --model " + dir.string() + " --dtype int3");
  EXPECT_EQ(bad_dtype.status, 2);
  EXPECT_NE(bad_dtype.output.find("--dtype"), std::string::npos) << bad_dtype.output;
  const CommandResult bad_top_p = run("generate --model " + dir.string() + " --top-p 1.5");
  EXPECT_EQ(bad_top_p.status, 2);
  EXPECT_NE(bad_top_p.output.find("top_p"), std::string::npos) << bad_top_p.output;
  EXPECT_NE(run("generate").status, 0);  // --model is required
}

TEST(Cli, SvdExpertsAndGenerateWithAnExpert) {
  const auto model = t2::testing::stories_dir();
  T2_REQUIRE_PATH(model);
  const auto cache = t2::testing::fresh_dir("cache");
  const auto experts = t2::testing::fresh_dir("experts");
  const std::string dirs = " --cache-dir " + cache.string() + " --experts-dir " + experts.string();

  const CommandResult built = run("svd --model " + model.string() + dirs);
  EXPECT_EQ(built.status, 0) << built.output;
  EXPECT_NE(built.output.find("built "), std::string::npos) << built.output;
  EXPECT_NE(built.output.find("15 matrices"), std::string::npos) << built.output;
  EXPECT_NE(run("svd --model " + model.string() + dirs).output.find("reused "), std::string::npos);

  // Two experts written as a trainer would: z in [0, 2) on every MLP matrix.
  const auto config = t2::model::ModelConfig::from_file(model / "config.json");
  for (const auto& [name, seed] : std::vector<std::pair<std::string, uint64_t>>{{"calm", 1}, {"wild", 2}}) {
    t2::testing::random_expert(config, t2::model::checkpoint_fingerprint(model), name, seed, name + " stories").save(experts / name);
  }
  const CommandResult listed = run("experts list" + std::string(" --experts-dir ") + experts.string());
  EXPECT_NE(listed.output.find("calm"), std::string::npos) << listed.output;
  EXPECT_NE(listed.output.find("wild stories"), std::string::npos) << listed.output;
  EXPECT_EQ(run("experts validate --model " + model.string() + " --experts-dir " + experts.string()).status, 0);
  const CommandResult mixed = run("experts mix --out blend calm=0.5 wild=0.5 --experts-dir " + experts.string());
  EXPECT_EQ(mixed.status, 0) << mixed.output;
  EXPECT_NE(run("experts show blend --experts-dir " + experts.string()).output.find("\"kind\": \"mixture\""), std::string::npos);

  const std::string generate = "generate --model " + model.string() + dirs + " --max-tokens 30 --prompt 'Once upon a time'";
  const CommandResult base = run(generate);
  const CommandResult calm = run(generate + " --expert calm");
  const CommandResult blend = run(generate + " --expert blend");
  const CommandResult inline_blend = run(generate + " --mixture calm=0.5,wild=0.5");
  EXPECT_EQ(calm.status, 0) << calm.output;
  EXPECT_NE(calm.output.find("adaptation calm"), std::string::npos) << calm.output;
  EXPECT_NE(generated_text(calm.output), generated_text(base.output));
  EXPECT_EQ(generated_text(blend.output), generated_text(inline_blend.output));
  EXPECT_FALSE(generated_text(blend.output).empty());
  const CommandResult missing = run(generate + " --expert nobody");
  EXPECT_EQ(missing.status, 1);
  EXPECT_NE(missing.output.find("nobody"), std::string::npos) << missing.output;
}

namespace {

// Two dispatch targets in a fresh experts folder, and a task whose records name their expert.
struct DispatchEvalSetup {
  std::filesystem::path model = t2::testing::stories_dir();
  std::filesystem::path experts, cache, task;

  DispatchEvalSetup() {
    experts = t2::testing::fresh_dir("experts");
    cache = t2::testing::fresh_dir("cache");
    task = t2::testing::fresh_dir("task") / "routed.jsonl";
    const auto config = t2::model::ModelConfig::from_file(model / "config.json");
    for (const auto& [name, seed] : std::vector<std::pair<std::string, uint64_t>>{{"calm", 1}, {"wild", 2}}) {
      t2::testing::random_expert(config, t2::model::checkpoint_fingerprint(model), name, seed, name + " stories",
                                 t2::svf::DispatchRole::kTarget)
          .save(experts / name);
    }
    std::ofstream f(task);
    const std::vector<std::pair<std::string, std::string>> records = {
        {"Once upon a time", "calm"}, {"Tom had a big dog", "wild"}, {"The sun was", "others"}, {"Lily", "calm"}};
    for (const auto& [prompt, label] : records) {
      f << nlohmann::json{{"prompt", prompt}, {"answer", "dog"}, {"label", label}, {"split", "test"}}.dump() << "\n";
    }
  }
  std::string args(const std::string& strategy) const {
    return "eval --model " + model.string() + " --task " + task.string() + " --max-tokens 8 --device cpu --experts-dir " +
           experts.string() + " --cache-dir " + cache.string() + " --dispatch-template " + T2_SOURCE_DIR +
           "/configs/dispatch/prompt.txt --dispatch " + strategy;
  }
};

}  // namespace

TEST(Cli, EvalWithOracleDispatchRoutesEveryRecordToItsLabel) {
  T2_REQUIRE_PATH(t2::testing::stories_dir());
  const DispatchEvalSetup setup;
  const t2::testing::CommandResult r = t2::testing::run_t2(setup.args("oracle"));
  ASSERT_EQ(r.status, 0) << r.out << r.err;
  // stdout is the report alone; the logs went to stderr.
  const nlohmann::json report = nlohmann::json::parse(r.out);
  EXPECT_EQ(report["dispatch"], "oracle");
  EXPECT_EQ(report["split"], "test");
  EXPECT_EQ(report["total"], 4);
  ASSERT_TRUE(report.contains("routing")) << report;
  EXPECT_EQ(report["routing"]["accuracy"], 1.0);
  EXPECT_EQ(report["routing"]["correct"], 4);
  EXPECT_EQ(report["routing"]["total"], 4);
  EXPECT_EQ(report["routing"]["ci95"].size(), 2u);
  EXPECT_EQ(report["routing"]["confusion"]["calm"]["calm"], 2);
  EXPECT_EQ(report["routing"]["confusion"]["wild"]["wild"], 1);
  EXPECT_EQ(report["routing"]["confusion"]["others"]["others"], 1);
  EXPECT_GE(report["perplexity"].get<double>(), 1.0);
  EXPECT_EQ(report["dispatch_ms_mean"], 0.0);
}

TEST(Cli, EvalWithAnUnknownDispatchStrategyExitsWithAMessage) {
  T2_REQUIRE_PATH(t2::testing::stories_dir());
  const DispatchEvalSetup setup;
  const CommandResult r = run(setup.args("bogus"));
  EXPECT_EQ(r.status, 2) << r.output;
  EXPECT_NE(r.output.find("--dispatch"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("prompt, classifier or oracle"), std::string::npos) << r.output;
}

TEST(Cli, TokenizePrintsTheIdsAsJson) {
  const auto dir = t2::testing::stories_dir();
  const auto tok = t2::tokenizer::Tokenizer::load(dir);
  const auto plain = t2::testing::run_t2("tokenize --model " + dir.string() + " --text 'Once upon a time </s>'");
  ASSERT_EQ(plain.status, 0) << plain.err;
  EXPECT_EQ(nlohmann::json::parse(plain.out).get<std::vector<int64_t>>(), tok.encode("Once upon a time </s>", false));
  const auto special = t2::testing::run_t2("tokenize --model " + dir.string() + " --text 'Once</s>' --parse-special --add-special-tokens");
  ASSERT_EQ(special.status, 0) << special.err;
  const auto ids = nlohmann::json::parse(special.out).get<std::vector<int64_t>>();
  ASSERT_GE(ids.size(), 2u);
  EXPECT_EQ(ids.front(), tok.bos_id());
  EXPECT_EQ(ids.back(), tok.eos_id());  // "</s>" named its control token
  const auto missing = run("tokenize --model " + t2::testing::fresh_dir("no-tokenizer").string() + " --text x");
  EXPECT_NE(missing.status, 0);
  EXPECT_NE(missing.output.find("no tokenizer.model or tokenizer.json"), std::string::npos) << missing.output;
}
