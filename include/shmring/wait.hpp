// Waiting without burning a core: spin, then yield, then sleep on a futex
// word in the segment (DESIGN principle 7).
#pragma once

#include <chrono>
#include <cstdint>

namespace shmring {

// How long a blocking call polls before it sleeps. It spins (a pause
// instruction between tries) for at most spin_time and at most
// spin_iterations tries, whichever ends first, then yields up to
// yield_iterations times, then sleeps on the futex. The spin is bounded in
// time because a pause lasts 1 ns on some processors and over 20 ns on
// others; 20 us is several times what a futex sleep and wake-up cost on an
// idle core (2-3 us measured on an x86 VM), so a peer that answers within a
// few microseconds is caught without a system call, and one that does not
// costs at most that much spinning. The wait loop also skips the spin where
// it has not been paying off, and starts out not spinning where the thread
// may run on one CPU only (a peer on that CPU cannot run while we spin;
// detail::WaitState).
struct WaitPolicy {
  std::uint32_t spin_iterations = 4000;
  std::uint32_t yield_iterations = 32;
  std::chrono::nanoseconds spin_time = std::chrono::microseconds(20);
};

// What this process's blocking calls did so far (all handles together): for
// tests and for tuning, never read on the hot path.
struct WaitStats {
  std::uint64_t sleeps = 0;  // futex sleeps entered
  // Sleeps that ended by their time limit with the awaited state already
  // there: a publication that woke nobody, caught by the short first sleep
  // (the sleeper handshake, spsc_view.hpp), or a peer that cannot call futex.
  std::uint64_t late_wakeups = 0;
  // Futex wake calls this process made for sleepers it saw counted.
  std::uint64_t futex_wakes = 0;
};
WaitStats wait_stats() noexcept;

namespace detail {

// Per handle: what the wait loop learnt about spinning here.
struct WaitState {
  static constexpr std::uint32_t kOne = 1u << 16;  // fixed point 1.0
  // How often a spin phase ended with the peer's answer (an exponentially
  // weighted average, weight 1/8, fixed point): below kSpinWorthIt the loop
  // skips the spin, except on one wait in kProbeEvery.
  std::uint32_t spin_success = kOne / 2;
  std::uint32_t waits = 0;  // waits past the first try, for probes and re-checks
  bool one_cpu = false;     // the thread may run on one CPU only (sched_getaffinity)

  static constexpr std::uint32_t kSpinWorthIt = kOne / 8;
  static constexpr std::uint32_t kProbeEvery = 16;
  static constexpr std::uint32_t kAffinityEvery = 64;

  // At attach: a thread confined to one CPU starts with spin_success 0 (no
  // spin but the probes), any other with 1/2.
  static WaitState for_this_thread() noexcept;
};

// Whether the calling thread may run on one CPU only (a system call).
bool single_cpu() noexcept;

}  // namespace detail

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
