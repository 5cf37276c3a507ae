// The one wait loop behind every blocking call: spin, yield, then sleep on
// the peer side's futex word until the deadline (DESIGN principle 7).
#pragma once

#include <sched.h>

#include <algorithm>
#include <chrono>
#include <cstdint>

#include "shmring/atomic.hpp"
#include "shmring/status.hpp"
#include "shmring/wait.hpp"

namespace shmring::detail {

using Clock = std::chrono::steady_clock;

// The longest single futex sleep. Correctness never depends on it (wake-ups
// are not lost), but a peer that cannot call futex, or one that scribbled
// over our sleeper count, must not leave us asleep until the deadline.
inline constexpr std::chrono::milliseconds kMaxSleep{50};

// The longest sleep while GPU agents hold the other side: a kernel cannot
// call futex, so we are never woken and must look again soon.
inline constexpr std::chrono::microseconds kGpuPeerSleep{50};

inline Clock::time_point deadline_after(std::chrono::nanoseconds timeout) noexcept {
  const auto now = Clock::now();
  // A huge timeout means "wait forever": clamp instead of overflowing.
  if (timeout > Clock::time_point::max() - now) return Clock::time_point::max();
  return now + std::chrono::duration_cast<Clock::duration>(timeout);
}

// A blocking call is done with anything but would_block, which at its
// deadline it reports as timeout.
inline bool not_would_block(Status s) noexcept { return s != Status::would_block; }
inline Status as_timeout(Status s) noexcept {
  return s == Status::would_block ? Status::timeout : s;
}

// try_once() -> T, with done(T) telling whether to stop; ready() is the
// seq_cst re-check that pairs with the peer's publication (see the views).
// `waiters` is our side's sleeper count, `notify` the peer side's futex word,
// `peer_gpus` the peer side's count of GPU agents.
// `stalled()` runs before each sleep: where a dead peer can hold the ring up
// (MPMC claims), it recovers what the dead hold.
template <class TryOnce, class Done, class Ready, class Stalled>
auto block_until(TryOnce&& try_once, Done&& done, Ready&& ready, std::uint32_t* waiters,
                 std::uint32_t* notify, const std::uint32_t* peer_gpus, const WaitPolicy& policy,
                 std::chrono::nanoseconds timeout, Stalled&& stalled) noexcept
    -> decltype(try_once()) {
  auto result = try_once();
  if (done(result)) return result;
  const auto deadline = deadline_after(timeout);
  for (std::uint32_t i = 0; i < policy.spin_iterations; ++i) {
    atomic::cpu_relax();
    result = try_once();
    if (done(result)) return result;
  }
  for (std::uint32_t i = 0; i < policy.yield_iterations; ++i) {
    ::sched_yield();
    result = try_once();
    if (done(result)) return result;
    if (Clock::now() >= deadline) return result;
  }
  for (;;) {
    if (stalled()) {
      result = try_once();
      if (done(result)) return result;
    }
    const auto now = Clock::now();
    if (now >= deadline) return result;
    atomic::fetch_add(waiters, std::uint32_t{1});
    // Read the notify word before the re-check: a publication after the
    // re-check bumps it, and the futex then refuses to sleep.
    const std::uint32_t seen = atomic::load_seq_cst(notify);
    if (!ready()) {
      const std::chrono::nanoseconds slice = atomic::load_relaxed(peer_gpus) != 0
                                                 ? std::chrono::nanoseconds(kGpuPeerSleep)
                                                 : std::chrono::nanoseconds(kMaxSleep);
      futex::wait(notify, seen, std::min<std::chrono::nanoseconds>(deadline - now, slice));
    }
    atomic::fetch_sub(waiters, std::uint32_t{1});
    result = try_once();
    if (done(result)) return result;
  }
}

template <class TryOnce, class Done, class Ready>
auto block_until(TryOnce&& try_once, Done&& done, Ready&& ready, std::uint32_t* waiters,
                 std::uint32_t* notify, const std::uint32_t* peer_gpus, const WaitPolicy& policy,
                 std::chrono::nanoseconds timeout) noexcept -> decltype(try_once()) {
  return block_until(try_once, done, ready, waiters, notify, peer_gpus, policy, timeout,
                     [] { return false; });
}

}  // namespace shmring::detail
