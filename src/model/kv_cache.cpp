#include "t2/model/kv_cache.hpp"

#include <unistd.h>

#include <limits>

#include "t2/common/errors.hpp"

namespace t2::model {

KVCache::KVCache(const ModelConfig& config, int64_t max_sequences, int64_t capacity, const Placement& placement)
    : capacity_(capacity),
      lengths_(static_cast<size_t>(max_sequences), 0),
      in_use_(static_cast<size_t>(max_sequences), false) {
  if (max_sequences <= 0 || capacity <= 0) throw InvalidArgument("kv_cache", "KV cache needs at least one slot and one position");
  // Bounded by memory before anything is allocated (a device allocation fails by itself; host memory
  // would be overcommitted and then fill up page by page).
  int64_t bytes = 2 * static_cast<int64_t>(c10::elementSize(placement.dtype));
  for (const int64_t factor : {config.num_layers, max_sequences, capacity, config.num_kv_heads, config.head_dim}) {
    if (__builtin_mul_overflow(bytes, factor, &bytes)) bytes = std::numeric_limits<int64_t>::max();
  }
  const double memory = static_cast<double>(sysconf(_SC_PHYS_PAGES)) * static_cast<double>(sysconf(_SC_PAGESIZE));
  if (placement.device.is_cpu() && memory > 0 && static_cast<double>(bytes) > memory / 2) {
    throw InvalidArgument("context", "a KV cache of " + std::to_string(max_sequences) + " sequences x " + std::to_string(capacity) +
                                         " positions needs " + std::to_string(bytes >> 20) + " MiB, more than half of this machine's " +
                                         std::to_string(static_cast<int64_t>(memory) >> 20) + " MiB; lower --context or --max-batch");
  }
  const auto options = at::TensorOptions().device(placement.device).dtype(placement.dtype);
  for (int64_t l = 0; l < config.num_layers; ++l) {
    keys_.push_back(at::zeros({max_sequences, capacity, config.num_kv_heads, config.head_dim}, options));
    values_.push_back(at::zeros({max_sequences, capacity, config.num_kv_heads, config.head_dim}, options));
  }
}

int64_t KVCache::allocate() {
  for (size_t s = 0; s < in_use_.size(); ++s) {
    if (!in_use_[s]) {
      in_use_[s] = true;
      lengths_[s] = 0;
      return static_cast<int64_t>(s);
    }
  }
  throw Error("KV cache: all " + std::to_string(in_use_.size()) + " sequence slots are in use");
}

void KVCache::release(int64_t slot) {
  check_in_use(slot);
  in_use_[static_cast<size_t>(slot)] = false;
  lengths_[static_cast<size_t>(slot)] = 0;
}

int64_t KVCache::free_slots() const {
  int64_t n = 0;
  for (const bool used : in_use_) n += used ? 0 : 1;
  return n;
}

int64_t KVCache::bytes() const {
  int64_t total = 0;
  for (size_t l = 0; l < keys_.size(); ++l) total += static_cast<int64_t>(keys_[l].nbytes() + values_[l].nbytes());
  return total;
}

void KVCache::check_in_use(int64_t slot) const {
  if (slot < 0 || slot >= max_sequences() || !in_use_[static_cast<size_t>(slot)]) {
    throw Error("KV cache: slot " + std::to_string(slot) + " is not allocated");
  }
}

void KVCache::advance(int64_t slot, int64_t tokens) {
  check_in_use(slot);
  lengths_[static_cast<size_t>(slot)] += tokens;
}

void KVCache::copy_prefix(int64_t from, int64_t to, int64_t length) {
  check_in_use(from);
  check_in_use(to);
  if (length > lengths_[static_cast<size_t>(from)]) throw Error("KV cache: prefix longer than the source sequence");
  for (size_t l = 0; l < keys_.size(); ++l) {
    keys_[l][to].narrow(0, 0, length).copy_(keys_[l][from].narrow(0, 0, length));
    values_[l][to].narrow(0, 0, length).copy_(values_[l][from].narrow(0, 0, length));
  }
  lengths_[static_cast<size_t>(to)] = length;
}

}  // namespace t2::model
