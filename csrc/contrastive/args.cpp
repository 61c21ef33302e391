#include "args.h"

namespace ssl_fast {

namespace {

void check_embeddings(const char* op, const char* what, const at::Tensor& t) {
  TORCH_CHECK(
      t.dim() == 2, op, ": ", what, " must be a 2-D [rows, features] tensor, got shape ", t.sizes());
  TORCH_CHECK(
      is_supported_float(t.scalar_type()), op, ": ", what,
      " must be float16, bfloat16, float32 or float64, got ", t.scalar_type());
  TORCH_CHECK(t.size(0) > 0, op, ": ", what, " has no rows");
  TORCH_CHECK(t.size(1) > 0, op, ": ", what, " has no features (shape ", t.sizes(), ")");
}

}  // namespace

ContrastiveCall check_contrastive_call(
    const char* op, const at::Tensor& q, const std::optional<at::Tensor>& k, const at::Tensor& scale,
    const std::optional<at::Tensor>& exclude) {
  check_embeddings(op, "q", q);
  ContrastiveCall c;
  c.q = q.contiguous();
  c.rows = q.size(0);
  c.dim = q.size(1);
  c.cols = c.rows;
  c.acc = accumulate_type(q.scalar_type());
  if (k.has_value()) {
    check_embeddings(op, "k", *k);
    TORCH_CHECK(k->device() == q.device(), op, ": k is on ", k->device(), " but q is on ", q.device());
    TORCH_CHECK(
        k->scalar_type() == q.scalar_type(), op, ": k dtype ", k->scalar_type(), " differs from q dtype ",
        q.scalar_type());
    TORCH_CHECK(
        k->size(1) == c.dim, op, ": q has ", c.dim, " features but k has ", k->size(1));
    c.k = k->contiguous();
    c.cols = k->size(0);
  }
  TORCH_CHECK(
      scale.dim() == 0 && scale.is_floating_point(), op,
      ": scale must be a 0-dim floating-point tensor, got ", scale.scalar_type(), " of shape ",
      scale.sizes());
  TORCH_CHECK(
      scale.device() == q.device() || scale.device().is_cpu(), op, ": scale is on ", scale.device(),
      " but q is on ", q.device());
  c.scale = scale.item<double>();
  TORCH_CHECK(
      std::isfinite(c.scale) && c.scale > 0, op, ": scale (1 / temperature) must be positive and finite, got ",
      c.scale);
  if (exclude.has_value()) {
    TORCH_CHECK(!c.self(), op, ": exclude is implied (the diagonal) when k is absent");
    TORCH_CHECK(
        exclude->scalar_type() == at::kLong && exclude->dim() == 1 && exclude->size(0) == c.rows, op,
        ": exclude must be an int64 tensor of shape [", c.rows, "], got ", exclude->scalar_type(),
        " of shape ", exclude->sizes());
    TORCH_CHECK(
        exclude->device() == q.device(), op, ": exclude is on ", exclude->device(), " but q is on ",
        q.device());
    c.exclude = exclude->contiguous();
  }
  return c;
}

ContrastiveGrads contrastive_grads(
    const char* op, const ContrastiveCall& c, const std::optional<at::Tensor>& grad_qn,
    const std::optional<at::Tensor>& grad_kn, const std::optional<at::Tensor>& grad_row,
    const std::optional<at::Tensor>& grad_col, const at::Tensor& qn, const at::Tensor& kn,
    const at::Tensor& row_lse, const at::Tensor& col_lse, std::array<bool, 3> output_mask) {
  auto grad = [](const std::optional<at::Tensor>& t) {
    return t.has_value() && t->numel() > 0 ? t->contiguous() : at::Tensor();
  };
  const ContrastiveGrads g{
      grad(grad_qn), grad(grad_kn), grad(grad_row), grad(grad_col),
      qn.contiguous(), kn.contiguous(), row_lse.contiguous(), col_lse.contiguous(), output_mask};
  auto check = [&](const at::Tensor& t, const char* what, at::IntArrayRef shape) {
    if (!t.defined()) return;
    TORCH_CHECK(
        t.sizes() == shape && t.scalar_type() == c.acc && t.device() == c.q.device(), op, ": ", what,
        " must be ", c.acc, " of shape ", shape, " on ", c.q.device(), ", got ", t.scalar_type(),
        " of shape ", t.sizes(), " on ", t.device());
  };
  check(g.qn, "qn", {c.rows, c.dim});
  check(g.row_lse, "row_lse", {c.rows});
  check(g.grad_qn, "grad_qn", {c.rows, c.dim});
  check(g.grad_row, "grad_row_lse", {c.rows});
  if (!c.self()) {
    check(g.kn, "kn", {c.cols, c.dim});
    check(g.grad_kn, "grad_kn", {c.cols, c.dim});
    check(g.grad_col, "grad_col_lse", {c.cols});
    if (g.grad_col.defined()) check(g.col_lse, "col_lse", {c.cols});
  } else {
    TORCH_CHECK(
        !g.grad_kn.defined() && !g.grad_col.defined(), op,
        ": without k there is no kn or col_lse to receive a gradient");
  }
  return g;
}

}  // namespace ssl_fast
