// Kernel-side producers and consumers over a registered segment.
//
// Built from the same views the CPU handles use (spsc_view.hpp,
// mpmc_view.hpp): the index math, the turn words and the validation are
// shared; what is here is who does what inside a thread, a warp or a block.
//
// Rules that follow from PCIe (DESIGN, measured on an H100):
//   - every load of the peer's words is a round trip (~2 us), so waits poll
//     from one leader thread with __nanosleep backoff, and a group checks
//     many slots with one parallel load each;
//   - every wait has a deadline on the GPU's global timer: a kernel facing an
//     empty or full ring returns Status::timeout instead of hanging. Each
//     call takes its Deadline once, at entry, and hands it down to every loop
//     it runs (helpers take a Deadline, never a timeout), so nothing a peer
//     does (aborting claims, say) restarts the clock; within a warp one
//     lane's clock decides, so the lanes never part ways;
//   - publication is one release store per slot by the thread that wrote it
//     (so lanes publish in parallel) plus one head store per group: a single
//     thread publishing message by message costs a round trip each.
//   - a GPU cannot call futex: CPU peers see gpu_attached and poll with short
//     sleeps instead of waiting to be woken;
//   - on low-latency slots (low_latency.hpp) the words carry their own flags:
//     a thread's push needs no fence, and warp_pop reads a message of up to
//     252 bytes in one trip (one thread's pop pays a trip per 16 bytes, as
//     one thread's loads of host memory follow each other). The warp and
//     block forms that lend slots in place return Status::unsupported there.
#pragma once

#if !defined(__CUDACC__)
#error "shmring/cuda/device.cuh is compiled by nvcc only"
#endif

#include <cstdint>

#include "shmring/atomic.hpp"
#include "shmring/cuda/gpu_ring.hpp"
#include "shmring/low_latency.hpp"
#include "shmring/mpmc_view.hpp"
#include "shmring/spsc_view.hpp"
#include "shmring/status.hpp"

namespace shmring::cuda {

inline constexpr unsigned kFullWarp = 0xffffffffu;

// Nanoseconds on the GPU's global timer.
__device__ inline std::uint64_t global_ns() {
  std::uint64_t t;
  asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t));
  return t;
}

struct Deadline {
  std::uint64_t at;
  __device__ static Deadline after(std::uint64_t timeout_ns) {
    const std::uint64_t now = global_ns();
    return {timeout_ns > ~std::uint64_t{0} - now ? ~std::uint64_t{0} : now + timeout_ns};
  }
  __device__ bool passed() const { return global_ns() >= at; }
  // For the whole warp (every lane calls): lane 0's reading of the clock.
  __device__ bool warp_passed() const {
    return __shfl_sync(kFullWarp, static_cast<int>(passed()), 0) != 0;
  }
};

// Polling backoff for a leader thread. A poll of host memory is itself a PCIe
// round trip (~2 us), so the first polls follow each other at once (a peer
// that answers soon is seen soon); after that they back off to at most one a
// microsecond or so, to leave the link to the data.
struct Backoff {
  unsigned polls = 0;
  unsigned ns = 64;
  __device__ void pause() {
    if (++polls <= 16) return;
    __nanosleep(ns);
    if (ns < 1024) ns *= 2;
  }
};

// Copies n bytes, 16 at a time where both ends allow it (payloads are 64-byte
// aligned), from one thread.
__device__ inline void copy_bytes(void* dst, const void* src, std::uint32_t n) {
  auto* d = static_cast<unsigned char*>(dst);
  const auto* s = static_cast<const unsigned char*>(src);
  std::uint32_t i = 0;
  if (((reinterpret_cast<std::uintptr_t>(d) | reinterpret_cast<std::uintptr_t>(s)) & 15) == 0) {
    for (; i + 16 <= n; i += 16) {
      *reinterpret_cast<uint4*>(d + i) = *reinterpret_cast<const uint4*>(s + i);
    }
  }
  for (; i < n; ++i) d[i] = s[i];
}

// Copies n bytes with every thread of a group of `threads` (rank `rank`),
// 16 bytes per access where aligned: a block moving one large slot. The two
// buffers do not overlap (__restrict__), so the compiler may keep loads in
// flight across the stores; a hand-staged batch of 8 loads per thread measured
// slower on an H100 for 64 KiB slots (36 against 45 GB/s into host memory).
__device__ inline void group_copy(void* __restrict__ dst, const void* __restrict__ src,
                                  std::uint64_t n, unsigned rank, unsigned threads) {
  auto* __restrict__ d = static_cast<unsigned char*>(dst);
  const auto* __restrict__ s = static_cast<const unsigned char*>(src);
  std::uint64_t done = 0;
  if (((reinterpret_cast<std::uintptr_t>(d) | reinterpret_cast<std::uintptr_t>(s)) & 15) == 0) {
    const std::uint64_t vectors = n / 16;
    const auto* __restrict__ sv = reinterpret_cast<const uint4*>(s);
    auto* __restrict__ dv = reinterpret_cast<uint4*>(d);
    for (std::uint64_t i = rank; i < vectors; i += threads) dv[i] = sv[i];
    done = vectors * 16;
  }
  for (std::uint64_t i = done + rank; i < n; i += threads) d[i] = s[i];
}

// A thread's rank in its block, and the block's size, for group forms.
__device__ inline unsigned flat_thread() {
  return threadIdx.x + blockDim.x * (threadIdx.y + blockDim.y * threadIdx.z);
}
__device__ inline unsigned block_threads() { return blockDim.x * blockDim.y * blockDim.z; }

// Slots lent to a kernel group: positions first .. first + count - 1.
struct DeviceClaim {
  std::uint64_t first = 0;
  std::uint32_t count = 0;
  Status status = Status::would_block;
};

// A claim lane 0 made, for the whole warp.
__device__ inline DeviceClaim broadcast_warp(DeviceClaim c) {
  c.first = __shfl_sync(kFullWarp, c.first, 0);
  c.count = __shfl_sync(kFullWarp, c.count, 0);
  c.status = static_cast<Status>(__shfl_sync(kFullWarp, static_cast<int>(c.status), 0));
  return c;
}

// Publication by the producers that write in order (SPSC, broadcast).
//
// SYNC POINT (release, system scope, pairs with the consumer's acquire of
// `committed`): this thread's payload writes, and those ordered before it by
// its group's barrier, visible before the slot is.
__device__ inline void publish_slot(const RingView& view, std::uint64_t pos) {
  atomic::store_release(&view.trailer(pos)->committed, pos + 1);
}
// This thread's share of a group commit: one system fence (it orders the
// group's payload writes, which the barrier before it ordered before this
// thread), then plain stores of the `committed` words.
// SYNC POINT (fence + relaxed, system scope: a release pattern, pairs with
// the consumer's acquire of `committed`).
__device__ inline void publish_share(const RingView& view, const DeviceClaim& c,
                                     std::uint32_t count, unsigned rank, unsigned threads) {
  if (rank >= count) return;
  // A release fence (fence.acq_rel.sys), not __threadfence_system's
  // sequentially consistent one: nothing here needs a total order, and the
  // lighter fence is what the hand-written reference producer of the GPU
  // benchmark uses.
  atomic::fence_release();
  for (std::uint32_t i = rank; i < count; i += threads) {
    atomic::store_relaxed(&view.trailer(c.first + i)->committed, c.first + i + 1);
  }
}
// The head serves CPU sleepers' re-checks, attach and inspection; a GPU
// cannot wake a sleeper, so unlike the CPU publish it loads no sleeper count
// (a load of host memory: a PCIe round trip).
__device__ inline void publish_head(const RingView& view, std::uint64_t& head_cursor,
                                    std::uint64_t head) {
  head_cursor = head;
  atomic::store_release(&view.producer()->position, head);
}

// ---------------------------------------------------------------------------
// What the producers that write in order (SPSC, broadcast: one agent, a head
// it alone moves) share: the slot sizes and the group commit.
template <class View, class Cursor>
class InOrderDeviceProducer {
 public:
  __device__ InOrderDeviceProducer(std::byte* base, const Geometry& geometry, Cursor* cursor)
      : view_(base, geometry), cursor_(cursor) {}

  __device__ const View& view() const { return view_; }
  __device__ std::byte* payload(std::uint64_t position) const { return view_.payload(position); }

  // Records slot i's payload size (by any thread, before the commit).
  __device__ void set_size(const DeviceClaim& c, std::uint32_t i, std::uint32_t size) const {
    view_.set_length(c.first + i, size <= view_.slot_size()
                                      ? size
                                      : static_cast<std::uint32_t>(view_.slot_size()));
  }

  // Publishes the first `count` slots of a claim. Every thread of the group
  // calls it after its writes; each thread publishes a share of the slots
  // (release: its fence covers the group's writes before the barrier), then
  // the leader stores the head once.
  __device__ void warp_commit(const DeviceClaim& c, std::uint32_t count) const {
    __syncwarp();
    publish_share(view_, c, count, threadIdx.x & 31u, 32);
    __syncwarp();
    if ((threadIdx.x & 31u) == 0 && count != 0) publish_head(view_, cursor_->head, c.first + count);
    __syncwarp();
  }
  __device__ void block_commit(const DeviceClaim& c, std::uint32_t count) const {
    __syncthreads();
    const unsigned rank = flat_thread();
    publish_share(view_, c, count, rank, block_threads());
    __syncthreads();
    if (rank == 0 && count != 0) publish_head(view_, cursor_->head, c.first + count);
    __syncthreads();
  }

 protected:
  // The group's claim of `max` slots by its leader: `claim(max, deadline)`
  // of the derived producer, broadcast to the block through shared memory,
  // with the claimed lengths preset to the whole slot in parallel.
  template <class Claim>
  __device__ DeviceClaim block_claim_with(std::uint32_t max, std::uint64_t timeout_ns,
                                          Claim&& claim) const {
    __shared__ DeviceClaim shared;
    __syncthreads();  // a previous claim's readers are done with `shared`
    if (flat_thread() == 0) shared = claim(max, Deadline::after(timeout_ns));
    __syncthreads();
    const DeviceClaim c = shared;
    for (std::uint32_t i = flat_thread(); i < c.count; i += block_threads()) {
      view_.set_length(c.first + i, static_cast<std::uint32_t>(view_.slot_size()));
    }
    return c;
  }

  View view_;
  Cursor* cursor_;
};

// Polls `attempt(status)` from one thread (the leader) until it says done
// (true, with `status` ok or final) or `d` passes (Status::timeout), backing
// off between polls: the waits of the device producers and consumers.
template <class Attempt>
__device__ Status poll_until(Deadline d, Attempt&& attempt) {
  Backoff backoff;
  for (;;) {
    Status st = Status::ok;
    if (attempt(st)) return st;
    if (d.passed()) return Status::timeout;
    backoff.pause();
  }
}

// ---------------------------------------------------------------------------
// SPSC, the GPU as producer. One agent at a time: a single thread, a warp, or
// a block, each using the forms of its size.
class SpscDeviceProducer : public InOrderDeviceProducer<SpscView, SpscProducerCursor> {
 public:
  __device__ explicit SpscDeviceProducer(const SpscProducerRef& r)
      : InOrderDeviceProducer(r.base, r.geometry, r.cursor) {}

  // ---- one thread ----
  __device__ Status try_push(const void* data, std::uint32_t size) const {
    return push(data, size, 0);
  }
  __device__ Status push(const void* data, std::uint32_t size, std::uint64_t timeout_ns) const {
    if (size > view_.slot_size()) return Status::too_large;
    Status st = Status::ok;
    if (wait_room(1, 1, Deadline::after(timeout_ns), st) == 0) return st;
    const std::uint64_t pos = cursor_->head;
    if (view_.low_latency()) {
      low_latency::write(view_, pos, cursor_->incarnation, data, size);
    } else {
      copy_bytes(view_.payload(pos), data, size);
      view_.set_length(pos, size);
      publish_slot(view_, pos);
    }
    advance_head(pos + 1);
    return Status::ok;
  }

  // ---- one warp: every lane calls; lanes with has_message push theirs ----
  // The messages go in lane order, as many per round as there is room for,
  // with one head store per round. Each lane's result is its own message's:
  // ok, too_large (not pushed), or the timeout / corrupt that stopped the
  // rounds before its turn.
  __device__ Status warp_push(const void* data, std::uint32_t size, bool has_message,
                              std::uint64_t timeout_ns) const {
    if (view_.low_latency()) return has_message ? Status::unsupported : Status::ok;
    const unsigned lane = threadIdx.x & 31u;
    const bool fits = size <= view_.slot_size();
    const unsigned mask = __ballot_sync(kFullWarp, has_message && fits);
    const unsigned count = __popc(mask);
    const unsigned rank = __popc(mask & ((1u << lane) - 1u));
    const Deadline deadline = Deadline::after(timeout_ns);
    Status st = Status::ok;
    unsigned done = 0;
    while (done < count) {
      std::uint64_t n = 0;
      std::uint64_t first = 0;
      if (lane == 0) {
        n = wait_room(1, count - done, deadline, st);
        first = cursor_->head;
      }
      n = __shfl_sync(kFullWarp, n, 0);
      first = __shfl_sync(kFullWarp, first, 0);
      st = static_cast<Status>(__shfl_sync(kFullWarp, static_cast<int>(st), 0));
      if (n == 0) break;
      if (has_message && fits && rank >= done && rank < done + n) {
        const std::uint64_t pos = first + (rank - done);
        copy_bytes(view_.payload(pos), data, size);
        view_.set_length(pos, size);
        publish_slot(view_, pos);
      }
      __syncwarp();
      if (lane == 0) publish_head(view_, cursor_->head, first + n);
      __syncwarp();
      done += static_cast<unsigned>(n);
    }
    if (!has_message) return Status::ok;
    if (!fits) return Status::too_large;
    return rank < done ? Status::ok : st;
  }

  // ---- one warp, one message ----
  // Every lane calls with the same `data` and `size`; all get the same
  // status. The lanes write the slot together, 16 bytes each, so the warp's
  // stores leave as whole-line writes; one thread's stores into host memory
  // leave 16 bytes at a time. Plain slots: one release publishes the slot.
  // Low-latency slots: the line holding word 0 (the word readers poll) goes
  // last, and no fence is needed (low_latency.hpp).
  __device__ Status warp_push_one(const void* data, std::uint32_t size,
                                  std::uint64_t timeout_ns) const {
    const unsigned lane = threadIdx.x & 31u;
    if (size > view_.slot_size()) return Status::too_large;
    Status st = Status::ok;
    std::uint64_t n = 0;
    if (lane == 0) n = wait_room(1, 1, Deadline::after(timeout_ns), st);
    st = static_cast<Status>(__shfl_sync(kFullWarp, static_cast<int>(st), 0));
    if (__shfl_sync(kFullWarp, n, 0) == 0) return st;
    const std::uint64_t pos = cursor_->head;
    const auto* bytes = static_cast<const std::byte*>(data);
    if (view_.low_latency()) {
      const std::uint32_t f = low_latency::flag(view_, pos, cursor_->incarnation);
      std::uint64_t* w = low_latency::words(view_, pos);
      const std::uint64_t pairs = low_latency_words(view_.slot_size()) / 2;
      constexpr std::uint64_t kLinePairs = low_latency::kLineWords / 2;
      for (std::uint64_t p = kLinePairs + lane; p < pairs; p += 32) {
        low_latency::write_pair(w, p, f, bytes, size);
      }
      __syncwarp();
      if (lane < kLinePairs && lane < pairs) low_latency::write_pair(w, lane, f, bytes, size);
    } else {
      group_copy(view_.payload(pos), bytes, size, lane, 32);
      __syncwarp();
      if (lane == 0) {
        view_.set_length(pos, size);
        publish_slot(view_, pos);  // release: covers the lanes' writes before the barrier
      }
    }
    __syncwarp();
    if (lane == 0) advance_head(pos + 1);
    __syncwarp();
    return Status::ok;
  }

  // ---- zero copy, one warp or one block ----
  // Claims 1..max slots (waits for at least one). Every thread of the group
  // calls it and gets the same claim.
  // The group presets the claimed slots' lengths to the full slot in
  // parallel (set_size shrinks them).
  __device__ DeviceClaim warp_claim(std::uint32_t max, std::uint64_t timeout_ns) const {
    DeviceClaim c;
    if ((threadIdx.x & 31u) == 0) c = claim(max, Deadline::after(timeout_ns));
    c = broadcast_warp(c);
    preset_lengths(c, threadIdx.x & 31u, 32);
    return c;
  }
  __device__ DeviceClaim block_claim(std::uint32_t max, std::uint64_t timeout_ns) const {
    return block_claim_with(max, timeout_ns,
                            [this](std::uint32_t m, Deadline d) { return claim(m, d); });
  }

 private:
  // Leader only: waits until at least `least` slots are free and returns up
  // to `most` (0 with status timeout or corrupt).
  __device__ std::uint64_t wait_room(std::uint64_t least, std::uint64_t most, Deadline d,
                                     Status& st) const {
    if (least > view_.capacity()) {
      st = Status::too_large;
      return 0;
    }
    std::uint64_t n = 0;
    st = poll_until(d, [&](Status& s) {
      n = view_.writable(*cursor_, most, s);
      return s == Status::corrupt || n >= least;
    });
    return st == Status::ok ? n : 0;
  }

  __device__ DeviceClaim claim(std::uint32_t max, Deadline d) const {
    DeviceClaim c;
    if (view_.low_latency()) {
      c.status = Status::unsupported;
      return c;
    }
    Status st = Status::ok;
    const std::uint64_t n = max == 0 ? 0 : wait_room(1, max, d, st);
    c.first = cursor_->head;
    c.count = static_cast<std::uint32_t>(n);
    c.status = n != 0 ? Status::ok : max == 0 ? Status::would_block : st;
    return c;
  }

  // The head after a one-message push. An SPSC consumer takes a message
  // from its slot's own words (`committed`, or the low-latency flags), never
  // from the head, which serves only a CPU consumer's sleep re-check, attach
  // and inspection: so no fence (a release store would stall this thread for
  // a PCIe round trip, on the reply's path in a round trip).
  __device__ void advance_head(std::uint64_t head) const {
    cursor_->head = head;
    atomic::store_relaxed(&view_.producer()->position, head);
  }

  __device__ void preset_lengths(const DeviceClaim& c, unsigned rank, unsigned threads) const {
    for (std::uint32_t i = rank; i < c.count; i += threads) {
      view_.set_length(c.first + i, static_cast<std::uint32_t>(view_.slot_size()));
    }
  }
};

// ---------------------------------------------------------------------------
// SPSC, the GPU as consumer.
class SpscDeviceConsumer {
 public:
  __device__ explicit SpscDeviceConsumer(const SpscConsumerRef& r)
      : view_(r.base, r.geometry), cursor_(r.cursor) {}

  __device__ const SpscView& view() const { return view_; }

  // ---- one thread ----
  __device__ Status try_pop(void* out, std::uint32_t capacity, std::uint32_t& size) const {
    return pop(out, capacity, size, 0);
  }
  __device__ Status pop(void* out, std::uint32_t capacity, std::uint32_t& size,
                        std::uint64_t timeout_ns) const {
    return pop_until(out, capacity, size, Deadline::after(timeout_ns));
  }

  // ---- one warp, one message ----
  // Every lane calls with the same `out` (shared or global memory: one
  // address for the warp); all get the same status and size. Each lane loads
  // its own 16 bytes of the slot, so a message costs one PCIe round trip
  // (low-latency slots, up to 252 bytes: the poll is the read) or two (plain
  // slots, up to 512 bytes: lane 0 polls `committed`, then the lanes load the
  // length and the payload together), where one thread's loads of host
  // memory follow each other (about 1.2 us apiece, measured on an H200).
  __device__ Status warp_pop(void* out, std::uint32_t capacity, std::uint32_t& size,
                             std::uint64_t timeout_ns) const {
    const unsigned lane = threadIdx.x & 31u;
    const Deadline deadline = Deadline::after(timeout_ns);
    if (!view_.low_latency()) return warp_pop_plain(out, capacity, size, deadline);
    const std::uint64_t pos = __shfl_sync(kFullWarp, cursor_->tail, 0);
    Backoff backoff;
    for (;;) {
      std::uint32_t length = 0;
      const low_latency::Read r = warp_read_words(pos, out, capacity, length);
      if (r != low_latency::Read::not_ready) {
        size = length;
        if (r == low_latency::Read::corrupt) return Status::corrupt;
        if (r == low_latency::Read::too_large) return Status::too_large;
        __syncwarp();  // every lane's loads and writes are done
        if (lane == 0) release_copied(pos);
        __syncwarp();
        return Status::ok;
      }
      // One lane's clock decides for the warp, so the lanes never part ways.
      if (deadline.warp_passed()) return Status::timeout;
      backoff.pause();
    }
  }

  // ---- zero copy, one warp or one block ----
  // Lends 1..max readable slots (waits for at least one). The leader waits
  // for the first slot; then the group checks up to `max` slots with one
  // parallel load each, and the run ends at the first one not ready.
  __device__ DeviceClaim warp_peek(std::uint32_t max, std::uint64_t timeout_ns) const {
    const unsigned lane = threadIdx.x & 31u;
    DeviceClaim c;
    if (lane == 0) c = first_ready(Deadline::after(timeout_ns));
    c.first = __shfl_sync(kFullWarp, c.first, 0);
    c.count = __shfl_sync(kFullWarp, c.count, 0);
    c.status = static_cast<Status>(__shfl_sync(kFullWarp, static_cast<int>(c.status), 0));
    if (c.count == 0) return c;
    std::uint32_t run = 0;
    for (std::uint32_t base = 0; base < max; base += 32) {
      const std::uint32_t i = base + lane;
      const bool ready = i < max && readable(c.first + i);
      const unsigned not_ready = __ballot_sync(kFullWarp, !ready);
      if (not_ready != 0) {
        run = base + (__ffs(not_ready) - 1);
        break;
      }
      run = base + 32;
    }
    c.count = run < max ? run : max;
    return c;
  }
  __device__ DeviceClaim block_peek(std::uint32_t max, std::uint64_t timeout_ns) const {
    __shared__ DeviceClaim shared;
    __shared__ unsigned first_gap;
    const unsigned rank = flat_thread();
    const unsigned threads = block_threads();
    __syncthreads();
    if (rank == 0) {
      shared = first_ready(Deadline::after(timeout_ns));
      first_gap = max;
    }
    __syncthreads();
    const DeviceClaim c = shared;
    if (c.count == 0) return c;
    for (std::uint32_t i = rank; i < max; i += threads) {
      if (!readable(c.first + i)) atomicMin(&first_gap, i);
    }
    __syncthreads();
    DeviceClaim out = c;
    out.count = first_gap;
    return out;
  }

  __device__ ReadSlot slot(const DeviceClaim& c, std::uint32_t i) const {
    return view_.read_slot(c.first + i);
  }

  // Hands the first `count` slots back; every thread of the group calls it
  // after its reads.
  __device__ void warp_release(const DeviceClaim& c, std::uint32_t count) const {
    __syncwarp();
    if ((threadIdx.x & 31u) == 0 && count != 0 && c.first == cursor_->tail) release_slots(count);
    __syncwarp();
  }
  __device__ void block_release(const DeviceClaim& c, std::uint32_t count) const {
    __syncthreads();
    if (flat_thread() == 0 && count != 0 && c.first == cursor_->tail) {
      release_slots(count);
    }
    __syncthreads();
  }

 private:
  // SYNC POINT (acquire, system scope, pairs with the producer's release of
  // `committed`): the payload of this slot is visible.
  __device__ bool committed(std::uint64_t pos) const {
    return atomic::load_acquire(&view_.trailer(pos)->committed) == pos + 1;
  }
  __device__ bool readable(std::uint64_t pos) const {
    return committed(pos) && view_.length_ok(view_.committed_length(pos));
  }

  // SYNC POINT (release, system scope, pairs with the CPU producer's acquire
  // of the tail in writable()): our reads of the slots are done. A GPU cannot
  // wake a sleeping producer, so no sleeper count is loaded (the producer
  // polls with short sleeps while gpu_attached is set).
  __device__ void release_slots(std::uint64_t count) const {
    cursor_->tail += count;
    atomic::store_release(&view_.consumer()->position, cursor_->tail);
  }

  // The tail store of a pop, without a release fence (which costs this
  // thread ~0.6 us of PCIe, on the reply's path in a round trip). What a
  // release would order: our loads of the slot before the producer may
  // rewrite it. A pop has compared every loaded word (low-latency slots: our
  // control flow depends on all of them) or stored it to the caller's buffer
  // (plain slots), so the store below executes only after every load has
  // returned, and a GPU makes no store visible before it executes; NCCL's LL
  // protocol returns its buffers the same way. Zero-copy peeks, whose loads
  // are the caller's, release with a fence (release_slots).
  __device__ void release_copied(std::uint64_t pos) const {
    cursor_->tail = pos + 1;
    atomic::store_relaxed(&view_.consumer()->position, pos + 1);
  }

  // One warp reads `pos`'s words: lane k loads pair k of each round of 32
  // pairs, all lanes check the flags of their words against word 0's, and
  // copy their share of the bytes to `out`. The result is the same in every
  // lane (it derives from values broadcast from lane 0 and from votes).
  __device__ low_latency::Read warp_read_words(std::uint64_t pos, void* out, std::uint32_t capacity,
                                               std::uint32_t& size) const {
    const unsigned lane = threadIdx.x & 31u;
    const std::uint64_t* w = low_latency::words(view_, pos);
    const std::uint64_t slot_pairs = low_latency_words(view_.slot_size()) / 2;
    auto* dst = static_cast<std::byte*>(out);
    low_latency::Head h{};
    for (std::uint64_t base = 0;; base += 32) {
      // Round 0 loads as many pairs as the slot has (up to 32), before the
      // length is known; later rounds only what the message needs.
      const std::uint64_t pairs = base == 0 ? slot_pairs : (h.words + 1) / 2;
      const std::uint64_t k = base + lane;
      std::uint64_t a = 0;
      std::uint64_t b = 0;
      if (k < pairs) low_latency::load_pair(w + 2 * k, a, b);
      if (base == 0) {
        h = low_latency::head(view_, pos, __shfl_sync(kFullWarp, a, 0));
        if (h.state != low_latency::Read::ready) return h.state;
      }
      const std::uint64_t x[2] = {a, b};
      bool mine = true;
      for (unsigned j = 0; j < 2; ++j) {
        const std::uint64_t word_index = 2 * k + j;
        if (word_index == 0 || word_index >= h.words) continue;
        mine = low_latency::take(h, word_index, x[j], dst, h.length <= capacity) && mine;
      }
      if (!__all_sync(kFullWarp, mine)) return low_latency::Read::not_ready;
      if (2 * (base + 32) >= h.words) break;
    }
    size = h.length;
    return h.length <= capacity ? low_latency::Read::ready : low_latency::Read::too_large;
  }

  // One thread's pop against a deadline its caller took. Polls the one word,
  // then reads length and payload: the fewest dependent PCIe round trips a
  // message can cost.
  __device__ Status pop_until(void* out, std::uint32_t capacity, std::uint32_t& size,
                              Deadline deadline) const {
    const std::uint64_t pos = cursor_->tail;
    if (view_.low_latency()) return pop_words(pos, out, capacity, size, deadline);
    if (const Status st = wait_committed(pos, deadline); st != Status::ok) return st;
    const std::uint32_t length = view_.committed_length(pos);
    if (!view_.length_ok(length)) return Status::corrupt;
    size = length;
    if (length > capacity) return Status::too_large;
    copy_bytes(out, view_.payload(pos), length);
    release_copied(pos);  // every loaded byte was stored to `out`: no fence needed
    return Status::ok;
  }

  // One thread waits until `pos` is committed: ok, or timeout.
  __device__ Status wait_committed(std::uint64_t pos, Deadline d) const {
    return poll_until(d, [&](Status&) { return committed(pos); });
  }

  __device__ std::uint64_t wait_data(Deadline d, Status& st) const {
    std::uint64_t n = 0;
    st = poll_until(d, [&](Status& s) {
      n = view_.readable(*cursor_, 1, s);
      return n != 0 || s == Status::corrupt;
    });
    return st == Status::ok ? n : 0;
  }

  // Low-latency slots: each poll loads the whole (small) message at once, so
  // the poll that sees it is the read.
  __device__ Status pop_words(std::uint64_t pos, void* out, std::uint32_t capacity,
                              std::uint32_t& size, Deadline deadline) const {
    Backoff backoff;
    for (;;) {
      std::uint32_t length = 0;
      switch (low_latency::read(view_, pos, out, capacity, length)) {
        case low_latency::Read::ready:
          size = length;
          release_copied(pos);
          return Status::ok;
        case low_latency::Read::too_large:
          size = length;
          return Status::too_large;
        case low_latency::Read::corrupt:
          return Status::corrupt;
        case low_latency::Read::not_ready:
          break;
      }
      if (deadline.passed()) return Status::timeout;
      backoff.pause();
    }
  }

  __device__ DeviceClaim first_ready(Deadline d) const {
    DeviceClaim c;
    if (view_.low_latency()) {
      c.status = Status::unsupported;
      return c;
    }
    Status st = Status::ok;
    const std::uint64_t n = wait_data(d, st);
    c.first = cursor_->tail;
    c.count = static_cast<std::uint32_t>(n);
    c.status = n != 0 ? Status::ok : st;
    return c;
  }

  // Plain slots, one warp: lane 0 polls `committed`; then every lane loads
  // 16 bytes of the slot's first 512 and lane 0 the length, all at once (the
  // loads do not depend on the length: the slot's bytes up to its trailer
  // may be read whatever the message's size), and what is left of a longer
  // message after that.
  __device__ Status warp_pop_plain(void* out, std::uint32_t capacity, std::uint32_t& size,
                                   Deadline deadline) const {
    const unsigned lane = threadIdx.x & 31u;
    const std::uint64_t pos = cursor_->tail;
    Status st = Status::ok;
    if (lane == 0) st = wait_committed(pos, deadline);
    st = static_cast<Status>(__shfl_sync(kFullWarp, static_cast<int>(st), 0));
    if (st != Status::ok) return st;
    __syncwarp();  // the lanes' loads below come after lane 0's acquire
    const std::byte* src = view_.payload(pos);
    // Whole vectors up to the trailer: a slot of 8 bytes still has 16 (and
    // every slot a multiple of 32) before it.
    const std::uint64_t vectors = (view_.slot_size() + 15) / 16;
    uint4 v{};
    if (lane < vectors) v = *reinterpret_cast<const uint4*>(src + 16ull * lane);
    std::uint32_t length = 0;
    if (lane == 0) length = view_.committed_length(pos);
    length = __shfl_sync(kFullWarp, length, 0);
    if (!view_.length_ok(length)) return Status::corrupt;
    size = length;
    if (length > capacity) return Status::too_large;
    auto* dst = static_cast<std::byte*>(out);
    const std::uint64_t at = 16ull * lane;
    if (at + 16 <= length && (reinterpret_cast<std::uintptr_t>(dst) & 15) == 0) {
      *reinterpret_cast<uint4*>(dst + at) = v;
    } else if (at < length) {
      const auto* b = reinterpret_cast<const std::byte*>(&v);
      for (std::uint64_t i = 0; i < 16 && at + i < length; ++i) dst[at + i] = b[i];
    }
    if (length > 512) group_copy(dst + 512, src + 512, length - 512, lane, 32);
    // Every lane's loads are done: their values were stored to `out` (a
    // store cannot execute before its data has arrived). So, as in
    // release_copied(), the tail store needs no fence on the reply's path.
    __syncwarp();
    if (lane == 0) release_copied(pos);
    __syncwarp();
    return Status::ok;
  }

  friend class GridReader;

  SpscView view_;
  SpscConsumerCursor* cursor_;
};

// ---------------------------------------------------------------------------
// SPSC, a grid as the consumer: the blocks of one grid read one ring
// together, each a batch of slots at a time, to load at the rate of the
// whole link (one block's loads reach about 0.8 of it on an H100).
//
// Block b of a grid of G blocks reads batches b, b + G, b + 2G, ... of
// `batch` slots each, counted from `from`, the consumer's position before
// the launch (GpuSide::position() on the host), until `from + messages`.
// A block waits until its whole batch is committed, reads it in place, and
// hands it back with release(), which waits until the batch before it has
// been handed back: the tail moves in ring order, one publication per batch.
// Every thread of the block calls next() and release(). The ring must hold
// a batch (batch <= capacity); with room for G batches all blocks read at
// once. A block that times out (in next() or release()) leaves its batch
// unreleased, and the blocks after it time out in turn: the kernel ends
// with the tail after the last batch handed back.
class GridReader {
 public:
  __device__ GridReader(const SpscDeviceConsumer& rx, std::uint64_t from, std::uint64_t messages,
                        std::uint32_t batch)
      : rx_(rx),
        next_(from + std::uint64_t{blockIdx.x} * batch),
        end_(from + messages),
        stride_(std::uint64_t{gridDim.x} * batch),
        batch_(batch) {}

  // This block's next batch; count 0 when the grid's share is all taken
  // (status ok) or on timeout / corrupt.
  __device__ DeviceClaim next(std::uint64_t timeout_ns) {
    __shared__ unsigned missing;
    DeviceClaim c;
    c.first = next_;
    if (rx_.view_.low_latency()) {  // slots are lent in place: plain slots only
      c.status = Status::unsupported;
      return c;
    }
    if (next_ >= end_ || batch_ == 0 || batch_ > rx_.view_.capacity()) {
      c.status = next_ >= end_ ? Status::ok : Status::too_large;
      return c;
    }
    const std::uint64_t left = end_ - next_;
    const auto n = static_cast<std::uint32_t>(left < batch_ ? left : batch_);
    const Deadline deadline = Deadline::after(timeout_ns);
    const unsigned rank = flat_thread();
    Backoff backoff;
    for (;;) {
      __syncthreads();
      if (rank == 0) missing = 0;
      __syncthreads();
      // Lane-parallel checks of every slot: producers that publish slots
      // in parallel (a GPU block) do not publish them in order.
      for (std::uint32_t i = rank; i < n; i += block_threads()) {
        if (!rx_.readable(next_ + i)) atomicAdd(&missing, 1u);
      }
      __syncthreads();
      if (missing == 0) break;
      bool late = false;
      if (rank == 0) late = deadline.passed();
      if (__syncthreads_or(late)) {
        c.status = Status::timeout;
        return c;
      }
      if (rank == 0) backoff.pause();
    }
    c.count = n;
    c.status = Status::ok;
    next_ += stride_;
    return c;
  }

  __device__ const SpscView& view() const { return rx_.view(); }
  __device__ ReadSlot slot(const DeviceClaim& c, std::uint32_t i) const { return rx_.slot(c, i); }

  // Hands the batch back once the one before it is: ok, or timeout (the
  // batch stays unreleased).
  __device__ Status release(const DeviceClaim& c, std::uint64_t timeout_ns) {
    __shared__ Status shared;
    __syncthreads();  // every thread's reads of the batch are done
    if (flat_thread() == 0) {
      // SYNC POINT (acquire, pairs with the release below by the block that
      // handed back the batch before ours): its reads are done, so our
      // publication covers them too.
      shared = poll_until(Deadline::after(timeout_ns), [&](Status&) {
        return atomic::load_acquire(&rx_.cursor_->tail) == c.first;
      });
      if (shared == Status::ok) {
        atomic::store_release(&rx_.cursor_->tail, c.first + c.count);
        // SYNC POINT (release, system scope, pairs with the producer's
        // acquire of the tail): the slots below it may be rewritten.
        atomic::store_release(&rx_.view_.consumer()->position, c.first + c.count);
      }
    }
    __syncthreads();
    return shared;
  }

 private:
  SpscDeviceConsumer rx_;
  std::uint64_t next_;
  std::uint64_t end_;
  std::uint64_t stride_;
  std::uint32_t batch_;
};

// ---------------------------------------------------------------------------
// MPMC, GPU agents of one device on one side. Any number of warps claim on
// the side's counter (device memory, or the segment's own with host-native
// atomics); lanes test the slots' turns in parallel, then lane 0 claims the
// leading run with one CAS. Each slot is published (or released) by the lane
// that holds it.
class MpmcDeviceSide {
 public:
  __device__ explicit MpmcDeviceSide(const MpmcSideRef& r)
      : view_(r.base, r.geometry), counter_(r.counter) {}

  __device__ const MpmcView& view() const { return view_; }
  __device__ std::byte* payload(std::uint64_t position) const { return view_.payload(position); }

  // ---- producers ----
  // Claims 1..min(max, 32) consecutive free slots for the warp.
  __device__ DeviceClaim warp_claim_write(std::uint32_t max, std::uint64_t timeout_ns) const {
    return warp_claim(max, Deadline::after(timeout_ns), /*reading=*/false);
  }
  __device__ void set_size(const DeviceClaim& c, std::uint32_t i, std::uint32_t size) const {
    view_.set_length(c.first + i, size <= view_.slot_size()
                                      ? size
                                      : static_cast<std::uint32_t>(view_.slot_size()));
  }
  // Lane i < c.count publishes slot i (all lanes call).
  __device__ void warp_commit(const DeviceClaim& c) const {
    const unsigned lane = threadIdx.x & 31u;
    __syncwarp();
    if (lane < c.count) {
      const std::uint64_t pos = c.first + lane;
      atomic::store_relaxed(&view_.trailer(pos)->flags, std::uint32_t{0});
      // SYNC POINT (release, system scope, pairs with the consumers' acquire
      // of `committed`): the slot's payload is visible.
      atomic::store_release(&view_.trailer(pos)->committed, pos + 1);
    }
    __syncwarp();
  }
  // One thread alone: claim, copy, publish.
  __device__ Status push(const void* data, std::uint32_t size, std::uint64_t timeout_ns) const {
    if (size > view_.slot_size()) return Status::too_large;
    const Deadline d = Deadline::after(timeout_ns);
    Backoff backoff;
    for (;;) {
      Status st = Status::ok;
      const MpmcRange r = view_.claim_write_on(counter_, 1, st);
      if (r.count != 0) {
        copy_bytes(view_.payload(r.first), data, size);
        view_.set_length(r.first, size);
        view_.commit(r);
        return Status::ok;
      }
      if (st == Status::corrupt) return st;
      if (d.passed()) return Status::timeout;
      backoff.pause();
    }
  }

  // ---- consumers ----
  // Claims 1..min(max, 32) consecutive readable slots for the warp. A run
  // never holds the slot of an aborted claim: such a slot is claimed alone,
  // released, and passed over. One deadline for the whole call, however many
  // such slots it passes over: a producer that aborts claims (or a peer that
  // writes skipped slots) cannot keep the kernel here past it.
  __device__ DeviceClaim warp_claim_read(std::uint32_t max, std::uint64_t timeout_ns) const {
    const Deadline d = Deadline::after(timeout_ns);
    for (;;) {
      const WarpClaim c = warp_claim(max, d, /*reading=*/true);
      if (c.count == 0 || !c.skipped) return c;
      if ((threadIdx.x & 31u) == 0) release_slot(c.first);
      __syncwarp();
      // Passing over skipped slots is progress, not a reason to wait on:
      // with the deadline gone, the caller hears so (and may call again).
      if (d.warp_passed()) return DeviceClaim{0, 0, Status::timeout};
    }
  }
  __device__ ReadSlot slot(const DeviceClaim& c, std::uint32_t i) const {
    return view_.read_slot(c.first + i);
  }
  // Lane i < count releases slot i (all lanes call, after their reads).
  __device__ void warp_release(const DeviceClaim& c, std::uint32_t count) const {
    const unsigned lane = threadIdx.x & 31u;
    __syncwarp();
    if (lane < count && lane < c.count) release_slot(c.first + lane);
    __syncwarp();
  }

 private:
  // SYNC POINT (release, system scope, pairs with the producers' acquire of
  // `released`): our reads of the slot are done.
  __device__ void release_slot(std::uint64_t pos) const {
    atomic::store_release(&view_.trailer(pos)->released, pos + view_.capacity());
  }

  // The warp's claim, and for a reader whether it is one skipped slot (lane
  // 0's reading, so every lane agrees).
  struct WarpClaim : DeviceClaim {
    bool skipped = false;
  };

  __device__ WarpClaim warp_claim(std::uint32_t max, Deadline d, bool reading) const {
    const unsigned lane = threadIdx.x & 31u;
    if (max > 32) max = 32;
    WarpClaim c;
    if (max == 0) return c;
    Backoff backoff;
    std::uint64_t pos = atomic::load_relaxed(counter_);
    pos = __shfl_sync(kFullWarp, pos, 0);
    for (;;) {
      // Lanes test their slot's turn in parallel (one PCIe load each); a
      // reader's run stops before a skipped slot, or is that slot alone.
      bool ok =
          lane < max && (reading ? view_.readable_at(pos + lane) : view_.writable_at(pos + lane));
      // Lane 0 read the first slot's turn (acquire), so its reading of the
      // slot's flags is the one the warp goes by.
      const bool first_skipped =
          __shfl_sync(kFullWarp, static_cast<int>(lane == 0 && reading && ok && view_.skipped(pos)),
                      0) != 0;
      if (reading && ok && lane != 0) ok = !view_.skipped(pos + lane);
      const unsigned not_ok = __ballot_sync(kFullWarp, !ok);
      unsigned run = not_ok == 0 ? 32u : static_cast<unsigned>(__ffs(not_ok) - 1);
      if (run != 0 && first_skipped) run = 1;
      std::uint64_t next = pos;
      bool claimed = false;
      if (lane == 0) {
        if (run != 0) {
          claimed = atomic::compare_exchange(counter_, next, pos + run);
        } else {
          next = atomic::load_relaxed(counter_);
        }
      }
      claimed = __shfl_sync(kFullWarp, claimed, 0);
      next = __shfl_sync(kFullWarp, next, 0);
      if (claimed) {
        c.first = pos;
        c.count = run;
        c.status = Status::ok;
        c.skipped = first_skipped;
        return c;
      }
      // Whether there was nothing to take or other agents took it first, the
      // call's one deadline ends the wait.
      if (d.warp_passed()) {
        c.status = Status::timeout;
        return c;
      }
      if (run == 0 && next == pos) {
        // Nothing to take at the counter: full (writer) or empty (reader).
        if (lane == 0) backoff.pause();
        __syncwarp();
        next = __shfl_sync(kFullWarp, atomic::load_relaxed(counter_), 0);
      }
      pos = next;
    }
  }

  MpmcView view_;
  std::uint64_t* counter_;
};

}  // namespace shmring::cuda
