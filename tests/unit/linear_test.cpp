// t2::model::linear: the GEMV kernel against float64 math, and
// the cases that must fall back to at::linear.
#include <ATen/ATen.h>
#include <c10/core/InferenceMode.h>
#include <gtest/gtest.h>

#include "t2/model/linear.hpp"

namespace {

TEST(Linear, FallsBackToAtLinearOffTheKernelsCases) {
  c10::InferenceMode guard;
  at::manual_seed(1);
  const at::Tensor x = at::randn({3, 16}), w = at::randn({5, 16}), b = at::randn({5});
  EXPECT_FALSE(t2::model::uses_gemv_kernel(x, w, b));  // the CPU
  EXPECT_TRUE(t2::model::linear(x, w, b).equal(at::linear(x, w, b)));
  EXPECT_TRUE(t2::model::linear(x, w).equal(at::linear(x, w)));
  if (!at::hasCUDA()) return;
  const auto bf16 = at::TensorOptions().device(at::kCUDA).dtype(at::kBFloat16);
  EXPECT_TRUE(t2::model::uses_gemv_kernel(at::zeros({1, 64}, bf16), at::zeros({8, 64}, bf16)));
  EXPECT_FALSE(t2::model::uses_gemv_kernel(at::zeros({2, 64}, bf16), at::zeros({8, 64}, bf16)));  // cuBLAS from 2 rows
  EXPECT_FALSE(t2::model::uses_gemv_kernel(at::zeros({1, 60}, bf16), at::zeros({8, 60}, bf16)));  // in % 8
  EXPECT_FALSE(t2::model::uses_gemv_kernel(at::zeros({1, 64}, bf16.dtype(at::kFloat)),
                                           at::zeros({8, 64}, bf16.dtype(at::kFloat))));  // float32: cuBLAS
  EXPECT_FALSE(t2::model::uses_gemv_kernel(at::zeros({1, 64}, bf16), at::zeros({64, 8}, bf16).t()));  // strided W
}

TEST(Linear, GemvKernelMatchesFloat64MathOnCuda) {
  if (!at::hasCUDA()) GTEST_SKIP() << "no CUDA device";
  c10::InferenceMode guard;
  at::manual_seed(2);
  struct Shape {
    int64_t out, in;
  };
  for (const auto dtype : {at::kBFloat16, at::kHalf}) {
    const auto options = at::TensorOptions().device(at::kCUDA).dtype(dtype);
    for (const Shape shape : {Shape{1000, 4096}, Shape{6, 8}, Shape{13, 200}, Shape{2048, 14336}}) {
      const at::Tensor w = at::randn({shape.out, shape.in}, options) * 0.02;
      const at::Tensor bias = at::randn({shape.out}, options);
      for (const int64_t offset : {0, 8, 3}) {  // x at 16-byte alignment, and off it (copied)
        const at::Tensor x = at::randn({shape.in + 8}, options).narrow(0, offset, shape.in).view({1, shape.in});
        const int64_t rows = 1;
        for (const bool with_bias : {false, true}) {
          const at::Tensor b = with_bias ? bias : at::Tensor();
          ASSERT_TRUE(t2::model::uses_gemv_kernel(x, w, b));
          const at::Tensor y = t2::model::linear(x, w, b);
          ASSERT_EQ(y.sizes(), (std::vector<int64_t>{rows, shape.out}));
          ASSERT_EQ(y.scalar_type(), dtype);
          at::Tensor expected = at::matmul(x.to(at::kDouble), w.to(at::kDouble).t());
          if (with_bias) expected = expected + b.to(at::kDouble);
          // One rounding of the float32 sum to the element type (2^-8 relative for bfloat16).
          const double scale = expected.abs().max().item<double>();
          EXPECT_LT((y.to(at::kDouble) - expected).abs().max().item<double>(), 8e-3 * scale)
              << c10::toString(dtype) << " " << shape.out << "x" << shape.in << " offset " << offset << " bias " << with_bias;
        }
      }
    }
  }
}

}  // namespace
