// Images inside a prompt: each image's preprocessed pixels and the span of
// placeholder tokens its features take (HF's LlavaNextProcessor expands one
// <image> token to the image's feature count the same way). Shared by the
// server (chat content parts) and by training and evaluation (task records).
#pragma once

#include <cstdint>
#include <vector>

#include <ATen/ATen.h>

#include "t2/vision/image.hpp"
#include "t2/vision/image_processor.hpp"
#include "t2/vision/llava_next.hpp"

namespace t2::vision {

struct PromptImage {
  int64_t offset = 0;       // first placeholder position in the prompt
  int64_t length = 0;       // placeholders: the image's feature count
  at::Tensor pixel_values;  // [patches, 3, S, S] float32, as the image processor makes them
  int64_t height = 0;       // original size, which decides the tiling and unpadding
  int64_t width = 0;
};

// The image's pixels as the model takes them (offset and length still unset).
PromptImage prepare_image(const Image& image, const ImageProcessor& processor);

// `prompt` with one image token per image, in order -> the model's prompt,
// each token expanded to its image's feature count; fills in each image's
// offset and length. Throws InvalidArgument when the counts differ.
std::vector<int64_t> expand_image_tokens(const LlavaNext& model, const std::vector<int64_t>& prompt,
                                         std::vector<PromptImage>& images);

}  // namespace t2::vision
