#include "t2/train/cem.hpp"

#include <algorithm>
#include <cmath>
#include <numeric>
#include <random>

#include "t2/common/errors.hpp"
#include "t2/common/progress.hpp"

namespace t2::train {

CemResult cross_entropy_method(int64_t dimension, const std::vector<double>& initial_mean,
                               const std::function<CemScore(const std::vector<double>&)>& objective, const CemOptions& o,
                               const std::function<void(int64_t, const CemScore&)>& on_iteration) {
  if (dimension < 1 || static_cast<int64_t>(initial_mean.size()) != dimension) {
    throw InvalidArgument("experts", "CEM needs a mean per dimension");
  }
  if (o.population < 2 || !(o.elite_ratio > 0 && o.elite_ratio <= 1) || o.iters < 1 || !(o.min < o.max)) {
    throw InvalidArgument("population", "CEM needs population >= 2, elite ratio in (0, 1], iters >= 1 and min < max");
  }
  const auto elites = std::max<int64_t>(1, static_cast<int64_t>(std::round(o.elite_ratio * static_cast<double>(o.population))));
  std::mt19937_64 rng(o.seed);
  std::vector<double> mean = initial_mean;
  std::vector<double> stddev(static_cast<size_t>(dimension), o.init_std);
  CemResult result;
  bool have_best = false;
  ProgressBar progress("cem", o.iters);
  for (int64_t iter = 0; iter < o.iters; ++iter) {
    std::vector<std::vector<double>> population;
    std::vector<CemScore> scores;
    for (int64_t i = 0; i < o.population; ++i) {
      std::vector<double> x(static_cast<size_t>(dimension));
      for (int64_t d = 0; d < dimension; ++d) {
        std::normal_distribution<double> gaussian(mean[static_cast<size_t>(d)], stddev[static_cast<size_t>(d)]);
        x[static_cast<size_t>(d)] = std::clamp(gaussian(rng), o.min, o.max);
      }
      scores.push_back(objective(x));
      population.push_back(std::move(x));
      if (!have_best || result.best_score < scores.back()) {
        result.best_score = scores.back();
        result.best = population.back();
        have_best = true;
      }
    }
    std::vector<size_t> order(population.size());
    std::iota(order.begin(), order.end(), 0);
    std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) { return scores[b] < scores[a]; });
    for (int64_t d = 0; d < dimension; ++d) {
      double m = 0, v = 0;
      for (int64_t e = 0; e < elites; ++e) m += population[order[static_cast<size_t>(e)]][static_cast<size_t>(d)];
      m /= static_cast<double>(elites);
      for (int64_t e = 0; e < elites; ++e) v += std::pow(population[order[static_cast<size_t>(e)]][static_cast<size_t>(d)] - m, 2);
      mean[static_cast<size_t>(d)] = m;
      stddev[static_cast<size_t>(d)] = std::max(std::sqrt(v / static_cast<double>(elites)), 1e-3);
    }
    result.best_per_iteration.push_back(result.best_score);
    if (on_iteration) on_iteration(iter + 1, result.best_score);
    progress.update(iter + 1, "best accuracy " + std::to_string(result.best_score.accuracy));
  }
  progress.finish();
  return result;
}

}  // namespace t2::train
