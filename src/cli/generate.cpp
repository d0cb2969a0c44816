// `t2 generate`: one prompt, streamed to stdout.
#include <chrono>
#include <iostream>
#include <memory>
#include <optional>

#include "commands.hpp"
#include "options.hpp"
#include "t2/engine/engine.hpp"
#include "t2/model/hub.hpp"
#include "t2/model/transformer.hpp"
#include "t2/tokenizer/tokenizer.hpp"

namespace t2::cli {
namespace {

struct GenerateOptions {
  std::string model_dir;
  std::string prompt;
  int64_t max_tokens = 256;
  std::optional<double> temperature;
  std::optional<double> top_p;
  std::optional<int64_t> top_k;
  double presence_penalty = 0.0;
  double frequency_penalty = 0.0;
  std::optional<uint64_t> seed;
  std::vector<std::string> stop;
  bool ignore_eos = false;
  bool no_bos = false;
  PlacementOptions placement;
  SvfOptions svf;
  AdaptationOptions adaptation;
};

void run_generate(GenerateOptions o) {
  o.model_dir = model::resolve_model(o.model_dir).string();  // ORG/NAME is pulled from the Hub first
  const model::Placement placement = o.placement.placement();
  const model::Transformer transformer = model::Transformer::load(o.model_dir, placement);
  choose_compute_threads(transformer.config(), placement);
  const tokenizer::Tokenizer tok = tokenizer::Tokenizer::load(o.model_dir);
  const model::GenerationConfig generation = model::GenerationConfig::from_model_dir(o.model_dir);

  engine::GenerationRequest request;
  request.prompt = tok.encode(o.prompt, /*add_bos=*/!o.no_bos);
  request.max_tokens = o.max_tokens;
  request.stop = o.stop;
  request.ignore_eos = o.ignore_eos;
  request.adapter = svf::dense_adapter(adapted_weights(transformer, o.model_dir, o.svf, o.adaptation));
  // Unset sampling flags fall back to generation_config.json (greedy unless it samples).
  auto& s = request.sampling;
  s.temperature = o.temperature.value_or(generation.do_sample ? generation.temperature.value_or(1.0) : 0.0);
  s.top_p = o.top_p.value_or(generation.do_sample ? generation.top_p.value_or(1.0) : 1.0);
  s.top_k = o.top_k.value_or(generation.do_sample ? generation.top_k.value_or(0) : 0);
  s.presence_penalty = o.presence_penalty;
  s.frequency_penalty = o.frequency_penalty;
  s.seed = o.seed;

  engine::Engine engine(transformer, tok, tokenizer::stop_token_ids(tok, generation.eos_token_ids), {/*max_sequences=*/1, /*context_length=*/0});
  const auto prompt_tokens = request.prompt.size();
  const auto start = std::chrono::steady_clock::now();
  engine.add(std::move(request));
  int64_t generated = 0;
  std::string finish = "length";
  while (engine.active() > 0) {
    for (const engine::TokenEvent& event : engine.step().tokens) {
      ++generated;
      std::cout << event.text << std::flush;
      if (event.finish) finish = engine::to_string(*event.finish);
    }
  }
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  std::cout << "\n";
  std::cerr << "[t2] prompt " << prompt_tokens << " tokens, generated " << generated << " tokens in " << seconds
            << " s (" << static_cast<double>(generated) / seconds << " tok/s), finish_reason=" << finish << "\n";
}

}  // namespace

void add_generate_command(CLI::App& app) {
  auto options = std::make_shared<GenerateOptions>();
  CLI::App* cmd = app.add_subcommand("generate", "Generate text from a prompt and stream it to stdout");
  cmd->add_option("--model", options->model_dir, "Hugging Face model folder, or ORG/NAME to pull from the Hub")->required()->envname("T2_MODEL");
  cmd->add_option("--prompt", options->prompt, "prompt text (BOS is prepended)");
  cmd->add_option("--max-tokens", options->max_tokens, "maximum tokens to generate")->capture_default_str()->check(CLI::PositiveNumber);
  cmd->add_option("--temperature", options->temperature, "sampling temperature; 0 is greedy (default: generation_config.json, else greedy)");
  cmd->add_option("--top-p", options->top_p, "nucleus sampling mass in (0, 1]");
  cmd->add_option("--top-k", options->top_k, "sample among the k most likely tokens (0 = all)");
  cmd->add_option("--presence-penalty", options->presence_penalty, "OpenAI presence penalty in [-2, 2]");
  cmd->add_option("--frequency-penalty", options->frequency_penalty, "OpenAI frequency penalty in [-2, 2]");
  cmd->add_option("--seed", options->seed, "random seed for reproducible sampling");
  cmd->add_option("--stop", options->stop, "stop string (repeatable); not included in the output");
  cmd->add_flag("--ignore-eos", options->ignore_eos, "keep generating past the end-of-sequence token");
  cmd->add_flag("--no-bos", options->no_bos, "do not prepend the BOS token");
  options->placement.add_to(*cmd);
  options->svf.add_to(*cmd);
  options->adaptation.add_to(*cmd);
  cmd->callback([options] { run_generate(*options); });
}

}  // namespace t2::cli
