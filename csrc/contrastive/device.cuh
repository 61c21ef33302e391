// Device helpers shared by the CUDA kernels of the contrastive family: contrastive/cuda.cu
// (the log-sum-exp's stage 1, cuBLAS strips), contrastive/fused.cu (its tensor-core tiles)
// and contrastive/siglip_cuda.cu.
#pragma once

#include <cmath>
#include <cstdint>

#include "args.h"

namespace ssl_fast::cuda {

constexpr int kThreads = 256;  // one block per row in the row epilogues
constexpr int kWarps = kThreads / 32;

// Grid sizes: the CUDA limit of 2^31 - 1 blocks is far above any batch these ops see.
inline unsigned blocks(int64_t n, int64_t per_block) { return static_cast<unsigned>((n + per_block - 1) / per_block); }

__device__ __forceinline__ float exp_(float x) { return expf(x); }
__device__ __forceinline__ double exp_(double x) { return ::exp(x); }
__device__ __forceinline__ float log_(float x) { return logf(x); }
__device__ __forceinline__ double log_(double x) { return ::log(x); }

template <typename T>
__device__ __forceinline__ T neg_inf() {
  return static_cast<T>(-INFINITY);
}

// log sum exp of a set of logits as (max, sum of exp(x - max)); empty: sum == 0.
// A plain aggregate, so that it can live in __shared__ memory. Starting from
// {c, 0} instead of empty() shifts by a fixed c while every logit stays <= c.
template <typename T>
struct MaxSum {
  T max, sum;

  static __device__ MaxSum empty() { return {neg_inf<T>(), T(0)}; }

  __device__ void add(T x) {
    if (x == neg_inf<T>()) return;  // an excluded pair
    if (x <= max) {
      sum += exp_(x - max);
    } else {  // also the first term (max = -inf, sum = 0); a NaN lands here and spreads
      sum = sum * exp_(max - x) + T(1);
      max = x;
    }
  }

  __device__ void merge(const MaxSum& o) {
    if (o.sum == T(0)) return;
    if (sum == T(0)) {
      *this = o;
    } else if (o.max <= max) {
      sum += o.sum * exp_(o.max - max);
    } else {
      sum = sum * exp_(max - o.max) + o.sum;
      max = o.max;
    }
  }

  __device__ T lse() const { return sum == T(0) ? neg_inf<T>() : max + log_(sum); }
};

template <typename T>
__device__ __forceinline__ MaxSum<T> shfl_down(MaxSum<T> v, int offset) {
  return {__shfl_down_sync(0xffffffffu, v.max, offset), __shfl_down_sync(0xffffffffu, v.sum, offset)};
}

__device__ __forceinline__ double shfl_down(double v, int offset) {
  return __shfl_down_sync(0xffffffffu, v, offset);
}

struct Add {
  __device__ double operator()(double a, double b) const { return a + b; }
};

// Combines one value per thread of a kThreads block in an order fixed by the thread
// index; the result is valid in thread 0. At most one call per kernel (one shared array).
template <typename V, typename Combine>
__device__ V block_reduce(V v, V identity, Combine combine) {
  __shared__ V warp_vals[kWarps];
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v = combine(v, shfl_down(v, o));
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  if (lane == 0) warp_vals[warp] = v;
  __syncthreads();
  if (warp == 0) {
    v = lane < kWarps ? warp_vals[lane] : identity;
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v = combine(v, shfl_down(v, o));
  }
  return v;
}

// out = factor * the sum of parts[0, n), in an order fixed by the index; one block of
// kThreads. (A template, so that each source that launches it has its own.)
template <typename T = double>
__global__ void __launch_bounds__(kThreads) sum_in_order(const T* parts, int64_t n, T factor, T* out) {
  T v = 0;
  for (int64_t i = threadIdx.x; i < n; i += kThreads) v += parts[i];
  v = block_reduce(v, T(0), Add{});
  if (threadIdx.x == 0) *out = v * factor;
}

// The excluded key of a query row: the diagonal without k, else exclude[row] (-1 for none).
struct Exclusion {
  const int64_t* exclude;  // nullptr: none, or the diagonal
  bool diagonal;
  __device__ int64_t col(int64_t row) const { return diagonal ? row : (exclude != nullptr ? exclude[row] : -1); }
};

inline Exclusion exclusion_of(const ContrastiveCall& c) {
  return {c.exclude.defined() ? c.exclude.const_data_ptr<int64_t>() : nullptr, c.self()};
}

}  // namespace ssl_fast::cuda
