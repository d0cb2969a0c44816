// The image references tests/reference/image_reference.py writes (the
// image_reference CTest fixture): files, manifest and raw arrays.
#pragma once

#include <filesystem>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace t2::vision::testing {

std::filesystem::path reference_dir();        // ${T2_REFERENCE_DIR}/images
const nlohmann::json& manifest();             // manifest.json, read once
std::string read_file(const std::filesystem::path& path);
std::vector<float> read_floats(const std::filesystem::path& path);  // raw float32 little-endian

}  // namespace t2::vision::testing
