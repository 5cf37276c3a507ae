// Role handles for a broadcast ring: one BroadcastProducer at a time, and up
// to the ring's `subscribers` BroadcastSubscriber handles, each of which reads
// every message (broadcast_view.hpp has the algorithm).
//
// Attaching. The producer takes the producer role as an SPSC producer does (a
// lock on the role's record; errc::role_taken while a live process holds it);
// a producer that takes over from a dead one continues from the published
// head, and the subscribers go on reading without attaching again. A
// subscriber takes a subscriber block of its own (a lock on the block, which
// the kernel drops when it dies; errc::role_taken when every block is held by
// a live process) and joins at a JoinAt point. Detaching it (detach(), or
// dropping the handle and its claims) retires the block: a reliable producer
// stops waiting for it.
//
// Delivery (fixed at create, Delivery):
//   reliable  the producer waits for the slowest live subscriber. A producer
//             that has to wait first evicts the blocks of dead subscribers
//             (a subscriber killed while the producer waits for it does not
//             hold it up), then looks at the cursors again, then sleeps until
//             a subscriber releases a slot.
//   lossy     the producer never waits. A subscriber that the producer laps
//             gets Status::overrun once, on the call that finds out; its
//             cursor has moved to the newest message by then, and lapped()
//             and lost() count the laps and the messages it missed. A copy
//             (try_pop, pop, newest) is checked against a rewrite while it
//             copied, so it never hands out a torn message. A peek lends the
//             slots in place, where the producer may rewrite them while they
//             are read: read them with load_words() (relaxed atomic words,
//             which keep the race defined), then ask ReadClaim::valid(),
//             which says whether what was read is still the message; a claim
//             that is no longer valid must be discarded. The producer's claims
//             are written likewise with store_words().
//
// As on an SPSC ring, a handle holds one claim at a time: while a claim of
// the producer is live, the calls that take slots return Status::busy, and so
// do the subscriber's reading calls while one of its peeks is live. A handle
// belongs to the process that attached it: in a forked child every call
// returns Status::wrong_process. Hot-path calls are noexcept and make a
// system call only to wake a sleeper (the producer's eviction of dead
// subscribers asks the kernel about their locks, once per wait).
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <system_error>
#include <vector>

#include "shmring/broadcast_view.hpp"
#include "shmring/claim.hpp"
#include "shmring/handle.hpp"
#include "shmring/in_order.hpp"
#include "shmring/segment.hpp"
#include "shmring/status.hpp"
#include "shmring/wait.hpp"

namespace shmring {
namespace detail {
struct Failure;
class Holding;

// What a BroadcastProducer holds.
struct BroadcastProducerCore final : HandleCore {
  BroadcastView view;
  BroadcastProducerCursor cursor;
  int probe_fd = -1;  // the segment's descriptor (kept open by the mapping): who lives

  void write(std::uint64_t position, std::span<const std::byte> message) noexcept {
    view.write(position, message.data(), static_cast<std::uint32_t>(message.size()));
  }
  void publish(std::uint64_t count) noexcept {
    if (view.publish(cursor, count)) wake_subscribers();
  }
  void wake_subscribers(bool everyone = false) noexcept;
  // Reliable: blocks whose holders died stop counting; whether any did.
  bool evict_dead() noexcept;
  void finish_write(std::uint64_t first, std::uint64_t, std::uint64_t count) noexcept override {
    if (count != 0 && first == cursor.head) publish(count);
  }

  WaitFor waits_for() const noexcept override { return WaitFor::room; }
  bool progress_ready() const noexcept override {
    BroadcastProducerCursor c = cursor;  // a look, which must not move our cache
    return view.space_ready(c);
  }
  Status end_status(bool probe) noexcept override;
  // Ends the stream: stored after every publication of this handle, then the
  // subscribers are woken (futex and descriptors) whether or not they sleep.
  void close() noexcept;
  ~BroadcastProducerCore() override;
};

// What a BroadcastSubscriber holds: its block (retired when the core goes).
struct BroadcastSubscriberCore final : HandleCore {
  BroadcastView view;
  BroadcastSubscriberCursor cursor;
  EmptyPolls empty;                // tries that found nothing, in a row (ring_view.hpp)
  std::shared_ptr<Holding> block;  // the block's lock, and through it the mapping
  std::vector<std::byte> scratch;  // lossy drain(): each message is copied out first
  // wait_past()'s own: it may run while another thread uses the handle's
  // other calls (and wait_state), and a reader calls it once per message it
  // waits for, so what it learnt about spinning must outlive the call.
  WaitState past_wait_state;

  ~BroadcastSubscriberCore() override;
  void release(std::uint64_t count) noexcept {
    if (view.release(cursor, count)) wake_producer();
  }
  void wake_producer() noexcept;
  void finish_read(std::uint64_t first, std::uint64_t count) noexcept override {
    if (first == cursor.next) release(count);
  }
  bool still_valid(std::uint64_t position) const noexcept override {
    return view.still_valid(position);
  }

  // The descriptor's readiness: a message at the cursor.
  bool progress_ready() const noexcept override { return view.data_ready(cursor); }
  // Status::closed once the producer closed the stream, Status::peer_dead
  // once the process holding the producer role died without closing it;
  // either only after every message published before it was read.
  Status end_status(bool probe) noexcept override;
  // Nothing was readable at the cursor (`status` from readable()). Lossy: a
  // published position whose slot is being rewritten, or was taken by a
  // claim the producer then gave up, lost its message as surely as a lap
  // does; the view tells only once the producer publishes past it, and until
  // then a blocking read would find the head ahead and never sleep. So it is
  // overrun now. Both leave the slot at 0; one that holds an earlier
  // position was not claimed for the cursor yet, so nothing at the cursor
  // is published, and the head (the line the producer stores with every
  // publication) stays out of this empty poll, as in BroadcastView::lapped().
  Status nothing_readable(Status status) const noexcept {
    if (status != Status::ok || !view.lossy()) return status;
    const std::uint64_t* committed = &view.trailer(cursor.next)->committed;
    if (atomic::load_acquire(committed) != 0 || !view.data_ready(cursor)) return status;
    // Read again after the head: published meanwhile, it is read next.
    return atomic::load_acquire(committed) == cursor.next + 1 ? status : Status::overrun;
  }
  // Copies the message at the cursor and releases it. Lapped (lossy):
  // `conflated` moves on to the newest message and tries again; otherwise the
  // lap is counted and the call says overrun.
  Status copy_next(std::span<std::byte> buffer, std::size_t& size, bool conflated) noexcept;
};

}  // namespace detail

class BroadcastProducer : public detail::InOrderProducer<detail::BroadcastProducerCore>,
                          public detail::AttachForms<BroadcastProducer> {
 public:
  BroadcastProducer() noexcept = default;

  // attach(segment, policy = {}) and attach(segment, policy, ec): take the
  // role (handle.hpp, AttachForms).

  Delivery delivery() const noexcept { return core_ ? core_->view.delivery() : Delivery::reliable; }
  // close(), set_close_on_exit(), position(), try_push(), try_push_many()
  // and try_claim() as on an SPSC ring (in_order.hpp): a producer's end
  // (close, or the handle dropped) ends the stream for every subscriber. Reliable: they would_block
  // while the slowest live subscriber has not released the slot they need. Lossy: a claim's slots
  // lose their old messages from the claim on, published or not; write them
  // with store_words() (subscribers may still be reading them).
  [[nodiscard]] Status push(std::span<const std::byte> message,
                            std::chrono::nanoseconds timeout) noexcept;

  // Waits up to `timeout` for at least one free slot to claim.
  [[nodiscard]] WriteClaim claim(std::size_t max, std::chrono::nanoseconds timeout) noexcept;

 private:
  friend class detail::AttachForms<BroadcastProducer>;
  static BroadcastProducer do_attach(const Segment& segment, const WaitPolicy& policy,
                                     detail::Failure& f);
  // A blocking call of a reliable producer: waits for room (evicting dead
  // subscribers first) while `try_once` would block.
  template <class TryOnce>
  auto wait_for_room(std::chrono::nanoseconds timeout, TryOnce&& try_once) noexcept
      -> decltype(try_once());
};

class BroadcastSubscriber : public detail::Handle<detail::BroadcastSubscriberCore>,
                            public detail::AttachForms<BroadcastSubscriber, JoinAt> {
 public:
  BroadcastSubscriber() noexcept = default;

  // Joins at `at`. The default, JoinAt::next, reads what is published from
  // now on: a subscriber that joins a running stream gets no backlog of
  // messages published before it was there (JoinAt::oldest asks for what the
  // ring still holds, JoinAt::newest for the last one published as well).
  // attach(segment, at, policy = {}) and attach(segment, at, policy, ec)
  // (handle.hpp, AttachForms); attach(segment) joins at JoinAt::next.
  using AttachForms::attach;
  static BroadcastSubscriber attach(const Segment& segment) {
    return attach(segment, JoinAt::next);
  }

  Delivery delivery() const noexcept { return core_ ? core_->view.delivery() : Delivery::reliable; }
  // The next position this subscriber reads.
  std::uint64_t position() const noexcept { return core_ ? core_->cursor.next : 0; }
  // Lossy: times the producer lapped this subscriber, and messages it missed
  // because of that (since it joined; not those newest() passed over).
  std::uint64_t lapped() const noexcept { return core_ ? core_->cursor.lapped : 0; }
  std::uint64_t lost() const noexcept { return core_ ? core_->cursor.lost : 0; }
  // The block this subscriber holds (ring-inspect lists the blocks).
  std::uint32_t block() const noexcept { return core_ ? core_->cursor.index : 0; }

  // Whether the stream ended with nothing published at or after `position`:
  // Status::closed (the producer closed it), Status::peer_dead (the process
  // holding the producer role died; a lock probe, a system call), else
  // would_block. For a reader that keeps messages peeked from its cursor on
  // (a claim put back, its slots still in use) and asks whether more will
  // come: the reading calls would hand the kept messages again instead.
  [[nodiscard]] Status ended_at(std::uint64_t position) noexcept;

  // Waits up to `timeout` for a message at or after `position` to be
  // published: ok when one is, Status::closed or Status::peer_dead when the
  // stream ended before it (as ended_at()), else timeout. Sleeps on the
  // ring's futex like pop(). For the same reader as ended_at(): its peeks
  // put back, it waits for what comes after the messages it keeps. It reads
  // nothing the handle's claims change, so another thread may finish (say,
  // release) those claims meanwhile; but one wait_past() at a time per
  // handle (it keeps its own record of whether spinning pays).
  [[nodiscard]] Status wait_past(std::uint64_t position, std::chrono::nanoseconds timeout) noexcept;

  // Copies the next message into `buffer` and sets `size`. If the buffer is
  // too small: too_large, `size` = the message's size, message kept. Lossy:
  // overrun once when lapped, the cursor then at the newest message.
  [[nodiscard]] Status try_pop(std::span<std::byte> buffer, std::size_t& size) noexcept {
    if (const Status s = exclusive_refusal(); s != Status::ok) return s;
    return core_->copy_next(buffer, size, /*conflated=*/false);
  }
  [[nodiscard]] Status pop(std::span<std::byte> buffer, std::size_t& size,
                           std::chrono::nanoseconds timeout) noexcept;

  // Conflated read: a copy of the newest message published, passing over
  // (and releasing) the unread ones before it, which do not count as lost.
  // would_block if nothing was published since the last message read.
  [[nodiscard]] Status try_newest(std::span<std::byte> buffer, std::size_t& size) noexcept {
    if (const Status s = exclusive_refusal(); s != Status::ok) return s;
    return core_->copy_next(buffer, size, /*conflated=*/true);
  }
  [[nodiscard]] Status newest(std::span<std::byte> buffer, std::size_t& size,
                              std::chrono::nanoseconds timeout) noexcept;

  // Lends up to `max` readable messages in place (claim.hpp). Lossy: overrun
  // (an empty claim) once when lapped; read the slots with load_words() and
  // check ReadClaim::valid() afterwards.
  [[nodiscard]] ReadClaim try_peek(std::size_t max = 1) noexcept {
    if (const Status s = exclusive_refusal(); s != Status::ok) return ReadClaim(s);
    detail::BroadcastSubscriberCore& c = *core_;
    Status status = Status::ok;
    const std::uint64_t n = c.view.readable(c.cursor, max, status);
    c.empty.after(n, status, c.view, c.cursor.next);
    if (n != 0) return ReadClaim(c, c.view, c.cursor.next, n);
    status = c.nothing_readable(status);
    // Overrun once, when the cursor moved on; else nothing to skip to yet.
    if (status == Status::overrun && c.view.recover_overrun(c.cursor) == 0) {
      status = Status::would_block;
    }
    return ReadClaim(detail::none_because(c, status));
  }
  [[nodiscard]] ReadClaim peek(std::size_t max, std::chrono::nanoseconds timeout) noexcept;

  // Hands up to `max` messages, in order, to
  // `handler(std::span<const std::byte>)`; returns how many. Reliable: in
  // place, released with one store (if the handler throws, the messages up to
  // the one that threw count as read). Lossy: each one copied out first and
  // checked, so the handler never sees a torn message; laps are counted and
  // passed over.
  template <class Handler>
  std::size_t drain(Handler&& handler, std::size_t max = SIZE_MAX) {
    if (core_ != nullptr && core_->view.lossy()) return drain_copies(handler, max);
    return detail::drain(try_peek(max), handler);
  }
  // The same, waiting up to `timeout` for the first message (0 if none came).
  template <class Handler>
  std::size_t drain(Handler&& handler, std::size_t max, std::chrono::nanoseconds timeout) {
    if (core_ == nullptr || !core_->view.lossy()) {
      return detail::drain(peek(max, timeout), handler);
    }
    std::size_t n = drain_copies(handler, max);
    if (n == 0 && wait_for_data(timeout)) n = drain_copies(handler, max);
    return n;
  }

 private:
  friend class detail::AttachForms<BroadcastSubscriber, JoinAt>;
  static BroadcastSubscriber do_attach(const Segment& segment, JoinAt at, const WaitPolicy& policy,
                                       detail::Failure& f);
  template <class Handler>
  std::size_t drain_copies(Handler& handler, std::size_t max) {
    std::size_t n = 0;
    std::size_t size = 0;
    while (n < max) {
      const Status s = try_pop(core_->scratch, size);
      if (s == Status::overrun) continue;  // counted; go on from the newest
      if (s != Status::ok) break;
      ++n;
      handler(std::span<const std::byte>(core_->scratch.data(), size));
    }
    return n;
  }
  bool wait_for_data(std::chrono::nanoseconds timeout) noexcept;
};

}  // namespace shmring
