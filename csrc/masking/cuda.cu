// CUDA kernels of the masking ops: mask_tokens (MLM) and random_masking (MAE).
//
// The bits are those of the CPU kernels (common/philox.h): every element
// computes its own Philox counter from its index, so the output depends on the
// seed only, not on the grid.
//
// mask_tokens is bytes-bound: each thread takes groups of 4 tokens (one Philox
// call gives their selection words), reads the ids (and the special-tokens
// mask) and writes the masked ids and the int64 labels once: 8 + 8 bytes per
// int64 token (+1 with a mask). exact_count runs one block per row: it finds
// the k-th smallest rank key of the row by a binary search on the key (64
// block-wide counts over the row, which stays in L1/L2), then writes the row.
// Ids outside the vocabulary pass through (MaskTokensParams::token) unless check_ids asks
// for a reduction over them first (a synchronisation).
//
// random_masking runs one block per sample: the noise words of the row go to
// shared memory and each position counts the positions before it in (word,
// position) order, O(L^2 / threads), then a second kernel copies the kept
// patches. Rows of up to kMaxPatches positions (48 KiB of shared memory).
#include <ATen/Dispatch.h>
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include <cstdint>

#include <cub/block/block_reduce.cuh>

#include "args.h"

namespace ssl_fast::cuda {
namespace {

constexpr int kThreads = 256;
constexpr int64_t kMaxPatches = 12288;

// Blocks for `work` threads' worth of items, at most 8 per SM (the threads then loop).
unsigned grid_for(int64_t work) {
  const int64_t max_blocks = int64_t(at::cuda::getCurrentDeviceProperties()->multiProcessorCount) * 8;
  return static_cast<unsigned>(std::max<int64_t>(1, std::min<int64_t>(max_blocks, (work + kThreads - 1) / kThreads)));
}

template <typename id_t>
struct Tokens {
  const id_t* ids;
  id_t* out;
  int64_t* labels;
  const bool* special_mask;
  const int64_t* word_ids;
  int64_t n, length;
  MaskTokensParams p;
  double probability;

  __device__ bool special(int64_t i, int64_t id) const {
    return (special_mask && special_mask[i]) || p.in_special_ids(id) || (word_ids && word_ids[i] < 0);
  }

  // Writes token i; own_word: it was selected by its selection word u, which then decides too.
  __device__ void write(int64_t i, int64_t id, bool selected, bool own_word, uint32_t u) const {
    const auto t = p.token(static_cast<uint64_t>(i), id, selected, own_word, u);
    out[i] = static_cast<id_t>(t.id);
    labels[i] = t.label;
  }
};

template <typename id_t>
__global__ void bernoulli_kernel(const Tokens<id_t> t) {
  const int64_t groups = (t.n + 3) / 4;
  for (int64_t g = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; g < groups; g += int64_t(gridDim.x) * blockDim.x) {
    philox::Out u{};
    if (!t.word_ids) u = t.p.key(static_cast<uint64_t>(g), philox::kSelect);
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      const int64_t i = 4 * g + j;
      if (i >= t.n) break;
      const int64_t id = t.ids[i];
      bool selected = !t.special(i, id);
      if (selected) {
        const uint32_t draw = t.word_ids ? t.p.key.word(static_cast<uint32_t>(t.word_ids[i]),
                                                        static_cast<uint32_t>(i / t.length)).w[0]
                                         : u.w[j];
        selected = draw < t.p.select;
      }
      t.write(i, id, selected, !t.word_ids, u.w[j]);
    }
  }
}

// Selection word of token i (the same as the CPU's selection_words).
__device__ uint32_t selection_word(const philox::Key& key, int64_t i) {
  return key(static_cast<uint64_t>(i / 4), philox::kSelect).w[i % 4];
}

template <typename id_t>
__global__ void exact_kernel(const Tokens<id_t> t, uint64_t* keys) {
  using Reduce = cub::BlockReduce<int64_t, kThreads>;
  __shared__ typename Reduce::TempStorage storage;
  __shared__ int64_t total;
  const int64_t begin = int64_t(blockIdx.x) * t.length;
  uint64_t* row = keys + begin;
  int64_t mine = 0;
  for (int64_t l = threadIdx.x; l < t.length; l += kThreads) {
    const int64_t i = begin + l;
    const bool special = t.special(i, t.ids[i]);
    row[l] = special ? ~uint64_t(0) : rank_key(selection_word(t.p.key, i), l);
    mine += !special;
  }
  auto block_sum = [&](int64_t v) {
    const int64_t s = Reduce(storage).Sum(v);
    if (threadIdx.x == 0) total = s;
    __syncthreads();
    const int64_t result = total;
    __syncthreads();
    return result;
  };
  const int64_t k = exact_count(t.probability, block_sum(mine));
  // The k-th smallest key: the least t with k keys <= t (keys are distinct).
  uint64_t lo = 0, hi = ~uint64_t(0);
  if (k > 0) {
    while (lo < hi) {
      const uint64_t mid = lo + (hi - lo) / 2;
      int64_t below = 0;
      for (int64_t l = threadIdx.x; l < t.length; l += kThreads) below += row[l] <= mid;
      if (block_sum(below) >= k) {
        hi = mid;
      } else {
        lo = mid + 1;
      }
    }
  }
  for (int64_t l = threadIdx.x; l < t.length; l += kThreads) {
    const int64_t i = begin + l;
    t.write(i, t.ids[i], k > 0 && row[l] <= lo && row[l] != ~uint64_t(0), false, 0);
  }
}

__global__ void rank_kernel(philox::Key key, int64_t L, int64_t len_keep, float* mask, int64_t* restore,
                            int64_t* keep) {
  extern __shared__ uint32_t words[];
  const int64_t begin = int64_t(blockIdx.x) * L;
  for (int64_t l = threadIdx.x; l < L; l += blockDim.x) words[l] = selection_word(key, begin + l);
  __syncthreads();
  for (int64_t l = threadIdx.x; l < L; l += blockDim.x) {
    const uint32_t w = words[l];
    int64_t rank = 0;
    for (int64_t j = 0; j < L; ++j) rank += words[j] < w || (words[j] == w && j < l);
    restore[begin + l] = rank;
    mask[begin + l] = rank < len_keep ? 0.f : 1.f;
    if (rank < len_keep) keep[int64_t(blockIdx.x) * len_keep + rank] = l;
  }
}

// x_kept[n, r] = x[n, keep[n, r]], in elements of `word_t`: one warp per kept patch (a
// patch is a few hundred 16-byte words at most, too few for a block), kPatchesPerBlock a block.
constexpr int kPatchesPerBlock = kThreads / 32;

template <typename word_t>
__global__ void gather_kernel(const word_t* x, const int64_t* keep, int64_t L, int64_t len_keep, int64_t patches,
                              int64_t words, word_t* kept) {
  const int64_t row = int64_t(blockIdx.x) * kPatchesPerBlock + threadIdx.x / 32;  // n * len_keep + r
  if (row >= patches) return;
  const word_t* src = x + ((row / len_keep) * L + keep[row]) * words;
  for (int64_t d = threadIdx.x % 32; d < words; d += 32) kept[row * words + d] = src[d];
}

// The passes of this backend, for MaskingOps (masking/args.h).
struct Passes {
  static at::Tensor output(const at::Tensor& ids, at::ScalarType dtype) {
    return at::empty(ids.sizes(), ids.options().dtype(dtype));
  }

  // One reduction, and a synchronisation to read its result on the host.
  static bool in_vocabulary(const MaskTokensCall& c) {
    const auto [low, high] = at::aminmax(c.ids);
    return low.item<int64_t>() >= 0 && high.item<int64_t>() < c.params.vocab_size;
  }

  // out may be c.ids: each token is read before it is written, by the thread that writes it.
  static void mask_tokens(const MaskTokensCall& c, const at::Tensor& out, const at::Tensor& labels) {
    const c10::cuda::CUDAGuard guard(c.ids.device());
    const auto stream = at::cuda::getCurrentCUDAStream();
    AT_DISPATCH_INDEX_TYPES(c.ids.scalar_type(), "ssl_fast_mask_tokens_cuda", [&] {
      const Tokens<index_t> t{
          c.ids.const_data_ptr<index_t>(), out.data_ptr<index_t>(), labels.data_ptr<int64_t>(),
          c.special_mask.defined() ? c.special_mask.const_data_ptr<bool>() : nullptr,
          c.word_ids.defined() ? c.word_ids.const_data_ptr<int64_t>() : nullptr,
          c.rows * c.length, c.length, c.params, c.probability};
      if (c.exact) {
        const at::Tensor keys = at::empty({c.rows, c.length}, c.ids.options().dtype(at::kLong));
        exact_kernel<<<static_cast<unsigned>(c.rows), kThreads, 0, stream>>>(
            t, reinterpret_cast<uint64_t*>(keys.data_ptr<int64_t>()));
      } else {
        bernoulli_kernel<<<grid_for((t.n + 3) / 4), kThreads, 0, stream>>>(t);
      }
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    });
  }

  static std::tuple<at::Tensor, at::Tensor, at::Tensor> random_masking(
      const at::Tensor& x_in, int64_t len_keep, int64_t seed, int64_t offset) {
    const int64_t N = x_in.size(0), L = x_in.size(1), D = x_in.size(2);
    TORCH_CHECK(L <= kMaxPatches, "ssl_fast::random_masking: the CUDA kernel takes at most ", kMaxPatches,
                " patches per sample, got L = ", L);
    const c10::cuda::CUDAGuard guard(x_in.device());
    const auto stream = at::cuda::getCurrentCUDAStream();
    const at::Tensor x = x_in.contiguous();
    at::Tensor kept = at::empty({N, len_keep, D}, x.options());
    at::Tensor mask = at::empty({N, L}, x.options().dtype(at::kFloat));
    at::Tensor restore = at::empty({N, L}, x.options().dtype(at::kLong));
    if (N == 0 || L == 0) return {kept, mask, restore};
    at::Tensor keep = at::empty({N, std::max<int64_t>(len_keep, 1)}, restore.options());
    rank_kernel<<<static_cast<unsigned>(N), kThreads, L * sizeof(uint32_t), stream>>>(
        philox::make_key(seed, offset), L, len_keep, mask.data_ptr<float>(), restore.data_ptr<int64_t>(),
        keep.data_ptr<int64_t>());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
    if (len_keep == 0 || D == 0) return {kept, mask, restore};
    // Copy in the widest word that divides a patch and the alignment of x (a view may be offset).
    const int64_t bytes = D * x.element_size();
    const auto address = reinterpret_cast<uintptr_t>(x.const_data_ptr());
    TORCH_CHECK(N * len_keep <= int64_t(INT32_MAX),
                "ssl_fast::random_masking: the CUDA kernel copies at most 2^31 - 1 ",
                "patches per call, got N * len_keep = ", N * len_keep);
    auto gather = [&](auto word) {
      using word_t = decltype(word);
      const int64_t patches = N * len_keep;
      gather_kernel<word_t><<<static_cast<unsigned>((patches + kPatchesPerBlock - 1) / kPatchesPerBlock), kThreads,
                              0, stream>>>(
          static_cast<const word_t*>(x.const_data_ptr()), keep.const_data_ptr<int64_t>(), L, len_keep, patches,
          bytes / int64_t(sizeof(word_t)), static_cast<word_t*>(kept.data_ptr()));
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    };
    if (bytes % 16 == 0 && address % 16 == 0) {
      gather(uint4{});
    } else if (bytes % 4 == 0 && address % 4 == 0) {
      gather(uint32_t{});
    } else {
      gather(uint8_t{});
    }
    return {kept, mask, restore};
  }
};

}  // namespace

TORCH_LIBRARY_IMPL(ssl_fast, CUDA, m) { MaskingOps<Passes>::impl(m); }

}  // namespace ssl_fast::cuda
