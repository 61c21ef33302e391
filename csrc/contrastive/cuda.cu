// CUDA ops of the contrastive log-sum-exp (NT-Xent, InfoNCE). Two implementations serve
// them, chosen per call by SSL_FAST_CONTRASTIVE_KERNEL (read at every call):
//   fused            the fused kernels of contrastive/fused.cu (stage 2) where
//                    fused_supported says they apply (fp16 / bf16 inputs, fp32 ones while
//                    TF32 matmuls are allowed; dim <= 256; sm_80 or newer), else stage 1:
//                    unsupported calls fall back rather than fail, so that one setting
//                    runs every call (tests, benchmarks);
//   tiled            always stage 1, the cuBLAS strips of this file;
//   auto (or unset)  stage 1, the simpler code, until measurements on a card show where
//                    stage 2 is faster (benchmarks/RESULTS.md).
// Both take the unit rows from normalize_kernel and give their gradients back through
// normalize_backward_kernel; the math is in contrastive/args.h and the semantics
// are those of contrastive/cpu.cpp.
//
// Stage 1: cuBLAS GEMMs through ATen on the current stream plus small epilogue kernels.
// The logits are computed one strip of B rows at a time (at most B x cols in the
// accumulation type, kStripBytes, and without k at most a quarter of the rows, see
// strip_rows; SSL_FAST_CONTRASTIVE_STRIP_ROWS=B forces the height, for tests): nothing
// rows x cols is stored.
//   forward:  S = scale * Qn_strip Kn^T (GEMM); one block per row reduces its (max, sum
//             of exp) to the row lse; with col_lse one thread column per column reduces
//             the strip's rows and merges them into running per-column statistics.
//   backward: S is recomputed and overwritten in place by G_ij = d(loss)/d(s_ij), then
//             dQn_strip = scale * G Kn and dKn += scale * G^T Qn_strip (GEMMs).
// Without k the keys are qn, the diagonal is excluded, and S and G are symmetric, so a
// strip of rows [r0, r0 + B) computes only the columns from r0 on: its square diagonal
// block serves its own rows, and every column j >= r0 + B also serves row j, whose
// lse and dz are then completed by later strips. The forward merges the strip's column
// statistics into running statistics of those rows, which their own strip merges with
// its row statistics; the backward adds scale * G^T Qn_strip to their dz before their
// own strip adds its rows. That is 2 GEMM-equivalents (rows x rows x dim) for forward +
// backward instead of 3, plus the diagonal blocks (a fraction B / rows).
//
// Every reduction runs in an order fixed by the thread index and the strip order, and
// no atomics are used: results are bitwise repeatable on a given card.
//
// Known costs of this stage: GEMMs of rows x cols x dim, 2 without k (halves of the
// forward, the recompute, and the row and column products) and 4 with k and dk, on the
// tensor cores for 16-bit inputs (fp16: the logits only, see Operands) and in fp32
// otherwise (following torch's matmul precision setting, so TF32 only where the user
// allows it); the logits written and read once per epilogue (and converted to bf16 for
// the products of bf16 inputs, whose accumulating products go through a temporary, see
// gemm_into); and a
// host synchronisation when scale is a CUDA tensor (it is read once by
// check_contrastive_call). exclude is range-checked by the CPU kernel only; in both CUDA
// stages an entry outside [0, cols) excludes nothing (it is compared, never used as an
// index).
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAException.h>
#include <torch/library.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <limits>
#include <string_view>

#include "args.h"
#include "device.cuh"
#include "fused.h"

namespace ssl_fast::cuda {
namespace {

constexpr int kColThreadsY = 8;  // rows of the strip a column is split over (then merged)
constexpr int64_t kStripBytes = int64_t(256) << 20;
constexpr int64_t kMinSelfStripRows = 1024;  // keeps each strip's GEMM large enough to fill the card

__device__ __forceinline__ float sqrt_(float x) { return sqrtf(x); }
__device__ __forceinline__ double sqrt_(double x) { return ::sqrt(x); }

struct MergeMaxSum {
  template <typename T>
  __device__ MaxSum<T> operator()(MaxSum<T> a, const MaxSum<T>& b) const {
    a.merge(b);
    return a;
  }
};

// Sum over a warp, the same value in every lane (a butterfly: each step adds the same two
// values in every pair of lanes, and fp addition commutes).
template <typename T>
__device__ __forceinline__ T warp_sum(T v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

// ------------------------------------------------------------------ normalisation

// out = x / max(|x|, eps) per row; one warp per row.
template <typename scalar_t, typename T>
__global__ void __launch_bounds__(kThreads) normalize_kernel(const scalar_t* x, T* out, int64_t n, int64_t d) {
  const int64_t row = int64_t(blockIdx.x) * kWarps + threadIdx.x / 32;
  if (row >= n) return;  // whole warps leave together
  const int lane = threadIdx.x % 32;
  const scalar_t* xi = x + row * d;
  T sq = 0;
  for (int64_t k = lane; k < d; k += 32) {
    const T v = static_cast<T>(xi[k]);
    sq += v * v;
  }
  const T len = sqrt_(warp_sum(sq));
  const T norm = len < T(kNormEps) ? T(kNormEps) : len;  // std::max's order: a NaN length stays NaN
  for (int64_t k = lane; k < d; k += 32) out[row * d + k] = static_cast<T>(xi[k]) / norm;
}

// The gradient of the raw rows x from that of the unit rows u = x / max(|x|, eps),
// g = dn (+ grad_n): (g - u (u . g)) / |x|, or g / eps where |x| < eps; cast to x's dtype.
template <typename scalar_t, typename T>
__global__ void __launch_bounds__(kThreads) normalize_backward_kernel(
    const scalar_t* x, const T* u, const T* dn, const T* grad_n, scalar_t* out, int64_t n, int64_t d) {
  const int64_t row = int64_t(blockIdx.x) * kWarps + threadIdx.x / 32;
  if (row >= n) return;
  const int lane = threadIdx.x % 32;
  const int64_t base = row * d;
  auto g = [&](int64_t k) { return grad_n != nullptr ? dn[base + k] + grad_n[base + k] : dn[base + k]; };
  T sq = 0, dot = 0;
  for (int64_t k = lane; k < d; k += 32) {
    const T v = static_cast<T>(x[base + k]);
    sq += v * v;
    dot += u[base + k] * g(k);
  }
  const T norm = sqrt_(warp_sum(sq));
  dot = warp_sum(dot);
  if (norm >= T(kNormEps)) {
    for (int64_t k = lane; k < d; k += 32) out[base + k] = static_cast<scalar_t>((g(k) - u[base + k] * dot) / norm);
  } else {
    for (int64_t k = lane; k < d; k += 32) out[base + k] = static_cast<scalar_t>(g(k) / T(kNormEps));
  }
}

// ------------------------------------------------------------------ forward epilogues

// A strip of logits: rows r0 + [0, b) of the call (one block each) against columns
// c0 + [0, width), row-major in s.
template <typename T>
struct Strip {
  T* s;
  int64_t width, r0, c0;
};

// Row lse of strip row blockIdx.x (global row r0 + blockIdx.x) over its non-excluded
// logits, merged after the running statistics of the row when run_max is set (without
// k: the columns before c0, reduced by earlier strips). Writes -inf over the excluded
// logit, for the column epilogue that follows.
template <typename T>
__global__ void __launch_bounds__(kThreads) row_lse_kernel(
    Strip<T> st, Exclusion ex, const T* run_max, const T* run_sum, T* row_lse) {
  const int64_t row = st.r0 + blockIdx.x;
  T* si = st.s + int64_t(blockIdx.x) * st.width;
  const int64_t skip = ex.col(row) - st.c0;  // as a strip column; -1 - c0 never matches
  MaxSum<T> acc = MaxSum<T>::empty();
  for (int64_t j = threadIdx.x; j < st.width; j += kThreads) {
    if (j == skip) {
      si[j] = neg_inf<T>();
      continue;
    }
    acc.add(si[j]);
  }
  acc = block_reduce(acc, MaxSum<T>::empty(), MergeMaxSum{});
  if (threadIdx.x != 0) return;
  if (run_max != nullptr) {
    MaxSum<T> total{run_max[row], run_sum[row]};
    total.merge(acc);
    acc = total;
  }
  row_lse[row] = acc.lse();
}

// Column statistics of n columns of a strip of b rows (excluded logits already -inf; s
// points at the first column, rows are ld apart), merged into the running (max, sum) of
// each column; with col_lse (the last strip) also writes the lse. The running arrays
// and col_lse point at the first column's entry. Block: 32 columns x kColThreadsY row
// slices, merged in slice order.
template <typename T>
__global__ void __launch_bounds__(32 * kColThreadsY) col_lse_kernel(
    const T* s, int64_t b, int64_t ld, int64_t n, T* run_max, T* run_sum, T* col_lse) {
  __shared__ MaxSum<T> part[kColThreadsY][32];
  const int64_t j = int64_t(blockIdx.x) * 32 + threadIdx.x;
  MaxSum<T> acc = MaxSum<T>::empty();
  if (j < n) {
    for (int64_t i = threadIdx.y; i < b; i += kColThreadsY) acc.add(s[i * ld + j]);
  }
  part[threadIdx.y][threadIdx.x] = acc;
  __syncthreads();
  if (threadIdx.y != 0 || j >= n) return;
  MaxSum<T> total{run_max[j], run_sum[j]};
#pragma unroll
  for (int y = 0; y < kColThreadsY; ++y) total.merge(part[y][threadIdx.x]);
  run_max[j] = total.max;
  run_sum[j] = total.sum;
  if (col_lse != nullptr) col_lse[j] = total.lse();
}

// ------------------------------------------------------------------ backward epilogue

// What the gradient epilogue reads besides the logits.
template <typename T>
struct GradInputs {
  Exclusion ex;
  const T* grad_row;  // nullptr: no row term
  const T* row_lse;
  const T* grad_col;  // nullptr: no column term; without k, grad_row
  const T* col_lse;   // without k, row_lse
  double* g_dot_s;    // per strip row, sum_j G_ij s_ij over its strip (see gradient_kernel);
                      // nullptr when d scale is not wanted
};

// Overwrites strip row blockIdx.x of the logits with G_ij = g_i exp(s_ij - lse_i)
// + g'_j exp(s_ij - lse'_j): 0 at the excluded pair, and a term is 0 where its lse is
// -inf (an all-excluded row or column has no gradient). Strip columns from `twice` on
// stand for two pairs (ij and ji, without k) in the sum of G_ij s_ij.
template <typename T>
__global__ void __launch_bounds__(kThreads) gradient_kernel(Strip<T> st, int64_t twice, GradInputs<T> in) {
  const int64_t row = st.r0 + blockIdx.x;
  T* si = st.s + int64_t(blockIdx.x) * st.width;
  const int64_t skip = in.ex.col(row) - st.c0;
  const bool row_term = in.grad_row != nullptr && in.row_lse[row] != neg_inf<T>();
  const T g_row = row_term ? in.grad_row[row] : T(0);
  const T lse_row = row_term ? in.row_lse[row] : T(0);
  T g_dot_s = 0;
  for (int64_t j = threadIdx.x; j < st.width; j += kThreads) {
    T g = 0;
    const T x = si[j];
    if (j != skip) {
      if (row_term) g = g_row * exp_(x - lse_row);
      if (in.grad_col != nullptr) {
        const T lse_col = in.col_lse[st.c0 + j];
        if (lse_col != neg_inf<T>()) g += in.grad_col[st.c0 + j] * exp_(x - lse_col);
      }
      g_dot_s += (j < twice ? g : 2 * g) * x;
    }
    si[j] = g;
  }
  if (in.g_dot_s == nullptr) return;  // uniform over the block
  const double total = block_reduce(double(g_dot_s), 0.0, Add{});
  if (threadIdx.x == 0) in.g_dot_s[row] = total;
}

// ------------------------------------------------------------------ strips

// Rows per strip: as many as keep one strip of logits within kStripBytes, or
// SSL_FAST_CONTRASTIVE_STRIP_ROWS; at least 1, at most rows. Without k, at most a quarter of
// the rows (and no fewer than kMinSelfStripRows): one strip would compute the whole square,
// and its diagonal blocks are the fraction B / rows that the symmetry cannot save.
int64_t strip_rows(int64_t rows, int64_t cols, size_t elem, bool self) {
  int64_t b = std::max<int64_t>(1, kStripBytes / (cols * int64_t(elem)));
  if (self) b = std::min(b, std::max(kMinSelfStripRows, (rows + 3) / 4));
  if (const char* env = std::getenv("SSL_FAST_CONTRASTIVE_STRIP_ROWS"); env != nullptr && *env != '\0') {
    char* end = nullptr;
    errno = 0;
    const long long v = std::strtoll(env, &end, 10);
    TORCH_CHECK(
        errno == 0 && *end == '\0' && v > 0, "contrastive_lse: SSL_FAST_CONTRASTIVE_STRIP_ROWS must be a positive ",
        "integer, got '", env, "'");
    b = v;
  }
  return std::min(b, rows);
}

// Whether the fused kernels serve this call (see the head of this file).
bool use_fused(const ContrastiveCall& c) {
  const char* env = std::getenv("SSL_FAST_CONTRASTIVE_KERNEL");
  const std::string_view kernel = env == nullptr ? "" : env;
  TORCH_CHECK(
      kernel.empty() || kernel == "auto" || kernel == "fused" || kernel == "tiled",
      "contrastive_lse: SSL_FAST_CONTRASTIVE_KERNEL must be auto, fused or tiled, got '", kernel, "'");
  return kernel == "fused" && fused_supported(c);
}

// The GEMM operands of a call. 16-bit inputs multiply on the tensor cores in their own
// type with fp32 results (aten::mm.dtype), as the fused kernels and the materialised
// formula do: their unit rows are rounded back to that type, the query side multiplied
// by scale first (same relative precision; fp16 only while scale neither overflows it nor
// pushes components into its subnormals). Other calls multiply the unit rows themselves,
// alpha = scale; so do cards before sm_80 and fp16 while torch allows fp16 accumulation
// (cuBLAS then refuses 16-bit inputs with fp32 results). `grads`: the gradient products
// too (bf16 only: an fp16 G could overflow or flush, so fp16 keeps the fp32 G).
struct Operands {
  at::Tensor q, k;  // 16-bit: scale * qn and the keys; else undefined
  bool grads;
  bool low() const { return q.defined(); }
};

constexpr double kHalfScaleMin = 1.0 / 16, kHalfScaleMax = 1e4;

Operands operands(const ContrastiveCall& c, const at::Tensor& qn, const at::Tensor& keys) {
  const at::ScalarType type = c.q.scalar_type();
  const bool half = type == at::kHalf && c.scale >= kHalfScaleMin && c.scale <= kHalfScaleMax &&
                    !at::globalContext().allowFP16AccumulationCuBLAS();
  if (!(type == at::kBFloat16 || half) || at::cuda::getCurrentDeviceProperties()->major < 8) return {};
  return {(qn * c.scale).to(type), keys.to(type), type == at::kBFloat16};
}

// dst = beta dst + alpha a b, beta 0 or 1; a and b 16-bit (fp32 results) or of dst's type.
// The 16-bit products cannot accumulate into fp32 (aten::addmm.dtype takes its addend in
// the inputs' type): beta 1 goes through a temporary of dst's size and an add.
void gemm_into(at::Tensor dst, const at::Tensor& a, const at::Tensor& b, int beta, double alpha) {
  if (a.scalar_type() == dst.scalar_type()) {
    dst.addmm_(a, b, beta, alpha);
  } else if (beta == 0) {
    at::mm_out(dst, a, b, dst.scalar_type());
    if (alpha != 1) dst.mul_(alpha);
  } else {
    dst.add_(at::mm(a, b, dst.scalar_type()), alpha);
  }
}

// s = scale * (rows r0 + [0, b) of the queries) . (rows c0 + [0, width) of the keys)^T.
void logits_into(
    at::Tensor& s, const ContrastiveCall& c, const Operands& o, const at::Tensor& qn, const at::Tensor& keys,
    int64_t r0, int64_t b, int64_t c0, int64_t width) {
  if (o.low()) {
    at::mm_out(s, o.q.narrow(0, r0, b), o.k.narrow(0, c0, width).t(), s.scalar_type());
  } else {
    at::addmm_out(s, s, qn.narrow(0, r0, b), keys.narrow(0, c0, width).t(), 0, c.scale);  // beta 0: s not read
  }
}

// The strips of a call, in order: rows r0 + [0, b) against columns c0 + [0, width) (c0 =
// r0 without k: the symmetric form, see the head of this file; else 0). Computes each
// strip's logits into s [b, width], one buffer for all strips, then calls f(s, strip, b).
template <typename T, typename F>
void for_each_strip(
    const ContrastiveCall& c, const at::Tensor& qn, const at::Tensor& keys, const Operands& o, F&& f) {
  const int64_t height = strip_rows(c.rows, c.cols, sizeof(T), c.self());
  at::Tensor buf = at::empty({height * c.cols}, qn.options());
  for (int64_t r0 = 0; r0 < c.rows; r0 += height) {
    const int64_t b = std::min(height, c.rows - r0), c0 = c.self() ? r0 : 0, width = c.cols - c0;
    at::Tensor s = buf.narrow(0, 0, b * width).view({b, width});
    logits_into(s, c, o, qn, keys, r0, b, c0, width);
    f(s, Strip<T>{s.data_ptr<T>(), width, r0, c0}, b);
  }
}

template <typename T>
void forward(const ContrastiveCall& c, const at::Tensor& qn, const at::Tensor& keys, at::Tensor& row, at::Tensor& col) {
  // Running column statistics: of the keys for col_lse, or, without k, of the rows after
  // each strip.
  const bool want_cols = c.self() || col.numel() > 0;
  at::Tensor running = want_cols ? at::empty({2, c.cols}, qn.options()) : at::Tensor();
  if (want_cols) {
    running[0].fill_(-std::numeric_limits<double>::infinity());
    running[1].zero_();
  }
  T* run_max = want_cols ? running[0].data_ptr<T>() : nullptr;
  T* run_sum = want_cols ? running[1].data_ptr<T>() : nullptr;
  const Exclusion ex = exclusion_of(c);
  const auto stream = at::cuda::getCurrentCUDAStream();
  for_each_strip<T>(c, qn, keys, operands(c, qn, keys), [&](const at::Tensor&, const Strip<T>& st, int64_t b) {
    const int64_t width = st.width, r0 = st.r0, c0 = st.c0;
    row_lse_kernel<<<blocks(b, 1), kThreads, 0, stream>>>(
        st, ex, c.self() ? run_max : nullptr, c.self() ? run_sum : nullptr, row.data_ptr<T>());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
    // Without k, the columns past the strip's diagonal block; else all of them.
    const int64_t j0 = c.self() ? b : 0, n = width - j0;
    if (want_cols && n > 0) {
      const bool last = r0 + b == c.rows;
      col_lse_kernel<<<blocks(n, 32), dim3(32, kColThreadsY), 0, stream>>>(
          st.s + j0, b, width, n, run_max + c0 + j0, run_sum + c0 + j0,
          !c.self() && last ? col.data_ptr<T>() : nullptr);
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    }
  });
}

// dqn (when defined; overwritten) and dkn (when defined, with k; zeroed by the caller)
// from the lse gradients in `in`; in.g_dot_s, when set, receives the per-row partials of
// d scale.
template <typename T>
void backward(
    const ContrastiveCall& c, const at::Tensor& qn, const at::Tensor& keys, const GradInputs<T>& in, at::Tensor& dqn,
    at::Tensor& dkn) {
  const Operands o = operands(c, qn, keys);
  const auto stream = at::cuda::getCurrentCUDAStream();
  // Every product adds, strip after strip on one stream: deterministic.
  for_each_strip<T>(c, qn, keys, o, [&](const at::Tensor& s, const Strip<T>& st, int64_t b) {
    const int64_t width = st.width, r0 = st.r0, c0 = st.c0;
    // Without k, the columns past the diagonal block count twice in G . s.
    gradient_kernel<<<blocks(b, 1), kThreads, 0, stream>>>(st, c.self() ? b : width, in);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
    if (!dqn.defined() && !dkn.defined()) return;  // d scale alone
    // The products: scale G keys for the queries, scale G^T queries for the keys; with
    // 16-bit operands the query side already holds scale.
    const at::Tensor g = o.grads ? s.to(o.q.scalar_type()) : s;
    const at::Tensor k_strip = o.grads ? o.k.narrow(0, c0, width) : keys.narrow(0, c0, width);
    const at::Tensor q_strip = o.grads ? o.q.narrow(0, r0, b) : qn.narrow(0, r0, b);
    const double q_alpha = o.grads ? 1.0 : c.scale;
    if (dqn.defined()) {
      // beta 0 where nothing was written yet: without k, the first strip writes every row
      // (its own, then the rest as columns) and later ones add; with k, each strip writes
      // its own rows.
      const int beta = c.self() && r0 > 0 ? 1 : 0;
      gemm_into(dqn.narrow(0, r0, b), g, k_strip, beta, c.scale);
      if (c.self() && width > b) {  // the rows after the strip, as columns
        gemm_into(dqn.narrow(0, r0 + b, width - b), g.narrow(1, b, width - b).t(), q_strip, beta, q_alpha);
      }
    }
    if (dkn.defined()) gemm_into(dkn, g.t(), q_strip, 1, q_alpha);
  });
}

// ------------------------------------------------------------------ ops

// The passes of this backend, for ContrastiveOps (contrastive/args.h).
struct Passes {
  static at::Tensor normalized(const at::Tensor& x, at::ScalarType acc) {
    at::Tensor out = at::empty(x.sizes(), x.options().dtype(acc));
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "contrastive_normalize_cuda", [&] {
      using T = at::opmath_type<scalar_t>;
      normalize_kernel<<<blocks(x.size(0), kWarps), kThreads, 0, at::cuda::getCurrentCUDAStream()>>>(
          x.const_data_ptr<scalar_t>(), out.data_ptr<T>(), x.size(0), x.size(1));
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    });
    return out;
  }

  static void lse(const ContrastiveCall& c, const at::Tensor& qn, const at::Tensor& kn, at::Tensor& row,
                  at::Tensor& col) {
    if (use_fused(c)) {
      fused_forward(c, qn, kn, row, col);
    } else {
      AT_DISPATCH_FLOATING_TYPES(c.acc, "contrastive_lse_cuda", [&] {
        forward<scalar_t>(c, qn, c.self() ? qn : kn, row, col);
      });
    }
  }

  static std::tuple<at::Tensor, at::Tensor, at::Tensor> lse_backward(
      const ContrastiveCall& c, const ContrastiveGrads& g, const at::TensorOptions& scale) {
    const bool want_q = g.output_mask[0], want_k = g.output_mask[1] && !c.self(), want_scale = g.output_mask[2];
    const bool lse_grads = g.grad_row.defined() || g.grad_col.defined();
    const auto acc_opts = g.qn.options();
    // Without lse gradients nothing reaches qn or kn from the logits.
    at::Tensor dqn = want_q ? (lse_grads ? at::empty_like(g.qn) : at::zeros_like(g.qn)) : at::Tensor();
    at::Tensor dkn = want_k ? at::zeros_like(g.kn) : at::Tensor();
    at::Tensor dscale = want_scale ? at::zeros({}, acc_opts.dtype(at::kDouble)) : at::Tensor();
    if (lse_grads && (want_q || want_k || want_scale)) {
      at::Tensor g_dot_s = want_scale ? at::empty({c.rows}, acc_opts.dtype(at::kDouble)) : at::Tensor();
      if (use_fused(c)) {
        fused_backward(c, g, dqn, dkn, g_dot_s);
      } else {
        AT_DISPATCH_FLOATING_TYPES(c.acc, "contrastive_lse_backward", [&] {
          using T = scalar_t;
          auto ptr = [](const at::Tensor& t) { return t.defined() ? t.const_data_ptr<T>() : nullptr; };
          GradInputs<T> in{
              exclusion_of(c), ptr(g.grad_row), ptr(g.row_lse), ptr(g.grad_row), ptr(g.row_lse),
              want_scale ? g_dot_s.data_ptr<double>() : nullptr};
          if (!c.self()) {
            in.grad_col = ptr(g.grad_col);
            in.col_lse = g.grad_col.defined() ? ptr(g.col_lse) : nullptr;
          }
          backward<T>(c, g.qn, c.self() ? g.qn : g.kn, in, dqn, dkn);
        });
      }
      if (want_scale) {
        // d lse / d scale = P . (qn kn^T) = P . s / scale; without k, G holds each pair twice.
        sum_in_order<<<1, kThreads, 0, at::cuda::getCurrentCUDAStream()>>>(
            g_dot_s.const_data_ptr<double>(), c.rows, (c.self() ? 0.5 : 1.0) / c.scale, dscale.data_ptr<double>());
        C10_CUDA_KERNEL_LAUNCH_CHECK();
      }
    }
    return {dqn, dkn, want_scale ? dscale.to(scale) : at::Tensor()};
  }

  // dn (the gradient of the unit rows xn, plus grad_n if defined) as a gradient of x.
  static at::Tensor raw_gradient(
      const at::Tensor& dn, const at::Tensor& grad_n, const at::Tensor& x, const at::Tensor& xn) {
    at::Tensor out = at::empty(x.sizes(), x.options());
    const auto dtype = x.scalar_type();
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, dtype, "contrastive_normalize_backward_cuda", [&] {
      using T = at::opmath_type<scalar_t>;
      normalize_backward_kernel<<<blocks(x.size(0), kWarps), kThreads, 0, at::cuda::getCurrentCUDAStream()>>>(
          x.const_data_ptr<scalar_t>(), xn.const_data_ptr<T>(), dn.const_data_ptr<T>(),
          grad_n.defined() ? grad_n.const_data_ptr<T>() : nullptr, out.data_ptr<scalar_t>(), x.size(0), x.size(1));
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    });
    return out;
  }
};

}  // namespace

TORCH_LIBRARY_IMPL(ssl_fast, CUDA, m) { ContrastiveOps<Passes>::impl(m); }

}  // namespace ssl_fast::cuda
