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
// low-latency slots (SlotFormat::low_latency) the copy calls and drain() work as on any ring, and
// the zero-copy ones return Status::unsupported.
//
// Claims (claim.hpp): one at a time per handle, because the ring is read and
// written in order. While a claim of the producer is live, the calls that
// take slots (try_push, try_push_many, try_claim and their blocking forms)
// return Status::busy; so do the consumer's while one of its peeks is live.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <memory>
#include <span>
#include <system_error>

#include "shmring/claim.hpp"
#include "shmring/handle.hpp"
#include "shmring/in_order.hpp"
#include "shmring/process.hpp"
#include "shmring/segment.hpp"
#include "shmring/spsc_view.hpp"
#include "shmring/status.hpp"
#include "shmring/wait.hpp"

namespace shmring {
namespace detail {
struct Failure;

// What an SpscProducer holds, and the steps its claims finish with.
struct SpscProducerCore final : HandleCore {
  SpscView view;
  SpscProducerCursor cursor;

  void write(std::uint64_t position, std::span<const std::byte> message) noexcept {
    if (view.low_latency()) {
      write_words(position, message);
      return;
    }
    const auto size = static_cast<std::uint32_t>(message.size());
    copy_message(view.payload(position), message.data(), size);
    view.set_length(position, size);
  }
  // Low-latency slots: out of line (spsc_ring.cpp), so that write() stays
  // small enough to inline into the push of a plain slot.
  void write_words(std::uint64_t position, std::span<const std::byte> message) noexcept;
  void publish(std::uint64_t count) noexcept {
    if (view.publish(cursor, count)) wake_consumer();
  }
  void wake_consumer(bool everyone = false) noexcept;
  void finish_write(std::uint64_t first, std::uint64_t, std::uint64_t count) noexcept override {
    if (count != 0 && first == cursor.head) publish(count);
  }

  WaitFor waits_for() const noexcept override { return WaitFor::room; }
  bool progress_ready() const noexcept override { return view.space_ready(cursor); }
  Status end_status(bool probe) noexcept override;
  // Ends the stream: stored after every publication of this handle, then
  // the consumer is woken (futex and descriptor) whether or not it sleeps.
  void close() noexcept;
  ~SpscProducerCore() override;
};

// What an SpscConsumer holds.
struct SpscConsumerCore final : HandleCore {
  SpscView view;
  SpscConsumerCursor cursor;
  EmptyPolls empty;  // tries that found nothing, in a row (ring_view.hpp)

  void release(std::uint64_t count) noexcept {
    if (view.release(cursor, count)) wake_producer();
  }
  void wake_producer() noexcept;
  void finish_read(std::uint64_t first, std::uint64_t count) noexcept override {
    if (first == cursor.tail) release(count);
  }

  bool progress_ready() const noexcept override { return view.data_ready(cursor); }
  Status end_status(bool probe) noexcept override;
};

}  // namespace detail

class SpscProducer : public detail::InOrderProducer<detail::SpscProducerCore>,
                     public detail::AttachForms<SpscProducer> {
 public:
  SpscProducer() noexcept = default;

  // attach(segment, policy = {}) and attach(segment, policy, ec): take the
  // role (handle.hpp, AttachForms).

  // close(), closed(), set_close_on_exit(), position(), try_push(),
  // try_push_many(), try_claim(): in_order.hpp.
  [[nodiscard]] Status push(std::span<const std::byte> message,
                            std::chrono::nanoseconds timeout) noexcept;

  // Waits up to `timeout` for at least one free slot to claim.
  [[nodiscard]] WriteClaim claim(std::size_t max, std::chrono::nanoseconds timeout) noexcept;

 private:
  friend class detail::AttachForms<SpscProducer>;
  static SpscProducer do_attach(const Segment& segment, const WaitPolicy& policy,
                                detail::Failure& f);
};

class SpscConsumer : public detail::Handle<detail::SpscConsumerCore>,
                     public detail::AttachForms<SpscConsumer> {
 public:
  SpscConsumer() noexcept = default;

  // attach(segment, policy = {}) and attach(segment, policy, ec): take the
  // role (handle.hpp, AttachForms).

  // Messages consumed so far (the tail position).
  std::uint64_t position() const noexcept { return core_ ? core_->cursor.tail : 0; }

  // Copies the next message into `buffer` and sets `size`. If the buffer is
  // too small: too_large, `size` = the message's size, message kept. On
  // low-latency slots a call that finds the message incomplete (would_block)
  // may have copied part of it into `buffer`.
  [[nodiscard]] Status try_pop(std::span<std::byte> buffer, std::size_t& size) noexcept {
    if (const Status s = exclusive_refusal(); s != Status::ok) return s;
    detail::SpscConsumerCore& c = *core_;
    if (c.view.low_latency()) return try_pop_words(buffer, size);
    Status status = Status::ok;
    const std::uint64_t n = c.view.readable(c.cursor, 1, status);
    c.empty.after(n, status, c.view, c.cursor.tail);
    if (n == 0) return status == Status::ok ? c.nothing_now() : status;
    const ReadSlot slot = c.view.read_slot(c.cursor.tail);
    size = slot.size;
    if (slot.size > buffer.size()) return Status::too_large;
    copy_message(buffer.data(), slot.data, slot.size);
    c.release(1);
    return Status::ok;
  }
  [[nodiscard]] Status pop(std::span<std::byte> buffer, std::size_t& size,
                           std::chrono::nanoseconds timeout) noexcept;

  // Lends up to `max` readable messages in place (claim.hpp).
  [[nodiscard]] ReadClaim try_peek(std::size_t max = 1) noexcept {
    if (const Status s = exclusive_refusal(); s != Status::ok) return ReadClaim(s);
    detail::SpscConsumerCore& c = *core_;
    if (c.view.low_latency()) return ReadClaim(Status::unsupported);
    Status status = Status::ok;
    const std::uint64_t n = c.view.readable(c.cursor, max, status);
    c.empty.after(n, status, c.view, c.cursor.tail);
    if (n == 0) return ReadClaim(status == Status::ok ? c.nothing_now() : status);
    return ReadClaim(c, c.view, c.cursor.tail, n);
  }
  [[nodiscard]] ReadClaim peek(std::size_t max, std::chrono::nanoseconds timeout) noexcept;

  // Hands up to `max` readable messages, in place and in order, to
  // `handler(std::span<const std::byte>)`, then releases them all with one
  // store; returns how many. If the handler throws, the messages up to the
  // one that threw count as read and the rest stay for the next call. On
  // low-latency slots each message is copied out first.
  template <class Handler>
  std::size_t drain(Handler&& handler, std::size_t max = SIZE_MAX) {
    if (low_latency()) return drain_words(handler, max);
    return detail::drain(try_peek(max), handler);
  }
  // The same, waiting up to `timeout` for the first message (0 if none came).
  template <class Handler>
  std::size_t drain(Handler&& handler, std::size_t max, std::chrono::nanoseconds timeout) {
    if (low_latency()) {
      std::size_t n = drain_words(handler, max);
      if (n == 0 && wait_for_data(timeout)) n = drain_words(handler, max);
      return n;
    }
    return detail::drain(peek(max, timeout), handler);
  }

 private:
  friend class detail::AttachForms<SpscConsumer>;
  static SpscConsumer do_attach(const Segment& segment, const WaitPolicy& policy,
                                detail::Failure& f);
  Status try_pop_words(std::span<std::byte> buffer, std::size_t& size) noexcept {
    detail::SpscConsumerCore& c = *core_;
    std::uint32_t length = 0;
    switch (low_latency::read(c.view, c.cursor.tail, buffer.data(), buffer.size(), length)) {
      case low_latency::Read::not_ready:
        return c.nothing_now();
      case low_latency::Read::corrupt:
        return Status::corrupt;
      case low_latency::Read::too_large:
        size = length;
        return Status::too_large;
      case low_latency::Read::ready:
        break;
    }
    size = length;
    c.release(1);
    return Status::ok;
  }
  // drain() on low-latency slots: the words are not the message, so each is
  // copied out (a low-latency slot holds at most kMaxLowLatencySlotSize).
  template <class Handler>
  std::size_t drain_words(Handler& handler, std::size_t max) {
    alignas(8) std::byte buffer[kMaxLowLatencySlotSize];
    std::size_t n = 0;
    for (std::size_t size = 0; n < max && try_pop(buffer, size) == Status::ok; ++n) {
      handler(std::span<const std::byte>(buffer, size));
    }
    return n;
  }
  bool wait_for_data(std::chrono::nanoseconds timeout) noexcept;
};

}  // namespace shmring
