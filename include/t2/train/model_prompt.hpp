// A task example as the model reads it: its tokens and, for vision-language
// models, its images (records with "images" files). The images sit before the
// prompt's text, one "<image>\n" each after BOS, as LLaVA's chat templates
// place them.
#pragma once

#include <cstdint>
#include <vector>

#include <ATen/ATen.h>

#include "t2/model/transformer.hpp"
#include "t2/tokenizer/tokenizer.hpp"
#include "t2/train/task.hpp"
#include "t2/vision/prompt_images.hpp"

namespace t2::train {

// The image side of a vision-language model, for training and evaluation.
struct Vision {
  const vision::LlavaNext& model;
  const vision::ImageProcessor& processor;
  int64_t max_pixels = 25'000'000;
};

struct ModelPrompt {
  std::vector<int64_t> tokens;              // BOS first; each image's span expanded
  std::vector<vision::PromptImage> images;  // in order
};

// Throws LoadError (naming the record's line) for an example with images when
// `vision` is null, or for an image file that does not decode.
ModelPrompt model_prompt(const tokenizer::Tokenizer& tokenizer, const Example& example, const Vision* vision);
std::vector<ModelPrompt> model_prompts(const tokenizer::Tokenizer& tokenizer, const std::vector<Example>& examples,
                                       const Vision* vision);

// Writes the images' features into their spans of `embeddings` [T, hidden]
// (no gradient: the vision tower is not adapted).
void place_image_features(const vision::LlavaNext& vision, at::Tensor embeddings,
                          const std::vector<vision::PromptImage>& images);
// The input embeddings [T, hidden] of `tokens` with the images' features in their spans.
at::Tensor embeddings_with_images(const model::Transformer& model, const vision::LlavaNext& vision,
                                  const std::vector<int64_t>& tokens, const std::vector<vision::PromptImage>& images);

}  // namespace t2::train
