#include "t2/vision/prompt_images.hpp"

#include "t2/common/errors.hpp"

namespace t2::vision {

PromptImage prepare_image(const Image& image, const ImageProcessor& processor) {
  ProcessedImage processed = processor.process(image);
  PromptImage out;
  out.height = processed.original_height;
  out.width = processed.original_width;
  out.pixel_values =
      at::from_blob(processed.pixels.data(), {processed.patches, 3, processed.height, processed.width}, at::kFloat).clone();
  return out;
}

std::vector<int64_t> expand_image_tokens(const LlavaNext& model, const std::vector<int64_t>& prompt,
                                         std::vector<PromptImage>& images) {
  const int64_t placeholder = model.image_token_id();
  std::vector<int64_t> expanded;
  size_t next = 0;
  for (const int64_t token : prompt) {
    if (token != placeholder) {
      expanded.push_back(token);
      continue;
    }
    if (next == images.size()) throw InvalidArgument("images", "the prompt has more image tokens than images");
    PromptImage& image = images[next++];
    image.offset = static_cast<int64_t>(expanded.size());
    image.length = model.feature_count(image.height, image.width);
    expanded.insert(expanded.end(), static_cast<size_t>(image.length), placeholder);
  }
  if (next != images.size()) throw InvalidArgument("images", "the prompt has fewer image tokens than images");
  return expanded;
}

}  // namespace t2::vision
