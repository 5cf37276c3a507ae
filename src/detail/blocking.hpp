// The one wait loop behind every blocking call: spin, yield, then sleep on
// the peer side's futex word until the deadline (DESIGN principle 7).
#pragma once

#include <sched.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>

#include "shmring/atomic.hpp"
#include "shmring/claim.hpp"
#include "shmring/event.hpp"
#include "shmring/ring_view.hpp"
#include "shmring/status.hpp"
#include "shmring/wait.hpp"

namespace shmring::detail {

using Clock = std::chrono::steady_clock;

// How long a sleeper sleeps before it looks again by itself. A publisher
// stores its position with release and loads the sleeper count without a
// fence, so a sleeper that raised its count just as a publication was on its
// way may miss that one publication (spsc_view.hpp, "The sleeper
// handshake"); the store it missed is visible nanoseconds later. So the first
// sleep of a round lasts kFirstSleep, and each further one twice the last,
// up to kMaxSleep, with a re-check of the ring between: a missed wake-up
// costs at most kFirstSleep (plus the kernel's timer slack, 50 us by
// default), or twice the time the store took to become visible if that was
// longer, and a long idle wait costs about ten system calls to reach
// kMaxSleep, then one per kMaxSleep. 100 us: ten times the time a futex
// wake-up takes to run the sleeper on a busy VM (2-3 us idle), so the extra
// look is rarely the first thing to wake us, and short against what a
// sleeping peer costs anyway.
inline constexpr std::chrono::microseconds kFirstSleep{100};

// The longest single futex sleep: a peer that cannot call futex, or one that
// scribbled over our sleeper count, must not leave us asleep until the
// deadline.
inline constexpr std::chrono::milliseconds kMaxSleep{50};

// The longest sleep while GPU agents hold the other side: a kernel cannot
// call futex, so we are never woken and must look again soon.
inline constexpr std::chrono::microseconds kGpuPeerSleep{50};

// The sleep schedule of one round (tests lengthen kMaxSleep to show that
// nothing but the short first sleep rescues a missed wake-up).
struct SleepBounds {
  std::chrono::nanoseconds first = kFirstSleep;
  std::chrono::nanoseconds max = kMaxSleep;
};

extern std::atomic<std::uint64_t> g_sleeps;
extern std::atomic<std::uint64_t> g_late_wakeups;
extern std::atomic<std::uint64_t> g_futex_wakes;

// Tries between two looks at the clock while spinning: a clock read costs
// 20-80 ns (vDSO; more under some hypervisors), a pause 1-40 ns.
inline constexpr std::uint32_t kSpinClockEvery = 8;

inline Clock::time_point deadline_after(std::chrono::nanoseconds timeout,
                                        Clock::time_point now = Clock::now()) noexcept {
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

// The words a wait on one side of a ring uses: our side's sleeper count,
// the peer side's futex word, and the peer side's count of GPU agents (who
// cannot call futex, so we must look again by ourselves).
struct WaitSide {
  std::uint32_t* waiters;
  std::uint32_t* notify;
  const std::uint32_t* peer_gpus;
};
// Producers wait for room, which consumers announce.
inline WaitSide room_side(const RingView& view) noexcept {
  return {&view.producer_wait()->waiters, &view.ring_consumer()->notify,
          &view.ring_consumer()->gpu_attached};
}
// Consumers wait for data, which producers announce.
inline WaitSide data_side(const RingView& view) noexcept {
  return {&view.consumer_wait()->waiters, &view.ring_producer()->notify,
          &view.ring_producer()->gpu_attached};
}

// Wakes whoever the waiters word of `side` says waits (layout.hpp, WaitBlock):
// futex sleepers (the notify word bumped and one system call) and armed
// descriptors (a byte to each FIFO, through `signaller`). `everyone`: both,
// whatever the word says, for the rare wake-ups that must not lean on a
// sleeper's look (end of stream, recovered claims).
inline void wake(const WaitSide& side, EventSignaller& signaller, std::byte* base, WaitFor what,
                 bool everyone) noexcept {
  const std::uint32_t w = everyone ? ~std::uint32_t{0} : atomic::load_relaxed(side.waiters);
  if ((w & kFutexWaiterMask) != 0) futex::notify_all(side.notify);
  if (w >= kEventWaiter) (void)signaller.signal(base, what);
}

// Nothing holds the ring up but the peer.
inline bool never_stalled() noexcept { return false; }

// try_once() -> T, with done(T) telling whether to stop; ready() is the
// re-check that a sleeper makes after raising its count (see the views).
// `state` is what the handle learnt about spinning.
// `stalled()` runs before each sleep and before the call gives up: where a
// dead peer can hold the ring up (MPMC claims), it recovers what the dead
// hold, one bounded step a call, and returns true to be called again (it made
// progress, or has more to do).
//
// The deadline is looked at after every try and every step (while spinning,
// every kSpinClockEvery tries), so a call returns by its deadline plus the
// work of one step and a few tries: each of those is bounded (MPMC:
// kMpmcRecoverStep positions recovered, kMpmcSkipStep skipped slots passed),
// so that is the slack, whatever the state of the ring. The first try runs
// before the clock is read, which keeps an uncontended call free of clock
// reads; it is part of the slack.
template <class TryOnce, class Done, class Ready, class Stalled = bool (*)() noexcept>
auto block_until(WaitSide side, const WaitPolicy& policy, WaitState& state,
                 std::chrono::nanoseconds timeout, TryOnce&& try_once, Done&& done, Ready&& ready,
                 Stalled&& stalled = never_stalled, SleepBounds bounds = {}) noexcept
    -> decltype(try_once()) {
  std::uint32_t* const waiters = side.waiters;
  std::uint32_t* const notify = side.notify;
  const std::uint32_t* const peer_gpus = side.peer_gpus;
  auto result = try_once();
  if (done(result)) return result;
  const auto start = Clock::now();
  const auto deadline = deadline_after(timeout, start);  // one clock read, not two
  // Every phase ends at the deadline, but the loop below runs at least once:
  // a call that gives up still does one recovery step, so that callers with
  // short timeouts make progress on what the dead left.
  bool in_time = start < deadline;

  // Spin where spinning pays: not when recent spins mostly ended empty
  // (except one wait in kProbeEvery, which spins to notice when they would
  // pay again). A thread that may only run on one CPU starts out not
  // spinning (a peer on the same CPU cannot run while we spin), and so does
  // one that is confined to one CPU later (re-checked every kAffinityEvery
  // waits, a system call); a peer pinned to a core of its own answers the
  // probes, and spinning comes back.
  ++state.waits;
  if (state.waits % WaitState::kAffinityEvery == 0) {
    const bool one_cpu = single_cpu();
    if (one_cpu && !state.one_cpu) state.spin_success = 0;
    state.one_cpu = one_cpu;
  }
  const bool spin =
      in_time && policy.spin_iterations != 0 &&
      policy.spin_time > std::chrono::nanoseconds::zero() &&
      (state.spin_success >= WaitState::kSpinWorthIt || state.waits % WaitState::kProbeEvery == 0);
  if (spin) {
    const auto spin_end =
        std::min(deadline, start + std::chrono::duration_cast<Clock::duration>(policy.spin_time));
    bool caught = false;
    for (std::uint32_t i = 1; i <= policy.spin_iterations; ++i) {
      atomic::cpu_relax();
      result = try_once();
      if (done(result)) {
        caught = true;
        break;
      }
      // A try is cheap but not free (an MPMC try may pass over a run of
      // skipped slots): the clock bounds the phase, read every few tries.
      if (i % kSpinClockEvery == 0 && Clock::now() >= spin_end) break;
    }
    // Weight 1/8: a handful of waits moves the average, one odd wait does not.
    const std::uint32_t sample = caught ? WaitState::kOne : 0;
    state.spin_success = state.spin_success - state.spin_success / 8 + sample / 8;
    if (caught) return result;
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
    auto now = Clock::now();
    if (now >= deadline) return result;
    // One round: raise the count (a seq_cst read-modify-write: the re-checks
    // below cannot move above it), read the notify word before the re-check
    // (a publication after the re-check bumps it, and the futex then refuses
    // to sleep), re-check, sleep. The count stays raised for the whole
    // round, so the only publication it can miss is one already on its way
    // when it was raised: the short first sleep catches that one.
    atomic::fetch_add(waiters, kFutexWaiter);
    const std::uint32_t seen = atomic::load_seq_cst(notify);
    const bool gpu_peer = atomic::load_relaxed(peer_gpus) != 0;
    std::chrono::nanoseconds slice =
        gpu_peer ? std::min<std::chrono::nanoseconds>(bounds.first, kGpuPeerSleep) : bounds.first;
    while (!ready() && now < deadline) {
      g_sleeps.fetch_add(1, std::memory_order_relaxed);
      futex::wait(notify, seen, std::min<std::chrono::nanoseconds>(deadline - now, slice));
      if (atomic::load_seq_cst(notify) != seen) break;  // woken (or a wake-up for another)
      if (ready()) {
        // Nobody woke us, yet the ring moved: a publication that missed our
        // count, or a peer that cannot call futex.
        g_late_wakeups.fetch_add(1, std::memory_order_relaxed);
        break;
      }
      now = Clock::now();
      const std::chrono::nanoseconds cap =
          gpu_peer ? std::chrono::nanoseconds(kGpuPeerSleep) : bounds.max;
      slice = std::min(cap, slice * 2);
    }
    atomic::fetch_sub(waiters, kFutexWaiter);
    result = try_once();
    if (done(result)) return result;
  }
}

// How a blocking call of a handle ends, by what its tries return: a status
// (done with anything but would_block, which at the deadline says timeout),
// a claim (done with any claim but an empty one that would block; that one
// then says timeout) or a readiness (done when true).
struct CallEnd {
  static bool done(Status s) noexcept { return not_would_block(s); }
  static bool done(const Claim& c) noexcept { return c.status_ != Status::would_block; }
  static bool done(bool ready) noexcept { return ready; }
  static Status at_deadline(Status s) noexcept { return as_timeout(s); }
  static bool at_deadline(bool ready) noexcept { return ready; }
  template <class C>
  static C at_deadline(C claim) noexcept {
    if (claim.status_ == Status::would_block) claim.status_ = Status::timeout;
    return claim;
  }
};

// A blocking call of a handle whose core is `c`, written once for every
// ring: its tries leave the descriptor alone (QuietTries: the call waits on
// the futex), it waits for what the role waits for (room or data) as the
// handle's policy says, with `ready` as a sleeper's re-check and `stalled`
// before each sleep (block_until), and what still finds nothing at the
// deadline says so (CallEnd).
template <class Core, class TryOnce, class Ready, class Stalled>
auto wait_call_with(Core& c, std::chrono::nanoseconds timeout, TryOnce&& try_once, Ready&& ready,
                    Stalled&& stalled) noexcept -> decltype(try_once()) {
  const QuietTries quiet(c);
  const WaitSide side = c.waits_for() == WaitFor::room ? room_side(c.view) : data_side(c.view);
  return CallEnd::at_deadline(block_until(
      side, c.policy, c.wait_state, timeout, try_once,
      [](const auto& result) { return CallEnd::done(result); }, ready, stalled));
}
// The same, ready when the handle's descriptor would be: progress, or the end
// of the stream.
template <class Core, class TryOnce, class Stalled = bool (*)() noexcept>
auto wait_call(Core& c, std::chrono::nanoseconds timeout, TryOnce&& try_once,
               Stalled&& stalled = never_stalled) noexcept -> decltype(try_once()) {
  return wait_call_with(
      c, timeout, try_once, [&c] { return c.event_ready(); }, stalled);
}

}  // namespace shmring::detail
