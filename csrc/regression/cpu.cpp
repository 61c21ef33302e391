// CPU kernels of the regression losses (smooth-L1, MSE).
//
// Bytes for n fp32 elements, forward + backward with input.requires_grad and
// a reducing reduction: the forward reads input and target and writes
// d loss / d input (12n); a backward with grad_output == 1 returns that tensor
// as it is (0), otherwise it recomputes it (12n: scaling the saved one would
// round 16-bit gradients twice for 4n less). torch's F.smooth_l1_loss writes
// and re-reads an elementwise loss (16n) and recomputes in the backward (12n):
// 28n, and two freshly faulted n-sized buffers.
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <torch/library.h>

#include "../common/alloc.h"
#include "args.h"
#include "loops.h"

namespace ssl_fast::cpu {
namespace {

constexpr int kLanes = 16;  // independent accumulators, so the sum vectorises

// Operands after the outputs: input, target and, when kWeighted, the weight.
template <typename scalar_t, typename acc_t, bool kContig, bool kWeighted>
struct Operands {
  Col<scalar_t, kContig> x, y;
  Col<acc_t, kContig> w;
  Operands(char** p, const int64_t* s, int first)
      : x{p[first], s[first]},
        y{p[first + 1], s[first + 1]},
        w{kWeighted ? p[first + 2] : nullptr, kWeighted ? s[first + 2] : 0} {}
  acc_t diff(int64_t i) const { return acc_t(x[i]) - acc_t(y[i]); }
  acc_t weight(int64_t i) const {
    if constexpr (kWeighted) return w[i];
    return acc_t(1);
  }
};

// Sum of weight * loss over a run; with kGrad also writes scale * weight * loss'
// to the first operand.
template <typename scalar_t, typename acc_t, bool kContig, bool kWeighted, bool kGrad, typename Loss>
acc_t sum_run(char** p, const int64_t* s, int64_t n, const Loss& f, acc_t scale) {
  const Operands<scalar_t, acc_t, kContig, kWeighted> in(p, s, kGrad ? 1 : 0);
  const Col<scalar_t, kContig> g{p[0], s[0]};
  acc_t lane[kLanes] = {};
  auto step = [&](int64_t i, acc_t& acc) {
    const acc_t d = in.diff(i);
    const acc_t w = in.weight(i);
    acc += w * f.loss(d);
    if constexpr (kGrad) g[i] = static_cast<scalar_t>(scale * w * f.grad(d));
  };
  int64_t i = 0;
  for (; i + kLanes <= n; i += kLanes) {
    for (int k = 0; k < kLanes; ++k) step(i + k, lane[k]);
  }
  acc_t tail = 0;
  for (; i < n; ++i) step(i, tail);
  for (int width = kLanes / 2; width > 0; width /= 2) {
    for (int k = 0; k < width; ++k) lane[k] += lane[k + width];
  }
  return lane[0] + tail;
}

// out = weight * loss, elementwise.
template <typename scalar_t, typename acc_t, bool kContig, bool kWeighted, typename Loss>
void loss_run(char** p, const int64_t* s, int64_t n, const Loss& f) {
  const Operands<scalar_t, acc_t, kContig, kWeighted> in(p, s, 1);
  const Col<scalar_t, kContig> out{p[0], s[0]};
  for (int64_t i = 0; i < n; ++i) out[i] = static_cast<scalar_t>(in.weight(i) * f.loss(in.diff(i)));
}

// grad_input = grad_output * scale * weight * loss'; grad_output is a scalar
// (reducing reduction) or, when kGradOut, an operand after the output.
template <typename scalar_t, typename acc_t, bool kContig, bool kWeighted, bool kGradOut, typename Loss>
void grad_run(char** p, const int64_t* s, int64_t n, const Loss& f, acc_t scale) {
  const Operands<scalar_t, acc_t, kContig, kWeighted> in(p, s, kGradOut ? 2 : 1);
  const Col<scalar_t, kContig> gi{p[0], s[0]}, go{p[1], s[1]};
  for (int64_t i = 0; i < n; ++i) {
    const acc_t upstream = kGradOut ? acc_t(go[i]) * scale : scale;
    gi[i] = static_cast<scalar_t>(upstream * in.weight(i) * f.grad(in.diff(i)));
  }
}

// The passes of this backend, for RegressionOps (regression/args.h).
struct Passes {
  template <template <typename> class LossT, typename... Args>
  static std::tuple<at::Tensor, at::Tensor> forward(const RegressionCall& c, bool compute_grad, Args... args) {
    const auto dtype = c.input.scalar_type();
    at::Tensor loss = c.reduces() ? at::empty({}, c.input.options()) : empty(c.shape, dtype);
    at::Tensor grad = compute_grad ? empty(c.shape, dtype) : at::empty({0}, c.input.options());
    std::vector<at::Tensor> outputs;
    if (!c.reduces()) outputs.push_back(loss);
    if (compute_grad) outputs.push_back(grad);
    auto iter = regression_iter(outputs, inputs_of(c));
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, dtype, "ssl_fast_regression_cpu", [&] {
      using acc_t = at::opmath_type<scalar_t>;
      const LossT<acc_t> f(args...);
      const auto scale = static_cast<acc_t>(c.grad_scale());
      with_weight(c, [&](auto weighted) {
        constexpr bool kW = decltype(weighted)::value;
        if (!c.reduces()) {
          parallel_runs(iter, [&](char** p, const int64_t* s, int64_t n) {
            dense(iter, s) ? loss_run<scalar_t, acc_t, true, kW>(p, s, n, f)
                           : loss_run<scalar_t, acc_t, false, kW>(p, s, n, f);
          });
          return;
        }
        auto total = [&](auto with_grad) {
          constexpr bool kG = decltype(with_grad)::value;
          return parallel_sum(iter, [&](char** p, const int64_t* s, int64_t n) -> double {
            return dense(iter, s) ? sum_run<scalar_t, acc_t, true, kW, kG>(p, s, n, f, scale)
                                  : sum_run<scalar_t, acc_t, false, kW, kG>(p, s, n, f, scale);
          });
        };
        const double sum = compute_grad ? total(std::true_type{}) : total(std::false_type{});
        // An empty mean is 0/0 = NaN, as in torch.
        loss.fill_(c.reduction == Reduction::Mean ? sum / static_cast<double>(c.numel) : sum);
      });
    });
    return {loss, grad};
  }

  template <template <typename> class LossT, typename... Args>
  static at::Tensor backward(const at::Tensor& grad_output, const RegressionCall& c, Args... args) {
    const auto dtype = c.input.scalar_type();
    at::Tensor grad = empty(c.shape, dtype);
    auto inputs = inputs_of(c);
    if (!c.reduces()) inputs.insert(inputs.begin(), grad_output);
    auto iter = regression_iter({grad}, inputs);
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, dtype, "ssl_fast_regression_cpu", [&] {
      using acc_t = at::opmath_type<scalar_t>;
      const LossT<acc_t> f(args...);
      const auto scale = static_cast<acc_t>(
          c.grad_scale() * (c.reduces() ? static_cast<double>(grad_output.item<scalar_t>()) : 1.0));
      with_weight(c, [&](auto weighted) {
        constexpr bool kW = decltype(weighted)::value;
        auto pass = [&](auto per_element) {
          constexpr bool kGo = decltype(per_element)::value;
          parallel_runs(iter, [&](char** p, const int64_t* s, int64_t n) {
            dense(iter, s) ? grad_run<scalar_t, acc_t, true, kW, kGo>(p, s, n, f, scale)
                           : grad_run<scalar_t, acc_t, false, kW, kGo>(p, s, n, f, scale);
          });
        };
        c.reduces() ? pass(std::false_type{}) : pass(std::true_type{});
      });
    });
    return grad;
  }
};

}  // namespace

TORCH_LIBRARY_IMPL(ssl_fast, CPU, m) { RegressionOps<Passes>::impl(m); }

}  // namespace ssl_fast::cpu
