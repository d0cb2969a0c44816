// `t2 svd`: build (or check) the SVD cache of a model.
#include <iostream>
#include <memory>

#include "commands.hpp"
#include "options.hpp"
#include "t2/svf/svd_cache.hpp"

namespace t2::cli {
namespace {

struct SvdOptions {
  std::string model_dir;
  PlacementOptions placement{"auto", "float32"};
  SvfOptions svf;
};

void run_svd(const SvdOptions& o) {
  // The factors are float32 whatever the serving dtype; load the weights so.
  const model::Placement placement = o.placement.placement();
  const model::Transformer transformer = model::Transformer::load(o.model_dir, placement);
  choose_compute_threads(transformer.config(), placement);
  const std::string fingerprint = model::checkpoint_fingerprint(o.model_dir);
  const auto loaded = svf::SvdCache::load_or_build(transformer, fingerprint, svf::parse_targets(o.svf.targets),
                                                   o.svf.cache_path(), placement.device);
  std::cout << (loaded.built ? "built " : "reused ") << loaded.path.string() << "\n"
            << "  fingerprint " << fingerprint << ", targets " << o.svf.targets << ", "
            << loaded.cache.factors().size() << " matrices, "
            << static_cast<double>(loaded.cache.bytes()) / (1 << 20) << " MiB, " << loaded.seconds << " s\n";
}

}  // namespace

void add_svd_command(CLI::App& app) {
  auto options = std::make_shared<SvdOptions>();
  CLI::App* cmd = app.add_subcommand("svd", "Build the SVD cache of a model's adaptable matrices (float32)");
  cmd->add_option("--model", options->model_dir, "Hugging Face model folder")->required()->envname("T2_MODEL");
  options->placement.add_to(*cmd);
  options->svf.add_to(*cmd);
  cmd->callback([options] { run_svd(*options); });
}

}  // namespace t2::cli
