// simd_level(): what the CPU runs, capped by the build and by SSL_FAST_CPU_ISA.
#include "simd.h"

#include <c10/util/Exception.h>

#include <algorithm>
#include <cstdlib>
#include <string>

namespace ssl_fast::cpu {
namespace {

constexpr const char* kNames[] = {"baseline", "avx2", "avx512"};

SimdLevel best_level() {
#ifdef SSL_FAST_X86_SIMD
  __builtin_cpu_init();
  if (SSL_FAST_MAX_SIMD >= 2 && __builtin_cpu_supports("x86-64-v4")) return SimdLevel::kAvx512;
  if (__builtin_cpu_supports("x86-64-v3")) return SimdLevel::kAvx2;
#endif
  return SimdLevel::kBaseline;
}

SimdLevel chosen_level() {
  const SimdLevel best = best_level();
  const char* env = std::getenv("SSL_FAST_CPU_ISA");
  if (env == nullptr || *env == '\0') return best;
  for (int level = 0; level < 3; ++level) {
    if (std::string(env) == kNames[level]) return std::min(best, SimdLevel(level));
  }
  TORCH_CHECK_VALUE(false, "SSL_FAST_CPU_ISA must be avx512, avx2 or baseline, got '", env, "'");
}

}  // namespace

SimdLevel simd_level() {
  static const SimdLevel level = chosen_level();
  return level;
}

const char* simd_level_name() { return kNames[int(simd_level())]; }

}  // namespace ssl_fast::cpu
