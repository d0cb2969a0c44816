// t2::model's fused decoder-layer steps against the eager ATen math they
// replace: the CPU loops in float32 and, where there is a GPU, the CUDA
// kernels in float32 and bfloat16.
#include <vector>

#include <ATen/ATen.h>
#include <c10/core/InferenceMode.h>
#include <gtest/gtest.h>

#include "t2/common/errors.hpp"
#include "t2/model/fused_ops.hpp"

namespace {

struct Case {
  at::Device device;
  at::ScalarType dtype;
  double tolerance;
};

std::vector<Case> cases() {
  std::vector<Case> all = {{at::kCPU, at::kFloat, 1e-5}};
  if (at::hasCUDA() && t2::model::fused_ops_available(at::kCUDA, at::kFloat)) {  // a build with t2's CUDA kernels
    all.push_back({at::kCUDA, at::kFloat, 1e-5});
    all.push_back({at::kCUDA, at::kBFloat16, 2e-2});
  }
  return all;
}

at::Tensor rotate_half(const at::Tensor& x) {
  const int64_t half = x.size(-1) / 2;
  return at::cat({-x.narrow(-1, half, half), x.narrow(-1, 0, half)}, -1);
}

double max_error(const at::Tensor& got, const at::Tensor& expected) {
  return (got.to(at::kFloat) - expected.to(at::kFloat)).abs().max().item<double>() /
         std::max(1.0, expected.abs().max().item<double>());
}

TEST(FusedOps, AddRmsNormAddsInPlaceAndNormalisesLikeAtRmsNorm) {
  c10::InferenceMode guard;
  for (const Case& c : cases()) {
    at::manual_seed(1);
    const auto options = at::TensorOptions().device(c.device).dtype(c.dtype);
    at::Tensor hidden = at::randn({3, 96}, options);
    const at::Tensor delta = at::randn({3, 96}, options), weight = at::randn({96}, options);
    const at::Tensor sum = (hidden.to(at::kFloat) + delta.to(at::kFloat));
    const at::Tensor expected = at::rms_norm(sum, {96}, weight.to(at::kFloat), 1e-5);
    ASSERT_TRUE(t2::model::fused_ops_available(c.device, c.dtype));
    const at::Tensor out = t2::model::add_rms_norm(hidden, delta, weight, 1e-5);
    EXPECT_LT(max_error(hidden, sum), c.tolerance) << c.device << " " << c10::toString(c.dtype);
    EXPECT_LT(max_error(out, expected), c.tolerance) << c.device << " " << c10::toString(c.dtype);
    const at::Tensor alone = t2::model::add_rms_norm(hidden, at::Tensor(), weight, 1e-5);  // no residual
    EXPECT_LT(max_error(alone, expected), c.tolerance);
  }
}

TEST(FusedOps, RopeRotatesQueriesAndWritesKeysAndValuesIntoTheirCacheRows) {
  c10::InferenceMode guard;
  const int64_t N = 3, H = 4, KV = 2, D = 16, slots = 2, capacity = 8, positions_total = 32;
  for (const Case& c : cases()) {
    at::manual_seed(2);
    const auto options = at::TensorOptions().device(c.device).dtype(c.dtype);
    const auto f32 = options.dtype(at::kFloat);
    const at::Tensor qkv = at::randn({N, (H + 2 * KV) * D}, options);  // one stacked projection output
    const at::Tensor q = qkv.narrow(1, 0, H * D), k = qkv.narrow(1, H * D, KV * D), v = qkv.narrow(1, (H + KV) * D, KV * D);
    const at::Tensor angles = at::rand({positions_total, D / 2}, f32) * 6.0;
    const at::Tensor cos = at::cat({angles.cos(), angles.cos()}, 1), sin = at::cat({angles.sin(), angles.sin()}, 1);
    const auto long_options = at::TensorOptions().device(c.device).dtype(at::kLong);
    const at::Tensor positions = at::tensor(std::vector<int64_t>{0, 7, 31}, long_options);
    const at::Tensor write_rows = at::tensor(std::vector<int64_t>{9, 0, 14}, long_options);  // slot * capacity + position
    at::Tensor cache_k = at::zeros({slots, capacity, KV, D}, options), cache_v = at::zeros({slots, capacity, KV, D}, options);
    const at::Tensor rotated_q = t2::model::rope_and_cache_write(q, k, v, cos, sin, positions, write_rows, cache_k, cache_v);

    const at::Tensor c_rows = cos.index_select(0, positions).unsqueeze(1), s_rows = sin.index_select(0, positions).unsqueeze(1);
    const auto rope = [&](const at::Tensor& x, int64_t heads) {
      const at::Tensor grid = x.to(at::kFloat).reshape({N, heads, D});
      return grid * c_rows + rotate_half(grid) * s_rows;
    };
    EXPECT_LT(max_error(rotated_q, rope(q, H)), c.tolerance) << c.device << " " << c10::toString(c.dtype);
    const at::Tensor flat_k = cache_k.view({slots * capacity, KV, D}), flat_v = cache_v.view({slots * capacity, KV, D});
    EXPECT_LT(max_error(flat_k.index_select(0, write_rows), rope(k, KV)), c.tolerance);
    EXPECT_TRUE(flat_v.index_select(0, write_rows).equal(v.reshape({N, KV, D})));
    EXPECT_EQ(cache_k.ne(0).any(-1).any(-1).sum().item<int64_t>(), N);  // no other row written
    EXPECT_EQ(cache_v.ne(0).any(-1).any(-1).sum().item<int64_t>(), N);
  }
}

TEST(FusedOps, SiluMulReadsColumnBlocksOfOneOutput) {
  c10::InferenceMode guard;
  for (const Case& c : cases()) {
    at::manual_seed(3);
    const at::Tensor gate_up = at::randn({5, 2 * 40}, at::TensorOptions().device(c.device).dtype(c.dtype));
    const at::Tensor gate = gate_up.narrow(1, 0, 40), up = gate_up.narrow(1, 40, 40);
    const at::Tensor expected = at::silu(gate.to(at::kFloat)) * up.to(at::kFloat);
    EXPECT_LT(max_error(t2::model::silu_mul(gate, up), expected), c.tolerance) << c.device << " " << c10::toString(c.dtype);
  }
}

TEST(FusedOps, TheCpuLoopsTakeFloat32Only) {
  c10::InferenceMode guard;
  EXPECT_FALSE(t2::model::fused_ops_available(at::kCPU, at::kBFloat16));
  at::Tensor hidden = at::zeros({1, 8}, at::kBFloat16);
  EXPECT_THROW(t2::model::add_rms_norm(hidden, at::Tensor(), at::ones({8}, at::kBFloat16), 1e-5), t2::Error);
  EXPECT_THROW(t2::model::silu_mul(hidden, hidden), t2::Error);
}

}  // namespace
