// Is the other side of a ring still there? Cold checks (lock probes) behind
// Status::peer_dead and close-on-exit (handle.hpp).
#pragma once

#include "shmring/segment.hpp"

namespace shmring::detail {

// SPSC, and the producer of a broadcast ring: the `producer` (or consumer)
// role was held by a process that died:
// its identity is still recorded but nobody holds its lock, and no GPU agent
// is attached to that side. A role given back cleanly, or never taken, is
// not "died": a peer may still come.
bool role_holder_died(const Segment& segment, bool producer) noexcept;

// MPMC: how the CPU handles of the `producer` (or consumer) side stand, by
// their claim records: `recorded` when any record names a holder, `live`
// when one of them still holds its lock (or a GPU agent is attached).
struct SidePeers {
  bool recorded = false;
  bool live = false;
};
SidePeers mpmc_side_peers(const Segment& segment, bool producer) noexcept;

}  // namespace shmring::detail
