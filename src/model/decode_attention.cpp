#include "t2/model/decode_attention.hpp"

#include <cstdint>

#include "t2/common/errors.hpp"

#ifdef T2_CUDA_KERNELS
#include "cuda/decode_attention_kernel.hpp"
#include "cuda/launch.hpp"
#endif

namespace t2::model {

#ifdef T2_CUDA_KERNELS

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
  // The kernel reads 16-byte vectors: rows of whole vectors (decode_attention_supports), starting aligned.
  const at::Tensor query = cuda::aligned16(q) && q.is_contiguous() ? q : q.clone(at::MemoryFormat::Contiguous);
  if (!cuda::aligned16(cache_k) || !cuda::aligned16(cache_v)) throw Error("decode attention: cache not 16-byte aligned");
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
  args.splits = cuda::decode_attention_splits(args, cuda::element_type(q));
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
