#include "detail/sys.hpp"

#include <fcntl.h>
#include <linux/futex.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>

namespace shmring {
namespace fault {

namespace {
// The context is stored before the hook (release) and read after it
// (acquire), so a call that sees a hook sees its context.
std::atomic<Hook> g_hook{nullptr};
std::atomic<void*> g_context{nullptr};
}  // namespace

void set_hook(Hook hook, void* context) noexcept {
  g_hook.store(nullptr, std::memory_order_release);
  g_context.store(context, std::memory_order_relaxed);
  g_hook.store(hook, std::memory_order_release);
}

const char* to_string(Call call) noexcept {
  switch (call) {
    case Call::open:
      return "open";
    case Call::fstat:
      return "fstat";
    case Call::fallocate:
      return "fallocate";
    case Call::mmap:
      return "mmap";
    case Call::fchmod:
      return "fchmod";
    case Call::link:
      return "link";
    case Call::unlink:
      return "unlink";
    case Call::futex_wait:
      return "futex_wait";
    case Call::cuda_host_register:
      return "cuda_host_register";
  }
  return "unknown";
}

}  // namespace fault

namespace sys {

int injected(fault::Call call) noexcept {
  const fault::Hook hook = fault::g_hook.load(std::memory_order_acquire);
  return hook == nullptr ? 0 : hook(call, fault::g_context.load(std::memory_order_relaxed));
}

namespace {

// Runs `body` until it is not interrupted, giving the hook its say each time.
template <class Body>
int retry(fault::Call call, Body&& body) noexcept {
  for (;;) {
    if (const int err = injected(call); err != 0) {
      if (err == EINTR) continue;
      errno = err;
      return -1;
    }
    const int rc = body();
    if (rc == -1 && errno == EINTR) continue;
    return rc;
  }
}

}  // namespace

int open(const char* path, int flags, mode_t mode) noexcept {
  return retry(fault::Call::open, [&] { return ::open(path, flags, mode); });
}

int fstat(int fd, struct stat* st) noexcept {
  return retry(fault::Call::fstat, [&] { return ::fstat(fd, st); });
}

int fallocate(int fd, off_t size) noexcept {
  for (;;) {
    int err = injected(fault::Call::fallocate);
    if (err == 0) err = ::posix_fallocate(fd, 0, size);
    if (err != EINTR) return err;
  }
}

void* mmap(std::size_t size, int prot, int fd) noexcept {
  for (;;) {
    const int err = injected(fault::Call::mmap);
    if (err == EINTR) continue;
    if (err != 0) {
      errno = err;
      return MAP_FAILED;
    }
    return ::mmap(nullptr, size, prot, MAP_SHARED, fd, 0);
  }
}

int fchmod(int fd, mode_t mode) noexcept {
  return retry(fault::Call::fchmod, [&] { return ::fchmod(fd, mode); });
}

int link(const char* from, const char* to) noexcept {
  return retry(fault::Call::link, [&] { return ::link(from, to); });
}

int unlink(const char* path) noexcept {
  return retry(fault::Call::unlink, [&] { return ::unlink(path); });
}

int futex_wait(std::uint32_t* word, std::uint32_t expected, const timespec* timeout) noexcept {
  if (const int err = injected(fault::Call::futex_wait); err != 0) {
    errno = err;
    return -1;
  }
  return static_cast<int>(::syscall(SYS_futex, word, FUTEX_WAIT, expected, timeout, nullptr, 0));
}

}  // namespace sys
}  // namespace shmring
