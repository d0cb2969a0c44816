// Import of the reference implementation's (SakanaAI/self-adaptive-llms)
// trained policies, in both forms it writes, where z = sigmoid(p) * max_mult:
//  - learnable_params.pt: a dict of raw parameters p keyed by HF weight name;
//  - policy_params.pt (its default): torch.save(policy.state_dict()), an
//    OrderedDict keyed "learnable_params_module_list.N". The policy builds that
//    list from the base model's state_dict() in order, keeping the matrices it
//    adapts (the MLP ones by default), so N counts the targeted matrices layer
//    by layer in HF order (q, k, v, o, gate, up, down): policy_param_matrices.
#pragma once

#include <filesystem>
#include <optional>
#include <string>
#include <vector>

#include "t2/model/config.hpp"
#include "t2/svf/expert.hpp"
#include "t2/svf/targets.hpp"

namespace t2::svf {

struct ReferenceImport {
  std::string name;
  std::string description;
  double max_mult = 1.0;
  Targets targets = Targets::kMlp;  // the matrices a policy_params.pt's list adapts
};

// The matrix learnable_params_module_list.N adapts, for every N in order.
std::vector<MatrixId> policy_param_matrices(const model::ModelConfig& config, Targets targets);
// "learnable_params_module_list.12" -> 12; nullopt for any other key.
std::optional<int64_t> policy_param_index(const std::string& key);

// Reads the checkpoint (either form, told apart by its keys) and returns a
// validated expert for the base model. LoadError when the file is neither form
// or does not fit the model: a wrong number of entries, or a vector whose
// length is not its matrix's number of singular values.
Expert import_reference_checkpoint(const std::filesystem::path& file, const ReferenceImport& options,
                                   const model::ModelConfig& config, const std::string& fingerprint);

}  // namespace t2::svf
