// What the broadcast suites share: their messages' size, their deadline, and
// a broadcast segment of a test's own.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "shmring/broadcast_view.hpp"
#include "shmring/segment.hpp"
#include "stress_message.hpp"
#include "test_support.hpp"

namespace shmring::test {

// Messages are stress_message.hpp's: a header and up to kMaxPayload bytes,
// so that every slot can hold the largest.
inline constexpr std::size_t kMaxPayload = 200;
inline constexpr std::size_t kSlot = msg::kHeaderSize + kMaxPayload;
// Generous: a run that needs it has hung, not slowed down.
inline constexpr std::chrono::seconds kDeadline{60};

inline CreateOptions broadcast(std::uint32_t subscribers, Delivery delivery,
                               std::uint64_t capacity = 16, std::uint64_t slot = kSlot) {
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

// What the broadcast suites name unqualified: `using namespace
// test::broadcast_suite;` in a suite's own namespace.
namespace broadcast_suite {
using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;
namespace msg = test::msg;
using test::broadcast;
using test::kDeadline;
using test::kMaxPayload;
using test::kSlot;
using Ring = BroadcastRing;
}  // namespace broadcast_suite

}  // namespace shmring::test
