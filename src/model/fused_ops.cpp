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

void rope_and_cache_write(at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const at::Tensor& cos, const at::Tensor& sin,
                          const at::Tensor& positions, const at::Tensor& write_rows, at::Tensor& cache_k, at::Tensor& cache_v) {
  require_contiguous(q, "q");
  require_contiguous(cache_k, "the key cache");
  require_contiguous(cache_v, "the value cache");
  const at::Tensor kc = k.contiguous(), vc = v.contiguous();
  check_launch(cuda::launch_rope_and_cache_write(element_type(q), q.data_ptr(), kc.data_ptr(), vc.data_ptr(),
                                                 cos.data_ptr<float>(), sin.data_ptr<float>(),
                                                 positions.contiguous().data_ptr<int64_t>(),
                                                 write_rows.contiguous().data_ptr<int64_t>(), cache_k.data_ptr(),
                                                 cache_v.data_ptr(), q.size(0), static_cast<int>(q.size(1)),
                                                 static_cast<int>(k.size(1)), static_cast<int>(q.size(2)), stream_of(q)),
               "rope kernel");
}

at::Tensor silu_mul(const at::Tensor& gate, const at::Tensor& up) {
  const at::Tensor g = gate.contiguous(), u = up.contiguous();
  at::Tensor out = at::empty_like(g);
  const int64_t width = g.size(-1);
  check_launch(
      cuda::launch_silu_mul(element_type(g), g.data_ptr(), u.data_ptr(), out.data_ptr(), g.numel() / width, width, stream_of(g)),
      "silu_mul kernel");
  return out;
}

#else

bool fused_ops_available(const at::Device&) { return false; }

at::Tensor add_rms_norm(at::Tensor&, const at::Tensor&, const at::Tensor&, double) {
  throw Error("fused ops: this build has no CUDA kernels");
}

void rope_and_cache_write(at::Tensor&, const at::Tensor&, const at::Tensor&, const at::Tensor&, const at::Tensor&, const at::Tensor&,
                          const at::Tensor&, at::Tensor&, at::Tensor&) {
  throw Error("fused ops: this build has no CUDA kernels");
}

at::Tensor silu_mul(const at::Tensor&, const at::Tensor&) { throw Error("fused ops: this build has no CUDA kernels"); }

#endif

}  // namespace t2::model
