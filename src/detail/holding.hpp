// A record of the segment held by this process: the SPSC producer or consumer
// role (OwnerRecord), an MPMC claim record (ClaimRecord), or a side's
// recovery. Holding it means keeping the lock on the record's byte
// (layout.hpp, lock_byte); the record's identity word names the holder for
// messages and ring-inspect.
#pragma once

#include <cstdint>
#include <memory>
#include <string_view>

#include "detail/fail.hpp"
#include "detail/holder_lock.hpp"
#include "shmring/process.hpp"
#include "shmring/segment.hpp"

namespace shmring::detail {

class Holding {
 public:
  // A lock description of its own and the calling process's identity; nullptr
  // with `f` set if either cannot be had (no descriptor left, no /proc): a
  // holder that could not be told alive or named is never recorded.
  static std::shared_ptr<Holding> prepare(const Segment& segment, Failure& f);

  // Takes the record whose identity word is `word` and lock byte `byte`:
  // 0, EAGAIN while another live holder keeps it, else the fcntl error.
  // One record per Holding.
  int take(std::uint64_t* word, std::uint64_t byte) noexcept;

  std::uint64_t identity() const noexcept { return identity_; }
  std::uint64_t start_time() const noexcept { return start_time_; }
  HolderLock& lock() noexcept { return lock_; }
  // Whether a live process (this one included, through another Holding)
  // keeps the record at `byte`; asked through the segment's own descriptor,
  // which holds no locks.
  bool held_by_other(std::uint64_t byte) const noexcept {
    return process::lock_held(probe_fd_, byte);
  }

  // Clears the record (only in the process that took it: a forked child's
  // copy leaves its parent's record alone) and lets the lock go.
  ~Holding();

  Holding(std::shared_ptr<const void> mapping, int probe_fd, HolderLock lock,
          std::uint64_t identity, std::uint64_t start_time) noexcept;
  Holding(const Holding&) = delete;
  Holding& operator=(const Holding&) = delete;

 private:
  std::shared_ptr<const void> mapping_;  // the record lives in it
  int probe_fd_;
  HolderLock lock_;
  std::uint64_t identity_;
  std::uint64_t start_time_;
  std::uint64_t* word_ = nullptr;
  std::uint32_t generation_;
};

// Takes `record`, whose lock byte is `byte`, for this process and stores its
// start time there (so that a successor tells a recycled pid from it).
// nullptr with `f` unset while a live owner holds it, for the caller to
// name the role; nullptr with `f` set, naming `what`, on any other failure.
std::shared_ptr<Holding> take_owner(const Segment& segment, OwnerRecord& record, std::uint64_t byte,
                                    std::string_view what, Failure& f);

// Takes the SPSC `producer` (or consumer) role of `segment`: errc::role_taken
// naming the live holder, or another failure, with nullptr.
std::shared_ptr<Holding> claim_role(const Segment& segment, bool producer, Failure& f);

}  // namespace shmring::detail
