// `t2 tokenize`: the ids a model folder's tokenizer gives a text, as JSON.
#include <iostream>
#include <memory>
#include <string>

#include <nlohmann/json.hpp>

#include "commands.hpp"
#include "t2/tokenizer/tokenizer.hpp"

namespace t2::cli {
namespace {

struct TokenizeOptions {
  std::string model_dir;
  std::string text;
  bool add_special_tokens = false;
  bool parse_special = false;
};

void run_tokenize(const TokenizeOptions& o) {
  const auto tok = tokenizer::Tokenizer::load(o.model_dir);
  auto ids = o.parse_special ? tok.encode_with_specials(o.text) : tok.encode(o.text, false);
  if (o.add_special_tokens) ids = tok.add_sequence_specials(ids);
  std::cout << nlohmann::json(ids).dump() << "\n";
}

}  // namespace

void add_tokenize_command(CLI::App& app) {
  auto options = std::make_shared<TokenizeOptions>();
  CLI::App* cmd = app.add_subcommand("tokenize", "Print the token ids of a text as a JSON array");
  cmd->add_option("--model", options->model_dir, "model folder (tokenizer.model or tokenizer.json), or a tokenizer file")
      ->required()
      ->envname("T2_MODEL");
  cmd->add_option("--text", options->text, "the text to tokenize")->required();
  cmd->add_flag("--add-special-tokens", options->add_special_tokens, "add the tokenizer's sequence tokens (BOS), as HF's add_special_tokens");
  cmd->add_flag("--parse-special", options->parse_special,
                "special tokens written in the text (\"<|eot_id|>\") become their ids; by default they stay text");
  cmd->callback([options] { run_tokenize(*options); });
}

}  // namespace t2::cli
