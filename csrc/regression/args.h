// The regression-loss operators, written once for every backend: the checks of an op
// call and the op entry points. A backend supplies its passes as
//   struct Passes {
//     template <template <typename> class LossT, typename... Args>
//     static std::tuple<at::Tensor, at::Tensor> forward(
//         const RegressionCall& c, bool compute_grad, Args... loss_args);
//     template <template <typename> class LossT, typename... Args>
//     static at::Tensor backward(const at::Tensor& grad_output, const RegressionCall& c, Args... loss_args);
//   };
// and registers RegressionOps<Passes>::impl(m) in its TORCH_LIBRARY_IMPL block.
#pragma once

#include <ATen/ATen.h>
#include <ATen/TensorIterator.h>
#include <torch/library.h>

#include <optional>
#include <type_traits>
#include <vector>

#include "../common/dtypes.h"
#include "losses.h"

namespace ssl_fast {

// A validated call: loss shape, element count and operands (weight undefined when absent).
struct RegressionCall {
  at::Tensor input, target, weight;
  Reduction reduction;
  std::vector<int64_t> shape;
  int64_t numel;
  bool reduces() const { return reduction != Reduction::None; }
  // Scale of d loss / d input: 1/numel for a mean, 1 otherwise.
  double grad_scale() const {
    return reduction == Reduction::Mean ? 1.0 / static_cast<double>(numel) : 1.0;
  }
};

// Checks devices, dtypes, shapes and the reduction code, with messages naming `op`.
RegressionCall check_regression_call(
    const char* op, const at::Tensor& input, const at::Tensor& target,
    const std::optional<at::Tensor>& weight, int64_t reduction);

// An iterator over `outputs` (already allocated with the loss shape) and `inputs`,
// broadcasting inputs, keeping each operand's own dtype (the weight is in the
// accumulation type) and never allocating or resizing.
at::TensorIterator regression_iter(
    const std::vector<at::Tensor>& outputs, const std::vector<at::Tensor>& inputs);

// Checks the grad_output of a backward against its call: device and dtype of the
// input; 0-dim for a reducing reduction, else the loss shape.
void check_grad_output(const char* op, const at::Tensor& grad_output, const RegressionCall& c);

// The iterator inputs of a call: input, target and, when given, the weight.
inline std::vector<at::Tensor> inputs_of(const RegressionCall& c) {
  std::vector<at::Tensor> inputs{c.input, c.target};
  if (c.weight.defined()) inputs.push_back(c.weight);
  return inputs;
}

// Runs body(std::integral_constant<bool, weighted>) for the call's weight.
template <typename Body>
void with_weight(const RegressionCall& c, Body&& body) {
  c.weight.defined() ? body(std::true_type{}) : body(std::false_type{});
}

template <class Passes>
struct RegressionOps {
  static std::tuple<at::Tensor, at::Tensor> smooth_l1_loss(
      const at::Tensor& input, const at::Tensor& target, double beta, int64_t reduction,
      const std::optional<at::Tensor>& weight, bool compute_grad) {
    constexpr const char* op = "ssl_fast::smooth_l1_loss";
    TORCH_CHECK(beta >= 0, op, ": beta must be >= 0, got ", beta);
    const auto c = check_regression_call(op, input, target, weight, reduction);
    TORCH_CHECK(!compute_grad || c.reduces(), op, ": compute_grad needs reduction mean or sum");
    return beta == 0 ? Passes::template forward<L1>(c, compute_grad)
                     : Passes::template forward<SmoothL1>(c, compute_grad, beta);
  }

  static at::Tensor smooth_l1_loss_backward(
      const at::Tensor& grad_output, const at::Tensor& input, const at::Tensor& target, double beta,
      int64_t reduction, const std::optional<at::Tensor>& weight) {
    constexpr const char* op = "ssl_fast::smooth_l1_loss_backward";
    TORCH_CHECK(beta >= 0, op, ": beta must be >= 0, got ", beta);
    const auto c = check_regression_call(op, input, target, weight, reduction);
    check_grad_output(op, grad_output, c);
    return beta == 0 ? Passes::template backward<L1>(grad_output, c)
                     : Passes::template backward<SmoothL1>(grad_output, c, beta);
  }

  static std::tuple<at::Tensor, at::Tensor> mse_loss(
      const at::Tensor& input, const at::Tensor& target, int64_t reduction,
      const std::optional<at::Tensor>& weight, bool compute_grad) {
    constexpr const char* op = "ssl_fast::mse_loss";
    const auto c = check_regression_call(op, input, target, weight, reduction);
    TORCH_CHECK(!compute_grad || c.reduces(), op, ": compute_grad needs reduction mean or sum");
    return Passes::template forward<Squared>(c, compute_grad);
  }

  static at::Tensor mse_loss_backward(
      const at::Tensor& grad_output, const at::Tensor& input, const at::Tensor& target,
      int64_t reduction, const std::optional<at::Tensor>& weight) {
    constexpr const char* op = "ssl_fast::mse_loss_backward";
    const auto c = check_regression_call(op, input, target, weight, reduction);
    check_grad_output(op, grad_output, c);
    return Passes::template backward<Squared>(grad_output, c);
  }

  static void impl(torch::Library& m) {
    m.impl("smooth_l1_loss", &smooth_l1_loss);
    m.impl("smooth_l1_loss_backward", &smooth_l1_loss_backward);
    m.impl("mse_loss", &mse_loss);
    m.impl("mse_loss_backward", &mse_loss_backward);
  }
};

}  // namespace ssl_fast
