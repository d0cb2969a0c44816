// An SVF expert on disk: a folder with expert.json (name, description, kind,
// base fingerprint, matrices, provenance, scores) and, for kind "svf",
// z.safetensors (one float vector per adapted matrix, named by its HF weight
// name). A "mixture" names component experts and coefficients instead.
#pragma once

#include <filesystem>
#include <map>
#include <string>
#include <vector>

#include <ATen/ATen.h>
#include <nlohmann/json.hpp>

#include "t2/model/config.hpp"

namespace t2::svf {

enum class ExpertKind { kSvf, kMixture };

// The part an expert plays in pass 1 (expert.json's "dispatch").
enum class DispatchRole {
  kNone,        // used only when a request names it
  kTarget,      // a category pass 1 may choose ("target")
  kClassifier,  // the classification expert pass 1 may run under ("classifier")
};

struct MixtureComponent {
  std::string expert;
  double weight = 1.0;
  // Optional per-matrix coefficients (HF weight name -> a); `weight` elsewhere.
  std::map<std::string, double> per_matrix;

  double coefficient_for(const std::string& matrix) const;
};

struct Expert {
  std::string name;
  std::string description;
  ExpertKind kind = ExpertKind::kSvf;
  std::string base_fingerprint;
  nlohmann::json provenance = nlohmann::json::object();  // how it was made
  nlohmann::json scores = nlohmann::json::object();      // what it measured
  std::map<std::string, at::Tensor> z;                   // kSvf: float32 [r] on the CPU
  std::vector<MixtureComponent> components;              // kMixture
  DispatchRole dispatch = DispatchRole::kNone;
  std::vector<std::string> dispatch_labels;  // kClassifier: the labels it was trained to choose among

  // Reads and checks the folder on its own: JSON fields, z finite and
  // non-negative, coefficients finite and non-negative. Throws LoadError
  // naming the expert, the tensor and the reason.
  static Expert load(const std::filesystem::path& dir);
  // Writes the folder (files replaced atomically).
  void save(const std::filesystem::path& dir) const;
  // Checks that the expert fits a base model: every z names a matrix of it
  // with length min(m, n), and the fingerprint matches unless `force`.
  void validate_for(const model::ModelConfig& config, const std::string& fingerprint, bool force) const;

  // The adapted matrices (kSvf) in name order.
  std::vector<std::string> matrices() const;
  nlohmann::json to_json() const;  // expert.json's content
};

const char* to_string(ExpertKind kind);
const char* to_string(DispatchRole role);
DispatchRole parse_dispatch_role(const std::string& name);  // "none", "target", "classifier"; throws InvalidArgument

// Names usable as folder names and API ids: [A-Za-z0-9._-], not starting with '.'.
bool is_valid_expert_name(const std::string& name);

}  // namespace t2::svf
