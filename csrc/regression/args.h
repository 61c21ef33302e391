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

// A validated call: loss shape, element count and operands (weight and pos_weight
// undefined when absent); op names the op in the kernels' messages.
struct RegressionCall {
  const char* op;
  at::Tensor input, target, weight, pos_weight;
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
// weight and pos_weight are in the accumulation type and broadcast to the loss shape.
RegressionCall check_regression_call(
    const char* op, const at::Tensor& input, const at::Tensor& target,
    const std::optional<at::Tensor>& weight, int64_t reduction,
    const std::optional<at::Tensor>& pos_weight = std::nullopt);

// An iterator over `outputs` (already allocated with the loss shape) and `inputs`,
// broadcasting inputs, keeping each operand's own dtype (the weight is in the
// accumulation type) and never allocating or resizing.
at::TensorIterator regression_iter(
    const std::vector<at::Tensor>& outputs, const std::vector<at::Tensor>& inputs);

// Checks the grad_output of a backward against its call: device and dtype of the
// input; 0-dim for a reducing reduction, else the loss shape.
void check_grad_output(const char* op, const at::Tensor& grad_output, const RegressionCall& c);

// The iterator inputs of a call: input, target and, when given, the weight and the pos_weight.
inline std::vector<at::Tensor> inputs_of(const RegressionCall& c) {
  std::vector<at::Tensor> inputs{c.input, c.target};
  if (c.weight.defined()) inputs.push_back(c.weight);
  if (c.pos_weight.defined()) inputs.push_back(c.pos_weight);
  return inputs;
}

// Runs body(std::integral_constant<bool, weighted>, std::integral_constant<bool, pos_weighted>)
// for the call's weight and pos_weight; the pos_weight case is only instantiated for a Loss
// that takes one.
template <class Loss, typename Body>
void with_weights(const RegressionCall& c, Body&& body) {
  auto with_pos = [&](auto weighted) {
    if constexpr (Loss::kPosWeight) {
      if (c.pos_weight.defined()) return body(weighted, std::true_type{});
    }
    body(weighted, std::false_type{});
  };
  c.weight.defined() ? with_pos(std::true_type{}) : with_pos(std::false_type{});
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

  static std::tuple<at::Tensor, at::Tensor> binary_cross_entropy(
      const at::Tensor& input, const at::Tensor& target, int64_t reduction,
      const std::optional<at::Tensor>& weight, bool compute_grad) {
    const auto c = check_regression_call("ssl_fast::binary_cross_entropy", input, target, weight, reduction);
    TORCH_CHECK(!compute_grad || c.reduces(), c.op, ": compute_grad needs reduction mean or sum");
    return Passes::template forward<BinaryCrossEntropy>(c, compute_grad);
  }

  static at::Tensor binary_cross_entropy_backward(
      const at::Tensor& grad_output, const at::Tensor& input, const at::Tensor& target,
      int64_t reduction, const std::optional<at::Tensor>& weight) {
    const auto c =
        check_regression_call("ssl_fast::binary_cross_entropy_backward", input, target, weight, reduction);
    check_grad_output(c.op, grad_output, c);
    return Passes::template backward<BinaryCrossEntropy>(grad_output, c);
  }

  static std::tuple<at::Tensor, at::Tensor> binary_cross_entropy_with_logits(
      const at::Tensor& input, const at::Tensor& target, const std::optional<at::Tensor>& pos_weight,
      int64_t reduction, const std::optional<at::Tensor>& weight, bool compute_grad) {
    const auto c = check_regression_call(
        "ssl_fast::binary_cross_entropy_with_logits", input, target, weight, reduction, pos_weight);
    TORCH_CHECK(!compute_grad || c.reduces(), c.op, ": compute_grad needs reduction mean or sum");
    return Passes::template forward<BinaryCrossEntropyWithLogits>(c, compute_grad);
  }

  static at::Tensor binary_cross_entropy_with_logits_backward(
      const at::Tensor& grad_output, const at::Tensor& input, const at::Tensor& target,
      const std::optional<at::Tensor>& pos_weight, int64_t reduction, const std::optional<at::Tensor>& weight) {
    const auto c = check_regression_call(
        "ssl_fast::binary_cross_entropy_with_logits_backward", input, target, weight, reduction, pos_weight);
    check_grad_output(c.op, grad_output, c);
    return Passes::template backward<BinaryCrossEntropyWithLogits>(grad_output, c);
  }

  static void impl(torch::Library& m) {
    m.impl("smooth_l1_loss", &smooth_l1_loss);
    m.impl("smooth_l1_loss_backward", &smooth_l1_loss_backward);
    m.impl("mse_loss", &mse_loss);
    m.impl("mse_loss_backward", &mse_loss_backward);
    m.impl("binary_cross_entropy", &binary_cross_entropy);
    m.impl("binary_cross_entropy_backward", &binary_cross_entropy_backward);
    m.impl("binary_cross_entropy_with_logits", &binary_cross_entropy_with_logits);
    m.impl("binary_cross_entropy_with_logits_backward", &binary_cross_entropy_with_logits_backward);
  }
};

}  // namespace ssl_fast
