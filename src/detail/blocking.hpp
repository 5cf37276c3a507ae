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
// `stalled()` runs before each sleep and before the call gives up: where a
// dead peer can hold the ring up (MPMC claims), it recovers what the dead
// hold, one bounded step a call, and returns true to be called again (it made
// progress, or has more to do).
//
// The deadline is looked at after every try and every step, so a call
// returns by its deadline plus the work of one step and two tries: each of
// those is bounded (MPMC: kMpmcRecoverStep positions recovered, kMpmcSkipStep
// skipped slots passed), so that is the slack, whatever the state of the ring.
// The first try runs before the clock is read, which keeps an uncontended
// call free of clock reads; it is part of the slack.
template <class TryOnce, class Done, class Ready, class Stalled>
auto block_until(TryOnce&& try_once, Done&& done, Ready&& ready, std::uint32_t* waiters,
                 std::uint32_t* notify, const std::uint32_t* peer_gpus, const WaitPolicy& policy,
                 std::chrono::nanoseconds timeout, Stalled&& stalled) noexcept
    -> decltype(try_once()) {
  auto result = try_once();
  if (done(result)) return result;
  const auto deadline = deadline_after(timeout);
  // Every phase ends at the deadline, but the loop below runs at least once:
  // a call that gives up still does one recovery step, so that callers with
  // short timeouts make progress on what the dead left.
  bool in_time = true;
  for (std::uint32_t i = 0; i < policy.spin_iterations && in_time; ++i) {
    atomic::cpu_relax();
    result = try_once();
    if (done(result)) return result;
    // A try is cheap but not free (an MPMC try may pass over a run of
    // skipped slots): thousands of spins must not outlast the deadline.
    in_time = Clock::now() < deadline;
  }
  for (std::uint32_t i = 0; i < policy.yield_iterations && in_time; ++i) {
    ::sched_yield();
    result = try_once();
    if (done(result)) return result;
    in_time = Clock::now() < deadline;
  }
  for (;;) {
    // A pass of recovery runs to its end, as the peers waiting behind it
    // need, but in bounded steps with a look at the deadline between them:
    // a long pass ends with the call's deadline instead of holding the call,
    // and goes on in a later call.
    if (stalled()) {
      while (Clock::now() < deadline && stalled()) {
      }
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
