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
// Scale, bias and the incoming gradient reach the kernels through device pointers, and the
// sums stay on the device: a call never makes the host wait, so it can be captured in a
// CUDA graph (a scale or bias given on the CPU is read when the call is made: a capture
// keeps that value).
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

// Strip row blockIdx.x (global row r0 + blockIdx.x) of the logits s [b, cols], with
// z = ab[0] s + ab[1]: its loss terms softplus(-y z) and, with grad, G = -y sigmoid(-y z)
// written over s; the row's sums go to sums[3 * row + {0, 1, 2}].
template <typename T>
__global__ void __launch_bounds__(kThreads) row_kernel(
    T* s, int64_t cols, int64_t r0, int64_t offset, const T* ab, bool grad, double* sums) {
  const T a = ab[0], b = ab[1];
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

// Where the totals go: the loss, d scale and d bias, each its own 0-dim tensor.
struct Totals {
  double* out[3];
};

// *totals.out[k] = *per_row * sum over rows of sums[3 * row + k], in row order; one block per k.
__global__ void __launch_bounds__(kThreads) total_kernel(
    const double* sums, int64_t rows, const double* per_row, Totals totals) {
  double v = 0;
  for (int64_t i = threadIdx.x; i < rows; i += kThreads) v += sums[3 * i + blockIdx.x];
  v = block_reduce(v, 0.0, Add{});
  if (threadIdx.x == 0) *totals.out[blockIdx.x] = v * *per_row;
}

template <typename T>
SiglipSums run_strips(const SiglipCall& c, bool want_loss, std::array<bool, 4> grads, const at::Tensor& weight) {
  SiglipSums out;
  const auto opts = c.img.options(), dopts = opts.dtype(at::kDouble);
  if (grads[0]) out.dimg = at::empty({c.rows, c.dim}, opts);
  if (grads[1]) out.dtxt = at::zeros({c.cols, c.dim}, opts);
  const bool want_grad = grads[0] || grads[1] || grads[2] || grads[3];
  if (!want_loss && !want_grad) return out;
  const auto stream = at::cuda::getCurrentCUDAStream();
  const int64_t height = std::clamp<int64_t>(kStripBytes / (c.cols * int64_t(sizeof(T))), 1, c.rows);
  at::Tensor buf = at::empty({height * c.cols}, opts);
  at::Tensor sums = at::empty({c.rows, 3}, dopts);
  // Scale, bias and weight go into device tensors by fill_, which copies a device value on
  // the device and reads a CPU one on the host, where that is free (copying a CPU tensor to
  // the device would make the host wait: its memory is pageable).
  at::Tensor ab = at::empty({2}, opts);
  ab.select(0, 0).fill_(c.scale);
  ab.select(0, 1).fill_(c.bias);
  at::Tensor per_row = at::empty({}, dopts);  // weight / rows
  if (weight.defined()) {
    per_row.fill_(weight).div_(double(c.rows));
  } else {
    per_row.fill_(1.0 / double(c.rows));
  }
  // d img = alpha G txt, d txt = alpha G^T img
  const at::Tensor alpha = grads[0] || grads[1] ? (per_row * c.scale).to(c.acc) : at::Tensor();
  for (int64_t r0 = 0; r0 < c.rows; r0 += height) {
    const int64_t b = std::min(height, c.rows - r0);
    at::Tensor s = buf.narrow(0, 0, b * c.cols).view({b, c.cols});
    const at::Tensor img = c.img.narrow(0, r0, b);
    at::mm_out(s, img, c.txt.t());
    row_kernel<T><<<blocks(b, 1), kThreads, 0, stream>>>(
        s.data_ptr<T>(), c.cols, r0, c.offset, ab.const_data_ptr<T>(), want_grad, sums.data_ptr<double>());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
    if (grads[0]) {
      at::Tensor dimg = out.dimg.narrow(0, r0, b);
      at::mm_out(dimg, s, c.txt).mul_(alpha);
    }
    if (grads[1]) out.dtxt.addmm_(s.t(), img);
  }
  if (grads[1]) out.dtxt.mul_(alpha);  // once, after every strip has added its part
  out.loss = at::empty({}, dopts);
  out.dscale = at::empty({}, dopts);
  out.dbias = at::empty({}, dopts);
  total_kernel<<<3, kThreads, 0, stream>>>(
      sums.const_data_ptr<double>(), c.rows, per_row.const_data_ptr<double>(),
      Totals{{out.loss.data_ptr<double>(), out.dscale.data_ptr<double>(), out.dbias.data_ptr<double>()}});
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return out;
}

// The pass of this backend, for SiglipOps (contrastive/siglip.h).
struct Passes {
  static SiglipSums run(const SiglipCall& c, bool loss, std::array<bool, 4> grads, const at::Tensor& weight) {
    SiglipSums out;
    AT_DISPATCH_FLOATING_TYPES(c.acc, "siglip_cuda", [&] { out = run_strips<scalar_t>(c, loss, grads, weight); });
    return out;
  }
};

}  // namespace

TORCH_LIBRARY_IMPL(ssl_fast, CUDA, m) { SiglipOps<Passes>::impl(m); }

}  // namespace ssl_fast::cuda
