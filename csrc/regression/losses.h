// Elementwise regression losses shared by the CPU and CUDA kernels.
// Each functor maps the difference d = input - target to the loss and to
// d loss / d input; d loss / d target is its negation.
#pragma once

#include <c10/macros/Macros.h>

namespace ssl_fast {

// Matches torch's at::Reduction values so the schema's int can be passed through.
enum class Reduction : int64_t { None = 0, Mean = 1, Sum = 2 };

// smooth-L1 for beta > 0: 0.5 d^2 / beta inside |d| < beta, |d| - 0.5 beta outside.
template <typename acc_t>
struct SmoothL1 {
  acc_t beta, half_inv_beta, inv_beta;
  explicit SmoothL1(double b) : beta(b), half_inv_beta(0.5 / b), inv_beta(1.0 / b) {}
  // Branch-free so that it vectorises: with m = min(|d|, beta) the loss is
  // 0.5 m^2 / beta + (|d| - m). NaN survives min(), which returns its first argument.
  C10_HOST_DEVICE acc_t loss(acc_t d) const {
    const acc_t a = d < acc_t(0) ? -d : d;
    const acc_t m = beta < a ? beta : a;
    return half_inv_beta * m * m + (a - m);
  }
  // Clamping d / beta to [-1, 1] is torch's gradient; NaN passes through both tests.
  C10_HOST_DEVICE acc_t grad(acc_t d) const {
    const acc_t g = d * inv_beta;
    const acc_t lo = g < acc_t(-1) ? acc_t(-1) : g;
    return acc_t(1) < lo ? acc_t(1) : lo;
  }
};

// beta == 0 is L1; as in torch, the subgradient is 0 at d == 0 and at d == NaN.
template <typename acc_t>
struct L1 {
  C10_HOST_DEVICE acc_t loss(acc_t d) const { return d < acc_t(0) ? -d : d; }
  C10_HOST_DEVICE acc_t grad(acc_t d) const {
    return d > acc_t(0) ? acc_t(1) : (d < acc_t(0) ? acc_t(-1) : acc_t(0));
  }
};

template <typename acc_t>
struct Squared {
  C10_HOST_DEVICE acc_t loss(acc_t d) const { return d * d; }
  C10_HOST_DEVICE acc_t grad(acc_t d) const { return acc_t(2) * d; }
};

}  // namespace ssl_fast
