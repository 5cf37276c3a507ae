#include "shmring/wait.hpp"

#include <linux/futex.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include <climits>

#include "detail/sys.hpp"
#include "shmring/atomic.hpp"

namespace shmring::futex {

void wait(std::uint32_t* word, std::uint32_t expected, std::chrono::nanoseconds timeout) noexcept {
  if (timeout <= std::chrono::nanoseconds::zero()) return;
  timespec ts;
  ts.tv_sec = static_cast<time_t>(timeout.count() / 1'000'000'000);
  ts.tv_nsec = static_cast<long>(timeout.count() % 1'000'000'000);
  // EINTR, EAGAIN (the word already changed) and ETIMEDOUT all mean "look
  // again"; the caller re-checks its condition and its deadline, so a signal
  // neither ends a wait early nor stretches it past its deadline.
  sys::futex_wait(word, expected, &ts);
}

void wake_all(std::uint32_t* word) noexcept {
  ::syscall(SYS_futex, word, FUTEX_WAKE, INT_MAX, nullptr, nullptr, 0);
}

void notify_all(std::uint32_t* word) noexcept {
  atomic::fetch_add(word, std::uint32_t{1});
  wake_all(word);
}

}  // namespace shmring::futex
