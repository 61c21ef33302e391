// Device helpers shared by the two CUDA implementations of the contrastive log-sum-exp:
// contrastive/cuda.cu (stage 1, cuBLAS strips) and contrastive/fused.cu (tensor-core tiles).
#pragma once

#include <cmath>
#include <cstdint>

#include "args.h"

namespace ssl_fast::cuda {

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
