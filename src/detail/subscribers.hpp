// Liveness of broadcast subscribers (layout.hpp, SubscriberBlock): taking a
// block, giving it back, and telling the producer of a reliable ring that a
// block's holder died so that it stops waiting for it.
//
// A subscriber proves it lives as every other holder does: by a lock on its
// block's lock byte (lock_byte::subscriber), which the kernel drops when it
// dies. The producer never writes a subscriber's words (DESIGN principle 2):
// it records a death in the block's `evicted` word, naming the session that
// died, and the block's next holder starts a new session.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>

#include "detail/fail.hpp"
#include "detail/holding.hpp"
#include "shmring/broadcast_view.hpp"
#include "shmring/segment.hpp"

namespace shmring::detail {

// Takes a subscriber block of broadcast `segment` for the calling process:
// the first one nobody holds the lock of (never used, retired, or its holder
// died), held through `holding` (prepared here; it gives the block's lock
// back when the last reference goes). The caller then joins it
// (BroadcastView::join). nullopt with `f` set when the segment is not a
// writable broadcast ring or every block is held by a live process
// (errc::role_taken, naming how many there are).
std::optional<std::uint32_t> take_subscriber(const Segment& segment,
                                             std::shared_ptr<Holding>& holding, Failure& f);

// Leaves block `c.index` (retired: a reliable producer stops waiting for it)
// and lets its lock go. Returns true when a producer sleeps and must be woken.
bool retire_subscriber(const BroadcastView& view, const BroadcastSubscriberCursor& c,
                       std::shared_ptr<Holding>& holding) noexcept;

// Whether a live process holds block `index` (asked through `probe_fd`, the
// segment's own descriptor, which holds no locks).
bool subscriber_alive(int probe_fd, std::uint32_t index) noexcept;

// The producer of a reliable ring, before it sleeps for room: every block
// that still holds it back (active, not evicted) but whose holder died is
// evicted, so that the producer's next refresh() passes over it. Returns how
// many were. Nothing to do in a lossy ring (its producer never waits).
std::uint32_t evict_dead_subscribers(const BroadcastView& view, int probe_fd) noexcept;

}  // namespace shmring::detail
