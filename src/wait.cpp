#include "shmring/wait.hpp"

#include <linux/futex.h>
#include <sched.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include <atomic>
#include <climits>

#include "detail/blocking.hpp"
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
  ::shmring::detail::g_futex_wakes.fetch_add(1, std::memory_order_relaxed);
  ::syscall(SYS_futex, word, FUTEX_WAKE, INT_MAX, nullptr, nullptr, 0);
}

void notify_all(std::uint32_t* word) noexcept {
  atomic::fetch_add(word, std::uint32_t{1});
  wake_all(word);
}

}  // namespace shmring::futex

namespace shmring {
namespace detail {

std::atomic<std::uint64_t> g_sleeps{0};
std::atomic<std::uint64_t> g_late_wakeups{0};
std::atomic<std::uint64_t> g_futex_wakes{0};

bool single_cpu() noexcept {
  cpu_set_t set;
  CPU_ZERO(&set);
  if (::sched_getaffinity(0, sizeof set, &set) != 0) return false;
  return CPU_COUNT(&set) == 1;
}

WaitState WaitState::for_this_thread() noexcept {
  WaitState s;
  s.one_cpu = single_cpu();
  if (s.one_cpu) s.spin_success = 0;
  return s;
}

}  // namespace detail

WaitStats wait_stats() noexcept {
  return WaitStats{detail::g_sleeps.load(std::memory_order_relaxed),
                   detail::g_late_wakeups.load(std::memory_order_relaxed),
                   detail::g_futex_wakes.load(std::memory_order_relaxed)};
}

}  // namespace shmring
