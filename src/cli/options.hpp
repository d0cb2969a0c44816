// Options shared by the subcommands that run a model, with the precedence
// flags > T2_* environment variables > defaults.
#pragma once

#include <memory>
#include <string>

#include <CLI/CLI.hpp>

#include "t2/model/transformer.hpp"
#include "t2/svf/adapter_store.hpp"

namespace t2::cli {

struct PlacementOptions {
  std::string device = "auto";
  std::string dtype = "auto";

  void add_to(CLI::App& command);
  model::Placement placement() const { return model::Placement::parse(device, dtype); }
};

// Intra-op threads for `config` on `placement`, unless OMP_NUM_THREADS chose:
// one on CUDA (the host only launches kernels), and one for models with a
// hidden size below 1024 on the CPU, where a second thread gains nothing and
// spinning threads stall on a busy machine (bench/RESULTS.md). Larger CPU
// models keep libtorch's default; set OMP_WAIT_POLICY=PASSIVE for a shared machine.
void choose_compute_threads(const model::ModelConfig& config, const model::Placement& placement);

// Where SVD caches and experts live.
struct SvfOptions {
  std::string experts_dir = "experts";
  std::string cache_dir;  // empty: svf::default_cache_dir()
  std::string targets = "mlp";

  void add_to(CLI::App& command);
  std::filesystem::path cache_path() const;
};

// Which adaptation to run with (`--expert` or `--mixture`).
struct AdaptationOptions {
  std::string expert;
  std::string mixture;
  bool force = false;

  void add_to(CLI::App& command);
  bool is_base() const { return expert.empty() && mixture.empty(); }
  svf::Adaptation adaptation() const;
};

// Loads every expert folder in `experts_dir` (or only `names`), logging and
// skipping those that fail to load.
void load_experts_folder(svf::AdapterStore& store, const std::filesystem::path& experts_dir,
                         const std::vector<std::string>& names = {});

// Builds (or reads) the SVD cache, loads the experts the adaptation names
// and composes its weights; nullptr for the base model.
std::shared_ptr<const model::ProjectionSet> adapted_weights(const model::Transformer& model,
                                                            const std::filesystem::path& model_dir,
                                                            const SvfOptions& svf,
                                                            const AdaptationOptions& adaptation);

}  // namespace t2::cli
