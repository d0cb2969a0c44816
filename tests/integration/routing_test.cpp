// Two-pass inference as shipped: `t2 serve --config configs/server.json` with
// the repository's experts (bird, cat, dog as dispatch targets, the `router`
// classification expert) routes held-out requests through the real server.
// The requests are the test split of configs/tasks/router.jsonl: phrasings and
// "others" topics the router never saw in training.
#include <httplib.h>

#include <cmath>
#include <fstream>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "server_process.hpp"
#include "support.hpp"
#include "t2/svf/adapter_store.hpp"

using json = nlohmann::json;

namespace {

std::vector<json> held_out_requests() {
  std::ifstream in(std::string(T2_SOURCE_DIR) + "/configs/tasks/router.jsonl");
  std::vector<json> out;
  for (std::string line; std::getline(in, line);) {
    if (line.empty()) continue;
    json record = json::parse(line);
    if (record.value("split", "") == "test") out.push_back(record);
  }
  return out;
}

// P(X >= k) for X ~ Binomial(n, p).
double binomial_tail(int n, int k, double p) {
  double tail = 0;
  for (int i = k; i <= n; ++i) tail += std::exp(std::lgamma(n + 1.0) - std::lgamma(i + 1.0) - std::lgamma(n - i + 1.0) +
                                                i * std::log(p) + (n - i) * std::log(1 - p));
  return tail;
}

}  // namespace

TEST(ShippedExperts, LoadAgainstTheDefaultModelWithTheirDispatchRoles) {
  T2_REQUIRE_PATH(t2::testing::stories_dir());
  const auto model = t2::model::Transformer::load(t2::testing::stories_dir(), t2::model::Placement{});
  const std::string fingerprint = t2::model::checkpoint_fingerprint(t2::testing::stories_dir());
  const auto cache = t2::svf::SvdCache::compute(model, fingerprint, t2::svf::Targets::kMlp, at::kCPU);
  t2::svf::AdapterStore store(model, cache, 1 << 30);
  const std::filesystem::path experts = std::string(T2_SOURCE_DIR) + "/experts";
  for (const char* name : {"bird", "cat", "dog", "router", "pets-cem"}) {
    EXPECT_NO_THROW(store.load_from(experts, name)) << name;  // validated against the model, components resolved
  }
  for (const char* name : {"bird", "cat", "dog"}) EXPECT_EQ(store.find(name)->dispatch, t2::svf::DispatchRole::kTarget) << name;
  const auto router = store.find("router");
  ASSERT_TRUE(router);
  EXPECT_EQ(router->dispatch, t2::svf::DispatchRole::kClassifier);
  EXPECT_EQ(router->dispatch_labels, (std::vector<std::string>{"bird", "cat", "dog", "others"}));
  EXPECT_EQ(store.find("pets-cem")->dispatch, t2::svf::DispatchRole::kNone);  // used by name, never a category
  EXPECT_NE(store.weights(t2::svf::Adaptation::expert("pets-cem")), nullptr);
}

TEST(ShippedRouting, TheClassifierRoutesHeldOutRequestsThroughTheServer) {
  T2_REQUIRE_PATH(t2::testing::stories_dir());
  const auto requests = held_out_requests();
  ASSERT_GE(requests.size(), 40u);
  const auto cache = t2::testing::fresh_dir("cache");
  // The shipped config, from the source tree (its relative paths: model, experts, template).
  t2::testing::ServerProcess server({"--config", std::string(T2_SOURCE_DIR) + "/configs/server.json", "--model",
                                     t2::testing::stories_dir().string(), "--experts-dir",
                                     std::string(T2_SOURCE_DIR) + "/experts", "--dispatch-template",
                                     std::string(T2_SOURCE_DIR) + "/configs/dispatch/prompt.txt", "--cache-dir", cache.string()});
  EXPECT_NE(server.output().find("dispatch classifier (auto) under router"), std::string::npos) << server.output();
  httplib::Client client("127.0.0.1", server.port());
  client.set_read_timeout(60, 0);
  int correct = 0;
  std::map<std::string, std::map<std::string, int>> confusion;
  for (const auto& r : requests) {
    // No expert or strategy named: the server's default two-pass path.
    const json body = {{"prompt", r["prompt"]}, {"max_tokens", 1}, {"temperature", 0}};
    const auto res = client.Post("/v1/completions", body.dump(), "application/json");
    ASSERT_TRUE(res);
    ASSERT_EQ(res->status, 200) << res->body;
    const json t2 = json::parse(res->body)["t2"];
    EXPECT_EQ(t2["strategy"], "classifier");
    EXPECT_EQ(t2["scores"]["method"], "mean_logprob");
    const std::string label = t2["label"];
    EXPECT_EQ(t2["adaptation"], label == "others" ? "base" : label);
    ++confusion[r["answer"]][label];
    correct += label == r["answer"].get<std::string>() ? 1 : 0;
  }
  const int n = static_cast<int>(requests.size());
  std::string table;
  for (const auto& [want, row] : confusion) {
    for (const auto& [got, count] : row) table += want + "->" + got + ":" + std::to_string(count) + " ";
  }
  // The goal is 90%; the bar: at least 90% right, and a result a router
  // at chance (4 labels) would reach with probability below 1e-12.
  EXPECT_GE(correct, static_cast<int>(std::ceil(0.9 * n))) << correct << "/" << n << " " << table;
  EXPECT_LT(binomial_tail(n, correct, 0.25), 1e-12) << table;
}
