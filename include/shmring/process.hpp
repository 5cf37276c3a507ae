// Process identity and liveness, for the role records in a segment.
#pragma once

#include <cstdint>
#include <optional>

namespace shmring::process {

struct Identity {
  std::uint32_t pid = 0;
  std::uint64_t start_time = 0;  // clock ticks since boot, /proc/<pid>/stat field 22
};

// The calling process (read afresh each call: a forked child is someone else).
Identity self() noexcept;

// The start time of `pid`, or nothing if no such process exists (or it is a
// zombie: it has exited and only waits to be reaped).
std::optional<std::uint64_t> start_time(std::uint32_t pid) noexcept;

// The word an OwnerRecord holds: pid in the low half, the low 32 bits of the
// start time in the high half. 0 is "nobody".
constexpr std::uint64_t pack(const Identity& id) noexcept {
  return std::uint64_t{id.pid} | ((id.start_time & 0xffffffffull) << 32);
}
constexpr std::uint32_t pid_of(std::uint64_t packed) noexcept {
  return static_cast<std::uint32_t>(packed);
}

// Whether the process recorded in `packed` still runs. A pid that now belongs
// to a process with another start time counts as dead.
bool alive(std::uint64_t packed) noexcept;

}  // namespace shmring::process
