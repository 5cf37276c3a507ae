// Addressing of the shared bytes, common to the SPSC and MPMC algorithms.
//
// A view never owns memory: it takes a base address and a Geometry that the
// caller validated, and keeps its own copy of that geometry so a peer that
// rewrites the header afterwards cannot move our bounds (DESIGN principle 3).
// Every position is masked before it addresses memory.
//
// A view of an MPMC ring of several lanes addresses one lane: its slots (a
// ring of capacity / lanes), its counters and its claim tables, while the
// sleeper counts and the other ring-wide words stay the control area's.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>

#include "shmring/atomic.hpp"
#include "shmring/config.hpp"
#include "shmring/layout.hpp"
#include "shmring/status.hpp"

namespace shmring {

// memcpy for message bytes: an empty message may come with a null pointer,
// which memcpy must never be given, not even with a length of 0.
SHMRING_HD inline void copy_message(void* to, const void* from, std::size_t size) noexcept {
  if (size != 0) memcpy(to, from, size);
}

// A slot handed to a reader: its payload and the validated length.
struct ReadSlot {
  const std::byte* data = nullptr;
  std::uint32_t size = 0;
  std::uint64_t position = 0;
};

class RingView {
 public:
  RingView() = default;
  // `lane` < g.lane_count() (the caller checks).
  SHMRING_HD RingView(std::byte* base, const Geometry& g, std::uint32_t lane = 0) noexcept
      : base_(base),
        lane_(base + shmring::lane_offset(lane)),
        slots_(base + g.slots_offset + lane * (g.capacity / g.lane_count()) * g.slot_stride),
        mask_(g.capacity / g.lane_count() - 1),
        capacity_(g.capacity / g.lane_count()),
        slot_size_(g.slot_size),
        stride_(g.slot_stride),
        trailer_offset_(g.trailer_offset()),
        low_latency_(g.format == SlotFormat::low_latency) {}

  SHMRING_HD std::byte* base() const noexcept { return base_; }
  // Slots of the ring, or of the lane this view addresses.
  SHMRING_HD std::uint64_t capacity() const noexcept { return capacity_; }
  // Where the words of this view's lane begin, from the base (lock_byte).
  SHMRING_HD std::uint64_t lane_offset() const noexcept {
    return static_cast<std::uint64_t>(lane_ - base_);
  }
  SHMRING_HD std::uint64_t slot_size() const noexcept { return slot_size_; }
  // SlotFormat::low_latency: messages as flagged words (low_latency.hpp).
  SHMRING_HD bool low_latency() const noexcept { return low_latency_; }

  SHMRING_HD ControlArea* control() const noexcept { return reinterpret_cast<ControlArea*>(base_); }
  SHMRING_HD LaneArea* lane_area() const noexcept { return reinterpret_cast<LaneArea*>(lane_); }
  // The lane's side blocks (the ring's, with one lane): positions, what was
  // recovered, the recovery lock.
  SHMRING_HD ProducerBlock* producer() const noexcept { return &lane_area()->producer; }
  SHMRING_HD ConsumerBlock* consumer() const noexcept { return &lane_area()->consumer; }
  // The ring's side blocks: futex words, the stream word, attached handles
  // and GPU agents.
  SHMRING_HD ProducerBlock* ring_producer() const noexcept { return &control()->producer; }
  SHMRING_HD ConsumerBlock* ring_consumer() const noexcept { return &control()->consumer; }
  SHMRING_HD WaitBlock* producer_wait() const noexcept { return &control()->producer_wait; }
  SHMRING_HD WaitBlock* consumer_wait() const noexcept { return &control()->consumer_wait; }
  SHMRING_HD ClaimTable* producer_claims() const noexcept { return &lane_area()->producer_claims; }
  SHMRING_HD ClaimTable* consumer_claims() const noexcept { return &lane_area()->consumer_claims; }

  SHMRING_HD std::byte* payload(std::uint64_t position) const noexcept {
    return slots_ + (position & mask_) * stride_;
  }
  SHMRING_HD SlotTrailer* trailer(std::uint64_t position) const noexcept {
    return reinterpret_cast<SlotTrailer*>(payload(position) + trailer_offset_);
  }

  // The payload length of a committed slot, or a value > slot_size() when the
  // producer wrote an impossible one.
  SHMRING_HD std::uint32_t committed_length(std::uint64_t position) const noexcept {
    return atomic::load_relaxed(&trailer(position)->length);
  }
  SHMRING_HD bool length_ok(std::uint64_t length) const noexcept { return length <= slot_size_; }

  // A committed slot for reading. The length was validated when the slot was
  // found readable; it is clamped again here because a hostile peer may have
  // rewritten it since, and a clamped length can never reach past the slot.
  SHMRING_HD ReadSlot read_slot(std::uint64_t position) const noexcept {
    const std::uint32_t length = committed_length(position);
    const std::uint32_t safe = length_ok(length) ? length : static_cast<std::uint32_t>(slot_size_);
    return ReadSlot{payload(position), safe, position};
  }

  // Lines of a slot before its trailer's: 0 when the slot is one line
  // (payloads up to 32 bytes).
  SHMRING_HD std::uint64_t payload_lines() const noexcept {
    return trailer_offset_ / kPayloadAlign;
  }

  static constexpr std::uint64_t kPrefetchLines = 2;
  // A reader about to claim `position` pulls the payload's first
  // kPrefetchLines lines (those before the trailer's) toward its core.
  // SPSC consumers and broadcast subscribers also pull the payload at their
  // cursor while they keep finding it unpublished (EmptyPolls, below).
  SHMRING_HD void prefetch_payload(std::uint64_t position) const noexcept {
    const std::byte* p = payload(position);
    const std::uint64_t lines = payload_lines();
    for (std::uint64_t i = 0; i < lines && i < kPrefetchLines; ++i) {
      atomic::prefetch_read(p + i * kPayloadAlign);
    }
  }
  // A writer about to fill `position` takes the slot's lines exclusive now
  // (atomic::prefetch_write): the payload's first kPrefetchLines lines and
  // the trailer's. Slots of one line (payloads up to 32 bytes) only with
  // `one_line_too`: there taking lines ahead cost MPMC throughput where it
  // was measured (8-byte messages, two vCPUs); an SPSC producer gains.
  SHMRING_HD void prefetch_slot_for_write(std::uint64_t position,
                                          bool one_line_too = false) const noexcept {
    const std::uint64_t lines = payload_lines();
    if (lines == 0 && !one_line_too) return;
    std::byte* p = payload(position);
    for (std::uint64_t i = 0; i < lines && i < kPrefetchLines; ++i) {
      atomic::prefetch_write(p + i * kPayloadAlign);
    }
    atomic::prefetch_write(trailer(position));
  }

  // Slots an in-order writer takes ahead of its writes (prefetch_ahead()):
  // kPrefetchAhead when it publishes a message or a few a call, as many as
  // its last batch (up to kPrefetchBatch) when it publishes more.
  static constexpr std::uint64_t kPrefetchAhead = 8;
  static constexpr std::uint64_t kPrefetchBatch = 32;
  // After `count` publications up to `head`: takes the lines of the slots 1
  // to `ahead` positions past the head exclusive now (prefetch_slot_for_write:
  // slots of one line only with `one_line_too`), never at or past `end` (the
  // first slot a reader may still hold). The readers read those lines a lap
  // ago and keep them (1024 messages of 64 bytes, 128 KiB, stay in a core's
  // cache), so the writer's first store to each needs them back,
  // invalidating every copy. Stores become visible in order, so a message
  // written into lines still shared waits for that round trip before its
  // `committed` store, and the store buffer holds only a few messages' worth
  // of such stores: one message a call would pay the round trip nearly every
  // time, and a call that stores more of its own (a claim) pays it more
  // often. Taken ahead, the transfers overlap the messages before.
  //   - A message or a few a call: `ahead` is kPrefetchAhead, and each call
  //     takes one new slot per message, so every slot is taken once,
  //     kPrefetchAhead messages before it is written.
  //   - Batches: the next batch, as large as this one, is taken whole. With
  //     only its first kPrefetchAhead slots taken, the rest of a 32-message
  //     batch met lines its readers still shared. On the 16-core host,
  //     taking the whole batch made batches of 32 move 1.44x as many 64 B
  //     messages (SPSC; 1.6x at 8 B) and 3.1x (broadcast, 4 subscribers),
  //     one message a call unchanged.
  // Past the head only, so no reader polls their trailers (a caught-up
  // reader polls the slot at the head). A hint: it orders nothing.
  SHMRING_HD void prefetch_ahead(std::uint64_t head, std::uint64_t end, std::uint64_t count,
                                 bool one_line_too = false) const noexcept {
    const std::uint64_t ahead = count <= kPrefetchAhead
                                    ? kPrefetchAhead
                                    : (count < kPrefetchBatch ? count : kPrefetchBatch);
    const std::uint64_t n = count < ahead ? count : ahead;
    for (std::uint64_t i = 0; i < n; ++i) {
      const std::uint64_t pos = head + ahead - i;
      if (static_cast<std::int64_t>(end - pos) > 0) prefetch_slot_for_write(pos, one_line_too);
    }
  }

  // Records the payload length of a claimed slot before it is published (the
  // consumer reads it only after the publishing store).
  SHMRING_HD void set_length(std::uint64_t position, std::uint32_t length) const noexcept {
    atomic::store_relaxed(&trailer(position)->length, length);
  }

 private:
  std::byte* base_ = nullptr;
  std::byte* lane_ = nullptr;
  std::byte* slots_ = nullptr;
  std::uint64_t mask_ = 0;
  std::uint64_t capacity_ = 0;
  std::uint64_t slot_size_ = 0;
  std::uint64_t stride_ = 0;
  std::uint64_t trailer_offset_ = 0;
  bool low_latency_ = false;
};

// A CPU reader's empty polls in a row (SPSC consumer, broadcast subscriber:
// the slot at its cursor not yet published). From the kPullAfter-th on, each
// one also pulls that slot's payload (RingView::prefetch_payload()). The
// producer writes the payload before `committed`, so a poll after that write
// brings the new payload over while `committed` is still on its way: the
// message then costs the reader about one line transfer after its
// publication instead of two in a row (the trailer's, then the payload's; a
// 64-byte round trip over a broadcast ring and an SPSC ring went from 622
// to 518 ns on two vCPUs, the cache-line floor about 320 ns). The price:
// the producer's store to a payload line a reader pulled must take it back
// first, as its store to the trailer's line must; with many subscribers,
// one more invalidation of every copy per message.
// Hence only a reader that has waited a while (a round trip's, a sparse
// stream's) pulls; one that streams behind a producer finds the slot empty
// once or twice between messages and seldom does. A hint: what it brings is
// read only after the acquire load of `committed`.
struct EmptyPolls {
  static constexpr std::uint32_t kPullAfter = 4;
  std::uint32_t count = 0;

  // After a poll at `position` that found `n` messages (`status`: ok, or
  // why none could be read). A find starts the next wait afresh; an error
  // (corrupt, overrun) is not an empty poll.
  void after(std::uint64_t n, Status status, const RingView& view,
             std::uint64_t position) noexcept {
    if (n != 0) {
      count = 0;
    } else if (status == Status::ok) {
      if (count < kPullAfter) {
        ++count;
      } else {
        view.prefetch_payload(position);
      }
    }
  }
};

}  // namespace shmring
