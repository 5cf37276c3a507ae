// The handles' event descriptor and their report of an ended stream
// (handle.hpp; docs/events.md).
#include "shmring/handle.hpp"

#include "detail/peers.hpp"
#include "shmring/atomic.hpp"
#include "shmring/layout.hpp"
#include "shmring/process.hpp"

namespace shmring::detail {

Status HandleCore::nothing_now() noexcept {
  const Status end = end_status(/*probe=*/false);
  if (end != Status::would_block) return end;
  if (!events || quiet != 0) return Status::would_block;
  before_wait();
  // The user of the descriptor goes back to waiting on it: empty it, then
  // arm it. If the ring moved (or the stream ended) since the try, arm()
  // says so and nothing is armed: the descriptor is made readable, or the
  // user would wait for a publication that already happened.
  (void)events.consume();
  if (events.arm()) events.poke();
  return Status::would_block;
}

EventWaiter& HandleCore::open_events() {
  if (!events) {
    events = EventWaiter::open(segment, waits_for(), [this] { return event_ready(); });
    // Readable from the start: the user's first try then arms it (or finds
    // something). Not armed here: an armed descriptor counts as a sleeper,
    // and one opened but never waited on would send every publication down
    // the wake path (a futex wake each) for as long as the handle's tries
    // kept finding messages.
    events.poke();
  }
  return events;
}

}  // namespace shmring::detail

namespace shmring::detail {
namespace {

const ControlArea& control(const Segment& segment) noexcept {
  return *reinterpret_cast<const ControlArea*>(segment.base());
}
const SideBlock& side_block(const Segment& segment, bool producer) noexcept {
  return producer ? control(segment).producer : control(segment).consumer;
}

// Who holds the record whose identity word is `word` and lock byte `byte`.
// A holder takes the lock before it writes its identity and clears the
// identity before it lets the lock go, so an identity without the lock is
// a holder that never got to clear it: one that died. But a holder that
// leaves between the read of the word and the look at the lock shows just
// that, and taken for dead it would end the stream for the other side
// (peer_dead) while producers come and go. So a free lock counts only if
// the word, read again, still names the same holder and the lock is still
// free; a word that changed meanwhile is looked at afresh.
enum class Holder { none, live, dead };
Holder record_holder(int fd, const std::uint64_t& word, std::uint64_t byte) noexcept {
  for (int look = 0; look < 4; ++look) {
    const std::uint64_t who = atomic::load_seq_cst(&word);
    if (who == 0) return Holder::none;
    if (process::lock_held(fd, byte)) return Holder::live;
    if (atomic::load_seq_cst(&word) == who && !process::lock_held(fd, byte)) return Holder::dead;
  }
  return Holder::none;  // changing hands all along: not a dead holder
}

}  // namespace

bool role_holder_died(const Segment& segment, bool producer) noexcept {
  if (!segment) return false;
  const SideBlock& side = side_block(segment, producer);
  if (atomic::load_relaxed(&side.gpu_attached) != 0) return false;
  return record_holder(segment.fd(), side.owner.identity, lock_byte::owner(producer)) ==
         Holder::dead;
}

SidePeers mpmc_side_peers(const Segment& segment, bool producer) noexcept {
  SidePeers p;
  if (!segment) return p;
  if (atomic::load_relaxed(&side_block(segment, producer).gpu_attached) != 0) {
    p.recorded = p.live = true;
    return p;
  }
  // Every lane's table: a producer holds a record of its lane's, a consumer
  // one of each.
  for (std::uint32_t lane = 0; lane < segment.geometry().lane_count(); ++lane) {
    const std::uint64_t offset = lane_offset(lane);
    const LaneArea& area = *reinterpret_cast<const LaneArea*>(segment.base() + offset);
    const ClaimTable& table = producer ? area.producer_claims : area.consumer_claims;
    for (std::size_t i = 0; i < kClaimRecords; ++i) {
      const Holder h = record_holder(segment.fd(), table.records[i].holder,
                                     lock_byte::claim_record(producer, i, offset));
      if (h == Holder::none) continue;
      p.recorded = true;
      if (h == Holder::live) {
        p.live = true;
        return p;
      }
    }
  }
  return p;
}

}  // namespace shmring::detail
