// Philox-4x32-10 (Salmon et al., "Parallel random numbers: as easy as 1, 2, 3",
// SC'11): a counter-based generator. The 128-bit output is a pure function of
// a 128-bit counter and a 64-bit key, so every element can compute its own
// random bits from its index, and the CPU and CUDA kernels give the same bits
// whatever the thread count or launch layout.
//
// The streams of the masking ops (counter = c0, c1, stream, offset; key = seed):
//   kSelect  c0,c1 = flat element index / 4: 32 bits per element (word index % 4)
//            for the selection of mask_tokens and the noise of random_masking
//   kReplace c0,c1 = flat token index: words 1-2 (low, high) the random id;
//            word 0 picks mask / random / keep where the selection word cannot
//            (exact_count, whole words; see masking/tokens.h)
//   kWord    c0 = word id, c1 = row: word 0 selects a whole word
// ssl_fast/reference.py implements the same function in PyTorch.
#pragma once

#include <cstdint>

#if defined(__CUDACC__)
#define SSL_FAST_HD __host__ __device__ __forceinline__
#define SSL_FAST_UNROLL _Pragma("unroll")
#else
#define SSL_FAST_HD inline
#define SSL_FAST_UNROLL _Pragma("GCC unroll 10")
#endif

namespace ssl_fast::philox {

enum Stream : uint32_t { kSelect = 0, kReplace = 1, kWord = 2 };

constexpr uint32_t kMul0 = 0xD2511F53u, kMul1 = 0xCD9E8D57u;
constexpr uint32_t kWeyl0 = 0x9E3779B9u, kWeyl1 = 0xBB67AE85u;

struct Out {
  uint32_t w[4];
};

// One round on the counter words, under the round key (k0, k1).
SSL_FAST_HD void philox_round(uint32_t& c0, uint32_t& c1, uint32_t& c2, uint32_t& c3, uint32_t k0, uint32_t k1) {
  const uint64_t p0 = uint64_t(kMul0) * c0;
  const uint64_t p1 = uint64_t(kMul1) * c2;
  const uint32_t n0 = uint32_t(p1 >> 32) ^ c1 ^ k0;
  const uint32_t n2 = uint32_t(p0 >> 32) ^ c3 ^ k1;
  c1 = uint32_t(p1);
  c3 = uint32_t(p0);
  c0 = n0;
  c2 = n2;
}

SSL_FAST_HD Out philox4x32_10(uint32_t c0, uint32_t c1, uint32_t c2, uint32_t c3, uint32_t k0, uint32_t k1) {
  SSL_FAST_UNROLL
  for (int round = 0; round < 10; ++round) {
    philox_round(c0, c1, c2, c3, k0 + round * kWeyl0, k1 + round * kWeyl1);
  }
  return Out{{c0, c1, c2, c3}};
}

// The key and counter words that every draw of one op call shares.
struct Key {
  uint32_t k0, k1, offset;
  SSL_FAST_HD Out operator()(uint64_t index, Stream stream) const {
    return philox4x32_10(uint32_t(index), uint32_t(index >> 32), stream, offset, k0, k1);
  }
  SSL_FAST_HD Out word(uint32_t word_id, uint32_t row) const {
    return philox4x32_10(word_id, row, kWord, offset, k0, k1);
  }
};

SSL_FAST_HD Key make_key(int64_t seed, int64_t offset) {
  const auto s = static_cast<uint64_t>(seed);
  return Key{uint32_t(s), uint32_t(s >> 32), uint32_t(static_cast<uint64_t>(offset))};
}

// floor(n * (hi * 2^32 + lo) / 2^64): a uniform integer in [0, n) from 64 random
// bits, with a bias below n / 2^64; exact in 64-bit arithmetic for n < 2^31.
SSL_FAST_HD int64_t below(uint32_t lo, uint32_t hi, int64_t n) {
  const uint64_t un = static_cast<uint64_t>(n);
  return static_cast<int64_t>((uint64_t(hi) * un + ((uint64_t(lo) * un) >> 32)) >> 32);
}

}  // namespace ssl_fast::philox
