// Single-threaded GEMMs for the contrastive tiles.
//
// They are written here rather than taken from torch's BLAS because the BLAS picks its
// code path, and with it the summation order, by CPU, by thread count and by whether it
// is called inside a parallel region: the same tile could round differently on 1 and 2
// threads. Here every output element is one chain of multiply-adds over k in increasing
// order, whatever the thread count, the blocking or the element's place in the tile.
// With AVX-512 and with AVX2 the chain is of fused multiply-adds and the bits are the
// same; the baseline (common/simd.h) rounds each product. dot(a, b) and dot(b, a) are
// the same chain: the logits of the self form are exactly symmetric.
#pragma once

#include <cstdint>

namespace ssl_fast::cpu::tile_gemm {

// c[m x n] = alpha * (a b^T), a [m x k] and b [n x k] with contiguous rows (strides
// lda, ldb), c with row stride ldc. alpha multiplies the finished dot products.
template <typename T>
void nt(int64_t m, int64_t n, int64_t k, T alpha, const T* a, int64_t lda, const T* b, int64_t ldb, T* c,
        int64_t ldc);

// c[m x n] += (alpha * op(a)) b, b [k x n] with contiguous rows; op(a) is a [m x k]
// (row stride lda) or, with trans_a, the transpose of a [k x m]. alpha scales op(a)
// before the products.
template <typename T>
void acc(bool trans_a, int64_t m, int64_t n, int64_t k, T alpha, const T* a, int64_t lda, const T* b, int64_t ldb,
         T* c, int64_t ldc);

}  // namespace ssl_fast::cpu::tile_gemm
