// The single-producer single-consumer algorithm, as a view over a segment.
//
//   1. The producer keeps its own head and a cached copy of the consumer's
//      tail; it re-reads the shared tail only when the cache says "full".
//   2. It writes payload and length into free slots, then stores each slot's
//      `committed` word (= position + 1), then the head once per batch.
//   3. The consumer polls the trailer of the slot at its tail: a small payload
//      shares that cache line, so a message costs it one line transfer.
//   4. It releases slots by storing its tail once per batch.
//   Low-latency slots (low_latency.hpp) replace steps 2-3: the message's
//      words carry their own flags, so no `committed` word is stored or polled.
//   5. Sleepers: each side stores its position (release), then loads the
//      other side's sleeper count (relaxed) and wakes the peer if it is not
//      zero; a sleeper raises its count (a read-modify-write, a full fence),
//      then re-reads the position. No full fence on the publishing side, so
//      a publication costs plain stores and one load of a line that only
//      changes when somebody goes to sleep (see "The sleeper handshake").
//
// The sleeper handshake. With a fence on both sides (a seq_cst store and a
// seq_cst load, an xchg on x86) the two form a Dekker pair and no wake-up is
// ever lost; but the publisher's fence waits for every store before it (the
// payload, whose lines the peer last owned) to reach the cache, which costs
// a cross-core round trip on every message, sleeper or not. So the publisher
// has no fence: its load of the sleeper count may be satisfied before its
// position store is visible (store buffering, allowed on x86, ARM and GPUs).
// The one interleaving that loses a wake-up is then: the publisher loads the
// count (0), the sleeper raises the count and re-checks (old position), the
// position store becomes visible. Any publication whose load comes after the
// sleeper's raise sees the count, so the late store is the only thing the
// sleeper can miss, and it becomes visible as soon as the publisher's store
// buffer drains (nanoseconds; a context switch or an interrupt drains it
// too). The sleeper therefore never sleeps long on a first look: its first
// futex sleep lasts kFirstSleep (100 us, src/detail/blocking.hpp), each
// further one twice the last, up to kMaxSleep, with a re-check between. A
// lost wake-up costs at most kFirstSleep (or twice the time the store took
// to become visible, if that was longer), never a long sleep. The
// alternative, an asymmetric fence (the sleeper runs
// membarrier(MEMBARRIER_CMD_GLOBAL_EXPEDITED), the publisher a compiler
// barrier), needs every publishing process registered, interrupts other
// processes' threads on each sleep, may be refused by a seccomp filter, and
// does not reach a GPU publisher; MEMBARRIER_CMD_GLOBAL, which needs no
// registration, took 8-16 ms a call on a 2-vCPU VM. docs/design.md, SYNC
// POINTs 6-7.
//
// The producer side writes head, trailers and its sleeper count; the consumer
// side writes tail and its sleeper count. No word has two writing sides, so
// the same code is correct between a CPU and a GPU (DESIGN principle 2).
// Every function is noexcept, allocation-free and system-call-free; waking a
// sleeper is left to the caller (a CPU handle uses a futex, a GPU cannot).
#pragma once

#include <cstdint>

#include "shmring/low_latency.hpp"
#include "shmring/ring_view.hpp"

namespace shmring {

struct SpscProducerCursor {
  std::uint64_t head = 0;         // next position to publish
  std::uint64_t cached_tail = 0;  // last consumer position seen
  std::uint32_t incarnation = 0;  // low-latency slots: this producer's flag bits
};

struct SpscConsumerCursor {
  std::uint64_t tail = 0;  // next position to read
};

class SpscView : public RingView {
 public:
  using RingView::RingView;

  // Slots writable from c.head now, at most `want`. Sets `status` to corrupt
  // (and returns 0) when the consumer's position is impossible.
  SHMRING_HD std::uint64_t writable(SpscProducerCursor& c, std::uint64_t want,
                                    Status& status) const noexcept {
    std::uint64_t room = capacity() - (c.head - c.cached_tail);
    if (room >= want) return want;
    // SYNC POINT (acquire, pairs with release()): the consumer is done with
    // every slot below tail, so they may be rewritten.
    const std::uint64_t tail = atomic::load_acquire(&consumer()->position);
    if (c.head - tail > capacity()) {  // tail ahead of head, or more than a lap behind
      status = Status::corrupt;
      return 0;
    }
    c.cached_tail = tail;
    room = capacity() - (c.head - tail);
    return room < want ? room : want;
  }

  // Publishes `count` claimed slots from c.head (their lengths already set).
  // Returns true when a consumer sleeps and must be woken.
  SHMRING_HD bool publish(SpscProducerCursor& c, std::uint64_t count) const noexcept {
    for (std::uint64_t i = 0; i < count && !low_latency(); ++i) {
      const std::uint64_t pos = c.head + i;
      // SYNC POINT (release, pairs with readable()): payload and length of
      // `pos` visible to the consumer.
      atomic::store_release(&trailer(pos)->committed, pos + 1);
    }
    c.head += count;
    // SYNC POINT (release, pairs with data_ready()): the slots below head are
    // published, for a sleeper's re-check, attach and takeover.
    atomic::store_release(&producer()->position, c.head);
    // The sleeper handshake (above): a consumer that raised its count before
    // this load is woken; one that raised it while our stores were still on
    // their way may miss them for at most its first, short sleep.
    const bool sleepers = atomic::load_relaxed(&consumer_wait()->waiters) != 0;
    // The consumer is done with every slot below cached_tail + capacity.
    prefetch_ahead(c.head, c.cached_tail + capacity(), count, /*one_line_too=*/true);
    return sleepers;
  }

  // How many consecutive committed slots from c.tail can be read, at most
  // `max`, each with its length validated against the slot size. A slot with
  // an impossible length ends the run; if it is the first, status = corrupt.
  SHMRING_HD std::uint64_t readable(const SpscConsumerCursor& c, std::uint64_t max,
                                    Status& status) const noexcept {
    std::uint64_t n = 0;
    for (; n < max; ++n) {
      const std::uint64_t pos = c.tail + n;
      if (low_latency()) {
        if (!low_latency::complete(*this, pos)) break;
        continue;
      }
      // SYNC POINT (acquire, pairs with publish()): payload of `pos` visible.
      if (atomic::load_acquire(&trailer(pos)->committed) != pos + 1) break;
      if (!length_ok(committed_length(pos))) {
        if (n == 0) status = Status::corrupt;
        break;
      }
    }
    return n;
  }

  // Hands `count` read slots back to the producer. Returns true when a
  // producer sleeps and must be woken.
  SHMRING_HD bool release(SpscConsumerCursor& c, std::uint64_t count) const noexcept {
    c.tail += count;
    // SYNC POINT (release, pairs with writable() and space_ready()): slots
    // below tail are free again.
    atomic::store_release(&consumer()->position, c.tail);
    // The sleeper handshake, as in publish().
    return atomic::load_relaxed(&producer_wait()->waiters) != 0;
  }

  // Re-checks for a consumer that has raised its sleeper count: has the head
  // moved past c.tail? seq_cst, so that the load stays after the raise (a
  // seq_cst read-modify-write) on every architecture. Signed: the tail may
  // run ahead of a head store still to come.
  SHMRING_HD bool data_ready(const SpscConsumerCursor& c) const noexcept {
    // SYNC POINT (seq_cst load, pairs with publish()'s release head store).
    const std::uint64_t head = atomic::load_seq_cst(&producer()->position);
    return static_cast<std::int64_t>(head - c.tail) > 0;
  }

  // The producer's twin of data_ready(). An impossible tail counts as "ready"
  // so the caller's retry reports corrupt instead of sleeping.
  SHMRING_HD bool space_ready(const SpscProducerCursor& c) const noexcept {
    // SYNC POINT (seq_cst load, pairs with release()'s release tail store).
    const std::uint64_t tail = atomic::load_seq_cst(&consumer()->position);
    return c.head - tail != capacity();
  }

  // Where a producer that takes over should resume: the published head, plus
  // any slots a dead predecessor committed but never covered with a head store
  // (the consumer may already have read them, so they must not be rewritten).
  SHMRING_HD std::uint64_t resume_head(std::uint64_t head, std::uint64_t tail) const noexcept {
    while (head - tail < capacity() && committed(head)) ++head;
    return head;
  }

 private:
  SHMRING_HD bool committed(std::uint64_t pos) const noexcept {
    return low_latency() ? low_latency::complete(*this, pos)
                         : atomic::load_acquire(&trailer(pos)->committed) == pos + 1;
  }
};

}  // namespace shmring
