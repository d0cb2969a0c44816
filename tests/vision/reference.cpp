#include "reference.hpp"

#include <cstring>
#include <fstream>
#include <sstream>
#include <stdexcept>

namespace t2::vision::testing {

std::filesystem::path reference_dir() { return std::filesystem::path(T2_REFERENCE_DIR) / "images"; }

std::string read_file(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw std::runtime_error("cannot read " + path.string() + " (run tests/reference/image_reference.py)");
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

const nlohmann::json& manifest() {
  static const nlohmann::json m = nlohmann::json::parse(read_file(reference_dir() / "manifest.json"));
  return m;
}

std::vector<float> read_floats(const std::filesystem::path& path) {
  const std::string bytes = read_file(path);
  std::vector<float> out(bytes.size() / sizeof(float));
  std::memcpy(out.data(), bytes.data(), out.size() * sizeof(float));  // x86/ARM hosts are little-endian
  return out;
}

}  // namespace t2::vision::testing
