// One forward for any mix of adapters (the engine issue) on the real
// stories260K model in float32: the factored per-row SVF path gives the
// composed-W' logits for experts, mixtures and base rows in one batch; a
// batch of 32 greedy requests over base, three experts and a mixture, with
// chunked prefill sharing steps with decodes, gives each request exactly its
// solo tokens; pass 1's scoring rows ride in the same steps as the decodes.
#include <iostream>
#include <map>

#include <c10/core/InferenceMode.h>
#include <gtest/gtest.h>

#include "support.hpp"
#include "t2/engine/engine.hpp"
#include "t2/svf/adapter_store.hpp"

namespace {

using t2::engine::Engine;
using t2::engine::EngineOptions;
using t2::engine::GenerationRequest;
using t2::svf::Adaptation;

class ExpertMixTest : public t2::testing::StoriesSvfTest {
 protected:
  void SetUp() override {
    StoriesSvfTest::SetUp();
    if (!ready()) return;
    uint64_t seed = 21;
    for (const char* name : {"bird", "cat", "dog"}) add_expert(name, seed++, name, t2::svf::DispatchRole::kTarget);
  }

  // The adaptations a batch mixes: base, each expert, and a mixture.
  std::vector<Adaptation> adaptations() const {
    return {Adaptation::base(), Adaptation::expert("bird"), Adaptation::expert("cat"), Adaptation::expert("dog"),
            Adaptation::parse_mixture("cat=0.6,dog=0.4")};
  }
};

std::vector<std::vector<int64_t>> mix_prompts(const t2::tokenizer::Tokenizer& tokenizer) {
  return {tokenizer.encode("Once upon a time", true), tokenizer.encode("The bird sang", true),
          tokenizer.encode("A cat sat on the mat and", true), tokenizer.encode("Tom had a dog", true),
          tokenizer.encode("Lily", true)};
}

// Each adaptation alone on its composed dense weights: prefill logits, then one decode token's.
struct AloneLogits {
  std::vector<at::Tensor> prefill, decode;  // float32, on the CPU
};
AloneLogits alone_logits(const t2::model::Transformer& model, t2::svf::AdapterStore& store,
                         const std::vector<std::vector<int64_t>>& prompts, const std::vector<Adaptation>& all) {
  c10::InferenceMode guard;
  AloneLogits out;
  for (size_t i = 0; i < all.size(); ++i) {
    t2::model::KVCache cache(model.config(), 1, 64, model.placement());
    const int64_t slot = cache.allocate();
    const auto composed = store.weights(all[i]);
    const t2::model::ProjectionSet& weights = composed ? *composed : model.base_projections();
    out.prefill.push_back(model.forward({{slot, prompts[i], static_cast<int64_t>(prompts[i].size())}}, cache, weights).cpu().to(at::kFloat));
    out.decode.push_back(model.forward({{slot, {7}}}, cache, weights).cpu().to(at::kFloat));
  }
  return out;
}

// Absolute: the largest |Δlogit|. Relative: ||Δ|| / ||logits||, as the bf16 HF-equivalence tests measure.
double logit_gap(const at::Tensor& ours, const at::Tensor& reference, bool relative) {
  const at::Tensor delta = (ours - reference).to(at::kDouble);
  return relative ? delta.norm().item<double>() / reference.to(at::kDouble).norm().item<double>()
                  : delta.abs().max().item<double>();
}

// Per adaptation, the larger of its prefill and decode gaps between two runs.
std::vector<double> gaps_between(const AloneLogits& ours, const AloneLogits& reference, bool relative) {
  std::vector<double> gaps;
  for (size_t i = 0; i < ours.prefill.size(); ++i) {
    gaps.push_back(std::max(logit_gap(ours.prefill[i], reference.prefill[i], relative),
                            logit_gap(ours.decode[i], reference.decode[i], relative)));
  }
  return gaps;
}

// For each adaptation: how far one factored forward of every adaptation's
// rows together (on `model`) is from its composed weights alone (on
// `reference`, e.g. the float32 CPU model), over a prefill and a decode step.
std::vector<double> factored_gaps(const t2::model::Transformer& model, t2::svf::AdapterStore& store,
                                  const t2::model::Transformer& reference, t2::svf::AdapterStore& reference_store,
                                  const t2::tokenizer::Tokenizer& tokenizer, const std::vector<Adaptation>& all,
                                  bool relative) {
  c10::InferenceMode guard;
  const auto prompts = mix_prompts(tokenizer);
  const AloneLogits dense = alone_logits(reference, reference_store, prompts, all);
  // All together in one factored forward, then one factored decode step.
  t2::svf::AdapterTable table(model, store.factors(), 8);
  table.begin_step();
  std::vector<bool> adapted(static_cast<size_t>(model.config().num_layers * t2::model::kNumProjections), false);
  std::vector<int64_t> row_slots;
  for (const auto& a : all) {
    const auto adapter = store.adapter(a);
    row_slots.push_back(adapter ? table.slot_for(*adapter) : t2::svf::AdapterTable::kBaseSlot);
    if (adapter) table.mark_adapted(*adapter, adapted);
  }
  t2::model::KVCache cache(model.config(), static_cast<int64_t>(all.size()), 64, model.placement());
  std::vector<t2::model::Chunk> prefill, decode;
  std::vector<int64_t> prefill_slots, decode_slots;
  for (size_t i = 0; i < all.size(); ++i) {
    const int64_t slot = cache.allocate();
    prefill.push_back({slot, prompts[i], static_cast<int64_t>(prompts[i].size())});
    decode.push_back({slot, {7}});
    prefill_slots.insert(prefill_slots.end(), prompts[i].size(), row_slots[i]);
    decode_slots.push_back(row_slots[i]);
  }
  const auto run = [&](const std::vector<t2::model::Chunk>& chunks, const std::vector<int64_t>& slots) {
    return model
        .forward(chunks, cache,
                 t2::model::AdapterBatch::factored(model.base_projections(), table.factor_table(),
                                                   at::tensor(slots, at::kLong).to(model.placement().device), adapted))
        .cpu();
  };
  const at::Tensor together_prefill = run(prefill, prefill_slots).to(at::kFloat);
  const at::Tensor together_decode = run(decode, decode_slots).to(at::kFloat);
  AloneLogits together;
  int64_t offset = 0;
  for (size_t i = 0; i < all.size(); ++i) {
    const auto n = static_cast<int64_t>(prompts[i].size());
    together.prefill.push_back(together_prefill.narrow(0, offset, n));
    together.decode.push_back(together_decode.narrow(0, static_cast<int64_t>(i), 1));
    offset += n;
  }
  // The experts really differ from the base, so the rows did not all run one set.
  EXPECT_GT((dense.decode[1] - dense.decode[0]).abs().max().item<double>(), 1e-2);
  return gaps_between(together, dense, relative);
}

TEST_F(ExpertMixTest, FactoredRowsMatchTheComposedWeights) {
  if (!ready()) GTEST_SKIP();
  const auto all = adaptations();
  const auto gaps = factored_gaps(*model_, *store_, *model_, *store_, *tokenizer_, all, /*relative=*/false);
  for (size_t i = 0; i < all.size(); ++i) EXPECT_LT(gaps[i], 1e-4) << all[i].key();
}

TEST_F(ExpertMixTest, FactoredRowsMatchTheComposedWeightsInBf16OnCuda) {
  if (!ready()) GTEST_SKIP();
  if (!at::hasCUDA()) GTEST_SKIP() << "no CUDA device";
  const t2::model::Placement cuda{at::Device(at::kCUDA, 0), at::kBFloat16};
  const auto model = t2::model::Transformer::load(dir_, cuda);
  const std::string fingerprint = t2::model::checkpoint_fingerprint(dir_);
  const auto cache = t2::svf::SvdCache::compute(model, fingerprint, t2::svf::Targets::kMlp, cuda.device);
  t2::svf::AdapterStore store(model, cache, int64_t{1} << 30);
  for (const auto& e : store_->experts()) store.add(e);
  const auto all = adaptations();
  // Both bf16 paths against the float32 composed weights: the factored path
  // (three roundings per matrix: x·Vᵀ, the scale, ·Uᵀ) may lose a little more
  // than the composed W' (one), but stays of the same order.
  const auto factored = factored_gaps(model, store, *model_, *store_, *tokenizer_, all, /*relative=*/true);
  const auto prompts = mix_prompts(*tokenizer_);
  const auto dense = gaps_between(alone_logits(model, store, prompts, all), alone_logits(*model_, *store_, prompts, all), true);
  for (size_t i = 0; i < all.size(); ++i) {
    std::cout << all[i].key() << ": bf16 factored " << factored[i] << ", bf16 composed " << dense[i] << " (relative to float32)\n";
    EXPECT_LT(dense[i], 5e-2) << all[i].key();
    EXPECT_LT(factored[i], 2 * dense[i] + 1e-2) << all[i].key();
  }
}

TEST_F(ExpertMixTest, ThirtyTwoMixedRequestsGiveTheirSoloTokens) {
  if (!ready()) GTEST_SKIP();
  const auto all = adaptations();
  const std::vector<std::string> openers = {"Once upon a time", "The little bird", "A big cat and a small dog",
                                            "Lily went to the park", "Tom"};
  const auto request = [&](size_t i) {
    GenerationRequest r;
    // Prompts of different lengths, some longer than the step budget below.
    r.prompt = tokenizer_->encode(openers[i % openers.size()] + std::string(i % 3 == 0 ? " and then they played all day long" : ""), true);
    r.max_tokens = 12 + static_cast<int64_t>(i % 5);
    r.sampling.temperature = 0;
    r.adapter = store_->adapter(all[i % all.size()]);
    return r;
  };
  constexpr size_t kRequests = 32;
  // Solo: one sequence per engine, its whole prompt in one step.
  std::vector<std::vector<int64_t>> solo(kRequests);
  for (size_t i = 0; i < kRequests; ++i) {
    Engine e(*model_, *tokenizer_, {2}, {1, 0}, &*store_);
    e.add(request(i));
    while (e.active() > 0) {
      for (const auto& event : e.step().tokens) solo[i].push_back(event.token);
    }
  }
  // Together: 32 slots and a 40-token step budget (32 decodes leave 8 for
  // prompt chunks), so prompts prefill in chunks beside the others' decodes
  // and rows of all five adaptations share steps.
  EngineOptions options{32, 0, 40, 0};
  Engine e(*model_, *tokenizer_, {2}, options, &*store_);
  std::map<t2::engine::SequenceId, size_t> index;
  for (size_t i = 0; i < kRequests; ++i) index[e.add(request(i))] = i;
  std::vector<std::vector<int64_t>> together(kRequests);
  int64_t factored_steps = 0;
  int64_t chunked_steps = 0;
  while (e.active() > 0) {
    const auto out = e.step();
    factored_steps += out.factored ? 1 : 0;
    chunked_steps += out.tokens_run == 40 ? 1 : 0;
    for (const auto& event : out.tokens) together[index.at(event.sequence)].push_back(event.token);
  }
  for (size_t i = 0; i < kRequests; ++i) EXPECT_EQ(together[i], solo[i]) << "request " << i << " (" << all[i % all.size()].key() << ")";
  EXPECT_GT(factored_steps, 0);
  EXPECT_GT(chunked_steps, 0);  // the budget was the limit at least once
}

TEST_F(ExpertMixTest, ScoringRowsShareTheDecodeSteps) {
  if (!ready()) GTEST_SKIP();
  Engine e(*model_, *tokenizer_, {2}, {4, 0, 2048, 8}, &*store_);
  std::vector<t2::engine::SequenceId> decoding;
  for (int i = 0; i < 4; ++i) {
    GenerationRequest r;
    r.prompt = tokenizer_->encode("Once upon a time", true);
    r.max_tokens = 20;
    r.ignore_eos = true;
    r.adapter = store_->adapter(adaptations()[static_cast<size_t>(i)]);
    decoding.push_back(e.add(r));
  }
  e.step();  // prefills them
  const auto score = [&] {
    t2::engine::ScoringRequest s;
    s.prefix = tokenizer_->encode("Pick a label for the story:", true);
    s.context = tokenizer_->encode(" A bird flew away. Label:", false);
    s.continuations = {tokenizer_->encode(" bird", false), tokenizer_->encode(" cat", false), {5, 6, 7}};
    s.adapter = store_->adapter(Adaptation::expert("dog"));
    return e.score(s);
  };
  std::vector<int> steps_to_score;
  for (int round = 0; round < 2; ++round) {
    const auto id = score();
    for (int step = 1;; ++step) {
      const auto out = e.step();
      // Every decoding sequence advanced in this step, pass 1 or not.
      std::map<t2::engine::SequenceId, int> tokens;
      for (const auto& event : out.tokens) ++tokens[event.sequence];
      for (const auto d : decoding) EXPECT_EQ(tokens[d], 1) << "round " << round << " step " << step;
      if (!out.scores.empty()) {
        ASSERT_EQ(out.scores[0].request, id);
        ASSERT_EQ(out.scores[0].logprobs.size(), 3u);
        EXPECT_EQ(out.scores[0].logprobs[2].size(), 3u);
        for (const auto& lp : out.scores[0].logprobs) {
          for (const double p : lp) EXPECT_LT(p, 0.0);
        }
        steps_to_score.push_back(step);
        break;
      }
      ASSERT_LT(step, 3);
    }
  }
  // The first request fills the cached prefix (one step) then scores; the next scores at once.
  EXPECT_EQ(steps_to_score, (std::vector<int>{2, 1}));
}

}  // namespace
