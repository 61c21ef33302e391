// CPU kernels of the contrastive log-sum-exp (NT-Xent, InfoNCE); the math is in
// contrastive/args.h.
//
// Nothing rows x cols is stored. The logits are cut into kTile x kTile tiles (fewer
// rows for a few queries against many keys: cross_block_rows); each is
// one GEMM into a per-thread buffer, consumed at once by a fused epilogue (exp, sums,
// gradient factors). Tiles run in rounds in which no two tiles share a row block or a
// column block, so a round runs in parallel without locks or atomics and every block
// adds its tiles in round order. The GEMMs are single-threaded and fix the summation
// order of every element (tile_gemm.h): results do not depend on the thread count.
//
// Without k (NT-Xent) the logits are symmetric: only tiles on and above the diagonal
// are computed, and each off-diagonal tile serves both its row block and its column
// block, in the forward (row and column sums) and in the backward (dz_I += G z_J and
// dz_J += G^T z_I). That is 2 GEMM-equivalents for forward + backward instead of 3.
//
// Exps: while 2 * scale is well inside the exponent range, one shift c = scale (an
// upper bound of every logit, the rows being unit vectors) serves all rows and columns,
// so each logit costs one exp in the forward (it feeds a row and a column sum) and one
// in the backward: P_ij = exp(s_ij - c) * exp(c - lse_i). Above that, each tile shifts
// by its own row and column maxima (flash-attention style) at two exps per logit.
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <type_traits>
#include <vector>

#include "../common/simd.h"
#include "args.h"
#include "scratch.h"
#include "tile_gemm.h"
#include "tiles.h"

namespace ssl_fast::cpu {
namespace {

// The float epilogues are SSL_FAST_CLONES (common/simd.h): AVX2 and FMA give three times the
// speed of the baseline's SSE2 exp.

// Largest scale at which the shared shift c = scale is used: exp(s - c) >= exp(-2 scale)
// stays normal, and exp(c - lse) <= exp(2 scale) leaves room for the gradient factor.
template <typename T>
constexpr double kSharedShiftMax = std::is_same_v<T, float> ? 30.0 : 300.0;

// Tiles on and above the diagonal of an nb x nb block grid: the diagonal first, then
// the pairs of a round-robin tournament (circle method), each round a perfect matching.
Rounds self_rounds(int64_t nb) {
  Rounds rounds(1);
  for (int64_t i = 0; i < nb; ++i) rounds[0].push_back({i, i});
  const int64_t n = nb + (nb & 1);  // the circle method needs an even count; block nb sits out
  for (int64_t r = 0; r + 1 < n; ++r) {
    std::vector<Tile> round;
    auto pair = [&](int64_t a, int64_t b) {
      if (a < nb && b < nb) round.push_back({std::min(a, b), std::max(a, b)});
    };
    pair(r, n - 1);
    for (int64_t k = 1; k < n / 2; ++k) pair((r + k) % (n - 1), (r - k + n - 1) % (n - 1));
    if (!round.empty()) rounds.push_back(std::move(round));
  }
  return rounds;
}

// log sum exp of one index as shift + log(sum), merged tile by tile in a fixed order.
template <typename acc_t>
struct RunningLse {
  std::vector<acc_t> shift;
  std::vector<double> sum;
  explicit RunningLse(int64_t n) : shift(n, acc_t(0)), sum(n, 0.0) {}
  void add(int64_t idx, acc_t s, acc_t v) {
    if (v == 0) return;
    double& total = sum[idx];
    acc_t& m = shift[idx];
    if (total == 0) {
      m = s;
      total = v;
    } else if (s <= m) {
      total += double(v) * std::exp(double(s - m));
    } else {
      total = total * std::exp(double(m - s)) + double(v);
      m = s;
    }
  }
  void write(acc_t* out) const {
    for (size_t i = 0; i < sum.size(); ++i) {
      // An index without terms has sum 0; NaN (from a NaN input) stays NaN.
      out[i] = sum[i] == 0 ? -std::numeric_limits<acc_t>::infinity() : acc_t(double(shift[i]) + std::log(sum[i]));
    }
  }
};

// One call's operands in the accumulation type, contiguous [rows or cols, dim]; kn is
// qn without k.
template <typename acc_t>
struct Problem {
  const acc_t* qn;
  const acc_t* kn;
  int64_t rows, cols, dim;
  const int64_t* exclude;  // per row, -1 for none; nullptr without k or exclude
  bool self;
  acc_t scale;
  bool shared;  // one shift c = scale for every row and column
  int64_t block_rows;  // rows per row block (kTile, or fewer: cross_block_rows)
  int64_t blocks_q() const { return (rows + block_rows - 1) / block_rows; }
  int64_t blocks_k() const { return (cols + kTile - 1) / kTile; }
  Rounds rounds() const { return self ? self_rounds(blocks_q()) : cross_rounds(blocks_q(), blocks_k()); }
};

// A tile's logits scale * qn_I kn_J^T in s (leading dimension kTile), excluded pairs -inf.
template <typename acc_t>
struct TileLogits {
  int64_t r0, c0, ni, nj;
  bool diagonal;  // a diagonal tile of the self form
  TileLogits(const Problem<acc_t>& p, Tile t, acc_t* s)
      : r0(t.i * p.block_rows), c0(t.j * kTile), ni(std::min(p.block_rows, p.rows - r0)),
        nj(std::min(kTile, p.cols - c0)), diagonal(p.self && t.i == t.j) {
    tile_gemm::nt(ni, nj, p.dim, p.scale, p.qn + r0 * p.dim, p.dim, p.kn + c0 * p.dim, p.dim, s, kTile);
    constexpr acc_t kNegInf = -std::numeric_limits<acc_t>::infinity();
    if (diagonal) {
      for (int64_t i = 0; i < ni; ++i) s[i * kTile + i] = kNegInf;
    } else if (p.exclude != nullptr) {
      for (int64_t i = 0; i < ni; ++i) {
        const int64_t j = p.exclude[r0 + i] - c0;
        if (j >= 0 && j < nj) s[i * kTile + j] = kNegInf;
      }
    }
  }
};

// Row sums (and with kCols column sums) of exp(s - c) over a tile.
template <bool kCols, typename acc_t>
SSL_FAST_INLINE void shared_shift_sums(const acc_t* s, int64_t ni, int64_t nj, acc_t c, acc_t* row_sum, acc_t* col_sum) {
  if constexpr (kCols) std::fill(col_sum, col_sum + nj, acc_t(0));
  const int64_t nj_lanes = nj - nj % kLanes;
  for (int64_t i = 0; i < ni; ++i) {
    const acc_t* row = s + i * kTile;
    acc_t lane[kLanes] = {};
    for (int64_t j = 0; j < nj_lanes; j += kLanes) {
      for (int k = 0; k < kLanes; ++k) {
        const acc_t e = tile_exp(row[j + k] - c);
        lane[k] += e;
        if constexpr (kCols) col_sum[j + k] += e;
      }
    }
    for (int64_t j = nj_lanes; j < nj; ++j) {
      const acc_t e = tile_exp(row[j] - c);
      lane[j - nj_lanes] += e;
      if constexpr (kCols) col_sum[j] += e;
    }
    row_sum[i] = sum_lanes(lane);
  }
}

// Row maxima and sums of exp(s - row max); with kCols the same for the columns.
template <bool kCols, typename acc_t>
SSL_FAST_INLINE void own_shift_sums(
    const acc_t* s, int64_t ni, int64_t nj, acc_t* row_max, acc_t* row_sum, acc_t* col_max, acc_t* col_sum) {
  constexpr acc_t kNegInf = -std::numeric_limits<acc_t>::infinity();
  if constexpr (kCols) {
    std::fill(col_max, col_max + nj, kNegInf);
    std::fill(col_sum, col_sum + nj, acc_t(0));
  }
  for (int64_t i = 0; i < ni; ++i) {
    const acc_t* row = s + i * kTile;
    acc_t m = kNegInf;
    for (int64_t j = 0; j < nj; ++j) {
      m = std::max(m, row[j]);
      if constexpr (kCols) col_max[j] = std::max(col_max[j], row[j]);
    }
    row_max[i] = m == kNegInf ? acc_t(0) : m;  // an all-excluded row: its sum is 0
  }
  if constexpr (kCols) {
    for (int64_t j = 0; j < nj; ++j) col_max[j] = col_max[j] == kNegInf ? acc_t(0) : col_max[j];
  }
  for (int64_t i = 0; i < ni; ++i) {
    const acc_t* row = s + i * kTile;
    const acc_t m = row_max[i];
    acc_t sum = 0;
    for (int64_t j = 0; j < nj; ++j) {
      sum += tile_exp(row[j] - m);
      if constexpr (kCols) col_sum[j] += tile_exp(row[j] - col_max[j]);
    }
    row_sum[i] = sum;
  }
}

// Row (and with cols column) shifts and sums of one tile; the shifts are c with `shared`.
template <typename acc_t>
SSL_FAST_INLINE void tile_sums_impl(
    const acc_t* s, int64_t ni, int64_t nj, bool shared, bool cols, acc_t c, acc_t* row_shift, acc_t* row_sum,
    acc_t* col_shift, acc_t* col_sum) {
  if (shared) {
    cols ? shared_shift_sums<true>(s, ni, nj, c, row_sum, col_sum)
         : shared_shift_sums<false>(s, ni, nj, c, row_sum, col_sum);
  } else {
    cols ? own_shift_sums<true>(s, ni, nj, row_shift, row_sum, col_shift, col_sum)
         : own_shift_sums<false>(s, ni, nj, row_shift, row_sum, col_shift, col_sum);
  }
}

SSL_FAST_CLONES void tile_sums(
    const float* s, int64_t ni, int64_t nj, bool shared, bool cols, float c, float* row_shift, float* row_sum,
    float* col_shift, float* col_sum) {
  tile_sums_impl(s, ni, nj, shared, cols, c, row_shift, row_sum, col_shift, col_sum);
}

void tile_sums(
    const double* s, int64_t ni, int64_t nj, bool shared, bool cols, double c, double* row_shift, double* row_sum,
    double* col_shift, double* col_sum) {
  tile_sums_impl(s, ni, nj, shared, cols, c, row_shift, row_sum, col_shift, col_sum);
}

template <typename acc_t>
void forward(const Problem<acc_t>& p, bool want_cols, acc_t* row_lse, acc_t* col_lse) {
  RunningLse<acc_t> rows(p.rows);
  RunningLse<acc_t> cols(p.self ? 0 : (want_cols ? p.cols : 0));
  RunningLse<acc_t>& col_acc = p.self ? rows : cols;
  const acc_t c = p.scale;
  for (const auto& round : p.rounds()) {
    at::parallel_for(0, int64_t(round.size()), 1, [&](int64_t begin, int64_t end) {
      acc_t* s = thread_scratch<acc_t, Scratch::kLogits>(kTile * kTile);
      std::vector<acc_t> row_shift(kTile, c), row_sum(kTile), col_shift(kTile, c), col_sum(kTile);
      for (int64_t t = begin; t < end; ++t) {
        const TileLogits<acc_t> tile(p, round[t], s);
        const bool cols_here = p.self ? !tile.diagonal : want_cols;
        tile_sums(s, tile.ni, tile.nj, p.shared, cols_here, c, row_shift.data(), row_sum.data(), col_shift.data(),
                  col_sum.data());
        for (int64_t i = 0; i < tile.ni; ++i) rows.add(tile.r0 + i, row_shift[i], row_sum[i]);
        if (cols_here) {
          for (int64_t j = 0; j < tile.nj; ++j) col_acc.add(tile.c0 + j, col_shift[j], col_sum[j]);
        }
      }
    });
  }
  rows.write(row_lse);
  if (!p.self && want_cols) cols.write(col_lse);
}

// Per-index inputs of the backward epilogue: the gradient of an lse and the lse itself.
template <typename acc_t>
struct LseGrad {
  const acc_t* grad = nullptr;  // nullptr: this side has no gradient
  const acc_t* lse = nullptr;
  // The factor of exp(s - c) in the gradient of the shared form: grad * exp(c - lse).
  SSL_FAST_INLINE acc_t shared_factor(int64_t idx, acc_t c) const {
    if (grad == nullptr || lse[idx] == -std::numeric_limits<acc_t>::infinity()) return 0;
    return grad[idx] * tile_exp(c - lse[idx]);
  }
  // The lse to subtract in the own-shift form; +inf for an index without terms.
  SSL_FAST_INLINE acc_t shift(int64_t idx) const {
    const acc_t l = lse[idx];
    return l == -std::numeric_limits<acc_t>::infinity() ? std::numeric_limits<acc_t>::infinity() : l;
  }
};

// Overwrites a tile's logits with G_ij = g_i P_ij + g'_j P'_ij, the gradient of the
// row and column lse's with respect to the logit; with kScale returns sum_ij G_ij s_ij.
// `col_factor` is scratch for one value per column.
template <bool kShared, bool kScale, typename acc_t>
SSL_FAST_INLINE double gradient_tile(
    acc_t* s, int64_t ni, int64_t nj, int64_t r0, int64_t c0, const LseGrad<acc_t>& row,
    const LseGrad<acc_t>& col, acc_t c, acc_t* col_grad, acc_t* col_shift) {
  for (int64_t j = 0; j < nj; ++j) {
    if constexpr (kShared) {
      col_grad[j] = col.shared_factor(c0 + j, c);
    } else {
      col_grad[j] = col.grad == nullptr ? acc_t(0) : col.grad[c0 + j];
      col_shift[j] = col.grad == nullptr ? acc_t(0) : col.shift(c0 + j);
    }
  }
  double g_dot_s = 0;
  for (int64_t i = 0; i < ni; ++i) {
    acc_t* t = s + i * kTile;
    const acc_t row_grad = kShared ? row.shared_factor(r0 + i, c)
                                   : (row.grad == nullptr ? acc_t(0) : row.grad[r0 + i]);
    const acc_t row_shift = kShared || row.grad == nullptr ? acc_t(0) : row.shift(r0 + i);
    auto gradient = [&](int64_t j) __attribute__((always_inline)) {
      const acc_t x = t[j];
      if constexpr (kShared) return tile_exp(x - c) * (row_grad + col_grad[j]);
      return row_grad * tile_exp(x - row_shift) + col_grad[j] * tile_exp(x - col_shift[j]);
    };
    if constexpr (!kScale) {
      for (int64_t j = 0; j < nj; ++j) t[j] = gradient(j);
      continue;
    }
    // With kScale, also sum G_ij s_ij (s is -inf where G is 0).
    acc_t lane[kLanes] = {};
    const int64_t nj_lanes = nj - nj % kLanes;
    for (int64_t j = 0; j < nj_lanes; j += kLanes) {
      for (int k = 0; k < kLanes; ++k) {
        const acc_t g = gradient(j + k);
        lane[k] += g == 0 ? acc_t(0) : g * t[j + k];
        t[j + k] = g;
      }
    }
    for (int64_t j = nj_lanes; j < nj; ++j) {
      const acc_t g = gradient(j);
      lane[j - nj_lanes] += g == 0 ? acc_t(0) : g * t[j];
      t[j] = g;
    }
    g_dot_s += double(sum_lanes(lane));
  }
  return g_dot_s;
}

template <typename acc_t>
SSL_FAST_INLINE double tile_gradient_impl(
    acc_t* s, int64_t ni, int64_t nj, int64_t r0, int64_t c0, const LseGrad<acc_t>& row, const LseGrad<acc_t>& col,
    acc_t c, bool shared, bool want_scale, acc_t* col_grad, acc_t* col_shift) {
  // Explicit calls, not a generic lambda: a lambda would not be inlined into the clones.
  if (shared) {
    return want_scale ? gradient_tile<true, true>(s, ni, nj, r0, c0, row, col, c, col_grad, col_shift)
                      : gradient_tile<true, false>(s, ni, nj, r0, c0, row, col, c, col_grad, col_shift);
  }
  return want_scale ? gradient_tile<false, true>(s, ni, nj, r0, c0, row, col, c, col_grad, col_shift)
                    : gradient_tile<false, false>(s, ni, nj, r0, c0, row, col, c, col_grad, col_shift);
}

SSL_FAST_CLONES double tile_gradient(
    float* s, int64_t ni, int64_t nj, int64_t r0, int64_t c0, const LseGrad<float>& row, const LseGrad<float>& col,
    float c, bool shared, bool want_scale, float* col_grad, float* col_shift) {
  return tile_gradient_impl(s, ni, nj, r0, c0, row, col, c, shared, want_scale, col_grad, col_shift);
}

double tile_gradient(
    double* s, int64_t ni, int64_t nj, int64_t r0, int64_t c0, const LseGrad<double>& row,
    const LseGrad<double>& col, double c, bool shared, bool want_scale, double* col_grad, double* col_shift) {
  return tile_gradient_impl(s, ni, nj, r0, c0, row, col, c, shared, want_scale, col_grad, col_shift);
}

// d loss / d x for x = v / max(|v|, eps) (F.normalize's derivative), in place on g.
template <typename scalar_t, typename acc_t>
void normalize_backward(const scalar_t* v, const acc_t* vn, acc_t* g, int64_t n, int64_t d) {
  at::parallel_for(0, n, std::max<int64_t>(1, 16384 / d), [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      const scalar_t* x = v + i * d;
      const acc_t* u = vn + i * d;
      acc_t* gi = g + i * d;
      acc_t sq = 0, dot = 0;
      for (int64_t k = 0; k < d; ++k) {
        sq += acc_t(x[k]) * acc_t(x[k]);
        dot += u[k] * gi[k];
      }
      const acc_t norm = std::sqrt(sq);
      if (norm >= acc_t(kNormEps)) {
        for (int64_t k = 0; k < d; ++k) gi[k] = (gi[k] - u[k] * dot) / norm;
      } else {
        for (int64_t k = 0; k < d; ++k) gi[k] = gi[k] / acc_t(kNormEps);
      }
    }
  });
}

template <typename scalar_t, typename acc_t>
void normalize(const scalar_t* v, acc_t* out, int64_t n, int64_t d) {
  at::parallel_for(0, n, std::max<int64_t>(1, 16384 / d), [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      const scalar_t* x = v + i * d;
      acc_t sq = 0;
      for (int64_t k = 0; k < d; ++k) sq += acc_t(x[k]) * acc_t(x[k]);
      const acc_t norm = std::max(std::sqrt(sq), acc_t(kNormEps));
      for (int64_t k = 0; k < d; ++k) out[i * d + k] = acc_t(x[k]) / norm;
    }
  });
}

void check_exclude(const ContrastiveCall& c) {
  if (!c.exclude.defined()) return;
  const int64_t* ex = c.exclude.const_data_ptr<int64_t>();
  for (int64_t i = 0; i < c.rows; ++i) {
    TORCH_CHECK(
        ex[i] >= -1 && ex[i] < c.cols, "contrastive_lse: exclude[", i, "] = ", ex[i],
        " is outside [-1, ", c.cols, ")");
  }
}

template <typename acc_t>
Problem<acc_t> problem(const ContrastiveCall& c, const at::Tensor& qn, const at::Tensor& kn) {
  return Problem<acc_t>{
      qn.const_data_ptr<acc_t>(),
      (c.self() ? qn : kn).const_data_ptr<acc_t>(),
      c.rows,
      c.cols,
      c.dim,
      c.exclude.defined() ? c.exclude.const_data_ptr<int64_t>() : nullptr,
      c.self(),
      acc_t(c.scale),
      c.scale <= kSharedShiftMax<acc_t>,
      c.self() ? kTile : cross_block_rows(c.rows)};
}

template <typename acc_t>
double backward(const Problem<acc_t>& p, const LseGrad<acc_t>& row, const LseGrad<acc_t>& col, acc_t* dqn,
                acc_t* dkn, bool want_scale) {
  const Rounds rounds = p.rounds();
  const int64_t d = p.dim;
  std::vector<double> partial;  // per tile of the schedule, summed in schedule order
  for (const auto& round : rounds) {
    const size_t first = partial.size();
    partial.resize(first + round.size(), 0.0);
    at::parallel_for(0, int64_t(round.size()), 1, [&](int64_t begin, int64_t end) {
      acc_t* g = thread_scratch<acc_t, Scratch::kLogits>(kTile * kTile);
      std::vector<acc_t> col_grad(kTile), col_shift(kTile);
      for (int64_t t = begin; t < end; ++t) {
        const TileLogits<acc_t> tile(p, round[t], g);
        // Without k a tile is both (I, J) and (J, I): the column side is the row side.
        const double gs = tile_gradient(
            g, tile.ni, tile.nj, tile.r0, tile.c0, row, p.self ? row : col, p.scale, p.shared, want_scale,
            col_grad.data(), col_shift.data());
        partial[first + t] = tile.diagonal ? gs / 2 : gs;  // a diagonal tile holds each pair twice
        // d qn_I += scale G kn_J; d kn_J (or, without k, d qn_J) += scale G^T qn_I.
        tile_gemm::acc(false, tile.ni, d, tile.nj, p.scale, g, kTile, p.kn + tile.c0 * d, d, dqn + tile.r0 * d, d);
        acc_t* dcols = p.self ? (tile.diagonal ? nullptr : dqn) : dkn;
        if (dcols != nullptr) {
          tile_gemm::acc(true, tile.nj, d, tile.ni, p.scale, g, kTile, p.qn + tile.r0 * d, d, dcols + tile.c0 * d, d);
        }
      }
    });
  }
  double total = 0;
  for (double v : partial) total += v;
  return total / double(p.scale);  // d lse / d scale = P . (qn kn^T) = P . s / scale
}

// The passes of this backend, for ContrastiveOps (contrastive/args.h).
struct Passes {
  static at::Tensor normalized(const at::Tensor& x, at::ScalarType acc) {
    at::Tensor out = at::empty(x.sizes(), x.options().dtype(acc));
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "contrastive_normalize", [&] {
      using acc_t = at::opmath_type<scalar_t>;
      normalize(x.const_data_ptr<scalar_t>(), out.data_ptr<acc_t>(), x.size(0), x.size(1));
    });
    return out;
  }

  static void lse(const ContrastiveCall& c, const at::Tensor& qn, const at::Tensor& kn, at::Tensor& row,
                  at::Tensor& col) {
    check_exclude(c);
    AT_DISPATCH_FLOATING_TYPES(c.acc, "contrastive_lse", [&] {
      forward(problem<scalar_t>(c, qn, kn), col.numel() > 0, row.data_ptr<scalar_t>(),
              col.numel() ? col.data_ptr<scalar_t>() : nullptr);
    });
  }

  // d qn is computed whether asked for or not: the tiles of the self form add to it.
  static std::tuple<at::Tensor, at::Tensor, at::Tensor> lse_backward(
      const ContrastiveCall& c, const ContrastiveGrads& g, const at::TensorOptions& scale) {
    const bool want_k = g.output_mask[1] && !c.self(), want_scale = g.output_mask[2];
    at::Tensor dqn = at::zeros_like(g.qn);
    at::Tensor dkn = want_k ? at::zeros_like(g.kn) : at::Tensor();
    double dscale = 0;
    if (g.grad_row.defined() || g.grad_col.defined()) {
      AT_DISPATCH_FLOATING_TYPES(c.acc, "contrastive_lse_backward", [&] {
        LseGrad<scalar_t> row, col;
        if (g.grad_row.defined()) row = {g.grad_row.const_data_ptr<scalar_t>(), g.row_lse.const_data_ptr<scalar_t>()};
        if (g.grad_col.defined()) col = {g.grad_col.const_data_ptr<scalar_t>(), g.col_lse.const_data_ptr<scalar_t>()};
        dscale = backward(problem<scalar_t>(c, g.qn, g.kn), row, col, dqn.data_ptr<scalar_t>(),
                          want_k ? dkn.data_ptr<scalar_t>() : nullptr, want_scale);
      });
    }
    return {dqn, dkn, want_scale ? at::full({}, dscale, scale) : at::Tensor()};
  }

  // Adds an incoming gradient of the unit rows, then turns it into the gradient of the raw rows.
  static at::Tensor raw_gradient(at::Tensor dn, const at::Tensor& grad_n, const at::Tensor& x, const at::Tensor& xn) {
    if (grad_n.defined()) dn.add_(grad_n);
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "contrastive_normalize_backward", [&] {
      using acc_t = at::opmath_type<scalar_t>;
      normalize_backward(x.const_data_ptr<scalar_t>(), xn.const_data_ptr<acc_t>(), dn.data_ptr<acc_t>(), x.size(0),
                         x.size(1));
    });
    return dn.to(x.scalar_type());
  }
};

}  // namespace

TORCH_LIBRARY_IMPL(ssl_fast, CPU, m) { ContrastiveOps<Passes>::impl(m); }

}  // namespace ssl_fast::cpu
