// t2: a self-adaptive LLM inference server (Transformer²). Entry point of the
// command line; each subcommand lives in its own file.
#include <iostream>

#include <CLI/CLI.hpp>
#include <c10/util/Exception.h>

#include "commands.hpp"
#include "t2/common/errors.hpp"

int main(int argc, char** argv) {
  CLI::App app{"t2 — self-adaptive LLM inference (Transformer²: SVF experts, two-pass dispatch)"};
  app.require_subcommand(1);
  t2::cli::add_serve_command(app);
  t2::cli::add_generate_command(app);
  t2::cli::add_svd_command(app);
  t2::cli::add_experts_command(app);
  t2::cli::add_train_commands(app);
  t2::cli::add_pull_command(app);
  t2::cli::add_bench_command(app);
  t2::cli::add_tokenize_command(app);
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  } catch (const t2::InvalidArgument& e) {
    std::cerr << "error: --" << e.param() << ": " << e.what() << "\n";
    return 2;
  } catch (const t2::Error& e) {
    std::cerr << "error: " << e.what() << "\n";
    return 1;
  } catch (const c10::Error& e) {
    std::cerr << "error (libtorch): " << e.what_without_backtrace() << "\n";
    return 1;
  } catch (const std::exception& e) {
    std::cerr << "error: " << e.what() << "\n";
    return 1;
  }
  return 0;
}
