#include "t2/svf/reference_import.hpp"

#include <fstream>
#include <iterator>

#include <torch/csrc/jit/serialization/pickle.h>

#include "t2/common/errors.hpp"

namespace t2::svf {

Expert import_reference_checkpoint(const std::filesystem::path& file, const ReferenceImport& options,
                                   const model::ModelConfig& config, const std::string& fingerprint) {
  const std::string where = file.string();
  std::ifstream in(file, std::ios::binary);
  if (!in) throw LoadError(where + ": cannot open");
  const std::vector<char> bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  c10::IValue value;
  try {
    value = torch::jit::pickle_load(bytes);
  } catch (const c10::Error& e) {
    throw LoadError(where + ": not a torch.save file libtorch can read: " + e.what_without_backtrace());
  }
  if (!value.isGenericDict()) throw LoadError(where + ": expected a dict of parameter name -> tensor");
  if (!(options.max_mult > 0)) throw InvalidArgument("max-mult", "max_mult must be > 0");

  Expert expert;
  expert.name = options.name;
  expert.description = options.description;
  expert.kind = ExpertKind::kSvf;
  expert.base_fingerprint = fingerprint;
  expert.provenance = {{"method", "import"},
                       {"source", "SakanaAI/self-adaptive-llms checkpoint"},
                       {"file", file.filename().string()},
                       {"max_mult", options.max_mult}};
  for (const auto& item : value.toGenericDict()) {
    if (!item.key().isString() || !item.value().isTensor()) {
      throw LoadError(where + ": entries must map parameter names to tensors");
    }
    const std::string name = item.key().toStringRef();
    const at::Tensor p = item.value().toTensor().detach().to(at::kCPU, at::kFloat).flatten();
    expert.z.emplace(name, at::sigmoid(p) * options.max_mult);
  }
  if (expert.z.empty()) throw LoadError(where + ": the checkpoint holds no parameters");
  expert.validate_for(config, fingerprint, /*force=*/false);
  return expert;
}

}  // namespace t2::svf
