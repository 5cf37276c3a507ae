// Waiting without burning a core: spin, then yield, then sleep on a futex
// word in the segment (DESIGN principle 7).
#pragma once

#include <chrono>
#include <cstdint>

namespace shmring {

// How long a blocking call polls before it sleeps. The defaults spin for a
// few microseconds (a peer that answers at once is caught without a system
// call) and yield a few dozen times before the futex.
struct WaitPolicy {
  std::uint32_t spin_iterations = 4000;
  std::uint32_t yield_iterations = 32;
};

namespace futex {

// Sleeps while *word == expected, until woken, interrupted or `timeout`
// passes. Shared, not FUTEX_PRIVATE: the word lives in a segment that several
// processes map. Returns immediately if *word != expected.
void wait(std::uint32_t* word, std::uint32_t expected, std::chrono::nanoseconds timeout) noexcept;

// Wakes every sleeper on `word`.
void wake_all(std::uint32_t* word) noexcept;

// Bumps the notify word (so a sleeper about to wait on the old value does
// not), then wakes every sleeper on it.
void notify_all(std::uint32_t* word) noexcept;

}  // namespace futex
}  // namespace shmring
