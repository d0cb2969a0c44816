#include "t2/train/policy.hpp"

#include <ATen/core/grad_mode.h>

#include "t2/common/errors.hpp"
#include "t2/svf/compose.hpp"

namespace t2::train {

SvfPolicy::SvfPolicy(const model::Transformer& model, const svf::AdapterStore& store, double max_mult, double init)
    : model_(model), store_(store), max_mult_(max_mult) {
  if (!(max_mult > 0)) throw InvalidArgument("max-mult", "max_mult must be > 0");
  for (const auto& [id, f] : store.factors()) {
    matrices_.push_back(id);
    parameters_.push_back(at::full({f.s.numel()}, init, f.s.options()).requires_grad_(true));  // s's precision: float32 or float64
  }
}

std::map<svf::MatrixId, at::Tensor> SvfPolicy::z() const {
  std::map<svf::MatrixId, at::Tensor> out;
  for (size_t i = 0; i < matrices_.size(); ++i) out.emplace(matrices_[i], (at::sigmoid(parameters_[i].detach()) * max_mult_).cpu());
  return out;
}

model::ProjectionSet SvfPolicy::compose() const {
  model::ProjectionSet weights = model_.base_projections();
  for (size_t i = 0; i < matrices_.size(); ++i) {
    const svf::SvdFactors& f = store_.factors().at(matrices_[i]);
    const at::Tensor z = at::sigmoid(parameters_[i]) * max_mult_;
    weights.set(matrices_[i].layer, matrices_[i].projection, svf::compose(f.U, f.s, f.Vh, z));
  }
  return weights;
}

std::shared_ptr<const model::ProjectionSet> SvfPolicy::compose_detached() const { return store_.compose(z()); }

SequenceScores score_completions(const model::Transformer& model, const model::ProjectionSet& weights,
                                 const std::vector<std::vector<int64_t>>& prompts,
                                 const std::vector<std::vector<int64_t>>& completions,
                                 const model::ProjectionSet* kl_base) {
  std::vector<ModelPrompt> text_prompts;
  for (const auto& p : prompts) text_prompts.push_back({p, {}});
  return score_completions(model, weights, text_prompts, completions, kl_base, nullptr);
}

SequenceScores score_completions(const model::Transformer& model, const model::ProjectionSet& weights,
                                 const std::vector<ModelPrompt>& prompts, const std::vector<std::vector<int64_t>>& completions,
                                 const model::ProjectionSet* kl_base, const vision::LlavaNext* vision) {
  const auto B = static_cast<int64_t>(prompts.size());
  int64_t T = 0;
  for (int64_t b = 0; b < B; ++b) T = std::max<int64_t>(T, static_cast<int64_t>(prompts[b].tokens.size() + completions[b].size()));
  std::vector<int64_t> grid(static_cast<size_t>(B * T), 0), lengths;
  // mask[b, t] = 1 where position t predicts a completion token.
  std::vector<float> mask(static_cast<size_t>(B * T), 0.0f);
  std::vector<int64_t> targets(static_cast<size_t>(B * T), 0);
  SequenceScores out;
  for (int64_t b = 0; b < B; ++b) {
    std::vector<int64_t> seq = prompts[b].tokens;
    seq.insert(seq.end(), completions[b].begin(), completions[b].end());
    std::copy(seq.begin(), seq.end(), grid.begin() + b * T);
    lengths.push_back(static_cast<int64_t>(seq.size()));
    for (size_t t = prompts[b].tokens.size(); t < seq.size(); ++t) {
      mask[static_cast<size_t>(b * T) + t - 1] = 1.0f;
      targets[static_cast<size_t>(b * T) + t - 1] = seq[t];
      ++out.tokens;
    }
  }
  const auto device = model.placement().device;
  const at::Tensor tokens = at::tensor(grid, at::kLong).view({B, T});
  const at::Tensor m = at::tensor(mask, at::kFloat).view({B, T}).to(device);
  const at::Tensor target = at::tensor(targets, at::kLong).view({B, T, 1}).to(device);
  // Rows with images run from embeddings: the grid's, with each image's features in its span.
  at::Tensor embeddings;
  for (int64_t b = 0; b < B; ++b) {
    if (prompts[b].images.empty()) continue;
    if (vision == nullptr) throw InvalidArgument("images", "prompts with images need the vision model");
    if (!embeddings.defined()) embeddings = model.embed(grid).view({B, T, -1});
    place_image_features(*vision, embeddings[b], prompts[b].images);
  }
  const at::Tensor logp = model.forward_full(tokens, lengths, weights, embeddings).log_softmax(-1);  // [B, T, V]
  out.log_likelihood = (logp.gather(-1, target).squeeze(-1) * m).sum(-1);
  if (kl_base != nullptr) {
    at::Tensor base_logp;
    {
      at::NoGradGuard no_grad;  // the reference distribution is a constant
      base_logp = model.forward_full(tokens, lengths, *kl_base, embeddings).log_softmax(-1);
    }
    const at::Tensor kl = (logp.exp() * (logp - base_logp)).sum(-1);  // [B, T]
    // Per sequence, like the log-likelihood it is weighed against: the sum over its tokens.
    out.kl = (kl * m).sum() / static_cast<double>(std::max<int64_t>(B, 1));
  } else {
    out.kl = at::zeros({}, at::TensorOptions().device(device));
  }
  return out;
}

}  // namespace t2::train
