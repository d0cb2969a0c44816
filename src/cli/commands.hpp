// The t2 subcommands; each file in src/cli registers one on the CLI11 app.
#pragma once

#include <CLI/CLI.hpp>

namespace t2::cli {

void add_generate_command(CLI::App& app);
void add_bench_command(CLI::App& app);
void add_serve_command(CLI::App& app);
void add_pull_command(CLI::App& app);
void add_train_commands(CLI::App& app);
void add_svd_command(CLI::App& app);
void add_experts_command(CLI::App& app);
void add_tokenize_command(CLI::App& app);

}  // namespace t2::cli
