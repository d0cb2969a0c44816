// SVF weight composition, as the reference implementation's compose_new_params:
//   W' = U diag(s * z) Vh * (sum(s) / sum(s * z))
// The last factor keeps the nuclear norm; z = 1 gives W back.
#pragma once

#include <ATen/ATen.h>

namespace t2::svf {

// s * z * (sum(s) / sum(s * z)) in float32 (float64 stays float64): the
// singular values an adapted matrix uses. Differentiable in z.
at::Tensor scaled_singular_values(const at::Tensor& s, const at::Tensor& z);

// U [m, r], s [r], Vh [r, n], z [r]. The singular values are scaled in float32;
// the product is computed in U's dtype (GEMMs accumulate in float32) and
// returned in it. Differentiable in z.
at::Tensor compose(const at::Tensor& U, const at::Tensor& s, const at::Tensor& Vh, const at::Tensor& z);

}  // namespace t2::svf
