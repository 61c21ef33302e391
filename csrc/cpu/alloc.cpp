#include "alloc.h"

#include <ATen/EmptyTensor.h>
#include <c10/core/CPUAllocator.h>

#include <cstdlib>
#include <cstring>

#ifdef __linux__
#include <sys/mman.h>
#endif

namespace ssl_fast::cpu {
namespace {

constexpr size_t kHugePage = size_t(2) << 20;

void free_huge(void* p) { std::free(p); }

struct HugePageAllocator final : c10::Allocator {
  c10::DataPtr allocate(size_t nbytes) override {
    if (nbytes < kHugePage) return c10::GetCPUAllocator()->allocate(nbytes);
    const size_t rounded = (nbytes + kHugePage - 1) / kHugePage * kHugePage;
    void* p = nullptr;
    if (posix_memalign(&p, kHugePage, rounded) != 0) {
      return c10::GetCPUAllocator()->allocate(nbytes);
    }
#ifdef MADV_HUGEPAGE
    madvise(p, rounded, MADV_HUGEPAGE);  // advice only: failure leaves normal pages
#endif
#ifdef MADV_POPULATE_WRITE
    // Fault the pages in now, from this thread (Linux >= 5.14; older kernels refuse
    // it and the pages fault on first touch). First touches from both threads of a
    // parallel kernel contend: measured here, 70 ms instead of 27 ms for a 64 MiB
    // gradient written by 2 threads.
    madvise(p, rounded, MADV_POPULATE_WRITE);
#endif
    return {p, p, &free_huge, c10::Device(c10::DeviceType::CPU)};
  }
  void copy_data(void* dest, const void* src, size_t count) const override {
    std::memcpy(dest, src, count);
  }
};

bool huge_pages_enabled() {
  static const bool enabled = [] {
    const char* v = std::getenv("SSL_FAST_HUGEPAGES");
    return v == nullptr || std::strcmp(v, "0") != 0;
  }();
  return enabled;
}

}  // namespace

at::Tensor empty(at::IntArrayRef shape, at::ScalarType dtype) {
  if (!huge_pages_enabled()) return at::empty(shape, at::TensorOptions().dtype(dtype));
  static HugePageAllocator allocator;
  return at::detail::empty_generic(
      shape, &allocator, c10::DispatchKeySet(c10::DispatchKey::CPU), dtype, std::nullopt);
}

}  // namespace ssl_fast::cpu
