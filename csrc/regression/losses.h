// Elementwise losses of the regression family, shared by the CPU and CUDA kernels.
// Each functor maps an input x, a target y and the element's pos_weight p (1 when
// the op has none) to the loss and to d loss / d x:
//   acc_t loss(acc_t x, acc_t y, acc_t p) const;
//   acc_t grad(acc_t x, acc_t y, acc_t p) const;
// and declares
//   kPosWeight:   the op takes a pos_weight operand;
//   kVectorMath:  the CPU kernel runs it in code built per instruction set (it uses
//                 exp or log, whose polynomials are only fast when vectorised wide);
//   kUnitInterval: input and target must lie in [0, 1] (else the op fails, as torch's
//                 binary_cross_entropy does; NaN fails too).
// d loss / d target is the Python layer's business (-grad for a difference loss).
#pragma once

#include <cstdint>

#include <c10/macros/Macros.h>

#include "../common/logmath.h"

namespace ssl_fast {

// True for v in [0, 1]; false for NaN.
template <typename acc_t>
C10_HOST_DEVICE bool in_unit_interval(acc_t v) {
  return v >= acc_t(0) && v <= acc_t(1);
}

// Matches torch's at::Reduction values so the schema's int can be passed through.
enum class Reduction : int64_t { None = 0, Mean = 1, Sum = 2 };

// What a loss of d = x - y alone declares.
struct DifferenceLoss {
  static constexpr bool kPosWeight = false;
  static constexpr bool kVectorMath = false;
  static constexpr bool kUnitInterval = false;
};

// smooth-L1 for beta > 0: 0.5 d^2 / beta inside |d| < beta, |d| - 0.5 beta outside.
template <typename acc_t>
struct SmoothL1 : DifferenceLoss {
  acc_t beta, half_inv_beta, inv_beta;
  explicit SmoothL1(double b) : beta(b), half_inv_beta(0.5 / b), inv_beta(1.0 / b) {}
  // Branch-free so that it vectorises: with m = min(|d|, beta) the loss is
  // 0.5 m^2 / beta + (|d| - m). NaN survives min(), which returns its first argument.
  C10_HOST_DEVICE acc_t loss(acc_t x, acc_t y, acc_t) const {
    const acc_t d = x - y;
    const acc_t a = d < acc_t(0) ? -d : d;
    const acc_t m = beta < a ? beta : a;
    return half_inv_beta * m * m + (a - m);
  }
  // Clamping d / beta to [-1, 1] is torch's gradient; NaN passes through both tests.
  C10_HOST_DEVICE acc_t grad(acc_t x, acc_t y, acc_t) const {
    const acc_t g = (x - y) * inv_beta;
    const acc_t lo = g < acc_t(-1) ? acc_t(-1) : g;
    return acc_t(1) < lo ? acc_t(1) : lo;
  }
};

// beta == 0 is L1; as in torch, the subgradient is 0 at d == 0 and at d == NaN.
template <typename acc_t>
struct L1 : DifferenceLoss {
  C10_HOST_DEVICE acc_t loss(acc_t x, acc_t y, acc_t) const {
    const acc_t d = x - y;
    return d < acc_t(0) ? -d : d;
  }
  C10_HOST_DEVICE acc_t grad(acc_t x, acc_t y, acc_t) const {
    const acc_t d = x - y;
    return d > acc_t(0) ? acc_t(1) : (d < acc_t(0) ? acc_t(-1) : acc_t(0));
  }
};

template <typename acc_t>
struct Squared : DifferenceLoss {
  C10_HOST_DEVICE acc_t loss(acc_t x, acc_t y, acc_t) const {
    const acc_t d = x - y;
    return d * d;
  }
  C10_HOST_DEVICE acc_t grad(acc_t x, acc_t y, acc_t) const { return acc_t(2) * (x - y); }
};

// Binary cross-entropy of a probability x in [0, 1], as torch computes it:
// loss = (y - 1) max(log(1 - x), -100) - y max(log x, -100),
// d loss / d x = (x - y) / max((1 - x) x, float(1e-12)).
template <typename acc_t>
struct BinaryCrossEntropy {
  static constexpr bool kPosWeight = false;
  static constexpr bool kVectorMath = true;
  static constexpr bool kUnitInterval = true;
  C10_HOST_DEVICE acc_t loss(acc_t x, acc_t y, acc_t) const {
    const acc_t lx = logmath::log_unit(x), l1mx = logmath::log1m_unit(x);
    const acc_t lo = acc_t(-100);
    return (y - acc_t(1)) * (l1mx < lo ? lo : l1mx) - y * (lx < lo ? lo : lx);
  }
  C10_HOST_DEVICE acc_t grad(acc_t x, acc_t y, acc_t) const {
    const acc_t v = (acc_t(1) - x) * x;
    const acc_t eps = acc_t(1e-12f);  // torch's EPSILON is a float, also for double inputs
    return (x - y) / (v < eps ? eps : v);
  }
};

// Binary cross-entropy of a logit x with pos_weight p (1 when absent). torch writes it
// (1 - y) x - lw log_sigmoid(x) with lw = 1 + (p - 1) y; with e = exp(-|x|) and
// log_sigmoid(x) = min(x, 0) - log1p(e) that is
//   x >= 0:  (1 - y) x + lw log1p(e)
//   x <  0:  -p y x   + lw log1p(e)
// with no cancellation of large terms, so a loss near 0 keeps its relative accuracy.
// d loss / d x = lw sigmoid(x) - p y.
template <typename acc_t>
struct BinaryCrossEntropyWithLogits {
  static constexpr bool kPosWeight = true;
  static constexpr bool kVectorMath = true;
  static constexpr bool kUnitInterval = false;
  C10_HOST_DEVICE acc_t loss(acc_t x, acc_t y, acc_t p) const {
    const acc_t e = logmath::exp_neg_abs(x);
    const acc_t lw = acc_t(1) + (p - acc_t(1)) * y;
    const acc_t soft = lw * logmath::log1p_unit(e);
    // At x = -inf torch's form is inf - inf = NaN; x - x (NaN there, else 0) keeps that.
    return x < acc_t(0) ? (-(p * y) * x + soft) + (x - x) : (acc_t(1) - y) * x + soft;
  }
  C10_HOST_DEVICE acc_t grad(acc_t x, acc_t y, acc_t p) const {
    const acc_t e = logmath::exp_neg_abs(x);
    const acc_t lw = acc_t(1) + (p - acc_t(1)) * y;
    const acc_t inv = acc_t(1) / (acc_t(1) + e);
    const acc_t sigmoid = x < acc_t(0) ? e * inv : inv;
    return lw * sigmoid - p * y;
  }
};

}  // namespace ssl_fast
