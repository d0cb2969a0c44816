#include "t2/model/decode_attention.hpp"

#include "t2/common/errors.hpp"

#ifdef T2_CUDA_KERNELS
#include "cuda/decode_attention_kernel.hpp"
#include "cuda/launch.hpp"
#endif

namespace t2::model {

#ifdef T2_CUDA_KERNELS

namespace {

// Measured on an H200 (bench/RESULTS.md): up to about a thousand blocks, the
// step is bound by each warp's memory latency, and smaller splits with
// several keys in flight per warp win (batch 1 and 16 at short context);
// beyond, the blocks fill the GPU and larger splits with one key per warp
// iteration (fewer registers, more blocks resident) win (batch 64, long context).
constexpr int64_t kLatencyBoundBlocks = 1024;
constexpr int kKeysPerSplit = 128;
constexpr int kKeysPerSplitLatencyBound = 64;

}  // namespace

bool decode_attention_available(const at::Device& device, int64_t group, int64_t head_dim) {
  return device.is_cuda() && cuda::decode_attention_supports(static_cast<int>(group), static_cast<int>(head_dim));
}

at::Tensor decode_attention(const at::Tensor& q, const at::Tensor& cache_k, const at::Tensor& cache_v,
                            const at::Tensor& slots, const at::Tensor& key_lengths, std::optional<int64_t> window,
                            double scale) {
  const int64_t N = q.size(0), H = q.size(1), D = q.size(2);
  const int64_t KV = cache_k.size(2), capacity = cache_k.size(1);
  if (!cache_k.is_contiguous() || !cache_v.is_contiguous() || cache_k.size(3) != D || H % KV != 0 ||
      slots.scalar_type() != at::kLong || key_lengths.scalar_type() != at::kLong || slots.numel() != N ||
      key_lengths.numel() != N || q.scalar_type() != cache_k.scalar_type()) {
    throw Error("decode attention: inconsistent query, cache or index tensors");
  }
  const at::Tensor query = q.contiguous();
  const at::Tensor slot_index = slots.contiguous();
  const at::Tensor lengths = key_lengths.contiguous();
  cuda::DecodeAttentionArgs args{};
  args.slots = slot_index.data_ptr<int64_t>();
  args.lengths = lengths.data_ptr<int64_t>();
  args.rows = static_cast<int>(N);
  args.heads = static_cast<int>(H);
  args.kv_heads = static_cast<int>(KV);
  args.group = static_cast<int>(H / KV);
  args.head_dim = static_cast<int>(D);
  args.capacity = capacity;
  args.latency_bound = N * KV * ((capacity + kKeysPerSplit - 1) / kKeysPerSplit) < kLatencyBoundBlocks;
  args.chunk = args.latency_bound ? kKeysPerSplitLatencyBound : kKeysPerSplit;
  args.splits = static_cast<int>((capacity + args.chunk - 1) / args.chunk);
  args.window = window ? static_cast<int>(*window) : 0;
  args.scale = static_cast<float>(scale);
  const auto f32 = q.options().dtype(at::kFloat);
  const at::Tensor part_acc = at::empty({N, H, args.splits, D}, f32);
  const at::Tensor part_max = at::empty({N, H, args.splits}, f32);
  const at::Tensor part_sum = at::empty({N, H, args.splits}, f32);
  at::Tensor out = at::empty({N, H, D}, q.options());
  cuda::check_launch(cuda::launch_decode_attention(args, cuda::element_type(q), query.data_ptr(), cache_k.data_ptr(),
                                                   cache_v.data_ptr(), part_acc.data_ptr<float>(), part_max.data_ptr<float>(),
                                                   part_sum.data_ptr<float>(), out.data_ptr(), cuda::stream_of(q)),
                     "decode attention kernel");
  return out.view({N, H * D});
}

#else

bool decode_attention_available(const at::Device&, int64_t, int64_t) { return false; }

at::Tensor decode_attention(const at::Tensor&, const at::Tensor&, const at::Tensor&, const at::Tensor&, const at::Tensor&,
                            std::optional<int64_t>, double) {
  throw Error("decode attention: this build has no CUDA kernels");
}

#endif

}  // namespace t2::model
