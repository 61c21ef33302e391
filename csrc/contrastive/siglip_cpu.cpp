// CPU kernel of SigLIP's sigmoid loss; the math is in contrastive/siglip.h.
//
// Nothing rows x cols is stored. The logits are cut into tiles (tiles.h), each one GEMM
// s = img_I txt_J^T into a per-thread buffer, consumed at once by an elementwise
// epilogue: softplus(-y z) for the loss, and, when gradients are wanted, G = -y sigmoid(-y z)
// written over s, whose sums give d scale (G . s) and d bias, and which feeds two more
// GEMMs, d img_I += G txt_J and d txt_J += G^T img_I. One exp serves an element's loss
// and gradient: with u = -y z and e = exp(-|u|), softplus(u) = max(u, 0) + log1p(e) and
// sigmoid(u) = (u >= 0 ? 1 : e) / (1 + e). The forward computes the gradients too when
// asked (compute_grad), so that loss.backward() costs no second pass over the pairs.
//
// Tiles run in the rounds of cross_rounds (the threads take a round's tiles as they come
// free), every sum in a fixed order, and the GEMMs are ssl_fast's own (tile_gemm.h): the bits
// do not depend on the thread count.
#include <ATen/Dispatch.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <vector>

#include "../common/logmath.h"
#include "../common/simd.h"
#include "scratch.h"
#include "siglip.h"
#include "tile_gemm.h"
#include "tiles.h"

namespace ssl_fast::cpu {
namespace {

// The sums of one tile, each over its pairs.
struct TileSums {
  double loss = 0, g_dot_s = 0, g_sum = 0;
};

// The epilogue of a tile of logits s (ni x nj, leading dimension kTile): with kLoss the
// sum of softplus(-y z), with kGrad G over s and the sums of G s and G. Row i's positive
// is at tile column pos0 + i (none when outside the tile).
template <bool kLoss, bool kGrad, typename T>
SSL_FAST_INLINE TileSums epilogue(T* s, int64_t ni, int64_t nj, int64_t pos0, T a, T b) {
  TileSums sums;
  for (int64_t i = 0; i < ni; ++i) {
    T* row = s + i * kTile;
    const int64_t pos = pos0 + i;
    T loss[kLanes] = {}, g_dot_s[kLanes] = {}, g_sum[kLanes] = {};
    auto element = [&](int64_t j, int k) __attribute__((always_inline)) {
      const T x = row[j];
      const T z = a * x + b;
      const bool positive = j == pos;
      const T u = positive ? -z : z;
      const T e = tile_exp(-std::abs(u));
      if constexpr (kLoss) loss[k] += std::max(u, T(0)) + logmath::log1p_unit(e);
      if constexpr (kGrad) {
        const T sigmoid = (u >= 0 ? T(1) : e) / (T(1) + e);
        const T g = positive ? -sigmoid : sigmoid;
        g_dot_s[k] += g * x;
        g_sum[k] += g;
        row[j] = g;
      }
    };
    const int64_t nj_lanes = nj - nj % kLanes;
    for (int64_t j = 0; j < nj_lanes; j += kLanes) {
      for (int k = 0; k < kLanes; ++k) element(j + k, k);
    }
    for (int64_t j = nj_lanes; j < nj; ++j) element(j, int(j - nj_lanes));
    if constexpr (kLoss) sums.loss += double(sum_lanes(loss));
    if constexpr (kGrad) {
      sums.g_dot_s += double(sum_lanes(g_dot_s));
      sums.g_sum += double(sum_lanes(g_sum));
    }
  }
  return sums;
}

template <typename T>
SSL_FAST_INLINE TileSums epilogue_impl(T* s, int64_t ni, int64_t nj, int64_t pos0, T a, T b, bool loss, bool grad) {
  // Explicit calls, not a generic lambda: a lambda would not be inlined into the clones.
  if (loss) {
    return grad ? epilogue<true, true>(s, ni, nj, pos0, a, b) : epilogue<true, false>(s, ni, nj, pos0, a, b);
  }
  return grad ? epilogue<false, true>(s, ni, nj, pos0, a, b) : TileSums{};
}

SSL_FAST_CLONES TileSums tile_epilogue(
    float* s, int64_t ni, int64_t nj, int64_t pos0, float a, float b, bool loss, bool grad) {
  return epilogue_impl(s, ni, nj, pos0, a, b, loss, grad);
}

TileSums tile_epilogue(double* s, int64_t ni, int64_t nj, int64_t pos0, double a, double b, bool loss, bool grad) {
  return epilogue_impl(s, ni, nj, pos0, a, b, loss, grad);
}

template <typename T>
SiglipSums run_tiles(const SiglipCall& c, bool want_loss, std::array<bool, 4> grads, double weight) {
  const int64_t d = c.dim;
  const T* img = c.img.const_data_ptr<T>();
  const T* txt = c.txt.const_data_ptr<T>();
  SiglipSums out;
  if (grads[0]) out.dimg = at::zeros({c.rows, d}, c.img.options());
  if (grads[1]) out.dtxt = at::zeros({c.cols, d}, c.txt.options());
  T* dimg = grads[0] ? out.dimg.data_ptr<T>() : nullptr;
  T* dtxt = grads[1] ? out.dtxt.data_ptr<T>() : nullptr;
  const bool want_grad = grads[0] || grads[1] || grads[2] || grads[3];
  if (!want_loss && !want_grad) return out;
  const double scale = c.scale.item<double>();  // on the CPU, as img is: free to read
  const T a = T(scale), b = T(c.bias.item<double>());
  const T alpha = T(scale * weight / double(c.rows));  // d img = alpha G txt, d txt = alpha G^T img
  const int64_t block_rows = cross_block_rows(c.rows);
  const Rounds rounds = cross_rounds((c.rows + block_rows - 1) / block_rows, (c.cols + kTile - 1) / kTile);
  std::vector<TileSums> partial;  // per tile of the schedule, summed in schedule order
  for (const auto& round : rounds) {
    const size_t first = partial.size();
    partial.resize(first + round.size());
    for_each_dynamic(int64_t(round.size()), [&](int64_t t) {
      T* s = thread_scratch<T, Scratch::kLogits>(kTile * kTile);
      const int64_t r0 = round[t].i * block_rows, c0 = round[t].j * kTile;
      const int64_t ni = std::min(block_rows, c.rows - r0), nj = std::min(kTile, c.cols - c0);
      tile_gemm::nt(ni, nj, d, T(1), img + r0 * d, d, txt + c0 * d, d, s, kTile);
      partial[first + t] = tile_epilogue(s, ni, nj, r0 + c.offset - c0, a, b, want_loss, want_grad);
      if (dimg != nullptr) tile_gemm::acc(false, ni, d, nj, alpha, s, kTile, txt + c0 * d, d, dimg + r0 * d, d);
      if (dtxt != nullptr) tile_gemm::acc(true, nj, d, ni, alpha, s, kTile, img + r0 * d, d, dtxt + c0 * d, d);
    });
  }
  TileSums total;
  for (const TileSums& p : partial) {
    total.loss += p.loss;
    total.g_dot_s += p.g_dot_s;
    total.g_sum += p.g_sum;
  }
  const double per_row = weight / double(c.rows);
  out.loss = at::scalar_tensor(total.loss * per_row, at::kDouble);
  out.dscale = at::scalar_tensor(total.g_dot_s * per_row, at::kDouble);
  out.dbias = at::scalar_tensor(total.g_sum * per_row, at::kDouble);
  return out;
}

// The pass of this backend, for SiglipOps (contrastive/siglip.h).
struct Passes {
  static SiglipSums run(const SiglipCall& c, bool loss, std::array<bool, 4> grads, const at::Tensor& weight) {
    const double w = weight.defined() ? weight.item<double>() : 1.0;  // a CPU tensor: free to read
    SiglipSums out;
    AT_DISPATCH_FLOATING_TYPES(c.acc, "siglip", [&] { out = run_tiles<scalar_t>(c, loss, grads, w); });
    return out;
  }
};

}  // namespace

TORCH_LIBRARY_IMPL(ssl_fast, CPU, m) { SiglipOps<Passes>::impl(m); }

}  // namespace ssl_fast::cpu
