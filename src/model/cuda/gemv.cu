// y = W x for the one token of a batch-1 decode step. Bound by memory: every
// warp streams two weight rows in 16-byte vectors, four vectors per row in
// flight per lane so that enough bytes are in flight to hide the latency,
// and reduces across its lanes at the end.
#include "gemv_kernel.hpp"

#include "element.cuh"

namespace t2::model::cuda {
namespace {

constexpr int kWarps = 4;
constexpr int kRowsPerWarp = 2;
constexpr int kUnroll = 4;

__device__ inline float warp_sum(float x) {
  for (int offset = 16; offset > 0; offset >>= 1) x += __shfl_xor_sync(0xffffffffu, x, offset);
  return x;
}

// The dot product of two 16-byte vectors of 8 elements of T, in float.
template <typename T>
__device__ inline float dot8(const uint4& a, const uint4& b) {
  float fa[8], fb[8];
  unpack<T>(a, fa);
  unpack<T>(b, fb);
  float sum = 0.f;
#pragma unroll
  for (int i = 0; i < 8; ++i) sum = fmaf(fa[i], fb[i], sum);
  return sum;
}

// grid: one block per kWarps * kRowsPerWarp rows of W; block kWarps warps.
template <typename T>
__global__ void __launch_bounds__(kWarps * 32)
    gemv_kernel(const T* __restrict__ x, const T* __restrict__ w, const T* __restrict__ bias, T* __restrict__ y, int64_t in,
                int64_t out) {
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int64_t first = (static_cast<int64_t>(blockIdx.x) * kWarps + warp) * kRowsPerWarp;
  if (first >= out) return;
  const int64_t vectors = in / 8;
  const uint4* xv = reinterpret_cast<const uint4*>(x);
  const uint4* wv[kRowsPerWarp];
#pragma unroll
  for (int r = 0; r < kRowsPerWarp; ++r) {
    // Past the last row a warp re-reads the last one (never stored), so the loop has no branches per row.
    wv[r] = reinterpret_cast<const uint4*>(w + min(first + r, out - 1) * in);
  }
  float acc[kRowsPerWarp] = {};
  for (int64_t base = lane; base < vectors; base += 32 * kUnroll) {
    uint4 wr[kUnroll][kRowsPerWarp];
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {
      const int64_t v = base + 32 * u;
#pragma unroll
      for (int r = 0; r < kRowsPerWarp; ++r) wr[u][r] = v < vectors ? __ldcs(wv[r] + v) : make_uint4(0, 0, 0, 0);
    }
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {
      const int64_t v = base + 32 * u;
      if (v >= vectors) break;
      const uint4 xr = __ldg(xv + v);
#pragma unroll
      for (int r = 0; r < kRowsPerWarp; ++r) acc[r] += dot8<T>(wr[u][r], xr);
    }
  }
#pragma unroll
  for (int r = 0; r < kRowsPerWarp; ++r) {
    const float sum = warp_sum(acc[r]);
    const int64_t row = first + r;
    if (lane == r && row < out) y[row] = from_float<T>(sum + (bias != nullptr ? to_float(bias[row]) : 0.f));
  }
}

template <typename T>
void launch_typed(const void* x, const void* w, const void* bias, void* y, int64_t in, int64_t out, cudaStream_t stream) {
  const int64_t per_block = kWarps * kRowsPerWarp;
  const auto blocks = static_cast<unsigned>((out + per_block - 1) / per_block);
  gemv_kernel<T><<<blocks, kWarps * 32, 0, stream>>>(static_cast<const T*>(x), static_cast<const T*>(w),
                                                     static_cast<const T*>(bias), static_cast<T*>(y), in, out);
}

}  // namespace

cudaError_t launch_gemv(ElementType type, const void* x, const void* w, const void* bias, void* y, int64_t in, int64_t out,
                        cudaStream_t stream) {
  if (in % 8 != 0) return cudaErrorInvalidValue;
  switch (type) {
    case ElementType::kFloat16: launch_typed<__half>(x, w, bias, y, in, out, stream); break;
    case ElementType::kBFloat16: launch_typed<__nv_bfloat16>(x, w, bias, y, in, out, stream); break;
    case ElementType::kFloat32: return cudaErrorInvalidValue;
  }
  return cudaGetLastError();
}

}  // namespace t2::model::cuda
