// `t2 bench`: prefill and decode throughput of the engine, on a model folder
// or on random weights of a config.json's shape (e.g. Llama-3-8B on a GPU).
#include <chrono>
#include <limits>
#include <map>
#include <iostream>
#include <memory>
#include <random>

#include <nlohmann/json.hpp>

#include "commands.hpp"
#include "options.hpp"
#include "t2/common/errors.hpp"
#include "t2/engine/engine.hpp"
#include "t2/model/transformer.hpp"
#include "t2/svf/adapter_store.hpp"
#include "t2/train/reinforce.hpp"

namespace t2::cli {
namespace {

struct BenchOptions {
  std::string model_dir;
  std::string random_config;
  int64_t batch = 1;
  int64_t prompt_tokens = 128;
  int64_t gen_tokens = 256;
  int64_t repeat = 3;
  bool svf = false;
  bool train_step = false;
  std::string targets = "mlp";
  std::vector<int64_t> experts = {1, 2, 8, 64};
  std::vector<int64_t> svf_batches;  // empty: --batch
  engine::DecodePath decode_path = engine::DecodePath::kAuto;
  PlacementOptions placement;
};

using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point start) { return std::chrono::duration<double>(Clock::now() - start).count(); }

struct Timing {
  double prefill_s = 0;
  double decode_s = 0;
  int64_t decode_steps = 0;
};

// One round: `batch` random prompts prefilled, then greedy decode to gen_tokens
// each; row b runs adapters[b % size] (none: the base model).
Timing run_round(engine::Engine& engine, const BenchOptions& o, int64_t vocab, uint64_t seed,
                 const std::vector<std::shared_ptr<const svf::Adapter>>& adapters) {
  std::mt19937_64 rng(seed);
  std::uniform_int_distribution<int64_t> token(3, vocab - 1);
  for (int64_t b = 0; b < o.batch; ++b) {
    engine::GenerationRequest request;
    for (int64_t i = 0; i < o.prompt_tokens; ++i) request.prompt.push_back(token(rng));
    request.sampling.temperature = 0.0;
    request.max_tokens = o.gen_tokens;
    request.ignore_eos = true;
    if (!adapters.empty()) request.adapter = adapters[static_cast<size_t>(b) % adapters.size()];
    engine.add(std::move(request));
  }
  Timing t;
  auto start = Clock::now();
  engine.step();  // prefills every prompt (the step budget holds them all) and samples its first token
  t.prefill_s = seconds_since(start);
  start = Clock::now();
  while (engine.active() > 0) {
    engine.step();
    ++t.decode_steps;
  }
  t.decode_s = seconds_since(start);
  return t;
}

// REINFORCE steps (composition under autograd, full forward and backward,
// Adam) on random prompts and completions of the benchmark's lengths.
nlohmann::json train_step_report(const model::Transformer& model, const svf::AdapterStore& store, const BenchOptions& o) {
  train::SvfPolicy policy(model, store, 1.0, 0.1);
  train::TrainOptions options;
  train::Reinforce reinforce(model, policy, options);
  std::mt19937_64 rng(7);
  std::uniform_int_distribution<int64_t> token(3, model.config().vocab_size - 1);
  std::vector<std::vector<int64_t>> prompts(static_cast<size_t>(o.batch)), completions(static_cast<size_t>(o.batch));
  std::vector<double> rewards;
  for (int64_t b = 0; b < o.batch; ++b) {
    for (int64_t i = 0; i < o.prompt_tokens; ++i) prompts[static_cast<size_t>(b)].push_back(token(rng));
    for (int64_t i = 0; i < o.gen_tokens; ++i) completions[static_cast<size_t>(b)].push_back(token(rng));
    rewards.push_back(b % 2 == 0 ? 1.0 : -1.0);
  }
  reinforce.step(prompts, completions, rewards);  // warm-up
  model.placement().synchronize();
  const auto start = Clock::now();
  constexpr int kSteps = 3;
  for (int i = 0; i < kSteps; ++i) reinforce.step(prompts, completions, rewards);
  model.placement().synchronize();
  const double step_s = seconds_since(start) / kSteps;
  int64_t parameters = 0;
  for (const auto& p : policy.parameters()) parameters += p.numel();
  return {{"samples_per_step", o.batch},
          {"tokens_per_sample", o.prompt_tokens + o.gen_tokens},
          {"step_s", step_s},
          {"step_s_per_sample", step_s / static_cast<double>(o.batch)},
          {"trainable_parameters", parameters}};
}

// While batch - 1 sequences decode with a mix of experts, one more joins: the
// step that prefills it and samples its first token, for an expert already
// in the table (hot) and for one never used before (cold).
template <typename Hot, typename Cold>
nlohmann::json first_token_report(const model::Transformer& model, svf::AdapterStore& store, const BenchOptions& o,
                                  Hot&& hot, Cold&& cold) {
  engine::Engine engine(model, std::nullopt, {}, {o.batch + 1, o.prompt_tokens + o.gen_tokens + 2,
                                                  std::max<int64_t>(2048, (o.batch + 1) * o.prompt_tokens), 0}, &store);
  std::mt19937_64 rng(5);
  std::uniform_int_distribution<int64_t> token(3, model.config().vocab_size - 1);
  const auto request = [&](std::shared_ptr<const svf::Adapter> adapter, int64_t max_tokens) {
    engine::GenerationRequest r;
    for (int64_t i = 0; i < o.prompt_tokens; ++i) r.prompt.push_back(token(rng));
    r.sampling.temperature = 0.0;
    r.max_tokens = max_tokens;
    r.ignore_eos = true;
    r.adapter = std::move(adapter);
    return r;
  };
  for (int64_t b = 0; b + 1 < o.batch; ++b) engine.add(request(b % 2 == 0 ? hot() : nullptr, o.gen_tokens + 8));
  engine.step();
  // From resolving the request's adapter (what the scheduler does at admission) to its first token.
  const auto timed_join = [&](const auto& resolve) {
    for (int i = 0; i < 8; ++i) engine.step();  // decode steps only, past the warm-up of a fresh engine
    model.placement().synchronize();
    auto start = Clock::now();
    engine.step();
    model.placement().synchronize();
    const double decode_ms = 1e3 * seconds_since(start);
    start = Clock::now();
    const engine::SequenceId id = engine.add(request(resolve(), 1));
    bool seen = false;
    while (!seen) {
      for (const auto& e : engine.step().tokens) seen = seen || e.sequence == id;
    }
    model.placement().synchronize();
    return std::make_pair(decode_ms, 1e3 * seconds_since(start));
  };
  const auto [decode_hot, hot_ms] = timed_join(hot);
  const auto [decode_cold, cold_ms] = timed_join(cold);
  return {{"decode_step_ms", decode_hot},
          {"hot_expert_first_token_ms", hot_ms},
          {"cold_expert_first_token_ms", cold_ms},
          {"cold_minus_hot_in_decode_steps", (cold_ms - hot_ms) / decode_cold}};
}

// Random z vectors for every targeted matrix, around 1.
svf::Expert random_expert(const model::ModelConfig& config, const std::vector<svf::MatrixId>& ids, const std::string& name) {
  svf::Expert e;
  e.name = name;
  e.base_fingerprint = "bench";
  for (const auto& id : ids) {
    const int64_t r = svf::singular_value_count(config, id.projection);
    e.z.emplace(id.weight_name(), at::rand({r}) + 0.5);
  }
  return e;
}

// SVD build, expert-switch composition, and decoding with K distinct experts
// (plus one mixture) in the batch against K = 1, and the first-token cost of
// a never-used expert.
template <typename Throughput>
nlohmann::json svf_report(const model::Transformer& model, const BenchOptions& o, Throughput&& throughput) {
  const svf::Targets targets = svf::parse_targets(o.targets);
  auto start = Clock::now();
  const svf::SvdCache cache = svf::SvdCache::compute(model, "bench", targets, model.placement().device);
  const double svd_s = seconds_since(start);
  svf::AdapterStore store(model, cache, std::numeric_limits<int64_t>::max());
  const auto ids = svf::target_matrices(model.config(), targets);
  int64_t most = 2;
  for (const int64_t k : o.experts) most = std::max(most, k);
  const int64_t cold_experts = o.svf_batches.empty() ? 1 : static_cast<int64_t>(o.svf_batches.size());
  for (int64_t k = 0; k < most + 1 + cold_experts; ++k) store.add(random_expert(model.config(), ids, "bench-" + std::to_string(k)));
  store.weights(svf::Adaptation::expert("bench-0"));  // first composition warms the GEMM kernels
  const double first_s = store.stats().compose_seconds;
  store.weights(svf::Adaptation::expert("bench-1"));  // into fresh device memory
  const double fresh_switch_s = store.stats().compose_seconds - first_s;
  // A server whose budget holds one composed set: the switch composes into the memory the evicted set freed.
  store.set_budget_bytes(0);
  store.set_budget_bytes(std::numeric_limits<int64_t>::max());
  const double before_s = store.stats().compose_seconds;
  store.weights(svf::Adaptation::expert("bench-0"));
  const double switch_s = store.stats().compose_seconds - before_s;
  nlohmann::json report = {
      {"targets", o.targets},
      {"matrices", ids.size()},
      {"svd_build_s", svd_s},
      {"svd_cache_bytes", cache.bytes()},
      {"factor_bytes_on_device", store.stats().factor_bytes},
      {"expert_switch_compose_s", switch_s},
      {"expert_switch_fresh_memory_s", fresh_switch_s},
      {"compose_ms_per_matrix", 1e3 * switch_s / static_cast<double>(ids.size())},
      {"composed_set_bytes", store.stats().cached_bytes / 2},
  };
  const auto expert = [&](int64_t k) { return store.adapter(svf::Adaptation::expert("bench-" + std::to_string(k))); };
  const auto mixture = store.adapter(svf::Adaptation::parse_mixture("bench-0=0.5,bench-1=0.5"));
  std::vector<int64_t> batches = o.svf_batches.empty() ? std::vector<int64_t>{o.batch} : o.svf_batches;
  int64_t next_cold = most + 1;
  for (const int64_t batch : batches) {
    BenchOptions ob = o;
    ob.batch = batch;
    nlohmann::json by_batch;
    // K = 1 both ways: the composed dense set (the fast path) and the factored path.
    const std::vector<std::shared_ptr<const svf::Adapter>> one = {expert(1)};
    by_batch["k1_dense"] = throughput(ob, &store, true, one);
    by_batch["k1_factored"] = throughput(ob, &store, false, one);
    const double k1 = by_batch["k1_dense"]["decode_tokens_per_s"].get<double>();
    for (const int64_t k : o.experts) {
      if (k < 2) continue;
      std::vector<std::shared_ptr<const svf::Adapter>> adapters = {mixture};
      for (int64_t i = 0; i < k; ++i) adapters.push_back(expert(i));
      nlohmann::json r = throughput(ob, &store, true, adapters);
      r["vs_k1_dense"] = r["decode_tokens_per_s"].get<double>() / k1;
      by_batch["k" + std::to_string(k) + "_plus_mixture"] = r;
    }
    by_batch["k1_factored"]["vs_k1_dense"] = by_batch["k1_factored"]["decode_tokens_per_s"].get<double>() / k1;
    const int64_t cold = next_cold++;
    by_batch["first_token"] = first_token_report(model, store, ob, [&] { return expert(2); }, [&] { return expert(cold); });
    report["batch_" + std::to_string(batch)] = by_batch;
  }
  if (o.train_step) report["train_step"] = train_step_report(model, store, o);
  return report;
}

void run_bench(const BenchOptions& o) {
  if (o.model_dir.empty() == o.random_config.empty()) {
    throw InvalidArgument("model", "give exactly one of --model and --random-config");
  }
  const model::Placement placement = o.placement.placement();
  const auto load_start = Clock::now();
  const model::Transformer transformer = [&] {
    if (!o.model_dir.empty()) return model::Transformer::load(o.model_dir, placement);
    model::ModelConfig config = model::ModelConfig::from_file(o.random_config);
    model::ModelWeights weights = model::ModelWeights::random(config, placement, /*seed=*/0);
    return model::Transformer(std::move(config), std::move(weights), placement);
  }();
  const double load_s = seconds_since(load_start);
  const model::ModelConfig& config = transformer.config();
  choose_compute_threads(config, placement);
  const auto engine_options = [&](const BenchOptions& ob, bool dense_fast_path) {
    engine::EngineOptions e{ob.batch, ob.prompt_tokens + ob.gen_tokens + 1, std::max<int64_t>(2048, ob.batch * ob.prompt_tokens), 0};
    e.dense_fast_path = dense_fast_path;
    e.decode_path = ob.decode_path;
    return e;
  };

  // Best of `repeat` rounds after a warm-up (allocator, kernels, caches, and
  // the store's background composition of a lone adapter).
  const auto best_round = [&](const BenchOptions& ob, svf::AdapterStore* store, bool dense_fast_path,
                              const std::vector<std::shared_ptr<const svf::Adapter>>& adapters) {
    engine::Engine engine(transformer, std::nullopt, {}, engine_options(ob, dense_fast_path), store);
    run_round(engine, ob, config.vocab_size, 0, adapters);
    Timing best;
    for (int64_t r = 0; r < ob.repeat; ++r) {
      const Timing t = run_round(engine, ob, config.vocab_size, static_cast<uint64_t>(r + 1), adapters);
      if (r == 0 || t.decode_s < best.decode_s) best = t;
    }
    return best;
  };
  const auto throughput = [&](const BenchOptions& ob, const Timing& t) {
    return nlohmann::json{
        {"prefill_tokens_per_s", static_cast<double>(ob.batch * ob.prompt_tokens) / t.prefill_s},
        {"decode_ms_per_step", 1e3 * t.decode_s / static_cast<double>(t.decode_steps)},
        {"decode_tokens_per_s", static_cast<double>(t.decode_steps * ob.batch) / t.decode_s},
    };
  };
  nlohmann::json report = {
      {"model", o.model_dir.empty() ? o.random_config : o.model_dir},
      {"device", placement.device.str()},
      {"dtype", c10::toString(placement.dtype)},
      {"batch", o.batch},
      {"prompt_tokens", o.prompt_tokens},
      {"gen_tokens", o.gen_tokens},
      {"load_s", load_s},
      {"decode_path", o.decode_path == engine::DecodePath::kAuto ? "auto"
                      : o.decode_path == engine::DecodePath::kEager ? "eager"
                      : o.decode_path == engine::DecodePath::kFixedShape ? "fixed-shape" : "graphs"},
  };
  report.update(throughput(o, best_round(o, nullptr, true, {})));
  if (o.svf) {
    report["svf"] = svf_report(transformer, o, [&](const BenchOptions& ob, svf::AdapterStore* store, bool dense, const auto& adapters) {
      return throughput(ob, best_round(ob, store, dense, adapters));
    });
  }
  std::cout << report.dump() << std::endl;
}

}  // namespace

void add_bench_command(CLI::App& app) {
  auto options = std::make_shared<BenchOptions>();
  CLI::App* cmd = app.add_subcommand("bench", "Measure prefill and decode throughput (prints one JSON line)");
  cmd->add_option("--model", options->model_dir, "Hugging Face model folder");
  cmd->add_option("--random-config", options->random_config, "config.json to build random weights from instead");
  cmd->add_option("--batch", options->batch, "concurrent sequences")->capture_default_str()->check(CLI::PositiveNumber);
  cmd->add_option("--prompt-tokens", options->prompt_tokens, "prompt length")->capture_default_str()->check(CLI::PositiveNumber);
  cmd->add_option("--gen-tokens", options->gen_tokens, "tokens generated per sequence")->capture_default_str()->check(CLI::PositiveNumber);
  cmd->add_flag("--svf", options->svf, "also time the SVD build, an expert switch, decoding with K random experts in the batch, and a new expert's first token");
  cmd->add_option("--svf-batches", options->svf_batches, "with --svf: the batch sizes of the expert-mix runs (default: --batch)")->delimiter(',');
  cmd->add_option("--experts", options->experts, "with --svf: the K distinct experts per batch to measure (each plus one mixture)")->delimiter(',')->capture_default_str();
  cmd->add_flag("--train-step", options->train_step, "with --svf: also time REINFORCE steps (batch x (prompt + gen) tokens)");
  cmd->add_option("--targets", options->targets, "matrices the --svf expert adapts: mlp, attn or all")->capture_default_str();
  const std::map<std::string, engine::DecodePath> decode_paths = {{"auto", engine::DecodePath::kAuto},
                                                                   {"eager", engine::DecodePath::kEager},
                                                                   {"fixed-shape", engine::DecodePath::kFixedShape},
                                                                   {"graphs", engine::DecodePath::kGraphs}};
  cmd->add_option("--decode", options->decode_path,
                  "decode steps: auto (CUDA graphs on a GPU), eager (the plain forward), fixed-shape or graphs")
      ->transform(CLI::CheckedTransformer(decode_paths, CLI::ignore_case))
      ->capture_default_str();
  cmd->add_option("--repeat", options->repeat, "timed rounds after one warm-up; the best is reported")->capture_default_str()->check(CLI::PositiveNumber);
  options->placement.add_to(*cmd);
  cmd->callback([options] { run_bench(*options); });
}

}  // namespace t2::cli
