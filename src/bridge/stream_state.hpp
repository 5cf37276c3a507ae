// What a receiving bridge must remember across its own restarts to deliver
// exactly once: which sender stream fills its ring, and which stream position
// went into which ring position when that stream began. Everything after
// that follows from the ring's head, which the ring itself keeps: the bridge
// is the ring's only producer, so
//   committed_through = base_stream_position + (head - base_ring_position).
// Nothing has to be written per message, so a crash between committing into
// the ring and recording it cannot happen.
//
// Kept in a small file next to the ring: /dev/shm/<ring>.bridge-state.
#pragma once

#include <cstdint>
#include <optional>
#include <string>

namespace shmring::bridge::detail {

struct StreamState {
  std::uint64_t ring_created_ns = 0;    // the receiving ring this belongs to
  std::uint64_t stream_created_ns = 0;  // the sender's ring (its identity)
  std::uint64_t stream_creator = 0;
  std::uint64_t base_stream_position = 0;
  std::uint64_t base_ring_position = 0;
};

std::string stream_state_path(const std::string& ring);

// nullopt when there is no state file; throws BridgeError(ring) naming the
// file when it exists but is not a regular file of this user's, cannot be
// read or is not a valid state.
std::optional<StreamState> load_stream_state(const std::string& ring);

// Replaces the state atomically (a fresh temporary file, then a rename).
void store_stream_state(const std::string& ring, const StreamState& state);

}  // namespace shmring::bridge::detail
