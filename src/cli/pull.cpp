// `t2 pull ORG/NAME`: download a model from the Hugging Face Hub.
#include <iostream>
#include <memory>

#include "commands.hpp"
#include "t2/model/hub.hpp"

namespace t2::cli {

void add_pull_command(CLI::App& app) {
  auto repo = std::make_shared<std::string>();
  auto revision = std::make_shared<std::string>("main");
  CLI::App* cmd = app.add_subcommand(
      "pull", "Download a model from the Hugging Face Hub (HF_ENDPOINT, HF_TOKEN, HF_HOME); prints its folder");
  cmd->add_option("repo", *repo, "ORG/NAME")->required();
  cmd->add_option("--revision", *revision, "branch, tag or commit")->capture_default_str();
  cmd->callback([repo, revision] {
    model::HubOptions options = model::HubOptions::from_environment();
    options.revision = *revision;
    std::cout << model::pull(*repo, options).string() << std::endl;
  });
}

}  // namespace t2::cli
