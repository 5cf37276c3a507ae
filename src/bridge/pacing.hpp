// How a bridge loop waits when it has nothing to do, and how it reports.
// An idle loop spins for a short while (the next message usually follows
// soon), then blocks in the kernel on what it waits for: the network (UCX's
// event fd) or the ring (its futex). A ring and a socket cannot share one
// wait, so a sender that waits for both blocks on the network in short steps.
#pragma once

#include <sched.h>

#include <chrono>
#include <cstdint>
#include <functional>
#include <string>

#include "shmring/bridge.hpp"

namespace shmring::bridge::detail {

class IdlePacer {
 public:
  explicit IdlePacer(std::chrono::microseconds spin) : spin_(spin) {}

  // Call once per loop turn with whether the turn did anything; true when
  // the loop has spun idle long enough and should block (in the kernel, on
  // whatever it waits for) rather than poll again.
  bool should_block(bool busy) noexcept {
    if (busy) {
      idle_ = false;
      return false;
    }
    const auto now = std::chrono::steady_clock::now();
    if (!idle_) {
      idle_ = true;
      idle_since_ = now;
      return false;
    }
    if (now - idle_since_ >= spin_) return true;
    // Spinning, but never against work that waits for this core (a bridge
    // often shares cores with the producer and consumer it serves); with
    // nothing else runnable the yield returns at once.
    sched_yield();
    return false;
  }

 private:
  std::chrono::microseconds spin_;
  bool idle_ = false;
  std::chrono::steady_clock::time_point idle_since_{};
};

class StatsTicker {
 public:
  StatsTicker(std::chrono::milliseconds interval,
              const std::function<void(const BridgeStats&)>& callback)
      : interval_(interval),
        callback_(callback),
        next_(std::chrono::steady_clock::now() + interval) {}

  void maybe_report(const BridgeStats& stats) {
    if (interval_.count() <= 0 || !callback_) return;
    const auto now = std::chrono::steady_clock::now();
    if (now < next_) return;
    next_ = now + interval_;
    callback_(stats);
  }

 private:
  std::chrono::milliseconds interval_;
  const std::function<void(const BridgeStats&)>& callback_;
  std::chrono::steady_clock::time_point next_;
};

inline void log_line(const LogFn& log, const std::string& line) {
  if (log) log(line);
}

}  // namespace shmring::bridge::detail
