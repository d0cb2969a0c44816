// The fixed-shape decode path (the prepare/execute split) against the
// plain forward on the real stories260K model: padded buckets, rows in any
// slot order, per-row experts. On the CPU the runner executes eagerly and its
// greedy tokens must be exactly the plain forward's; on CUDA the same runner
// replays CUDA graphs, which must give the eager runner's tokens in float32
// and its logits within bf16 rounding, and the decode attention kernel must
// agree with SDPA.
#include <map>

#include <c10/core/InferenceMode.h>
#include <gtest/gtest.h>

#include "support.hpp"
#include "t2/common/errors.hpp"
#include "t2/engine/engine.hpp"
#include "t2/model/decode_attention.hpp"
#include "t2/model/decode_runner.hpp"
#include "t2/svf/adapter_store.hpp"

namespace {

using t2::engine::DecodePath;
using t2::engine::Engine;
using t2::engine::EngineOptions;
using t2::engine::GenerationRequest;
using t2::svf::Adaptation;

class DecodeRunnerTest : public t2::testing::StoriesSvfTest {
 protected:
  void SetUp() override {
    StoriesSvfTest::SetUp();
    if (!ready()) return;
    uint64_t seed = 31;
    for (const char* name : {"bird", "cat"}) add_expert(name, seed++, name, t2::svf::DispatchRole::kTarget);
  }

  struct Run {
    std::vector<std::vector<int64_t>> tokens;
    int64_t fixed_shape_steps = 0, factored_fixed_steps = 0;
    int64_t captured_up_front = 0;
  };

  // Requests over base, two experts and a mixture, joining at different steps,
  // some ending early, so batch sizes cross the buckets and slots free up.
  Run generate(const t2::model::Transformer& model, t2::svf::AdapterStore& store, DecodePath path, bool sampled,
               bool capture_first = false) const {
    EngineOptions options;
    options.max_sequences = 7;  // not a power of two: the last bucket is 7
    options.max_step_tokens = 64;
    options.decode_path = path;
    Engine engine(model, *tokenizer_, {2}, options, &store);
    Run run;
    if (capture_first) run.captured_up_front = engine.capture_decode_graphs();
    const std::vector<Adaptation> all = {Adaptation::base(), Adaptation::expert("bird"), Adaptation::expert("cat"),
                                         Adaptation::parse_mixture("bird=0.3,cat=0.7")};
    const std::vector<std::string> prompts = {"Once upon a time", "The bird sang", "A cat sat on the mat and", "Tom", "Lily went"};
    constexpr size_t kRequests = 10;
    std::map<t2::engine::SequenceId, size_t> index;
    size_t next = 0;
    const auto add = [&] {
      GenerationRequest r;
      r.prompt = tokenizer_->encode(prompts[next % prompts.size()], true);
      r.max_tokens = 6 + static_cast<int64_t>((next * 7) % 13);
      r.ignore_eos = true;
      r.sampling.temperature = sampled ? 0.8 : 0.0;
      r.sampling.seed = 100 + next;
      // Runs of one adaptation (the dense path) and mixes (the factored path).
      r.adapter = store.adapter(all[next < 3 ? 1 : (next * 3) % all.size()]);
      index[engine.add(std::move(r))] = next++;
    };
    run.tokens.resize(kRequests);
    for (int i = 0; i < 3; ++i) add();
    for (int step = 0; engine.active() > 0; ++step) {
      if (step % 4 == 3 && next < kRequests && engine.has_capacity()) add();
      const auto out = engine.step();
      run.fixed_shape_steps += out.fixed_shape ? 1 : 0;
      run.factored_fixed_steps += out.fixed_shape && out.factored ? 1 : 0;
      for (const auto& event : out.tokens) run.tokens[index.at(event.sequence)].push_back(event.token);
    }
    EXPECT_EQ(next, kRequests);
    return run;
  }
};

// Greedy: padding changes the matrix shapes and so the last bits of the
// logits (see the next test), which can move a sampled draw in the far tail
// of the distribution but not an argmax here.
TEST_F(DecodeRunnerTest, FixedShapeStepsGiveThePlainForwardsGreedyTokens) {
  if (!ready()) GTEST_SKIP();
  const Run eager = generate(*model_, *store_, DecodePath::kEager, /*sampled=*/false);
  const Run fixed = generate(*model_, *store_, DecodePath::kFixedShape, /*sampled=*/false);
  EXPECT_EQ(eager.fixed_shape_steps, 0);
  EXPECT_GT(fixed.fixed_shape_steps, 10);
  EXPECT_GT(fixed.factored_fixed_steps, 0);
  for (size_t i = 0; i < eager.tokens.size(); ++i) EXPECT_EQ(fixed.tokens[i], eager.tokens[i]) << "request " << i;
}

TEST_F(DecodeRunnerTest, PaddedRowsInAnySlotOrderMatchTheForwardsLogits) {
  if (!ready()) GTEST_SKIP();
  c10::InferenceMode guard;
  const t2::model::Transformer& model = *model_;
  // Two caches with the same prompts prefilled into the same (scattered) slots.
  t2::model::KVCache runner_cache(model.config(), 6, 64, model.placement());
  t2::model::KVCache plain_cache(model.config(), 6, 64, model.placement());
  t2::model::DecodeRunner runner(model, runner_cache, 4, /*use_graphs=*/false);
  std::vector<int64_t> slots;
  for (int i = 0; i < 5; ++i) slots.push_back(runner_cache.allocate());
  for (int i = 0; i < 6; ++i) plain_cache.allocate();  // the same slot numbers: the runner took the first
  const std::vector<std::vector<int64_t>> prompts = {tokenizer_->encode("Once upon a time", true), tokenizer_->encode("Tom", true),
                                                     tokenizer_->encode("A cat sat on the mat and", true)};
  const std::vector<int64_t> used = {slots[3], slots[0], slots[4]};  // out of order, not contiguous
  for (size_t i = 0; i < used.size(); ++i) {
    for (t2::model::KVCache* cache : {&runner_cache, &plain_cache}) {
      model.forward({{used[i], prompts[i], 1}}, *cache, model.base_projections());
    }
  }
  t2::model::StepWeights base;
  base.dense = &model.base_projections();
  for (int step = 0; step < 3; ++step) {
    std::vector<t2::model::DecodeRow> rows;
    std::vector<t2::model::Chunk> chunks;
    for (size_t i = 0; i < used.size(); ++i) {
      const int64_t token = 10 + static_cast<int64_t>(i) + step;
      rows.push_back({used[i], token, 0});
      chunks.push_back({used[i], {token}, 1});
    }
    const at::Tensor fixed = runner.run(rows, base).clone();  // 3 rows padded to the bucket of 4
    const at::Tensor plain = model.forward(chunks, plain_cache, model.base_projections());
    EXPECT_LT((fixed - plain).abs().max().item<double>(), 1e-4) << "step " << step;
    EXPECT_TRUE(fixed.argmax(-1).equal(plain.argmax(-1)));
    for (const int64_t slot : used) EXPECT_EQ(runner_cache.length(slot), plain_cache.length(slot));
  }
  EXPECT_EQ(runner.buckets(), (std::vector<int64_t>{1, 2, 4}));
  EXPECT_THROW(runner.run({{slots[1], 1, 0}, {slots[1], 2, 0}}, base), t2::InvalidArgument);  // one slot twice
  EXPECT_THROW(runner.run({{slots[1], 1 << 20, 0}}, base), t2::InvalidArgument);             // outside the vocabulary
}

TEST_F(DecodeRunnerTest, CudaGraphsGiveTheEagerTokensOnCuda) {
  if (!ready()) GTEST_SKIP();
  if (!at::hasCUDA()) GTEST_SKIP() << "no CUDA device";
  const t2::model::Placement cuda{at::Device(at::kCUDA, 0), at::kFloat};
  const auto model = t2::model::Transformer::load(dir_, cuda);
  const auto cache = t2::svf::SvdCache::compute(model, t2::model::checkpoint_fingerprint(dir_), t2::svf::Targets::kMlp, cuda.device);
  t2::svf::AdapterStore store(model, cache, int64_t{1} << 30);
  for (const auto& e : store_->experts()) store.add(e);
  // Replays against the same padded steps run eagerly, greedy and sampled.
  for (const bool sampled : {false, true}) {
    const Run eager = generate(model, store, DecodePath::kFixedShape, sampled);
    const Run graphs = generate(model, store, DecodePath::kGraphs, sampled);
    EXPECT_GT(graphs.fixed_shape_steps, 10);
    EXPECT_GT(graphs.factored_fixed_steps, 0);
    for (size_t i = 0; i < eager.tokens.size(); ++i) EXPECT_EQ(graphs.tokens[i], eager.tokens[i]) << "request " << i << " sampled " << sampled;
  }
  // And against the plain forward (no padding), with the graphs captured
  // before the first request: base and factored, buckets 1, 2, 4 and 7.
  const Run plain = generate(model, store, DecodePath::kEager, false);
  const Run graphs = generate(model, store, DecodePath::kGraphs, false, /*capture_first=*/true);
  EXPECT_EQ(graphs.captured_up_front, 8);
  EXPECT_EQ(plain.captured_up_front, 0);
  for (size_t i = 0; i < plain.tokens.size(); ++i) EXPECT_EQ(graphs.tokens[i], plain.tokens[i]) << "request " << i;
}

// In bf16, cuBLAS may pick other kernels inside a capture, so the graph's
// logits match the eager step's within bf16 rounding rather than bit for bit.
TEST_F(DecodeRunnerTest, CudaGraphLogitsMatchTheEagerStepsInBf16) {
  if (!ready()) GTEST_SKIP();
  if (!at::hasCUDA()) GTEST_SKIP() << "no CUDA device";
  c10::InferenceMode guard;
  const auto model = t2::model::Transformer::load(dir_, {at::Device(at::kCUDA, 0), at::kBFloat16});
  t2::model::KVCache graph_cache(model.config(), 5, 64, model.placement());
  t2::model::KVCache eager_cache(model.config(), 5, 64, model.placement());
  t2::model::DecodeRunner graphs(model, graph_cache, 4, /*use_graphs=*/true);
  t2::model::DecodeRunner eager(model, eager_cache, 4, /*use_graphs=*/false);
  const std::vector<std::vector<int64_t>> prompts = {tokenizer_->encode("Once upon a time", true), tokenizer_->encode("Tom", true),
                                                     tokenizer_->encode("A cat sat on the mat and", true)};
  std::vector<int64_t> slots;
  for (const auto& prompt : prompts) {
    slots.push_back(graph_cache.allocate());
    ASSERT_EQ(eager_cache.allocate(), slots.back());
    for (t2::model::KVCache* cache : {&graph_cache, &eager_cache}) model.forward({{slots.back(), prompt, 1}}, *cache, model.base_projections());
  }
  t2::model::StepWeights base;
  base.dense = &model.base_projections();
  // Captured up front (padding rows only), replayed for the real rows.
  EXPECT_EQ(graphs.capture(base), 3);  // buckets 1, 2, 4
  EXPECT_EQ(eager.capture(base), 0);
  for (int step = 0; step < 4; ++step) {
    std::vector<t2::model::DecodeRow> rows;
    for (size_t i = 0; i < slots.size(); ++i) rows.push_back({slots[i], 20 + static_cast<int64_t>(i) + step, 0});
    const at::Tensor replayed = graphs.run(rows, base).clone();
    const at::Tensor expected = eager.run(rows, base);
    const double scale = expected.abs().max().item<double>();
    EXPECT_LT((replayed - expected).abs().max().item<double>(), 2e-2 * scale) << "step " << step;
  }
  EXPECT_EQ(graphs.captured_graphs(), 3);  // nothing captured after the first step
}

// Attention of one query row over its slot's first `length` keys (a window
// keeps the last ones), in float, with the query heads of a group repeated.
at::Tensor reference_attention(const at::Tensor& q_row, const at::Tensor& slot_k, const at::Tensor& slot_v, int64_t length,
                               std::optional<int64_t> window, double scale) {
  const int64_t H = q_row.size(0), KV = slot_k.size(1);
  const int64_t first = window && length > *window ? length - *window : 0;
  const at::Tensor keys = slot_k.narrow(0, first, length - first).to(at::kFloat);  // [L', KV, D]
  const at::Tensor values = slot_v.narrow(0, first, length - first).to(at::kFloat);
  const at::Tensor expanded_k = keys.repeat_interleave(H / KV, 1).permute({1, 0, 2});  // [H, L', D]
  const at::Tensor expanded_v = values.repeat_interleave(H / KV, 1).permute({1, 0, 2});
  const at::Tensor weights = (at::matmul(expanded_k, q_row.to(at::kFloat).unsqueeze(-1)).squeeze(-1) * scale).softmax(-1);
  return at::matmul(weights.unsqueeze(1), expanded_v).squeeze(1);  // [H, D]
}

// The decode kernel against plain attention, for GQA groups, head sizes,
// lengths across split and tile boundaries and a sliding window.
TEST(DecodeAttention, MatchesPlainAttentionOnCuda) {
  if (!at::hasCUDA()) GTEST_SKIP() << "no CUDA device";
  c10::InferenceMode guard;
  at::manual_seed(5);
  struct Shape {
    int64_t heads, kv_heads, head_dim;
    std::optional<int64_t> window;
  };
  for (const Shape shape : {Shape{32, 8, 128, {}}, Shape{8, 4, 8, {}}, Shape{28, 4, 128, {}}, Shape{16, 16, 64, 100},
                            Shape{8, 1, 256, {}}}) {
    for (const auto dtype : {at::kFloat, at::kHalf, at::kBFloat16}) {
      const auto options = at::TensorOptions().device(at::kCUDA).dtype(dtype);
      const int64_t slots = 6, capacity = 700, D = shape.head_dim, H = shape.heads, KV = shape.kv_heads;
      const at::Tensor k = at::randn({slots, capacity, KV, D}, options);
      const at::Tensor v = at::randn({slots, capacity, KV, D}, options);
      const std::vector<int64_t> row_slots = {4, 0, 2, 5, 1};
      const std::vector<int64_t> lengths = {1, 128, 129, 700, 333};
      const auto N = static_cast<int64_t>(row_slots.size());
      const at::Tensor q = at::randn({N, H, D}, options);
      const double scale = 1.0 / std::sqrt(static_cast<double>(D));
      const at::Tensor out = t2::model::decode_attention(q, k, v, at::tensor(row_slots).cuda(), at::tensor(lengths).cuda(),
                                                         shape.window, scale)
                                 .view({N, H, D})
                                 .to(at::kFloat);
      for (int64_t n = 0; n < N; ++n) {
        const auto i = static_cast<size_t>(n);
        const at::Tensor expected = reference_attention(q[n], k[row_slots[i]], v[row_slots[i]], lengths[i], shape.window, scale);
        const double tolerance = dtype == at::kFloat ? 1e-4 : 2e-2;
        EXPECT_LT((out[n] - expected).abs().max().item<double>(), tolerance)
            << "heads " << H << "/" << KV << " D " << D << " length " << lengths[i] << " " << c10::toString(dtype);
      }
    }
  }
}

// With a row per slot of a full batch the GPU needs few splits, so a block
// takes many tiles of keys and rescales its sums from tile to tile.
TEST(DecodeAttention, ManyRowsMatchPlainAttentionOnCuda) {
  if (!at::hasCUDA()) GTEST_SKIP() << "no CUDA device";
  c10::InferenceMode guard;
  at::manual_seed(6);
  const int64_t N = 64, capacity = 1000, H = 32, KV = 8, D = 128;
  const auto options = at::TensorOptions().device(at::kCUDA).dtype(at::kBFloat16);
  const at::Tensor k = at::randn({N, capacity, KV, D}, options);
  const at::Tensor v = at::randn({N, capacity, KV, D}, options);
  const at::Tensor q = at::randn({N, H, D}, options);
  const at::Tensor slots = at::randperm(N, at::TensorOptions().dtype(at::kLong));
  const at::Tensor lengths = at::randint(1, capacity + 1, {N}, at::TensorOptions().dtype(at::kLong));
  const double scale = 1.0 / std::sqrt(static_cast<double>(D));
  const at::Tensor out =
      t2::model::decode_attention(q, k, v, slots.cuda(), lengths.cuda(), std::nullopt, scale).view({N, H, D}).to(at::kFloat);
  for (int64_t n = 0; n < N; ++n) {
    const int64_t slot = slots[n].item<int64_t>(), length = lengths[n].item<int64_t>();
    const at::Tensor expected = reference_attention(q[n], k[slot], v[slot], length, std::nullopt, scale);
    EXPECT_LT((out[n] - expected).abs().max().item<double>(), 2e-2) << "row " << n << " length " << length;
  }
}

}  // namespace
