// Code for the CPU's vector units. GCC compiles a function marked
// SSL_FAST_CLONES twice, for x86-64-v3 (AVX2, FMA) and for the baseline
// (SSE2), and the loader picks the clone the CPU runs. What such a function
// calls is compiled for the clone's target only where it is inlined:
// SSL_FAST_INLINE forces it. SSL_FAST_X86_SIMD says whether there are clones.
//
// SSL_FAST_MAX_SIMD caps the vector code that may run: 2 (the default) up to
// AVX-512, 1 up to AVX2, 0 the baseline alone. A build with a lower cap
// (CFLAGS=-DSSL_FAST_MAX_SIMD=0) runs the narrower paths through the tests on
// a wider CPU.
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
