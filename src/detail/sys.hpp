// The library's one door to the system calls of its cold paths and waits.
// Each wrapper asks the fault-injection hook first (shmring/fault_injection.hpp),
// and retries a call interrupted by a signal (EINTR), so no caller has to.
// Failures return -1 with errno set, like the calls they wrap, except
// fallocate, which returns the error number as posix_fallocate does.
#pragma once

#include <sys/stat.h>
#include <sys/types.h>
#include <time.h>

#include <cstddef>
#include <cstdint>

#include "shmring/fault_injection.hpp"

namespace shmring::sys {

// The errno the hook wants `call` to fail with, or 0.
int injected(fault::Call call) noexcept;

int open(const char* path, int flags, mode_t mode = 0) noexcept;
int fstat(int fd, struct stat* st) noexcept;
int fallocate(int fd, off_t size) noexcept;               // 0 or an error number
void* mmap(std::size_t size, int prot, int fd) noexcept;  // MAP_SHARED at 0; MAP_FAILED on failure
int fchmod(int fd, mode_t mode) noexcept;
int link(const char* from, const char* to) noexcept;
int unlink(const char* path) noexcept;

// FUTEX_WAIT (shared) on `word` for at most `timeout`: 0 when woken, else -1
// with errno EAGAIN (the word differed), ETIMEDOUT or EINTR. Not retried:
// every waiter re-checks its condition and deadline after any return.
int futex_wait(std::uint32_t* word, std::uint32_t expected, const timespec* timeout) noexcept;

}  // namespace shmring::sys
