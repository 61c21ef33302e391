// The contrastive operators, written once for every backend: the checks of an op call
// and the op entry points.
//
// The op family computes, for unit rows qn = q / max(|q|, eps) and kn = k / max(|k|, eps)
// and logits s_ij = scale * qn_i . kn_j, the log-sum-exp of every row (and, on request,
// of every column) over all pairs except the excluded ones. Without k the keys are the
// queries themselves (NT-Xent) and the diagonal is excluded.
//
// A backend supplies its passes as
//   struct Passes {
//     // The rows of x [n, dim] over their norms (at least kNormEps), in the type acc.
//     static at::Tensor normalized(const at::Tensor& x, at::ScalarType acc);
//     // The row lse of the call and, when col is not empty, the column lse.
//     static void lse(const ContrastiveCall& c, const at::Tensor& qn, const at::Tensor& kn,
//                     at::Tensor& row, at::Tensor& col);
//     // The gradients of qn, kn and scale that g.output_mask asks for (kn's only with k;
//     // the others undefined, though qn's may be returned anyway); scale's is a 0-dim
//     // tensor with the options `scale`.
//     static std::tuple<at::Tensor, at::Tensor, at::Tensor> lse_backward(
//         const ContrastiveCall& c, const ContrastiveGrads& g, const at::TensorOptions& scale);
//     // dn, plus grad_n when defined, as the gradient of x (xn: its unit rows), in x's dtype.
//     static at::Tensor raw_gradient(
//         at::Tensor dn, const at::Tensor& grad_n, const at::Tensor& x, const at::Tensor& xn);
//   };
// and registers ContrastiveOps<Passes>::impl(m) in its TORCH_LIBRARY_IMPL block. The ops
// run under a guard of q's device, so that a backend launches its kernels there.
#pragma once

#include <ATen/ATen.h>
#include <c10/core/DeviceGuard.h>
#include <torch/library.h>

#include <array>
#include <optional>
#include <tuple>

#include "../common/dtypes.h"

namespace ssl_fast {

// F.normalize's eps: the norms are computed in the accumulation type, so it is safe for
// half and bfloat16 inputs too.
constexpr double kNormEps = 1e-12;

// A validated call. k and exclude are undefined when absent; scale is read once.
struct ContrastiveCall {
  at::Tensor q, k, exclude;
  double scale;
  int64_t rows, cols, dim;
  at::ScalarType acc;  // float for half, bfloat16 and float; double for double
  bool self() const { return !k.defined(); }
};

// Checks shapes, dtypes, devices and values with messages naming `op`; makes q and k
// contiguous.
ContrastiveCall check_contrastive_call(
    const char* op, const at::Tensor& q, const std::optional<at::Tensor>& k, const at::Tensor& scale,
    const std::optional<at::Tensor>& exclude);

// The saved tensors and incoming gradients of a backward call, checked against the call.
struct ContrastiveGrads {
  at::Tensor grad_qn, grad_kn, grad_row, grad_col;  // undefined when absent
  at::Tensor qn, kn, row_lse, col_lse;
  std::array<bool, 3> output_mask;  // d q, d k, d scale
};

// The backward's inputs made contiguous and checked. The gradient of an empty output (kn
// without k, col_lse when not asked for) arrives as nothing or, from a traced graph, as an
// empty tensor: both become an undefined tensor.
ContrastiveGrads contrastive_grads(
    const char* op, const ContrastiveCall& c, const std::optional<at::Tensor>& grad_qn,
    const std::optional<at::Tensor>& grad_kn, const std::optional<at::Tensor>& grad_row,
    const std::optional<at::Tensor>& grad_col, const at::Tensor& qn, const at::Tensor& kn,
    const at::Tensor& row_lse, const at::Tensor& col_lse, std::array<bool, 3> output_mask);

template <class Passes>
struct ContrastiveOps {
  static std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> contrastive_lse(
      const at::Tensor& q, const std::optional<at::Tensor>& k, const at::Tensor& scale,
      const std::optional<at::Tensor>& exclude, bool col_lse) {
    const ContrastiveCall c = check_contrastive_call("contrastive_lse", q, k, scale, exclude);
    const c10::DeviceGuard guard(c.q.device());
    const auto acc_opts = c.q.options().dtype(c.acc);
    at::Tensor qn = Passes::normalized(c.q, c.acc);
    at::Tensor kn = c.self() ? at::empty({0}, acc_opts) : Passes::normalized(c.k, c.acc);
    at::Tensor row = at::empty({c.rows}, acc_opts);
    at::Tensor col = at::empty({!c.self() && col_lse ? c.cols : 0}, acc_opts);
    Passes::lse(c, qn, kn, row, col);
    return {qn, kn, row, col};
  }

  static std::tuple<at::Tensor, at::Tensor, at::Tensor> contrastive_lse_backward(
      const std::optional<at::Tensor>& grad_qn, const std::optional<at::Tensor>& grad_kn,
      const std::optional<at::Tensor>& grad_row, const std::optional<at::Tensor>& grad_col, const at::Tensor& q,
      const std::optional<at::Tensor>& k, const at::Tensor& qn, const at::Tensor& kn, const at::Tensor& row_lse,
      const at::Tensor& col_lse, const at::Tensor& scale, const std::optional<at::Tensor>& exclude,
      std::array<bool, 3> output_mask) {
    constexpr const char* op = "contrastive_lse_backward";
    const ContrastiveCall c = check_contrastive_call(op, q, k, scale, exclude);
    const ContrastiveGrads g = contrastive_grads(
        op, c, grad_qn, grad_kn, grad_row, grad_col, qn, kn, row_lse, col_lse, output_mask);
    const c10::DeviceGuard guard(c.q.device());
    const auto [dqn, dkn, dscale] = Passes::lse_backward(c, g, scale.options());
    auto empty = [&] { return at::empty({0}, q.options()); };
    return {
        output_mask[0] ? Passes::raw_gradient(dqn, g.grad_qn, c.q, g.qn) : empty(),
        output_mask[1] && !c.self() ? Passes::raw_gradient(dkn, g.grad_kn, c.k, g.kn) : empty(),
        output_mask[2] ? dscale : empty()};
  }

  static void impl(torch::Library& m) {
    m.impl("contrastive_lse", &contrastive_lse);
    m.impl("contrastive_lse_backward", &contrastive_lse_backward);
  }
};

}  // namespace ssl_fast
