// Per-thread scratch buffers of the tile kernels: each (type, purpose) has one buffer per
// thread, 64-byte aligned, that grows and never shrinks, so that tiles allocate nothing.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <new>

namespace ssl_fast::cpu {

enum class Scratch { kLogits, kPackedA, kPackedB };

// This thread's buffer for `kWhat`, holding at least `count` elements (contents kept only
// while it does not grow).
template <typename T, Scratch kWhat>
T* thread_scratch(int64_t count) {
  constexpr std::align_val_t kAlign{64};
  struct Free {
    void operator()(T* p) const { ::operator delete[](p, kAlign); }
  };
  thread_local std::unique_ptr<T[], Free> buffer;
  thread_local int64_t capacity = 0;
  if (count > capacity) {
    buffer.reset(static_cast<T*>(::operator new[](count * sizeof(T), kAlign)));
    capacity = count;
  }
  return buffer.get();
}

}  // namespace ssl_fast::cpu
