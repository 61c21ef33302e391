// The regression-loss operators, written once for every backend. A backend
// supplies its passes as
//   struct Passes {
//     template <template <typename> class LossT, typename... Args>
//     static std::tuple<at::Tensor, at::Tensor> forward(
//         const char* op, const RegressionCall& c, bool compute_grad, Args... loss_args);
//     template <template <typename> class LossT, typename... Args>
//     static at::Tensor backward(
//         const char* op, const at::Tensor& grad_output, const RegressionCall& c, Args... loss_args);
//   };
// and registers RegressionOps<Passes>::impl(m) in its TORCH_LIBRARY_IMPL block.
#pragma once

#include <torch/library.h>

#include "regression_args.h"

namespace ssl_fast {

template <class Passes>
struct RegressionOps {
  static std::tuple<at::Tensor, at::Tensor> smooth_l1_loss(
      const at::Tensor& input, const at::Tensor& target, double beta, int64_t reduction,
      const std::optional<at::Tensor>& weight, bool compute_grad) {
    constexpr const char* op = "ssl_fast::smooth_l1_loss";
    TORCH_CHECK(beta >= 0, op, ": beta must be >= 0, got ", beta);
    const auto c = check_regression_call(op, input, target, weight, reduction);
    return beta == 0 ? Passes::template forward<L1>(op, c, compute_grad)
                     : Passes::template forward<SmoothL1>(op, c, compute_grad, beta);
  }

  static at::Tensor smooth_l1_loss_backward(
      const at::Tensor& grad_output, const at::Tensor& input, const at::Tensor& target, double beta,
      int64_t reduction, const std::optional<at::Tensor>& weight) {
    constexpr const char* op = "ssl_fast::smooth_l1_loss_backward";
    TORCH_CHECK(beta >= 0, op, ": beta must be >= 0, got ", beta);
    const auto c = check_regression_call(op, input, target, weight, reduction);
    return beta == 0 ? Passes::template backward<L1>(op, grad_output, c)
                     : Passes::template backward<SmoothL1>(op, grad_output, c, beta);
  }

  static std::tuple<at::Tensor, at::Tensor> mse_loss(
      const at::Tensor& input, const at::Tensor& target, int64_t reduction,
      const std::optional<at::Tensor>& weight, bool compute_grad) {
    constexpr const char* op = "ssl_fast::mse_loss";
    const auto c = check_regression_call(op, input, target, weight, reduction);
    return Passes::template forward<Squared>(op, c, compute_grad);
  }

  static at::Tensor mse_loss_backward(
      const at::Tensor& grad_output, const at::Tensor& input, const at::Tensor& target,
      int64_t reduction, const std::optional<at::Tensor>& weight) {
    constexpr const char* op = "ssl_fast::mse_loss_backward";
    const auto c = check_regression_call(op, input, target, weight, reduction);
    return Passes::template backward<Squared>(op, grad_output, c);
  }

  static void impl(torch::Library& m) {
    m.impl("smooth_l1_loss", &smooth_l1_loss);
    m.impl("smooth_l1_loss_backward", &smooth_l1_loss_backward);
    m.impl("mse_loss", &mse_loss);
    m.impl("mse_loss_backward", &mse_loss_backward);
  }
};

}  // namespace ssl_fast
