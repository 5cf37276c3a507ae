// The multi-producer multi-consumer algorithm, as a view over a segment.
//
// Per-slot turns in the style of Vyukov's bounded queue, with the one turn
// word split in two so that no word has two writing sides:
//   - `committed` (written by producers) = position + 1 when the payload of
//     `position` is readable;
//   - `released`  (written by consumers) = position + capacity when the slot
//     may take the message of the next lap (initialised to the slot index).
//   1. A producer reads the enqueue counter P, checks that the slots P..P+k-1
//      are released for their positions, and claims them with one CAS on the
//      counter (the one producer of an owned lane stores it).
//      It writes them, then stores each slot's `committed`.
//   2. A consumer does the same on the dequeue counter with `committed`, reads
//      the claimed slots in place, then stores each slot's `released`.
// The counters are read-modify-written by agents of one side only (the
// producers, or the consumers), which on a discrete GPU means one side of the
// PCIe link (DESIGN principle 2). Turns are published with release stores
// and sleepers are woken exactly as in the SPSC view (spsc_view.hpp, "The
// sleeper handshake"): one relaxed load of the sleeper count per commit or
// release, however many slots it covers, and no full fence.
#pragma once

#include <cstdint>

#include "shmring/ring_view.hpp"

namespace shmring {

// A run of consecutive positions owned by one caller between claim and
// commit (producer) or between claim and release (consumer).
struct MpmcRange {
  std::uint64_t first = 0;
  std::uint64_t count = 0;
};

class MpmcView : public RingView {
 public:
  using RingView::RingView;

  // Claims up to `max` consecutive writable positions. Empty when the ring is
  // full; status = corrupt when the counters contradict the slots.
  SHMRING_HD MpmcRange claim_write(std::uint64_t max, Status& status) const noexcept {
    return claim_write_from(atomic::load_relaxed(&producer()->position), max, status);
  }
  // The same, starting from a value of the enqueue counter the caller has
  // just read (for its claim record), so the contended line is read once.
  SHMRING_HD MpmcRange claim_write_from(std::uint64_t counter_value, std::uint64_t max,
                                        Status& status) const noexcept {
    return claim(&producer()->position, counter_value, max, /*turn_offset=*/0,
                 /*reading=*/false, status);
  }
  // The same for the one producer of a lane (a ring of owned lanes): it
  // alone moves the counter, so a release store takes the slots. A CAS is a
  // locked instruction, which waits for every store before it (the last
  // message's payload and `committed`, in lines the lane's consumer is
  // polling); with four producers and consumers on a 16-core host, claiming
  // with the store instead moved 5x as many 64-byte messages.
  SHMRING_HD MpmcRange claim_write_owned(std::uint64_t counter_value, std::uint64_t max,
                                         Status& status) const noexcept {
    return claim(&producer()->position, counter_value, max, 0, false, status, /*owned=*/true);
  }
  // The same on another counter: GPU producers without host-native atomics
  // claim on a counter in device memory (DESIGN principle 2).
  SHMRING_HD MpmcRange claim_write_on(std::uint64_t* counter, std::uint64_t max,
                                      Status& status) const noexcept {
    return claim(counter, atomic::load_relaxed(counter), max, 0, false, status);
  }

  // Publishes a claimed range (lengths already set); with kSlotSkipped the
  // consumers pass over it. Returns true when a consumer sleeps and must be
  // woken.
  SHMRING_HD bool commit(MpmcRange r, std::uint32_t flags = 0) const noexcept {
    for (std::uint64_t i = 0; i < r.count; ++i) {
      const std::uint64_t pos = r.first + i;
      atomic::store_relaxed(&trailer(pos)->flags, flags);
      // SYNC POINT (release, pairs with claim_read() and data_ready()):
      // payload, length and flags of `pos` visible to the consumers.
      atomic::store_release(&trailer(pos)->committed, pos + 1);
    }
    // The sleeper handshake (spsc_view.hpp): once per range, relaxed.
    return atomic::load_relaxed(&consumer_wait()->waiters) != 0;
  }

  // Claims up to `max` consecutive readable positions. A skipped slot ends a
  // run, so a range is either one skipped slot or only messages.
  SHMRING_HD MpmcRange claim_read(std::uint64_t max, Status& status) const noexcept {
    return claim_read_from(atomic::load_relaxed(&consumer()->position), max, status);
  }
  SHMRING_HD MpmcRange claim_read_from(std::uint64_t counter_value, std::uint64_t max,
                                       Status& status) const noexcept {
    return claim(&consumer()->position, counter_value, max, /*turn_offset=*/1, /*reading=*/true,
                 status);
  }
  SHMRING_HD MpmcRange claim_read_on(std::uint64_t* counter, std::uint64_t max,
                                     Status& status) const noexcept {
    return claim(counter, atomic::load_relaxed(counter), max, 1, true, status);
  }

  // Whether `position` may be claimed now: released for a writer, committed
  // (and not an aborted claim's) for a reader. For agents that test many
  // slots in parallel (GPU lanes) before one CAS.
  SHMRING_HD bool writable_at(std::uint64_t position) const noexcept {
    return turn(position, false) == position;
  }
  SHMRING_HD bool readable_at(std::uint64_t position) const noexcept {
    return turn(position, true) == position + 1;
  }

  SHMRING_HD bool skipped(std::uint64_t position) const noexcept {
    return atomic::load_relaxed(&trailer(position)->flags) == kSlotSkipped;
  }

  // Hands a read range back to the producers. Returns true when a producer
  // sleeps and must be woken.
  SHMRING_HD bool release(MpmcRange r) const noexcept {
    for (std::uint64_t i = 0; i < r.count; ++i) {
      const std::uint64_t pos = r.first + i;
      // SYNC POINT (release, pairs with claim_write() and space_ready()):
      // the slot of `pos` may take the message of position pos + capacity.
      atomic::store_release(&trailer(pos)->released, pos + capacity());
    }
    // The sleeper handshake (spsc_view.hpp): once per range, relaxed.
    return atomic::load_relaxed(&producer_wait()->waiters) != 0;
  }

  // Re-checks for a sleeper that has raised its count. seq_cst, so that the
  // loads stay after the raise (a seq_cst read-modify-write) everywhere.
  SHMRING_HD bool data_ready() const noexcept {
    const std::uint64_t pos = atomic::load_seq_cst(&consumer()->position);
    // SYNC POINT (seq_cst load, pairs with commit()'s release store).
    return atomic::load_seq_cst(&trailer(pos)->committed) == pos + 1;
  }
  SHMRING_HD bool space_ready() const noexcept {
    const std::uint64_t pos = atomic::load_seq_cst(&producer()->position);
    // SYNC POINT (seq_cst load, pairs with release()'s release store).
    return atomic::load_seq_cst(&trailer(pos)->released) == pos;
  }

 private:
  // The turn a slot shows when `pos` may be taken: released == pos for a
  // writer, committed == pos + 1 for a reader.
  SHMRING_HD std::uint64_t turn(std::uint64_t pos, bool reading) const noexcept {
    // SYNC POINT (acquire, pairs with commit() / release()): the other side's
    // payload writes or reads of this slot are complete.
    return reading ? atomic::load_acquire(&trailer(pos)->committed)
                   : atomic::load_acquire(&trailer(pos)->released);
  }

  // `pos`: a value of the counter read by the caller (any recent one: a
  // stale value fails the CAS, which hands back the current one). `owned`:
  // the caller is the counter's one writer, and stores it.
  SHMRING_HD MpmcRange claim(std::uint64_t* counter, std::uint64_t pos, std::uint64_t max,
                             std::uint64_t turn_offset, bool reading, Status& status,
                             bool owned = false) const noexcept {
    if (max == 0) return {};
    for (;;) {
      const std::uint64_t first_turn = turn(pos, reading);
      if (first_turn != pos + turn_offset) {
        if (static_cast<std::int64_t>(first_turn - (pos + turn_offset)) < 0) {
          return {};  // the slot is a lap behind: full (writer) or empty (reader)
        }
        // The slot is ahead: another agent took `pos`, so the counter moved.
        const std::uint64_t now = atomic::load_relaxed(counter);
        if (now == pos) {  // it did not: the slot's turn is impossible
          status = Status::corrupt;
          return {};
        }
        pos = now;
        continue;
      }
      std::uint64_t k = 1;
      if (!(reading && skipped(pos))) {
        while (k < max && turn(pos + k, reading) == pos + k + turn_offset &&
               !(reading && skipped(pos + k))) {
          ++k;
        }
      }
      if (owned) {
        // SYNC POINT (release, pairs with a recoverer's seq_cst load of the
        // counter): the claim record's low, stored before, is seen with it.
        atomic::store_release(counter, pos + k);
        return MpmcRange{pos, k};
      }
      if (atomic::compare_exchange(counter, pos, pos + k)) return MpmcRange{pos, k};
      // pos now holds the counter's current value
    }
  }
};

}  // namespace shmring
