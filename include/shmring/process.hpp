// Process identity and liveness, for the role records in a segment.
#pragma once

#include <atomic>
#include <cstdint>
#include <optional>

namespace shmring::process {

struct Identity {
  std::uint32_t pid = 0;
  std::uint64_t start_time = 0;  // clock ticks since boot, /proc/<pid>/stat field 22
};

// The calling process (read afresh each call: a forked child is someone
// else), or nothing when /proc/self/stat cannot be read (no descriptor left,
// no /proc): an identity that cannot be verified is never recorded.
std::optional<Identity> self() noexcept;

// Bumped in every child fork() makes (a pthread_atfork handler). A handle
// remembers the generation it was attached in: a different one means the
// handle was inherited by a forked child, where using it would write over
// its parent's messages. One relaxed load; the counter is only ever written
// in a child before fork() returns there.
namespace detail {
extern std::atomic<std::uint32_t> fork_generation;
}
inline std::uint32_t generation() noexcept {
  return detail::fork_generation.load(std::memory_order_relaxed);
}

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

// Whether a live process holds the lock on `byte` of the segment file open as
// `fd` (layout.hpp, lock_byte): the test for every role, good across users
// and pid namespaces. `fd` may be read-only and must hold no lock itself.
// When the kernel cannot say, the answer is yes: a live holder is never taken
// for dead.
bool lock_held(int fd, std::uint64_t byte) noexcept;

// Whether the process recorded in `packed` still runs, judged by its pid and
// start time in this pid namespace: a pid that now belongs to a process with
// another start time counts as dead. Only meaningful between processes of one
// pid namespace; roles are judged by locks instead (layout.hpp, lock_byte).
bool alive(std::uint64_t packed) noexcept;

}  // namespace shmring::process
