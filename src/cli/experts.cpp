// `t2 experts list|show|validate|mix|import`: manage expert folders.
#include <iomanip>
#include <iostream>
#include <memory>

#include "commands.hpp"
#include "options.hpp"
#include "t2/common/errors.hpp"
#include "t2/svf/reference_import.hpp"

namespace t2::cli {
namespace {

std::vector<std::string> expert_names(const std::filesystem::path& dir) {
  std::vector<std::string> names;
  if (!std::filesystem::is_directory(dir)) throw NotFound("experts folder " + dir.string() + " does not exist");
  for (const auto& entry : std::filesystem::directory_iterator(dir)) {
    if (entry.is_directory() && std::filesystem::exists(entry.path() / "expert.json")) {
      names.push_back(entry.path().filename().string());
    }
  }
  std::sort(names.begin(), names.end());
  return names;
}

std::filesystem::path expert_dir(const std::string& experts_dir, const std::string& name) {
  if (!svf::is_valid_expert_name(name)) throw InvalidArgument("name", "invalid expert name '" + name + "'");
  return std::filesystem::path(experts_dir) / name;
}

void list(const SvfOptions& o) {
  std::cout << std::left << std::setw(24) << "NAME" << std::setw(9) << "KIND" << std::setw(10) << "MATRICES"
            << "DESCRIPTION\n";
  for (const auto& name : expert_names(o.experts_dir)) {
    try {
      const svf::Expert e = svf::Expert::load(expert_dir(o.experts_dir, name));
      const size_t count = e.kind == svf::ExpertKind::kSvf ? e.z.size() : e.components.size();
      std::cout << std::setw(24) << name << std::setw(9) << svf::to_string(e.kind) << std::setw(10) << count
                << e.description << "\n";
    } catch (const Error& err) {
      std::cout << std::setw(24) << name << std::setw(9) << "invalid" << std::setw(10) << "-" << err.what() << "\n";
    }
  }
}

void show(const SvfOptions& o, const std::string& name) {
  const svf::Expert e = svf::Expert::load(expert_dir(o.experts_dir, name));
  std::cout << e.to_json().dump(2) << "\n";
  for (const auto& [matrix, z] : e.z) {
    std::cout << "  " << std::left << std::setw(44) << matrix << " r=" << z.numel() << " mean=" << z.mean().item<double>()
              << " min=" << z.min().item<double>() << " max=" << z.max().item<double>() << "\n";
  }
}

int validate(const SvfOptions& o, const std::string& model_dir, const std::vector<std::string>& names, bool force) {
  const model::ModelConfig config = model::ModelConfig::from_file(std::filesystem::path(model_dir) / "config.json");
  const std::string fingerprint = model::checkpoint_fingerprint(model_dir);
  int failures = 0;
  for (const auto& name : names.empty() ? expert_names(o.experts_dir) : names) {
    try {
      svf::Expert::load(expert_dir(o.experts_dir, name)).validate_for(config, fingerprint, force);
      std::cout << "ok      " << name << "\n";
    } catch (const Error& err) {
      ++failures;
      std::cout << "invalid " << name << ": " << err.what() << "\n";
    }
  }
  return failures;
}

void mix(const SvfOptions& o, const std::string& out, const std::vector<std::string>& terms, const std::string& description) {
  std::string joined;
  for (const auto& t : terms) joined += (joined.empty() ? "" : ",") + t;
  const svf::Adaptation adaptation = svf::Adaptation::parse_mixture(joined);
  svf::Expert mixture;
  mixture.name = out;
  mixture.kind = svf::ExpertKind::kMixture;
  mixture.description = description.empty() ? "mixture " + adaptation.key() : description;
  for (const auto& [name, weight] : adaptation.coefficients) {
    const svf::Expert component = svf::Expert::load(expert_dir(o.experts_dir, name));  // must exist
    if (mixture.base_fingerprint.empty()) mixture.base_fingerprint = component.base_fingerprint;
    if (component.base_fingerprint != mixture.base_fingerprint) {
      throw LoadError("expert '" + name + "' was made for another base model than the other components");
    }
    mixture.components.push_back({name, weight, {}});
  }
  mixture.provenance = {{"method", "mix"}, {"mixture", adaptation.key()}};
  mixture.save(expert_dir(o.experts_dir, out));
  std::cout << "wrote " << expert_dir(o.experts_dir, out).string() << "\n";
}

void import_reference(const SvfOptions& o, const std::string& file, const std::string& model_dir,
                      const svf::ReferenceImport& options) {
  const model::ModelConfig config = model::ModelConfig::from_file(std::filesystem::path(model_dir) / "config.json");
  const svf::Expert e = svf::import_reference_checkpoint(file, options, config, model::checkpoint_fingerprint(model_dir));
  e.save(expert_dir(o.experts_dir, options.name));
  std::cout << "imported " << e.z.size() << " vectors into " << expert_dir(o.experts_dir, options.name).string() << "\n";
}

}  // namespace

void add_experts_command(CLI::App& app) {
  CLI::App* cmd = app.add_subcommand("experts", "List, inspect, validate, mix and import SVF experts");
  cmd->require_subcommand(1);
  auto svf_options = std::make_shared<SvfOptions>();
  const auto add_dir = [&](CLI::App* sub) {
    sub->add_option("--experts-dir", svf_options->experts_dir, "folder of expert folders")
        ->envname("T2_EXPERTS_DIR")
        ->capture_default_str();
  };

  CLI::App* list_cmd = cmd->add_subcommand("list", "List the experts in the experts folder");
  add_dir(list_cmd);
  list_cmd->callback([svf_options] { list(*svf_options); });

  auto name = std::make_shared<std::string>();
  CLI::App* show_cmd = cmd->add_subcommand("show", "Print an expert's metadata and z statistics");
  show_cmd->add_option("name", *name, "expert name")->required();
  add_dir(show_cmd);
  show_cmd->callback([svf_options, name] { show(*svf_options, *name); });

  auto names = std::make_shared<std::vector<std::string>>();
  auto model_dir = std::make_shared<std::string>();
  auto force = std::make_shared<bool>(false);
  CLI::App* validate_cmd = cmd->add_subcommand("validate", "Check experts against a base model (all when none named)");
  validate_cmd->add_option("names", *names, "expert names");
  validate_cmd->add_option("--model", *model_dir, "Hugging Face model folder")->required()->envname("T2_MODEL");
  validate_cmd->add_flag("--force", *force, "accept a different base fingerprint");
  add_dir(validate_cmd);
  validate_cmd->callback([svf_options, names, model_dir, force] {
    const int failures = validate(*svf_options, *model_dir, *names, *force);
    if (failures > 0) throw LoadError(std::to_string(failures) + " expert(s) failed validation");
  });

  auto out = std::make_shared<std::string>();
  auto terms = std::make_shared<std::vector<std::string>>();
  auto description = std::make_shared<std::string>();
  CLI::App* mix_cmd = cmd->add_subcommand("mix", "Write a mixture expert: t2 experts mix --out NAME a=0.7 b=0.3");
  mix_cmd->add_option("--out", *out, "name of the new mixture")->required();
  mix_cmd->add_option("terms", *terms, "expert=coefficient terms")->required();
  mix_cmd->add_option("--description", *description, "what the mixture is for");
  add_dir(mix_cmd);
  mix_cmd->callback([svf_options, out, terms, description] { mix(*svf_options, *out, *terms, *description); });

  auto file = std::make_shared<std::string>();
  auto import_options = std::make_shared<svf::ReferenceImport>();
  auto targets = std::make_shared<std::string>("mlp");
  CLI::App* import_cmd = cmd->add_subcommand(
      "import",
      "Import a SakanaAI/self-adaptive-llms policy, z = sigmoid(p) * max_mult: policy_params.pt "
      "(torch.save(policy.state_dict()), learnable_params_module_list.N = the N-th --targets matrix in HF "
      "state_dict order) or learnable_params.pt (a dict keyed by HF weight name)");
  import_cmd->add_option("file", *file, "the .pt file")->required()->check(CLI::ExistingFile);
  import_cmd->add_option("--name", import_options->name, "name of the new expert")->required();
  import_cmd->add_option("--model", *model_dir, "the base model folder it was trained on")->required()->envname("T2_MODEL");
  import_cmd->add_option("--max-mult", import_options->max_mult, "the policy's max_mult")->capture_default_str();
  import_cmd->add_option("--description", import_options->description, "what the expert is for");
  import_cmd
      ->add_option("--targets", *targets,
                   "matrices a policy_params.pt adapts (mlp: the reference's; attn; all); ignored for "
                   "learnable_params.pt, whose keys name them")
      ->check(CLI::IsMember({"mlp", "attn", "all"}))
      ->capture_default_str();
  add_dir(import_cmd);
  import_cmd->callback([svf_options, file, model_dir, import_options, targets] {
    import_options->targets = svf::parse_targets(*targets);
    import_reference(*svf_options, *file, *model_dir, *import_options);
  });
}

}  // namespace t2::cli
