// Zero-copy access: slots lent to a producer (WriteClaim) or a consumer
// (ReadClaim) between claim and commit, or between peek and release.
//
// A claim is a run of consecutive positions; slot i of the claim is position
// first + i, which may wrap around the end of the slot array. A claim holds a
// copy of the ring's view (not a pointer into its handle), so moving the
// handle is fine; it must not outlive the handle's mapping.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>

#include "shmring/ring_view.hpp"
#include "shmring/status.hpp"

namespace shmring {

class WriteClaim {
 public:
  WriteClaim() noexcept = default;

  std::size_t size() const noexcept { return static_cast<std::size_t>(count_); }
  bool empty() const noexcept { return count_ == 0; }
  explicit operator bool() const noexcept { return count_ != 0; }
  // Why the claim is empty: would_block, timeout or corrupt (ok otherwise).
  Status status() const noexcept { return status_; }

  // The whole writable payload of slot i (slot_size bytes, 64-byte aligned).
  std::span<std::byte> operator[](std::size_t i) const noexcept {
    return {view_.payload(first_ + i), static_cast<std::size_t>(view_.slot_size())};
  }
  std::uint64_t position(std::size_t i) const noexcept { return first_ + i; }

  // How many bytes of slot i the commit publishes (the full slot until set).
  // too_large, and nothing recorded, if `bytes` exceeds the slot.
  [[nodiscard]] Status set_size(std::size_t i, std::size_t bytes) const noexcept {
    if (bytes > view_.slot_size()) return Status::too_large;
    view_.set_length(first_ + i, static_cast<std::uint32_t>(bytes));
    return Status::ok;
  }

 private:
  friend class SpscProducer;
  friend class MpmcProducer;
  WriteClaim(const RingView& view, std::uint64_t first, std::uint64_t count, Status status) noexcept
      : view_(view), first_(first), count_(count), status_(status) {
    for (std::uint64_t i = 0; i < count; ++i) {
      view.set_length(first + i, static_cast<std::uint32_t>(view.slot_size()));
    }
  }
  RingView view_;
  std::uint64_t first_ = 0;
  std::uint64_t count_ = 0;
  Status status_ = Status::would_block;
};

class ReadClaim {
 public:
  ReadClaim() noexcept = default;

  std::size_t size() const noexcept { return static_cast<std::size_t>(count_); }
  bool empty() const noexcept { return count_ == 0; }
  explicit operator bool() const noexcept { return count_ != 0; }
  Status status() const noexcept { return status_; }

  // The message in slot i, in place.
  std::span<const std::byte> operator[](std::size_t i) const noexcept {
    const ReadSlot s = view_.read_slot(first_ + i);
    return {s.data, s.size};
  }
  std::uint64_t position(std::size_t i) const noexcept { return first_ + i; }

 private:
  friend class SpscConsumer;
  friend class MpmcConsumer;
  ReadClaim(const RingView& view, std::uint64_t first, std::uint64_t count, Status status) noexcept
      : view_(view), first_(first), count_(count), status_(status) {}
  RingView view_;
  std::uint64_t first_ = 0;
  std::uint64_t count_ = 0;
  Status status_ = Status::would_block;
};

}  // namespace shmring
