// Decode attention on the GPU: one query token per sequence against the keys
// its cache slot holds, read in place from the [slots, capacity, kv_heads,
// head_dim] cache. Split-K ("flash decoding"): each block takes one split of
// one sequence's keys for the query heads that share a KV head, and a second
// kernel merges the splits' softmax partials. The split count depends on the
// shape only (enough blocks for one wave of the GPU); lengths and slots are
// read from device memory, so one launch (and one CUDA graph) serves any lengths.
// Two partial kernels write the same partials: on tensor cores for half and
// bfloat16 heads of 64, 128 and 256 (decode_attention_mma.cuh), and on CUDA
// cores below for the rest (float32, other head sizes, GPUs before sm_80).
#include "decode_attention_kernel.hpp"

#include "decode_attention_mma.cuh"
#include "decode_attention_split.cuh"
#include "element.cuh"

#include <algorithm>
#include <cmath>
#include <type_traits>

namespace t2::model::cuda {
namespace {

constexpr int kMaxHeadDim = 256;
constexpr int kTile = 128;              // keys scored at a time: their scores live in shared memory
constexpr int kUnroll = 4;              // keys in flight per lane team

__device__ inline float warp_max(float x) {
  for (int offset = 16; offset > 0; offset >>= 1) x = fmaxf(x, __shfl_xor_sync(0xffffffffu, x, offset));
  return x;
}

__device__ inline float warp_sum(float x) {
  for (int offset = 16; offset > 0; offset >>= 1) x += __shfl_xor_sync(0xffffffffu, x, offset);
  return x;
}

// grid (splits, kv_heads, rows); block kThreads; scores in log2 units.
// A warp's lanes form teams of a.team lanes, each team holding one key: a
// lane loads kVectors 16-byte vectors of it, so a key row is read in a few
// wide, coalesced loads and its dot product is reduced over a team, not the
// whole warp. Per tile of keys, two passes: the keys' scores go to shared
// memory and their softmax is taken there, then the values are summed with
// the probabilities; a running max rescales the sums from tile to tile.
// kGroup and kVectors bound G and the lane's share of head_dim, so the
// per-lane arrays stay in registers.
template <typename T, int kGroup, int kVectors>
__global__ void __launch_bounds__(kThreads)
    partial_kernel(DecodeAttentionArgs a, const T* __restrict__ q, const T* __restrict__ k_cache,
                   const T* __restrict__ v_cache, float* __restrict__ part_acc, float* __restrict__ part_max,
                   float* __restrict__ part_sum) {
  constexpr int kPerLane = kVectors * kVectorElements<T>;
  __shared__ float scores[kGroup][kTile];
  __shared__ float running_max[kGroup], running_sum[kGroup], correction[kGroup];
  __shared__ float values[kGroup][kMaxHeadDim];

  const int split = blockIdx.x, kv = blockIdx.y, n = blockIdx.z;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const KeyRange range = Splits(visible_keys(a.lengths, n, a.window), a.splits)[split];
  if (range.begin >= range.end) return;  // the merge reads only splits that hold keys

  const int G = a.group, D = a.head_dim;
  const int teams = 32 / a.team, team = lane / a.team;
  const int first_dim = (lane % a.team) * kPerLane;
  const bool holds_dims = first_dim < D;  // a team is a power of two lanes; the last may hold none
  const int stride = kWarps * teams;       // keys the block takes per step
  const int64_t row_stride = static_cast<int64_t>(a.kv_heads) * D;
  const int64_t base = a.slots[n] * a.capacity * row_stride + static_cast<int64_t>(kv) * D + first_dim;
  // The kUnroll keys of a step (tile + step + u * stride), zeros past the tile's count.
  const auto load_step = [&](const T* cache, int64_t tile, int step, int count, uint4 (&out)[kUnroll][kVectors]) {
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {
      const bool live = step + u * stride < count && holds_dims;
      const T* row = cache + base + (tile + step + u * stride) * row_stride;
#pragma unroll
      for (int p = 0; p < kVectors; ++p) out[u][p] = live ? __ldg(reinterpret_cast<const uint4*>(row) + p) : make_uint4(0, 0, 0, 0);
    }
  };
  const auto unpack_all = [](const uint4 (&in)[kVectors], float (&out)[kPerLane]) {
#pragma unroll
    for (int p = 0; p < kVectors; ++p) {
      unpack<T>(in[p], *reinterpret_cast<float(*)[kVectorElements<T>]>(out + p * kVectorElements<T>));
    }
  };

  // The queries stay packed (unpacked per key): registers, not ALU, bound the blocks resident.
  uint4 q_raw[kGroup][kVectors];
#pragma unroll
  for (int g = 0; g < kGroup; ++g) {
    const T* q_row = q + (static_cast<int64_t>(n) * a.heads + kv * G + min(g, G - 1)) * D + first_dim;
#pragma unroll
    for (int p = 0; p < kVectors; ++p) q_raw[g][p] = holds_dims ? __ldg(reinterpret_cast<const uint4*>(q_row) + p) : make_uint4(0, 0, 0, 0);
  }
  const float qscale = a.scale * kLog2e;
  for (int i = threadIdx.x; i < G * D; i += kThreads) values[i / D][i % D] = 0.f;
  if (threadIdx.x < G) running_max[threadIdx.x] = -INFINITY, running_sum[threadIdx.x] = 0.f;
  float acc[kGroup][kPerLane] = {};

  for (int64_t tile = range.begin; tile < range.end; tile += kTile) {
    const int count = static_cast<int>(min(static_cast<int64_t>(kTile), range.end - tile));
    // Pass 1: scores[g][key] = q_g . k_key * scale. Every lane takes part in the
    // shuffles (keys past the tile score zeros), so the teams stay in step.
    for (int step = warp * teams + team; step - team < count; step += stride * kUnroll) {
      uint4 raw[kUnroll][kVectors];
      load_step(k_cache, tile, step, count, raw);
#pragma unroll
      for (int u = 0; u < kUnroll; ++u) {
        const int key = step + u * stride;
        float kr[kPerLane];
        unpack_all(raw[u], kr);
#pragma unroll
        for (int g = 0; g < kGroup; ++g) {
          if (g >= G) break;
          float qr[kPerLane];
          unpack_all(q_raw[g], qr);
          float dot = 0.f;
#pragma unroll
          for (int e = 0; e < kPerLane; ++e) dot = fmaf(qr[e], kr[e], dot);
          for (int offset = a.team / 2; offset > 0; offset >>= 1) dot += __shfl_xor_sync(0xffffffffu, dot, offset);
          if (lane % a.team == 0 && key < count) scores[g][key] = dot * qscale;
        }
      }
    }
    __syncthreads();

    // The tile's softmax against the running max, one warp per query head.
    for (int g = warp; g < G; g += kWarps) {
      float best = -INFINITY;
      for (int key = lane; key < count; key += 32) best = fmaxf(best, scores[g][key]);
      best = fmaxf(warp_max(best), running_max[g]);
      float sum = 0.f;
      for (int key = lane; key < count; key += 32) {
        const float p = exp2f(scores[g][key] - best);
        scores[g][key] = p;
        sum += p;
      }
      sum = warp_sum(sum);
      if (lane == 0) {
        correction[g] = exp2f(running_max[g] - best);  // 0 on the first tile
        running_sum[g] = running_sum[g] * correction[g] + sum;
        running_max[g] = best;
      }
    }
    __syncthreads();

    // Pass 2: acc[g] = acc[g] * correction[g] + sum over the tile's keys of p[g][key] * v_key.
#pragma unroll
    for (int g = 0; g < kGroup; ++g) {
      if (g >= G) break;
#pragma unroll
      for (int e = 0; e < kPerLane; ++e) acc[g][e] *= correction[g];
    }
    for (int step = warp * teams + team; step - team < count; step += stride * kUnroll) {
      uint4 raw[kUnroll][kVectors];
      load_step(v_cache, tile, step, count, raw);
#pragma unroll
      for (int u = 0; u < kUnroll; ++u) {
        const int key = step + u * stride;
        if (key >= count) break;
        float vr[kPerLane];
        unpack_all(raw[u], vr);
#pragma unroll
        for (int g = 0; g < kGroup; ++g) {
          if (g >= G) break;
          const float p = scores[g][key];
#pragma unroll
          for (int e = 0; e < kPerLane; ++e) acc[g][e] = fmaf(p, vr[e], acc[g][e]);
        }
      }
    }
    __syncthreads();  // the next tile overwrites the scores
  }

  // Sum the teams of each warp, then the warps of the block.
#pragma unroll
  for (int g = 0; g < kGroup; ++g) {
    if (g >= G) break;
#pragma unroll
    for (int e = 0; e < kPerLane; ++e) {
      for (int offset = 16; offset >= a.team; offset >>= 1) acc[g][e] += __shfl_xor_sync(0xffffffffu, acc[g][e], offset);
      if (team == 0 && holds_dims && first_dim + e < D) atomicAdd(&values[g][first_dim + e], acc[g][e]);
    }
  }
  __syncthreads();
  const Partials out{part_acc, part_max, part_sum};
  for (int i = threadIdx.x; i < G * D; i += kThreads) {
    const int g = i / D, d = i % D;
    out.store(a, n, kv * G + g, split, d, values[g][d], running_max[g], running_sum[g]);
  }
}

// grid (heads, rows); block >= head_dim threads.
template <typename T>
__global__ void merge_kernel(DecodeAttentionArgs a, const float* __restrict__ part_acc, const float* __restrict__ part_max,
                             const float* __restrict__ part_sum, T* __restrict__ out) {
  const int h = blockIdx.x, n = blockIdx.y, d = threadIdx.x;
  if (d >= a.head_dim) return;
  const int used = Splits(visible_keys(a.lengths, n, a.window), a.splits).used();
  const int64_t base = Partials::row(a, n, h, 0);
  float best = -INFINITY;
  for (int s = 0; s < used; ++s) best = fmaxf(best, part_max[base + s]);
  float sum = 0.f, value = 0.f;
  for (int s = 0; s < used; ++s) {
    const float weight = exp2f(part_max[base + s] - best);
    sum += part_sum[base + s] * weight;
    value += part_acc[(base + s) * a.head_dim + d] * weight;
  }
  out[(static_cast<int64_t>(n) * a.heads + h) * a.head_dim + d] = from_float<T>(value / sum);
}

// The partial kernel for a head layout: tensor cores for half and bfloat16
// heads of 64, 128 or 256 on GPUs that have them (mma.sync: compute
// capability 8.0 on), else CUDA cores with the lanes that share a key.
template <typename T>
struct PartialLaunch {
  void (*kernel)(DecodeAttentionArgs, const T*, const T*, const T*, float*, float*, float*);
  int team;  // the CUDA-core kernel's: the power of two that covers head_dim
};

template <typename T>
PartialLaunch<T> partial_launch(int group, int head_dim) {
  if constexpr (!std::is_same_v<T, float>) {
    if (has_mma()) {
      switch (head_dim) {
        case 64: return {mma_partial_kernel<T, 64>, 0};
        case 128: return {mma_partial_kernel<T, 128>, 0};
        case 256: return {mma_partial_kernel<T, 256>, 0};
        default: break;
      }
    }
  }
  constexpr int kOne = kVectorElements<T>;
  PartialLaunch<T> launch{};
  int elements_per_lane = kOne;
  // One vector per lane covers head_dim up to 32 vectors; beyond (float32 heads over 128), two.
  if constexpr (kOne * 32 < kMaxHeadDim) {
    if (head_dim > 32 * kOne) {
      launch.kernel = partial_kernel<T, kMaxGroup, 2>;
      elements_per_lane = 2 * kOne;
    }
  }
  if (launch.kernel == nullptr) launch.kernel = group <= 4 ? partial_kernel<T, 4, 1> : partial_kernel<T, kMaxGroup, 1>;
  launch.team = 1;
  while (launch.team * elements_per_lane < head_dim) launch.team *= 2;
  return launch;
}

// Blocks of the partial kernel that one wave of the GPU holds.
template <typename T>
int resident_blocks(int group, int head_dim) {
  int device = 0, sms = 0, per_sm = 0;
  if (cudaGetDevice(&device) != cudaSuccess ||
      cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device) != cudaSuccess ||
      cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, partial_launch<T>(group, head_dim).kernel, kThreads, 0) !=
          cudaSuccess) {
    return 0;
  }
  return sms * per_sm;
}

template <typename T>
cudaError_t launch_typed(DecodeAttentionArgs a, const void* q, const void* k, const void* v, float* part_acc,
                         float* part_max, float* part_sum, void* out, cudaStream_t stream) {
  const PartialLaunch<T> partial = partial_launch<T>(a.group, a.head_dim);
  a.team = partial.team;
  partial.kernel<<<dim3(a.splits, a.kv_heads, a.rows), kThreads, 0, stream>>>(
      a, static_cast<const T*>(q), static_cast<const T*>(k), static_cast<const T*>(v), part_acc, part_max, part_sum);
  const int threads = ((a.head_dim + 31) / 32) * 32;
  merge_kernel<T><<<dim3(a.heads, a.rows), threads, 0, stream>>>(a, part_acc, part_max, part_sum, static_cast<T*>(out));
  return cudaGetLastError();
}

}  // namespace

bool decode_attention_supports(int group, int head_dim) {
  // head_dim in whole 16-byte vectors of every element type
  return group >= 1 && group <= kMaxGroup && head_dim >= 8 && head_dim <= kMaxHeadDim && head_dim % 8 == 0;
}

int decode_attention_splits(const DecodeAttentionArgs& shape, ElementType type) {
  int wave = 0;
  switch (type) {
    case ElementType::kFloat32: wave = resident_blocks<float>(shape.group, shape.head_dim); break;
    case ElementType::kFloat16: wave = resident_blocks<__half>(shape.group, shape.head_dim); break;
    case ElementType::kBFloat16: wave = resident_blocks<__nv_bfloat16>(shape.group, shape.head_dim); break;
  }
  // As many splits as one wave holds (more would add a wave, not bandwidth), none smaller than a granule.
  const int64_t row_heads = static_cast<int64_t>(shape.rows) * shape.kv_heads;
  const int64_t most = (shape.capacity + kDecodeSplitGranule - 1) / kDecodeSplitGranule;
  return static_cast<int>(std::max<int64_t>(1, std::min<int64_t>(most, wave / row_heads)));
}

cudaError_t launch_decode_attention(const DecodeAttentionArgs& args, ElementType type, const void* q, const void* k_cache,
                                    const void* v_cache, float* part_acc, float* part_max, float* part_sum, void* out,
                                    cudaStream_t stream) {
  if (args.splits < 1) return cudaErrorInvalidValue;
  switch (type) {
    case ElementType::kFloat32: return launch_typed<float>(args, q, k_cache, v_cache, part_acc, part_max, part_sum, out, stream);
    case ElementType::kFloat16: return launch_typed<__half>(args, q, k_cache, v_cache, part_acc, part_max, part_sum, out, stream);
    case ElementType::kBFloat16:
      return launch_typed<__nv_bfloat16>(args, q, k_cache, v_cache, part_acc, part_max, part_sum, out, stream);
  }
  return cudaErrorInvalidValue;
}

}  // namespace t2::model::cuda
