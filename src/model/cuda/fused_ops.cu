// Fused elementwise kernels of a decoder layer: residual add + RMSNorm, RoPE
// with the KV-cache write, SwiGLU. Each replaces two to twelve eager
// launches; at decode, where every kernel is tiny, launches are the cost.
#include "fused_ops_kernel.hpp"

#include "element.cuh"

#include <algorithm>

namespace t2::model::cuda {
namespace {

// x rounded to T, back in float: the value an eager op in T would hold.
template <typename T> __device__ inline float round_to(float x) { return to_float(from_float<T>(x)); }

constexpr int kNormThreads = 256;

// One block per row.
template <typename T>
__global__ void add_rms_norm_kernel(T* __restrict__ hidden, const T* __restrict__ delta, const T* __restrict__ weight,
                                    T* __restrict__ out, int64_t width, float eps) {
  T* h = hidden + blockIdx.x * width;
  float sum = 0.f;
  for (int64_t i = threadIdx.x; i < width; i += kNormThreads) {
    float x = to_float(h[i]);
    if (delta != nullptr) {
      x = round_to<T>(x + to_float(delta[blockIdx.x * width + i]));
      h[i] = from_float<T>(x);
    }
    sum += x * x;
  }
  __shared__ float partial[kNormThreads / 32];
  for (int offset = 16; offset > 0; offset >>= 1) sum += __shfl_xor_sync(0xffffffffu, sum, offset);
  if (threadIdx.x % 32 == 0) partial[threadIdx.x / 32] = sum;
  __syncthreads();
  __shared__ float inv_rms;
  if (threadIdx.x == 0) {
    float total = 0.f;
    for (int w = 0; w < kNormThreads / 32; ++w) total += partial[w];
    inv_rms = rsqrtf(total / static_cast<float>(width) + eps);
  }
  __syncthreads();
  for (int64_t i = threadIdx.x; i < width; i += kNormThreads) {
    out[blockIdx.x * width + i] = from_float<T>(round_to<T>(to_float(h[i]) * inv_rms) * to_float(weight[i]));
  }
}

// One block per token: its query heads rotated into q_out, its key heads
// rotated into the cache, its value heads copied there.
template <typename T>
__global__ void rope_and_cache_kernel(QkvRows in, T* __restrict__ q_out, const float* __restrict__ cos,
                                      const float* __restrict__ sin, const int64_t* __restrict__ positions,
                                      const int64_t* __restrict__ write_rows, T* __restrict__ cache_k, T* __restrict__ cache_v,
                                      int heads, int kv_heads, int head_dim) {
  const int64_t n = blockIdx.x;
  const int half = head_dim / 2;
  const float* c = cos + positions[n] * head_dim;
  const float* s = sin + positions[n] * head_dim;
  const T* q = static_cast<const T*>(in.q) + n * in.q_stride;
  const T* k = static_cast<const T*>(in.k) + n * in.k_stride;
  const T* v = static_cast<const T*>(in.v) + n * in.v_stride;
  for (int i = threadIdx.x; i < heads * half; i += blockDim.x) {
    const int h = i / half, d = i % half;
    const T* x = q + h * head_dim;
    T* y = q_out + (n * heads + h) * head_dim;
    const float x1 = to_float(x[d]), x2 = to_float(x[d + half]);
    y[d] = from_float<T>(x1 * c[d] - x2 * s[d]);
    y[d + half] = from_float<T>(x2 * c[d + half] + x1 * s[d + half]);
  }
  const int64_t row = write_rows[n];
  for (int i = threadIdx.x; i < kv_heads * half; i += blockDim.x) {
    const int h = i / half, d = i % half;
    const T* x = k + h * head_dim;
    T* y = cache_k + (row * kv_heads + h) * head_dim;
    const float x1 = to_float(x[d]), x2 = to_float(x[d + half]);
    y[d] = from_float<T>(x1 * c[d] - x2 * s[d]);
    y[d + half] = from_float<T>(x2 * c[d + half] + x1 * s[d + half]);
  }
  for (int i = threadIdx.x; i < kv_heads * head_dim; i += blockDim.x) cache_v[row * kv_heads * head_dim + i] = v[i];
}

template <typename T>
__global__ void silu_mul_kernel(const T* __restrict__ gate, int64_t gate_stride, const T* __restrict__ up, int64_t up_stride,
                                T* __restrict__ out, int64_t width, int64_t count) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < count;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t row = i / width, column = i % width;
    const float g = to_float(gate[row * gate_stride + column]);
    out[i] = from_float<T>(round_to<T>(g / (1.f + __expf(-g))) * to_float(up[row * up_stride + column]));
  }
}

template <typename F>
cudaError_t dispatch(ElementType type, F&& launch) {
  switch (type) {
    case ElementType::kFloat32: launch(float{}); break;
    case ElementType::kFloat16: launch(__half{}); break;
    case ElementType::kBFloat16: launch(__nv_bfloat16{}); break;
  }
  return cudaGetLastError();
}

}  // namespace

cudaError_t launch_add_rms_norm(ElementType type, void* hidden, const void* delta, const void* weight, void* out, int64_t rows,
                                int64_t width, float eps, cudaStream_t stream) {
  return dispatch(type, [&](auto tag) {
    using T = decltype(tag);
    add_rms_norm_kernel<T><<<static_cast<unsigned>(rows), kNormThreads, 0, stream>>>(
        static_cast<T*>(hidden), static_cast<const T*>(delta), static_cast<const T*>(weight), static_cast<T*>(out), width, eps);
  });
}

cudaError_t launch_rope_and_cache_write(ElementType type, const QkvRows& in, void* q_out, const float* cos, const float* sin,
                                        const int64_t* positions, const int64_t* write_rows, void* cache_k, void* cache_v,
                                        int64_t rows, int heads, int kv_heads, int head_dim, cudaStream_t stream) {
  return dispatch(type, [&](auto tag) {
    using T = decltype(tag);
    rope_and_cache_kernel<T><<<static_cast<unsigned>(rows), 128, 0, stream>>>(
        in, static_cast<T*>(q_out), cos, sin, positions, write_rows, static_cast<T*>(cache_k), static_cast<T*>(cache_v), heads,
        kv_heads, head_dim);
  });
}

cudaError_t launch_silu_mul(ElementType type, const void* gate, int64_t gate_stride, const void* up, int64_t up_stride, void* out,
                            int64_t rows, int64_t width, cudaStream_t stream) {
  const int64_t count = rows * width;
  const auto blocks = static_cast<unsigned>(std::min<int64_t>((count + 255) / 256, 4096));
  return dispatch(type, [&](auto tag) {
    using T = decltype(tag);
    silu_mul_kernel<T><<<blocks, 256, 0, stream>>>(static_cast<const T*>(gate), gate_stride, static_cast<const T*>(up), up_stride,
                                                   static_cast<T*>(out), width, count);
  });
}

}  // namespace t2::model::cuda
