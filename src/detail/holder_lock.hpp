// Holding a role in a segment: a write lock on one byte of the segment file
// (layout.hpp, lock_byte), taken through an open file description of its own.
//
// Why a description of its own: locks of one description never conflict with
// each other, so two handles of one process sharing the segment's descriptor
// could both "take" a role. Why locks at all: the kernel drops them when the
// holder dies, in any pid namespace and for any user, which pids and start
// times cannot tell. A forked child inherits its parent's descriptions; the
// fork handler (process.cpp) points the child's copies at /dev/null so that a
// child that outlives its parent does not keep the parent's roles held.
#pragma once

#include <cstdint>
#include <string_view>

#include "detail/fail.hpp"
#include "shmring/process.hpp"

namespace shmring::detail {

class HolderLock {
 public:
  HolderLock() noexcept = default;
  HolderLock(HolderLock&& other) noexcept;
  HolderLock& operator=(HolderLock&& other) noexcept;
  HolderLock(const HolderLock&) = delete;
  HolderLock& operator=(const HolderLock&) = delete;
  ~HolderLock();

  // A new description of the file behind `segment_fd` (which must be open
  // read-write): through /proc/self/fd, checked to be the same file.
  static HolderLock open(int segment_fd, std::string_view segment, Failure& f);

  // Takes the lock on `byte`: 0, or EAGAIN when another description holds
  // it, or the error of the call.
  int try_lock(std::uint64_t byte) noexcept;
  void unlock(std::uint64_t byte) noexcept;

  explicit operator bool() const noexcept { return fd_ >= 0; }

 private:
  explicit HolderLock(int fd) noexcept;
  void close() noexcept;
  int fd_ = -1;
};

// Takes (F_WRLCK) or gives up (F_UNLCK) the lock on `byte` through the
// description behind `fd`: 0, EAGAIN while another description holds it, or
// the error of the call. HolderLock and the creator's lock (segment.cpp)
// both go through it.
int set_byte_lock(int fd, short type, std::uint64_t byte) noexcept;

// The calling process's identity for a record, or a failure naming the
// segment and what the identity was for (no /proc, no descriptor left): an
// identity that cannot be read is never recorded.
Failure identify_self(std::string_view segment, std::string_view as_what, process::Identity& out);

// Called in a forked child before fork() returns there: every holder lock's
// descriptor is pointed at /dev/null (the number stays taken, so the handle
// that owns it still closes only its own).
void drop_inherited_locks() noexcept;
// The fork handler's prepare and parent/child halves around it.
void lock_registry_for_fork() noexcept;
void unlock_registry_after_fork() noexcept;

}  // namespace shmring::detail
