#include "shmring/spsc_ring.hpp"

#include <string>

#include "detail/attach.hpp"
#include "detail/blocking.hpp"
#include "detail/fail.hpp"
#include "detail/peers.hpp"
#include "shmring/event.hpp"

namespace shmring {
namespace {

using detail::as_timeout;
using detail::Failure;
using detail::not_would_block;

// A core for the role `a` took, in this process.
template <class Core>
std::unique_ptr<Core> make_core(const Segment& segment, const WaitPolicy& policy,
                                const std::shared_ptr<detail::Holding>& role) {
  auto core = std::make_unique<Core>();
  core->view = SpscView(segment.base(), segment.geometry());
  detail::init_core(*core, segment, policy, role);
  return core;
}

}  // namespace

// Sleepers on the futex, and waiters in epoll (event.hpp), through the
// handle's own signaller: no lock shared with other threads on this path.
void detail::SpscProducerCore::wake_consumer(bool everyone) noexcept {
  wake(data_side(view), signaller, view.base(), WaitFor::data, everyone);
}

void detail::SpscConsumerCore::wake_producer() noexcept {
  wake(room_side(view), signaller, view.base(), WaitFor::room, false);
}

void detail::SpscProducerCore::write_words(std::uint64_t position,
                                           std::span<const std::byte> message) noexcept {
  low_latency::write(view, position, cursor.incarnation, message.data(),
                     static_cast<std::uint32_t>(message.size()));
}

// ---- end of stream -----------------------------------------------------------

void detail::SpscProducerCore::close() noexcept {
  closed_here = true;
  // SYNC POINT (seq_cst store, after every position store of this handle):
  // a consumer that reads kStreamClosed then re-reads the head sees every
  // message. Against an arming waiter (a seq_cst RMW, then its re-check
  // reads this word) it is the sleeper handshake: the waiter sees the word,
  // or the wake-up below finds its bit.
  atomic::store_seq_cst(&view.producer()->stream, kStreamClosed);
  wake_consumer(/*everyone=*/true);
}

detail::SpscProducerCore::~SpscProducerCore() {
  if (close_on_exit && !closed_here && lifetime && attached_here()) close();
}

Status detail::SpscProducerCore::end_status(bool probe) noexcept {
  if (closed_here) return Status::closed;
  // The ring is full: room comes only from a consumer. One that died will
  // not make it (a new one may take the role over and go on).
  if (probe) peer_dead_seen = role_holder_died(segment, /*producer=*/false);
  if (!peer_dead_seen) return Status::would_block;
  if (!probe) peer_dead_seen = false;  // reported once; the next wait probes again
  return view.space_ready(cursor) ? Status::would_block : Status::peer_dead;
}

Status detail::SpscConsumerCore::end_status(bool probe) noexcept {
  if (atomic::load_seq_cst(&view.producer()->stream) == kStreamClosed) {
    // Stored after the last publication: with it seen, the head re-read
    // says whether anything is left.
    return view.data_ready(cursor) ? Status::would_block : Status::closed;
  }
  if (probe) peer_dead_seen = role_holder_died(segment, /*producer=*/true);
  if (!peer_dead_seen) return Status::would_block;
  if (!probe) peer_dead_seen = false;
  // A dead producer's stores are all visible: what it published is read first.
  return view.data_ready(cursor) ? Status::would_block : Status::peer_dead;
}

// ---- producer --------------------------------------------------------------

SpscProducer SpscProducer::attach(const Segment& segment, const WaitPolicy& policy) {
  return detail::or_throw([&](Failure& f) { return do_attach(segment, policy, f); });
}

SpscProducer SpscProducer::attach(const Segment& segment, const WaitPolicy& policy,
                                  std::error_code& ec) {
  return detail::or_report(ec, [&](Failure& f) { return do_attach(segment, policy, f); });
}

SpscProducer SpscProducer::do_attach(const Segment& segment, const WaitPolicy& policy, Failure& f) {
  SpscProducer p;
  detail::SpscAttachment a = detail::attach_spsc(segment, /*producer=*/true, f);
  if (f) return p;
  auto core = make_core<detail::SpscProducerCore>(segment, policy, a.role);
  core->cursor = a.producer;
  // A producer that attaches reopens the stream a predecessor closed.
  atomic::store_seq_cst(&core->view.producer()->stream, kStreamOpen);
  p.core_ = core.release();
  return p;
}

Status SpscProducer::push(std::span<const std::byte> message,
                          std::chrono::nanoseconds timeout) noexcept {
  if (const Status s = exclusive_refusal(); s != Status::ok) return s;
  if (message.size() > core_->view.slot_size()) return Status::too_large;
  detail::SpscProducerCore& c = *core_;
  const detail::QuietTries quiet(c);
  return as_timeout(detail::block_until(
      detail::room_side(c.view), c.policy, c.wait_state, timeout, [&] { return try_push(message); },
      not_would_block, [&] { return c.event_ready(); }));
}

WriteClaim SpscProducer::claim(std::size_t max, std::chrono::nanoseconds timeout) noexcept {
  if (max == 0 || exclusive_refusal() != Status::ok) return try_claim(max);  // no wait
  detail::SpscProducerCore& c = *core_;
  const detail::QuietTries quiet(c);
  WriteClaim claim = detail::block_until(
      detail::room_side(c.view), c.policy, c.wait_state, timeout, [&] { return try_claim(max); },
      detail::claim_done<WriteClaim>, [&] { return c.event_ready(); });
  if (claim.status_ == Status::would_block) claim.status_ = Status::timeout;
  return claim;
}

// ---- consumer --------------------------------------------------------------

SpscConsumer SpscConsumer::attach(const Segment& segment, const WaitPolicy& policy) {
  return detail::or_throw([&](Failure& f) { return do_attach(segment, policy, f); });
}

SpscConsumer SpscConsumer::attach(const Segment& segment, const WaitPolicy& policy,
                                  std::error_code& ec) {
  return detail::or_report(ec, [&](Failure& f) { return do_attach(segment, policy, f); });
}

SpscConsumer SpscConsumer::do_attach(const Segment& segment, const WaitPolicy& policy, Failure& f) {
  SpscConsumer c;
  detail::SpscAttachment a = detail::attach_spsc(segment, /*producer=*/false, f);
  if (f) return c;
  auto core = make_core<detail::SpscConsumerCore>(segment, policy, a.role);
  core->cursor = a.consumer;
  c.core_ = core.release();
  return c;
}

Status SpscConsumer::pop(std::span<std::byte> buffer, std::size_t& size,
                         std::chrono::nanoseconds timeout) noexcept {
  if (const Status s = exclusive_refusal(); s != Status::ok) return s;
  detail::SpscConsumerCore& c = *core_;
  const detail::QuietTries quiet(c);
  return as_timeout(detail::block_until(
      detail::data_side(c.view), c.policy, c.wait_state, timeout,
      [&] { return try_pop(buffer, size); }, not_would_block, [&] { return c.event_ready(); }));
}

ReadClaim SpscConsumer::peek(std::size_t max, std::chrono::nanoseconds timeout) noexcept {
  if (max == 0 || exclusive_refusal() != Status::ok) return try_peek(max);  // no wait
  detail::SpscConsumerCore& c = *core_;
  const detail::QuietTries quiet(c);
  ReadClaim claim = detail::block_until(
      detail::data_side(c.view), c.policy, c.wait_state, timeout, [&] { return try_peek(max); },
      detail::claim_done<ReadClaim>, [&] { return c.event_ready(); });
  if (claim.status_ == Status::would_block) claim.status_ = Status::timeout;
  return claim;
}

bool SpscConsumer::wait_for_data(std::chrono::nanoseconds timeout) noexcept {
  if (exclusive_refusal() != Status::ok) return false;
  detail::SpscConsumerCore& c = *core_;
  const detail::QuietTries quiet(c);
  auto ready = [&] { return c.event_ready(); };
  return detail::block_until(
      detail::data_side(c.view), c.policy, c.wait_state, timeout, ready, [](bool r) { return r; },
      ready);
}

}  // namespace shmring
