#include "alloc.h"

#include <ATen/EmptyTensor.h>
#include <ATen/ops/empty.h>
#include <c10/core/CPUAllocator.h>

#include <cstdlib>
#include <cstring>
#include <mutex>
#include <vector>

#ifdef __linux__
#include <sys/mman.h>
#endif
#ifdef __GLIBC__
#include <malloc.h>
#endif

namespace ssl_fast::cpu {
namespace {

constexpr size_t kHugePage = size_t(2) << 20;
// Freed buffers kept for reuse: a training step frees its gradient (zero_grad)
// and the next forward asks for one of the same size; reusing it skips mapping
// and zeroing fresh pages (measured: about 10 ms per 64 MiB here). Bounded, and
// only exact sizes are reused.
constexpr size_t kMaxCachedBlocks = 4;
constexpr size_t kMaxCachedBytes = size_t(512) << 20;

struct Block {
  void* ptr;
  size_t size;
};

class BlockCache {
 public:
  void* take(size_t size) {
    std::lock_guard<std::mutex> lock(mutex_);
    for (auto it = blocks_.begin(); it != blocks_.end(); ++it) {
      if (it->size == size) {
        void* p = it->ptr;
        bytes_ -= size;
        blocks_.erase(it);
        return p;
      }
    }
    return nullptr;
  }
  void clear() {
    std::lock_guard<std::mutex> lock(mutex_);
    for (const Block& b : blocks_) std::free(b.ptr);
    blocks_.clear();
    bytes_ = 0;
  }
  bool keep(const Block& b) {
    std::lock_guard<std::mutex> lock(mutex_);
    if (blocks_.size() >= kMaxCachedBlocks || bytes_ + b.size > kMaxCachedBytes) return false;
    blocks_.push_back(b);
    bytes_ += b.size;
    return true;
  }

 private:
  std::mutex mutex_;
  std::vector<Block> blocks_;
  size_t bytes_ = 0;
};

// Never destroyed: tensors may be freed during interpreter shutdown.
BlockCache& cache() {
  static auto* c = new BlockCache;
  return *c;
}

void release(void* ctx) {
  auto* b = static_cast<Block*>(ctx);
  if (!cache().keep(*b)) std::free(b->ptr);
  delete b;
}

void* map_fresh(size_t size) {
  void* p = nullptr;
  if (posix_memalign(&p, kHugePage, size) != 0) return nullptr;
#ifdef MADV_HUGEPAGE
  madvise(p, size, MADV_HUGEPAGE);  // advice only: failure leaves normal pages
#endif
#ifdef MADV_POPULATE_WRITE
  // Fault the pages in now, from this thread (Linux >= 5.14; older kernels refuse
  // it and the pages fault on first touch). First touches from both threads of a
  // parallel kernel contend: measured here, 70 ms instead of 27 ms for a 64 MiB
  // gradient written by 2 threads.
  madvise(p, size, MADV_POPULATE_WRITE);
#endif
  return p;
}

struct HugePageAllocator final : c10::Allocator {
  c10::DataPtr allocate(size_t nbytes) override {
    if (nbytes < kHugePage) return c10::GetCPUAllocator()->allocate(nbytes);
    const size_t size = (nbytes + kHugePage - 1) / kHugePage * kHugePage;
    void* p = cache().take(size);
    if (p == nullptr) p = map_fresh(size);
    if (p == nullptr) return c10::GetCPUAllocator()->allocate(nbytes);
    return {p, new Block{p, size}, &release, c10::Device(c10::DeviceType::CPU)};
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

void empty_cache() {
  cache().clear();
#ifdef __GLIBC__
  // Once large blocks have been freed, glibc raises its mmap threshold, and buffers of a
  // few MiB then come from the heap, whose free() keeps the pages: hand them back.
  malloc_trim(0);
#endif
}

at::Tensor empty(at::IntArrayRef shape, at::ScalarType dtype) {
  if (!huge_pages_enabled()) return at::empty(shape, at::TensorOptions().dtype(dtype));
  static HugePageAllocator allocator;
  return at::detail::empty_generic(
      shape, &allocator, c10::DispatchKeySet(c10::DispatchKey::CPU), dtype, std::nullopt);
}

}  // namespace ssl_fast::cpu
