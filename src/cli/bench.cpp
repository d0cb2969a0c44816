// `t2 bench`: prefill and decode throughput of the engine, on a model folder
// or on random weights of a config.json's shape (e.g. Llama-3-8B on a GPU).
#include <chrono>
#include <limits>
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
  PlacementOptions placement;
};

using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point start) { return std::chrono::duration<double>(Clock::now() - start).count(); }

struct Timing {
  double prefill_s = 0;
  double decode_s = 0;
  int64_t decode_steps = 0;
};

// One round: `batch` random prompts prefilled, then greedy decode to gen_tokens each.
Timing run_round(engine::Engine& engine, const BenchOptions& o, int64_t vocab, uint64_t seed,
                 const std::shared_ptr<const model::ProjectionSet>& projections) {
  std::mt19937_64 rng(seed);
  std::uniform_int_distribution<int64_t> token(3, vocab - 1);
  for (int64_t b = 0; b < o.batch; ++b) {
    engine::GenerationRequest request;
    for (int64_t i = 0; i < o.prompt_tokens; ++i) request.prompt.push_back(token(rng));
    request.sampling.temperature = 0.0;
    request.max_tokens = o.gen_tokens;
    request.ignore_eos = true;
    request.projections = projections;
    engine.add(std::move(request));
  }
  Timing t;
  auto start = Clock::now();
  engine.step();  // prefills every prompt and samples its first token
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

// SVD build, expert-switch composition and decoding with a (random) expert.
template <typename Throughput>
nlohmann::json svf_report(const model::Transformer& model, const BenchOptions& o, Throughput&& throughput) {
  const svf::Targets targets = svf::parse_targets(o.targets);
  auto start = Clock::now();
  const svf::SvdCache cache = svf::SvdCache::compute(model, "bench", targets, model.placement().device);
  const double svd_s = seconds_since(start);
  svf::AdapterStore store(model, cache, std::numeric_limits<int64_t>::max());
  const auto ids = svf::target_matrices(model.config(), targets);
  for (const char* name : {"bench-a", "bench-b"}) {
    svf::Expert e;
    e.name = name;
    e.base_fingerprint = "bench";
    for (const auto& id : ids) {
      const int64_t r = svf::singular_value_count(model.config(), id.projection);
      e.z.emplace(id.weight_name(), at::rand({r}) + 0.5);
    }
    store.add(std::move(e));
  }
  store.weights(svf::Adaptation::expert("bench-a"));  // first composition warms the GEMM kernels
  const double first_s = store.stats().compose_seconds;
  const auto weights = store.weights(svf::Adaptation::expert("bench-b"));
  const double switch_s = store.stats().compose_seconds - first_s;
  nlohmann::json report = {
      {"targets", o.targets},
      {"matrices", ids.size()},
      {"svd_build_s", svd_s},
      {"svd_cache_bytes", cache.bytes()},
      {"factor_bytes_on_device", store.stats().factor_bytes},
      {"expert_switch_compose_s", switch_s},
      {"compose_ms_per_matrix", 1e3 * switch_s / static_cast<double>(ids.size())},
      {"composed_set_bytes", store.stats().cached_bytes / 2},
  };
  report["with_expert"] = throughput(weights);
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
  engine::Engine engine(transformer, std::nullopt, {}, {o.batch, o.prompt_tokens + o.gen_tokens + 1});

  // Best of `repeat` rounds after a warm-up (allocator, kernels, caches).
  const auto best_round = [&](const std::shared_ptr<const model::ProjectionSet>& projections) {
    run_round(engine, o, config.vocab_size, 0, projections);
    Timing best;
    for (int64_t r = 0; r < o.repeat; ++r) {
      const Timing t = run_round(engine, o, config.vocab_size, static_cast<uint64_t>(r + 1), projections);
      if (r == 0 || t.decode_s < best.decode_s) best = t;
    }
    return best;
  };
  const auto throughput = [&](const Timing& t) {
    return nlohmann::json{
        {"prefill_tokens_per_s", static_cast<double>(o.batch * o.prompt_tokens) / t.prefill_s},
        {"decode_ms_per_step", 1e3 * t.decode_s / static_cast<double>(t.decode_steps)},
        {"decode_tokens_per_s", static_cast<double>(t.decode_steps * o.batch) / t.decode_s},
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
  };
  report.update(throughput(best_round(nullptr)));
  if (o.svf) report["svf"] = svf_report(transformer, o, [&](const auto& w) { return throughput(best_round(w)); });
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
  cmd->add_flag("--svf", options->svf, "also time the SVD build, an expert switch, and decoding with a random expert");
  cmd->add_flag("--train-step", options->train_step, "with --svf: also time REINFORCE steps (batch x (prompt + gen) tokens)");
  cmd->add_option("--targets", options->targets, "matrices the --svf expert adapts: mlp, attn or all")->capture_default_str();
  cmd->add_option("--repeat", options->repeat, "timed rounds after one warm-up; the best is reported")->capture_default_str()->check(CLI::PositiveNumber);
  options->placement.add_to(*cmd);
  cmd->callback([options] { run_bench(*options); });
}

}  // namespace t2::cli
