// Philox-4x32-10 of runs of consecutive counters on the CPU, several counters in
// lock step in the lanes of AVX2 or AVX-512 registers where the CPU has them:
// the same bits as common/philox.h, a fraction of the time.
#pragma once

#include <cstdint>

#include "../common/philox.h"

namespace ssl_fast::cpu {

// out[4 k + j] = key(first + k, stream).w[j] for k < counters.
void philox_words(const philox::Key& key, uint64_t first, int64_t counters, philox::Stream stream, uint32_t* out);

}  // namespace ssl_fast::cpu
