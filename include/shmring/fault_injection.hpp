// Fault injection for tests: every system call the library makes on a cold
// path or in a wait goes through one thin wrapper (src/sys.cpp), which first
// asks the hook installed here. A test can so fail a call with any errno
// (ENOSPC from a full /dev/shm, EACCES, EINTR from a signal, a failed CUDA
// registration) where the real fault cannot be produced on demand.
//
// With no hook installed (the default) the wrapper costs one relaxed load.
#pragma once

namespace shmring::fault {

// The calls that can be failed. `cuda_host_register` stands for the CUDA
// registration of a segment (shmring::cuda), which fails as cudaErrorMemoryAllocation.
enum class Call {
  open,
  fstat,
  fallocate,
  mmap,
  fchmod,
  link,
  unlink,
  futex_wait,
  cuda_host_register,
};

const char* to_string(Call call) noexcept;

// Returns 0 to let the call run, or the errno it should fail with instead
// (EINTR makes the wrapper retry, as a real interruption would). Called from
// any thread that makes the call; it must be thread-safe.
using Hook = int (*)(Call call, void* context) noexcept;

// Installs `hook` (nullptr removes it) with a context passed back to it.
void set_hook(Hook hook, void* context = nullptr) noexcept;

// Installs a hook for one scope and removes it at the end.
class ScopedHook {
 public:
  ScopedHook(Hook hook, void* context = nullptr) noexcept { set_hook(hook, context); }
  ~ScopedHook() { set_hook(nullptr); }
  ScopedHook(const ScopedHook&) = delete;
  ScopedHook& operator=(const ScopedHook&) = delete;
};

}  // namespace shmring::fault
