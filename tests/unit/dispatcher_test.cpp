// Pass 1 on stories260K: the constrained scores are exactly the model's
// mean log-probability of each label's tokens after the adaptation prompt,
// however the prefix cache and shared tokens are used to compute them; the
// categories are the experts marked as dispatch targets; a template that
// cannot list them fails when the dispatcher is made, not per request.
#include <ATen/ATen.h>
#include <c10/core/InferenceMode.h>
#include <gtest/gtest.h>

#include "support.hpp"
#include "t2/common/errors.hpp"
#include "t2/dispatch/dispatcher.hpp"

namespace {

class DispatcherTest : public t2::testing::StoriesSvfTest {
 protected:
  void SetUp() override {
    StoriesSvfTest::SetUp();
    if (!ready()) return;
    for (const auto& [name, seed] : std::vector<std::pair<std::string, uint64_t>>{{"dragon", 1}, {"princess", 2}, {"router", 3}}) {
      add_expert(name, seed, "stories with a " + name,
                 name == "router" ? t2::svf::DispatchRole::kClassifier : t2::svf::DispatchRole::kTarget);
    }
  }

  t2::dispatch::Dispatcher dispatcher(bool constrained = true, t2::dispatch::LabelScoring scoring = t2::dispatch::LabelScoring::kMean) {
    t2::dispatch::DispatchOptions o;
    o.template_text = "Pick one:\n{experts}\n- others\nStory: {prompt}\nAnswer: \\boxed{";
    o.constrained = constrained;
    o.scoring = scoring;
    return t2::dispatch::Dispatcher(*model_, *tokenizer_, *store_, o);
  }

  // Pass 1 run to the end on an engine of its own.
  t2::dispatch::Decision decide(t2::dispatch::Dispatcher& d, t2::dispatch::Strategy strategy, const std::string& prompt) {
    if (!engine_) engine_.emplace(*model_, *tokenizer_, std::vector<int64_t>{2}, t2::engine::EngineOptions{1, 0, 2048, 16}, &*store_);
    return t2::dispatch::run_pass1(d, *engine_, strategy, {prompt}).front();
  }

  // The dispatcher's definition, computed in one cache-free forward per label:
  // the log-probability of the tokens of context + label after those all labels
  // share, summed or averaged over those tokens.
  std::map<std::string, double> brute_force(const std::string& template_prefix, const std::string& context,
                                            const std::vector<std::string>& labels, bool mean) const {
    c10::InferenceMode guard;
    const auto prefix = tokenizer_->encode_with_specials("<s>" + template_prefix);
    std::vector<std::vector<int64_t>> sequences;
    for (const auto& label : labels) sequences.push_back(tokenizer_->encode(context + label, false));
    size_t common = sequences[0].size();
    for (const auto& s : sequences) {
      common = std::min(common, s.size() - 1);
      for (size_t i = 0; i < common; ++i) {
        if (s[i] != sequences[0][i]) common = i;
      }
    }
    std::map<std::string, double> scores;
    for (size_t i = 0; i < labels.size(); ++i) {
      std::vector<int64_t> tokens = prefix;
      tokens.insert(tokens.end(), sequences[i].begin(), sequences[i].end());
      const at::Tensor logp = model_->forward_full(at::tensor(tokens, at::kLong).view({1, -1}), {static_cast<int64_t>(tokens.size())},
                                                   model_->base_projections())[0].log_softmax(-1);
      double score = 0;
      for (size_t t = prefix.size() + common; t < tokens.size(); ++t) score += logp[static_cast<int64_t>(t - 1)][tokens[t]].item<double>();
      scores[labels[i]] = mean ? score / static_cast<double>(sequences[i].size() - common) : score;
    }
    return scores;
  }

  std::optional<t2::engine::Engine> engine_;
};

}  // namespace

TEST_F(DispatcherTest, ConstrainedScoresAreTheLabelsLogLikelihood) {
  for (const bool mean : {true, false}) {
    auto d = dispatcher(true, mean ? t2::dispatch::LabelScoring::kMean : t2::dispatch::LabelScoring::kSum);
    const std::string prompt = "The dragon flew over the castle";
    const auto decision = decide(d, t2::dispatch::Strategy::kPrompt, prompt);
    EXPECT_EQ(decision.scoring, mean ? t2::dispatch::LabelScoring::kMean : t2::dispatch::LabelScoring::kSum);
    const auto expected = brute_force(
        "Pick one:\n- dragon: stories with a dragon\n- princess: stories with a princess\n- others\nStory:",
        prompt + "\nAnswer: \\boxed{", d.labels(), mean);
    ASSERT_EQ(decision.scores.size(), 3u);
    for (const auto& [label, score] : expected) EXPECT_NEAR(decision.scores.at(label), score, 1e-3) << label;
  }
  auto d = dispatcher();
  EXPECT_EQ(d.labels(), (std::vector<std::string>{"dragon", "princess", "others"}));
  EXPECT_EQ(d.classifier(), "router");  // the expert marked "classifier", never a label
  EXPECT_EQ(d.automatic_strategy(), t2::dispatch::Strategy::kClassifier);
  const std::string prompt = "The dragon flew over the castle";
  const auto decision = decide(d, t2::dispatch::Strategy::kPrompt, prompt);
  double best = -1e300;
  for (const auto& [label, score] : decision.scores) best = std::max(best, score);
  EXPECT_EQ(decision.scores.at(decision.label), best);
  EXPECT_EQ(decision.adaptation.key(), decision.label == "others" ? "base" : decision.label);
  EXPECT_GT(decision.cached_tokens, 0);

  // The next request reuses the cached template and scores the same.
  const auto again = decide(d, t2::dispatch::Strategy::kPrompt, prompt);
  EXPECT_EQ(again.scores, decision.scores);
  EXPECT_EQ(again.cached_tokens, decision.cached_tokens);
}

TEST_F(DispatcherTest, ClassifierRunsUnderItsExpertAndLabelsFollowTheStore) {
  auto d = dispatcher();
  const auto by_prompt = decide(d, t2::dispatch::Strategy::kPrompt, "A princess");
  const auto by_classifier = decide(d, t2::dispatch::Strategy::kClassifier, "A princess");
  EXPECT_EQ(by_classifier.strategy, t2::dispatch::Strategy::kClassifier);
  EXPECT_NE(by_classifier.scores, by_prompt.scores);  // other weights, other likelihoods
  store_->remove("princess");
  EXPECT_EQ(decide(d, t2::dispatch::Strategy::kPrompt, "A princess").scores.count("princess"), 0u);
  store_->remove("router");
  EXPECT_THROW(decide(d, t2::dispatch::Strategy::kClassifier, "x"), t2::InvalidArgument);
  EXPECT_EQ(d.automatic_strategy(), t2::dispatch::Strategy::kPrompt);  // targets, no classifier
}

TEST_F(DispatcherTest, OnlyMarkedTargetsAreCategories) {
  auto e = *store_->find("dragon");
  e.name = "helper";
  e.dispatch = t2::svf::DispatchRole::kNone;  // e.g. a CEM mixture or an expert used only by name
  store_->add(e);
  EXPECT_EQ(dispatcher().labels(), (std::vector<std::string>{"dragon", "princess", "others"}));
}

TEST_F(DispatcherTest, ATemplateThatCannotListTheTargetsFailsAtStartup) {
  // 20 targets with long descriptions: the descriptions are dropped first.
  for (int i = 0; i < 20; ++i) {
    auto e = *store_->find("dragon");
    e.name = "expert" + std::to_string(i);
    e.description = "stories about a brave little dragon who flies over the big green hill every single day";
    store_->add(e);
  }
  t2::dispatch::DispatchOptions o;
  o.template_text = "Pick one:\n{experts}\nStory: {prompt}\nAnswer: \\boxed{";
  o.context = 512;
  const t2::dispatch::Dispatcher shortened(*model_, *tokenizer_, *store_, o);
  EXPECT_EQ(shortened.labels().size(), 23u);
  // 120 targets do not fit even by name: the constructor says so, naming the way out.
  for (int i = 20; i < 120; ++i) {
    auto e = *store_->find("dragon");
    e.name = "expert" + std::to_string(i);
    store_->add(e);
  }
  try {
    t2::dispatch::Dispatcher d(*model_, *tokenizer_, *store_, o);
    FAIL() << "expected the template to be too long";
  } catch (const t2::InvalidArgument& e) {
    EXPECT_EQ(e.param(), "dispatch_template");
    EXPECT_NE(std::string(e.what()).find("122 dispatch targets"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("without descriptions"), std::string::npos) << e.what();
  }
}

TEST(AdaptationPrompt, DescriptionsAreDroppedBeforeTheTemplateFails) {
  const auto tokenizer = t2::tokenizer::Tokenizer::load(t2::testing::stories_dir());
  // A context of 80 leaves the fixed part 40 tokens: one described category
  // takes 33, two take 69 with their descriptions and 26 without.
  const t2::dispatch::AdaptationPrompt prompt("Categories:\n{experts}\nRequest: {prompt}\nCategory:", tokenizer, 80);
  const std::vector<t2::dispatch::Category> few = {{"cat", "stories about a cat"}};
  EXPECT_TRUE(prompt.prefix(few).with_descriptions);
  EXPECT_EQ(prompt.prefix(few).tokens[0], tokenizer.bos_id());
  const std::vector<t2::dispatch::Category> more = {{"cat", "stories about a cat that sleeps all day long"},
                                                    {"dog", "stories about a dog that runs in the park"}};
  const auto shortened = prompt.prefix(more);
  EXPECT_FALSE(shortened.with_descriptions);
  EXPECT_EQ(shortened.text, "Categories:\n- cat\n- dog\nRequest:");
  const auto c = prompt.candidates("a story about a dog", {"cat", "dog", "others"}, static_cast<int64_t>(shortened.tokens.size()));
  ASSERT_EQ(c.label_tokens.size(), 3u);
  for (const auto& own : c.label_tokens) EXPECT_FALSE(own.empty());
  // Twelve names do not fit even without descriptions.
  std::vector<t2::dispatch::Category> crowd;
  for (int i = 0; i < 12; ++i) crowd.push_back({"cat" + std::to_string(i), ""});
  try {
    prompt.prefix(crowd);
    ADD_FAILURE() << "twelve categories fitted in 40 tokens";
  } catch (const t2::InvalidArgument& e) {
    EXPECT_EQ(e.param(), "dispatch_template");
    EXPECT_NE(std::string(e.what()).find("12 dispatch targets"), std::string::npos) << e.what();
  }
  EXPECT_THROW(t2::dispatch::AdaptationPrompt("no placeholder", tokenizer, 64), t2::InvalidArgument);
}

TEST_F(DispatcherTest, FreeTextAnswersFallBackToOthers) {
  auto d = dispatcher(/*constrained=*/false);
  const auto decision = decide(d, t2::dispatch::Strategy::kPrompt, "Once upon a time");
  const auto labels = d.labels();
  EXPECT_NE(std::find(labels.begin(), labels.end(), decision.label), labels.end());
  EXPECT_TRUE(decision.scores.empty());
  EXPECT_GT(decision.prompt_tokens, 0);
}
