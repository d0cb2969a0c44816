// x Wᵀ for a few rows of x, as decode runs it: each weight element is read
// once, so the kernel is bound by memory. Every warp streams whole weight rows
// in 16-byte vectors (several loads in flight per lane, so enough bytes are in
// flight to cover the memory latency), multiplies them with every token of x
// (small, served from L1), and reduces across its lanes at the end.
#include "linear_kernel.hpp"

#include "element.cuh"

namespace t2::model::cuda {
namespace {

constexpr int kWarps = 4;

__device__ inline float warp_sum(float x) {
  for (int offset = 16; offset > 0; offset >>= 1) x += __shfl_xor_sync(0xffffffffu, x, offset);
  return x;
}

// The 8 elements of a 16-byte vector, in float.
__device__ inline void unpack(const uint4& v, const __nv_bfloat16*, float (&f)[8]) {
  const uint32_t words[4] = {v.x, v.y, v.z, v.w};
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    f[2 * i] = __uint_as_float(words[i] << 16);
    f[2 * i + 1] = __uint_as_float(words[i] & 0xffff0000u);
  }
}

__device__ inline void unpack(const uint4& v, const __half*, float (&f)[8]) {
  const uint32_t words[4] = {v.x, v.y, v.z, v.w};
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    const float2 pair = __half22float2(*reinterpret_cast<const __half2*>(&words[i]));
    f[2 * i] = pair.x;
    f[2 * i + 1] = pair.y;
  }
}

// grid: one block per kWarps * kOutPerWarp output features; block kWarps warps.
// kMaxRows bounds `rows` (tokens); kUnroll vectors per weight row in flight.
template <typename T, int kMaxRows, int kOutPerWarp, int kUnroll>
__global__ void __launch_bounds__(kWarps * 32)
    small_batch_linear_kernel(const T* __restrict__ x, const T* __restrict__ w, const T* __restrict__ bias, T* __restrict__ y,
                              int rows, int64_t in, int64_t out) {
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int64_t first = (static_cast<int64_t>(blockIdx.x) * kWarps + warp) * kOutPerWarp;
  if (first >= out) return;
  const int64_t vectors = in / 8;
  const uint4* xv = reinterpret_cast<const uint4*>(x);
  const uint4* wv[kOutPerWarp];
#pragma unroll
  for (int r = 0; r < kOutPerWarp; ++r) {
    // Past the last feature a warp re-reads the last row (never stored), so the loop has no branches per row.
    wv[r] = reinterpret_cast<const uint4*>(w + min(first + r, out - 1) * in);
  }
  float acc[kOutPerWarp][kMaxRows] = {};
  for (int64_t base = lane; base < vectors; base += 32 * kUnroll) {
    uint4 wr[kUnroll][kOutPerWarp];
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {
      const int64_t v = base + 32 * u;
#pragma unroll
      for (int r = 0; r < kOutPerWarp; ++r) wr[u][r] = v < vectors ? __ldcs(wv[r] + v) : make_uint4(0, 0, 0, 0);
    }
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {
      const int64_t v = base + 32 * u;
      if (v >= vectors) break;
      float wf[kOutPerWarp][8];
#pragma unroll
      for (int r = 0; r < kOutPerWarp; ++r) unpack(wr[u][r], static_cast<const T*>(nullptr), wf[r]);
#pragma unroll
      for (int n = 0; n < kMaxRows; ++n) {
        if (n >= rows) break;
        float xf[8];
        unpack(__ldg(xv + n * vectors + v), static_cast<const T*>(nullptr), xf);
#pragma unroll
        for (int r = 0; r < kOutPerWarp; ++r) {
#pragma unroll
          for (int i = 0; i < 8; ++i) acc[r][n] = fmaf(wf[r][i], xf[i], acc[r][n]);
        }
      }
    }
  }
#pragma unroll
  for (int r = 0; r < kOutPerWarp; ++r) {
#pragma unroll
    for (int n = 0; n < kMaxRows; ++n) {
      if (n >= rows) break;
      const float sum = warp_sum(acc[r][n]);
      // Lane (n * kOutPerWarp + r) % 32 stores, spreading the stores over the warp.
      const int64_t feature = first + r;
      if (lane == (n * kOutPerWarp + r) % 32 && feature < out) {
        y[n * out + feature] = from_float<T>(sum + (bias != nullptr ? to_float(bias[feature]) : 0.f));
      }
    }
  }
}

template <typename T, int kMaxRows, int kOutPerWarp, int kUnroll>
void launch(const void* x, const void* w, const void* bias, void* y, int rows, int64_t in, int64_t out, cudaStream_t stream) {
  const int64_t per_block = kWarps * kOutPerWarp;
  const auto blocks = static_cast<unsigned>((out + per_block - 1) / per_block);
  small_batch_linear_kernel<T, kMaxRows, kOutPerWarp, kUnroll><<<blocks, kWarps * 32, 0, stream>>>(
      static_cast<const T*>(x), static_cast<const T*>(w), static_cast<const T*>(bias), static_cast<T*>(y), rows, in, out);
}

template <typename T>
void launch_typed(const void* x, const void* w, const void* bias, void* y, int rows, int64_t in, int64_t out,
                  cudaStream_t stream) {
  // More output features per warp as the rows grow, so each x vector read from L1 serves more weight bytes.
  if (rows <= 1) {
    launch<T, 1, 2, 4>(x, w, bias, y, rows, in, out, stream);
  } else if (rows <= 2) {
    launch<T, 2, 2, 4>(x, w, bias, y, rows, in, out, stream);
  } else if (rows <= 4) {
    launch<T, 4, 2, 4>(x, w, bias, y, rows, in, out, stream);
  } else if (rows <= 8) {
    launch<T, 8, 4, 2>(x, w, bias, y, rows, in, out, stream);
  } else {
    launch<T, kSmallBatchMaxRows, 4, 2>(x, w, bias, y, rows, in, out, stream);
  }
}

}  // namespace

cudaError_t launch_small_batch_linear(ElementType type, const void* x, const void* w, const void* bias, void* y, int rows,
                                      int64_t in, int64_t out, cudaStream_t stream) {
  if (rows < 1 || rows > kSmallBatchMaxRows || in % 8 != 0) return cudaErrorInvalidValue;
  switch (type) {
    case ElementType::kFloat16: launch_typed<__half>(x, w, bias, y, rows, in, out, stream); break;
    case ElementType::kBFloat16: launch_typed<__nv_bfloat16>(x, w, bias, y, rows, in, out, stream); break;
    case ElementType::kFloat32: return cudaErrorInvalidValue;
  }
  return cudaGetLastError();
}

}  // namespace t2::model::cuda
