#include "options.hpp"

#include <cstdlib>
#include <iostream>

#include <ATen/Parallel.h>

#include "t2/common/errors.hpp"
#include "t2/common/log.hpp"

namespace t2::cli {

void PlacementOptions::add_to(CLI::App& command) {
  command.add_option("--device", device, "cpu, cuda, cuda:N or auto (CUDA when available)")
      ->envname("T2_DEVICE")
      ->capture_default_str();
  command.add_option("--dtype", dtype, "float32, bfloat16, float16 or auto (float32 on CPU, bfloat16 on CUDA)")
      ->envname("T2_DTYPE")
      ->capture_default_str();
}

void SvfOptions::add_to(CLI::App& command) {
  command.add_option("--experts-dir", experts_dir, "folder of expert folders")->envname("T2_EXPERTS_DIR")->capture_default_str();
  command.add_option("--cache-dir", cache_dir, "SVD cache folder (default $XDG_CACHE_HOME/t2 or ~/.cache/t2)")
      ->envname("T2_CACHE_DIR");
  command.add_option("--targets", targets, "matrices SVF adapts: mlp, attn or all")->envname("T2_TARGETS")->capture_default_str();
}

std::filesystem::path SvfOptions::cache_path() const {
  return cache_dir.empty() ? svf::default_cache_dir() : std::filesystem::path(cache_dir);
}

void AdaptationOptions::add_to(CLI::App& command) {
  auto* e = command.add_option("--expert", expert, "run with this expert (a folder in --experts-dir)");
  command.add_option("--mixture", mixture, "run with a mixture of experts, e.g. a=0.7,b=0.3")->excludes(e);
  command.add_flag("--force", force, "load experts made for another base model fingerprint");
}

svf::Adaptation AdaptationOptions::adaptation() const {
  if (!expert.empty()) return svf::Adaptation::expert(expert);
  if (!mixture.empty()) return svf::Adaptation::parse_mixture(mixture);
  return svf::Adaptation::base();
}

void load_experts_folder(svf::AdapterStore& store, const std::filesystem::path& experts_dir,
                         const std::vector<std::string>& names) {
  std::vector<std::string> wanted = names;
  if (wanted.empty() && std::filesystem::is_directory(experts_dir)) {
    for (const auto& entry : std::filesystem::directory_iterator(experts_dir)) {
      if (std::filesystem::exists(entry.path() / "expert.json")) wanted.push_back(entry.path().filename().string());
    }
    std::sort(wanted.begin(), wanted.end());
  }
  for (const auto& name : wanted) {
    try {
      store.load_from(experts_dir, name);
      log::info("loaded expert " + name);
    } catch (const Error& e) {
      log::warn("skipped expert " + name + ": " + e.what());
    }
  }
}

std::shared_ptr<const model::ProjectionSet> adapted_weights(const model::Transformer& model,
                                                            const std::filesystem::path& model_dir,
                                                            const SvfOptions& svf_options,
                                                            const AdaptationOptions& options) {
  if (options.is_base()) return nullptr;
  const svf::Adaptation adaptation = options.adaptation();
  const std::string fingerprint = model::checkpoint_fingerprint(model_dir);
  const auto loaded = svf::SvdCache::load_or_build(model, fingerprint, svf::parse_targets(svf_options.targets),
                                                   svf_options.cache_path(), model.placement().device);
  svf::AdapterStore store(model, loaded.cache, /*budget_bytes=*/0);
  for (const auto& [name, weight] : adaptation.coefficients) store.load_from(svf_options.experts_dir, name, options.force);
  auto weights = store.weights(adaptation);
  std::cerr << "[t2] adaptation " << adaptation.key() << ": SVD cache " << loaded.path.string()
            << (loaded.built ? " (built)" : " (reused)") << ", composed in " << store.stats().compose_seconds << " s\n";
  return weights;
}

void choose_compute_threads(const model::ModelConfig& config, const model::Placement& placement) {
  constexpr int64_t kSmallHiddenSize = 1024;
  if (std::getenv("OMP_NUM_THREADS") != nullptr) return;
  if (placement.device.is_cuda() || config.hidden_size < kSmallHiddenSize) at::set_num_threads(1);
}

}  // namespace t2::cli
