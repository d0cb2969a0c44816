// A reader for exactly what torch.save writes for a dict of tensors: a plain
// dict of tensors or nn.Parameters, or a module's state_dict() (an
// OrderedDict with its _metadata attribute). libtorch's own unpickler turns
// collections.OrderedDict into None and cannot read the latter. Anything
// outside that subset of pickle (other classes, opcodes, value types) is a
// LoadError naming what was found.
#pragma once

#include <filesystem>
#include <string>
#include <utility>
#include <vector>

#include <ATen/ATen.h>

namespace t2::svf {

// The entries in the file's order (the order torch.save saw them in).
std::vector<std::pair<std::string, at::Tensor>> read_torch_state_dict(const std::filesystem::path& file);

}  // namespace t2::svf
