#include "shmring/mpmc_ring.hpp"

#include <unistd.h>

#include <string>

#include "detail/attach.hpp"
#include "detail/blocking.hpp"
#include "detail/claims.hpp"
#include "detail/fail.hpp"
#include "detail/holding.hpp"
#include "detail/peers.hpp"
#include "shmring/event.hpp"

namespace shmring {
namespace {

using detail::Failure;

// A blocking call of an MPMC handle: a recovery pass that a deadline cut
// short goes on by a step first, and a step runs before each sleep (the
// peers waiting behind the claims of dead handles may wait on nothing else).
template <class Core, class TryOnce>
auto mpmc_wait(Core& c, std::chrono::nanoseconds timeout, TryOnce&& try_once) noexcept
    -> decltype(try_once()) {
  c.go_on_recovering();
  return detail::wait_call(c, timeout, try_once, [&c] { return c.recovery_goes_on(); });
}

// A CPU handle of one MPMC side: counted in (before looking for GPU agents;
// a GPU attach does the reverse, so of two racing attaches at least one sees
// the other), a claim record taken, and what dead handles of the side left
// claimed finished.
template <class Core>
std::unique_ptr<Core> attach_side(const Segment& segment, const WaitPolicy& policy, bool producer,
                                  Failure& f) {
  const char* role = producer ? "MPMC producer" : "MPMC consumer";
  if ((f = detail::check_attachable(segment, RingKind::mpmc, role))) return nullptr;
  MpmcView view(segment.base(), segment.geometry());
  SideBlock& side = producer ? *view.producer() : *view.consumer();
  atomic::fetch_add(&side.attached, std::uint32_t{1});
  std::shared_ptr<detail::Holding> holding;
  ClaimRecord* record = nullptr;
  if (!(f = detail::check_cpu_may_join(segment, side, role))) {
    record = detail::take_claim_record(segment, producer, holding, f);
  }
  if (f) {
    atomic::fetch_sub(&side.attached, std::uint32_t{1});
    return nullptr;
  }
  auto core = std::make_unique<Core>();
  core->view = view;
  core->producer = producer;
  core->record = record;
  core->holding = holding.get();
  detail::init_core(*core, segment, policy, std::move(holding));
  // A producer that attaches reopens the stream a predecessor closed.
  if (producer) atomic::store_seq_cst(&view.producer()->stream, kStreamOpen);
  (void)core->recover_step();
  return core;
}

}  // namespace

// The claim record goes back with the last reference to it (lifetime); a
// message kept for a larger buffer is given up rather than left claimed (a
// claimed slot would stall every producer a lap later).
detail::MpmcSideCore::~MpmcSideCore() {
  if (!lifetime || !attached_here()) return;
  if (held.count != 0 && view.release(held)) wake_peers();
  detail::idle_claim_record(record);
  atomic::fetch_sub(&side().attached, std::uint32_t{1});
  if (!producer || !close_on_exit || closed_here) return;
  // The last producer out closes the stream. Our record goes first (its
  // holder word cleared, then its lock let go), then the others are looked
  // at: of two producers leaving at once, the later one finds none.
  lifetime.reset();
  holding = nullptr;
  record = nullptr;
  if (!mpmc_side_peers(segment, /*producer=*/true).live) close();
}

// Sleepers on the futex, and waiters in epoll (event.hpp), through the
// handle's own signaller: no lock shared with other threads on this path.
void detail::MpmcSideCore::wake_peers(bool everyone) noexcept {
  wake(producer ? data_side(view) : room_side(view), signaller, view.base(),
       producer ? WaitFor::data : WaitFor::room, everyone);
}

// ---- end of stream -----------------------------------------------------------

void detail::MpmcSideCore::close() noexcept {
  close_stream(*this, &view.producer()->stream);
  wake_peers(/*everyone=*/true);
}

Status detail::MpmcSideCore::end_status(bool probe) noexcept {
  if (producer) {
    if (closed_here) return Status::closed;
    // Full, and every consumer that attached died: nobody will make room.
    if (probe) {
      const SidePeers peers = mpmc_side_peers(segment, /*producer=*/false);
      peer_dead_seen = peers.recorded && !peers.live;
    }
    if (!peer_dead_seen) return Status::would_block;
    if (!probe) peer_dead_seen = false;
    return view.space_ready() ? Status::would_block : Status::peer_dead;
  }
  if (atomic::load_seq_cst(&view.producer()->stream) == kStreamClosed) {
    return view.data_ready() ? Status::would_block : Status::closed;
  }
  // Producers had attached (their records name them) and none lives: what
  // they left claimed is recovered as skipped, nothing more comes.
  if (probe) {
    const SidePeers peers = mpmc_side_peers(segment, /*producer=*/true);
    peer_dead_seen = peers.recorded && !peers.live;
  }
  if (!peer_dead_seen) return Status::would_block;
  if (!probe) peer_dead_seen = false;
  return view.data_ready() ? Status::would_block : Status::peer_dead;
}

detail::RecoveryStep detail::MpmcSideCore::recover_step() noexcept {
  if (!lifetime || !attached_here()) return {};
  const RecoveryStep step = producer ? recover_producer_claims(view, *holding, recover_from)
                                     : recover_consumer_claims(view, *holding, recover_from);
  if (step.recovered != 0)
    wake_peers(/*everyone=*/true);  // they were waiting at the recovered slots
  return step;
}

// ---- producer --------------------------------------------------------------

template class detail::AttachForms<MpmcProducer>;

MpmcProducer MpmcProducer::do_attach(const Segment& segment, const WaitPolicy& policy, Failure& f) {
  MpmcProducer p;
  p.core_ = attach_side<detail::MpmcProducerCore>(segment, policy, /*producer=*/true, f).release();
  return p;
}

Status MpmcProducer::push(std::span<const std::byte> message,
                          std::chrono::nanoseconds timeout) noexcept {
  if (!detail::usable(core_)) return detail::unusable(core_);
  if (message.size() > core_->view.slot_size()) return Status::too_large;
  return mpmc_wait(*core_, timeout, [&] { return try_push(message); });
}

WriteClaim MpmcProducer::claim(std::size_t max, std::chrono::nanoseconds timeout) noexcept {
  if (max == 0 || !detail::usable(core_)) return try_claim(max);  // no wait
  return mpmc_wait(*core_, timeout, [&] { return try_claim(max); });
}

// ---- consumer --------------------------------------------------------------

template class detail::AttachForms<MpmcConsumer>;

MpmcConsumer MpmcConsumer::do_attach(const Segment& segment, const WaitPolicy& policy, Failure& f) {
  MpmcConsumer c;
  c.core_ = attach_side<detail::MpmcConsumerCore>(segment, policy, /*producer=*/false, f).release();
  return c;
}

Status MpmcConsumer::pop(std::span<std::byte> buffer, std::size_t& size,
                         std::chrono::nanoseconds timeout) noexcept {
  if (!detail::usable(core_)) return detail::unusable(core_);
  return mpmc_wait(*core_, timeout, [&] { return try_pop(buffer, size); });
}

ReadClaim MpmcConsumer::peek(std::size_t max, std::chrono::nanoseconds timeout) noexcept {
  if (max == 0 || !detail::usable(core_)) return try_peek(max);  // no wait
  return mpmc_wait(*core_, timeout, [&] { return try_peek(max); });
}

}  // namespace shmring
