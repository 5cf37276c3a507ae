#include "shmring/broadcast_ring.hpp"

#include <string>

#include "detail/attach.hpp"
#include "detail/blocking.hpp"
#include "detail/fail.hpp"
#include "detail/peers.hpp"
#include "detail/subscribers.hpp"
#include "shmring/event.hpp"

namespace shmring {
namespace {

using detail::Failure;

// A conflated read that keeps being lapped while it copies the newest
// message gives up after this many tries (Status::overrun): the producer
// rewrites the ring faster than one message can be copied.
constexpr int kNewestTries = 8;

}  // namespace

// Sleepers on the futex, and waiters in epoll (event.hpp), through the
// handle's own signaller.
void detail::BroadcastProducerCore::wake_subscribers(bool everyone) noexcept {
  wake(data_side(view), signaller, view.base(), WaitFor::data, everyone);
}

void detail::BroadcastSubscriberCore::wake_producer() noexcept {
  wake(room_side(view), signaller, view.base(), WaitFor::room, false);
}

// ---- end of stream -----------------------------------------------------------

// As an SPSC producer's (spsc_ring.cpp): the word is the same.
void detail::BroadcastProducerCore::close() noexcept {
  close_stream(*this, &view.producer()->stream);
  wake_subscribers(/*everyone=*/true);
}

detail::BroadcastProducerCore::~BroadcastProducerCore() {
  if (closes_at_exit(*this)) close();
}

// A reliable producer waits for the slowest live subscriber; dead ones are
// evicted before it sleeps, so no peer's death ends its stream.
Status detail::BroadcastProducerCore::end_status(bool) noexcept {
  return closed_here ? Status::closed : Status::would_block;
}

Status detail::BroadcastSubscriberCore::end_status(bool probe) noexcept {
  if (atomic::load_seq_cst(&view.producer()->stream) == kStreamClosed) {
    // Stored after the last publication: with it seen, the head re-read
    // says whether anything is left.
    return view.data_ready(cursor) ? Status::would_block : Status::closed;
  }
  if (probe) peer_dead_seen = role_holder_died(segment, /*producer=*/true);
  if (!peer_dead_seen) return Status::would_block;
  if (!probe) peer_dead_seen = false;  // reported once; the next wait probes again
  // A dead producer's stores are all visible: what it published is read first.
  return view.data_ready(cursor) ? Status::would_block : Status::peer_dead;
}

bool detail::BroadcastProducerCore::evict_dead() noexcept {
  return evict_dead_subscribers(view, probe_fd) != 0;
}

Status BroadcastSubscriber::ended_at(std::uint64_t position) noexcept {
  if (!detail::usable(core_)) return detail::unusable(core_);
  const BroadcastView& v = core_->view;
  // The stream word first: stored after the last publication, so the head
  // read after it is final (and so is a dead producer's).
  const bool closed = atomic::load_seq_cst(&v.producer()->stream) == kStreamClosed;
  if (!closed && !detail::role_holder_died(core_->segment, /*producer=*/true)) {
    return Status::would_block;
  }
  const std::uint64_t head = atomic::load_seq_cst(&v.producer()->position);
  if (static_cast<std::int64_t>(head - position) > 0) return Status::would_block;
  return closed ? Status::closed : Status::peer_dead;
}

Status BroadcastSubscriber::wait_past(std::uint64_t position,
                                      std::chrono::nanoseconds timeout) noexcept {
  if (!detail::usable(core_)) return detail::unusable(core_);
  detail::BroadcastSubscriberCore& c = *core_;
  const BroadcastView& v = c.view;
  const auto published = [&] {
    return static_cast<std::int64_t>(atomic::load_seq_cst(&v.producer()->position) - position) > 0;
  };
  const auto closed = [&] { return atomic::load_seq_cst(&v.producer()->stream) == kStreamClosed; };
  // A wait state of its own (the core's belongs to the thread that uses the
  // handle's other calls), kept from call to call: a fresh one would spin
  // for the whole spin phase on every call, even where the producer takes
  // far longer than that per message (a video source: a frame a few ms).
  detail::WaitState& state = c.past_wait_state;
  // Tries are cheap loads; the lock probe for a dead producer runs only in
  // the re-check before each sleep, and what it found ends the tries.
  bool dead = false;
  const auto over = [&] { return published() || closed() || dead; };
  const bool done = detail::block_until(
      detail::data_side(v), c.policy, state, timeout, over, [](bool r) { return r; },
      [&] {
        if (!dead) dead = detail::role_holder_died(c.segment, /*producer=*/true);
        return over();
      });
  if (published()) return Status::ok;
  if (!done) return Status::timeout;
  const Status end = ended_at(position);
  return end == Status::would_block ? Status::ok : end;  // published meanwhile
}

detail::BroadcastSubscriberCore::~BroadcastSubscriberCore() {
  if (!block) return;
  if (!attached_here()) {
    block.reset();  // a forked child's copy: the block is its parent's
    return;
  }
  if (retire_subscriber(view, cursor, block)) wake_producer();
}

Status detail::BroadcastSubscriberCore::copy_next(std::span<std::byte> buffer, std::size_t& size,
                                                  bool conflated) noexcept {
  for (int tries = 1;; ++tries) {
    // Passing over messages releases them: a reliable producer waiting for
    // them may go on.
    if (conflated && view.newest(cursor) != 0 && !view.lossy() &&
        atomic::load_relaxed(&view.producer_wait()->waiters) != 0) {
      wake_producer();
    }
    Status status = Status::ok;
    const std::uint64_t n = view.readable(cursor, 1, status);
    empty.after(n, status, view, cursor.next);
    if (n == 0) {
      status = nothing_readable(status);
    } else {
      std::uint32_t length = 0;
      status = view.copy_out(cursor.next, buffer.data(), buffer.size(), length);
      if (status == Status::ok) {
        size = length;
        release(1);
        return Status::ok;
      }
      if (status == Status::too_large) size = view.committed_length(cursor.next);
    }
    if (status != Status::overrun) return detail::none_because(*this, status);
    if (conflated) {
      if (tries < kNewestTries) continue;
      return Status::overrun;
    }
    // Lapped: counted, and the next read is the newest message. A slot found
    // being rewritten before the head says so is a lap not yet published:
    // nothing to skip to yet, and the lap is reported when it is.
    return view.recover_overrun(cursor) != 0 ? Status::overrun : Status::would_block;
  }
}

// ---- producer --------------------------------------------------------------

template class detail::AttachForms<BroadcastProducer>;

BroadcastProducer BroadcastProducer::do_attach(const Segment& segment, const WaitPolicy& policy,
                                               Failure& f) {
  BroadcastProducer p;
  detail::BroadcastProducerAttachment a =
      detail::attach_broadcast_producer(segment, "broadcast producer", f);
  if (f) return p;
  auto core = std::make_unique<detail::BroadcastProducerCore>();
  detail::init_core(*core, segment, policy, std::move(a.role));
  core->view = BroadcastView(segment.base(), segment.geometry());
  core->probe_fd = segment.fd();
  core->cursor = a.cursor;
  p.core_ = core.release();
  return p;
}

template <class TryOnce>
auto BroadcastProducer::wait_for_room(std::chrono::nanoseconds timeout, TryOnce&& try_once) noexcept
    -> decltype(try_once()) {
  detail::BroadcastProducerCore& c = *core_;
  // A dead subscriber never releases and never wakes us, so both the check
  // before each sleep (stalled) and the re-check after it (ready) evict the
  // dead: a subscriber killed while we sleep lets us go on at our next look.
  return detail::wait_call_with(
      c, timeout, try_once, [&] { return c.evict_dead() || c.view.space_ready(c.cursor); },
      [&] { return c.evict_dead(); });
}

Status BroadcastProducer::push(std::span<const std::byte> message,
                               std::chrono::nanoseconds timeout) noexcept {
  if (const Status s = exclusive_refusal(); s != Status::ok) return s;
  if (message.size() > core_->view.slot_size()) return Status::too_large;
  return wait_for_room(timeout, [&] { return try_push(message); });
}

WriteClaim BroadcastProducer::claim(std::size_t max, std::chrono::nanoseconds timeout) noexcept {
  if (max == 0 || exclusive_refusal() != Status::ok) return try_claim(max);  // no wait
  return wait_for_room(timeout, [&] { return try_claim(max); });
}

// ---- subscriber ------------------------------------------------------------

template class detail::AttachForms<BroadcastSubscriber, JoinAt>;

BroadcastSubscriber BroadcastSubscriber::do_attach(const Segment& segment, JoinAt at,
                                                   const WaitPolicy& policy, Failure& f) {
  BroadcastSubscriber s;
  detail::BroadcastSubscription sub =
      detail::attach_broadcast_subscriber(segment, at, "broadcast subscriber", f);
  if (f) return s;
  auto core = std::make_unique<detail::BroadcastSubscriberCore>();
  // The block's holding keeps the mapping; the core retires the block itself
  // when it goes (its destructor), so `lifetime` stays empty.
  detail::init_core(*core, segment, policy, nullptr);
  core->past_wait_state = core->wait_state;
  core->view = BroadcastView(segment.base(), segment.geometry());
  core->cursor = sub.cursor;
  core->block = std::move(sub.block);
  if (core->view.lossy()) core->scratch.resize(core->view.slot_size());
  s.core_ = core.release();
  return s;
}

// The blocking calls of the subscriber wait for data, or the end of the
// stream (closed, or a dead producer): what its descriptor waits for.
Status BroadcastSubscriber::pop(std::span<std::byte> buffer, std::size_t& size,
                                std::chrono::nanoseconds timeout) noexcept {
  if (const Status s = exclusive_refusal(); s != Status::ok) return s;
  return detail::wait_call(*core_, timeout, [&] { return try_pop(buffer, size); });
}

Status BroadcastSubscriber::newest(std::span<std::byte> buffer, std::size_t& size,
                                   std::chrono::nanoseconds timeout) noexcept {
  if (const Status s = exclusive_refusal(); s != Status::ok) return s;
  return detail::wait_call(*core_, timeout, [&] { return try_newest(buffer, size); });
}

ReadClaim BroadcastSubscriber::peek(std::size_t max, std::chrono::nanoseconds timeout) noexcept {
  if (max == 0 || exclusive_refusal() != Status::ok) return try_peek(max);  // no wait
  return detail::wait_call(*core_, timeout, [&] { return try_peek(max); });
}

bool BroadcastSubscriber::wait_for_data(std::chrono::nanoseconds timeout) noexcept {
  if (exclusive_refusal() != Status::ok) return false;
  const BroadcastView& v = core_->view;
  const BroadcastSubscriberCursor& c = core_->cursor;
  return detail::wait_call(*core_, timeout, [&] { return v.data_ready(c); });
}

}  // namespace shmring
