// An adaptation ready for the forward pass: the scale vector s ⊙ z̃ of every
// matrix it changes (what the per-row factored path multiplies by), and the
// composed dense matrices when someone has them. Immutable and shared: the
// adapter store hands the same object to every request of an adaptation.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <string>

#include <ATen/ATen.h>

#include "t2/model/weights.hpp"
#include "t2/svf/svd_cache.hpp"
#include "t2/svf/targets.hpp"

namespace t2::svf {

struct Adapter {
  std::string key;        // the adaptation's canonical key, e.g. "cat" or "cat=0.5,dog=0.5"
  uint64_t revision = 0;  // the store's revision when resolved: replacing an expert yields a new id
  // [r] per adapted matrix, in the model dtype on its device; z̃ = z · Σs / Σ(s·z).
  std::map<MatrixId, at::Tensor> scales;
  // W' for every matrix, when the caller composed it (training); servers ask
  // the store's dense cache instead.
  std::shared_ptr<const model::ProjectionSet> dense;

  // Unique per content: two adapters with one id apply the same weights.
  std::string id() const { return key + "#" + std::to_string(revision); }
};

// An adapter that runs `weights` as they are (a CLI's or trainer's own
// composition); null for null weights (the base model). It has no scales, so
// it cannot share a step with other adapters.
std::shared_ptr<const Adapter> dense_adapter(std::shared_ptr<const model::ProjectionSet> weights);

// s ⊙ z̃ for factors `f` and a z vector, in the dtype of f.U; throws
// InvalidArgument("mixture", ...) when s·z sums to zero or is not finite.
at::Tensor svf_scale(const SvdFactors& f, const at::Tensor& z, const std::string& matrix);

}  // namespace t2::svf
