// Greedy decoding's whole device half in one kernel: a block per row scans
// its logits once for the argmax, an online logsumexp and finiteness. As ATen
// ops the same takes about fifteen launches (argmax, gather, logsumexp's
// five, isfinite, all, casts, cat), each a few microseconds of host time in
// a decode step that lasts milliseconds.
#include "greedy_pick_kernel.hpp"

#include <cmath>

namespace t2::engine::cuda {
namespace {

constexpr int kThreads = 1024;

// What a thread, warp or block has seen: the best logit and its id, and
// max and sum(exp(x - max)) of the logits.
struct Scan {
  float best;
  int64_t best_id;  // -1: nothing seen
  float max, sum;
  bool finite;

  __device__ void add(float x, int64_t id) {
    finite = finite && isfinite(x);
    if (best_id < 0 || x > best) best = x, best_id = id;  // ids come in increasing order: the first of a tie stays
    if (x > max) {
      sum = sum * __expf(max - x) + 1.f;
      max = x;
    } else {
      sum += __expf(x - max);
    }
  }

  __device__ void merge(const Scan& o) {
    if (o.best_id >= 0 && (best_id < 0 || o.best > best || (o.best == best && o.best_id < best_id))) {
      best = o.best, best_id = o.best_id;
    }
    const float m = fmaxf(max, o.max);
    sum = (max == -INFINITY ? 0.f : sum * __expf(max - m)) + (o.max == -INFINITY ? 0.f : o.sum * __expf(o.max - m));
    max = m;
    finite = finite && o.finite;
  }
};

__device__ Scan shuffle_xor(const Scan& s, int offset) {
  Scan o;
  o.best = __shfl_xor_sync(0xffffffffu, s.best, offset);
  o.best_id = __shfl_xor_sync(0xffffffffu, s.best_id, offset);
  o.max = __shfl_xor_sync(0xffffffffu, s.max, offset);
  o.sum = __shfl_xor_sync(0xffffffffu, s.sum, offset);
  o.finite = __shfl_xor_sync(0xffffffffu, static_cast<int>(s.finite), offset) != 0;
  return o;
}

// grid: one block per row; block kThreads.
__global__ void __launch_bounds__(kThreads) greedy_pick_kernel(const float* __restrict__ logits, int64_t vocab,
                                                               int64_t row_stride, double* __restrict__ out) {
  __shared__ Scan warps[kThreads / 32];
  const float* row = logits + blockIdx.x * row_stride;
  Scan scan{-INFINITY, -1, -INFINITY, 0.f, true};
  for (int64_t i = threadIdx.x; i < vocab; i += kThreads) scan.add(row[i], i);
  for (int offset = 16; offset > 0; offset >>= 1) scan.merge(shuffle_xor(scan, offset));
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  if (lane == 0) warps[warp] = scan;
  __syncthreads();
  if (threadIdx.x != 0) return;
  for (int w = 1; w < kThreads / 32; ++w) scan.merge(warps[w]);
  double* row_out = out + blockIdx.x * 3;
  row_out[0] = static_cast<double>(scan.best_id);
  row_out[1] = static_cast<double>(scan.best - (scan.max + logf(scan.sum)));
  row_out[2] = scan.finite ? 1.0 : 0.0;
}

}  // namespace

cudaError_t launch_greedy_pick(const float* logits, int64_t rows, int64_t vocab, int64_t row_stride, double* out,
                               cudaStream_t stream) {
  if (rows < 1 || vocab < 1) return cudaErrorInvalidValue;
  greedy_pick_kernel<<<static_cast<unsigned>(rows), kThreads, 0, stream>>>(logits, vocab, row_stride, out);
  return cudaGetLastError();
}

}  // namespace t2::engine::cuda
