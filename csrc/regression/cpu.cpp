// CPU kernels of the regression losses (smooth-L1, MSE, binary cross-entropy).
//
// Bytes for n fp32 elements, forward + backward with input.requires_grad and
// a reducing reduction: the forward reads input and target and writes
// d loss / d input (12n); a backward with grad_output == 1 returns that tensor
// as it is (0), otherwise it recomputes it (12n: scaling the saved one would
// round 16-bit gradients twice for 4n less). torch's F.smooth_l1_loss writes
// and re-reads an elementwise loss (16n) and recomputes in the backward (12n):
// 28n, and two freshly faulted n-sized buffers.
//
// The cross-entropies cost one exp and one log1p (or two logs) per element: their
// passes run in code built for the widest instruction set the CPU has, where the
// polynomials of logmath.h vectorise 8 or 16 wide. Their results are the same at
// any thread count; between instruction sets they may differ in the last bit (GCC
// vectorises, and so contracts to FMAs, strided runs differently for each).
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <torch/library.h>

#include <atomic>

#include "../common/alloc.h"
#include "../common/simd.h"
#include "args.h"
#include "loops.h"

namespace ssl_fast::cpu {
namespace {

constexpr int kLanes = 16;  // independent accumulators, so the sum vectorises

// Operands after the outputs: input, target and, when kWeighted and kPos, the weight and
// the pos_weight.
template <typename scalar_t, typename acc_t, bool kContig, bool kWeighted, bool kPos>
struct Operands {
  Col<scalar_t, kContig> x, y;
  Col<acc_t, kContig> w, p;
  Operands(char** ptr, const int64_t* s, int first)
      : x{ptr[first], s[first]},
        y{ptr[first + 1], s[first + 1]},
        w{kWeighted ? ptr[first + 2] : nullptr, kWeighted ? s[first + 2] : 0},
        p{kPos ? ptr[first + 2 + kWeighted] : nullptr, kPos ? s[first + 2 + kWeighted] : 0} {}
  acc_t input(int64_t i) const { return acc_t(x[i]); }
  acc_t target(int64_t i) const { return acc_t(y[i]); }
  acc_t weight(int64_t i) const {
    if constexpr (kWeighted) return w[i];
    return acc_t(1);
  }
  acc_t pos_weight(int64_t i) const {
    if constexpr (kPos) return p[i];
    return acc_t(1);
  }
};

// The operand layout and loss of a pass, and the flags its runs raise: an input or a
// target outside [0, 1] for a kUnitInterval loss (read after the pass).
template <typename scalar_t, typename acc_t, bool kWeighted, bool kPos, typename Loss>
struct Pass {
  const Loss& f;
  acc_t scale;
  mutable std::atomic<bool> bad_input{false}, bad_target{false};

  // Whether a run's inputs and targets were all in [0, 1] (an AND of unsigned vectorises,
  // one of bool does not); always true for the other losses.
  struct Domain {
    unsigned input = 1, target = 1;
    void see(acc_t x, acc_t y) {
      if constexpr (Loss::kUnitInterval) {
        input &= unsigned(in_unit_interval(x));
        target &= unsigned(in_unit_interval(y));
      }
    }
  };

  // Records a run's domain.
  void check(const Domain& d) const {
    if (!d.input) bad_input.store(true, std::memory_order_relaxed);
    if (!d.target) bad_target.store(true, std::memory_order_relaxed);
  }
  void raise(const RegressionCall& c) const {
    TORCH_CHECK(!bad_input.load(), c.op, ": all elements of input should be between 0 and 1");
    TORCH_CHECK(!bad_target.load(), c.op, ": all elements of target should be between 0 and 1");
  }

  // Sum of weight * loss over a run; with kGrad also writes scale * weight * loss' to the
  // first operand.
  template <bool kContig, bool kGrad>
  acc_t sum_run(char** p, const int64_t* s, int64_t n) const {
    const Operands<scalar_t, acc_t, kContig, kWeighted, kPos> in(p, s, kGrad ? 1 : 0);
    const Col<scalar_t, kContig> g{p[0], s[0]};
    acc_t lane[kLanes] = {};
    Domain domain;
    auto step = [&](int64_t i, acc_t& acc) {
      const acc_t x = in.input(i), y = in.target(i), pw = in.pos_weight(i), w = in.weight(i);
      domain.see(x, y);
      acc += w * f.loss(x, y, pw);
      if constexpr (kGrad) g[i] = static_cast<scalar_t>(scale * w * f.grad(x, y, pw));
    };
    int64_t i = 0;
    for (; i + kLanes <= n; i += kLanes) {
      for (int k = 0; k < kLanes; ++k) step(i + k, lane[k]);
    }
    acc_t tail = 0;
    for (; i < n; ++i) step(i, tail);
    check(domain);
    for (int width = kLanes / 2; width > 0; width /= 2) {
      for (int k = 0; k < width; ++k) lane[k] += lane[k + width];
    }
    return lane[0] + tail;
  }

  // out = weight * loss, elementwise.
  template <bool kContig>
  void loss_run(char** p, const int64_t* s, int64_t n) const {
    const Operands<scalar_t, acc_t, kContig, kWeighted, kPos> in(p, s, 1);
    const Col<scalar_t, kContig> out{p[0], s[0]};
    Domain domain;
    for (int64_t i = 0; i < n; ++i) {
      const acc_t x = in.input(i), y = in.target(i);
      domain.see(x, y);
      out[i] = static_cast<scalar_t>(in.weight(i) * f.loss(x, y, in.pos_weight(i)));
    }
    check(domain);
  }

  // grad_input = grad_output * scale * weight * loss'; grad_output is a scalar (reducing
  // reduction, folded into scale) or, when kGradOut, an operand after the output.
  template <bool kContig, bool kGradOut>
  void grad_run(char** p, const int64_t* s, int64_t n) const {
    const Operands<scalar_t, acc_t, kContig, kWeighted, kPos> in(p, s, kGradOut ? 2 : 1);
    const Col<scalar_t, kContig> gi{p[0], s[0]}, go{p[1], s[1]};
    Domain domain;
    for (int64_t i = 0; i < n; ++i) {
      const acc_t x = in.input(i), y = in.target(i);
      domain.see(x, y);
      const acc_t upstream = kGradOut ? acc_t(go[i]) * scale : scale;
      gi[i] = static_cast<scalar_t>(upstream * in.weight(i) * f.grad(x, y, in.pos_weight(i)));
    }
    check(domain);
  }
};

#ifdef SSL_FAST_X86_SIMD
// body() compiled for AVX-512 or AVX2 and FMA: `flatten` inlines the runs into these
// entry points, which is what builds them for the target.
template <typename Body>
__attribute__((target("avx512f,avx512dq,avx512vl,avx512bw,avx2,fma,bmi2"), flatten)) auto on_avx512(const Body& body) {
  return body();
}
template <typename Body>
__attribute__((target("avx2,fma,bmi2"), flatten)) auto on_avx2(const Body& body) {
  return body();
}
#endif

// body() in the widest code the CPU runs for a kVectorMath loss, else as built.
template <class Loss, typename Body>
auto on_cpu_isa(const Body& body) {
#ifdef SSL_FAST_X86_SIMD
  if constexpr (Loss::kVectorMath) {
    switch (simd_level()) {
      case SimdLevel::kAvx512:
        return on_avx512(body);
      case SimdLevel::kAvx2:
        return on_avx2(body);
      default:
        break;
    }
  }
#endif
  return body();
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
      using Loss = LossT<acc_t>;
      const Loss f(args...);
      const auto scale = static_cast<acc_t>(c.grad_scale());
      with_weights<Loss>(c, [&](auto weighted, auto pos) {
        const Pass<scalar_t, acc_t, decltype(weighted)::value, decltype(pos)::value, Loss> pass{f, scale};
        if (!c.reduces()) {
          parallel_runs(iter, [&](char** p, const int64_t* s, int64_t n) {
            on_cpu_isa<Loss>([&] {
              dense(iter, s) ? pass.template loss_run<true>(p, s, n) : pass.template loss_run<false>(p, s, n);
            });
          });
          pass.raise(c);
          return;
        }
        auto total = [&](auto with_grad) {
          constexpr bool kG = decltype(with_grad)::value;
          return parallel_sum(iter, [&](char** p, const int64_t* s, int64_t n) -> double {
            return on_cpu_isa<Loss>([&] {
              return dense(iter, s) ? pass.template sum_run<true, kG>(p, s, n)
                                    : pass.template sum_run<false, kG>(p, s, n);
            });
          });
        };
        const double sum = compute_grad ? total(std::true_type{}) : total(std::false_type{});
        pass.raise(c);
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
      using Loss = LossT<acc_t>;
      const Loss f(args...);
      const auto scale = static_cast<acc_t>(
          c.grad_scale() * (c.reduces() ? static_cast<double>(grad_output.item<scalar_t>()) : 1.0));
      with_weights<Loss>(c, [&](auto weighted, auto pos) {
        const Pass<scalar_t, acc_t, decltype(weighted)::value, decltype(pos)::value, Loss> pass{f, scale};
        auto run = [&](auto per_element) {
          constexpr bool kGo = decltype(per_element)::value;
          parallel_runs(iter, [&](char** p, const int64_t* s, int64_t n) {
            on_cpu_isa<Loss>([&] {
              dense(iter, s) ? pass.template grad_run<true, kGo>(p, s, n)
                             : pass.template grad_run<false, kGo>(p, s, n);
            });
          });
        };
        c.reduces() ? run(std::false_type{}) : run(std::true_type{});
        pass.raise(c);
      });
    });
    return grad;
  }
};

}  // namespace

TORCH_LIBRARY_IMPL(ssl_fast, CPU, m) { RegressionOps<Passes>::impl(m); }

}  // namespace ssl_fast::cpu
