// Image content parts of chat requests, from URL to model input: the bytes
// (data: URLs; http(s) only from the configured hosts, without redirects and
// under a size limit), decoding under the pixel limit, and the model's image
// processor. Every refusal is a 400 that names the content part.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "t2/server/config.hpp"
#include "t2/server/openai.hpp"
#include "t2/vision/image.hpp"
#include "t2/vision/image_processor.hpp"
#include "t2/vision/prompt_images.hpp"

namespace t2::server {

// The encoded image a part names. Throws ApiError (400).
std::string image_bytes(const ImagePart& part, const ImagePolicy& policy);
// Decoded to RGB under the policy's pixel limit. Throws ApiError (400).
vision::Image load_image(const ImagePart& part, const ImagePolicy& policy);
// The part as the engine takes it: preprocessed pixels and original size
// (offset and length are the prompt's business). Throws ApiError (400).
vision::PromptImage prepare_image(const ImagePart& part, const ImagePolicy& policy, const vision::ImageProcessor& processor);

// Standard base64 (RFC 4648, padding optional); nullopt when `text` is not.
std::optional<std::string> decode_base64(std::string_view text);

}  // namespace t2::server
