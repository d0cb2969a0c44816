// SVF on the real stories260K model: the SVD cache, expert folders and their
// validation, composition, mixtures and the adapter store.
#include <cstring>
#include <fstream>
#include <limits>
#include <thread>

#include <ATen/ATen.h>
#include <c10/core/InferenceMode.h>
#include <gtest/gtest.h>

#include "support.hpp"
#include "t2/common/errors.hpp"
#include "t2/engine/engine.hpp"
#include "t2/model/safetensors.hpp"
#include "t2/svf/adapter_store.hpp"
#include "t2/svf/compose.hpp"
#include "t2/svf/reference_import.hpp"

using t2::svf::Adaptation;
using t2::svf::AdapterStore;
using t2::svf::Expert;
using t2::svf::MatrixId;
using t2::svf::SvdCache;
using t2::svf::Targets;

TEST(SvfCompose, HandComputedMatrix) {
  // W = diag(3, 1): U = V = I, s = (3, 1). z = (1, 0.5) gives s*z = (3, 0.5),
  // rescaled by sum(s) / sum(s*z) = 4 / 3.5.
  const at::Tensor U = at::eye(2), Vh = at::eye(2);
  const at::Tensor s = at::tensor({3.0f, 1.0f});
  const at::Tensor w = t2::svf::compose(U, s, Vh, at::tensor({1.0f, 0.5f}));
  const at::Tensor expected = at::tensor({3.0f * 4 / 3.5f, 0.0f, 0.0f, 0.5f * 4 / 3.5f}).view({2, 2});
  EXPECT_TRUE(at::allclose(w, expected, 1e-6, 1e-6)) << w;
}

TEST(SvfCompose, OnesGiveTheMatrixBackAndScaleKeepsTheNuclearNorm) {
  at::manual_seed(3);
  const at::Tensor W = at::randn({9, 5});
  auto [U, s, Vh] = at::linalg_svd(W, false);
  EXPECT_LT((t2::svf::compose(U, s, Vh, at::ones({5})) - W).abs().max().item<double>(), 1e-5);
  const at::Tensor z = at::rand({5}) + 0.1;
  const at::Tensor adapted = t2::svf::compose(U, s, Vh, z);
  EXPECT_NEAR(at::linalg_svdvals(adapted).sum().item<double>(), s.sum().item<double>(), 1e-4);
}

TEST(SvfAdaptation, ParsesAndRejectsMixtures) {
  const Adaptation a = Adaptation::parse_mixture("math=0.7,code=0.3");
  ASSERT_EQ(a.coefficients.size(), 2u);
  EXPECT_EQ(a.key(), "code=0.3,math=0.7");
  EXPECT_EQ(Adaptation::expert("math").key(), "math");
  EXPECT_EQ(Adaptation::base().key(), "base");
  for (const char* bad : {"", "math", "=0.3", "math=x", "math=nan", "math=-0.1", "math=0.5x"}) {
    EXPECT_THROW(Adaptation::parse_mixture(bad), t2::InvalidArgument) << bad;
  }
}

namespace {

class SvfStories : public ::testing::Test {
 protected:
  void SetUp() override {
    model_dir_ = t2::testing::stories_dir();
    T2_REQUIRE_PATH(model_dir_);
    model_.emplace(t2::model::Transformer::load(model_dir_, t2::model::Placement{}));
    fingerprint_ = t2::model::checkpoint_fingerprint(model_dir_);
    cache_dir_ = t2::testing::fresh_dir("svd-cache");
    experts_dir_ = t2::testing::fresh_dir("experts");
    cache_.emplace(SvdCache::load_or_build(*model_, fingerprint_, Targets::kMlp, cache_dir_, at::kCPU).cache);
  }

  // An SVF expert with z in [lo, hi) on every MLP matrix.
  Expert random_expert(const std::string& name, uint64_t seed, double lo = 0.5, double hi = 1.5) const {
    at::manual_seed(seed);
    Expert e;
    e.name = name;
    e.description = "random test expert";
    e.base_fingerprint = fingerprint_;
    for (const auto& id : t2::svf::target_matrices(model_->config(), Targets::kMlp)) {
      e.z.emplace(id.weight_name(), at::rand({t2::svf::singular_value_count(model_->config(), id.projection)}) * (hi - lo) + lo);
    }
    return e;
  }

  std::string load_error(const std::filesystem::path& dir, bool force = false) const {
    try {
      Expert::load(dir).validate_for(model_->config(), fingerprint_, force);
    } catch (const t2::Error& e) {
      return e.what();
    }
    return "";
  }

  std::vector<int64_t> greedy(const std::shared_ptr<const t2::model::ProjectionSet>& weights, int64_t tokens) const {
    const auto tokenizer = t2::tokenizer::Tokenizer::load(model_dir_);
    t2::engine::Engine engine(*model_, tokenizer, {2}, {1, 0});
    t2::engine::GenerationRequest r;
    r.prompt = {1};
    r.sampling.temperature = 0;
    r.max_tokens = tokens;
    r.adapter = t2::svf::dense_adapter(weights);
    engine.add(r);
    std::vector<int64_t> out;
    while (engine.active() > 0) {
      for (const auto& event : engine.step().tokens) out.push_back(event.token);
    }
    return out;
  }

  at::Tensor logits(const std::shared_ptr<const t2::model::ProjectionSet>& weights) const {
    c10::InferenceMode guard;
    const at::Tensor t = at::tensor(std::vector<int64_t>{1, 403, 407, 261, 378}, at::kLong).view({1, -1});
    return model_->forward_full(t, {5}, weights ? *weights : model_->base_projections());
  }

  std::filesystem::path model_dir_, cache_dir_, experts_dir_;
  std::optional<t2::model::Transformer> model_;
  std::optional<SvdCache> cache_;
  std::string fingerprint_;
};

}  // namespace

// The factors come from a float64 Gram eigendecomposition (fast on the GPU);
// they must be an SVD at least as good as torch.linalg.svd's.
TEST_F(SvfStories, SvdFactorsAreAnSvdAsAccurateAsLinalgSvd) {
  for (const auto& [id, f] : cache_->factors()) {
    const at::Tensor w = model_->base_projections().get(id.layer, id.projection).to(at::kFloat);
    auto [U, s, Vh] = at::linalg_svd(w, false);
    const auto error = [&](const at::Tensor& u, const at::Tensor& sv, const at::Tensor& vh) {
      return (at::matmul(u * sv, vh) - w).abs().max().item<double>();
    };
    const int64_t r = s.numel();
    ASSERT_EQ(f.s.numel(), r) << id.weight_name();
    EXPECT_LT((f.s - s).abs().max().item<double>(), 1e-5 * s[0].item<double>()) << id.weight_name();  // same values, descending
    EXPECT_LE(error(f.U, f.s, f.Vh), std::max(2 * error(U, s, Vh), 1e-6)) << id.weight_name();
    EXPECT_LT((at::matmul(f.U.t(), f.U) - at::eye(r)).abs().max().item<double>(), 1e-5) << id.weight_name();
    EXPECT_LT((at::matmul(f.Vh, f.Vh.t()) - at::eye(r)).abs().max().item<double>(), 1e-5) << id.weight_name();
  }
}

TEST_F(SvfStories, SvdCacheIsReusedAndRebuiltWhenStaleOrCorrupt) {
  const auto path = SvdCache::path_for(cache_dir_, fingerprint_, Targets::kMlp);
  ASSERT_TRUE(std::filesystem::exists(path));
  EXPECT_EQ(cache_->factors().size(), 15u);  // 5 layers x gate, up, down
  for (const auto& [id, f] : cache_->factors()) {
    const at::Tensor w = model_->base_projections().get(id.layer, id.projection);
    EXPECT_LT((at::matmul(f.U * f.s, f.Vh) - w).abs().max().item<double>(), 1e-5) << id.weight_name();
  }
  EXPECT_FALSE(SvdCache::load_or_build(*model_, fingerprint_, Targets::kMlp, cache_dir_, at::kCPU).built);

  // A cache made for other weights, renamed into this model's slot, is stale.
  cache_->save(path);
  {
    auto tensors = std::vector<std::pair<std::string, at::Tensor>>{};
    const auto file = t2::model::SafetensorsFile::open(path);
    for (const auto& [name, view] : file.tensors()) tensors.emplace_back(name, view.to_tensor());
    t2::model::write_safetensors(path, tensors, {{"format", "t2-svd-v2"}, {"fingerprint", "0123456789abcdef"}, {"targets", "mlp"}});
  }
  EXPECT_THROW(SvdCache::load(path, model_->config(), fingerprint_, Targets::kMlp), t2::LoadError);
  EXPECT_TRUE(SvdCache::load_or_build(*model_, fingerprint_, Targets::kMlp, cache_dir_, at::kCPU).built);

  // A NaN written over one factor value (the file otherwise intact) fails the checksum.
  {
    const std::string bytes = [&] {
      std::ifstream in(path, std::ios::binary);
      return std::string(std::istreambuf_iterator<char>(in), {});
    }();
    const float nan = std::numeric_limits<float>::quiet_NaN();
    std::string corrupt = bytes;
    std::memcpy(&corrupt[corrupt.size() - sizeof nan], &nan, sizeof nan);  // the last value of the data section
    std::ofstream(path, std::ios::binary | std::ios::trunc) << corrupt;
    try {
      SvdCache::load(path, model_->config(), fingerprint_, Targets::kMlp);
      ADD_FAILURE() << "a corrupted SVD cache was loaded";
    } catch (const t2::LoadError& e) {
      EXPECT_NE(std::string(e.what()).find("checksum mismatch"), std::string::npos) << e.what();
    }
    EXPECT_TRUE(SvdCache::load_or_build(*model_, fingerprint_, Targets::kMlp, cache_dir_, at::kCPU).built);
  }

  std::filesystem::resize_file(path, std::filesystem::file_size(path) / 2);
  const auto rebuilt = SvdCache::load_or_build(*model_, fingerprint_, Targets::kMlp, cache_dir_, at::kCPU);
  EXPECT_TRUE(rebuilt.built);
  EXPECT_FALSE(SvdCache::load_or_build(*model_, fingerprint_, Targets::kMlp, cache_dir_, at::kCPU).built);

  const auto all = SvdCache::load_or_build(*model_, fingerprint_, Targets::kAll, cache_dir_, at::kCPU);
  EXPECT_EQ(all.cache.factors().size(), 35u);
  EXPECT_NE(all.path, path);
}

TEST_F(SvfStories, ExpertFolderRoundTrips) {
  Expert e = random_expert("story", 1);
  e.scores = {{"validation_reward", 0.5}};
  e.save(experts_dir_ / "story");
  const Expert loaded = Expert::load(experts_dir_ / "story");
  EXPECT_EQ(loaded.name, "story");
  EXPECT_EQ(loaded.matrices(), e.matrices());
  EXPECT_EQ(loaded.scores["validation_reward"], 0.5);
  for (const auto& [name, z] : e.z) EXPECT_TRUE(loaded.z.at(name).equal(z));
  EXPECT_EQ(load_error(experts_dir_ / "story"), "");
}

TEST_F(SvfStories, DispatchRoleAndLabelsRoundTrip) {
  Expert target = random_expert("dragons", 1);
  target.dispatch = t2::svf::DispatchRole::kTarget;
  target.save(experts_dir_ / "dragons");
  Expert classifier = random_expert("router", 2);
  classifier.dispatch = t2::svf::DispatchRole::kClassifier;
  classifier.dispatch_labels = {"dragons", "friends", "others"};
  classifier.save(experts_dir_ / "router");
  const Expert plain = random_expert("plain", 3);
  plain.save(experts_dir_ / "plain");

  EXPECT_EQ(Expert::load(experts_dir_ / "dragons").dispatch, t2::svf::DispatchRole::kTarget);
  EXPECT_TRUE(Expert::load(experts_dir_ / "dragons").dispatch_labels.empty());
  const Expert router = Expert::load(experts_dir_ / "router");
  EXPECT_EQ(router.dispatch, t2::svf::DispatchRole::kClassifier);
  EXPECT_EQ(router.dispatch_labels, (std::vector<std::string>{"dragons", "friends", "others"}));
  EXPECT_EQ(router.to_json()["dispatch"], "classifier");
  EXPECT_EQ(router.to_json()["dispatch_labels"], nlohmann::json({"dragons", "friends", "others"}));
  // No role: the field is left out and reads back as none.
  EXPECT_FALSE(plain.to_json().contains("dispatch"));
  EXPECT_EQ(Expert::load(experts_dir_ / "plain").dispatch, t2::svf::DispatchRole::kNone);

  EXPECT_EQ(t2::svf::parse_dispatch_role("target"), t2::svf::DispatchRole::kTarget);
  EXPECT_STREQ(t2::svf::to_string(t2::svf::DispatchRole::kClassifier), "classifier");
  EXPECT_THROW(t2::svf::parse_dispatch_role("router"), t2::InvalidArgument);
}

TEST_F(SvfStories, AnUnknownDispatchRoleIsALoadErrorNamingTheExpert) {
  random_expert("oddrole", 4).save(experts_dir_ / "oddrole");
  nlohmann::json j;
  {
    std::ifstream in(experts_dir_ / "oddrole" / "expert.json");
    j = nlohmann::json::parse(in);
  }
  j["dispatch"] = "router";
  std::ofstream(experts_dir_ / "oddrole" / "expert.json") << j.dump(2);
  try {
    Expert::load(experts_dir_ / "oddrole");
    ADD_FAILURE() << "dispatch role 'router' accepted";
  } catch (const t2::LoadError& e) {
    EXPECT_NE(std::string(e.what()).find("expert 'oddrole'"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("unknown dispatch role 'router'"), std::string::npos) << e.what();
  }
}

TEST_F(SvfStories, EachValidationFailureNamesExpertTensorAndReason) {
  const auto write = [&](const std::string& name, auto&& edit) {
    Expert e = random_expert(name, 2);
    edit(e);
    e.save(experts_dir_ / name);
    return experts_dir_ / name;
  };
  const std::string up0 = "model.layers.0.mlp.up_proj.weight";
  const auto expect = [&](const std::filesystem::path& dir, const std::string& fragment) {
    const std::string error = load_error(dir);
    EXPECT_NE(error.find("expert '" + dir.filename().string() + "'"), std::string::npos) << error;
    EXPECT_NE(error.find(fragment), std::string::npos) << error;
  };
  expect(write("short", [&](Expert& e) { e.z[up0] = at::ones({63}); }), "'" + up0 + "': length 63, expected 64");
  expect(write("unknown", [&](Expert& e) { e.z["model.layers.9.mlp.up_proj.weight"] = at::ones({64}); }),
         "'model.layers.9.mlp.up_proj.weight': not an adaptable matrix");
  expect(write("nan", [&](Expert& e) { e.z[up0][3] = NAN; }), "'" + up0 + "': z has NaN");
  expect(write("negative", [&](Expert& e) { e.z[up0][0] = -0.5; }), "'" + up0 + "': z has negative values");
  const auto other = write("other-model", [&](Expert& e) { e.base_fingerprint = "ffffffffffffffff"; });
  expect(other, "made for base model ffffffffffffffff");
  EXPECT_EQ(load_error(other, /*force=*/true), "");

  const auto truncated = write("truncated", [](Expert&) {});
  std::filesystem::resize_file(truncated / "z.safetensors", 200);
  const std::string error = load_error(truncated);
  EXPECT_NE(error.find("z.safetensors"), std::string::npos) << error;
  EXPECT_NE(error.find("truncated"), std::string::npos) << error;

  const auto renamed = write("renamed", [](Expert&) {});
  std::filesystem::rename(renamed, experts_dir_ / "moved");
  expect(experts_dir_ / "moved", "the folder and the name must agree");
  std::filesystem::create_directories(experts_dir_ / "empty");
  expect(experts_dir_ / "empty", "cannot open");
}

TEST_F(SvfStories, OnesExpertReproducesTheBaseModelTokenForToken) {
  AdapterStore store(*model_, *cache_, 1 << 30);
  Expert ones = random_expert("ones", 3, 1.0, 1.0);
  store.add(ones);
  const auto weights = store.weights(Adaptation::expert("ones"));
  ASSERT_NE(weights, nullptr);
  EXPECT_EQ(greedy(weights, 120), greedy(nullptr, 120));
}

// A group the expert adapts whole (gate/up) is composed into one stacked
// buffer, each block the matrix's own W'; other matrices stay as they were.
TEST_F(SvfStories, DenseCompositionStacksWholeGroupsEachBlockItsOwnMatrix) {
  AdapterStore store(*model_, *cache_, 1 << 30);
  const Expert e = random_expert("a", 4, 0.0, 2.0);
  store.add(e);
  const auto weights = store.weights(Adaptation::expert("a"));
  ASSERT_NE(weights, nullptr);
  for (int64_t l = 0; l < model_->config().num_layers; ++l) {
    const at::Tensor& gate_up = weights->stacked(l, t2::model::ProjectionGroup::kGateUp);
    ASSERT_TRUE(gate_up.defined()) << "layer " << l;
    EXPECT_FALSE(gate_up.is_same(model_->base_projections().stacked(l, t2::model::ProjectionGroup::kGateUp)));
    EXPECT_TRUE(weights->stacked(l, t2::model::ProjectionGroup::kQKV).is_same(
        model_->base_projections().stacked(l, t2::model::ProjectionGroup::kQKV)));
    int64_t offset = 0;
    for (const auto p : {t2::model::Projection::kGate, t2::model::Projection::kUp, t2::model::Projection::kDown}) {
      const MatrixId id{l, p};
      const auto& f = cache_->factors().at(id);
      const at::Tensor expected = t2::svf::compose(f.U, f.s, f.Vh, e.z.at(id.weight_name()));
      EXPECT_LT((weights->get(l, p) - expected).abs().max().item<double>(), 1e-4) << id.weight_name();
      if (p == t2::model::Projection::kDown) continue;
      EXPECT_TRUE(weights->get(l, p).equal(gate_up.narrow(0, offset, expected.size(0))));
      offset += expected.size(0);
    }
  }
}

TEST_F(SvfStories, ExpertsChangeLogitsAndMixturesCombineLinearly) {
  AdapterStore store(*model_, *cache_, 1 << 30);
  store.add(random_expert("a", 4, 0.0, 2.0));
  store.add(random_expert("b", 5, 0.0, 2.0));
  const auto a = store.weights(Adaptation::expert("a"));
  EXPECT_GT((logits(a) - logits(nullptr)).abs().max().item<double>(), 1e-2);

  // One expert at weight 1 is that expert.
  const auto single = store.weights(Adaptation::parse_mixture("a=1"));
  const MatrixId up2{2, t2::model::Projection::kUp};
  EXPECT_TRUE(single->get(2, t2::model::Projection::kUp).equal(a->get(2, t2::model::Projection::kUp)));
  // z of a mixture is the weighted sum of the z's.
  const auto mixed = store.resolve(Adaptation::parse_mixture("a=0.25,b=0.75"));
  const Expert ea = *store.find("a"), eb = *store.find("b");
  const at::Tensor expected = ea.z.at(up2.weight_name()) * 0.25 + eb.z.at(up2.weight_name()) * 0.75;
  EXPECT_TRUE(at::allclose(mixed.at(up2), expected, 1e-6, 1e-6));

  // A stored mixture expert equals the same mixture given inline, also per matrix.
  Expert stored;
  stored.name = "ab";
  stored.kind = t2::svf::ExpertKind::kMixture;
  stored.base_fingerprint = fingerprint_;
  stored.components = {{"a", 0.25, {}}, {"b", 0.75, {{up2.weight_name(), 0.5}}}};
  stored.save(experts_dir_ / "ab");
  store.add(Expert::load(experts_dir_ / "ab"));
  const auto via_stored = store.resolve(Adaptation::expert("ab"));
  const MatrixId down0{0, t2::model::Projection::kDown};
  EXPECT_TRUE(at::allclose(via_stored.at(down0), mixed.at(down0), 1e-6, 1e-6));
  EXPECT_TRUE(at::allclose(via_stored.at(up2), ea.z.at(up2.weight_name()) * 0.25 + eb.z.at(up2.weight_name()) * 0.5));

  EXPECT_THROW(store.weights(Adaptation::expert("missing")), t2::NotFound);
  EXPECT_THROW(store.weights(Adaptation{{{"a", -1.0}}}), t2::InvalidArgument);
  EXPECT_THROW(store.weights(Adaptation{{{"a", std::nan("")}}}), t2::InvalidArgument);
}

TEST_F(SvfStories, MatricesAComponentLeavesAloneCountAsOnesTimesItsCoefficient) {
  AdapterStore store(*model_, *cache_, 1 << 30);
  Expert narrow = random_expert("narrow", 12);
  const std::string up0 = MatrixId{0, t2::model::Projection::kUp}.weight_name();
  const at::Tensor z_up0 = narrow.z.at(up0);
  narrow.z = {{up0, z_up0}};  // adapts one matrix only
  store.add(narrow);
  store.add(random_expert("wide", 13));
  const Expert wide = *store.find("wide");
  const MatrixId down1{1, t2::model::Projection::kDown};
  const auto inline_mix = store.resolve(Adaptation::parse_mixture("narrow=0.3,wide=0.7"));
  EXPECT_TRUE(at::allclose(inline_mix.at(down1), at::ones({64}) * 0.3 + wide.z.at(down1.weight_name()) * 0.7, 1e-6, 1e-6));

  Expert stored;
  stored.name = "stored";
  stored.kind = t2::svf::ExpertKind::kMixture;
  stored.base_fingerprint = fingerprint_;
  stored.components = {{"narrow", 0.3, {}}, {"wide", 0.7, {}}};
  store.add(stored);
  const auto via_stored = store.resolve(Adaptation::expert("stored"));
  for (const auto& [id, z] : inline_mix) EXPECT_TRUE(at::allclose(via_stored.at(id), z, 1e-6, 1e-6)) << id.weight_name();
}

TEST_F(SvfStories, LoadsFromTheExpertsFolderOnly) {
  random_expert("a", 6).save(experts_dir_ / "a");
  Expert mix;
  mix.name = "mix";
  mix.kind = t2::svf::ExpertKind::kMixture;
  mix.base_fingerprint = fingerprint_;
  mix.components = {{"a", 0.5, {}}};
  mix.save(experts_dir_ / "mix");
  AdapterStore store(*model_, *cache_, 1 << 30);
  store.load_from(experts_dir_, "mix");  // pulls in its component too
  EXPECT_TRUE(store.find("a").has_value());
  Expert orphan = mix;
  orphan.name = "orphan";
  orphan.components = {{"a", 0.5, {}}, {"missing", 0.5, {}}};
  orphan.save(experts_dir_ / "orphan");
  EXPECT_THROW(store.load_from(experts_dir_, "orphan"), t2::NotFound);
  EXPECT_FALSE(store.find("orphan").has_value());  // nothing half-registered
  EXPECT_THROW(store.load_from(experts_dir_, "../experts"), t2::InvalidArgument);
  EXPECT_THROW(store.load_from(experts_dir_, "nope"), t2::NotFound);
}

TEST_F(SvfStories, LruEvictsUnderTheBudgetAndCountsHits) {
  // One composed set replaces the 15 MLP matrices: 15 x 172 x 64 floats.
  const int64_t set_bytes = 15 * 172 * 64 * 4;
  AdapterStore store(*model_, *cache_, set_bytes * 3 / 2);
  store.add(random_expert("a", 7));
  store.add(random_expert("b", 8));
  store.weights(Adaptation::expert("a"));
  store.weights(Adaptation::expert("a"));
  auto s = store.stats();
  EXPECT_EQ(s.misses, 1);
  EXPECT_EQ(s.hits, 1);
  EXPECT_EQ(s.cached_bytes, set_bytes);
  store.weights(Adaptation::expert("b"));  // evicts a
  s = store.stats();
  EXPECT_EQ(s.cached_sets, 1);
  EXPECT_EQ(s.evictions, 1);
  store.weights(Adaptation::expert("a"));
  EXPECT_EQ(store.stats().misses, 3);
  EXPECT_GT(store.stats().compose_seconds, 0.0);

  EXPECT_TRUE(store.remove("a"));
  EXPECT_EQ(store.stats().cached_sets, 0);  // its composition went with it
  EXPECT_FALSE(store.remove("a"));
}

TEST_F(SvfStories, ConcurrentLookupsAndLoadsAreSafe) {
  AdapterStore store(*model_, *cache_, 1 << 30);
  store.add(random_expert("a", 9));
  std::atomic<int> failures{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < 20; ++i) {
        try {
          if (t == 0) {
            store.add(random_expert("b", static_cast<uint64_t>(i)));
          } else if (store.weights(Adaptation::expert("a")) == nullptr) {
            ++failures;
          }
        } catch (const std::exception&) {
          ++failures;
        }
      }
    });
  }
  for (auto& th : threads) th.join();
  EXPECT_EQ(failures.load(), 0);
}

TEST(SvfCuda, Bf16CompositionWithin1e2OfFloat64) {
  if (!at::hasCUDA()) GTEST_SKIP() << "no CUDA device";
  at::manual_seed(11);
  const at::Tensor W = at::randn({1024, 512}, at::kDouble);
  auto [U, s, Vh] = at::linalg_svd(W, false);
  const at::Tensor z = at::rand({512}, at::kDouble) * 1.5 + 0.25;
  const at::Tensor reference = at::matmul(U * (s * z * (s.sum() / (s * z).sum())), Vh);
  const auto cuda = at::Device(at::kCUDA, 0);
  const at::Tensor composed = t2::svf::compose(U.to(cuda, at::kBFloat16), s.to(cuda, at::kFloat),
                                               Vh.to(cuda, at::kBFloat16), z.to(cuda, at::kFloat));
  EXPECT_EQ(composed.scalar_type(), at::kBFloat16);
  const double relative = (composed.cpu().to(at::kDouble) - reference).norm().item<double>() / reference.norm().item<double>();
  EXPECT_LT(relative, 1e-2);
}

// policy_params.pt's learnable_params_module_list.N for Llama-3-8B's shape: the
// reference's default (MLP) list is layer 0..31 x (gate, up, down) in HF order.
TEST(SvfReferenceImport, PolicyIndicesFollowHfStateDictOrderForLlama3_8B) {
  const auto config =
      t2::model::ModelConfig::from_file(std::filesystem::path(T2_SOURCE_DIR) / "bench" / "llama3-8b-shape.json");
  ASSERT_EQ(config.num_layers, 32);
  const auto mlp = t2::svf::policy_param_matrices(config, t2::svf::Targets::kMlp);
  ASSERT_EQ(mlp.size(), 96u);
  const char* kMlp[] = {"gate_proj", "up_proj", "down_proj"};
  for (size_t n = 0; n < mlp.size(); ++n) {
    EXPECT_EQ(mlp[n].weight_name(),
              "model.layers." + std::to_string(n / 3) + ".mlp." + kMlp[n % 3] + ".weight") << "N=" << n;
  }
  EXPECT_EQ(t2::svf::singular_value_count(config, mlp[0].projection), 4096);  // gate: 14336 x 4096
  EXPECT_EQ(t2::svf::singular_value_count(config, mlp[2].projection), 4096);  // down: 4096 x 14336

  const auto all = t2::svf::policy_param_matrices(config, t2::svf::Targets::kAll);
  ASSERT_EQ(all.size(), 224u);
  const char* kAll[] = {"self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
                        "mlp.gate_proj",    "mlp.up_proj",      "mlp.down_proj"};
  for (size_t n = 0; n < all.size(); ++n) {
    EXPECT_EQ(all[n].weight_name(), "model.layers." + std::to_string(n / 7) + "." + kAll[n % 7] + ".weight")
        << "N=" << n;
  }
  EXPECT_EQ(t2::svf::singular_value_count(config, all[1].projection), 1024);  // k_proj: 8 KV heads x 128
  const auto attn = t2::svf::policy_param_matrices(config, t2::svf::Targets::kAttn);
  ASSERT_EQ(attn.size(), 128u);
  EXPECT_EQ(attn[5].weight_name(), "model.layers.1.self_attn.k_proj.weight");
}

TEST(SvfReferenceImport, ParsesPolicyKeys) {
  EXPECT_EQ(t2::svf::policy_param_index("learnable_params_module_list.0"), 0);
  EXPECT_EQ(t2::svf::policy_param_index("learnable_params_module_list.95"), 95);
  EXPECT_FALSE(t2::svf::policy_param_index("learnable_params_module_list."));
  EXPECT_FALSE(t2::svf::policy_param_index("learnable_params_module_list.07"));
  EXPECT_FALSE(t2::svf::policy_param_index("learnable_params_module_list.1x"));
  EXPECT_FALSE(t2::svf::policy_param_index("learnable_params_module_list.-1"));
  EXPECT_FALSE(t2::svf::policy_param_index("model.layers.0.mlp.up_proj.weight"));
}
