// CUDA kernels of the contrastive log-sum-exp, stage 2: every logit tile is computed by
// tensor cores (WMMA: m16n16k16 for fp16 / bf16, m16n16k8 tf32 for fp32, fp32
// accumulation), consumed in shared memory and registers, and dropped: no logits in global
// memory, workspace O(rows x dim). The semantics are those of contrastive/cuda.cu (stage
// 1) and contrastive/cpu.cpp; contrastive/cuda.cu decides which stage serves a call.
//
// Layout. The unit rows (qn, kn: fp32, as returned by the op) are copied once into operand
// matrices of the input's dtype, zero-padded to a multiple of kTile rows and to 64, 128
// or 256 columns (the kernels' DP): padding adds zeros to every dot product, so odd sizes
// need no special case beyond masking padded rows. One CTA (8 warps) owns kTile = 64 rows
// and sweeps the other side in tiles of 64 rows, both held in shared memory.
//   forward (lse_kernel): per tile S = scale * own . swept^T (fp32, shared memory); 4
//     threads per own row add its logits to a (max, sum) in registers, shifted by
//     c = scale while scale <= 30 (every exp <= 1, none underflows in fp32), else by a
//     running maximum; the 4 parts merge in lane order. Row lse: own = queries. Column
//     lse (cross form): a second launch with own = keys, the exclusion read transposed.
//   backward (gradient_kernel): per tile S again, then G_ij = g_i exp(s_ij - lse_i)
//     + g'_j exp(s_ij - lse'_j) (0 at the excluded pair) rounded to the operand type
//     in shared memory, and d own += G . swept on the tensor cores, in registers over
//     the whole sweep. Without k, G is symmetric and this one sweep gives dz; with k, a
//     query sweep gives dq and a key sweep (G^T) gives dk. Before rounding, G is
//     multiplied by a power of two that brings max |G| <= 2 max |g| near 2^15, so that
//     fp16 neither overflows nor flushes small entries; the output divides it back out.
//     Per-row sums of G_ij s_ij (fp32 per tile, fp64 across tiles) feed d scale.
// Every sum runs in an order fixed by the thread index and the tile order, and no
// atomics are used: results are bitwise repeatable on a given card.
//
// Limits (else stage 1 serves the call): fp16 / bf16 inputs, or fp32 while TF32 matmuls
// are allowed; dim <= 256; compute capability >= 8.0 and enough opt-in shared memory
// (fp16 / bf16 up to ~95 KB; fp32 at dim 256 ~165 KB, more than an A100 has).
//
// Work, for R query rows, C keys and D features (one GEMM-equivalent = 2 R C D FLOPs):
// self form 3 (forward, backward recompute, dz), cross form up to 6 (row and column
// sweeps forward, and a recompute plus a product in each backward sweep); stage 1 does
// 2 (it exploits the symmetry) and 4. Exploiting the symmetry of z z^T (tiles i <= j only) would bring the self form
// to 2: an off-diagonal tile would add G_IJ z_J to dz_I and G_IJ^T z_I to dz_J, and
// without atomics the second term needs either a per-tile-row partial workspace
// (R / 64 copies of dz: not O(R D)) or a round schedule in which no two CTAs of a round
// share a block (R / 64 rounds, one launch or grid barrier each). Neither is done here.
// The column lse in the same sweep as the row lse would need a partial per (row block,
// column), R C / 64 values, hence the second sweep.
#include <ATen/ATen.h>
#include <ATen/Context.h>
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAFunctions.h>
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <mma.h>
#include <torch/version.h>

#include <cmath>
#include <cstdint>
#include <map>
#include <mutex>
#include <type_traits>
#include <utility>

#include "device.cuh"
#include "fused.h"

namespace ssl_fast::cuda {
namespace {

namespace wmma = nvcuda::wmma;

constexpr int kTile = 64;                        // rows of an own block and of a swept tile
constexpr int kThreads = 256;                    // 8 warps: 4 row groups of 16 x 2 column halves
constexpr int kRowParts = kThreads / kTile;      // threads per tile row in the epilogues
constexpr int64_t kMaxDim = 256;
constexpr double kSharedShiftMax = 30.0;         // as the CPU kernel's, for fp32 accumulation
constexpr size_t kStaticSmem = kTile * (sizeof(int64_t) + sizeof(float2));  // the kernels' own __shared__

// The tensor-core operand type of an element type: fp16 and bf16 as they are, fp32 as tf32.
template <typename E>
struct Mma {
  using frag = E;
  static constexpr int k = 16;
};
template <>
struct Mma<float> {
  using frag = wmma::precision::tf32;
  static constexpr int k = 8;
};

template <typename E>
using Acc = wmma::fragment<wmma::accumulator, 16, 16, Mma<E>::k, float>;
template <typename E, typename Layout>
using FragA = wmma::fragment<wmma::matrix_a, 16, 16, Mma<E>::k, typename Mma<E>::frag, Layout>;
template <typename E, typename Layout>
using FragB = wmma::fragment<wmma::matrix_b, 16, 16, Mma<E>::k, typename Mma<E>::frag, Layout>;

// Shared memory of a CTA, for operands E padded to DP columns. Rows are padded by 16 bytes
// (fewer bank conflicts); every fragment then starts 32-byte aligned, as WMMA requires.
template <typename E, int DP>
struct Smem {
  static constexpr int ldx = DP + 16 / int(sizeof(E));      // own and swept rows, E
  static constexpr int lds = kTile + 4;                     // logits, fp32
  static constexpr int ldg = kTile + 16 / int(sizeof(E));   // gradient tile, E
  static constexpr int ldo = DP + 4;                        // d own staged for the store, fp32
  static constexpr size_t rows_bytes = size_t(kTile) * ldx * sizeof(E);
  static constexpr size_t s_bytes = size_t(kTile) * lds * sizeof(float);
  static constexpr size_t g_bytes = size_t(kTile) * ldg * sizeof(E);
  static constexpr size_t forward_bytes = 2 * rows_bytes + s_bytes;
  static constexpr size_t backward_bytes = forward_bytes + g_bytes;
  static_assert(size_t(kTile) * ldo * sizeof(float) <= 2 * rows_bytes, "d own is staged over the rows");
};

// One CTA's view of a call: it owns kTile rows of `own` and sweeps all rows of `swept`.
// transposed: own = keys (logit columns), swept = queries, so exclude is indexed by the
// swept row. Operand matrices are DP wide and padded to a multiple of kTile rows.
template <typename E>
struct Sweep {
  const E* own;
  const E* swept;
  int64_t n_own, n_swept;
  float scale;
  Exclusion ex;
  bool transposed;
};

// The lse-gradient term of one side, g_i exp(s - lse_i); g == nullptr: none.
struct Terms {
  const float* g;
  const float* lse;
};

// ------------------------------------------------------------------ device helpers

template <typename E>
__device__ __forceinline__ E to_operand(float v);
template <>
__device__ __forceinline__ __half to_operand<__half>(float v) { return __float2half_rn(v); }
template <>
__device__ __forceinline__ __nv_bfloat16 to_operand<__nv_bfloat16>(float v) { return __float2bfloat16_rn(v); }
template <>
__device__ __forceinline__ float to_operand<float>(float v) { return v; }

template <typename Frag, typename E>
__device__ __forceinline__ void load_frag(Frag& f, const E* p, unsigned ld) {
  wmma::load_matrix_sync(f, p, ld);
  if constexpr (std::is_same_v<E, float>) {
#pragma unroll
    for (int i = 0; i < f.num_elements; ++i) f.x[i] = wmma::__float_to_tf32(f.x[i]);
  }
}

// kTile rows of a DP-wide operand matrix into shared memory, 16 bytes per thread and step.
template <typename E, int DP>
__device__ __forceinline__ void load_rows(E* dst, const E* src) {
  constexpr int kVec = 16 / sizeof(E);
  constexpr int kChunks = DP / kVec;  // per row
  for (int i = threadIdx.x; i < kTile * kChunks; i += kThreads) {
    const int r = i / kChunks, c = i % kChunks;
    *reinterpret_cast<uint4*>(dst + r * Smem<E, DP>::ldx + c * kVec) =
        *reinterpret_cast<const uint4*>(src + int64_t(r) * DP + c * kVec);
  }
}

// The swept tile at row b0, with the own index each of its rows excludes (transposed
// sweeps; -1 otherwise). Callers synchronise before reading.
template <typename E, int DP>
__device__ __forceinline__ void load_swept(const Sweep<E>& sw, int64_t b0, E* swept, int64_t* skip) {
  load_rows<E, DP>(swept, sw.swept + b0 * DP);
  if (threadIdx.x < kTile) {
    const int64_t b = b0 + threadIdx.x;
    skip[threadIdx.x] = sw.transposed && b < sw.n_swept ? sw.ex.col(b) : -1;
  }
}

// The swept index that own row a excludes (direct sweeps; -1 otherwise).
template <typename E>
__device__ __forceinline__ int64_t own_skip(const Sweep<E>& sw, int64_t a) {
  return !sw.transposed && a < sw.n_own ? sw.ex.col(a) : -1;
}

// Whether the logit of own row a and swept row b enters the sums: both are real rows (a
// padded own row then gets G = 0, no inf or NaN, though no output reads it) and the pair
// is not excluded (a's own exclusion, or b's in a transposed sweep).
template <typename E>
__device__ __forceinline__ bool counts(const Sweep<E>& sw, int64_t a, int64_t b, int64_t a_skip, int64_t b_skip) {
  return a < sw.n_own && b < sw.n_swept && b != a_skip && b_skip != a;
}

// s (kTile x kTile fp32, unscaled) = own rows . swept rows. Warp w: rows 16 (w % 4) + [0, 16),
// columns 32 (w / 4) + [0, 32).
template <typename E, int DP>
__device__ __forceinline__ void logits_tile(const E* own, const E* swept, float* s) {
  using L = Smem<E, DP>;
  const int warp = threadIdx.x / 32, r0 = 16 * (warp % 4), c0 = 32 * (warp / 4);
  Acc<E> acc[2];
  wmma::fill_fragment(acc[0], 0.f);
  wmma::fill_fragment(acc[1], 0.f);
#pragma unroll 4
  for (int k = 0; k < DP; k += Mma<E>::k) {
    FragA<E, wmma::row_major> a;
    load_frag(a, own + r0 * L::ldx + k, L::ldx);
#pragma unroll
    for (int t = 0; t < 2; ++t) {
      FragB<E, wmma::col_major> b;  // element (k, n) = swept row c0 + 16 t + n, feature k
      load_frag(b, swept + (c0 + 16 * t) * L::ldx + k, L::ldx);
      wmma::mma_sync(acc[t], a, b, acc[t]);
    }
  }
#pragma unroll
  for (int t = 0; t < 2; ++t) {
    wmma::store_matrix_sync(s + r0 * L::lds + c0 + 16 * t, acc[t], L::lds, wmma::mem_row_major);
  }
}

// out (this warp's part of d own, in registers) += g (kTile x kTile) . swept rows. Warp w:
// rows 16 (w % 4) + [0, 16), columns (DP / 2) (w / 4) + [0, DP / 2).
template <typename E, int DP>
__device__ __forceinline__ void accumulate_tile(const E* g, const E* swept, Acc<E> (&out)[DP / 32]) {
  using L = Smem<E, DP>;
  const int warp = threadIdx.x / 32, r0 = 16 * (warp % 4), c0 = (DP / 2) * (warp / 4);
#pragma unroll
  for (int k = 0; k < kTile; k += Mma<E>::k) {
    FragA<E, wmma::row_major> a;
    load_frag(a, g + r0 * L::ldg + k, L::ldg);
#pragma unroll
    for (int t = 0; t < DP / 32; ++t) {
      FragB<E, wmma::row_major> b;  // element (k, n) = swept row k, feature c0 + 16 t + n
      load_frag(b, swept + k * L::ldx + c0 + 16 * t, L::ldx);
      wmma::mma_sync(out[t], a, b, out[t]);
    }
  }
}

// (g, lse) of row i of a side; (0, +inf) where the term is absent (no gradient, a row
// whose pairs are all excluded, or padding), so that g * exp(s - lse) is 0.
__device__ __forceinline__ float2 term_of(Terms t, int64_t i, int64_t n) {
  if (t.g == nullptr || i >= n || t.lse[i] == neg_inf<float>()) return {0.f, INFINITY};
  return {t.g[i], t.lse[i]};
}

// A power of two bringing 2 g_max (the bound of |G|, as every P_ij <= 1) to at most 2^15.
__device__ __forceinline__ float gradient_multiplier(float g_max) {
  if (!(g_max > 0.f) || !isfinite(g_max)) return 1.f;
  return exp2f(fminf(14.f - ceilf(log2f(g_max)), 120.f));
}

// ------------------------------------------------------------------ kernels
// The tensor-core paths need sm_80 (bf16, tf32): fused_supported keeps older cards away,
// and an arch list that names one compiles only a trap for it.
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ < 800
#define SSL_FAST_FUSED_UNSUPPORTED_ARCH 1
#endif

// What both kernels start from: the CTA's regions of dynamic shared memory (own rows,
// swept rows, fp32 logits), its first own row a0, and the calling thread's own row a,
// which it reduces as part `part` of kRowParts.
template <typename E, int DP>
struct Block {
  E* own;
  E* swept;
  float* s;
  int64_t a0, a;
  int r, part;

  __device__ explicit Block(unsigned char* smem)
      : own(reinterpret_cast<E*>(smem)),
        swept(reinterpret_cast<E*>(smem + Smem<E, DP>::rows_bytes)),
        s(reinterpret_cast<float*>(smem + 2 * Smem<E, DP>::rows_bytes)),
        a0(int64_t(blockIdx.x) * kTile),
        a(a0 + threadIdx.x / kRowParts),
        r(threadIdx.x / kRowParts),
        part(threadIdx.x % kRowParts) {}
};

// lse of every own row over the swept rows (blockIdx.x: own rows kTile blockIdx.x + [0, kTile)).
// shift: c of the shared shift, or -inf for running maxima.
template <typename E, int DP>
__global__ void __launch_bounds__(kThreads) lse_kernel(Sweep<E> sw, float shift, float* lse) {
#ifdef SSL_FAST_FUSED_UNSUPPORTED_ARCH
  __trap();
#else
  using L = Smem<E, DP>;
  extern __shared__ __align__(128) unsigned char smem[];
  __shared__ int64_t skip[kTile];
  const Block<E, DP> k(smem);
  const auto [own, swept, s, a0, a, r, part] = k;
  const int64_t a_skip = own_skip(sw, a);
  load_rows<E, DP>(own, sw.own + a0 * DP);
  MaxSum<float> acc{shift, 0.f};
  for (int64_t b0 = 0; b0 < sw.n_swept; b0 += kTile) {
    load_swept<E, DP>(sw, b0, swept, skip);
    __syncthreads();
    logits_tile<E, DP>(own, swept, s);
    __syncthreads();
    for (int c = part; c < kTile; c += kRowParts) {  // interleaved: no bank conflicts
      if (counts(sw, a, b0 + c, a_skip, skip[c])) acc.add(sw.scale * s[r * L::lds + c]);
    }
    __syncthreads();  // before the next tile overwrites swept, skip and s
  }
  // The 4 parts of a row sit in adjacent lanes: (p0 + p1) + (p2 + p3) lands in part 0.
  acc.merge(shfl_down(acc, 1));
  acc.merge(shfl_down(acc, 2));
  if (part == 0 && a < sw.n_own) lse[a] = acc.lse();
#endif
}

// d own = scale * sum over the swept tiles of G . swept rows (out; skipped when nullptr),
// and per own row sum_j G_ij s_ij (g_dot_s; skipped when nullptr). G's own-side term is
// own_t, its swept-side term swept_t; g_max: the largest |g| of both (device scalar).
template <typename E, int DP>
__global__ void __launch_bounds__(kThreads) gradient_kernel(
    Sweep<E> sw, Terms own_t, Terms swept_t, const float* g_max, int dim, float* out, double* g_dot_s) {
#ifdef SSL_FAST_FUSED_UNSUPPORTED_ARCH
  __trap();
#else
  using L = Smem<E, DP>;
  extern __shared__ __align__(128) unsigned char smem[];
  __shared__ int64_t skip[kTile];
  __shared__ float2 swept_term[kTile];
  const Block<E, DP> k(smem);
  const auto [own, swept, s, a0, a, r, part] = k;
  E* g = reinterpret_cast<E*>(smem + L::forward_bytes);
  const int64_t a_skip = own_skip(sw, a);
  const float2 mine = term_of(own_t, a, sw.n_own);
  const float mult = gradient_multiplier(*g_max);
  load_rows<E, DP>(own, sw.own + a0 * DP);
  Acc<E> acc[DP / 32];
#pragma unroll
  for (int t = 0; t < DP / 32; ++t) wmma::fill_fragment(acc[t], 0.f);
  double dot = 0;
  for (int64_t b0 = 0; b0 < sw.n_swept; b0 += kTile) {
    load_swept<E, DP>(sw, b0, swept, skip);
    if (threadIdx.x < kTile) swept_term[threadIdx.x] = term_of(swept_t, b0 + threadIdx.x, sw.n_swept);
    __syncthreads();
    logits_tile<E, DP>(own, swept, s);
    __syncthreads();
    float tile_dot = 0;
    for (int c = part; c < kTile; c += kRowParts) {
      float gc = 0;
      if (counts(sw, a, b0 + c, a_skip, skip[c])) {
        const float x = sw.scale * s[r * L::lds + c];
        const float2 other = swept_term[c];
        gc = mine.x * exp_(x - mine.y) + other.x * exp_(x - other.y);
        tile_dot += gc * x;
      }
      g[r * L::ldg + c] = to_operand<E>(gc * mult);
    }
    dot += tile_dot;
    __syncthreads();
    if (out != nullptr) accumulate_tile<E, DP>(g, swept, acc);
    __syncthreads();  // before the next tile overwrites swept, skip, s and g
  }
  if (g_dot_s != nullptr) {
    dot += shfl_down(dot, 1);  // (p0 + p1) + (p2 + p3), as in lse_kernel
    dot += shfl_down(dot, 2);
    if (part == 0 && a < sw.n_own) g_dot_s[a] = dot;
  }
  if (out == nullptr) return;
  float* staged = reinterpret_cast<float*>(smem);  // the rows are read no more
  const int warp = threadIdx.x / 32, r0 = 16 * (warp % 4), c0 = (DP / 2) * (warp / 4);
#pragma unroll
  for (int t = 0; t < DP / 32; ++t) {
    wmma::store_matrix_sync(staged + r0 * L::ldo + c0 + 16 * t, acc[t], L::ldo, wmma::mem_row_major);
  }
  __syncthreads();
  const float factor = sw.scale / mult;
  for (int i = threadIdx.x; i < kTile * dim; i += kThreads) {
    const int rr = i / dim, d = i % dim;
    if (a0 + rr < sw.n_own) out[(a0 + rr) * dim + d] = staged[rr * L::ldo + d] * factor;
  }
#endif
}

// ------------------------------------------------------------------ host side

// A type as a value, for generic lambdas (std::type_identity is C++20).
template <typename T>
struct TypeTag {
  using type = T;
};

// Calls f with the TypeTag of the operand element type of an input dtype.
template <typename F>
void with_operand(at::ScalarType type, F&& f) {
  switch (type) {
    case at::kHalf:
      return f(TypeTag<__half>{});
    case at::kBFloat16:
      return f(TypeTag<__nv_bfloat16>{});
    case at::kFloat:
      return f(TypeTag<float>{});
    default:
      TORCH_CHECK(false, "contrastive_lse: the fused kernels take no ", type, " inputs");
  }
}

// Calls f with std::integral_constant of the padded feature count DP.
template <typename F>
void with_padded_dim(int64_t dim, F&& f) {
  if (dim <= 64) {
    f(std::integral_constant<int, 64>{});
  } else if (dim <= 128) {
    f(std::integral_constant<int, 128>{});
  } else {
    f(std::integral_constant<int, 256>{});
  }
}

// The unit rows xn (accumulation type) as an operand matrix: `type`, zero-padded to a
// multiple of kTile rows and to dp columns.
at::Tensor operands(const at::Tensor& xn, at::ScalarType type, int64_t dp) {
  const int64_t rows = (xn.size(0) + kTile - 1) / kTile * kTile;
  at::Tensor out = at::zeros({rows, dp}, xn.options().dtype(type));
  out.narrow(0, 0, xn.size(0)).narrow(1, 0, xn.size(1)).copy_(xn);
  return out;
}

template <typename E>
const E* operand_ptr(const at::Tensor& t) {
  return reinterpret_cast<const E*>(t.const_data_ptr());
}

const float* float_ptr(const at::Tensor& t) { return t.defined() ? t.const_data_ptr<float>() : nullptr; }

// Raises the kernel's dynamic shared-memory limit on the current device to smem, once per
// (kernel, device): the limit is a property of the function that outlives the call, and
// cudaFuncSetAttribute is a driver call that small batches would pay at every launch.
void allow_smem(const void* kernel, size_t smem) {
  static std::mutex mutex;
  static std::map<std::pair<const void*, int>, size_t> allowed;
  const std::lock_guard<std::mutex> lock(mutex);
  size_t& limit = allowed[{kernel, c10::cuda::current_device()}];
  if (limit >= smem) return;
  C10_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, int(smem)));
  limit = smem;
}

template <typename Kernel, typename... Args>
void launch(Kernel kernel, int64_t own_rows, size_t smem, Args... args) {
  allow_smem(reinterpret_cast<const void*>(kernel), smem);
  const auto grid = static_cast<unsigned>((own_rows + kTile - 1) / kTile);
  kernel<<<grid, kThreads, smem, at::cuda::getCurrentCUDAStream()>>>(args...);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

}  // namespace

bool fused_supported(const ContrastiveCall& c) {
  const at::ScalarType type = c.q.scalar_type();
  // fp32: the setting torch's own fp32 matmuls follow (torch.set_float32_matmul_precision,
  // torch.backends.cuda.matmul.fp32_precision, and at::NoTF32Guard as cuBLAS calls do);
  // before torch 2.10, allow_tf32.
#if TORCH_VERSION_MAJOR > 2 || (TORCH_VERSION_MAJOR == 2 && TORCH_VERSION_MINOR >= 10)
  const bool allowed = at::globalContext().float32Precision(at::Float32Backend::CUDA, at::Float32Op::MATMUL) ==
                       at::Float32Precision::TF32;
#else
  const bool allowed = at::globalContext().allowTF32CuBLAS();
#endif
  const bool tf32 = allowed && !at::NoTF32Guard::should_disable_tf32();
  const bool tensor_cores = type == at::kHalf || type == at::kBFloat16 || (type == at::kFloat && tf32);
  if (!tensor_cores || c.dim > kMaxDim) return false;
  const cudaDeviceProp* prop = at::cuda::getDeviceProperties(c.q.get_device());
  size_t smem = 0;
  with_operand(type, [&](auto e) {
    using E = typename decltype(e)::type;
    with_padded_dim(c.dim, [&](auto dp) { smem = Smem<E, decltype(dp)::value>::backward_bytes; });
  });
  return prop->major >= 8 && smem + kStaticSmem <= prop->sharedMemPerBlockOptin;
}

void fused_forward(
    const ContrastiveCall& c, const at::Tensor& qn, const at::Tensor& kn, at::Tensor& row, at::Tensor& col) {
  const at::ScalarType type = c.q.scalar_type();
  const float shift = c.scale <= kSharedShiftMax ? float(c.scale) : -INFINITY;
  with_operand(type, [&](auto e) {
    using E = typename decltype(e)::type;
    with_padded_dim(c.dim, [&](auto dp) {
      constexpr int DP = decltype(dp)::value;
      const at::Tensor q_ops = operands(qn, type, DP);
      const at::Tensor k_ops = c.self() ? q_ops : operands(kn, type, DP);
      auto sweep = [&](const at::Tensor& own, const at::Tensor& swept, int64_t n_own, int64_t n_swept,
                       bool transposed, at::Tensor& lse) {
        const Sweep<E> sw{
            operand_ptr<E>(own), operand_ptr<E>(swept), n_own, n_swept, float(c.scale), exclusion_of(c), transposed};
        launch(lse_kernel<E, DP>, n_own, Smem<E, DP>::forward_bytes, sw, shift, lse.data_ptr<float>());
      };
      sweep(q_ops, k_ops, c.rows, c.cols, false, row);
      if (col.numel() > 0) sweep(k_ops, q_ops, c.cols, c.rows, true, col);
    });
  });
}

void fused_backward(
    const ContrastiveCall& c, const ContrastiveGrads& g, at::Tensor& dqn, at::Tensor& dkn, at::Tensor& g_dot_s) {
  const at::ScalarType type = c.q.scalar_type();
  const Terms rows_t{float_ptr(g.grad_row), float_ptr(g.row_lse)};
  const Terms cols_t = c.self() ? rows_t
                                : Terms{float_ptr(g.grad_col), g.grad_col.defined() ? float_ptr(g.col_lse) : nullptr};
  // The largest |g| (on the device: no synchronisation), for gradient_multiplier.
  at::Tensor g_max = at::zeros({}, g.qn.options());
  for (const at::Tensor& t : {g.grad_row, g.grad_col}) {
    if (t.defined()) g_max = at::maximum(g_max, t.abs().amax());
  }
  with_operand(type, [&](auto e) {
    using E = typename decltype(e)::type;
    with_padded_dim(c.dim, [&](auto dp) {
      constexpr int DP = decltype(dp)::value;
      const at::Tensor q_ops = operands(g.qn, type, DP);
      const at::Tensor k_ops = c.self() ? q_ops : operands(g.kn, type, DP);
      auto sweep = [&](const at::Tensor& own, const at::Tensor& swept, int64_t n_own, int64_t n_swept,
                       bool transposed, Terms own_t, Terms swept_t, at::Tensor& d_own, double* dots) {
        const Sweep<E> sw{
            operand_ptr<E>(own), operand_ptr<E>(swept), n_own, n_swept, float(c.scale), exclusion_of(c), transposed};
        launch(
            gradient_kernel<E, DP>, n_own, Smem<E, DP>::backward_bytes, sw, own_t, swept_t,
            g_max.const_data_ptr<float>(), int(c.dim), d_own.defined() ? d_own.data_ptr<float>() : nullptr, dots);
      };
      double* dots = g_dot_s.defined() ? g_dot_s.data_ptr<double>() : nullptr;
      if (dqn.defined() || dots != nullptr) sweep(q_ops, k_ops, c.rows, c.cols, false, rows_t, cols_t, dqn, dots);
      if (dkn.defined()) sweep(k_ops, q_ops, c.cols, c.rows, true, cols_t, rows_t, dkn, nullptr);
    });
  });
}

}  // namespace ssl_fast::cuda
