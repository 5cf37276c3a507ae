// Kernel-side producer and subscriber of a broadcast ring.
//
// Built on the same view as the CPU handles (broadcast_view.hpp): the room
// a reliable producer has, the seqlock of lossy rings, the lap detection and
// the subscriber blocks are shared; what is here is who does what inside a
// thread or a block, under the rules of device.cuh (PCIe round trips, every
// wait against a Deadline, no futex).
//
//   auto tx = shmring::cuda::GpuBroadcastProducer::attach(seg, reg);
//   frames<<<1, 256>>>(tx.ref());  // BroadcastDeviceProducer(ref).block_push(...)
//
// The producer is one agent at a time (a thread or a block), as an SPSC
// producer. A reliable producer's room comes from the subscriber blocks in
// host memory: it scans them (a PCIe load per word) only when its cached
// room runs out. Each GPU subscriber is one agent reading through its own
// block, which only it writes.
//
// Lossy rings. The producer marks a claimed slot as being rewritten
// (`committed = 0`, then a system-scope release fence) before the payload
// is written; in a block, the leader marks and every writing thread then runs
// a system fence of its own after the barrier, whose cumulativity orders the
// mark before that thread's payload stores for every observer (a CPU reader
// included). A subscriber block reads in place, then every thread runs an
// acquire fence and the leader loads `committed` again (block_valid): if any
// word a thread read came from a rewrite, the mark is seen and the read is
// discarded (Status::overrun). Payload bytes are moved with plain vector
// loads and stores, which the GPU performs as whole words; the CPU side of
// the same ring uses relaxed atomic words (store_words, load_words).
#pragma once

#if !defined(__CUDACC__)
#error "shmring/cuda/broadcast_device.cuh is compiled by nvcc only"
#endif

#include <cstdint>

#include "shmring/atomic.hpp"
#include "shmring/broadcast_view.hpp"
#include "shmring/cuda/device.cuh"
#include "shmring/cuda/gpu_ring.hpp"
#include "shmring/status.hpp"

namespace shmring::cuda {

class BroadcastDeviceProducer
    : public InOrderDeviceProducer<BroadcastView, BroadcastProducerCursor> {
 public:
  __device__ explicit BroadcastDeviceProducer(const BroadcastProducerRef& r)
      : InOrderDeviceProducer(r.base, r.geometry, r.cursor) {}

  // ---- one thread ----
  __device__ Status try_push(const void* data, std::uint32_t size) const {
    return push(data, size, 0);
  }
  __device__ Status push(const void* data, std::uint32_t size, std::uint64_t timeout_ns) const {
    if (size > view_.slot_size()) return Status::too_large;
    const DeviceClaim c = claim(1, Deadline::after(timeout_ns));
    if (c.count == 0) return c.status;
    view_.write(c.first, data, size);  // lossy: relaxed words, after the mark's fence
    publish_slot(view_, c.first);
    publish_head(view_, cursor_->head, c.first + 1);
    return Status::ok;
  }

  // ---- one block ----
  // Claims 1..max slots (waits for at least one); every thread calls it and
  // gets the same claim. The lengths are preset to the full slot (set_size
  // shrinks them).
  __device__ DeviceClaim block_claim(std::uint32_t max, std::uint64_t timeout_ns) const {
    const DeviceClaim c = block_claim_with(
        max, timeout_ns, [this](std::uint32_t m, Deadline d) { return claim(m, d); });
    // Lossy: the leader's marks before this thread's payload stores (see the
    // top of this file).
    if (view_.lossy() && c.count != 0) __threadfence_system();
    return c;
  }
  // set_size() and block_commit() (after every thread's writes):
  // InOrderDeviceProducer, device.cuh.
  // One message of `size` bytes from `data` (device or host memory), copied
  // by the whole block: a frame.
  __device__ Status block_push(const void* data, std::uint32_t size,
                               std::uint64_t timeout_ns) const {
    if (size > view_.slot_size()) return Status::too_large;
    const DeviceClaim c = block_claim(1, timeout_ns);
    if (c.count == 0) return c.status;
    group_copy(view_.payload(c.first), data, size, flat_thread(), block_threads());
    if (flat_thread() == 0) view_.set_length(c.first, size);
    block_commit(c, 1);
    return Status::ok;
  }

 private:
  // Leader only: up to `max` slots from the head, waiting for at least one.
  // Lossy rings always have room (and the slots are marked as rewritten).
  __device__ DeviceClaim claim(std::uint32_t max, Deadline d) const {
    DeviceClaim c;
    if (max == 0) return c;
    std::uint64_t n = 0;
    c.status = poll_until(d, [&](Status& st) {
      n = view_.writable(*cursor_, max, st);
      return n != 0 || st == Status::corrupt;
    });
    c.first = cursor_->head;
    c.count = c.status == Status::ok ? static_cast<std::uint32_t>(n) : 0;
    return c;
  }
};

class BroadcastDeviceSubscriber {
 public:
  __device__ explicit BroadcastDeviceSubscriber(const BroadcastSubscriberRef& r)
      : view_(r.base, r.geometry), cursor_(r.cursor) {}

  __device__ const BroadcastView& view() const { return view_; }
  // The next position this subscriber reads; messages lost to laps (lossy).
  __device__ std::uint64_t position() const { return cursor_->next; }
  __device__ std::uint64_t lost() const { return cursor_->lost; }

  // ---- one thread ----
  // Copies the next message to `out`. Lossy: overrun when the subscriber was
  // lapped (it has moved to the newest message, and lost() counts what it
  // missed) or the slot was rewritten while copied; nothing torn is kept.
  __device__ Status try_pop(void* out, std::uint32_t capacity, std::uint32_t& size) const {
    return pop(out, capacity, size, 0);
  }
  __device__ Status pop(void* out, std::uint32_t capacity, std::uint32_t& size,
                        std::uint64_t timeout_ns) const {
    const Deadline d = Deadline::after(timeout_ns);
    const DeviceClaim c = first_ready(d);
    if (c.count == 0) return c.status;
    std::uint32_t length = 0;
    const Status st = view_.copy_out(c.first, out, capacity, length);
    if (st == Status::too_large) size = view_.committed_length(c.first);
    if (st == Status::overrun) (void)view_.recover_overrun(*cursor_);
    if (st != Status::ok) return st;
    size = length;
    release(1);
    return Status::ok;
  }
  // Conflated read (one thread): moves to the newest published message,
  // passing over the ones between; returns how many.
  __device__ std::uint64_t skip_to_newest() const { return view_.newest(*cursor_); }

  // ---- one block ----
  // Lends 1..max readable slots (waits for at least one); every thread calls
  // it and gets the same claim. Lapped (lossy): count 0, status overrun, and
  // the cursor moved to the newest message.
  __device__ DeviceClaim block_peek(std::uint32_t max, std::uint64_t timeout_ns) const {
    __shared__ DeviceClaim shared;
    __shared__ unsigned first_gap;
    const unsigned rank = flat_thread();
    __syncthreads();
    if (rank == 0) {
      shared = max == 0 ? DeviceClaim{} : first_ready(Deadline::after(timeout_ns));
      first_gap = max;
    }
    __syncthreads();
    DeviceClaim c = shared;
    if (c.count == 0) return c;
    for (std::uint32_t i = rank + 1; i < max; i += block_threads()) {
      if (!readable(c.first + i)) atomicMin(&first_gap, i);
    }
    __syncthreads();
    c.count = first_gap;
    return c;
  }
  __device__ ReadSlot slot(const DeviceClaim& c, std::uint32_t i) const {
    return view_.read_slot(c.first + i);
  }
  // After the block read a claim in place: whether what it read is the
  // claim's messages (always, on a reliable ring). Lossy and false: the
  // producer rewrote the first slot meanwhile (later ones are rewritten only
  // after it); the block discards what it read, and the cursor moves to the
  // newest message (lost() counts the skipped ones). Every thread calls it.
  __device__ bool block_valid(const DeviceClaim& c) const {
    if (!view_.lossy()) return true;
    __shared__ bool valid;
    // SYNC POINT (acquire fence in every reading thread, pairs with the
    // producer's release fence after its mark): a rewrite seen in any word
    // read before this shows in `committed` below.
    atomic::fence_acquire();
    __syncthreads();
    if (flat_thread() == 0) {
      valid = c.count != 0 && view_.still_valid(c.first);
      if (!valid && c.count != 0) (void)view_.recover_overrun(*cursor_);
    }
    __syncthreads();
    const bool v = valid;
    __syncthreads();  // every thread has read `valid` before a later call writes it
    return v;
  }
  // Hands the first `count` slots back; every thread calls it after its
  // reads (and, lossy, after block_valid).
  __device__ void block_release(const DeviceClaim& c, std::uint32_t count) const {
    __syncthreads();
    if (flat_thread() == 0 && count != 0 && c.first == cursor_->next) release(count);
    __syncthreads();
  }
  // Copies the next message to `out` (device memory) with the whole block,
  // then releases it: ok with `size` set, too_large (kept), timeout, or
  // (lossy) overrun when lapped or rewritten while copied.
  __device__ Status block_pop(void* out, std::uint32_t capacity, std::uint32_t& size,
                              std::uint64_t timeout_ns) const {
    const DeviceClaim c = block_peek(1, timeout_ns);
    if (c.count == 0) return c.status;
    const ReadSlot s = slot(c, 0);
    size = static_cast<std::uint32_t>(s.size);
    if (s.size > capacity) return block_valid(c) ? Status::too_large : Status::overrun;
    group_copy(out, s.data, s.size, flat_thread(), block_threads());
    if (!block_valid(c)) return Status::overrun;
    block_release(c, 1);
    return Status::ok;
  }

 private:
  // SYNC POINT (acquire, system scope, pairs with the producer's release of
  // `committed`): the payload of this slot is visible.
  __device__ bool readable(std::uint64_t pos) const {
    return atomic::load_acquire(&view_.trailer(pos)->committed) == pos + 1 &&
           view_.length_ok(view_.committed_length(pos));
  }

  // Leader (or the one thread): waits for the message at the cursor.
  __device__ DeviceClaim first_ready(Deadline d) const {
    DeviceClaim c;
    c.status = poll_until(d, [&](Status& st) {
      if (view_.readable(*cursor_, 1, st) != 0) return true;
      // Lapped: counted, and the next read is the newest message. A slot
      // being rewritten before the head says so is a lap not yet published:
      // wait for it as for a message.
      if (st == Status::overrun) return view_.recover_overrun(*cursor_) != 0;
      return st == Status::corrupt;
    });
    c.first = cursor_->next;
    c.count = c.status == Status::ok ? 1 : 0;
    return c;
  }

  // The cursor, stored in the subscriber's block: a reliable producer may
  // rewrite the slots below it. No sleeper handshake (store_cursor).
  __device__ void release(std::uint64_t count) const {
    cursor_->next += count;
    view_.store_cursor(*cursor_);
  }

  BroadcastView view_;
  BroadcastSubscriberCursor* cursor_;
};

}  // namespace shmring::cuda
