// CPU outputs of the kernels. Fresh multi-MB buffers from the default allocator
// are mapped a 4 KiB page at a time, and on first touch each page costs a fault:
// measured here, filling a new 64 MiB tensor takes ~5x as long as filling an
// existing one. Outputs of 2 MiB and more therefore come from 2 MiB-aligned
// memory advised for transparent huge pages (what torch's opt-in
// THP_MEM_ALLOC_ENABLE=1 does globally), prefaulted before the kernel writes
// them, and a few freed buffers (at most 4, 512 MiB) are kept for the next
// call of the same size. SSL_FAST_HUGEPAGES=0 turns all of it off.
#pragma once

#include <ATen/core/Tensor.h>

namespace ssl_fast::cpu {

at::Tensor empty(at::IntArrayRef shape, at::ScalarType dtype);

// Returns the cached buffers to the system.
void empty_cache();

}  // namespace ssl_fast::cpu
