// Options shared by the subcommands that run a model, with the precedence
// flags > T2_* environment variables > defaults.
#pragma once

#include <string>

#include <CLI/CLI.hpp>

#include "t2/model/weights.hpp"

namespace t2::cli {

struct PlacementOptions {
  std::string device = "auto";
  std::string dtype = "auto";

  void add_to(CLI::App& command) {
    command.add_option("--device", device, "cpu, cuda, cuda:N or auto (CUDA when available)")
        ->envname("T2_DEVICE")
        ->capture_default_str();
    command.add_option("--dtype", dtype, "float32, bfloat16, float16 or auto (float32 on CPU, bfloat16 on CUDA)")
        ->envname("T2_DTYPE")
        ->capture_default_str();
  }
  model::Placement placement() const { return model::Placement::parse(device, dtype); }
};

}  // namespace t2::cli
