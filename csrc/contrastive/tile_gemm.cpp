// The tile GEMMs of tile_gemm.h: packed operands and a register-blocked micro-kernel
// (after GotoBLAS / BLIS), compiled once per instruction set; simd_level() picks one.
//
// A block of k (at most kDepth) is packed: a into panels of MR rows (k-major, so that the
// micro-kernel broadcasts a[r][p]), b into one panel of NR columns at a time (it stays in
// L1 while every row panel of a passes over it). Padding rows and columns are zero and
// never stored. The micro-kernel keeps an MR x NR block of c in registers and adds one
// product per k step to each element, in increasing k: the chain of every element is the
// same wherever the block lies, and blocks over k continue it through c exactly.
#include "tile_gemm.h"

#include <algorithm>
#include <cstring>

#include "../common/simd.h"
#include "scratch.h"

namespace ssl_fast::cpu::tile_gemm {
namespace {

constexpr int64_t kDepth = 256;  // k per packed block: a b panel (kDepth x NR) fits L1
constexpr size_t kAlign = 64;

template <typename T, int W>
struct VecOf {
  typedef T type __attribute__((vector_size(W * sizeof(T))));
};

// An MR x (NV vectors of W lanes) micro-kernel and the packing it reads.
template <typename T, int W, int MR, int NV>
struct Kernel {
  using V = typename VecOf<T, W>::type;
  static constexpr int64_t kCols = int64_t(W) * NV;

  // One vector at a time: a whole-array copy would keep the accumulators in memory.
  // (By reference: vectors passed by value would draw -Wpsabi from the baseline-ISA templates.)
  SSL_FAST_INLINE static void load(V& x, const T* p) { std::memcpy(&x, p, sizeof x); }
  SSL_FAST_INLINE static void store(T* p, const V& x) { std::memcpy(p, &x, sizeof x); }

  // c[MR x kCols] = (load ? c : 0) + sum_p ap[p][.] (outer) bp[p][.], then times *alpha
  // when alpha is given.
  SSL_FAST_INLINE static void micro(int64_t k, const T* ap, const T* bp, T* c, int64_t ldc, bool load,
                                    const T* alpha) {
    V acc[MR][NV];
    for (int r = 0; r < MR; ++r) {
      for (int v = 0; v < NV; ++v) {
        acc[r][v] = V{};
        if (load) Kernel::load(acc[r][v], c + r * ldc + v * W);
      }
    }
    for (int64_t p = 0; p < k; ++p) {
      V b[NV];
      for (int v = 0; v < NV; ++v) Kernel::load(b[v], bp + p * kCols + v * W);
      for (int r = 0; r < MR; ++r) {
        const T a = ap[p * MR + r];
        for (int v = 0; v < NV; ++v) acc[r][v] += a * b[v];
      }
    }
    if (alpha != nullptr) {
      for (int r = 0; r < MR; ++r) {
        for (int v = 0; v < NV; ++v) acc[r][v] *= *alpha;
      }
    }
    for (int r = 0; r < MR; ++r) {
      for (int v = 0; v < NV; ++v) store(c + r * ldc + v * W, acc[r][v]);
    }
  }

  // A block of rows x cols <= MR x kCols: partial ones go through a full-size copy.
  SSL_FAST_INLINE static void block(int64_t k, const T* ap, const T* bp, T* c, int64_t ldc, int64_t rows,
                                    int64_t cols, bool load, const T* alpha) {
    if (rows == MR && cols == kCols) return micro(k, ap, bp, c, ldc, load, alpha);
    alignas(kAlign) T part[MR * kCols] = {};
    if (load) {
      for (int64_t r = 0; r < rows; ++r) std::memcpy(part + r * kCols, c + r * ldc, cols * sizeof(T));
    }
    micro(k, ap, bp, part, kCols, load, alpha);
    for (int64_t r = 0; r < rows; ++r) std::memcpy(c + r * ldc, part + r * kCols, cols * sizeof(T));
  }

  // Row panels of scale * op(a)[0:m, p0:p0+kc]: element (r, p) of panel q at q*kc*MR + p*MR + r.
  SSL_FAST_INLINE static void pack_a(bool trans, const T* a, int64_t lda, int64_t m, int64_t p0, int64_t kc,
                                     T scale, T* out) {
    for (int64_t i0 = 0; i0 < m; i0 += MR) {
      T* panel = out + (i0 / MR) * kc * MR;
      const int64_t rows = std::min<int64_t>(MR, m - i0);
      for (int64_t p = 0; p < kc; ++p) {
        T* dst = panel + p * MR;
        for (int64_t r = 0; r < rows; ++r) {
          dst[r] = scale * (trans ? a[(p0 + p) * lda + i0 + r] : a[(i0 + r) * lda + p0 + p]);
        }
        for (int64_t r = rows; r < MR; ++r) dst[r] = T(0);
      }
    }
  }

  // The panel of columns [j0, j0 + cols) over k [p0, p0 + kc): element (p, j) at p*kCols + j.
  // With rows_are_cols, column j of the product is row j of b (the a b^T form).
  SSL_FAST_INLINE static void pack_b(bool rows_are_cols, const T* b, int64_t ldb, int64_t j0, int64_t cols,
                                     int64_t p0, int64_t kc, T* out) {
    for (int64_t p = 0; p < kc; ++p) {
      T* dst = out + p * kCols;
      if (rows_are_cols) {
        for (int64_t j = 0; j < cols; ++j) dst[j] = b[(j0 + j) * ldb + p0 + p];
      } else {
        std::memcpy(dst, b + (p0 + p) * ldb + j0, cols * sizeof(T));
      }
      for (int64_t j = cols; j < kCols; ++j) dst[j] = T(0);
    }
  }

  // c = alpha * op(a) b' over all k blocks; `nt` selects a b^T (c overwritten, alpha on
  // the finished sums), else c += (alpha op(a)) b.
  SSL_FAST_INLINE static void gemm(bool nt, bool trans_a, int64_t m, int64_t n, int64_t k, T alpha, const T* a,
                                   int64_t lda, const T* b, int64_t ldb, T* c, int64_t ldc) {
    if (nt && k == 0) {
      for (int64_t i = 0; i < m; ++i) std::fill(c + i * ldc, c + i * ldc + n, T(0));
      return;
    }
    const int64_t depth = std::min(k, kDepth);
    T* ap = thread_scratch<T, Scratch::kPackedA>((m + MR - 1) / MR * MR * depth);
    T* bp = thread_scratch<T, Scratch::kPackedB>(depth * kCols);
    for (int64_t p0 = 0; p0 < k; p0 += kDepth) {
      const int64_t kc = std::min(kDepth, k - p0);
      const bool load = !nt || p0 > 0;
      const T* scale_sums = nt && p0 + kc == k ? &alpha : nullptr;
      pack_a(trans_a, a, lda, m, p0, kc, nt ? T(1) : alpha, ap);
      for (int64_t j0 = 0; j0 < n; j0 += kCols) {
        const int64_t cols = std::min(kCols, n - j0);
        pack_b(nt, b, ldb, j0, cols, p0, kc, bp);
        for (int64_t i0 = 0; i0 < m; i0 += MR) {
          block(kc, ap + (i0 / MR) * kc * MR, bp, c + i0 * ldc + j0, ldc, std::min<int64_t>(MR, m - i0), cols,
                load, scale_sums);
        }
      }
    }
  }
};

// Kernel shapes per instruction set: MR x NV accumulators fill most of the vector
// registers (32 zmm, 16 ymm, 16 xmm) and hide the latency of the multiply-adds.
template <typename T>
using Avx512 = Kernel<T, 64 / sizeof(T), 8, 2>;
template <typename T>
using Avx2 = Kernel<T, 32 / sizeof(T), 6, 2>;
template <typename T>
using Baseline = Kernel<T, 16 / sizeof(T), 4, 2>;

template <typename T>
using Gemm = void (*)(bool, bool, int64_t, int64_t, int64_t, T, const T*, int64_t, const T*, int64_t, T*, int64_t);

#ifdef SSL_FAST_X86_SIMD
template <typename T>
[[gnu::target("arch=x86-64-v4")]] void gemm_avx512(bool nt, bool trans_a, int64_t m, int64_t n, int64_t k, T alpha,
                                                    const T* a, int64_t lda, const T* b, int64_t ldb, T* c,
                                                    int64_t ldc) {
  Avx512<T>::gemm(nt, trans_a, m, n, k, alpha, a, lda, b, ldb, c, ldc);
}
template <typename T>
[[gnu::target("arch=x86-64-v3")]] void gemm_avx2(bool nt, bool trans_a, int64_t m, int64_t n, int64_t k, T alpha,
                                                  const T* a, int64_t lda, const T* b, int64_t ldb, T* c,
                                                  int64_t ldc) {
  Avx2<T>::gemm(nt, trans_a, m, n, k, alpha, a, lda, b, ldb, c, ldc);
}
#endif
template <typename T>
void gemm_baseline(bool nt, bool trans_a, int64_t m, int64_t n, int64_t k, T alpha, const T* a, int64_t lda,
                   const T* b, int64_t ldb, T* c, int64_t ldc) {
  Baseline<T>::gemm(nt, trans_a, m, n, k, alpha, a, lda, b, ldb, c, ldc);
}

template <typename T>
Gemm<T> kernel() {
  switch (simd_level()) {
#ifdef SSL_FAST_X86_SIMD
    case SimdLevel::kAvx512:
      return &gemm_avx512<T>;
    case SimdLevel::kAvx2:
      return &gemm_avx2<T>;
#endif
    default:
      return &gemm_baseline<T>;
  }
}

}  // namespace

template <typename T>
void nt(int64_t m, int64_t n, int64_t k, T alpha, const T* a, int64_t lda, const T* b, int64_t ldb, T* c,
        int64_t ldc) {
  kernel<T>()(true, false, m, n, k, alpha, a, lda, b, ldb, c, ldc);
}

template <typename T>
void acc(bool trans_a, int64_t m, int64_t n, int64_t k, T alpha, const T* a, int64_t lda, const T* b, int64_t ldb,
         T* c, int64_t ldc) {
  kernel<T>()(false, trans_a, m, n, k, alpha, a, lda, b, ldb, c, ldc);
}

template void nt<float>(int64_t, int64_t, int64_t, float, const float*, int64_t, const float*, int64_t, float*,
                        int64_t);
template void nt<double>(int64_t, int64_t, int64_t, double, const double*, int64_t, const double*, int64_t, double*,
                         int64_t);
template void acc<float>(bool, int64_t, int64_t, int64_t, float, const float*, int64_t, const float*, int64_t,
                         float*, int64_t);
template void acc<double>(bool, int64_t, int64_t, int64_t, double, const double*, int64_t, const double*, int64_t,
                          double*, int64_t);

}  // namespace ssl_fast::cpu::tile_gemm
