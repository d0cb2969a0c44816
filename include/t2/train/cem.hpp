// Few-shot adaptation with the cross-entropy method: a Gaussian population of
// mixture-coefficient vectors, clamped to [min, max], is scored; the elite
// fraction sets the next mean and standard deviation; the best vector ever
// seen is kept. Scores compare lexicographically (accuracy, then the mean
// log-likelihood of the correct answers) so ties on few examples still rank.
#pragma once

#include <cstdint>
#include <functional>
#include <vector>

namespace t2::train {

struct CemOptions {
  int64_t population = 32;
  double elite_ratio = 0.2;
  int64_t iters = 10;
  double min = 0.0;
  double max = 1.0;
  double init_std = 0.3;
  uint64_t seed = 0;
};

struct CemScore {
  double accuracy = 0;
  double log_likelihood = 0;
  bool operator<(const CemScore& o) const {
    return accuracy != o.accuracy ? accuracy < o.accuracy : log_likelihood < o.log_likelihood;
  }
};

struct CemResult {
  std::vector<double> best;
  CemScore best_score;
  std::vector<CemScore> best_per_iteration;
};

// Maximises `objective` over vectors of `dimension`, starting from `initial_mean`.
// `on_iteration` (optional) hears the best score after each iteration.
CemResult cross_entropy_method(int64_t dimension, const std::vector<double>& initial_mean,
                               const std::function<CemScore(const std::vector<double>&)>& objective, const CemOptions& options,
                               const std::function<void(int64_t, const CemScore&)>& on_iteration = {});

}  // namespace t2::train
