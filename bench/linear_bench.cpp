// t2::model::linear (its GEMV kernel at one row) against at::linear (cuBLAS)
// on the matrices of the Llama-3-8B shape, bf16, 1 to 16 rows: the effective
// weight bandwidth of each, timed over back-to-back launches; one JSON line per case.
//   t2_linear_bench [ITERATIONS]          (on a CUDA machine)
#include <chrono>
#include <iostream>
#include <string>
#include <vector>

#include <ATen/ATen.h>
#include <c10/core/InferenceMode.h>
#include <nlohmann/json.hpp>

#include "t2/model/linear.hpp"
#include "t2/model/weights.hpp"

namespace {

template <typename F>
double seconds_per_call(const t2::model::Placement& placement, int iterations, F&& call) {
  for (int i = 0; i < 10; ++i) call();
  placement.synchronize();
  const auto start = std::chrono::steady_clock::now();
  for (int i = 0; i < iterations; ++i) call();
  placement.synchronize();
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count() / iterations;
}

}  // namespace

int main(int argc, char** argv) {
  if (!at::hasCUDA()) {
    std::cerr << "t2_linear_bench needs a CUDA device\n";
    return 2;
  }
  const int iterations = argc > 1 ? std::stoi(argv[1]) : 200;
  c10::InferenceMode guard;
  const t2::model::Placement placement{at::Device(at::kCUDA, 0), at::kBFloat16};
  const auto options = at::TensorOptions().device(placement.device).dtype(placement.dtype);
  struct Matrix {
    std::string name;
    int64_t out, in;
  };
  const std::vector<Matrix> matrices = {{"qkv", 6144, 4096},   {"o", 4096, 4096},        {"gate_up", 28672, 4096},
                                        {"down", 4096, 14336}, {"k", 1024, 4096},        {"lm_head", 128256, 4096}};
  for (const Matrix& m : matrices) {
    const at::Tensor w = at::randn({m.out, m.in}, options);
    for (const int64_t rows : {1, 2, 4, 8, 16}) {
      const at::Tensor x = at::randn({rows, m.in}, options);
      const double t2_s = seconds_per_call(placement, iterations, [&] { t2::model::linear(x, w); });
      const double cublas_s = seconds_per_call(placement, iterations, [&] { at::linear(x, w); });
      const double bytes = static_cast<double>(w.nbytes());
      std::cout << nlohmann::json{{"matrix", m.name},
                                  {"out", m.out},
                                  {"in", m.in},
                                  {"rows", rows},
                                  {"t2_gemv", t2::model::uses_gemv_kernel(x, w)},
                                  {"t2_us", t2_s * 1e6},
                                  {"cublas_us", cublas_s * 1e6},
                                  {"t2_tb_per_s", bytes / t2_s / 1e12},
                                  {"cublas_tb_per_s", bytes / cublas_s / 1e12}}
                       .dump()
                << std::endl;
    }
  }
  return 0;
}
