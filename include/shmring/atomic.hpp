// Atomic access to words that live in shared memory.
//
// The segment holds plain integers (it is an ABI, not a C++ object graph), so
// every shared access goes through an atomic_ref. On the device that is
// cuda::atomic_ref with system scope (the peer may be a CPU process); on the
// host it is std::atomic_ref. Only loads, stores and, for words that a single
// side read-modify-writes, CAS/fetch_add are offered (DESIGN principle 2).
//
// The choice is made on __CUDA_ARCH__ (set only while nvcc compiles device
// code), not __CUDACC__ (set for both halves of a .cu file): the host half of
// a .cu file and a .cpp file must compile these inline functions the same
// way, or one definition of them would differ between translation units.
#pragma once

#include <cstdint>

#include "shmring/config.hpp"

#if defined(__CUDA_ARCH__)
#include <cuda/atomic>
#else
#include <atomic>
#endif

namespace shmring::atomic {

#if defined(__CUDA_ARCH__)
template <class T>
using ref = ::cuda::atomic_ref<T, ::cuda::thread_scope_system>;
namespace mo = ::cuda::std;
#else
template <class T>
using ref = std::atomic_ref<T>;
namespace mo = std;
#endif

template <class T>
SHMRING_HD inline T load_relaxed(const T* p) noexcept {
  return ref<T>(*const_cast<T*>(p)).load(mo::memory_order_relaxed);
}
template <class T>
SHMRING_HD inline T load_acquire(const T* p) noexcept {
  return ref<T>(*const_cast<T*>(p)).load(mo::memory_order_acquire);
}
template <class T>
SHMRING_HD inline T load_seq_cst(const T* p) noexcept {
  return ref<T>(*const_cast<T*>(p)).load(mo::memory_order_seq_cst);
}
template <class T>
SHMRING_HD inline void store_relaxed(T* p, T v) noexcept {
  ref<T>(*p).store(v, mo::memory_order_relaxed);
}
template <class T>
SHMRING_HD inline void store_release(T* p, T v) noexcept {
  ref<T>(*p).store(v, mo::memory_order_release);
}
template <class T>
SHMRING_HD inline void store_seq_cst(T* p, T v) noexcept {
  ref<T>(*p).store(v, mo::memory_order_seq_cst);
}
// Read-modify-write: only for words that agents of one side share.
template <class T>
SHMRING_HD inline bool compare_exchange(T* p, T& expected, T desired) noexcept {
  return ref<T>(*p).compare_exchange_strong(expected, desired, mo::memory_order_seq_cst,
                                            mo::memory_order_relaxed);
}
template <class T>
SHMRING_HD inline T fetch_add(T* p, T v) noexcept {
  return ref<T>(*p).fetch_add(v, mo::memory_order_seq_cst);
}
template <class T>
SHMRING_HD inline T fetch_sub(T* p, T v) noexcept {
  return ref<T>(*p).fetch_sub(v, mo::memory_order_seq_cst);
}
// Bit sets (EventTable::armed), which CPU agents of both sides share; no GPU
// agent ever touches them (a kernel can neither sleep in epoll nor write to
// a FIFO).
template <class T>
SHMRING_HD inline T fetch_or(T* p, T v) noexcept {
  return ref<T>(*p).fetch_or(v, mo::memory_order_seq_cst);
}
template <class T>
SHMRING_HD inline T fetch_and(T* p, T v) noexcept {
  return ref<T>(*p).fetch_and(v, mo::memory_order_seq_cst);
}
template <class T>
SHMRING_HD inline T exchange(T* p, T v) noexcept {
  return ref<T>(*p).exchange(v, mo::memory_order_seq_cst);
}

// Standalone fences, for the seqlock of lossy broadcast slots
// (broadcast_view.hpp): the payload words between them are relaxed atomics.
// ThreadSanitizer does not model standalone fences (GCC says so with
// -Wtsan); every access they order is atomic, so it reports no race either
// way, and the fences stay what the hardware needs.
#if defined(__GNUC__) && !defined(__clang__) && __GNUC__ >= 12
#define SHMRING_FENCE_BEGIN \
  _Pragma("GCC diagnostic push") _Pragma("GCC diagnostic ignored \"-Wtsan\"")
#define SHMRING_FENCE_END _Pragma("GCC diagnostic pop")
#else
#define SHMRING_FENCE_BEGIN
#define SHMRING_FENCE_END
#endif
SHMRING_HD inline void fence_release() noexcept {
#if defined(__CUDA_ARCH__)
  ::cuda::atomic_thread_fence(mo::memory_order_release, ::cuda::thread_scope_system);
#else
  SHMRING_FENCE_BEGIN
  std::atomic_thread_fence(std::memory_order_release);
  SHMRING_FENCE_END
#endif
}
SHMRING_HD inline void fence_acquire() noexcept {
#if defined(__CUDA_ARCH__)
  ::cuda::atomic_thread_fence(mo::memory_order_acquire, ::cuda::thread_scope_system);
#else
  SHMRING_FENCE_BEGIN
  std::atomic_thread_fence(std::memory_order_acquire);
  SHMRING_FENCE_END
#endif
}

// A cache hint: pull a line toward this core ahead of the loads that need
// it, so that its transfer from another core overlaps other work (a locked
// instruction, say) instead of following it. A hint only, as below.
SHMRING_HD inline void prefetch_read(const void* p) noexcept {
#if defined(__CUDA_ARCH__)
  (void)p;
#else
  __builtin_prefetch(p, 0, 3);
#endif
}
// A cache hint: take a line exclusive ahead of the stores that will write
// it, so that its transfer from another core overlaps other work instead of
// holding up a later locked instruction (which waits until every store
// before it has its line). A hint only: it orders nothing and may be
// dropped, so no correctness rests on it. x86: PREFETCHW (a no-op on cores
// that predate it); ARM: PRFM PSTL1KEEP. A no-op on a GPU (a
// kernel's stores to host memory are PCIe writes, not lines it could keep).
SHMRING_HD inline void prefetch_write(const void* p) noexcept {
#if defined(__CUDA_ARCH__)
  (void)p;
#elif defined(__x86_64__) || defined(__i386__)
  asm volatile("prefetchw %0" ::"m"(*static_cast<const char*>(p)));
#else
  __builtin_prefetch(p, 1, 3);
#endif
}

// A processor hint inside spin loops: lets the sibling hyper-thread run and
// avoids the memory-order machine clear when the awaited line changes.
SHMRING_HD inline void cpu_relax() noexcept {
#if defined(__CUDA_ARCH__)
  __nanosleep(32);
#elif defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#elif defined(__aarch64__)
  asm volatile("yield" ::: "memory");
#endif
}

}  // namespace shmring::atomic
