#include "t2/model/safetensors.hpp"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <fstream>

#include <nlohmann/json.hpp>

#include "t2/common/errors.hpp"

namespace t2::model {
namespace {

using nlohmann::json;

constexpr uint64_t kMaxHeaderBytes = 100u << 20;  // the format's own limit

struct DTypeName {
  const char* name;
  at::ScalarType type;
};
constexpr DTypeName kDTypes[] = {
    {"F64", at::kDouble}, {"F32", at::kFloat}, {"F16", at::kHalf}, {"BF16", at::kBFloat16},
    {"I64", at::kLong},   {"I32", at::kInt},   {"I16", at::kShort}, {"I8", at::kChar},
    {"U8", at::kByte},    {"BOOL", at::kBool},
};

at::ScalarType parse_dtype(const std::string& name, const std::string& where) {
  for (const auto& d : kDTypes) {
    if (name == d.name) return d.type;
  }
  throw LoadError(where + ": unsupported dtype '" + name + "'");
}

const char* dtype_name(at::ScalarType type) {
  for (const auto& d : kDTypes) {
    if (type == d.type) return d.name;
  }
  throw Error(std::string("safetensors: cannot store dtype ") + c10::toString(type));
}

}  // namespace

struct SafetensorsFile::Mapping {
  void* address = nullptr;
  size_t size = 0;
  Mapping(void* a, size_t s) : address(a), size(s) {}
  Mapping(const Mapping&) = delete;
  Mapping& operator=(const Mapping&) = delete;
  ~Mapping() {
    if (address != nullptr && size > 0) munmap(address, size);
  }
  const std::byte* bytes() const { return static_cast<const std::byte*>(address); }
};

int64_t TensorView::numel() const {
  int64_t n = 1;
  for (const int64_t d : shape) {
    if (d < 0 || __builtin_mul_overflow(n, d, &n)) throw LoadError("tensor '" + name + "': shape overflows 64-bit element counts");
  }
  return n;
}

at::Tensor TensorView::to_tensor() const {
  // from_blob does not own the bytes; clone so the tensor outlives the mapping.
  return at::from_blob(const_cast<std::byte*>(data), shape, at::TensorOptions().dtype(dtype)).clone();
}

SafetensorsFile SafetensorsFile::open(const std::filesystem::path& path) {
  const std::string where = path.string();
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) throw LoadError(where + ": cannot open: " + std::strerror(errno));
  struct stat st {};
  if (fstat(fd, &st) != 0) {
    ::close(fd);
    throw LoadError(where + ": cannot stat: " + std::strerror(errno));
  }
  const auto file_size = static_cast<size_t>(st.st_size);
  if (file_size < 8) {
    ::close(fd);
    throw LoadError(where + ": truncated file (" + std::to_string(file_size) + " bytes, no header)");
  }
  void* address = mmap(nullptr, file_size, PROT_READ, MAP_PRIVATE, fd, 0);
  ::close(fd);
  if (address == MAP_FAILED) throw LoadError(where + ": mmap failed: " + std::strerror(errno));

  SafetensorsFile file;
  file.path_ = path;
  file.mapping_ = std::make_shared<const Mapping>(address, file_size);
  const std::byte* bytes = file.mapping_->bytes();

  uint64_t header_size = 0;
  std::memcpy(&header_size, bytes, 8);  // little-endian, as is every target machine
  if (header_size > kMaxHeaderBytes || header_size > file_size - 8) {
    throw LoadError(where + ": truncated or corrupt file (header claims " + std::to_string(header_size) +
                    " bytes, file has " + std::to_string(file_size) + ")");
  }
  json header;
  try {
    header = json::parse(reinterpret_cast<const char*>(bytes + 8),
                         reinterpret_cast<const char*>(bytes + 8 + header_size));
  } catch (const json::parse_error& e) {
    throw LoadError(where + ": corrupt header: " + e.what());
  }
  if (!header.is_object()) throw LoadError(where + ": corrupt header: not a JSON object");

  const std::byte* data_start = bytes + 8 + header_size;
  const size_t data_size = file_size - 8 - header_size;
  for (const auto& [name, entry] : header.items()) {
    if (name == "__metadata__") {
      if (entry.is_object()) {
        for (const auto& [k, v] : entry.items()) {
          if (v.is_string()) file.metadata_[k] = v.get<std::string>();
        }
      }
      continue;
    }
    const std::string tensor_where = where + ": tensor '" + name + "'";
    try {
      TensorView view;
      view.name = name;
      view.dtype = parse_dtype(entry.at("dtype").get<std::string>(), tensor_where);
      view.shape = entry.at("shape").get<std::vector<int64_t>>();
      const auto offsets = entry.at("data_offsets").get<std::vector<uint64_t>>();
      if (offsets.size() != 2 || offsets[0] > offsets[1]) throw LoadError(tensor_where + ": bad data_offsets");
      for (const int64_t d : view.shape) {
        if (d < 0) throw LoadError(tensor_where + ": negative dimension");
      }
      uint64_t expected = 0;
      if (__builtin_mul_overflow(static_cast<uint64_t>(view.numel()), c10::elementSize(view.dtype), &expected)) {
        throw LoadError(tensor_where + ": shape overflows 64-bit byte counts");
      }
      if (offsets[1] - offsets[0] != expected) {
        throw LoadError(tensor_where + ": data_offsets span " + std::to_string(offsets[1] - offsets[0]) +
                        " bytes but the shape needs " + std::to_string(expected));
      }
      if (offsets[1] > data_size) {
        throw LoadError(tensor_where + ": truncated file (tensor ends at byte " + std::to_string(offsets[1]) +
                        " of a " + std::to_string(data_size) + "-byte data section)");
      }
      view.data = data_start + offsets[0];
      view.nbytes = expected;
      file.tensors_.emplace(name, std::move(view));
    } catch (const json::exception& e) {
      throw LoadError(tensor_where + ": malformed header entry: " + e.what());
    }
  }
  return file;
}

const TensorView* SafetensorsFile::find(const std::string& name) const {
  const auto it = tensors_.find(name);
  return it == tensors_.end() ? nullptr : &it->second;
}

void write_safetensors(const std::filesystem::path& path,
                       const std::vector<std::pair<std::string, at::Tensor>>& tensors,
                       const std::map<std::string, std::string>& metadata) {
  std::vector<at::Tensor> host;
  host.reserve(tensors.size());
  json header = json::object();
  if (!metadata.empty()) header["__metadata__"] = metadata;
  uint64_t offset = 0;
  for (const auto& [name, tensor] : tensors) {
    host.push_back(tensor.detach().to(at::kCPU).contiguous());
    const auto nbytes = static_cast<uint64_t>(host.back().nbytes());
    header[name] = {{"dtype", dtype_name(host.back().scalar_type())},
                    {"shape", host.back().sizes().vec()},
                    {"data_offsets", {offset, offset + nbytes}}};
    offset += nbytes;
  }
  std::string header_text = header.dump();
  header_text.append((8 - header_text.size() % 8) % 8, ' ');  // align the data section
  const uint64_t header_size = header_text.size();

  std::filesystem::path temp = path;
  temp += ".tmp." + std::to_string(::getpid());
  {
    std::ofstream out(temp, std::ios::binary | std::ios::trunc);
    if (!out) throw Error(temp.string() + ": cannot create file");
    out.write(reinterpret_cast<const char*>(&header_size), 8);
    out.write(header_text.data(), static_cast<std::streamsize>(header_text.size()));
    for (const auto& t : host) {
      out.write(static_cast<const char*>(t.data_ptr()), static_cast<std::streamsize>(t.nbytes()));
    }
    out.flush();
    if (!out) {
      std::filesystem::remove(temp);
      throw Error(temp.string() + ": write failed");
    }
  }
  std::filesystem::rename(temp, path);
}

}  // namespace t2::model
