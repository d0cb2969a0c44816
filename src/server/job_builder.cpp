#include "job_builder.hpp"

#include <algorithm>
#include <chrono>
#include <string>

#include "t2/server/images.hpp"

namespace t2::server {
namespace {

// Which adaptation and strategy a request asks for.
void choose_adaptation(const ServingContext& ctx, const GenerationFields& f, engine::Job& job) {
  const auto require_loaded = [&](const std::string& name, const char* param) {
    if (!ctx.store.find(name)) throw ApiError::not_found(param, "expert '" + name + "' is not loaded", "expert_not_found");
  };
  if (!f.mixture.empty()) {
    for (const auto& [name, w] : f.mixture) require_loaded(name, "mixture");
    job.strategy = dispatch::Strategy::kExplicit;
    job.adaptation.coefficients = f.mixture;
    return;
  }
  if (f.expert && *f.expert != "auto") {
    if (*f.expert == "none") {
      job.strategy = dispatch::Strategy::kNone;
      return;
    }
    require_loaded(*f.expert, "expert");
    job.strategy = dispatch::Strategy::kExplicit;
    job.adaptation = svf::Adaptation::expert(*f.expert);
    return;
  }
  if (!f.model.empty() && f.model != ctx.model_id) {
    if (!ctx.store.find(f.model)) {
      throw ApiError::not_found("model", "the model '" + f.model + "' does not exist", "model_not_found");
    }
    job.strategy = dispatch::Strategy::kExplicit;
    job.adaptation = svf::Adaptation::expert(f.model);
    return;
  }
  try {
    job.strategy = f.dispatch && *f.dispatch != "auto" ? dispatch::parse_strategy(*f.dispatch) : ctx.default_strategy;
  } catch (const InvalidArgument& e) {
    throw ApiError::bad_request("dispatch", e.what());
  }
  // "explicit" with nothing named (or "auto" with an explicit default) is the base model.
  if (job.strategy == dispatch::Strategy::kExplicit) job.strategy = dispatch::Strategy::kNone;
}

// Everything of a job but its prompt.
engine::Job base_job(const ServingContext& ctx, const GenerationFields& f) {
  engine::Job job;
  job.n = f.n;
  job.generation.max_tokens = f.max_tokens;
  job.generation.stop = f.stop;
  job.generation.ignore_eos = f.ignore_eos;
  job.generation.top_logprobs = std::max(f.logprobs, 0);
  auto& s = job.generation.sampling;
  s.temperature = f.temperature;
  s.top_p = f.top_p;
  s.top_k = f.top_k;
  s.presence_penalty = f.presence_penalty;
  s.frequency_penalty = f.frequency_penalty;
  s.seed = f.seed;
  job.deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(static_cast<int64_t>(ctx.request_timeout_s * 1000));
  choose_adaptation(ctx, f, job);
  return job;
}

void check_prompt(const ServingContext& ctx, const std::vector<int64_t>& prompt, const GenerationFields& f) {
  const int64_t context = ctx.scheduler.context_length();
  const auto n = static_cast<int64_t>(prompt.size());
  if (n >= context) {
    throw ApiError(400, "invalid_request_error",
                   "This model's maximum context length is " + std::to_string(context) + " tokens, however you requested " +
                       std::to_string(n + (f.max_tokens_given ? f.max_tokens : 1)) + " tokens (" + std::to_string(n) +
                       " in the prompt, " + std::to_string(f.max_tokens_given ? f.max_tokens : 1) + " for the completion).",
                   "prompt", "context_length_exceeded");
  }
  for (const int64_t t : prompt) {
    if (t < 0 || t >= ctx.model.config().vocab_size) {
      throw ApiError::bad_request("prompt", "token id " + std::to_string(t) + " is outside the vocabulary");
    }
  }
}

}  // namespace

RequestJobs build_chat_jobs(const ServingContext& ctx, const nlohmann::json& body) {
  ChatRequest r = parse_chat_request(body);
  RequestJobs out;
  out.fields = r.fields;
  engine::Job job = base_job(ctx, out.fields);
  std::optional<int64_t> image_token;
  if (!r.images.empty()) {
    if (ctx.vision == nullptr || !ctx.image_processor) {
      throw ApiError::bad_request(r.images.front().param, "the model '" + ctx.model_id + "' does not accept images");
    }
    if (static_cast<int64_t>(r.images.size()) > ctx.images.max_images) {
      throw ApiError::bad_request(r.images.back().param, "at most " + std::to_string(ctx.images.max_images) + " images per request");
    }
    image_token = ctx.vision->image_token_id();
  }
  std::vector<vision::PromptImage> images;
  for (const ImagePart& part : r.images) images.push_back(prepare_image(part, ctx.images, *ctx.image_processor));
  job.prompt = tokenizer::encode_chat(ctx.tokenizer, tokenizer::render_chat(ctx.chat_format, r.messages), image_token);
  if (!images.empty()) {
    job.prompt = vision::expand_image_tokens(*ctx.vision, job.prompt, images);
    job.generation.images = std::move(images);
  }
  for (const auto& m : r.messages) {
    if (m.role == "user") job.dispatch_text = m.content;  // the latest user turn
  }
  if (!out.fields.max_tokens_given) job.generation.max_tokens = ctx.scheduler.context_length();
  check_prompt(ctx, job.prompt, out.fields);
  out.jobs.push_back(std::move(job));
  return out;
}

RequestJobs build_completion_jobs(const ServingContext& ctx, const nlohmann::json& body) {
  CompletionRequest r = parse_completion_request(body);
  RequestJobs out;
  out.fields = r.fields;
  out.echo = r.echo;
  for (const auto& text : r.text_prompts) {
    engine::Job job = base_job(ctx, out.fields);
    job.prompt = ctx.tokenizer.encode(text, /*add_bos=*/true);
    job.dispatch_text = text;
    check_prompt(ctx, job.prompt, out.fields);
    out.jobs.push_back(std::move(job));
  }
  for (const auto& tokens : r.token_prompts) {
    engine::Job job = base_job(ctx, out.fields);
    job.prompt = tokens;
    check_prompt(ctx, job.prompt, out.fields);
    job.dispatch_text = ctx.tokenizer.decode(tokens);
    out.jobs.push_back(std::move(job));
  }
  return out;
}

}  // namespace t2::server
