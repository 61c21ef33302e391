#include "args.h"

#include <algorithm>

namespace ssl_fast {

namespace {

// The broadcast of two shapes, or nothing when they do not broadcast (at::infer_size
// would throw a message that does not name the op).
std::optional<std::vector<int64_t>> broadcast(c10::IntArrayRef a, c10::IntArrayRef b) {
  const size_t n = std::max(a.size(), b.size());
  std::vector<int64_t> out(n);
  for (size_t i = 0; i < n; ++i) {
    const int64_t da = i < a.size() ? a[a.size() - 1 - i] : 1;
    const int64_t db = i < b.size() ? b[b.size() - 1 - i] : 1;
    if (da != db && da != 1 && db != 1) return std::nullopt;
    out[n - 1 - i] = da == 1 ? db : da;
  }
  return out;
}

// Checks an optional per-element operand: device, the accumulation dtype, broadcast to `shape`.
void check_operand(const char* op, const char* what, const at::Tensor& t, const at::Tensor& input,
                   const std::vector<int64_t>& shape) {
  TORCH_CHECK(t.device() == input.device(), op, ": ", what, " is on ", t.device(), " but input is on ",
              input.device());
  const auto dt = input.scalar_type();
  TORCH_CHECK(t.scalar_type() == accumulate_type(dt), op, ": ", what, " must be ", accumulate_type(dt),
              " for ", dt, " input, got ", t.scalar_type());
  TORCH_CHECK(broadcast(t.sizes(), shape) == shape, op, ": ", what, " of shape ", t.sizes(),
              " does not broadcast to the loss shape ", c10::IntArrayRef(shape));
}

}  // namespace

RegressionCall check_regression_call(
    const char* op, const at::Tensor& input, const at::Tensor& target,
    const std::optional<at::Tensor>& weight, int64_t reduction, const std::optional<at::Tensor>& pos_weight) {
  TORCH_CHECK(
      reduction >= 0 && reduction <= 2, op, ": reduction must be 0 (none), 1 (mean) or 2 (sum), got ",
      reduction);
  TORCH_CHECK(
      input.device() == target.device(), op, ": input is on ", input.device(), " but target is on ",
      target.device());
  const auto dt = input.scalar_type();
  TORCH_CHECK(
      is_supported_float(dt), op, ": input must be float16, bfloat16, float32 or float64, got ", dt);
  TORCH_CHECK(
      target.scalar_type() == dt, op, ": target dtype ", target.scalar_type(),
      " differs from input dtype ", dt);
  RegressionCall call;
  call.op = op;
  call.input = input;
  call.target = target;
  call.reduction = static_cast<Reduction>(reduction);
  auto shape = broadcast(input.sizes(), target.sizes());
  TORCH_CHECK(
      shape.has_value(), op, ": input of shape ", input.sizes(), " and target of shape ", target.sizes(),
      " do not broadcast");
  if (weight.has_value() && weight->defined()) {
    check_operand(op, "weight", *weight, input, *shape);
    call.weight = *weight;
  }
  if (pos_weight.has_value() && pos_weight->defined()) {
    check_operand(op, "pos_weight", *pos_weight, input, *shape);
    call.pos_weight = *pos_weight;
  }
  call.numel = c10::multiply_integers(*shape);
  call.shape = std::move(*shape);
  return call;
}

at::TensorIterator regression_iter(
    const std::vector<at::Tensor>& outputs, const std::vector<at::Tensor>& inputs) {
  at::TensorIteratorConfig config;
  config.check_all_same_dtype(false)
      .promote_inputs_to_common_dtype(false)
      .resize_outputs(false)
      .set_check_mem_overlap(true);
  for (const auto& out : outputs) config.add_output(out);
  for (const auto& in : inputs) config.add_const_input(in);
  return config.build();
}

void check_grad_output(const char* op, const at::Tensor& grad_output, const RegressionCall& c) {
  const auto dtype = c.input.scalar_type();
  TORCH_CHECK(grad_output.device() == c.input.device(), op, ": grad_output is on ",
              grad_output.device(), " but input is on ", c.input.device());
  TORCH_CHECK(grad_output.scalar_type() == dtype, op, ": grad_output dtype ",
              grad_output.scalar_type(), " differs from input dtype ", dtype);
  if (c.reduces()) {
    TORCH_CHECK(grad_output.dim() == 0, op, ": grad_output of a reduced loss must be 0-dim, got shape ",
                grad_output.sizes());
  } else {
    TORCH_CHECK(grad_output.sizes() == c10::IntArrayRef(c.shape), op, ": grad_output of shape ",
                grad_output.sizes(), " does not match the loss shape ", c10::IntArrayRef(c.shape));
  }
}

}  // namespace ssl_fast
