// Operator schemas of the ssl_fast namespace. Kernels live in cpu/ and cuda/;
// fake (meta) kernels and autograd are registered from Python (ssl_fast/ops/).
#include <torch/library.h>

TORCH_LIBRARY(ssl_fast, m) {
  // Regression losses. reduction follows at::Reduction (0 none, 1 mean, 2 sum).
  // weight, when given, broadcasts against the loss and scales each element
  // (the Python layer turns a position mask into it). With compute_grad and a
  // reducing reduction the forward also returns d loss / d input, so that a
  // backward with grad_output == 1 moves no bytes; otherwise it returns an
  // empty tensor.
  m.def(
      "smooth_l1_loss(Tensor input, Tensor target, float beta, int reduction, "
      "Tensor? weight, bool compute_grad) -> (Tensor, Tensor)");
  m.def(
      "smooth_l1_loss_backward(Tensor grad_output, Tensor input, Tensor target, "
      "float beta, int reduction, Tensor? weight) -> Tensor");
  m.def(
      "mse_loss(Tensor input, Tensor target, int reduction, Tensor? weight, "
      "bool compute_grad) -> (Tensor, Tensor)");
  m.def(
      "mse_loss_backward(Tensor grad_output, Tensor input, Tensor target, "
      "int reduction, Tensor? weight) -> Tensor");
}
