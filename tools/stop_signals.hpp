// Stop signals (SIGINT, SIGTERM) taken synchronously, for the command-line tools.
//
// A handler that sets a flag runs at an arbitrary point, and under a sanitizer it may
// be deferred until the runtime's next intercepted call, so a loop that sleeps and
// checks the flag can miss it for as long as it sleeps. Instead the signals stay
// blocked and the tool waits for them with sigtimedwait in place of its sleep: a
// signal that arrives while the tool is busy stays pending and ends the next wait.
#pragma once

#include <pthread.h>
#include <signal.h>

#include <chrono>
#include <ctime>
#include <initializer_list>

namespace shmring::tools {

class StopSignals {
 public:
  // Blocks `signals` in the calling thread and in the threads it starts from now on.
  explicit StopSignals(std::initializer_list<int> signals) {
    sigemptyset(&set_);
    for (const int s : signals) sigaddset(&set_, s);
    pthread_sigmask(SIG_BLOCK, &set_, &previous_);
  }
  StopSignals(const StopSignals&) = delete;
  StopSignals& operator=(const StopSignals&) = delete;

  // A stop that arrived after the last wait has done its work (the tool is ending), so
  // it is taken here rather than delivered on unblocking, where it would kill the
  // process and turn a clean exit into a signal death.
  ~StopSignals() {
    while (taken_now()) {
    }
    pthread_sigmask(SIG_SETMASK, &previous_, nullptr);
  }

  // Waits until `until` or a stop signal, whichever comes first; true on a signal.
  bool wait_until(std::chrono::steady_clock::time_point until) {
    for (;;) {
      const auto left = until - std::chrono::steady_clock::now();
      if (left <= std::chrono::steady_clock::duration::zero()) return taken_now();
      const auto ns = std::chrono::duration_cast<std::chrono::nanoseconds>(left).count();
      const timespec step{static_cast<std::time_t>(ns / 1'000'000'000),
                          static_cast<long>(ns % 1'000'000'000)};
      if (sigtimedwait(&set_, nullptr, &step) > 0) return true;
      // EAGAIN: the time is up (checked above); EINTR: another signal.
    }
  }

  bool wait_for(std::chrono::steady_clock::duration d) {
    return wait_until(std::chrono::steady_clock::now() + d);
  }

 private:
  bool taken_now() {
    const timespec zero{0, 0};
    return sigtimedwait(&set_, nullptr, &zero) > 0;
  }

  sigset_t set_{};
  sigset_t previous_{};
};

}  // namespace shmring::tools
