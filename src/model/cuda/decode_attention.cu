// Decode attention on the GPU: one query token per sequence against the keys
// its cache slot holds, read in place from the [slots, capacity, kv_heads,
// head_dim] cache. Split-K ("flash decoding"): each block scores one chunk of
// one sequence's keys for the query heads that share a KV head, and a second
// kernel merges the chunks' softmax partials. Lengths and slots are read from
// device memory, so one launch (and one CUDA graph) serves any lengths.
#include "decode_attention_kernel.hpp"

#include "element.cuh"

#include <cmath>

namespace t2::model::cuda {
namespace {

constexpr int kWarps = 4;
constexpr int kMaxGroup = 8;    // query heads per KV head
constexpr int kMaxPerLane = 8;  // head_dim <= 256
constexpr float kLog2e = 1.4426950408889634f;


__device__ inline float warp_sum(float x) {
  for (int offset = 16; offset > 0; offset >>= 1) x += __shfl_xor_sync(0xffffffffu, x, offset);
  return x;
}

struct KeyRange {
  int64_t begin, end;  // visible keys [begin, end)
};

__device__ inline KeyRange visible_keys(const int64_t* lengths, int n, int window) {
  const int64_t end = lengths[n];
  const int64_t begin = window > 0 && end > window ? end - window : 0;
  return {begin, end};
}

// grid (splits, kv_heads, rows); block kWarps warps. Scores in log2 units.
// kGroup and kPerLane bound G and head_dim / 32, so the per-lane arrays stay
// in registers. Each warp takes kKeys keys per iteration, their loads issued
// together and their dot products reduced together: a decode step's keys are
// few per block, so the loop is bound by memory latency, not bandwidth.
template <typename T, int kGroup, int kPerLane, int kKeys>
__global__ void __launch_bounds__(kWarps * 32)
    partial_kernel(DecodeAttentionArgs a, const T* __restrict__ q, const T* __restrict__ k_cache,
                   const T* __restrict__ v_cache, float* __restrict__ part_acc, float* __restrict__ part_max,
                   float* __restrict__ part_sum) {
  const int split = blockIdx.x, kv = blockIdx.y, n = blockIdx.z;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const KeyRange keys = visible_keys(a.lengths, n, a.window);
  const int64_t chunk_begin = max(keys.begin, static_cast<int64_t>(split) * a.chunk);
  const int64_t chunk_end = min(keys.end, static_cast<int64_t>(split + 1) * a.chunk);
  if (chunk_begin >= chunk_end) return;  // the merge reads only splits that hold keys

  const int G = a.group, D = a.head_dim;
  const int per_lane = (D + 31) / 32;
  float qr[kGroup][kPerLane];
  float acc[kGroup][kPerLane];
  float m[kGroup], l[kGroup];
  const float qscale = a.scale * kLog2e;
#pragma unroll
  for (int g = 0; g < kGroup; ++g) {
    m[g] = -INFINITY;
    l[g] = 0.f;
#pragma unroll
    for (int i = 0; i < kPerLane; ++i) {
      const int d = lane + 32 * i;
      const bool live = g < G && i < per_lane && d < D;
      qr[g][i] = live ? to_float(q[(static_cast<int64_t>(n) * a.heads + kv * G + g) * D + d]) * qscale : 0.f;
      acc[g][i] = 0.f;
    }
  }
  const int64_t slot = a.slots[n];
  const int64_t row_stride = static_cast<int64_t>(a.kv_heads) * D;
  const T* k_base = k_cache + (slot * a.capacity) * row_stride + static_cast<int64_t>(kv) * D;
  const T* v_base = v_cache + (slot * a.capacity) * row_stride + static_cast<int64_t>(kv) * D;
  for (int64_t first = chunk_begin + warp * kKeys; first < chunk_end; first += kWarps * kKeys) {
    float kr[kKeys][kPerLane], vr[kKeys][kPerLane];
#pragma unroll
    for (int u = 0; u < kKeys; ++u) {
      const int64_t j = first + u;
#pragma unroll
      for (int i = 0; i < kPerLane; ++i) {
        const int d = lane + 32 * i;
        const bool live = j < chunk_end && i < per_lane && d < D;
        kr[u][i] = live ? to_float(k_base[j * row_stride + d]) : 0.f;
        vr[u][i] = live ? to_float(v_base[j * row_stride + d]) : 0.f;
      }
    }
#pragma unroll
    for (int g = 0; g < kGroup; ++g) {
      if (g >= G) break;
      float s[kKeys];
      float s_max = m[g];
#pragma unroll
      for (int u = 0; u < kKeys; ++u) {
        float dot = 0.f;
#pragma unroll
        for (int i = 0; i < kPerLane; ++i) dot += qr[g][i] * kr[u][i];
        s[u] = first + u < chunk_end ? warp_sum(dot) : -INFINITY;
        s_max = fmaxf(s_max, s[u]);
      }
      const float correction = exp2f(m[g] - s_max);
      l[g] *= correction;
#pragma unroll
      for (int i = 0; i < kPerLane; ++i) acc[g][i] *= correction;
#pragma unroll
      for (int u = 0; u < kKeys; ++u) {
        const float p = exp2f(s[u] - s_max);  // 0 for keys past the chunk
        l[g] += p;
#pragma unroll
        for (int i = 0; i < kPerLane; ++i) acc[g][i] += p * vr[u][i];
      }
      m[g] = s_max;
    }
  }

  // Merge the warps' partials through shared memory.
  __shared__ float s_max[kWarps][kGroup], s_sum[kWarps][kGroup];
  __shared__ float s_acc[kWarps][kGroup][kPerLane * 32];
  for (int g = 0; g < G; ++g) {
    if (lane == 0) {
      s_max[warp][g] = m[g];
      s_sum[warp][g] = l[g];
    }
#pragma unroll
    for (int i = 0; i < kPerLane; ++i) {
      if (i < per_lane) s_acc[warp][g][lane + 32 * i] = acc[g][i];
    }
  }
  __syncthreads();
  const int64_t out_row = (static_cast<int64_t>(n) * a.heads + kv * G) * a.splits + split;  // + g * splits
  for (int e = threadIdx.x; e < G * D; e += kWarps * 32) {
    const int g = e / D, d = e % D;
    float best = -INFINITY;
    for (int w = 0; w < kWarps; ++w) best = fmaxf(best, s_max[w][g]);
    float sum = 0.f, value = 0.f;
    for (int w = 0; w < kWarps; ++w) {
      const float weight = s_max[w][g] == -INFINITY ? 0.f : exp2f(s_max[w][g] - best);
      sum += s_sum[w][g] * weight;
      value += s_acc[w][g][d] * weight;
    }
    const int64_t row = out_row + static_cast<int64_t>(g) * a.splits;
    part_acc[row * D + d] = value;
    if (d == 0) {
      part_max[row] = best;
      part_sum[row] = sum;
    }
  }
}

// grid (heads, rows); block >= head_dim threads.
template <typename T>
__global__ void merge_kernel(DecodeAttentionArgs a, const float* __restrict__ part_acc, const float* __restrict__ part_max,
                             const float* __restrict__ part_sum, T* __restrict__ out) {
  const int h = blockIdx.x, n = blockIdx.y, d = threadIdx.x;
  if (d >= a.head_dim) return;
  const KeyRange keys = visible_keys(a.lengths, n, a.window);
  const int first = static_cast<int>(keys.begin / a.chunk);
  const int last = static_cast<int>((keys.end - 1) / a.chunk);
  const int64_t base = (static_cast<int64_t>(n) * a.heads + h) * a.splits;
  float best = -INFINITY;
  for (int s = first; s <= last; ++s) best = fmaxf(best, part_max[base + s]);
  float sum = 0.f, value = 0.f;
  for (int s = first; s <= last; ++s) {
    const float weight = exp2f(part_max[base + s] - best);
    sum += part_sum[base + s] * weight;
    value += part_acc[(base + s) * a.head_dim + d] * weight;
  }
  out[(static_cast<int64_t>(n) * a.heads + h) * a.head_dim + d] = from_float<T>(value / sum);
}

template <typename T>
cudaError_t launch_typed(const DecodeAttentionArgs& a, const void* q, const void* k, const void* v, float* part_acc,
                         float* part_max, float* part_sum, void* out, cudaStream_t stream) {
  const dim3 grid(a.splits, a.kv_heads, a.rows);
  const auto* qt = static_cast<const T*>(q);
  const auto* kt = static_cast<const T*>(k);
  const auto* vt = static_cast<const T*>(v);
  const bool small_group = a.group <= 4, small_head = a.head_dim <= 128;
  // Fewer keys per iteration where the per-lane arrays are larger, to stay in registers.
  if (small_group && small_head && a.latency_bound) {
    partial_kernel<T, 4, 4, 4><<<grid, kWarps * 32, 0, stream>>>(a, qt, kt, vt, part_acc, part_max, part_sum);
  } else if (small_group && small_head) {
    partial_kernel<T, 4, 4, 1><<<grid, kWarps * 32, 0, stream>>>(a, qt, kt, vt, part_acc, part_max, part_sum);
  } else if (small_head) {
    partial_kernel<T, kMaxGroup, 4, 2><<<grid, kWarps * 32, 0, stream>>>(a, qt, kt, vt, part_acc, part_max, part_sum);
  } else {
    partial_kernel<T, kMaxGroup, kMaxPerLane, 1><<<grid, kWarps * 32, 0, stream>>>(a, qt, kt, vt, part_acc, part_max, part_sum);
  }
  const int threads = ((a.head_dim + 31) / 32) * 32;
  merge_kernel<T><<<dim3(a.heads, a.rows), threads, 0, stream>>>(a, part_acc, part_max, part_sum, static_cast<T*>(out));
  return cudaGetLastError();
}

}  // namespace

bool decode_attention_supports(int group, int head_dim) {
  return group >= 1 && group <= kMaxGroup && head_dim >= 1 && head_dim <= kMaxPerLane * 32;
}

cudaError_t launch_decode_attention(const DecodeAttentionArgs& args, ElementType type, const void* q, const void* k_cache,
                                    const void* v_cache, float* part_acc, float* part_max, float* part_sum, void* out,
                                    cudaStream_t stream) {
  switch (type) {
    case ElementType::kFloat32: return launch_typed<float>(args, q, k_cache, v_cache, part_acc, part_max, part_sum, out, stream);
    case ElementType::kFloat16: return launch_typed<__half>(args, q, k_cache, v_cache, part_acc, part_max, part_sum, out, stream);
    case ElementType::kBFloat16:
      return launch_typed<__nv_bfloat16>(args, q, k_cache, v_cache, part_acc, part_max, part_sum, out, stream);
  }
  return cudaErrorInvalidValue;
}

}  // namespace t2::model::cuda
