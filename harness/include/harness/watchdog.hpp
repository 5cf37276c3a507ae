// When a waiting loop should give up instead of hanging: its peer is gone,
// or nothing has moved for too long. The clock is read only once a wait has
// come back empty, never on the path that makes progress.
#pragma once

#include <sched.h>

#include <chrono>
#include <cstdint>
#include <functional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>

#include "shmring/atomic.hpp"
#include "shmring/status.hpp"

namespace shmring::harness {

class Watchdog {
 public:
  using Clock = std::chrono::steady_clock;
  // False once the peer (a process, a thread, the run) is gone or aborted.
  using Alive = std::function<bool()>;
  enum class Verdict { keep_waiting, peer_gone, stalled };

  explicit Watchdog(std::chrono::nanoseconds limit, Alive alive = {})
      : limit_(limit), alive_(std::move(alive)) {}

  void progress() noexcept { idle_since_ = Clock::time_point{}; }

  // After an attempt that moved nothing. The idle time counts from the first
  // such attempt after progress().
  Verdict idle() {
    if (alive_ && !alive_()) return Verdict::peer_gone;
    const auto now = Clock::now();
    if (idle_since_ == Clock::time_point{}) idle_since_ = now;
    return now - idle_since_ > limit_ ? Verdict::stalled : Verdict::keep_waiting;
  }

  // idle() for a loop that reports why it stops: "" to keep waiting, else a
  // sentence naming what it was `waiting_for`.
  std::string idle(std::string_view waiting_for) {
    switch (idle()) {
      case Verdict::keep_waiting:
        return {};
      case Verdict::peer_gone:
        return "the peer process exited while we waited for " + std::string(waiting_for);
      case Verdict::stalled:
        break;
    }
    return "no progress for " + std::to_string(idle_ms()) + " ms while waiting for " +
           std::string(waiting_for);
  }

  std::int64_t idle_ms() const {
    if (idle_since_ == Clock::time_point{}) return 0;
    return std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - idle_since_)
        .count();
  }

 private:
  std::chrono::nanoseconds limit_;
  Alive alive_;
  Clock::time_point idle_since_{};
};

// Repeats `attempt`, one blocking ring call with a timeout, until it
// succeeds: a claim or a peek (returned, once it is not empty), or a copy
// call returning a Status. A timeout only asks the watchdog whether to go on
// waiting; any other failure, or the watchdog giving up, throws
// std::runtime_error naming the `op` ("claim", "push", "peek", "pop") and the
// `ring` ("data").
template <class Attempt>
auto await(Watchdog& wd, std::string_view op, std::string_view ring, Attempt&& attempt) {
  const std::string what = std::string(op) + " on the " + std::string(ring) + " ring";
  for (;;) {
    auto r = attempt();
    constexpr bool copy_call = std::is_same_v<decltype(r), Status>;
    Status st = Status::ok;
    if constexpr (copy_call) {
      st = r;
    } else if (r.empty()) {
      st = r.status();
    }
    if (st == Status::ok) {
      wd.progress();
      if constexpr (!copy_call)
        return r;
      else
        return;
    }
    if (st != Status::timeout) throw std::runtime_error(what + " failed: " + to_string(st));
    const bool writing = op == "claim" || op == "push";
    if (auto why = wd.idle(std::string(writing ? "free slots" : "messages") + " in the " +
                           std::string(ring) + " ring");
        !why.empty()) {
      throw std::runtime_error(why);
    }
  }
}

// Backoff for a loop of try_ calls, with a Watchdog: failed_attempt() pauses
// the core (or yields every `yield_every` failures, where agents share a
// core; 0: never) and asks the watchdog every `check_every` failures in a
// row. Both are powers of two (masks, no division in the spin loop). False:
// give up.
class Spinner {
 public:
  Spinner(std::chrono::nanoseconds limit, Watchdog::Alive alive, std::uint64_t yield_every = 0,
          std::uint64_t check_every = 4096)
      : watchdog_(limit, std::move(alive)),
        yield_mask_(yield_every - 1),
        check_mask_(check_every - 1) {}

  bool failed_attempt() noexcept {
    ++fails_;
    if (yield_mask_ != ~std::uint64_t{0} && (fails_ & yield_mask_) == 0) {
      ::sched_yield();
    } else {
      atomic::cpu_relax();
    }
    if ((fails_ & check_mask_) != 0) return true;
    verdict_ = watchdog_.idle();
    return verdict_ == Watchdog::Verdict::keep_waiting;
  }
  void progress() noexcept {
    total_ += fails_;
    fails_ = 0;
    watchdog_.progress();
  }
  // Failed attempts since construction: how often the loop found nothing
  // to do (a consumer an empty ring, a producer a full one).
  std::uint64_t failures() const noexcept { return total_ + fails_; }
  // Why the last failed_attempt() said to give up.
  bool stalled() const noexcept { return verdict_ == Watchdog::Verdict::stalled; }

 private:
  Watchdog watchdog_;
  std::uint64_t yield_mask_;  // all ones: never yield
  std::uint64_t check_mask_;
  std::uint64_t fails_ = 0;
  std::uint64_t total_ = 0;
  Watchdog::Verdict verdict_ = Watchdog::Verdict::keep_waiting;
};

}  // namespace shmring::harness
