// Philox-4x32-10 in SIMD lanes. A round is two 32x32->64 multiplies and xors,
// and a scalar core runs one counter's chain at a time; vpmuludq does the
// multiply in every 64-bit lane of a register (4 with AVX2, 8 with AVX-512), so
// each lane carries one counter's word in its low half. The high halves hold
// garbage that no low half depends on: vpmuludq reads only the low halves,
// xor is bitwise, and only the products, whose high halves are exact, are
// shifted down. Integer arithmetic, so every path gives the bits of
// common/philox.h (x86-64's baseline SSE2 has no such multiply beyond 2 lanes,
// and scalar code measured faster there).
//
// simd_level() (common/simd.h) chooses the path at the first call.
#include "philox_lanes.h"

#include <cstring>

#include "../common/simd.h"

#ifdef SSL_FAST_X86_SIMD
#include <immintrin.h>
#endif

namespace ssl_fast::cpu {
namespace {

using Words = void (*)(const philox::Key&, uint64_t, int64_t, philox::Stream, uint32_t*);

void words_scalar(const philox::Key& key, uint64_t first, int64_t counters, philox::Stream stream, uint32_t* out) {
  for (int64_t k = 0; k < counters; ++k) {
    const philox::Out r = key(first + k, stream);
    std::memcpy(out + 4 * k, r.w, sizeof r.w);
  }
}

#ifdef SSL_FAST_X86_SIMD
// The operations of one register kind. Each carries the target its intrinsics
// need, and GCC inlines a function only into one of the same target: the
// entry points below are `flatten`, which inlines the generic code into them
// and, through it, these operations.
#define SSL_FAST_SIMD(isa) __attribute__((target(isa)))
// -Wpsabi: vectors pass between functions of different targets, all inlined.
// -Wmaybe-uninitialized: GCC 12 flags the undefined pass-through operand inside
// AVX-512 intrinsics.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wpsabi"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"

struct Avx2 {
  using V = __m256i;
  static constexpr int kWidth = 4;
  SSL_FAST_SIMD("avx2") static V splat(uint64_t x) { return _mm256_set1_epi64x(static_cast<int64_t>(x)); }
  SSL_FAST_SIMD("avx2") static V counters(uint64_t first) {
    return _mm256_add_epi64(splat(first), _mm256_setr_epi64x(0, 1, 2, 3));
  }
  SSL_FAST_SIMD("avx2") static V mul(V a, V b) { return _mm256_mul_epu32(a, b); }
  SSL_FAST_SIMD("avx2") static V high(V a) { return _mm256_srli_epi64(a, 32); }
  SSL_FAST_SIMD("avx2") static V xor3(V a, V b, V c) { return _mm256_xor_si256(_mm256_xor_si256(a, b), c); }
  // Lane l of w0..w3 holds the words of counter l: written as out[4 l + j].
  SSL_FAST_SIMD("avx2") static void store(uint32_t* out, V w0, V w1, V w2, V w3) {
    const V a = _mm256_blend_epi32(w0, _mm256_slli_epi64(w1, 32), 0xAA);  // words 0, 1 of each counter
    const V b = _mm256_blend_epi32(w2, _mm256_slli_epi64(w3, 32), 0xAA);  // words 2, 3
    const V even = _mm256_unpacklo_epi64(a, b);                             // counters 0, 2
    const V odd = _mm256_unpackhi_epi64(a, b);                              // counters 1, 3
    _mm256_storeu_si256(reinterpret_cast<V*>(out), _mm256_permute2x128_si256(even, odd, 0x20));
    _mm256_storeu_si256(reinterpret_cast<V*>(out + 8), _mm256_permute2x128_si256(even, odd, 0x31));
  }
};

struct Avx512 {
  using V = __m512i;
  static constexpr int kWidth = 8;
  SSL_FAST_SIMD("avx512f") static V splat(uint64_t x) { return _mm512_set1_epi64(static_cast<int64_t>(x)); }
  SSL_FAST_SIMD("avx512f") static V counters(uint64_t first) {
    return _mm512_add_epi64(splat(first), _mm512_setr_epi64(0, 1, 2, 3, 4, 5, 6, 7));
  }
  SSL_FAST_SIMD("avx512f") static V mul(V a, V b) { return _mm512_mul_epu32(a, b); }
  SSL_FAST_SIMD("avx512f") static V high(V a) { return _mm512_srli_epi64(a, 32); }
  SSL_FAST_SIMD("avx512f") static V xor3(V a, V b, V c) { return _mm512_ternarylogic_epi64(a, b, c, 0x96); }
  SSL_FAST_SIMD("avx512f") static void store(uint32_t* out, V w0, V w1, V w2, V w3) {
    const V a = _mm512_mask_blend_epi32(0xAAAA, w0, _mm512_slli_epi64(w1, 32));
    const V b = _mm512_mask_blend_epi32(0xAAAA, w2, _mm512_slli_epi64(w3, 32));
    const V even = _mm512_unpacklo_epi64(a, b);  // counters 0, 2, 4, 6
    const V odd = _mm512_unpackhi_epi64(a, b);   // counters 1, 3, 5, 7
    _mm512_storeu_si512(out, _mm512_permutex2var_epi64(even, _mm512_setr_epi64(0, 1, 8, 9, 2, 3, 10, 11), odd));
    _mm512_storeu_si512(out + 16, _mm512_permutex2var_epi64(even, _mm512_setr_epi64(4, 5, 12, 13, 6, 7, 14, 15), odd));
  }
};

// kRegs registers of L::kWidth counters, first, first + 1, ...: independent
// chains that hide the multiplies' latency.
template <class L, int kRegs>
inline void philox_registers(const philox::Key& key, uint64_t first, philox::Stream stream, uint32_t* out) {
  using V = typename L::V;
  V c0[kRegs], c1[kRegs], c2[kRegs], c3[kRegs];
  for (int r = 0; r < kRegs; ++r) {
    c0[r] = L::counters(first + uint64_t(r) * L::kWidth);
    c1[r] = L::high(c0[r]);
    c2[r] = L::splat(stream);
    c3[r] = L::splat(key.offset);
  }
  const V m0 = L::splat(philox::kMul0), m1 = L::splat(philox::kMul1);
  uint32_t k0 = key.k0, k1 = key.k1;
  for (int round = 0; round < 10; ++round, k0 += philox::kWeyl0, k1 += philox::kWeyl1) {
    const V key0 = L::splat(k0), key1 = L::splat(k1);
    for (int r = 0; r < kRegs; ++r) {  // philox::philox_round
      const V p0 = L::mul(c0[r], m0), p1 = L::mul(c2[r], m1);
      c0[r] = L::xor3(L::high(p1), c1[r], key0);
      c2[r] = L::xor3(L::high(p0), c3[r], key1);
      c1[r] = p1;
      c3[r] = p0;
    }
  }
  for (int r = 0; r < kRegs; ++r) L::store(out + 4 * L::kWidth * r, c0[r], c1[r], c2[r], c3[r]);
}

template <class L, int kRegs>
inline void words_lanes(const philox::Key& key, uint64_t first, int64_t counters, philox::Stream stream,
                        uint32_t* out) {
  int64_t k = 0;
  for (; k + kRegs * L::kWidth <= counters; k += kRegs * L::kWidth) {
    philox_registers<L, kRegs>(key, first + k, stream, out + 4 * k);
  }
  for (; k + L::kWidth <= counters; k += L::kWidth) philox_registers<L, 1>(key, first + k, stream, out + 4 * k);
  if (k < counters) {  // a last partial register, through a buffer
    uint32_t tail[4 * L::kWidth];
    philox_registers<L, 1>(key, first + k, stream, tail);
    std::memcpy(out + 4 * k, tail, sizeof(uint32_t) * 4 * (counters - k));
  }
}

// Registers in flight: 3 of AVX2's 16 (12 for the state), 4 of AVX-512's 32, the
// fastest counts measured on a Zen 5 core.
__attribute__((target("avx2"), flatten)) void words_avx2(
    const philox::Key& key, uint64_t first, int64_t counters, philox::Stream stream, uint32_t* out) {
  words_lanes<Avx2, 3>(key, first, counters, stream, out);
}

__attribute__((target("avx512f"), flatten)) void words_avx512(
    const philox::Key& key, uint64_t first, int64_t counters, philox::Stream stream, uint32_t* out) {
  words_lanes<Avx512, 4>(key, first, counters, stream, out);
}
#pragma GCC diagnostic pop
#endif

Words choose() {
  switch (simd_level()) {
#ifdef SSL_FAST_X86_SIMD
    case SimdLevel::kAvx512:
      return words_avx512;
    case SimdLevel::kAvx2:
      return words_avx2;
#endif
    default:
      return words_scalar;
  }
}

}  // namespace

void philox_words(const philox::Key& key, uint64_t first, int64_t counters, philox::Stream stream, uint32_t* out) {
  static const Words words = choose();
  words(key, first, counters, stream, out);
}

}  // namespace ssl_fast::cpu
