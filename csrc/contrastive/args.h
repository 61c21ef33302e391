// Host-side argument handling shared by the CPU and CUDA contrastive kernels.
//
// The op family computes, for unit rows qn = q / max(|q|, eps) and kn = k / max(|k|, eps)
// and logits s_ij = scale * qn_i . kn_j, the log-sum-exp of every row (and, on request,
// of every column) over all pairs except the excluded ones. Without k the keys are the
// queries themselves (NT-Xent) and the diagonal is excluded.
#pragma once

#include <ATen/ATen.h>

#include <array>
#include <optional>

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

}  // namespace ssl_fast
