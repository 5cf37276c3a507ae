// The ring as shmringsink and the buffers of its pool share it, and the pool
// that lets upstream write frames straight into the ring's slots.
//
// A broadcast producer holds one write claim at a time and publishes in
// position order (broadcast_ring.hpp, in_order.hpp). So the pool lends a slot
// only when no other buffer of it is out: acquire claims the slot at the
// head and wraps its payload in the buffer's memory; rendering that buffer
// writes the slot header and publishes the claim, with no copy. Otherwise
// (a queue or a decoder upstream holds buffers, the sink has not made the
// ring yet, the ring is lossy) acquire hands out ordinary memory, which
// render copies in once. Lending a slot while another buffer is out would
// not save that copy: the other buffer, rendered first, would find the slot
// claimed ahead of it.
//
// Buffers are rendered in the order upstream pushes them, which need not be
// the order it acquired them. Whatever is rendered while the lent slot's
// buffer has not been, the sink publishes the lent slot as a skip slot (a
// header that readers pass over; the payload, the buffer's memory, is not
// touched) and writes after it. A slot buffer freed unrendered gives its
// claim up. A slot whose buffer is still alive (published, and kept
// upstream, or skipped) is never written again until that buffer is freed:
// the ring's next lap publishes a skip slot there instead. So nothing a
// buffer's owner can see ever changes under it, and since no slot is lent
// while a buffer is out, at most one slot is held that way.
#pragma once

#include <gst/gst.h>

#include <cstddef>
#include <cstdint>
#include <memory>
#include <mutex>
#include <vector>

#include "shmring/broadcast_ring.hpp"
#include "shmring/segment.hpp"
#if SHMRING_HAVE_CUDA
#include "shmring/cuda/registration.hpp"
#endif

namespace shmring::gst {

struct SlotLease;

// The ring of one shmringsink run. The sink's state and every slot buffer
// hold it: a buffer upstream still holds after the sink stopped keeps the
// mapping its memory points into.
struct SinkRing {
  Segment segment;  // first: unmapped last
#if SHMRING_HAVE_CUDA
  shmring::cuda::Registration registration;
#endif
  std::mutex mu;  // the producer and everything below: one thread at a time
  BroadcastProducer producer;
  WriteClaim claim;                  // the slot lent to `claim_owner`
  SlotLease* claim_owner = nullptr;  // the slot buffer not yet rendered, or none
  std::vector<std::uint32_t> live;   // per slot index: slot buffers alive on it
  std::size_t out = 0;               // buffers of the pools acquired and not yet back
  std::size_t frame_size = 0;        // raw video: a frame of the caps; else 0 (no pool)
  bool lossy = false;
  bool stopped = false;  // the sink stopped: the producer is gone

  std::size_t index(std::uint64_t position) const noexcept {
    return static_cast<std::size_t>(position % live.size());
  }
};

// What a slot buffer's memory holds: the claimed position in its ring.
struct SlotLease {
  std::shared_ptr<SinkRing> ring;
  std::uint64_t position;
};

// The lease of `mem` if it is the memory of a slot buffer, else nullptr.
SlotLease* slot_lease(GstMemory* mem) noexcept;

// Writes a skip slot into the claim's first slot and publishes it (ring.mu
// held): readers pass over it, the payload is left as it is.
void publish_skip(SinkRing& ring, WriteClaim& claim) noexcept;

// The pool shmringsink proposes for raw video: buffers of the configured
// size, each a slot of the ring where one can be lent (see above), ordinary
// memory otherwise.
GstBufferPool* slot_pool_new(std::shared_ptr<SinkRing> ring);

}  // namespace shmring::gst
