#include "t2/svf/reference_import.hpp"

#include <map>

#include "t2/common/errors.hpp"
#include "t2/svf/torch_state_dict.hpp"

namespace t2::svf {

namespace {
const std::string kPolicyPrefix = "learnable_params_module_list.";
}

std::vector<MatrixId> policy_param_matrices(const model::ModelConfig& config, Targets targets) {
  // target_matrices goes layer by layer, each in kAllProjections order, which
  // is the order HF's Llama/Mistral/Qwen2 state_dict() lists the matrices in.
  return target_matrices(config, targets);
}

std::optional<int64_t> policy_param_index(const std::string& key) {
  if (key.rfind(kPolicyPrefix, 0) != 0) return std::nullopt;
  const std::string digits = key.substr(kPolicyPrefix.size());
  if (digits.empty() || digits.size() > 9 || (digits.size() > 1 && digits[0] == '0')) return std::nullopt;
  for (const char c : digits) {
    if (c < '0' || c > '9') return std::nullopt;
  }
  return std::stoll(digits);
}

Expert import_reference_checkpoint(const std::filesystem::path& file, const ReferenceImport& options,
                                   const model::ModelConfig& config, const std::string& fingerprint) {
  if (!(options.max_mult > 0)) throw InvalidArgument("max-mult", "max_mult must be > 0");
  const std::string where = file.string();
  const auto entries = read_torch_state_dict(file);
  if (entries.empty()) throw LoadError(where + ": the checkpoint holds no parameters");

  size_t policy_keys = 0;
  for (const auto& entry : entries) policy_keys += policy_param_index(entry.first).has_value();
  if (policy_keys != 0 && policy_keys != entries.size()) {
    throw LoadError(where + ": mixes learnable_params_module_list.N keys with other keys");
  }
  const bool policy_form = policy_keys != 0;

  // HF weight name -> raw parameters p.
  std::map<std::string, at::Tensor> params;
  if (policy_form) {
    const std::vector<MatrixId> matrices = policy_param_matrices(config, options.targets);
    if (entries.size() != matrices.size()) {
      throw LoadError(where + ": holds " + std::to_string(entries.size()) + " policy parameters, but targets '" +
                      to_string(options.targets) + "' of this model (" + std::to_string(config.num_layers) +
                      " layers) adapt " + std::to_string(matrices.size()) + " matrices");
    }
    std::vector<bool> seen(matrices.size(), false);
    for (const auto& [key, tensor] : entries) {
      const int64_t index = *policy_param_index(key);
      if (index >= static_cast<int64_t>(matrices.size()) || seen[static_cast<size_t>(index)]) {
        throw LoadError(where + ": " + key + " is out of range or repeated (expected indices 0.." +
                        std::to_string(matrices.size() - 1) + ", once each)");
      }
      seen[static_cast<size_t>(index)] = true;
      params.emplace(matrices[static_cast<size_t>(index)].weight_name(), tensor);
    }
  } else {
    for (const auto& [key, tensor] : entries) {
      if (!params.emplace(key, tensor).second) throw LoadError(where + ": " + key + " appears twice");
    }
  }

  Expert expert;
  expert.name = options.name;
  expert.description = options.description;
  expert.kind = ExpertKind::kSvf;
  expert.base_fingerprint = fingerprint;
  expert.provenance = {{"method", "import"},
                       {"source", "SakanaAI/self-adaptive-llms checkpoint"},
                       {"form", policy_form ? "policy_params (state_dict of learnable_params_module_list)"
                                            : "learnable_params (dict by HF weight name)"},
                       {"file", file.filename().string()},
                       {"max_mult", options.max_mult}};
  if (policy_form) expert.provenance["targets"] = to_string(options.targets);
  for (const auto& [name, p] : params) {
    const std::optional<MatrixId> id = parse_weight_name(name, config.num_layers);
    if (!id) throw LoadError(where + ": " + name + " names no adaptable matrix of this model");
    const int64_t r = singular_value_count(config, id->projection);
    if (p.dim() != 1 || p.numel() != r) {
      throw LoadError(where + ": the vector for " + name + " has shape " + c10::str(p.sizes()) + "; the matrix has " +
                      std::to_string(r) + " singular values");
    }
    expert.z.emplace(name, at::sigmoid(p.detach().to(at::kFloat)) * options.max_mult);
  }
  expert.validate_for(config, fingerprint, /*force=*/false);
  return expert;
}

}  // namespace t2::svf
