// Host-side argument handling shared by the CPU and CUDA regression-loss kernels.
#pragma once

#include <ATen/ATen.h>
#include <ATen/TensorIterator.h>

#include <optional>
#include <type_traits>
#include <vector>

#include "dtypes.h"
#include "regression.h"

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

}  // namespace ssl_fast
