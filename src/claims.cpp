#include "detail/claims.hpp"

#include <sched.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <string>

#include "shmring/atomic.hpp"
#include "shmring/mpmc_ring.hpp"

namespace shmring::detail {

ClaimRecord* take_claim_record(const Segment& segment, const MpmcView& view, bool producer,
                               std::shared_ptr<Holding>& holding, Failure& f) {
  holding = Holding::prepare(segment, f);
  if (!holding) return nullptr;
  ClaimTable& table = producer ? *view.producer_claims() : *view.consumer_claims();
  for (std::size_t i = 0; i < kClaimRecords; ++i) {
    ClaimRecord& r = table.records[i];
    // Free, or its holder died (its claims are recovered through the
    // positions, not through the record): the lock decides.
    const int err =
        holding->take(&r.holder, lock_byte::claim_record(producer, i, view.lane_offset()));
    if (err == EAGAIN) continue;
    if (err != 0) {
      f = fail_errno(err, segment.name(),
                     std::string("cannot lock a claim record: ") + std::strerror(err));
      holding.reset();
      return nullptr;
    }
    atomic::store_seq_cst(&r.low, kClaimIdle);
    return &r;
  }
  holding.reset();
  f = fail(errc::role_taken, segment.name(),
           "all " + std::to_string(kClaimRecords) + " claim records of the MPMC " +
               (producer ? "producer" : "consumer") + " side are held by live handles");
  return nullptr;
}

void idle_claim_record(ClaimRecord* record) noexcept {
  if (record != nullptr) atomic::store_seq_cst(&record->low, kClaimIdle);
}

namespace {

// The lowest position a live holder of `table` may still hold a claim at;
// kClaimIdle if none may.
std::uint64_t lowest_live_claim(const MpmcView& view, bool producer,
                                const Holding& holding) noexcept {
  const ClaimTable& table = producer ? *view.producer_claims() : *view.consumer_claims();
  std::uint64_t lowest = kClaimIdle;
  for (std::size_t i = 0; i < kClaimRecords; ++i) {
    const ClaimRecord& r = table.records[i];
    if (atomic::load_seq_cst(&r.holder) == 0) continue;
    const std::uint64_t low = atomic::load_seq_cst(&r.low);
    if (low < lowest &&
        holding.held_by_other(lock_byte::claim_record(producer, i, view.lane_offset()))) {
      lowest = low;
    }
  }
  return lowest;
}

// One recoverer per side of a lane at a time, so that two never write the same slot's
// flags and length (a late store would land in the slot's next lap). A
// recoverer that dies is replaced.
class RecoveryLock {
 public:
  RecoveryLock(const MpmcView& view, bool producer, Holding& holding) noexcept
      : side_(producer ? *view.producer() : *view.consumer()),
        holding_(holding),
        byte_(lock_byte::recovering(producer, view.lane_offset())) {
    if (holding.lock().try_lock(byte_) != 0) return;
    held_ = true;
    atomic::store_seq_cst(&side_.recovering, holding.identity());  // for display
  }
  ~RecoveryLock() {
    if (!held_) return;
    atomic::store_seq_cst(&side_.recovering, std::uint64_t{0});
    holding_.lock().unlock(byte_);
  }
  RecoveryLock(const RecoveryLock&) = delete;
  RecoveryLock& operator=(const RecoveryLock&) = delete;
  explicit operator bool() const noexcept { return held_; }

 private:
  SideBlock& side_;
  Holding& holding_;
  std::uint64_t byte_;
  bool held_ = false;
};

}  // namespace

// GPU agents keep no claim records, and without host-native atomics they
// claim on a counter in device memory, so the segment's counters do not say
// where they are: with GPU agents on either side, nothing is recovered.
static bool gpu_agents(const MpmcView& view) noexcept {
  return atomic::load_seq_cst(&view.ring_producer()->gpu_attached) != 0 ||
         atomic::load_seq_cst(&view.ring_consumer()->gpu_attached) != 0;
}

// Where a step starts: the caller's note if it lies in [front, end) (a step
// of its pass stopped there and the side has not moved past it), else the
// front, if the side is stuck there; kClaimIdle for no step at all.
static std::uint64_t step_start(std::uint64_t front, bool stuck, std::uint64_t end,
                                std::uint64_t capacity, std::uint64_t resume) noexcept {
  if (resume != kClaimIdle &&
      resume - front<capacity&& static_cast<std::int64_t>(end - resume)> 0) {
    return resume;
  }
  return stuck ? front : kClaimIdle;
}

// Ends a step that stopped at `p` of [.., end): a note to go on from `p`, or
// none when the pass is done (or this many positions were looked at since the
// front).
static RecoveryStep end_step(std::uint64_t p, std::uint64_t front, std::uint64_t end,
                             std::uint64_t capacity, std::uint64_t recovered,
                             std::uint64_t& resume) noexcept {
  const bool more = static_cast<std::int64_t>(end - p) > 0 && p - front < capacity;
  resume = more ? p : kClaimIdle;
  return {recovered, more};
}

// One step of a side's recovery pass over [front, limit): under the side's
// recovery lock, from the caller's note (or the front, if the side is stuck
// there) up to the lowest position a live holder may still have claimed, at
// most kMpmcRecoverStep positions. `recover(p)` finishes position p if a dead
// process left it claimed, and says whether it did; the count goes into the
// side's `abandoned`.
template <class Recover>
static RecoveryStep recovery_step(const MpmcView& view, Holding& holding, bool producer,
                                  std::uint64_t front, bool stuck, std::uint64_t limit,
                                  std::uint64_t& resume, Recover&& recover) noexcept {
  if (step_start(front, stuck, limit, view.capacity(), resume) == kClaimIdle) {
    resume = kClaimIdle;
    return {};
  }
  SideBlock& side = producer ? *view.producer() : *view.consumer();
  RecoveryLock lock(view, producer, holding);
  if (!lock) return {};  // another recoverer is at it; our note stays for later
  // The counter once more, under the lock: a consumer hands positions back
  // (hand_back_read_claims) only under it, so below the counter as read here
  // every position was claimed, and none goes back while the step runs.
  // Then the records: a live holder that claimed below the counter stored
  // its low before its claim, so the low is seen here.
  const std::uint64_t counter = atomic::load_seq_cst(&side.position);
  const std::uint64_t end = std::min({limit, counter, lowest_live_claim(view, producer, holding)});
  const std::uint64_t first = step_start(front, stuck, end, view.capacity(), resume);
  if (first == kClaimIdle) {
    resume = kClaimIdle;
    return {};
  }
  const std::uint64_t last = first + std::min(view.capacity(), kMpmcRecoverStep);
  std::uint64_t recovered = 0;
  std::uint64_t p = first;
  for (; static_cast<std::int64_t>(end - p) > 0 && p - front < view.capacity() && p != last; ++p) {
    if (recover(p)) ++recovered;
  }
  if (recovered != 0) atomic::fetch_add(&side.abandoned, recovered);
  return end_step(p, front, end, view.capacity(), recovered, resume);
}

bool hand_back_read_claims(const MpmcView& view, Holding& holding, MpmcRange r) noexcept {
  // The lock is held by a recoverer for one bounded step at a time, and
  // given up by the kernel if its holder dies: a few tries suffice.
  for (int tries = 0; tries < 1000; ++tries) {
    const RecoveryLock lock(view, /*producer=*/false, holding);
    if (!lock) {
      sched_yield();
      continue;
    }
    // SYNC POINT (seq_cst CAS, pairs with the recoverer's seq_cst load of
    // the counter under the lock): nobody claimed past the run, so its
    // positions are the next to read again.
    std::uint64_t end = r.first + r.count;
    return atomic::compare_exchange(&view.consumer()->position, end, r.first);
  }
  return false;
}

RecoveryStep recover_producer_claims(const MpmcView& view, Holding& holding,
                                     std::uint64_t& resume) noexcept {
  if (gpu_agents(view)) return {};
  // Only when the consumers are stuck (the next position to read was claimed
  // but is not committed), or to go on with a pass of ours.
  const std::uint64_t deq = atomic::load_seq_cst(&view.consumer()->position);
  const std::uint64_t enq = atomic::load_seq_cst(&view.producer()->position);
  if (static_cast<std::int64_t>(enq - deq) <= 0) {
    resume = kClaimIdle;
    return {};
  }
  const bool stuck = atomic::load_seq_cst(&view.trailer(deq)->committed) != deq + 1;
  // Every position of [deq, enq) was claimed, by a process now dead, if it
  // is neither committed nor covered by a live holder.
  return recovery_step(view, holding, /*producer=*/true, deq, stuck, enq, resume,
                       [&view](std::uint64_t p) {
                         SlotTrailer* t = view.trailer(p);
                         if (atomic::load_seq_cst(&t->committed) == p + 1) return false;
                         // Not this lap's: not claimed yet.
                         if (atomic::load_acquire(&t->released) != p) return false;
                         atomic::store_relaxed(&t->length, std::uint32_t{0});
                         atomic::store_relaxed(&t->flags, kSlotSkipped);
                         // SYNC POINT (seq_cst, pairs with claim_read()): as commit() does.
                         atomic::store_seq_cst(&t->committed, p + 1);
                         return true;
                       });
}

RecoveryStep recover_consumer_claims(const MpmcView& view, Holding& holding,
                                     std::uint64_t& resume) noexcept {
  if (gpu_agents(view)) return {};
  // Only when the producers are stuck (the next position to write waits for
  // a slot a lap behind that was read but never released), or to go on with
  // a pass of ours.
  const std::uint64_t enq = atomic::load_seq_cst(&view.producer()->position);
  const std::uint64_t deq = atomic::load_seq_cst(&view.consumer()->position);
  const std::uint64_t front = enq - view.capacity();
  if (static_cast<std::int64_t>(deq - front) <= 0) {
    resume = kClaimIdle;
    return {};
  }
  const bool stuck = atomic::load_seq_cst(&view.trailer(enq)->released) != enq;
  return recovery_step(view, holding, /*producer=*/false, front, stuck, deq, resume,
                       [&view](std::uint64_t p) {
                         SlotTrailer* t = view.trailer(p);
                         // Not readable this lap.
                         if (atomic::load_acquire(&t->committed) != p + 1) return false;
                         if (atomic::load_seq_cst(&t->released) != p)
                           return false;  // released already
                         // SYNC POINT (seq_cst, pairs with claim_write()): as release() does.
                         atomic::store_seq_cst(&t->released, p + view.capacity());
                         return true;
                       });
}

}  // namespace shmring::detail
