// exp and logarithms in forms that GCC vectorises on the CPU (calls to std::exp,
// std::log or std::log1p never are): the costs of a one-pass binary cross-entropy and of
// the contrastive tiles' epilogues. float gets polynomials with errors within a few ulps
// (including subnormal arguments); double keeps the C library, and device code the CUDA
// math library.
#pragma once

#include <c10/macros/Macros.h>

#include <cmath>
#include <cstdint>
#include <limits>

// Always inlined: an out-of-line call per element would stop the callers' loops (the BCE
// passes, the contrastive tiles' epilogues, compiled per instruction set) from vectorising.
#define SSL_FAST_MATH_INLINE inline __attribute__((always_inline))

namespace ssl_fast::logmath {

#if !defined(__CUDA_ARCH__)
// log1p(z) for z in [-1/2, 1]: with s = z / (2 + z), |s| <= 1/3 and
// log1p(z) = 2 atanh(s) = 2 s (1 + s^2/3 + s^4/5 + ...). The series cut after
// s^14/15 leaves a relative error below 1.5e-8; s itself is exact to one
// rounding, so small z keep their relative accuracy.
SSL_FAST_MATH_INLINE float log1p_near0(float z) {
  const float s = z / (2.f + z);
  const float s2 = s * s;
  float p = 1.f / 15;
  p = p * s2 + 1.f / 13;
  p = p * s2 + 1.f / 11;
  p = p * s2 + 1.f / 9;
  p = p * s2 + 1.f / 7;
  p = p * s2 + 1.f / 5;
  p = p * s2 + 1.f / 3;
  p = p * s2 + 1.f;
  return 2.f * s * p;
}

// x > 0 (finite) as 2^e (1 + z) with 1 + z in [0.75, 1.5), z exact. Subnormals are
// scaled by 2^24 first.
struct Reduced {
  float e, z;
};
SSL_FAST_MATH_INLINE Reduced reduce(float x) {
  const bool tiny = x < std::numeric_limits<float>::min();
  const int32_t bits = __builtin_bit_cast(int32_t, tiny ? x * 16777216.f : x);
  // The exponent that puts the mantissa in [0.75, 1.5): offset by the bits of 0.75.
  const int32_t e = (bits - 0x3f400000) >> 23;
  const float m = __builtin_bit_cast(float, bits - (e << 23));
  return {static_cast<float>(e) - (tiny ? 24.f : 0.f), m - 1.f};
}

// e ln2 + log1p(z), with ln 2 in two parts (Cody and Waite) so that e ln2_hi is exact.
SSL_FAST_MATH_INLINE float log_of(Reduced r) {
  return r.e * 0.693145751953125f + (log1p_near0(r.z) + r.e * 1.428606765330187e-06f);
}

// log(x) for x in (0, inf); log(0) = -inf; NaN, negative x and +inf give what std::log does.
SSL_FAST_MATH_INLINE float log_nonneg(float x) {
  constexpr float kInf = std::numeric_limits<float>::infinity();
  const float special = x == 0.f ? -kInf : (x == kInf ? kInf : std::numeric_limits<float>::quiet_NaN());
  return x > 0.f && x < kInf ? log_of(reduce(x)) : special;
}

// log(1 - x) for x <= 1: the series on -x up to 1/2, where 1 - x would round; above,
// 1 - x is exact (Sterbenz) and reduced as for log. One series either way.
SSL_FAST_MATH_INLINE float log_one_minus(float x) {
  const bool near0 = x <= 0.5f;
  const Reduced r = reduce(near0 ? 0.75f : 1.f - x);  // 0.75: any value in range
  const float v = log_of(near0 ? Reduced{0.f, -x} : r);
  return x < 1.f ? v : (x == 1.f ? -std::numeric_limits<float>::infinity() : std::numeric_limits<float>::quiet_NaN());
}

// exp(x) for x <= 88 (and NaN): x = n ln2 + r with |r| <= ln2 / 2, a degree-7 Taylor
// polynomial for e^r (truncation error 5e-9) and 2^n put in the exponent bits. Results
// below the normal range are flushed to 0 (they are < 1.2e-38), so -inf gives 0.
SSL_FAST_MATH_INLINE float exp_flushed(float x) {
  constexpr float kRound = 12582912.f;  // 1.5 * 2^23: adding it rounds to an integer
  const float xc = x < -87.f ? -87.f : (x > 88.f ? 88.f : x);  // NaN passes through
  const float t = xc * 1.44269504088896341f + kRound;
  const float n = t - kRound;
  float r = xc - n * 0.693145751953125f;  // ln 2 in two parts (Cody and Waite)
  r = r - n * 1.428606765330187e-06f;
  float p = 1.f / 5040;
  p = p * r + 1.f / 720;
  p = p * r + 1.f / 120;
  p = p * r + 1.f / 24;
  p = p * r + 1.f / 6;
  p = p * r + 0.5f;
  p = p * r + 1.f;
  p = p * r + 1.f;
  const int32_t e = __builtin_bit_cast(int32_t, t) - __builtin_bit_cast(int32_t, kRound);
  const float scale = __builtin_bit_cast(float, (e + 127) << 23);
  return x < -87.f ? 0.f : p * scale;
}
#endif

// e^-|x| for any x; NaN for NaN.
C10_HOST_DEVICE SSL_FAST_MATH_INLINE float exp_neg_abs(float x) {
#ifdef __CUDA_ARCH__
  return ::expf(-::fabsf(x));
#else
  return exp_flushed(x < 0.f ? x : -x);
#endif
}
C10_HOST_DEVICE SSL_FAST_MATH_INLINE double exp_neg_abs(double x) { return ::exp(-::fabs(x)); }

// log1p(e) for e in [0, 1].
C10_HOST_DEVICE SSL_FAST_MATH_INLINE float log1p_unit(float e) {
#ifdef __CUDA_ARCH__
  return ::log1pf(e);
#else
  return log1p_near0(e);
#endif
}
C10_HOST_DEVICE SSL_FAST_MATH_INLINE double log1p_unit(double e) { return ::log1p(e); }

// log(x) and log(1 - x) for x in [0, 1] (anything for NaN or outside).
C10_HOST_DEVICE SSL_FAST_MATH_INLINE float log_unit(float x) {
#ifdef __CUDA_ARCH__
  return ::logf(x);
#else
  return log_nonneg(x);
#endif
}
C10_HOST_DEVICE SSL_FAST_MATH_INLINE double log_unit(double x) { return ::log(x); }

C10_HOST_DEVICE SSL_FAST_MATH_INLINE float log1m_unit(float x) {
#ifdef __CUDA_ARCH__
  return ::log1pf(-x);
#else
  return log_one_minus(x);
#endif
}
C10_HOST_DEVICE SSL_FAST_MATH_INLINE double log1m_unit(double x) { return ::log1p(-x); }

}  // namespace ssl_fast::logmath
