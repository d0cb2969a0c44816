// Import of the reference implementation's (SakanaAI/self-adaptive-llms)
// trained policies: a torch.save'd dict of raw parameters p keyed by HF weight
// name, where z = sigmoid(p) * max_mult.
#pragma once

#include <filesystem>
#include <string>

#include "t2/model/config.hpp"
#include "t2/svf/expert.hpp"

namespace t2::svf {

struct ReferenceImport {
  std::string name;
  std::string description;
  double max_mult = 1.0;
};

// Reads the checkpoint and returns a validated expert for the base model.
Expert import_reference_checkpoint(const std::filesystem::path& file, const ReferenceImport& options,
                                   const model::ModelConfig& config, const std::string& fingerprint);

}  // namespace t2::svf
