#include "t2/model/fused_ops.hpp"

#include <algorithm>
#include <cmath>
#include <string>

#include "t2/common/errors.hpp"

#ifdef T2_CUDA_KERNELS
#include "cuda/fused_ops_kernel.hpp"
#include "cuda/launch.hpp"
#endif

namespace t2::model {

namespace {

void require_contiguous(const at::Tensor& t, const char* what) {
  if (!t.is_contiguous()) throw Error(std::string("fused ops: ") + what + " must be contiguous");
}

// True for a CPU tensor, which the loops below take in float32 only.
bool on_cpu(const at::Tensor& t) {
  if (t.is_cpu() && t.scalar_type() != at::kFloat) throw Error("fused ops: on the CPU they take float32 tensors");
  return t.is_cpu();
}

// [rows, width] with dense rows (a contiguous tensor or a column block of one); a copy otherwise.
at::Tensor dense_rows(const at::Tensor& t, int64_t width) {
  const at::Tensor m = t.dim() == 2 ? t : t.reshape({t.size(0), width});
  return m.size(1) == width && m.stride(1) == 1 ? m : m.contiguous().view({-1, width});
}

// The CPU versions: float32 loops over the rows. At decode on a small model
// each eager op costs microseconds of dispatch for a few dozen elements, so
// plain loops are what the step needs (bench/RESULTS.md).

void add_rms_norm_cpu(at::Tensor& hidden, const at::Tensor& delta, const at::Tensor& weight, at::Tensor& out, double eps) {
  const int64_t width = hidden.size(-1), rows = hidden.numel() / width;
  float* h = hidden.data_ptr<float>();
  const float* d = delta.defined() ? delta.data_ptr<float>() : nullptr;
  const float* w = weight.data_ptr<float>();
  float* y = out.data_ptr<float>();
  for (int64_t r = 0; r < rows; ++r, h += width, y += width) {
    float sum = 0.f;
    for (int64_t i = 0; i < width; ++i) {
      if (d != nullptr) h[i] += d[r * width + i];
      sum += h[i] * h[i];
    }
    const float inv_rms = 1.f / std::sqrt(sum / static_cast<float>(width) + static_cast<float>(eps));
    for (int64_t i = 0; i < width; ++i) y[i] = h[i] * inv_rms * w[i];
  }
}

// x [heads, D] rotated by the position's cos/sin rows into y (rotate-half convention, as HF's Llama).
void rotate(const float* x, float* y, int64_t heads, int64_t D, const float* c, const float* s) {
  const int64_t half = D / 2;
  for (int64_t h = 0; h < heads; ++h, x += D, y += D) {
    for (int64_t i = 0; i < half; ++i) {
      const float x1 = x[i], x2 = x[i + half];
      y[i] = x1 * c[i] - x2 * s[i];
      y[i + half] = x2 * c[i + half] + x1 * s[i + half];
    }
  }
}

#ifndef T2_CUDA_KERNELS
[[noreturn]] void no_cuda_kernels() { throw Error("fused ops: this build has no CUDA kernels"); }
#endif

}  // namespace

bool fused_ops_available(const at::Device& device, at::ScalarType dtype) {
#ifdef T2_CUDA_KERNELS
  if (device.is_cuda()) return true;
#endif
  return device.is_cpu() && dtype == at::kFloat;
}

at::Tensor add_rms_norm(at::Tensor& hidden, const at::Tensor& delta, const at::Tensor& weight, double eps) {
  require_contiguous(hidden, "hidden");
  const at::Tensor d = delta.defined() ? delta.contiguous() : delta;
  const at::Tensor w = weight.contiguous();
  at::Tensor out = at::empty_like(hidden);
  if (on_cpu(hidden)) {
    add_rms_norm_cpu(hidden, d, w, out, eps);
    return out;
  }
#ifdef T2_CUDA_KERNELS
  const int64_t width = hidden.size(-1);
  cuda::check_launch(cuda::launch_add_rms_norm(cuda::element_type(hidden), hidden.data_ptr(), d.defined() ? d.data_ptr() : nullptr,
                                               w.data_ptr(), out.data_ptr(), hidden.numel() / width, width,
                                               static_cast<float>(eps), cuda::stream_of(hidden)),
                     "add_rms_norm kernel");
  return out;
#else
  no_cuda_kernels();
#endif
}

at::Tensor rope_and_cache_write(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const at::Tensor& cos,
                                const at::Tensor& sin, const at::Tensor& positions, const at::Tensor& write_rows,
                                at::Tensor& cache_k, at::Tensor& cache_v) {
  require_contiguous(cache_k, "the key cache");
  require_contiguous(cache_v, "the value cache");
  const int64_t N = q.size(0), KV = cache_k.size(2), D = cache_k.size(3);
  const int64_t H = q.numel() / (N * D);
  const at::Tensor qr = dense_rows(q, H * D), kr = dense_rows(k, KV * D), vr = dense_rows(v, KV * D);
  const at::Tensor pos = positions.contiguous(), rows = write_rows.contiguous();
  at::Tensor out = at::empty({N, H, D}, q.options());
  if (on_cpu(q)) {
    const float* table_cos = cos.data_ptr<float>();
    const float* table_sin = sin.data_ptr<float>();
    const int64_t* position = pos.data_ptr<int64_t>();
    const int64_t* row = rows.data_ptr<int64_t>();
    for (int64_t n = 0; n < N; ++n) {
      const float* c = table_cos + position[n] * D;
      const float* s = table_sin + position[n] * D;
      rotate(qr.data_ptr<float>() + n * qr.stride(0), out.data_ptr<float>() + n * H * D, H, D, c, s);
      rotate(kr.data_ptr<float>() + n * kr.stride(0), cache_k.data_ptr<float>() + row[n] * KV * D, KV, D, c, s);
      const float* value = vr.data_ptr<float>() + n * vr.stride(0);
      std::copy(value, value + KV * D, cache_v.data_ptr<float>() + row[n] * KV * D);
    }
    return out;
  }
#ifdef T2_CUDA_KERNELS
  const cuda::QkvRows in{qr.data_ptr(), kr.data_ptr(), vr.data_ptr(), qr.stride(0), kr.stride(0), vr.stride(0)};
  cuda::check_launch(cuda::launch_rope_and_cache_write(cuda::element_type(q), in, out.data_ptr(), cos.data_ptr<float>(),
                                                       sin.data_ptr<float>(), pos.data_ptr<int64_t>(), rows.data_ptr<int64_t>(),
                                                       cache_k.data_ptr(), cache_v.data_ptr(), N, static_cast<int>(H),
                                                       static_cast<int>(KV), static_cast<int>(D), cuda::stream_of(q)),
                     "rope kernel");
  return out;
#else
  no_cuda_kernels();
#endif
}

at::Tensor silu_mul(const at::Tensor& gate, const at::Tensor& up) {
  const int64_t width = gate.size(-1);
  const at::Tensor g = dense_rows(gate, width), u = dense_rows(up, width);
  const int64_t rows = g.size(0);
  at::Tensor out = at::empty({rows, width}, g.options());
  if (on_cpu(g)) {
    float* y = out.data_ptr<float>();
    for (int64_t r = 0; r < rows; ++r) {
      const float* gr = g.data_ptr<float>() + r * g.stride(0);
      const float* ur = u.data_ptr<float>() + r * u.stride(0);
      for (int64_t i = 0; i < width; ++i) y[r * width + i] = gr[i] / (1.f + std::exp(-gr[i])) * ur[i];
    }
    return out;
  }
#ifdef T2_CUDA_KERNELS
  cuda::check_launch(cuda::launch_silu_mul(cuda::element_type(g), g.data_ptr(), g.stride(0), u.data_ptr(), u.stride(0),
                                           out.data_ptr(), rows, width, cuda::stream_of(g)),
                     "silu_mul kernel");
  return out;
#else
  no_cuda_kernels();
#endif
}

}  // namespace t2::model
