// Role handles for an SPSC ring: one SpscProducer and one SpscConsumer at a
// time, each in any process that maps the segment.
//
// Attaching takes the role (a lock on the role's record in the segment file,
// which the kernel drops when the holder dies; layout.hpp, lock_byte) and
// records the caller's pid and start time for display; a second live producer
// (or consumer) is refused with errc::role_taken, and a role whose holder has
// died is taken over, continuing from the positions in the segment. A handle
// belongs to the process that attached it: in a forked child every call
// returns Status::wrong_process (attach in the child instead). The try_ forms never block; the
// blocking forms spin, yield, then sleep on a futex in the segment until the deadline. Hot-path
// calls are noexcept, allocate nothing and make a system call only to wake a sleeper. On a ring of
// low-latency slots (SlotFormat::low_latency) the copy calls work as on any ring, and the zero-copy
// ones return Status::unsupported.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <memory>
#include <span>
#include <system_error>

#include "shmring/claim.hpp"
#include "shmring/process.hpp"
#include "shmring/segment.hpp"
#include "shmring/spsc_view.hpp"
#include "shmring/status.hpp"
#include "shmring/wait.hpp"

namespace shmring {
namespace detail {
struct Failure;
}

class SpscProducer {
 public:
  SpscProducer() noexcept = default;
  SpscProducer(SpscProducer&& other) noexcept { swap(other); }
  SpscProducer& operator=(SpscProducer&& other) noexcept {
    SpscProducer(std::move(other)).swap(*this);
    return *this;
  }
  ~SpscProducer();

  static SpscProducer attach(const Segment& segment, const WaitPolicy& policy = {});
  static SpscProducer attach(const Segment& segment, const WaitPolicy& policy, std::error_code& ec);

  explicit operator bool() const noexcept { return lifetime_ != nullptr; }
  std::uint64_t capacity() const noexcept { return view_.capacity(); }
  std::uint64_t slot_size() const noexcept { return view_.slot_size(); }
  // SlotFormat::low_latency: copy calls only.
  bool low_latency() const noexcept { return view_.low_latency(); }
  // Messages published through this ring so far (the head position).
  std::uint64_t position() const noexcept { return cursor_.head; }

  // Copies one message into the ring.
  [[nodiscard]] Status try_push(std::span<const std::byte> message) noexcept {
    if (!attached_here()) return Status::wrong_process;
    if (message.size() > view_.slot_size()) return Status::too_large;
    Status status = Status::ok;
    if (view_.writable(cursor_, 1, status) == 0) {
      return status == Status::ok ? Status::would_block : status;
    }
    write(cursor_.head, message);
    publish(1);
    return Status::ok;
  }
  [[nodiscard]] Status push(std::span<const std::byte> message,
                            std::chrono::nanoseconds timeout) noexcept;

  // Copies up to messages.size() messages with one publication; returns how
  // many went in (stops at the first that is too large, or when full).
  std::size_t try_push_many(std::span<const std::span<const std::byte>> messages) noexcept {
    if (!attached_here()) return 0;
    Status status = Status::ok;
    const std::uint64_t room = view_.writable(cursor_, messages.size(), status);
    std::uint64_t n = 0;
    for (; n < room && messages[n].size() <= view_.slot_size(); ++n) {
      write(cursor_.head + n, messages[n]);
    }
    if (n != 0) publish(n);
    return static_cast<std::size_t>(n);
  }

  // Lends up to `max` free slots to write in place. One claim at a time: a new
  // claim replaces (aborts) one not yet committed.
  [[nodiscard]] WriteClaim try_claim(std::size_t max = 1) noexcept {
    if (!attached_here()) return WriteClaim(view_, cursor_.head, 0, Status::wrong_process);
    if (view_.low_latency()) return WriteClaim(view_, cursor_.head, 0, Status::unsupported);
    Status status = Status::ok;
    const std::uint64_t n = view_.writable(cursor_, max, status);
    return WriteClaim(view_, cursor_.head, n,
                      n != 0                 ? Status::ok
                      : status == Status::ok ? Status::would_block
                                             : status);
  }
  [[nodiscard]] WriteClaim claim(std::size_t max, std::chrono::nanoseconds timeout) noexcept;

  // Publishes slot 0 of a claim with `bytes` of payload (too_large, and
  // nothing published, if it does not fit); the rest of the claim is dropped.
  [[nodiscard]] Status commit(WriteClaim& claim, std::size_t bytes) noexcept {
    if (!attached_here()) return Status::wrong_process;
    if (claim.empty() || claim.first_ != cursor_.head) return Status::would_block;
    if (const Status s = claim.set_size(0, bytes); s != Status::ok) return s;
    publish(1);
    claim = WriteClaim();
    return Status::ok;
  }
  // Publishes the first `count` slots of a claim (sizes set with set_size)
  // with one head store; the rest of the claim is dropped.
  void commit_batch(WriteClaim& claim, std::size_t count) noexcept {
    if (count > claim.count_) count = static_cast<std::size_t>(claim.count_);
    if (claim.first_ == cursor_.head && count != 0 && attached_here()) publish(count);
    claim = WriteClaim();
  }
  void commit_batch(WriteClaim& claim) noexcept { commit_batch(claim, claim.size()); }
  // Gives the slots back unpublished.
  void abort(WriteClaim& claim) noexcept { claim = WriteClaim(); }

 private:
  static SpscProducer do_attach(const Segment& segment, const WaitPolicy& policy,
                                detail::Failure& f);
  void write(std::uint64_t position, std::span<const std::byte> message) noexcept {
    const auto size = static_cast<std::uint32_t>(message.size());
    if (view_.low_latency()) {
      low_latency::write(view_, position, cursor_.incarnation, message.data(), size);
      return;
    }
    copy_message(view_.payload(position), message.data(), size);
    view_.set_length(position, size);
  }
  void publish(std::uint64_t count) noexcept {
    if (view_.publish(cursor_, count)) wake_consumer();
  }
  void wake_consumer() noexcept;
  void swap(SpscProducer& o) noexcept {
    std::swap(view_, o.view_);
    std::swap(cursor_, o.cursor_);
    std::swap(policy_, o.policy_);
    std::swap(wait_state_, o.wait_state_);
    std::swap(generation_, o.generation_);
    lifetime_.swap(o.lifetime_);
  }
  bool attached_here() const noexcept { return generation_ == process::generation(); }

  SpscView view_;
  SpscProducerCursor cursor_;
  WaitPolicy policy_;
  detail::WaitState wait_state_;          // what the wait loop learnt about spinning here
  std::uint32_t generation_ = 0;          // process::generation() at attach
  std::shared_ptr<const void> lifetime_;  // the role held, and through it the mapping
};

class SpscConsumer {
 public:
  SpscConsumer() noexcept = default;
  SpscConsumer(SpscConsumer&& other) noexcept { swap(other); }
  SpscConsumer& operator=(SpscConsumer&& other) noexcept {
    SpscConsumer(std::move(other)).swap(*this);
    return *this;
  }
  ~SpscConsumer();

  static SpscConsumer attach(const Segment& segment, const WaitPolicy& policy = {});
  static SpscConsumer attach(const Segment& segment, const WaitPolicy& policy, std::error_code& ec);

  explicit operator bool() const noexcept { return lifetime_ != nullptr; }
  std::uint64_t capacity() const noexcept { return view_.capacity(); }
  std::uint64_t slot_size() const noexcept { return view_.slot_size(); }
  // SlotFormat::low_latency: copy calls only.
  bool low_latency() const noexcept { return view_.low_latency(); }
  // Messages consumed so far (the tail position).
  std::uint64_t position() const noexcept { return cursor_.tail; }

  // Copies the next message into `buffer` and sets `size`. If the buffer is
  // too small: too_large, `size` = the message's size, message kept. On
  // low-latency slots a call that finds the message incomplete (would_block)
  // may have copied part of it into `buffer`.
  [[nodiscard]] Status try_pop(std::span<std::byte> buffer, std::size_t& size) noexcept {
    if (!attached_here()) return Status::wrong_process;
    if (view_.low_latency()) return try_pop_words(buffer, size);
    Status status = Status::ok;
    if (view_.readable(cursor_, 1, status) == 0) {
      return status == Status::ok ? Status::would_block : status;
    }
    const ReadSlot slot = view_.read_slot(cursor_.tail);
    size = slot.size;
    if (slot.size > buffer.size()) return Status::too_large;
    copy_message(buffer.data(), slot.data, slot.size);
    release_slots(1);
    return Status::ok;
  }
  [[nodiscard]] Status pop(std::span<std::byte> buffer, std::size_t& size,
                           std::chrono::nanoseconds timeout) noexcept;

  // Lends up to `max` readable messages in place, until release().
  [[nodiscard]] ReadClaim try_peek(std::size_t max = 1) noexcept {
    if (!attached_here()) return ReadClaim(view_, cursor_.tail, 0, Status::wrong_process);
    if (view_.low_latency()) return ReadClaim(view_, cursor_.tail, 0, Status::unsupported);
    Status status = Status::ok;
    const std::uint64_t n = view_.readable(cursor_, max, status);
    return ReadClaim(view_, cursor_.tail, n,
                     n != 0                 ? Status::ok
                     : status == Status::ok ? Status::would_block
                                            : status);
  }
  [[nodiscard]] ReadClaim peek(std::size_t max, std::chrono::nanoseconds timeout) noexcept;

  // Hands the first `count` messages of a claim back to the producer with one
  // tail store; the rest stay readable (and the claim keeps them).
  void release(ReadClaim& claim, std::size_t count) noexcept {
    if (count > claim.count_) count = static_cast<std::size_t>(claim.count_);
    if (claim.first_ != cursor_.tail || count == 0 || !attached_here()) return;
    release_slots(count);
    claim.first_ += count;
    claim.count_ -= count;
  }
  void release(ReadClaim& claim) noexcept { release(claim, claim.size()); }

 private:
  static SpscConsumer do_attach(const Segment& segment, const WaitPolicy& policy,
                                detail::Failure& f);
  void release_slots(std::uint64_t count) noexcept {
    if (view_.release(cursor_, count)) wake_producer();
  }
  Status try_pop_words(std::span<std::byte> buffer, std::size_t& size) noexcept {
    std::uint32_t length = 0;
    switch (low_latency::read(view_, cursor_.tail, buffer.data(), buffer.size(), length)) {
      case low_latency::Read::not_ready:
        return Status::would_block;
      case low_latency::Read::corrupt:
        return Status::corrupt;
      case low_latency::Read::too_large:
        size = length;
        return Status::too_large;
      case low_latency::Read::ready:
        break;
    }
    size = length;
    release_slots(1);
    return Status::ok;
  }
  void wake_producer() noexcept;
  void swap(SpscConsumer& o) noexcept {
    std::swap(view_, o.view_);
    std::swap(cursor_, o.cursor_);
    std::swap(policy_, o.policy_);
    std::swap(wait_state_, o.wait_state_);
    std::swap(generation_, o.generation_);
    lifetime_.swap(o.lifetime_);
  }
  bool attached_here() const noexcept { return generation_ == process::generation(); }

  SpscView view_;
  SpscConsumerCursor cursor_;
  WaitPolicy policy_;
  detail::WaitState wait_state_;          // what the wait loop learnt about spinning here
  std::uint32_t generation_ = 0;          // process::generation() at attach
  std::shared_ptr<const void> lifetime_;  // the role held, and through it the mapping
};

}  // namespace shmring
