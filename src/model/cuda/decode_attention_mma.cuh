// The tensor-core partial kernel of decode attention (half and bfloat16,
// head_dim a multiple of 64): the same split as the CUDA-core kernel in
// decode_attention.cu and the same partials for its merge, but both products
// of a chunk of 16 keys are mma.sync m16n8k16 instructions, so a key costs a
// few instructions instead of ~100 FMAs, conversions and shuffles per lane.
//   scores^T: S[head][key]   = Q[head][dim] . K[key][dim]   (M = heads, N = keys, K = dims)
//   values:   O^T[dim][head] = V^T[dim][key] . P^T[key][head] (M = dims, N = heads, K = keys)
// The cache holds keys by row, dims contiguous, so K is already the "col"
// operand the score mma wants and needs no shuffling; each lane loads 16
// contiguous bytes of a row (mma.cuh: both operands permuted alike). V^T needs pairs of keys per register:
// one byte permute per register builds them from two keys' 16-byte loads.
// The score mma's output fragment (head = lane group, keys by lane in group)
// is exactly the P^T fragment of the value mma, so P never leaves registers.
#pragma once

#include <cstdint>

#include "decode_attention_split.cuh"
#include "mma.cuh"

namespace t2::model::cuda {

constexpr int kMmaKeys = 16;  // keys a warp takes per step: one k-step of the value mma, two n-tiles of the score mma

// grid (splits, kv_heads, rows); block kThreads. Lane (group r, thread t):
// holds query head r (heads past G and the mma's rows 8..15 are zeros); in a
// step at key0, loads K rows key0 + r and key0 + 8 + r (16 bytes at 8t of
// each 32 dims) and V rows key0 + {2t, 2t+1, 8+2t, 9+2t} (16 bytes at 8r of
// each 64 dims). The warps of a block take interleaved steps, each with its
// own running max, and merge through shared memory at the end.
template <typename T, int kHeadDim>
__global__ void __launch_bounds__(kThreads, kHeadDim <= 64 ? 4 : kHeadDim <= 128 ? 3 : 2)
    mma_partial_kernel(DecodeAttentionArgs a, const T* __restrict__ q, const T* __restrict__ k_cache,
                       const T* __restrict__ v_cache, float* __restrict__ part_acc, float* __restrict__ part_max,
                       float* __restrict__ part_sum) {
  constexpr int kScoreBlocks = kHeadDim / 32;  // each two k-steps of the score mma
  constexpr int kValueBlocks = kHeadDim / 64;  // each four m-tiles of the value mma
  constexpr int kValueTiles = kValueBlocks * 4;
  __shared__ float warp_max[kWarps][kMaxGroup], warp_sum[kWarps][kMaxGroup];
  __shared__ float warp_acc[kWarps][kMaxGroup][kHeadDim];

  const int split = blockIdx.x, kv = blockIdx.y, n = blockIdx.z;
  const KeyRange range = Splits(visible_keys(a.lengths, n, a.window), a.splits)[split];
  if (range.begin >= range.end) return;  // the merge reads only splits that hold keys
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int r = lane / 4, t = lane % 4;
  const int G = a.group;
  const int64_t row_stride = static_cast<int64_t>(a.kv_heads) * kHeadDim;
  const int64_t slot_base = a.slots[n] * a.capacity * row_stride + static_cast<int64_t>(kv) * kHeadDim;
  const T* k_rows = k_cache + slot_base;
  const T* v_rows = v_cache + slot_base;
  const auto load = [&](const T* rows, int64_t key, int offset) {
    return key < range.end ? __ldg(reinterpret_cast<const uint4*>(rows + key * row_stride + offset)) : make_uint4(0, 0, 0, 0);
  };

  uint4 query[kScoreBlocks];
  const T* q_row = q + (static_cast<int64_t>(n) * a.heads + kv * G + r) * kHeadDim;
#pragma unroll
  for (int j = 0; j < kScoreBlocks; ++j) {
    query[j] = r < G ? __ldg(reinterpret_cast<const uint4*>(q_row + 32 * j + 8 * t)) : make_uint4(0, 0, 0, 0);
  }
  const float qscale = a.scale * kLog2e;
  float row_max = -INFINITY;  // head r's, over the keys this warp has seen
  float row_sum = 0.f;        // this lane's share of head r's sum
  float acc[kValueTiles][4] = {};  // O^T tile (b, j): dims 64b + 8r + 2j (+1 in [2], [3]), heads 2t, 2t + 1

  for (int64_t key0 = range.begin + warp * kMmaKeys; key0 < range.end; key0 += kWarps * kMmaKeys) {
    uint4 keys[2][kScoreBlocks], values[4][kValueBlocks];
#pragma unroll
    for (int nt = 0; nt < 2; ++nt) {
#pragma unroll
      for (int j = 0; j < kScoreBlocks; ++j) keys[nt][j] = load(k_rows, key0 + 8 * nt + r, 32 * j + 8 * t);
    }
#pragma unroll
    for (int i = 0; i < 4; ++i) {
#pragma unroll
      for (int b = 0; b < kValueBlocks; ++b) values[i][b] = load(v_rows, key0 + 8 * (i / 2) + 2 * t + i % 2, 64 * b + 8 * r);
    }

    // Scores of head r for keys key0 + 8nt + 2t + e: score[nt][e] (rows 8..15 of the tile are padding).
    float score[2][4] = {};
#pragma unroll
    for (int nt = 0; nt < 2; ++nt) {
#pragma unroll
      for (int j = 0; j < kScoreBlocks; ++j) {
        mma_16x8x16<T>(score[nt], query[j].x, 0, query[j].y, 0, keys[nt][j].x, keys[nt][j].y);
        mma_16x8x16<T>(score[nt], query[j].z, 0, query[j].w, 0, keys[nt][j].z, keys[nt][j].w);
      }
    }
    float step_max = -INFINITY;
#pragma unroll
    for (int nt = 0; nt < 2; ++nt) {
#pragma unroll
      for (int e = 0; e < 2; ++e) {
        const bool live = key0 + 8 * nt + 2 * t + e < range.end;
        score[nt][e] = live ? score[nt][e] * qscale : -INFINITY;
        step_max = fmaxf(step_max, score[nt][e]);
      }
    }
    step_max = fmaxf(step_max, __shfl_xor_sync(0xffffffffu, step_max, 1));
    step_max = fmaxf(step_max, __shfl_xor_sync(0xffffffffu, step_max, 2));
    const float new_max = fmaxf(row_max, step_max);  // finite: the step's first key is live
    const float correction = exp2f(row_max - new_max);
    row_max = new_max;
    float p[2][2];
    float step_sum = 0.f;
#pragma unroll
    for (int nt = 0; nt < 2; ++nt) {
#pragma unroll
      for (int e = 0; e < 2; ++e) step_sum += p[nt][e] = exp2f(score[nt][e] - new_max);
    }
    row_sum = row_sum * correction + step_sum;

    // O^T's columns are heads 2t and 2t + 1: their corrections come from lane groups 2t and 2t + 1.
    const float correction_lo = __shfl_sync(0xffffffffu, correction, 8 * t);
    const float correction_hi = __shfl_sync(0xffffffffu, correction, 8 * t + 4);
    const uint32_t probs_lo = pack2<T>(p[0][0], p[0][1]), probs_hi = pack2<T>(p[1][0], p[1][1]);
#pragma unroll
    for (int b = 0; b < kValueBlocks; ++b) {
#pragma unroll
      for (int j = 0; j < 4; ++j) {
        float (&tile)[4] = acc[b * 4 + j];
        tile[0] *= correction_lo, tile[1] *= correction_hi, tile[2] *= correction_lo, tile[3] *= correction_hi;
        const uint32_t v0 = word(values[0][b], j), v1 = word(values[1][b], j);
        const uint32_t v2 = word(values[2][b], j), v3 = word(values[3][b], j);
        mma_16x8x16<T>(tile, low_halves(v0, v1), high_halves(v0, v1), low_halves(v2, v3), high_halves(v2, v3), probs_lo,
                       probs_hi);
      }
    }
  }

  row_sum += __shfl_xor_sync(0xffffffffu, row_sum, 1);
  row_sum += __shfl_xor_sync(0xffffffffu, row_sum, 2);
  if (t == 0 && r < G) warp_max[warp][r] = row_max, warp_sum[warp][r] = row_sum;
#pragma unroll
  for (int b = 0; b < kValueBlocks; ++b) {
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      const int dim = 64 * b + 8 * r + 2 * j;
      const float(&tile)[4] = acc[b * 4 + j];
      if (2 * t < G) warp_acc[warp][2 * t][dim] = tile[0], warp_acc[warp][2 * t][dim + 1] = tile[2];
      if (2 * t + 1 < G) warp_acc[warp][2 * t + 1][dim] = tile[1], warp_acc[warp][2 * t + 1][dim + 1] = tile[3];
    }
  }
  __syncthreads();

  // The block's partial: the warps' sums rescaled to their common max (a warp without keys has max -inf, weight 0).
  const Partials out{part_acc, part_max, part_sum};
  for (int i = threadIdx.x; i < G * kHeadDim; i += kThreads) {
    const int g = i / kHeadDim, d = i % kHeadDim;
    float best = -INFINITY;
#pragma unroll
    for (int w = 0; w < kWarps; ++w) best = fmaxf(best, warp_max[w][g]);
    float value = 0.f, sum = 0.f;
#pragma unroll
    for (int w = 0; w < kWarps; ++w) {
      const float weight = exp2f(warp_max[w][g] - best);
      value += warp_acc[w][g][d] * weight;
      sum += warp_sum[w][g] * weight;
    }
    out.store(a, n, kv * G + g, split, d, value, best, sum);
  }
}

}  // namespace t2::model::cuda
