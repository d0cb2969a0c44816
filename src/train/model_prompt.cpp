#include "t2/train/model_prompt.hpp"

#include <fstream>
#include <sstream>

#include <ATen/core/grad_mode.h>

#include "t2/common/errors.hpp"

namespace t2::train {

ModelPrompt model_prompt(const tokenizer::Tokenizer& tokenizer, const Example& example, const Vision* vision) {
  ModelPrompt out;
  if (example.images.empty()) {
    out.tokens = tokenizer.encode(example.prompt, true);
    return out;
  }
  const std::string where = "line " + std::to_string(example.line);
  if (vision == nullptr) throw LoadError(where + ": the record has images; the model does not accept them");
  std::vector<int64_t> tokens = tokenizer.add_sequence_specials({});
  const auto newline = tokenizer.encode("\n", false);
  for (const auto& path : example.images) {
    std::ifstream in(path, std::ios::binary);
    std::stringstream bytes;
    bytes << in.rdbuf();
    try {
      out.images.push_back(vision::prepare_image(vision::decode_image(bytes.str(), {vision->max_pixels}), vision->processor));
    } catch (const InvalidArgument& e) {
      throw LoadError(where + ": " + path.string() + ": " + e.what());
    }
    tokens.push_back(vision->model.image_token_id());
    tokens.insert(tokens.end(), newline.begin(), newline.end());
  }
  const auto text = tokenizer.encode(example.prompt, false);
  tokens.insert(tokens.end(), text.begin(), text.end());
  out.tokens = vision::expand_image_tokens(vision->model, tokens, out.images);
  return out;
}

std::vector<ModelPrompt> model_prompts(const tokenizer::Tokenizer& tokenizer, const std::vector<Example>& examples,
                                       const Vision* vision) {
  std::vector<ModelPrompt> out;
  for (const auto& e : examples) out.push_back(model_prompt(tokenizer, e, vision));
  return out;
}

void place_image_features(const vision::LlavaNext& vision, at::Tensor embeddings,
                          const std::vector<vision::PromptImage>& images) {
  at::NoGradGuard no_grad;
  for (const auto& image : images) {
    embeddings.narrow(0, image.offset, image.length).copy_(vision.encode(image.pixel_values, image.height, image.width));
  }
}

at::Tensor embeddings_with_images(const model::Transformer& model, const vision::LlavaNext& vision,
                                  const std::vector<int64_t>& tokens, const std::vector<vision::PromptImage>& images) {
  at::Tensor embeddings = model.embed(tokens);
  place_image_features(vision, embeddings, images);
  return embeddings;
}

}  // namespace t2::train
