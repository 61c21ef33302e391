// Code for the CPU's vector units. GCC compiles a function marked
// SSL_FAST_CLONES twice, for x86-64-v3 (AVX2, FMA) and for the baseline
// (SSE2), and the loader picks the clone the CPU runs. What such a function
// calls is compiled for the clone's target only where it is inlined:
// SSL_FAST_INLINE forces it. SSL_FAST_X86_SIMD says whether there are clones.
//
// Kernels with a path per instruction set (the tile GEMMs, the Philox lanes)
// ask simd_level() which to run. SSL_FAST_MAX_SIMD caps the vector code a build
// may run: 2 (the default) up to AVX-512, 1 up to AVX2, 0 the baseline alone
// (CFLAGS=-DSSL_FAST_MAX_SIMD=0 also drops the clones). At run time,
// SSL_FAST_CPU_ISA caps simd_level() alone, so that the tests and benchmarks
// can run the narrower paths on a wider CPU.
#pragma once

#ifndef SSL_FAST_MAX_SIMD
#define SSL_FAST_MAX_SIMD 2
#endif

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && defined(__linux__) && SSL_FAST_MAX_SIMD > 0
#define SSL_FAST_X86_SIMD 1
#define SSL_FAST_CLONES __attribute__((target_clones("arch=x86-64-v3", "default")))
#else
#define SSL_FAST_CLONES
#endif
#define SSL_FAST_INLINE [[gnu::always_inline]] inline

namespace ssl_fast::cpu {

enum class SimdLevel { kBaseline = 0, kAvx2 = 1, kAvx512 = 2 };

// The widest level the CPU runs (AVX-512: x86-64-v4; AVX2: x86-64-v3), within
// SSL_FAST_MAX_SIMD and SSL_FAST_CPU_ISA ("avx512", "avx2" or "baseline"; an
// unknown name is a ValueError). Decided at the first call.
SimdLevel simd_level();
const char* simd_level_name();

}  // namespace ssl_fast::cpu
