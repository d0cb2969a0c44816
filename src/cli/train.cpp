// `t2 train` (SVF with REINFORCE), `t2 adapt` (few-shot CEM over expert
// mixtures) and `t2 eval` (accuracy on a task split, optionally through the
// two-pass path: pass 1 picks each record's expert, pass 2 answers with it).
#include <algorithm>
#include <iostream>
#include <memory>
#include <sstream>

#include <nlohmann/json.hpp>

#include "commands.hpp"
#include "options.hpp"
#include "t2/common/errors.hpp"
#include "t2/dispatch/dispatcher.hpp"
#include "t2/model/hub.hpp"
#include "t2/train/adapt.hpp"
#include "t2/train/reinforce.hpp"

namespace t2::cli {
namespace {

struct TaskOptions {
  std::string file;
  std::string reward = "contains";
  std::string template_text = "{prompt}";
  int64_t max_tokens = 32;

  void add_to(CLI::App& cmd, const char* file_flag, const char* help) {
    cmd.add_option(file_flag, file, help)->required()->check(CLI::ExistingFile);
    cmd.add_option("--reward", reward, "exact, numeric, contains, regex or choice")->capture_default_str();
    cmd.add_option("--template", template_text, "prompt template; {prompt} is replaced")->capture_default_str();
    cmd.add_option("--max-tokens", max_tokens, "tokens generated per answer")->capture_default_str()->check(CLI::PositiveNumber);
  }
  train::Task load() const { return train::Task::load(file, train::parse_reward(reward), template_text); }
};

// The image side of a vision-language model folder (nothing for a text model):
// what encodes task records' images.
class VisionParts {
 public:
  VisionParts(const std::filesystem::path& model_dir, const model::Placement& placement) {
    if (!vision::is_llava_next(model_dir)) return;
    model_.emplace(vision::LlavaNext::load(model_dir, placement));
    processor_.emplace(vision::ProcessorConfig::from_model_dir(model_dir));
    vision_.emplace(train::Vision{*model_, *processor_});
  }
  VisionParts(const VisionParts&) = delete;
  VisionParts& operator=(const VisionParts&) = delete;
  const train::Vision* get() const { return vision_ ? &*vision_ : nullptr; }

 private:
  std::optional<vision::LlavaNext> model_;
  std::optional<vision::ImageProcessor> processor_;
  std::optional<train::Vision> vision_;  // refers to the two above
};

// What every training command loads: model, tokenizer, SVD cache, adapter store.
struct Loaded {
  std::filesystem::path model_dir;
  std::optional<model::Transformer> model;
  std::optional<tokenizer::Tokenizer> tokenizer;
  std::vector<int64_t> eos;
  std::optional<svf::AdapterStore> store;
  std::optional<VisionParts> vision;

  Loaded(const std::string& model_arg, const PlacementOptions& placement, const SvfOptions& svf) {
    model_dir = model::resolve_model(model_arg);
    model.emplace(model::Transformer::load(model_dir, placement.placement()));
    choose_compute_threads(model->config(), model->placement());
    vision.emplace(model_dir, placement.placement());
    tokenizer.emplace(tokenizer::Tokenizer::load(model_dir));
    eos = model::GenerationConfig::from_model_dir(model_dir).eos_token_ids;
    const auto cache = svf::SvdCache::load_or_build(*model, model::checkpoint_fingerprint(model_dir),
                                                    svf::parse_targets(svf.targets), svf.cache_path(), model->placement().device);
    store.emplace(*model, cache.cache, int64_t{1} << 40);
  }
};

// Pass 1 as `t2 serve` runs it: the template, the label scoring and the context.
struct DispatchFlags {
  std::string template_path = "configs/dispatch/prompt.txt";
  std::string scoring = "mean";
  int64_t context = 1024;

  void add_to(CLI::App& cmd) {
    cmd.add_option("--dispatch-template", template_path, "adaptation prompt template, as the server's")->capture_default_str();
    cmd.add_option("--label-scoring", scoring, "mean (length-normalised) or sum log-probability")->capture_default_str();
    cmd.add_option("--dispatch-context", context, "pass 1's token budget")->capture_default_str();
  }
};

struct TrainCommand {
  std::string model_dir;
  std::string out;
  std::string description;
  std::string objective = "completions";
  bool dispatch_target = false;
  DispatchFlags dispatch;
  bool no_resume = false;
  TaskOptions task;
  train::TrainOptions options;
  PlacementOptions placement;
  SvfOptions svf;

  void run() {
    Loaded l(model_dir, placement, svf);
    options.out_dir = out;
    options.name = std::filesystem::path(out).lexically_normal().filename().string();
    options.description = description.empty() ? "trained on " + std::filesystem::path(task.file).filename().string() : description;
    options.resume = !no_resume;
    options.generation = {task.max_tokens, l.eos, l.vision->get()};
    options.objective = train::parse_objective(objective);
    options.dispatch = dispatch_target ? svf::DispatchRole::kTarget : svf::DispatchRole::kNone;
    if (options.objective == train::Objective::kLabels) {
      // The categories the server would list: the experts folder's dispatch targets.
      load_experts_folder(*l.store, svf.experts_dir);
      options.labels.categories = dispatch::categories_of(l.store->experts(), options.name);
      if (options.labels.categories.empty()) {
        throw InvalidArgument("experts-dir", "--objective labels needs dispatch targets (\"dispatch\": \"target\") in " + svf.experts_dir);
      }
      options.labels.template_text = dispatch::load_template(dispatch.template_path);
      options.labels.scoring = dispatch::parse_label_scoring(dispatch.scoring);
      options.labels.context = dispatch.context;
    }
    const train::Task t = task.load();
    const auto result = train::train_svf(*l.model, *l.tokenizer, *l.store, t, options);
    nlohmann::json report = {{"expert", options.name},
                             {"out", out},
                             {"objective", objective},
                             {"base_validation_accuracy", result.base_validation},
                             {"best_validation_accuracy", result.best_validation},
                             {"best_iter", result.best_iter}};
    if (options.objective == train::Objective::kCompletions) {
      report["base_validation_perplexity"] = result.base_validation_perplexity;
      report["validation_perplexity"] = result.validation_perplexity;
    } else {
      std::vector<std::string> labels;
      for (const auto& c : options.labels.categories) labels.push_back(c.label);
      report["labels"] = labels;
    }
    std::cout << report.dump() << std::endl;
  }
};

struct AdaptCommand {
  std::string model_dir;
  std::string experts;
  std::string out;
  bool per_matrix = false;
  TaskOptions task;
  train::CemOptions cem;
  PlacementOptions placement;
  SvfOptions svf;

  void run() {
    Loaded l(model_dir, placement, svf);
    std::vector<std::string> names;
    std::stringstream list(experts);
    for (std::string name; std::getline(list, name, ',');) {
      if (!name.empty()) names.push_back(name);
    }
    if (names.empty()) throw InvalidArgument("experts", "give the experts to mix, e.g. --experts a,b,c");
    for (const auto& name : names) l.store->load_from(svf.experts_dir, name);
    const train::Task t = task.load();
    train::AdaptRequest request;
    request.name = std::filesystem::path(out).lexically_normal().filename().string();
    request.description = "CEM mixture of " + experts + " for " + std::filesystem::path(task.file).filename().string();
    request.experts = names;
    request.examples = t.examples;  // few-shot: every record is an example
    request.reward = t.reward;
    request.generation = {task.max_tokens, l.eos};
    request.cem = cem;
    request.per_matrix = per_matrix;
    train::EngineRunner runner(*l.model, *l.tokenizer, *l.store);
    svf::Expert mixture = train::adapt_mixture(*l.tokenizer, *l.store, runner, request);
    mixture.provenance["examples_file"] = std::filesystem::path(task.file).filename().string();
    mixture.save(out);
    std::cout << mixture.to_json().dump() << std::endl;
  }
};

nlohmann::json accuracy_json(const train::Accuracy& a) {
  const auto [lo, hi] = a.interval();
  return {{"accuracy", a.value()}, {"correct", a.correct}, {"total", a.total}, {"ci95", {lo, hi}}};
}

// Task accuracy over all records and per "label", and routing accuracy when
// pass 1 chose (`chosen`, one label per record).
nlohmann::json eval_report(const train::Task& t, const std::vector<train::Example>& examples,
                           const std::vector<train::Completion>& completions, const std::vector<std::string>* chosen) {
  train::Accuracy task_accuracy, routing;
  std::map<std::string, train::Accuracy> by_label;
  nlohmann::json confusion = nlohmann::json::object();
  for (size_t i = 0; i < examples.size(); ++i) {
    const bool solved = train::is_correct(t.reward, completions[i].text, examples[i].answer);
    task_accuracy.correct += solved ? 1 : 0;
    ++task_accuracy.total;
    const std::string& want = examples[i].label;
    if (want.empty()) continue;
    by_label[want].correct += solved ? 1 : 0;
    ++by_label[want].total;
    if (chosen == nullptr) continue;
    const std::string& got = (*chosen)[i];
    routing.correct += got == want ? 1 : 0;
    ++routing.total;
    confusion[want][got] = (confusion[want].contains(got) ? confusion[want][got].get<int64_t>() : 0) + 1;
  }
  nlohmann::json report = {{"task", t.name}};
  report.update(accuracy_json(task_accuracy));
  for (const auto& [label, a] : by_label) report["by_label"][label] = accuracy_json(a);
  if (routing.total > 0) {
    report["routing"] = accuracy_json(routing);
    report["routing"]["confusion"] = confusion;
  }
  return report;
}

struct EvalCommand {
  std::string model_dir;
  std::string split = "test";
  std::string strategy;
  std::string classifier_expert;
  DispatchFlags dispatch;
  TaskOptions task;
  PlacementOptions placement;
  SvfOptions svf;
  AdaptationOptions adaptation;

  void run() {
    const train::Task t = task.load();
    const auto examples = t.split(train::parse_split(split));
    if (examples.empty()) throw InvalidArgument("split", "the task has no '" + split + "' examples");
    if (!strategy.empty()) return run_two_pass(t, examples);
    const auto dir = model::resolve_model(model_dir);
    const model::Transformer m = model::Transformer::load(dir, placement.placement());
    choose_compute_threads(m.config(), m.placement());
    const VisionParts vision(dir, placement.placement());
    const auto tok = tokenizer::Tokenizer::load(dir);
    const auto weights = adapted_weights(m, dir, svf, adaptation);
    const auto completions = train::complete(m, tok, weights, train::model_prompts(tok, examples, vision.get()),
                                             {task.max_tokens, model::GenerationConfig::from_model_dir(dir).eos_token_ids, vision.get()});
    nlohmann::json report = eval_report(t, examples, completions, nullptr);
    report["split"] = split;
    report["adaptation"] = adaptation.adaptation().key();
    report["perplexity"] = train::base_perplexity(m, completions, vision.get());
    std::cout << report.dump() << std::endl;
  }

  // Pass 1 per record (the server's dispatcher, or the record's own label for
  // "oracle"), then pass 2 with the chosen adaptation; routing is scored
  // against the records' "label".
  void run_two_pass(const train::Task& t, const std::vector<train::Example>& examples) {
    if (!adaptation.is_base()) throw InvalidArgument("dispatch", "--dispatch picks the expert per record; drop --expert/--mixture");
    if (strategy != "prompt" && strategy != "classifier" && strategy != "oracle") {
      throw InvalidArgument("dispatch", "--dispatch must be prompt, classifier or oracle");
    }
    Loaded l(model_dir, placement, svf);
    load_experts_folder(*l.store, svf.experts_dir);
    dispatch::DispatchOptions options;
    options.template_text = dispatch::load_template(dispatch.template_path);
    options.classifier_expert = classifier_expert;
    options.scoring = dispatch::parse_label_scoring(dispatch.scoring);
    options.context = dispatch.context;
    dispatch::Dispatcher dispatcher(*l.model, *l.tokenizer, *l.store, options);

    std::vector<std::string> chosen;
    double dispatch_ms = 0;
    if (strategy == "oracle") {
      for (const auto& e : examples) {
        if (e.label.empty()) throw LoadError(t.name + ":" + std::to_string(e.line) + ": oracle routing needs a \"label\"");
        chosen.push_back(e.label);
      }
    } else {
      // One request at a time, so each latency is pass 1's own.
      engine::Engine engine(*l.model, *l.tokenizer, l.eos, {1, 0, 2048, 16}, &*l.store);
      for (const auto& e : examples) {
        const auto decision = dispatch::run_pass1(dispatcher, engine, dispatch::parse_strategy(strategy), {e.prompt}).front();
        chosen.push_back(decision.label);
        dispatch_ms += decision.latency_ms;
      }
    }
    // Pass 2, one batch per chosen adaptation.
    std::map<std::string, std::vector<size_t>> groups;
    for (size_t i = 0; i < examples.size(); ++i) groups[chosen[i]].push_back(i);
    std::vector<train::Completion> completions(examples.size());
    for (const auto& [label, members] : groups) {
      const auto weights = l.store->weights(label == dispatch::kOthersLabel ? svf::Adaptation::base() : svf::Adaptation::expert(label));
      std::vector<train::ModelPrompt> prompts;
      for (const size_t i : members) prompts.push_back(train::model_prompt(*l.tokenizer, examples[i], l.vision->get()));
      const auto out = train::complete(*l.model, *l.tokenizer, weights, prompts, {task.max_tokens, l.eos, l.vision->get()});
      for (size_t k = 0; k < members.size(); ++k) completions[members[k]] = out[k];
    }
    nlohmann::json report = eval_report(t, examples, completions, &chosen);
    report["split"] = split;
    report["dispatch"] = strategy;
    report["perplexity"] = train::base_perplexity(*l.model, completions, l.vision->get());
    report["dispatch_ms_mean"] = strategy == "oracle" ? 0.0 : dispatch_ms / static_cast<double>(examples.size());
    std::cout << report.dump() << std::endl;
  }
};

}  // namespace

void add_train_commands(CLI::App& app) {
  auto t = std::make_shared<TrainCommand>();
  CLI::App* train_cmd = app.add_subcommand("train", "Train an SVF expert with REINFORCE on a JSONL task");
  train_cmd->add_option("--model", t->model_dir, "Hugging Face model folder")->required()->envname("T2_MODEL");
  t->task.add_to(*train_cmd, "--task", "JSONL task file ({\"prompt\", \"answer\", \"split\"?, \"images\"?})");
  train_cmd->add_option("--out", t->out, "expert folder to write, e.g. experts/NAME")->required();
  train_cmd->add_option("--description", t->description, "what the expert is for");
  train_cmd->add_option("--objective", t->objective,
                        "completions: reward sampled completions (the reference's); labels: a classification expert for "
                        "pass 1, each record's answer its label, scored as the server scores labels")
      ->capture_default_str();
  train_cmd->add_flag("--dispatch-target", t->dispatch_target, "mark the expert as a category pass 1 may choose");
  t->dispatch.add_to(*train_cmd);
  train_cmd->add_option("--lr", t->options.lr, "Adam learning rate")->capture_default_str();
  train_cmd->add_option("--batch-size", t->options.batch_size, "samples per step")->capture_default_str()->check(CLI::PositiveNumber);
  train_cmd->add_option("--iters", t->options.iters, "training steps")->capture_default_str()->check(CLI::PositiveNumber);
  train_cmd->add_option("--kl-coef", t->options.kl_coef, "weight of KL(pi || pi_base), summed over each sample's tokens")->capture_default_str();
  train_cmd->add_option("--max-grad-norm", t->options.max_grad_norm, "gradient-norm clip (0: none)")->capture_default_str();
  train_cmd->add_option("--init", t->options.init, "initial p (z = sigmoid(p) * max_mult)")->capture_default_str();
  train_cmd->add_option("--max-mult", t->options.max_mult, "upper bound of z")->capture_default_str();
  train_cmd->add_option("--temperature", t->options.temperature, "sampling temperature while training")->capture_default_str();
  train_cmd->add_option("--eval-every", t->options.eval_every, "validate every N steps")->capture_default_str()->check(CLI::PositiveNumber);
  train_cmd->add_option("--seed", t->options.seed, "random seed (training is deterministic under it)")->capture_default_str();
  train_cmd->add_flag("--no-resume", t->no_resume, "start over instead of resuming from the output folder's state");
  t->placement.add_to(*train_cmd);
  t->svf.add_to(*train_cmd);
  train_cmd->callback([t] { t->run(); });

  auto a = std::make_shared<AdaptCommand>();
  CLI::App* adapt_cmd = app.add_subcommand("adapt", "Find a mixture of experts for a new task from a few examples (CEM)");
  adapt_cmd->add_option("--model", a->model_dir, "Hugging Face model folder")->required()->envname("T2_MODEL");
  adapt_cmd->add_option("--experts", a->experts, "experts to mix, comma-separated")->required();
  a->task.add_to(*adapt_cmd, "--examples", "JSONL few-shot examples ({\"prompt\", \"answer\"})");
  adapt_cmd->add_option("--out", a->out, "mixture expert folder to write")->required();
  adapt_cmd->add_option("--population", a->cem.population, "candidates per iteration")->capture_default_str();
  adapt_cmd->add_option("--elite-ratio", a->cem.elite_ratio, "fraction kept to refit the Gaussian")->capture_default_str();
  adapt_cmd->add_option("--iters", a->cem.iters, "CEM iterations")->capture_default_str();
  adapt_cmd->add_option("--min", a->cem.min, "lowest coefficient")->capture_default_str();
  adapt_cmd->add_option("--max", a->cem.max, "highest coefficient")->capture_default_str();
  adapt_cmd->add_option("--seed", a->cem.seed, "random seed")->capture_default_str();
  adapt_cmd->add_flag("--per-matrix", a->per_matrix, "one coefficient per expert per matrix");
  a->placement.add_to(*adapt_cmd);
  a->svf.add_to(*adapt_cmd);
  adapt_cmd->callback([a] { a->run(); });

  auto e = std::make_shared<EvalCommand>();
  CLI::App* eval_cmd = app.add_subcommand("eval", "Accuracy of the base model, an expert or a mixture on a task split (JSON)");
  eval_cmd->add_option("--model", e->model_dir, "Hugging Face model folder")->required()->envname("T2_MODEL");
  e->task.add_to(*eval_cmd, "--task", "JSONL task file");
  eval_cmd->add_option("--split", e->split, "train, validation or test")->capture_default_str();
  e->placement.add_to(*eval_cmd);
  e->svf.add_to(*eval_cmd);
  e->adaptation.add_to(*eval_cmd);
  eval_cmd->add_option("--dispatch", e->strategy,
                       "two-pass evaluation: prompt, classifier (pass 1 per record, as the server) or oracle (the records' "
                       "\"label\"); loads every expert in --experts-dir and reports routing accuracy");
  eval_cmd->add_option("--classifier-expert", e->classifier_expert, "default: the expert marked \"classifier\"");
  e->dispatch.add_to(*eval_cmd);
  eval_cmd->callback([e] { e->run(); });
}

}  // namespace t2::cli
