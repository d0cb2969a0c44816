#include "t2/model/fused_ops.hpp"

#include "t2/common/errors.hpp"

#ifdef T2_CUDA_KERNELS
#include "cuda/fused_ops_kernel.hpp"
#include "cuda/launch.hpp"
#endif

namespace t2::model {

#ifdef T2_CUDA_KERNELS

namespace {

using cuda::check_launch;
using cuda::element_type;
using cuda::stream_of;

void require_contiguous(const at::Tensor& t, const char* what) {
  if (!t.is_contiguous()) throw Error(std::string("fused ops: ") + what + " must be contiguous");
}

// [rows, width] with dense rows (a contiguous tensor or a column block of one); a copy otherwise.
at::Tensor dense_rows(const at::Tensor& t, int64_t width) {
  const at::Tensor m = t.dim() == 2 ? t : t.reshape({t.size(0), width});
  return m.size(1) == width && m.stride(1) == 1 ? m : m.contiguous().view({-1, width});
}

}  // namespace

bool fused_ops_available(const at::Device& device) { return device.is_cuda(); }

at::Tensor add_rms_norm(at::Tensor& hidden, const at::Tensor& delta, const at::Tensor& weight, double eps) {
  require_contiguous(hidden, "hidden");
  const at::Tensor d = delta.defined() ? delta.contiguous() : delta;
  const int64_t width = hidden.size(-1);
  at::Tensor out = at::empty_like(hidden);
  check_launch(cuda::launch_add_rms_norm(element_type(hidden), hidden.data_ptr(), d.defined() ? d.data_ptr() : nullptr,
                                         weight.contiguous().data_ptr(), out.data_ptr(), hidden.numel() / width, width,
                                         static_cast<float>(eps), stream_of(hidden)),
               "add_rms_norm kernel");
  return out;
}

at::Tensor rope_and_cache_write(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const at::Tensor& cos,
                                const at::Tensor& sin, const at::Tensor& positions, const at::Tensor& write_rows,
                                at::Tensor& cache_k, at::Tensor& cache_v) {
  require_contiguous(cache_k, "the key cache");
  require_contiguous(cache_v, "the value cache");
  const int64_t N = q.size(0), KV = cache_k.size(2), D = cache_k.size(3);
  const int64_t H = q.numel() / (N * D);
  const at::Tensor qr = dense_rows(q, H * D), kr = dense_rows(k, KV * D), vr = dense_rows(v, KV * D);
  at::Tensor out = at::empty({N, H, D}, q.options());
  const cuda::QkvRows rows{qr.data_ptr(), kr.data_ptr(), vr.data_ptr(), qr.stride(0), kr.stride(0), vr.stride(0)};
  check_launch(cuda::launch_rope_and_cache_write(element_type(q), rows, out.data_ptr(), cos.data_ptr<float>(), sin.data_ptr<float>(),
                                                 positions.contiguous().data_ptr<int64_t>(),
                                                 write_rows.contiguous().data_ptr<int64_t>(), cache_k.data_ptr(),
                                                 cache_v.data_ptr(), N, static_cast<int>(H), static_cast<int>(KV),
                                                 static_cast<int>(D), stream_of(q)),
               "rope kernel");
  return out;
}

at::Tensor silu_mul(const at::Tensor& gate, const at::Tensor& up) {
  const int64_t width = gate.size(-1);
  const at::Tensor g = dense_rows(gate, width), u = dense_rows(up, width);
  at::Tensor out = at::empty({g.size(0), width}, g.options());
  check_launch(cuda::launch_silu_mul(element_type(g), g.data_ptr(), g.stride(0), u.data_ptr(), u.stride(0), out.data_ptr(),
                                     g.size(0), width, stream_of(g)),
               "silu_mul kernel");
  return out;
}

#else

bool fused_ops_available(const at::Device&) { return false; }

at::Tensor add_rms_norm(at::Tensor&, const at::Tensor&, const at::Tensor&, double) {
  throw Error("fused ops: this build has no CUDA kernels");
}

at::Tensor rope_and_cache_write(const at::Tensor&, const at::Tensor&, const at::Tensor&, const at::Tensor&, const at::Tensor&,
                                const at::Tensor&, const at::Tensor&, at::Tensor&, at::Tensor&) {
  throw Error("fused ops: this build has no CUDA kernels");
}

at::Tensor silu_mul(const at::Tensor&, const at::Tensor&) { throw Error("fused ops: this build has no CUDA kernels"); }

#endif

}  // namespace t2::model
