// CUDA kernel of SigLIP's sigmoid loss; the math is in contrastive/siglip.h and the
// semantics are those of contrastive/siglip_cpu.cpp. Compiled, not yet run on a GPU.
//
// The simple form of the contrastive family's stage 1 (contrastive/cuda.cu): the logits
// are computed one strip of rows at a time by a cuBLAS GEMM through ATen on the current
// stream (at most kStripBytes of logits: nothing rows x cols is stored); one block per
// strip row then turns its logits into the gradient factors G in place and reduces the
// row's loss, G . s and sum of G; two more GEMMs give d img (the strip's rows) and add the
// strip's part of d txt. The per-row sums are added in row order by one block at the
// end. No atomics, every sum in a fixed order: results are bitwise repeatable on a card.
// The sums are read back on the host (SiglipSums holds numbers), a synchronisation per
// call, as the scale's read is.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAException.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>

#include "device.cuh"
#include "siglip.h"

namespace ssl_fast::cuda {
namespace {

constexpr int64_t kStripBytes = int64_t(256) << 20;

__device__ __forceinline__ float log1p_(float x) { return log1pf(x); }
__device__ __forceinline__ double log1p_(double x) { return ::log1p(x); }

// A row's three sums, reduced together.
struct RowSums {
  double loss, g_dot_s, g_sum;
};

struct AddRowSums {
  __device__ RowSums operator()(const RowSums& a, const RowSums& b) const {
    return {a.loss + b.loss, a.g_dot_s + b.g_dot_s, a.g_sum + b.g_sum};
  }
};

__device__ __forceinline__ RowSums shfl_down(const RowSums& v, int offset) {
  return {cuda::shfl_down(v.loss, offset), cuda::shfl_down(v.g_dot_s, offset), cuda::shfl_down(v.g_sum, offset)};
}

// Strip row blockIdx.x (global row r0 + blockIdx.x) of the logits s [b, cols]: its loss
// terms softplus(-y z) and, with grad, G = -y sigmoid(-y z) written over s; the row's sums
// go to sums[3 * row + {0, 1, 2}].
template <typename T>
__global__ void __launch_bounds__(kThreads) row_kernel(
    T* s, int64_t cols, int64_t r0, int64_t offset, T a, T b, bool grad, double* sums) {
  const int64_t row = r0 + blockIdx.x;
  T* si = s + int64_t(blockIdx.x) * cols;
  const int64_t pos = row + offset;
  T loss = 0, g_dot_s = 0, g_sum = 0;
  for (int64_t j = threadIdx.x; j < cols; j += kThreads) {
    const T x = si[j];
    const T z = a * x + b;
    const bool positive = j == pos;
    const T u = positive ? -z : z;
    const T e = exp_(-fabs(u));
    loss += (u > T(0) ? u : T(0)) + log1p_(e);
    if (grad) {
      const T sigmoid = (u >= T(0) ? T(1) : e) / (T(1) + e);
      const T g = positive ? -sigmoid : sigmoid;
      g_dot_s += g * x;
      g_sum += g;
      si[j] = g;
    }
  }
  const RowSums total = block_reduce(RowSums{double(loss), double(g_dot_s), double(g_sum)}, RowSums{0, 0, 0},
                                     AddRowSums{});
  if (threadIdx.x != 0) return;
  sums[3 * row] = total.loss;
  sums[3 * row + 1] = total.g_dot_s;
  sums[3 * row + 2] = total.g_sum;
}

// out[k] = factor * sum over rows of sums[3 * row + k], in row order; one block per k.
__global__ void __launch_bounds__(kThreads) total_kernel(const double* sums, int64_t rows, double factor, double* out) {
  double v = 0;
  for (int64_t i = threadIdx.x; i < rows; i += kThreads) v += sums[3 * i + blockIdx.x];
  v = block_reduce(v, 0.0, Add{});
  if (threadIdx.x == 0) out[blockIdx.x] = v * factor;
}

template <typename T>
SiglipSums run_strips(const SiglipCall& c, bool want_loss, std::array<bool, 4> grads, double weight) {
  SiglipSums out;
  const auto opts = c.img.options();
  if (grads[0]) out.dimg = at::empty({c.rows, c.dim}, opts);
  if (grads[1]) out.dtxt = at::zeros({c.cols, c.dim}, opts);
  const bool want_grad = grads[0] || grads[1] || grads[2] || grads[3];
  if (!want_loss && !want_grad) return out;
  const auto stream = at::cuda::getCurrentCUDAStream();
  const int64_t height = std::clamp<int64_t>(kStripBytes / (c.cols * int64_t(sizeof(T))), 1, c.rows);
  at::Tensor buf = at::empty({height * c.cols}, opts);
  at::Tensor sums = at::empty({c.rows, 3}, opts.dtype(at::kDouble));
  const double alpha = c.scale * weight / double(c.rows);
  for (int64_t r0 = 0; r0 < c.rows; r0 += height) {
    const int64_t b = std::min(height, c.rows - r0);
    at::Tensor s = buf.narrow(0, 0, b * c.cols).view({b, c.cols});
    const at::Tensor img = c.img.narrow(0, r0, b);
    at::mm_out(s, img, c.txt.t());
    row_kernel<T><<<blocks(b, 1), kThreads, 0, stream>>>(
        s.data_ptr<T>(), c.cols, r0, c.offset, T(c.scale), T(c.bias), want_grad, sums.data_ptr<double>());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
    if (grads[0]) {
      at::Tensor dimg = out.dimg.narrow(0, r0, b);
      at::mm_out(dimg, s, c.txt).mul_(alpha);
    }
    if (grads[1]) out.dtxt.addmm_(s.t(), img, 1, alpha);
  }
  at::Tensor totals = at::empty({3}, opts.dtype(at::kDouble));
  total_kernel<<<3, kThreads, 0, stream>>>(
      sums.const_data_ptr<double>(), c.rows, weight / double(c.rows), totals.data_ptr<double>());
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  const at::Tensor host = totals.cpu();
  const double* v = host.const_data_ptr<double>();
  out.loss = v[0];
  out.dscale = v[1];
  out.dbias = v[2];
  return out;
}

// The pass of this backend, for SiglipOps (contrastive/siglip.h).
struct Passes {
  static SiglipSums run(const SiglipCall& c, bool loss, std::array<bool, 4> grads, double weight) {
    SiglipSums out;
    AT_DISPATCH_FLOATING_TYPES(c.acc, "siglip_cuda", [&] { out = run_strips<scalar_t>(c, loss, grads, weight); });
    return out;
  }
};

}  // namespace

TORCH_LIBRARY_IMPL(ssl_fast, CUDA, m) { SiglipOps<Passes>::impl(m); }

}  // namespace ssl_fast::cuda
