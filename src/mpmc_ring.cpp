#include "shmring/mpmc_ring.hpp"

#include <unistd.h>

#if defined(__x86_64__) || defined(__i386__)
#include <cpuid.h>
#endif

#include <cerrno>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

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

// A producer's lane in a ring of owned lanes: the first whose owner record (the
// lane producer block's OwnerRecord, unused otherwise by MPMC) it can lock,
// so that of producers attaching at once each gets another lane, and the
// lane of one that died is free again. `owner` then holds the record, which
// names the producer for ring-inspect; role_taken when every lane has a live
// producer.
std::uint32_t pick_lane(const Segment& segment, const std::vector<detail::MpmcLane>& lanes,
                        std::shared_ptr<detail::Holding>& owner, Failure& f) {
  for (std::uint32_t l = 0; l < lanes.size(); ++l) {
    const MpmcView& v = lanes[l].view;
    owner =
        detail::take_owner(segment, v.producer()->owner, v.lane_offset() + lock_byte::owner(true),
                           "a lane's owner record", f);
    if (owner) return l;
    if (f) return 0;
  }
  f = detail::fail(errc::role_taken, segment.name(),
                   "all " + std::to_string(lanes.size()) +
                       " lanes of the MPMC ring have a live producer (one producer per lane; "
                       "create the ring with more lanes)");
  return 0;
}

// Whether the MPMC handles' prefetch hints (mpmc_ring.hpp, the cores'
// claim() and prefetch_ahead()) pay on this CPU. On the 16-core Intel Xeon
// host both are needed: without the producer's or the consumers' the ring
// moved 0.44-0.48x as many 64-byte messages one a call (1x1). On a 2-vCPU
// AMD EPYC VM they cost instead: without them it moved 1.66x (processes) and
// 1.75x (threads) as many, on two days
// (bench/results/epyc-2vcpu-vm/mpmc-hints.md). So they are off on AMD CPUs
// and on elsewhere (they are hints, and order nothing either way).
bool mpmc_hints_pay() noexcept {
#if defined(__x86_64__) || defined(__i386__)
  static const bool pays = [] {
    unsigned a = 0, b = 0, c = 0, d = 0;
    if (__get_cpuid(0, &a, &b, &c, &d) == 0) return true;
    char vendor[12];
    std::memcpy(vendor, &b, 4);
    std::memcpy(vendor + 4, &d, 4);
    std::memcpy(vendor + 8, &c, 4);
    return std::memcmp(vendor, "AuthenticAMD", sizeof vendor) != 0;
  }();
  return pays;
#else
  return true;
#endif
}

// A CPU handle of one MPMC side: counted in (before looking for GPU agents;
// a GPU attach does the reverse, so of two racing attaches at least one sees
// the other), claim records taken (a producer's in its lane, a consumer's in
// every lane), and what dead handles of the side left claimed finished.
template <class Core>
std::unique_ptr<Core> attach_side(const Segment& segment, const WaitPolicy& policy, bool producer,
                                  Failure& f) {
  const char* role = producer ? "MPMC producer" : "MPMC consumer";
  if ((f = detail::check_attachable(segment, RingKind::mpmc, role))) return nullptr;
  auto core = std::make_unique<Core>();
  const std::uint32_t n = segment.geometry().lane_count();
  for (std::uint32_t l = 0; l < n; ++l) {
    core->lanes.push_back(detail::MpmcLane{MpmcView(segment.base(), segment.geometry(), l)});
  }
  const MpmcView& ring = core->lanes[0].view;
  SideBlock& side = producer ? *ring.ring_producer() : *ring.ring_consumer();
  atomic::fetch_add(&side.attached, std::uint32_t{1});
  // Each record is held through a holding of its own; the lot is the role.
  auto holdings = std::make_shared<std::vector<std::shared_ptr<detail::Holding>>>();
  if (!(f = detail::check_cpu_may_join(segment, side, role))) {
    if (producer && segment.geometry().lanes != 0) {
      std::shared_ptr<detail::Holding> owner;
      core->home = pick_lane(segment, core->lanes, owner, f);
      if (owner) holdings->push_back(std::move(owner));
      core->owns_lane = !f;
    }
    for (std::uint32_t l = 0; l < n && !f; ++l) {
      if (producer && l != core->home) continue;
      std::shared_ptr<detail::Holding> holding;
      core->lanes[l].record =
          detail::take_claim_record(segment, core->lanes[l].view, producer, holding, f);
      core->lanes[l].holding = holding.get();
      if (holding) holdings->push_back(std::move(holding));
    }
  }
  if (f) {
    atomic::fetch_sub(&side.attached, std::uint32_t{1});
    return nullptr;
  }
  // A producer recovers in every lane through the holding of its record.
  for (detail::MpmcLane& lane : core->lanes) {
    if (lane.holding == nullptr) lane.holding = core->lanes[core->home].holding;
  }
  // A consumer's home: the index of its record in lane 0's table, so that
  // consumers attached at once have homes in turn, and one that died leaves
  // its home to the next.
  if (!producer) {
    core->home = static_cast<std::uint32_t>(core->lanes[0].record -
                                            core->lanes[0].view.consumer_claims()->records) %
                 n;
  }
  core->at = core->home;
  core->view = core->lanes[core->home].view;
  core->record = core->lanes[core->home].record;
  core->producer = producer;
  core->hints = mpmc_hints_pay();
  detail::init_core(*core, segment, policy, std::move(holdings));
  // A producer that attaches reopens the stream a predecessor closed.
  if (producer) atomic::store_seq_cst(&ring.ring_producer()->stream, kStreamOpen);
  (void)core->recover_step();
  return core;
}

}  // namespace

// Messages a consumer kept (read ahead, or too large for a buffer) go back
// to the ring if no consumer claimed past them; otherwise they are released
// unread rather than left claimed (a claimed slot would stall every producer
// a lap later), and counted as abandoned.
detail::MpmcConsumerCore::~MpmcConsumerCore() {
  if (held.count == 0 || !lifetime || !attached_here()) return;
  if (detail::hand_back_read_claims(view, *lanes[at].holding, held)) {
    // Consumers that went to sleep past them have messages again.
    wake(data_side(view), signaller, view.base(), WaitFor::data, /*everyone=*/true);
  } else {
    atomic::fetch_add(&view.consumer()->abandoned, held.count);
    if (view.release(held)) wake_peers();
  }
  held = {};
}

// The claim record goes back with the last reference to it (lifetime).
detail::MpmcSideCore::~MpmcSideCore() {
  if (!lifetime || !attached_here()) return;
  for (MpmcLane& l : lanes) detail::idle_claim_record(l.record);
  atomic::fetch_sub(producer ? &view.ring_producer()->attached : &view.ring_consumer()->attached,
                    std::uint32_t{1});
  if (!producer || !close_on_exit || closed_here) return;
  // The last producer out closes the stream. Our record goes first (its
  // holder word cleared, then its lock let go), then the others are looked
  // at: of two producers leaving at once, the later one finds none.
  lifetime.reset();
  for (MpmcLane& l : lanes) l = MpmcLane{l.view};
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
  close_stream(*this, &view.ring_producer()->stream);
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
  if (atomic::load_seq_cst(&view.ring_producer()->stream) == kStreamClosed) {
    return progress_ready() ? Status::would_block : Status::closed;
  }
  // Producers had attached (their records name them) and none lives: what
  // they left claimed is recovered as skipped, nothing more comes.
  if (probe) {
    const SidePeers peers = mpmc_side_peers(segment, /*producer=*/true);
    peer_dead_seen = peers.recorded && !peers.live;
  }
  if (!peer_dead_seen) return Status::would_block;
  if (!probe) peer_dead_seen = false;
  return progress_ready() ? Status::would_block : Status::peer_dead;
}

detail::RecoveryStep detail::MpmcSideCore::recover_step() noexcept {
  if (!lifetime || !attached_here()) return {};
  RecoveryStep all;
  for (MpmcLane& l : lanes) {
    const RecoveryStep step = producer
                                  ? recover_producer_claims(l.view, *l.holding, l.recover_from)
                                  : recover_consumer_claims(l.view, *l.holding, l.recover_from);
    all.recovered += step.recovered;
    all.more = all.more || step.more;
  }
  if (all.recovered != 0)
    wake_peers(/*everyone=*/true);  // they were waiting at the recovered slots
  return all;
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
