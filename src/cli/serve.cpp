// `t2 serve`: the OpenAI-compatible server. Configuration precedence:
// flags > T2_* environment > --config file > defaults.
#include <pthread.h>
#include <signal.h>

#include <iostream>
#include <memory>
#include <optional>
#include <thread>

#include "commands.hpp"
#include "options.hpp"
#include "t2/common/errors.hpp"
#include "t2/common/log.hpp"
#include "t2/model/hub.hpp"
#include "t2/server/http_server.hpp"

namespace t2::cli {
namespace {

struct ServeFlags {
  std::string config_file;
  server::ServerConfig values;  // flag values; applied only where given
  std::vector<CLI::Option*> given;
};

// Loads everything the server needs, in order; returns what owns it.
struct Serving {
  std::optional<model::Transformer> model;
  std::optional<vision::LlavaNext> vision;  // vision-language models only
  std::optional<svf::AdapterStore> store;
  std::optional<dispatch::Dispatcher> dispatcher;
  std::optional<engine::Scheduler> scheduler;
  server::Metrics metrics;
};

void run_serve(const ServeFlags& flags, const std::function<void(server::ServerConfig&)>& apply_flags) {
  server::ServerConfig c;
  if (!flags.config_file.empty()) c.apply_file(flags.config_file);
  c.apply_environment();
  apply_flags(c);
  c.validate();
  if (c.model_id.empty()) {
    const bool from_hub = !std::filesystem::exists(c.model_dir) && model::is_hub_repo_id(c.model_dir);
    c.model_id = from_hub ? c.model_dir
                                                   : std::filesystem::path(c.model_dir).lexically_normal().filename().string();
  }
  if (c.model_id.empty()) c.model_id = std::filesystem::path(c.model_dir).lexically_normal().parent_path().filename().string();
  c.model_dir = model::resolve_model(c.model_dir).string();  // ORG/NAME is pulled from the Hub first

  // SIGINT/SIGTERM go to a waiting thread, never interrupting the others.
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGINT);
  sigaddset(&signals, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);

  server::HttpServer http(c, c.resolved_api_keys());
  const int port = http.bind(c.host, c.port);
  std::cout << "t2 listening on http://" << c.host << ":" << port << std::endl;
  std::thread http_thread([&] { http.serve(); });
  http.wait_until_running();

  Serving s;
  dispatch::Strategy default_strategy = dispatch::Strategy::kNone;
  try {
    const model::Placement placement = model::Placement::parse(c.device, c.dtype);
    s.model.emplace(model::Transformer::load(c.model_dir, placement));
    choose_compute_threads(s.model->config(), placement);
    std::shared_ptr<const vision::ImageProcessor> image_processor;
    if (vision::is_llava_next(c.model_dir)) {
      s.vision.emplace(vision::LlavaNext::load(c.model_dir, placement));
      image_processor = std::make_shared<const vision::ImageProcessor>(vision::ProcessorConfig::from_model_dir(c.model_dir));
      log::info("vision-language model: images accepted (image token " + std::to_string(s.vision->image_token_id()) + ")");
    }
    const auto tokenizer = tokenizer::Tokenizer::load(c.model_dir);
    const auto generation = model::GenerationConfig::from_model_dir(c.model_dir);
    const auto stop_ids = tokenizer::stop_token_ids(tokenizer, generation.eos_token_ids);
    const std::string fingerprint = model::checkpoint_fingerprint(c.model_dir);
    const auto cache = svf::SvdCache::load_or_build(*s.model, fingerprint, svf::parse_targets(c.targets),
                                                    c.cache_dir.empty() ? svf::default_cache_dir() : std::filesystem::path(c.cache_dir),
                                                    placement.device);
    s.store.emplace(*s.model, cache.cache, c.adapter_cache_bytes);
    load_experts_folder(*s.store, c.experts_dir, c.load_experts);
    dispatch::DispatchOptions dispatch_options;
    dispatch_options.template_text = dispatch::load_template(c.dispatch_template);
    dispatch_options.classifier_expert = c.classifier_expert;
    dispatch_options.constrained = c.constrained_dispatch;
    dispatch_options.scoring = dispatch::parse_label_scoring(c.label_scoring);
    dispatch_options.context = c.dispatch_context;
    s.dispatcher.emplace(*s.model, tokenizer, *s.store, dispatch_options);
    default_strategy = c.dispatch == "auto" ? s.dispatcher->automatic_strategy() : dispatch::parse_strategy(c.dispatch);
    engine::SchedulerOptions scheduling{c.max_batch, c.queue_capacity, c.context, c.max_step_tokens};
    scheduling.cuda_graphs = c.cuda_graphs;
    s.scheduler.emplace(*s.model, tokenizer, stop_ids, *s.store, *s.dispatcher, scheduling, s.vision ? &*s.vision : nullptr);
    if (c.adapter_cache_bytes == 0) {
      // Everything else that lives on the device is allocated by now.
      s.store->set_budget_bytes(placement.free_memory_bytes() / 2);
      log::info("adapter cache budget: " + std::to_string(s.store->stats().budget_bytes >> 20) + " MiB (half the free device memory)");
    }
    const auto format = c.chat_template == "auto" ? tokenizer::detect_chat_format(c.model_dir)
                                                  : tokenizer::parse_chat_format(c.chat_template);
    http.set_ready(std::make_shared<server::ServingContext>(server::ServingContext{
        *s.model, tokenizer, *s.store, *s.scheduler, *s.dispatcher, s.metrics, format, c.model_id, fingerprint, c.experts_dir,
        default_strategy, c.request_timeout_s, stop_ids, s.vision ? &*s.vision : nullptr, image_processor,
        c.image_policy()}));
  } catch (...) {
    http.stop();
    http_thread.join();
    throw;
  }
  std::string targets;
  for (const auto& category : s.dispatcher->categories()) targets += (targets.empty() ? "" : ",") + category.label;
  const std::string classifier = s.dispatcher->classifier();
  std::cout << "t2 ready: model " << c.model_id << ", " << s.store->experts().size() << " experts, dispatch "
            << dispatch::to_string(default_strategy) << (c.dispatch == "auto" ? " (auto)" : "")
            << (default_strategy == dispatch::Strategy::kClassifier ? " under " + classifier : "") << ", targets ["
            << targets << "]" << std::endl;

  int received = 0;
  sigwait(&signals, &received);
  log::info("signal " + std::to_string(received) + ": draining in-flight requests");
  http.set_draining();
  s.scheduler->drain();
  http.stop();
  http_thread.join();
  std::cout << "t2 stopped" << std::endl;
}

}  // namespace

void add_serve_command(CLI::App& app) {
  auto flags = std::make_shared<ServeFlags>();
  auto& v = flags->values;
  CLI::App* cmd = app.add_subcommand("serve", "Serve the OpenAI-compatible API with SVF experts and two-pass dispatch");
  cmd->add_option("--config", flags->config_file, "server config file (JSON, e.g. configs/server.json)");
  std::vector<std::pair<CLI::Option*, std::function<void(server::ServerConfig&)>>> setters;
  // Each flag writes into flags->values; the callback copies the given ones
  // over the file and environment settings.
  const auto option = [&](const char* name, auto member, const char* help) {
    CLI::Option* o = cmd->add_option(name, v.*member, help);
    setters.emplace_back(o, [flags, member](server::ServerConfig& c) { c.*member = flags->values.*member; });
  };
  option("--model", &server::ServerConfig::model_dir, "Hugging Face model folder (T2_MODEL)");
  option("--model-id", &server::ServerConfig::model_id, "the model id clients send (default: the folder name)");
  option("--experts-dir", &server::ServerConfig::experts_dir, "experts folder; all valid experts in it are loaded (T2_EXPERTS_DIR)");
  option("--host", &server::ServerConfig::host, "address to listen on (T2_HOST)");
  option("--port", &server::ServerConfig::port, "port; 0 picks a free one (T2_PORT)");
  option("--api-key", &server::ServerConfig::api_keys, "accepted API key, repeatable (T2_API_KEY, comma-separated)");
  option("--api-key-file", &server::ServerConfig::api_key_file, "file with one API key per line (T2_API_KEY_FILE)");
  option("--device", &server::ServerConfig::device, "cpu, cuda, cuda:N or auto (T2_DEVICE)");
  option("--dtype", &server::ServerConfig::dtype, "float32, bfloat16, float16 or auto (T2_DTYPE)");
  option("--dispatch", &server::ServerConfig::dispatch,
         "strategy of requests that name no expert: auto (classifier if a classification expert is loaded, else prompt "
         "if dispatch targets are, else none), explicit, prompt, classifier or none (T2_DISPATCH)");
  option("--label-scoring", &server::ServerConfig::label_scoring,
         "pass 1 label scores: mean (length-normalised) or sum log-probability (T2_LABEL_SCORING)");
  option("--dispatch-context", &server::ServerConfig::dispatch_context, "pass 1's token budget (T2_DISPATCH_CONTEXT)");
  option("--dispatch-template", &server::ServerConfig::dispatch_template, "adaptation prompt template (T2_DISPATCH_TEMPLATE)");
  option("--classifier-expert", &server::ServerConfig::classifier_expert, "expert the classifier strategy runs under; default: the one marked \"classifier\" (T2_CLASSIFIER_EXPERT)");
  option("--max-batch", &server::ServerConfig::max_batch, "sequences decoded together (T2_MAX_BATCH)");
  option("--threads", &server::ServerConfig::threads, "HTTP worker threads; 0 = max_batch + queue + 8 (T2_THREADS)");
  option("--max-step-tokens", &server::ServerConfig::max_step_tokens,
         "tokens per engine step; longer prompts prefill in chunks beside the decodes (T2_MAX_STEP_TOKENS)");
  option("--cuda-graphs", &server::ServerConfig::cuda_graphs,
         "on a GPU, replay decode steps as CUDA graphs; false runs the eager forward (T2_CUDA_GRAPHS)");
  option("--queue", &server::ServerConfig::queue_capacity, "requests waiting before 429 (T2_QUEUE_CAPACITY)");
  option("--context", &server::ServerConfig::context, "KV cache length per sequence; 0 = the model's (T2_CONTEXT)");
  option("--timeout", &server::ServerConfig::request_timeout_s, "per-request timeout in seconds (T2_REQUEST_TIMEOUT_S)");
  option("--max-body-bytes", &server::ServerConfig::max_body_bytes, "largest accepted request body (T2_MAX_BODY_BYTES)");
  option("--chat-template", &server::ServerConfig::chat_template, "auto, plain, llama-2, llama-3, chatml, qwen2, zephyr or mistral (T2_CHAT_TEMPLATE)");
  option("--cache-dir", &server::ServerConfig::cache_dir, "SVD cache folder (T2_CACHE_DIR)");
  option("--targets", &server::ServerConfig::targets, "matrices SVF adapts: mlp, attn, all, or none for the base model alone (T2_TARGETS)");
  option("--max-image-pixels", &server::ServerConfig::max_image_pixels,
         "vision models: images with more pixels are refused before decoding (T2_MAX_IMAGE_PIXELS)");
  option("--max-images-per-request", &server::ServerConfig::max_images_per_request, "vision models: images one request may carry (T2_MAX_IMAGES_PER_REQUEST)");
  option("--image-url-host", &server::ServerConfig::image_url_hosts,
         "host that http(s) image URLs may name, repeatable, * for any; none: data: URLs only (T2_IMAGE_URL_HOSTS)");
  option("--max-image-fetch-bytes", &server::ServerConfig::max_image_fetch_bytes,
         "largest image fetched from an allowed host (T2_MAX_IMAGE_FETCH_BYTES)");
  auto apply = std::make_shared<std::vector<std::pair<CLI::Option*, std::function<void(server::ServerConfig&)>>>>(std::move(setters));
  cmd->callback([flags, apply] {
    run_serve(*flags, [apply](server::ServerConfig& c) {
      for (const auto& [opt, set] : *apply) {
        if (opt->count() > 0) set(c);
      }
    });
  });
}

}  // namespace t2::cli
