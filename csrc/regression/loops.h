// Deterministic parallel loops over a TensorIterator for the CPU kernels.
// The iteration space is cut into fixed blocks, independent of the thread
// count, so a reduction sums the same partial results in the same order
// whatever the number of threads.
#pragma once

#include <ATen/Parallel.h>
#include <ATen/TensorIterator.h>

#include <array>
#include <vector>

namespace ssl_fast::cpu {

constexpr int64_t kBlock = 8192;     // elements per block
constexpr int64_t kMinParallel = 4;  // blocks below which one thread does it all
constexpr int kMaxOperands = 6;

// One operand of a 1-D run; kContig makes the stride a compile-time element size
// so that the compiler vectorises the loop.
template <typename T, bool kContig>
struct Col {
  char* base;
  int64_t stride;
  T& operator[](int64_t i) const {
    if constexpr (kContig) return reinterpret_cast<T*>(base)[i];
    return *reinterpret_cast<T*>(base + i * stride);
  }
};

// Calls run(ptrs, strides, n) for each 1-D run of elements [begin, end).
template <typename Run>
void for_each_run(at::TensorIteratorBase& iter, int64_t begin, int64_t end, Run&& run) {
  const int nt = iter.ntensors();
  TORCH_INTERNAL_ASSERT(nt <= kMaxOperands);
  std::array<char*, kMaxOperands> ptrs{};
  std::array<int64_t, kMaxOperands> strides{};
  if (iter.is_contiguous()) {
    for (int k = 0; k < nt; ++k) {
      strides[k] = iter.element_size(k);
      ptrs[k] = static_cast<char*>(iter.data_ptr(k)) + begin * strides[k];
    }
    run(ptrs.data(), strides.data(), end - begin);
    return;
  }
  iter.serial_for_each(
      [&](char** data, const int64_t* s, int64_t size0, int64_t size1) {
        for (int64_t j = 0; j < size1; ++j) {
          for (int k = 0; k < nt; ++k) ptrs[k] = data[k] + j * s[nt + k];
          run(ptrs.data(), s, size0);
        }
      },
      {begin, end});
}

// True when every operand of a run is densely packed.
inline bool dense(const at::TensorIteratorBase& iter, const int64_t* strides) {
  for (int k = 0; k < iter.ntensors(); ++k) {
    if (strides[k] != iter.element_size(k)) return false;
  }
  return true;
}

// Elementwise pass: run(ptrs, strides, n) on every block, in parallel.
template <typename Run>
void parallel_runs(at::TensorIteratorBase& iter, Run&& run) {
  const int64_t n = iter.numel();
  const int64_t blocks = (n + kBlock - 1) / kBlock;
  at::parallel_for(0, blocks, kMinParallel, [&](int64_t b0, int64_t b1) {
    for (int64_t b = b0; b < b1; ++b) {
      for_each_run(iter, b * kBlock, std::min(n, (b + 1) * kBlock), run);
    }
  });
}

// Reducing pass: run(ptrs, strides, n) returns the partial sum of a run; the
// block sums are added in block order in double.
template <typename Run>
double parallel_sum(at::TensorIteratorBase& iter, Run&& run) {
  const int64_t n = iter.numel();
  const int64_t blocks = (n + kBlock - 1) / kBlock;
  std::vector<double> partial(blocks, 0.0);
  at::parallel_for(0, blocks, kMinParallel, [&](int64_t b0, int64_t b1) {
    for (int64_t b = b0; b < b1; ++b) {
      double s = 0.0;
      for_each_run(iter, b * kBlock, std::min(n, (b + 1) * kBlock),
                   [&](char** p, const int64_t* st, int64_t m) { s += run(p, st, m); });
      partial[b] = s;
    }
  });
  double total = 0.0;
  for (double s : partial) total += s;
  return total;
}

}  // namespace ssl_fast::cpu
