// Training experts: tasks and rewards, the REINFORCE gradient, the KL term,
// autograd against finite differences, CEM, short real training runs (completions
// and labels), the labels objective scoring as the dispatcher does, and perplexity.
#include <cmath>
#include <fstream>

#include <ATen/ATen.h>
#include <ATen/core/grad_mode.h>
#include <c10/core/InferenceMode.h>
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "support.hpp"
#include "t2/common/errors.hpp"
#include "t2/dispatch/dispatcher.hpp"
#include "t2/svf/targets.hpp"
#include "t2/train/cem.hpp"
#include "t2/train/reinforce.hpp"

using t2::train::RewardKind;

TEST(Rewards, EachKind) {
  using t2::train::is_correct;
  EXPECT_TRUE(is_correct(RewardKind::kExact, "  Paris\n", "Paris"));
  EXPECT_FALSE(is_correct(RewardKind::kExact, "Paris, France", "Paris"));
  EXPECT_TRUE(is_correct(RewardKind::kNumeric, "so 3 + 4 = 7", "7"));
  EXPECT_TRUE(is_correct(RewardKind::kNumeric, "the answer is \\boxed{1,250}.", "1250"));
  EXPECT_FALSE(is_correct(RewardKind::kNumeric, "7 then 8", "7"));
  EXPECT_TRUE(is_correct(RewardKind::kContains, "a dog named Max", "dog"));
  EXPECT_TRUE(is_correct(RewardKind::kRegex, "Tom and Sam", "(Tom|Sam) and"));
  EXPECT_TRUE(is_correct(RewardKind::kChoice, "I think (B) is right", "B"));
  EXPECT_TRUE(is_correct(RewardKind::kChoice, "\\boxed{c}", "C"));
  EXPECT_FALSE(is_correct(RewardKind::kChoice, "Because", "B"));
  EXPECT_THROW(t2::train::parse_reward("bleu"), t2::InvalidArgument);
}

TEST(Tasks, LoadsSplitsAndReportsBadLines) {
  const auto dir = t2::testing::fresh_dir("task");
  {
    std::ofstream f(dir / "t.jsonl");
    for (int i = 0; i < 10; ++i) f << R"({"prompt": "p)" << i << R"(", "answer": )" << i << "}\n";
    f << R"({"prompt": "x", "answer": "y", "split": "test"})" << "\n\n";
  }
  const auto task = t2::train::Task::load(dir / "t.jsonl", RewardKind::kNumeric, "Q: {prompt}\nA:");
  EXPECT_EQ(task.examples.size(), 11u);
  EXPECT_EQ(task.split(t2::train::Split::kTrain).size(), 8u);
  EXPECT_EQ(task.split(t2::train::Split::kValidation).size(), 1u);
  EXPECT_EQ(task.split(t2::train::Split::kTest).size(), 2u);
  EXPECT_EQ(task.examples[0].prompt, "Q: p0\nA:");
  EXPECT_EQ(task.examples[3].answer, "3");

  std::ofstream(dir / "bad.jsonl") << R"({"prompt": "a", "answer": "b"})" << "\n" << R"({"prompt": 5, "answer": "b"})" << "\n";
  try {
    t2::train::Task::load(dir / "bad.jsonl", RewardKind::kExact);
    ADD_FAILURE() << "bad record accepted";
  } catch (const t2::LoadError& e) {
    EXPECT_NE(std::string(e.what()).find("bad.jsonl:2"), std::string::npos) << e.what();
  }
  std::ofstream(dir / "json.jsonl") << "{oops\n";
  EXPECT_THROW(t2::train::Task::load(dir / "json.jsonl", RewardKind::kExact), t2::LoadError);
}

TEST(Cem, ConvergesOnASyntheticObjective) {
  const std::vector<double> target = {0.2, 0.7, 0.4};
  const auto objective = [&](const std::vector<double>& x) {
    double d = 0;
    for (size_t i = 0; i < x.size(); ++i) d += (x[i] - target[i]) * (x[i] - target[i]);
    return t2::train::CemScore{0.0, -d};  // equal accuracy: the tie-breaker decides
  };
  t2::train::CemOptions o;
  o.iters = 25;
  o.seed = 3;
  const auto r = t2::train::cross_entropy_method(3, {0.5, 0.5, 0.5}, objective, o);
  for (size_t i = 0; i < 3; ++i) EXPECT_NEAR(r.best[i], target[i], 0.05);
  for (size_t i = 1; i < r.best_per_iteration.size(); ++i) EXPECT_FALSE(r.best_per_iteration[i] < r.best_per_iteration[i - 1]);
  EXPECT_THROW(t2::train::cross_entropy_method(3, {0.5}, objective, o), t2::InvalidArgument);
}

namespace {

using TrainStories = t2::testing::StoriesSvfTest;

}  // namespace

TEST_F(TrainStories, InitialPolicyIsTheBaseModelAndItsKlIsZero) {
  t2::train::SvfPolicy policy(*model_, *store_, 1.0, 0.1);
  const auto adapted = policy.compose();
  const std::vector<std::vector<int64_t>> prompts = {tokenizer_->encode("Once upon a time", true)};
  const std::vector<std::vector<int64_t>> completions = {tokenizer_->encode(", there was a dog", false)};
  const auto scores = t2::train::score_completions(*model_, adapted, prompts, completions, &model_->base_projections());
  EXPECT_LT(std::abs(scores.kl.item<double>()), 1e-5);
  const auto base = t2::train::score_completions(*model_, model_->base_projections(), prompts, completions);
  EXPECT_NEAR(scores.log_likelihood.item<double>(), base.log_likelihood.item<double>(), 1e-3);
}

TEST_F(TrainStories, RewardSignSetsTheDirectionOfTheLogProbability) {
  const std::vector<std::vector<int64_t>> prompts = {tokenizer_->encode("Once upon a time", true)};
  const std::vector<std::vector<int64_t>> completions = {tokenizer_->encode(", there was a dog named Max", false)};
  for (const double reward : {1.0, -1.0}) {
    t2::train::SvfPolicy policy(*model_, *store_, 1.0, 0.1);
    t2::train::TrainOptions o;
    o.lr = 1e-2;
    o.max_grad_norm = 0;
    t2::train::Reinforce reinforce(*model_, policy, o);
    const double before = t2::train::score_completions(*model_, policy.compose(), prompts, completions).log_likelihood.item<double>();
    reinforce.step(prompts, completions, {reward});
    const double after = t2::train::score_completions(*model_, policy.compose(), prompts, completions).log_likelihood.item<double>();
    if (reward > 0) {
      EXPECT_GT(after, before);
    } else {
      EXPECT_LT(after, before);
    }
  }
}

TEST(TrainGradient, AutogradMatchesFiniteDifferences) {
  // A tiny random model in float64, so central differences are exact enough.
  const auto dir = t2::testing::fresh_dir("fd");
  t2::testing::write_random_checkpoint(dir, t2::testing::tiny_config(), 21);
  const t2::model::Placement f64{at::kCPU, at::kDouble};
  const auto model = t2::model::Transformer::load(dir, f64);
  const auto cache = t2::svf::SvdCache::compute(model, "fd", t2::svf::Targets::kMlp, at::kCPU);
  const t2::svf::AdapterStore store(model, cache, 1 << 30);
  t2::train::SvfPolicy policy(model, store, 2.0, 0.3);
  {
    at::NoGradGuard no_grad;
    at::manual_seed(5);
    for (auto& p : policy.parameters()) p.copy_(at::randn_like(p));
  }
  const std::vector<std::vector<int64_t>> prompts = {{1, 5, 9}}, completions = {{12, 7, 30, 2}};
  const auto f = [&] { return t2::train::score_completions(model, policy.compose(), prompts, completions).log_likelihood.sum(); };
  for (auto& p : policy.parameters()) p.mutable_grad() = at::Tensor();
  f().backward();
  for (const size_t matrix : {size_t{0}, policy.parameters().size() - 1}) {
    at::Tensor& p = policy.parameters()[matrix];
    for (const int64_t i : {int64_t{0}, int64_t{3}}) {
      const double analytic = p.grad()[i].item<double>();
      const double h = 1e-5;
      double plus = 0, minus = 0;
      {
        at::NoGradGuard no_grad;
        p[i] += h;
        plus = f().item<double>();
        p[i] -= 2 * h;
        minus = f().item<double>();
        p[i] += h;
      }
      const double numeric = (plus - minus) / (2 * h);
      EXPECT_NEAR(analytic, numeric, 1e-6 + 1e-4 * std::abs(numeric)) << "matrix " << matrix << " index " << i;
    }
  }
}

TEST_F(TrainStories, ASeededTrainingRunRaisesItsReward) {
  // Task: continue a story so that it mentions a dog (the base model rarely does).
  const auto out = t2::testing::fresh_dir("run") / "dog";
  const auto task_file = out.parent_path() / "dog.jsonl";
  {
    std::ofstream f(task_file);
    const char* starts[] = {"Once upon a time", "One day", "Tom and his mom", "Lily was playing", "There was a little",
                            "The sun was shining", "Sam had a", "In the park", "A little girl", "The boy and his"};
    for (int i = 0; i < 60; ++i) f << R"({"prompt": ")" << starts[(i * 7) % 10] << R"(", "answer": "dog"})" << "\n";
  }
  const auto task = t2::train::Task::load(task_file, RewardKind::kContains);
  t2::train::TrainOptions o;
  o.iters = 40;
  o.batch_size = 16;
  o.lr = 5e-2;
  o.max_grad_norm = 0;
  o.eval_every = 10;
  o.seed = 0;
  o.generation = {48, {2}};
  o.out_dir = out;
  o.name = "dog";
  const auto result = t2::train::train_svf(*model_, *tokenizer_, *store_, task, o);
  EXPECT_GT(result.best_validation, result.base_validation);
  EXPECT_GT(result.best_validation, 0.5);
  // The expert folder is complete and loads as an expert of this model.
  const auto e = t2::svf::Expert::load(out);
  EXPECT_EQ(e.scores["validation_accuracy"], result.best_validation);
  EXPECT_EQ(e.provenance["method"], "reinforce");
  std::ifstream log(out / "train_log.jsonl");
  int lines = 0;
  for (std::string line; std::getline(log, line);) ++lines;
  EXPECT_EQ(lines, 40);

  // Resuming a finished run changes nothing; a longer run continues from the saved state.
  o.iters = 41;
  const auto resumed = t2::train::train_svf(*model_, *tokenizer_, *store_, task, o);
  EXPECT_GE(resumed.best_validation, result.best_validation);
}

TEST(TrainObjective, ParsesBothAndNamesTheFlagOnError) {
  EXPECT_EQ(t2::train::parse_objective("completions"), t2::train::Objective::kCompletions);
  EXPECT_EQ(t2::train::parse_objective("labels"), t2::train::Objective::kLabels);
  for (const char* bad : {"label", "Labels", ""}) {
    try {
      t2::train::parse_objective(bad);
      ADD_FAILURE() << "objective '" << bad << "' accepted";
    } catch (const t2::InvalidArgument& e) {
      EXPECT_EQ(e.param(), "objective");
      EXPECT_NE(std::string(e.what()).find("completions or labels"), std::string::npos) << e.what();
    }
  }
}

namespace {

// Pass 1 as the server runs it: the shipped template and a few random experts
// marked as dispatch targets, plus a classification expert.
class TrainLabels : public TrainStories {
 protected:
  void SetUp() override {
    TrainStories::SetUp();
    if (!ready()) return;
    template_text_ = t2::dispatch::load_template(std::filesystem::path(T2_SOURCE_DIR) / "configs/dispatch/prompt.txt");
    for (const auto& [name, seed] : std::vector<std::pair<std::string, uint64_t>>{{"dragon", 1}, {"princess", 2}, {"router", 3}}) {
      add_expert(name, seed, "stories with a " + name,
                 name == "router" ? t2::svf::DispatchRole::kClassifier : t2::svf::DispatchRole::kTarget);
    }
  }

  // A labels task: each record's answer is a dispatch target or "others".
  t2::train::Task label_task(const std::filesystem::path& file, const std::string& odd_answer = "") const {
    {
      std::ofstream f(file);
      const std::vector<std::pair<std::string, std::string>> records = {
          {"The dragon breathed fire on the hill", "dragon"}, {"The princess lived in a big castle", "princess"},
          {"Tom played with his ball in the park", "others"}, {"A dragon flew over the town", "dragon"},
          {"The princess wore a pretty dress", "princess"},   {"Lily ate an apple", "others"}};
      for (int i = 0; i < 24; ++i) {
        const auto& [prompt, answer] = records[static_cast<size_t>(i) % records.size()];
        f << nlohmann::json{{"prompt", prompt}, {"answer", i == 5 && !odd_answer.empty() ? odd_answer : answer}}.dump() << "\n";
      }
    }
    return t2::train::Task::load(file, RewardKind::kExact);
  }

  t2::train::TrainOptions label_options(const std::filesystem::path& out) const {
    t2::train::TrainOptions o;
    o.objective = t2::train::Objective::kLabels;
    o.labels.template_text = template_text_;
    o.labels.categories = {{"dragon", "stories with a dragon"}, {"princess", "stories with a princess"}};
    o.labels.context = 256;
    o.iters = 3;
    o.batch_size = 4;
    o.eval_every = 1;
    o.seed = 7;
    o.out_dir = out;
    o.name = out.filename().string();
    o.resume = false;
    return o;
  }

  std::string template_text_;
};

}  // namespace

TEST_F(TrainLabels, LabelScoresAreTheDispatchersScores) {
  const std::vector<std::string> requests = {"The dragon flew over the castle", "A princess had a red hat", "Tom"};
  for (const auto scoring : {t2::dispatch::LabelScoring::kMean, t2::dispatch::LabelScoring::kSum}) {
    t2::dispatch::DispatchOptions o;
    o.template_text = template_text_;
    o.scoring = scoring;
    o.context = 256;
    t2::dispatch::Dispatcher d(*model_, *tokenizer_, *store_, o);
    t2::engine::Engine engine(*model_, *tokenizer_, {2}, {1, 0, 2048, 16}, &*store_);
    ASSERT_EQ(d.labels(), (std::vector<std::string>{"dragon", "princess", "others"}));
    const t2::dispatch::AdaptationPrompt prompt(template_text_, *tokenizer_, 256);
    const auto prefix = prompt.prefix(d.categories());
    const auto labels = d.labels();
    const auto classifier = store_->weights(t2::svf::Adaptation::expert("router"));
    for (const auto strategy : {t2::dispatch::Strategy::kPrompt, t2::dispatch::Strategy::kClassifier}) {
      const t2::model::ProjectionSet& weights = strategy == t2::dispatch::Strategy::kPrompt ? model_->base_projections() : *classifier;
      at::Tensor scores;
      {
        c10::InferenceMode guard;
        scores = t2::train::label_scores(*model_, weights, prompt, prefix, requests, labels, scoring, nullptr, nullptr).cpu();
      }
      ASSERT_EQ(scores.size(0), 3);
      ASSERT_EQ(scores.size(1), 3);
      for (size_t r = 0; r < requests.size(); ++r) {
        const auto decision = t2::dispatch::run_pass1(d, engine, strategy, {requests[r]}).front();
        ASSERT_EQ(decision.scores.size(), labels.size());
        for (size_t l = 0; l < labels.size(); ++l) {
          EXPECT_NEAR(scores[static_cast<int64_t>(r)][static_cast<int64_t>(l)].item<double>(), decision.scores.at(labels[l]), 1e-4)
              << requests[r] << " / " << labels[l] << " / " << t2::dispatch::to_string(strategy);
        }
      }
    }
  }
}

TEST_F(TrainLabels, ASeededLabelsRunWritesAClassificationExpert) {
  const auto root = t2::testing::fresh_dir("labels");
  const auto task = label_task(root / "route.jsonl");
  const auto result = t2::train::train_svf(*model_, *tokenizer_, *store_, task, label_options(root / "router2"));
  EXPECT_GE(result.base_validation, 0.0);
  EXPECT_LE(result.best_validation, 1.0);
  EXPECT_GE(result.best_validation, result.base_validation);

  const auto e = t2::svf::Expert::load(root / "router2");
  EXPECT_EQ(e.dispatch, t2::svf::DispatchRole::kClassifier);
  EXPECT_EQ(e.dispatch_labels, (std::vector<std::string>{"dragon", "princess", "others"}));  // the categories, then "others"
  EXPECT_EQ(e.provenance["objective"], "labels");
  EXPECT_EQ(e.provenance["label_scoring"], "mean_logprob");
  EXPECT_EQ(e.provenance["dispatch_template"], template_text_);
  EXPECT_EQ(e.scores["validation_accuracy"], result.best_validation);
  EXPECT_FALSE(e.z.empty());
  std::ifstream log(root / "router2" / "train_log.jsonl");
  int lines = 0;
  for (std::string line; std::getline(log, line);) {
    const auto j = nlohmann::json::parse(line);
    EXPECT_TRUE(j.contains("validation")) << line;  // eval_every 1
    ++lines;
  }
  EXPECT_EQ(lines, 3);

  // The same seed trains the same expert.
  t2::train::train_svf(*model_, *tokenizer_, *store_, task, label_options(root / "again"));
  const auto again = t2::svf::Expert::load(root / "again");
  ASSERT_EQ(again.matrices(), e.matrices());
  for (const auto& [name, z] : e.z) EXPECT_TRUE(at::allclose(again.z.at(name), z, 0, 1e-6)) << name;
}

TEST_F(TrainLabels, ALabelsTaskWhoseAnswerIsNotALabelIsRejected) {
  const auto root = t2::testing::fresh_dir("bad-labels");
  const auto task = label_task(root / "route.jsonl", "unicorn");
  try {
    t2::train::train_svf(*model_, *tokenizer_, *store_, task, label_options(root / "router2"));
    ADD_FAILURE() << "a record labelled 'unicorn' was accepted";
  } catch (const t2::LoadError& e) {
    EXPECT_NE(std::string(e.what()).find("route:6"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("'unicorn' is not a label"), std::string::npos) << e.what();
  }
  EXPECT_FALSE(std::filesystem::exists(root / "router2" / "expert.json"));
}

TEST_F(TrainStories, PerplexityOfGreedyCompletionsUnderTheBaseModel) {
  std::vector<t2::train::Example> examples;
  for (const char* prompt : {"Once upon a time", "Tom had a dog", "The sun was"}) {
    t2::train::Example e;
    e.prompt = prompt;
    e.answer = "dog";
    examples.push_back(e);
  }
  const t2::train::Generation generation{16, {2}};
  const auto evaluation = t2::train::evaluate_with_perplexity(*model_, *tokenizer_, nullptr, examples, RewardKind::kContains, generation);
  EXPECT_TRUE(std::isfinite(evaluation.perplexity));
  EXPECT_GE(evaluation.perplexity, 1.0);
  EXPECT_EQ(evaluation.accuracy.total, 3);
  EXPECT_EQ(evaluation.accuracy.correct,
            t2::train::evaluate(*model_, *tokenizer_, nullptr, examples, RewardKind::kContains, generation).correct);

  // It is exp(mean NLL per completion token), computed by hand here.
  const auto completions =
      t2::train::complete(*model_, *tokenizer_, nullptr, t2::train::model_prompts(*tokenizer_, examples, nullptr), generation);
  ASSERT_EQ(completions.size(), 3u);
  double log_likelihood = 0;
  int64_t tokens = 0;
  {
    c10::InferenceMode guard;
    for (const auto& c : completions) {
      ASSERT_FALSE(c.tokens.empty());
      log_likelihood += t2::train::score_completions(*model_, model_->base_projections(), {c.prompt.tokens}, {c.tokens}).log_likelihood.item<double>();
      tokens += static_cast<int64_t>(c.tokens.size());
    }
  }
  EXPECT_NEAR(t2::train::base_perplexity(*model_, completions), std::exp(-log_likelihood / static_cast<double>(tokens)), 1e-3);
  EXPECT_NEAR(evaluation.perplexity, t2::train::base_perplexity(*model_, completions), 1e-6);

  // Completions without tokens have nothing to be perplexed by.
  EXPECT_EQ(t2::train::base_perplexity(*model_, {}), 1.0);
  t2::train::Completion empty;
  empty.prompt.tokens = tokenizer_->encode("Once upon a time", true);
  EXPECT_EQ(t2::train::base_perplexity(*model_, {empty, empty}), 1.0);
}
