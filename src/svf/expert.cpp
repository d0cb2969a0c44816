#include "t2/svf/expert.hpp"

#include <cctype>
#include <cmath>
#include <fstream>

#include "t2/common/errors.hpp"
#include "t2/model/safetensors.hpp"
#include "t2/svf/targets.hpp"

namespace t2::svf {
namespace {

constexpr const char* kFormat = "t2-expert-v1";

nlohmann::json read_json(const std::filesystem::path& path, const std::string& who) {
  std::ifstream in(path);
  if (!in) throw LoadError(who + ": cannot open " + path.string());
  try {
    return nlohmann::json::parse(in);
  } catch (const nlohmann::json::exception& e) {
    throw LoadError(who + ": " + path.string() + " is not valid JSON: " + e.what());
  }
}

void write_text_atomically(const std::filesystem::path& path, const std::string& text) {
  auto temp = path;
  temp += ".tmp";
  {
    std::ofstream out(temp, std::ios::trunc);
    out << text;
    if (!out) throw Error("cannot write " + temp.string());
  }
  std::filesystem::rename(temp, path);
}

void check_coefficient(double a, const std::string& who) {
  if (!std::isfinite(a) || a < 0) throw LoadError(who + ": coefficient " + std::to_string(a) + " must be finite and >= 0");
}

}  // namespace

double MixtureComponent::coefficient_for(const std::string& matrix) const {
  const auto it = per_matrix.find(matrix);
  return it == per_matrix.end() ? weight : it->second;
}

const char* to_string(ExpertKind kind) { return kind == ExpertKind::kSvf ? "svf" : "mixture"; }

const char* to_string(DispatchRole role) {
  switch (role) {
    case DispatchRole::kNone: return "none";
    case DispatchRole::kTarget: return "target";
    case DispatchRole::kClassifier: return "classifier";
  }
  return "none";
}

DispatchRole parse_dispatch_role(const std::string& name) {
  if (name == "none") return DispatchRole::kNone;
  if (name == "target") return DispatchRole::kTarget;
  if (name == "classifier") return DispatchRole::kClassifier;
  throw InvalidArgument("dispatch", "unknown dispatch role '" + name + "' (use none, target or classifier)");
}

bool is_valid_expert_name(const std::string& name) {
  if (name.empty() || name.size() > 128 || name[0] == '.') return false;
  for (const char c : name) {
    if (!(std::isalnum(static_cast<unsigned char>(c)) || c == '.' || c == '_' || c == '-')) return false;
  }
  return true;
}

std::vector<std::string> Expert::matrices() const {
  std::vector<std::string> names;
  for (const auto& [name, value] : z) names.push_back(name);
  return names;
}

nlohmann::json Expert::to_json() const {
  nlohmann::json j = {{"format", kFormat},       {"name", name},
                      {"description", description}, {"kind", to_string(kind)},
                      {"base_fingerprint", base_fingerprint}, {"provenance", provenance},
                      {"scores", scores}};
  if (dispatch != DispatchRole::kNone) j["dispatch"] = to_string(dispatch);
  if (!dispatch_labels.empty()) j["dispatch_labels"] = dispatch_labels;
  if (kind == ExpertKind::kSvf) {
    j["matrices"] = matrices();
  } else {
    nlohmann::json components_json = nlohmann::json::array();
    for (const auto& c : components) {
      nlohmann::json cj = {{"expert", c.expert}, {"weight", c.weight}};
      if (!c.per_matrix.empty()) cj["per_matrix"] = c.per_matrix;
      components_json.push_back(cj);
    }
    j["components"] = components_json;
  }
  return j;
}

Expert Expert::load(const std::filesystem::path& dir) {
  const std::string folder = dir.filename().string();
  std::string who = "expert '" + folder + "'";
  if (!std::filesystem::is_directory(dir)) throw NotFound(who + ": no folder " + dir.string());
  const nlohmann::json j = read_json(dir / "expert.json", who);
  Expert e;
  try {
    e.name = j.value("name", folder);
    e.description = j.value("description", "");
    const std::string kind = j.value("kind", "svf");
    if (kind != "svf" && kind != "mixture") throw LoadError(who + ": kind '" + kind + "' is neither svf nor mixture");
    e.kind = kind == "svf" ? ExpertKind::kSvf : ExpertKind::kMixture;
    e.base_fingerprint = j.value("base_fingerprint", "");
    e.provenance = j.value("provenance", nlohmann::json::object());
    e.scores = j.value("scores", nlohmann::json::object());
    try {
      e.dispatch = parse_dispatch_role(j.value("dispatch", "none"));
    } catch (const InvalidArgument& ex) {
      throw LoadError(who + ": " + ex.what());
    }
    e.dispatch_labels = j.value("dispatch_labels", std::vector<std::string>{});
    if (e.kind == ExpertKind::kMixture) {
      for (const auto& c : j.at("components")) {
        MixtureComponent component;
        component.expert = c.at("expert").get<std::string>();
        component.weight = c.value("weight", 1.0);
        check_coefficient(component.weight, who + ": component '" + component.expert + "'");
        const nlohmann::json per_matrix = c.value("per_matrix", nlohmann::json::object());
        for (const auto& [m, a] : per_matrix.items()) {
          component.per_matrix[m] = a.get<double>();
          check_coefficient(component.per_matrix[m], who + ": component '" + component.expert + "' matrix '" + m + "'");
        }
        e.components.push_back(std::move(component));
      }
    }
  } catch (const nlohmann::json::exception& ex) {
    throw LoadError(who + ": malformed expert.json: " + ex.what());
  }
  if (e.name != folder) throw LoadError(who + ": expert.json names it '" + e.name + "'; the folder and the name must agree");
  if (!is_valid_expert_name(e.name)) throw LoadError(who + ": invalid name (use letters, digits, '.', '_', '-')");
  who = "expert '" + e.name + "'";
  if (e.kind == ExpertKind::kMixture) {
    if (e.components.empty()) throw LoadError(who + ": a mixture needs at least one component");
    return e;
  }

  const auto file = model::SafetensorsFile::open(dir / "z.safetensors");  // names the file on truncation
  if (file.tensors().empty()) throw LoadError(who + ": z.safetensors holds no vectors");
  for (const auto& [name, view] : file.tensors()) {
    const std::string tensor_who = who + ": tensor '" + name + "'";
    if (view.shape.size() != 1) throw LoadError(tensor_who + ": z must be a vector");
    if (!at::isFloatingType(view.dtype)) throw LoadError(tensor_who + ": z must be floating point");
    const at::Tensor z = view.to_tensor().to(at::kFloat);
    if (!at::isfinite(z).all().item<bool>()) throw LoadError(tensor_who + ": z has NaN or infinite values");
    if ((z < 0).any().item<bool>()) throw LoadError(tensor_who + ": z has negative values");
    if (z.sum().item<double>() <= 0) throw LoadError(tensor_who + ": z is all zeros");
    e.z.emplace(name, z);
  }
  if (const auto listed = j.find("matrices"); listed != j.end() && listed->get<std::vector<std::string>>() != e.matrices()) {
    throw LoadError(who + ": expert.json's 'matrices' disagree with the vectors in z.safetensors");
  }
  return e;
}

void Expert::validate_for(const model::ModelConfig& config, const std::string& fingerprint, bool force) const {
  const std::string who = "expert '" + name + "'";
  if (!force && base_fingerprint != fingerprint) {
    throw LoadError(who + ": made for base model " + (base_fingerprint.empty() ? "(unknown)" : base_fingerprint) +
                    ", this model is " + fingerprint + " (use --force to load it anyway)");
  }
  for (const auto& [matrix, vector] : z) {
    const auto id = parse_weight_name(matrix, config.num_layers);
    if (!id) throw LoadError(who + ": tensor '" + matrix + "': not an adaptable matrix of this model");
    const int64_t expected = singular_value_count(config, id->projection);
    if (vector.numel() != expected) {
      throw LoadError(who + ": tensor '" + matrix + "': length " + std::to_string(vector.numel()) + ", expected " +
                      std::to_string(expected) + " (min(m, n))");
    }
  }
}

void Expert::save(const std::filesystem::path& dir) const {
  if (!is_valid_expert_name(name)) throw InvalidArgument("name", "invalid expert name '" + name + "'");
  std::filesystem::create_directories(dir);
  if (kind == ExpertKind::kSvf) {
    std::vector<std::pair<std::string, at::Tensor>> tensors(z.begin(), z.end());
    model::write_safetensors(dir / "z.safetensors", tensors, {{"format", kFormat}});
  }
  write_text_atomically(dir / "expert.json", to_json().dump(2) + "\n");
}

}  // namespace t2::svf
