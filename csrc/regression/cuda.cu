// CUDA kernels of the regression losses (smooth-L1, MSE, binary cross-entropy).
//
// Bytes for n fp32 elements (halve the 4s for 16-bit dtypes; a dense fp32
// weight adds 4n to every pass, one broadcast over trailing dims next to 0):
//   forward, reduced:                read input and target        8n
//   forward, reduced, compute_grad:  ... and write the gradient  12n
//   forward, 'none':                 read 8n, write the loss     12n
//   backward, reduced:               read 8n, write the gradient 12n
//   backward, 'none':                read grad_output too        16n
// plus one double per block (a few KB) for the deterministic sum.
//
// On the GPU the Python side calls the forward with compute_grad=False and
// recomputes in the backward: a reduced grad_output is a device scalar that
// cannot be tested for 1 without a synchronisation, so a gradient saved by the
// forward (4n more, and n elements held until the backward) could never be
// returned as it is. Forward plus backward: 8n + 12n = 20n; torch's
// F.smooth_l1_loss writes and re-reads an elementwise loss (16n) and
// recomputes in the backward (12n): 28n. compute_grad=True is still served,
// with the CPU kernel's semantics.
//
// Every pass is one kernel over the TensorIterator of the call. Thread t of a
// grid of T threads takes the chunks t, t + T, ... of V = 16 / sizeof(scalar_t)
// consecutive elements and goes through each chunk in order. A dense iterator
// with aligned operands loads a chunk with one 16-byte load per operand (two
// for the fp32 weight of a 16-bit input); otherwise the same chunks are walked
// element by element, through an OffsetCalculator for strided or broadcast
// operands. The grid depends on numel, dtype and SM count only, so each thread
// sums the same elements in the same order however they were loaded, and a
// second one-block kernel adds the block partials in block order: the loss is
// reproducible bit for bit, with no atomics. Dense iterators index in 64 bits;
// a strided one whose byte offsets overflow 32 bits runs as the 32-bit
// sub-iterators torch splits it into (as its own elementwise kernels do), one
// grid each: one strided kernel per pass, where a 64-bit variant would make
// 40% of this file's device code for a rare case. A pos_weight (binary
// cross-entropy with logits) is one more operand, in the accumulation type like the
// weight. Inputs or targets outside [0, 1] of binary_cross_entropy fail a device
// assertion, as in torch's CUDA kernel (checking on the host would cost a sync).
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/cuda/CUDAContext.h>
#include <ATen/cuda/detail/OffsetCalculator.cuh>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include <algorithm>
#include <cstdint>

#include "args.h"

namespace ssl_fast::cuda {
namespace {

constexpr int kThreads = 256;
// Resident blocks per SM the grid is sized for: 1024 threads keep enough 16-byte
// loads in flight to saturate HBM and leave 64 registers a thread.
constexpr int kBlocksPerSm = 4;

// Elements per chunk: one 16-byte load of input or target.
template <typename scalar_t>
constexpr int kVecOf = 16 / sizeof(scalar_t);

// What a kernel computes per element, for input x, target y, w = weight and
// p = pos_weight (1 if none), with l = loss(x, y, p) and l' its derivative in x:
enum class Pass {
  Sum,       // sum += w * l
  SumGrad,   // sum += w * l; grad = scale * w * l'
  Loss,      // out = w * l                          ('none' forward)
  Grad,      // grad = (scale * grad_output) * w * l' (reduced backward)
  GradEach,  // grad = grad_output[i] * w * l'        ('none' backward)
};

template <typename T, int N>
struct alignas(sizeof(T) * N) Vec {
  T v[N];
};

template <int N>
struct Ptrs {
  char* p[N];
};

// Operand layout of a pass, in the order the iterator holds them: the output
// (none for Sum), grad_output for GradEach (so operand 1), input, target, the
// weight and the pos_weight if any.
template <typename scalar_t, typename Loss_, Pass P, bool kWeighted, bool kPos>
struct Spec {
  using scalar = scalar_t;
  using acc_t = at::opmath_type<scalar_t>;
  using Loss = Loss_;
  static constexpr Pass kPass = P;
  static constexpr bool kReduces = P == Pass::Sum || P == Pass::SumGrad;
  static constexpr bool kOut = P != Pass::Sum;
  static constexpr int kX = (kOut ? 1 : 0) + (P == Pass::GradEach ? 1 : 0);
  static constexpr int kW = kX + 2;
  static constexpr int kP = kW + (kWeighted ? 1 : 0);
  static constexpr int kArgs = kP + (kPos ? 1 : 0);
  static constexpr int kVec = kVecOf<scalar_t>;
  C10_HOST_DEVICE static constexpr int64_t size(int k) {
    return (kWeighted && k == kW) || (kPos && k == kP) ? sizeof(acc_t) : sizeof(scalar_t);
  }

  // The pass over W consecutive elements whose first ones p points to.
  template <int W>
  static __device__ __forceinline__ void run(const Loss& f, acc_t scale, const Ptrs<kArgs>& p, acc_t& sum) {
    const auto x = *reinterpret_cast<const Vec<scalar_t, W>*>(p.p[kX]);
    const auto y = *reinterpret_cast<const Vec<scalar_t, W>*>(p.p[kX + 1]);
    Vec<acc_t, W> w{};
    if constexpr (kWeighted) w = *reinterpret_cast<const Vec<acc_t, W>*>(p.p[kW]);
    Vec<acc_t, W> pw{};
    if constexpr (kPos) pw = *reinterpret_cast<const Vec<acc_t, W>*>(p.p[kP]);
    Vec<scalar_t, W> go{};
    if constexpr (P == Pass::GradEach) go = *reinterpret_cast<const Vec<scalar_t, W>*>(p.p[1]);
    Vec<scalar_t, W> out{};
#pragma unroll
    for (int j = 0; j < W; ++j) {
      // Same expressions and order as the CPU kernel.
      const acc_t xj = acc_t(x.v[j]), yj = acc_t(y.v[j]);
      const acc_t wj = kWeighted ? w.v[j] : acc_t(1);
      const acc_t pj = kPos ? pw.v[j] : acc_t(1);
      if constexpr (Loss::kUnitInterval) {
        CUDA_KERNEL_ASSERT(in_unit_interval(xj) && "all elements of input should be between 0 and 1");
        CUDA_KERNEL_ASSERT(in_unit_interval(yj) && "all elements of target should be between 0 and 1");
      }
      if constexpr (kReduces) sum += wj * f.loss(xj, yj, pj);
      if constexpr (P == Pass::SumGrad || P == Pass::Grad) {
        out.v[j] = static_cast<scalar_t>(scale * wj * f.grad(xj, yj, pj));
      }
      if constexpr (P == Pass::Loss) out.v[j] = static_cast<scalar_t>(wj * f.loss(xj, yj, pj));
      if constexpr (P == Pass::GradEach) out.v[j] = static_cast<scalar_t>(acc_t(go.v[j]) * wj * f.grad(xj, yj, pj));
    }
    if constexpr (kOut) *reinterpret_cast<Vec<scalar_t, W>*>(p.p[0]) = out;
  }
};

// Element i of every operand of a dense iterator.
template <class S>
struct DenseIndex {
  static constexpr bool kDense = true;
  bool aligned;  // every operand aligned for Vec<T, kVec>
  __device__ Ptrs<S::kArgs> at(const Ptrs<S::kArgs>& base, int64_t i) const {
    Ptrs<S::kArgs> p;
#pragma unroll
    for (int k = 0; k < S::kArgs; ++k) p.p[k] = base.p[k] + i * S::size(k);
    return p;
  }
};

// Element i of a strided or broadcast iterator whose byte offsets fit in 32 bits,
// from its shape and byte strides.
template <int N>
struct StridedIndex {
  static constexpr bool kDense = false;
  OffsetCalculator<N> offsets;
  __device__ Ptrs<N> at(const Ptrs<N>& base, int64_t i) const {
    const auto o = offsets.get(static_cast<uint32_t>(i));
    Ptrs<N> p;
#pragma unroll
    for (int k = 0; k < N; ++k) p.p[k] = base.p[k] + o[k];
    return p;
  }
};

template <typename scalar_t, typename Loss>
struct Params {
  Loss f;
  double scale;          // d loss / d input scale: 1/numel for a mean, else 1
  const scalar_t* go;    // Grad: the 0-dim grad_output, read on the device
  double* partials;      // Sum, SumGrad: one per block
};

// Sum over the block in a fixed order; the result is valid in thread 0.
__device__ __forceinline__ double block_sum(double v) {
  __shared__ double warp_sums[kThreads / 32];
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v += __shfl_down_sync(0xffffffffu, v, o);
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  if (lane == 0) warp_sums[warp] = v;
  __syncthreads();
  if (warp == 0) {
    v = lane < kThreads / 32 ? warp_sums[lane] : 0.0;
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v += __shfl_down_sync(0xffffffffu, v, o);
  }
  return v;
}

template <class S, class Index>
__global__ void __launch_bounds__(kThreads, kBlocksPerSm) regression_kernel(
    Ptrs<S::kArgs> base, Index index, int64_t n, Params<typename S::scalar, typename S::Loss> prm) {
  using acc_t = typename S::acc_t;
  constexpr int V = S::kVec;
  // The CPU kernel also rounds scale * grad_output from double once.
  const acc_t scale = static_cast<acc_t>(
      S::kPass == Pass::Grad ? prm.scale * static_cast<double>(*prm.go) : prm.scale);
  // A chunk's V losses add up in acc_t, the chunks of a thread in double: a thread may see
  // thousands of chunks of a large input, too many terms for a float sum.
  double sum = 0;
  const int64_t chunks = (n + V - 1) / V;
  const int64_t stride = static_cast<int64_t>(gridDim.x) * kThreads;
  for (int64_t c = static_cast<int64_t>(blockIdx.x) * kThreads + threadIdx.x; c < chunks; c += stride) {
    const int64_t i0 = c * V;
    acc_t chunk = 0;
    bool whole = false;  // V elements at once, with vector loads
    if constexpr (Index::kDense) whole = index.aligned && i0 + V <= n;
    if (whole) {
      S::template run<V>(prm.f, scale, index.at(base, i0), chunk);
    } else {
      for (int j = 0; j < V && i0 + j < n; ++j) S::template run<1>(prm.f, scale, index.at(base, i0 + j), chunk);
    }
    sum += static_cast<double>(chunk);
  }
  if constexpr (S::kReduces) {
    const double total = block_sum(sum);
    if (threadIdx.x == 0) prm.partials[blockIdx.x] = total;
  }
}

// loss = sum of the partials in block order, divided by numel for a mean
// (an empty mean is 0/0 = NaN, an empty sum 0, as in torch).
template <typename scalar_t>
__global__ void __launch_bounds__(kThreads) finish_sum(
    const double* partials, int64_t parts, int64_t numel, bool mean, scalar_t* loss) {
  double s = 0.0;
  for (int64_t b = threadIdx.x; b < parts; b += kThreads) s += partials[b];
  s = block_sum(s);
  if (threadIdx.x == 0) {
    if (mean) s /= static_cast<double>(numel);
    *loss = static_cast<scalar_t>(static_cast<at::opmath_type<scalar_t>>(s));
  }
}

// Blocks of a kernel over n elements: one chunk per thread up to kBlocksPerSm
// per SM (then grid-stride). A function of numel, dtype and device, not of layout.
int64_t grid_size(int64_t n, int vec) {
  const int64_t blocks = (n + int64_t(vec) * kThreads - 1) / (int64_t(vec) * kThreads);
  const int64_t sms = at::cuda::getCurrentDeviceProperties()->multiProcessorCount;
  return std::min(blocks, sms * kBlocksPerSm);
}

template <int N>
StridedIndex<N> strided_index(const at::TensorIteratorBase& iter) {
  const int64_t* strides[N];
  for (int k = 0; k < N; ++k) strides[k] = iter.strides(k).data();
  return {OffsetCalculator<N>(iter.ndim(), iter.shape().data(), strides)};
}

// Calls fn(piece) on iter, or on each 32-bit sub-iterator of a strided iterator
// whose byte offsets do not fit in 32 bits.
template <typename Fn>
void for_each_piece(const at::TensorIteratorBase& iter, Fn&& fn) {
  if (iter.is_contiguous() || iter.can_use_32bit_indexing()) {
    fn(iter);
    return;
  }
  for (const auto& sub : iter.with_32bit_indexing()) fn(sub);
}

// One kernel over a piece; returns its blocks (as many partials for a sum).
template <Pass P, bool kWeighted, bool kPos, typename scalar_t, typename Loss>
int64_t launch(const at::TensorIteratorBase& iter, const Params<scalar_t, Loss>& prm) {
  using S = Spec<scalar_t, Loss, P, kWeighted, kPos>;
  constexpr int N = S::kArgs;
  TORCH_INTERNAL_ASSERT(iter.ntensors() == N);
  const int64_t n = iter.numel();
  const int64_t grid = grid_size(n, S::kVec);
  if (n == 0) return 0;
  Ptrs<N> base;
  bool aligned = true;
  for (int k = 0; k < N; ++k) {
    base.p[k] = static_cast<char*>(iter.data_ptr(k));
    aligned = aligned && reinterpret_cast<uintptr_t>(base.p[k]) % (S::kVec * S::size(k)) == 0;
  }
  const auto stream = at::cuda::getCurrentCUDAStream();
  const auto blocks = static_cast<unsigned>(grid);
  if (iter.is_contiguous()) {
    regression_kernel<S><<<blocks, kThreads, 0, stream>>>(base, DenseIndex<S>{aligned}, n, prm);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  } else {
    regression_kernel<S><<<blocks, kThreads, 0, stream>>>(base, strided_index<N>(iter), n, prm);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  }
  return grid;
}

template <Pass P, bool kWeighted, bool kPos, typename scalar_t, typename Loss>
void run_pass(const at::TensorIteratorBase& iter, Params<scalar_t, Loss> prm) {
  for_each_piece(iter, [&](const at::TensorIteratorBase& piece) {
    const int64_t blocks = launch<P, kWeighted, kPos>(piece, prm);
    if (prm.partials != nullptr) prm.partials += blocks;
  });
}

// The call's iterator. An OffsetCalculator takes at most MAX_DIMS dims; an
// iterator with more (after coalescing) runs on contiguous copies instead.
at::TensorIterator make_iter(
    const std::vector<at::Tensor>& outputs, std::vector<at::Tensor> inputs, const RegressionCall& c) {
  auto iter = regression_iter(outputs, inputs);
  if (iter.ndim() <= MAX_DIMS) return iter;
  for (auto& t : inputs) t = t.expand(c.shape).contiguous();
  return regression_iter(outputs, inputs);
}

// The passes of this backend, for RegressionOps (regression/args.h).
struct Passes {
  template <template <typename> class LossT, typename... Args>
  static std::tuple<at::Tensor, at::Tensor> forward(const RegressionCall& c, bool compute_grad, Args... args) {
    const c10::cuda::CUDAGuard guard(c.input.device());
    const auto options = c.input.options();
    at::Tensor loss = c.reduces() ? at::empty({}, options) : at::empty(c.shape, options);
    at::Tensor grad = compute_grad ? at::empty(c.shape, options) : at::empty({0}, options);
    std::vector<at::Tensor> outputs;
    if (!c.reduces()) outputs.push_back(loss);
    if (compute_grad) outputs.push_back(grad);
    const auto iter = make_iter(outputs, inputs_of(c), c);
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, c.input.scalar_type(), "ssl_fast_regression_cuda", [&] {
      using acc_t = at::opmath_type<scalar_t>;
      Params<scalar_t, LossT<acc_t>> prm{LossT<acc_t>(args...), c.grad_scale(), nullptr, nullptr};
      with_weights<LossT<acc_t>>(c, [&](auto weighted, auto pos) {
        constexpr bool kW = decltype(weighted)::value, kP = decltype(pos)::value;
        if (!c.reduces()) {
          run_pass<Pass::Loss, kW, kP>(iter, prm);
          return;
        }
        int64_t blocks = 0;
        for_each_piece(iter, [&](const at::TensorIteratorBase& piece) {
          blocks += grid_size(piece.numel(), kVecOf<scalar_t>);
        });
        const at::Tensor partials = at::empty({blocks}, options.dtype(at::kDouble));
        prm.partials = partials.data_ptr<double>();
        compute_grad ? run_pass<Pass::SumGrad, kW, kP>(iter, prm) : run_pass<Pass::Sum, kW, kP>(iter, prm);
        finish_sum<<<1, kThreads, 0, at::cuda::getCurrentCUDAStream()>>>(
            prm.partials, blocks, c.numel, c.reduction == Reduction::Mean, loss.data_ptr<scalar_t>());
        C10_CUDA_KERNEL_LAUNCH_CHECK();
      });
    });
    return {loss, grad};
  }

  template <template <typename> class LossT, typename... Args>
  static at::Tensor backward(const at::Tensor& grad_output, const RegressionCall& c, Args... args) {
    const c10::cuda::CUDAGuard guard(c.input.device());
    at::Tensor grad = at::empty(c.shape, c.input.options());
    auto inputs = inputs_of(c);
    if (!c.reduces()) inputs.insert(inputs.begin(), grad_output);
    const auto iter = make_iter({grad}, inputs, c);
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, c.input.scalar_type(), "ssl_fast_regression_cuda", [&] {
      using acc_t = at::opmath_type<scalar_t>;
      // A reduced grad_output is read by the kernel through its pointer: no synchronisation.
      const Params<scalar_t, LossT<acc_t>> prm{
          LossT<acc_t>(args...), c.grad_scale(), c.reduces() ? grad_output.const_data_ptr<scalar_t>() : nullptr,
          nullptr};
      with_weights<LossT<acc_t>>(c, [&](auto weighted, auto pos) {
        constexpr bool kW = decltype(weighted)::value, kP = decltype(pos)::value;
        c.reduces() ? run_pass<Pass::Grad, kW, kP>(iter, prm) : run_pass<Pass::GradEach, kW, kP>(iter, prm);
      });
    });
    return grad;
  }
};

}  // namespace

TORCH_LIBRARY_IMPL(ssl_fast, CUDA, m) { RegressionOps<Passes>::impl(m); }

}  // namespace ssl_fast::cuda
