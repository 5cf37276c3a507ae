#include "shmring/spsc_ring.hpp"

#include <string>
#include <type_traits>

#include "detail/attach.hpp"
#include "detail/blocking.hpp"
#include "detail/fail.hpp"
#include "detail/peers.hpp"
#include "shmring/event.hpp"

namespace shmring {
namespace {

using detail::Failure;

// A core of one SPSC role, taken in this process: the role held, at the
// positions the segment says. A producer that attaches reopens the stream a
// predecessor closed.
template <class Core>
std::unique_ptr<Core> attach_core(const Segment& segment, const WaitPolicy& policy, Failure& f) {
  constexpr bool producer = std::is_same_v<Core, detail::SpscProducerCore>;
  detail::SpscAttachment a = detail::attach_spsc(segment, producer, f);
  if (f) return nullptr;
  auto core = std::make_unique<Core>();
  core->view = SpscView(segment.base(), segment.geometry());
  detail::init_core(*core, segment, policy, a.role);
  if constexpr (producer) {
    core->cursor = a.producer;
    atomic::store_seq_cst(&core->view.producer()->stream, kStreamOpen);
  } else {
    core->cursor = a.consumer;
  }
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
  close_stream(*this, &view.producer()->stream);
  wake_consumer(/*everyone=*/true);
}

detail::SpscProducerCore::~SpscProducerCore() {
  if (closes_at_exit(*this)) close();
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

template class detail::AttachForms<SpscProducer>;

SpscProducer SpscProducer::do_attach(const Segment& segment, const WaitPolicy& policy, Failure& f) {
  SpscProducer p;
  p.core_ = attach_core<detail::SpscProducerCore>(segment, policy, f).release();
  return p;
}

Status SpscProducer::push(std::span<const std::byte> message,
                          std::chrono::nanoseconds timeout) noexcept {
  if (const Status s = exclusive_refusal(); s != Status::ok) return s;
  if (message.size() > core_->view.slot_size()) return Status::too_large;
  return detail::wait_call(*core_, timeout, [&] { return try_push(message); });
}

WriteClaim SpscProducer::claim(std::size_t max, std::chrono::nanoseconds timeout) noexcept {
  if (max == 0 || exclusive_refusal() != Status::ok) return try_claim(max);  // no wait
  return detail::wait_call(*core_, timeout, [&] { return try_claim(max); });
}

// ---- consumer --------------------------------------------------------------

template class detail::AttachForms<SpscConsumer>;

SpscConsumer SpscConsumer::do_attach(const Segment& segment, const WaitPolicy& policy, Failure& f) {
  SpscConsumer c;
  c.core_ = attach_core<detail::SpscConsumerCore>(segment, policy, f).release();
  return c;
}

Status SpscConsumer::pop(std::span<std::byte> buffer, std::size_t& size,
                         std::chrono::nanoseconds timeout) noexcept {
  if (const Status s = exclusive_refusal(); s != Status::ok) return s;
  return detail::wait_call(*core_, timeout, [&] { return try_pop(buffer, size); });
}

ReadClaim SpscConsumer::peek(std::size_t max, std::chrono::nanoseconds timeout) noexcept {
  if (max == 0 || exclusive_refusal() != Status::ok) return try_peek(max);  // no wait
  return detail::wait_call(*core_, timeout, [&] { return try_peek(max); });
}

bool SpscConsumer::wait_for_data(std::chrono::nanoseconds timeout) noexcept {
  if (exclusive_refusal() != Status::ok) return false;
  detail::SpscConsumerCore& c = *core_;
  return detail::wait_call(c, timeout, [&c] { return c.event_ready(); });
}

}  // namespace shmring
