// What the broadcast suites share: a broadcast segment of a test's own.
#pragma once

#include <cstdint>
#include <string_view>

#include "shmring/broadcast_view.hpp"
#include "shmring/segment.hpp"
#include "test_support.hpp"

namespace shmring::test {

inline CreateOptions broadcast_options(std::uint32_t subscribers, Delivery delivery,
                                       std::uint64_t capacity, std::uint64_t slot) {
  CreateOptions o;
  o.kind = RingKind::broadcast;
  o.subscribers = subscribers;
  o.delivery = delivery;
  o.capacity = capacity;
  o.slot_size = slot;
  return o;
}

// A broadcast segment named after the test (and `suffix`), unlinked at the end.
struct BroadcastRing {
  explicit BroadcastRing(const CreateOptions& o, std::string_view suffix = "ring")
      : shm(suffix), segment(Segment::create(shm.name(), o)) {}
  ~BroadcastRing() { Segment::unlink(shm.name()); }
  BroadcastView view() const { return BroadcastView(segment.base(), segment.geometry()); }
  UniqueShm shm;
  Segment segment;
};

}  // namespace shmring::test
