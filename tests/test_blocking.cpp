// Blocking calls: a sleeper is woken promptly when its peer acts, a sleeper
// burns no CPU, timeouts are honoured, and the futex word works across
// processes.
//
// "Asleep" is observed, never assumed: the sleeper's side raises its waiters
// word in the segment before it sleeps, and the kernel shows its thread in
// state S; a test acts only once it sees both.
#include <gtest/gtest.h>
#include <sched.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <span>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "../src/detail/blocking.hpp"
#include "shmring/shmring.hpp"
#include "test_support.hpp"

namespace shmring {
namespace {

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;
using test::bytes_word;
using test::make_ring;
using test::poll_until;
using test::thread_cpu_time;
using test::word_bytes;

constexpr auto kLongTimeout = 10s;       // a blocked call that should be woken well before
constexpr auto kWakeBound = 100ms;       // each wake, push to return
constexpr auto kMedianWakeBound = 10ms;  // typical wake (a periodic re-check would be ~25 ms)
constexpr auto kAsleepDeadline = 10s;    // for a sleeper to be observed asleep
constexpr int kWakeTrials = 9;

// ---- observing sleepers ------------------------------------------------------

ControlArea* control(const Segment& s) { return reinterpret_cast<ControlArea*>(s.base()); }
const std::uint32_t* consumer_waiters(const Segment& s) {
  return &control(s)->consumer_wait.waiters;
}
const std::uint32_t* producer_waiters(const Segment& s) {
  return &control(s)->producer_wait.waiters;
}
// Producers bump producer.notify to wake consumers; consumers bump consumer.notify.
const std::uint32_t* producer_notify(const Segment& s) { return &control(s)->producer.notify; }
const std::uint32_t* consumer_notify(const Segment& s) { return &control(s)->consumer.notify; }
std::uint32_t load(const std::uint32_t* word) { return atomic::load_seq_cst(word); }

pid_t this_thread_id() { return static_cast<pid_t>(::syscall(SYS_gettid)); }

// The scheduler state ('R', 'S', 'D', ...) of a thread of this process, or
// of a process when `tid` is a process id; 0 if unreadable.
char task_state(pid_t tid, bool other_process = false) {
  char path[96];
  if (other_process) {
    std::snprintf(path, sizeof path, "/proc/%d/stat", static_cast<int>(tid));
  } else {
    std::snprintf(path, sizeof path, "/proc/self/task/%d/stat", static_cast<int>(tid));
  }
  std::FILE* f = std::fopen(path, "re");
  if (f == nullptr) return 0;
  char buf[512];
  const std::size_t n = std::fread(buf, 1, sizeof buf - 1, f);
  std::fclose(f);
  buf[n] = '\0';
  const char* p = std::strrchr(buf, ')');
  return (p != nullptr && p[1] == ' ') ? p[2] : 0;
}

double ms(std::chrono::nanoseconds d) {
  return std::chrono::duration<double, std::milli>(d).count();
}

// pop() of one message, its first word to `value` (0 if none came).
template <class Consumer>
Status pop_word(Consumer& rx, std::uint64_t& value, std::chrono::nanoseconds timeout) {
  std::array<std::byte, 64> buf{};
  std::size_t size = 0;
  const Status s = rx.pop(buf, size, timeout);
  value = bytes_word({buf.data(), size});
  return s;
}

// try_pop() of one message, its first word to `value` (0 if none came).
template <class Consumer>
Status try_pop_word(Consumer& rx, std::uint64_t& value) {
  std::array<std::byte, 64> buf{};
  std::size_t size = 0;
  const Status s = rx.try_pop(buf, size);
  value = bytes_word({buf.data(), size});
  return s;
}

// Pops what is left, checking that it continues the sequence at `next`.
template <class Consumer>
void drain_in_order(Consumer& rx, std::uint64_t& next) {
  std::uint64_t v = 0;
  while (try_pop_word(rx, v) == Status::ok) EXPECT_EQ(v, next++);
}

// The two kinds of ring, for the tests that are the same on both.
struct Spsc {
  using Producer = SpscProducer;
  using Consumer = SpscConsumer;
  static constexpr RingKind kind = RingKind::spsc;
};
struct Mpmc {
  using Producer = MpmcProducer;
  using Consumer = MpmcConsumer;
  static constexpr RingKind kind = RingKind::mpmc;
};

// A ring of `capacity` slots with a producer and a consumer attached.
template <class Ring>
struct RingPair {
  explicit RingPair(std::uint64_t capacity, const WaitPolicy& policy = {})
      : seg(make_ring(shm, Ring::kind, capacity)),
        tx(Ring::Producer::attach(seg, policy)),
        rx(Ring::Consumer::attach(seg, policy)) {}
  test::UniqueShm shm;
  Segment seg;
  typename Ring::Producer tx;
  typename Ring::Consumer rx;
};

// ---- wake latency -----------------------------------------------------------

struct Wake {
  bool asleep = false;    // the sleeper was observed asleep before the peer acted
  bool notified = false;  // the peer's call saw the sleeper and bumped its notify word
  Status status = Status::corrupt;
  std::chrono::nanoseconds latency{};  // from the peer's call to the sleeper's return
};

// Runs `block` (returns a Status) on a new thread, waits until that thread is
// asleep (`waiters` non-zero and the thread in state S), then runs `unblock`
// and measures how long `block` takes to return after it.
template <class Block, class Unblock>
Wake measure_wake(Block&& block, Unblock&& unblock, const std::uint32_t* waiters,
                  const std::uint32_t* notify) {
  Wake w;
  std::atomic<pid_t> tid{0};
  std::atomic<Clock::rep> returned_at{0};
  std::thread sleeper([&] {
    tid.store(this_thread_id());
    w.status = block();
    returned_at.store(Clock::now().time_since_epoch().count());
  });
  w.asleep = poll_until(
      [&] { return tid.load() != 0 && load(waiters) != 0 && task_state(tid.load()) == 'S'; },
      kAsleepDeadline);
  const std::uint32_t notify_before = load(notify);
  const auto acted = Clock::now();
  unblock();
  w.notified = load(notify) != notify_before;
  sleeper.join();
  w.latency = Clock::time_point(Clock::duration(returned_at.load())) - acted;
  return w;
}

// Checks a series of wakes: every sleeper was asleep and returned ok within
// kWakeBound, the typical (median) wake is far below the sleepers' periodic
// re-check, and the peer's call saw the sleeper (the futex path was taken).
void check_wakes(const std::vector<Wake>& wakes, const char* what) {
  std::vector<std::chrono::nanoseconds> latencies;
  int notified = 0;
  for (std::size_t i = 0; i < wakes.size(); ++i) {
    const Wake& w = wakes[i];
    EXPECT_TRUE(w.asleep) << what << " trial " << i << ": the sleeper was never seen asleep";
    EXPECT_EQ(w.status, Status::ok) << what << " trial " << i;
    EXPECT_LT(w.latency, kWakeBound)
        << what << " trial " << i << ": woke after " << ms(w.latency) << " ms";
    latencies.push_back(w.latency);
    notified += w.notified ? 1 : 0;
  }
  std::sort(latencies.begin(), latencies.end());
  const auto median = latencies[latencies.size() / 2];
  std::printf(
      "[ blocking ] %s: wake latency min %.3f ms, median %.3f ms, max %.3f ms; "
      "%d of %zu peer calls saw the sleeper\n",
      what, ms(latencies.front()), ms(median), ms(latencies.back()), notified, wakes.size());
  EXPECT_LT(median, kMedianWakeBound)
      << what << ": wake-ups look lost (median " << ms(median) << " ms)";
  // A sleeper briefly leaves its count during a periodic re-check; allow one
  // unlucky trial.
  EXPECT_GE(notified, static_cast<int>(wakes.size()) - 1) << what;
}

// kWakeTrials times: the consumer asleep in pop() is woken by a try_push()
// of the trial number, and receives it.
template <class Ring>
void check_pop_wakes(RingPair<Ring>& r, const char* what) {
  std::vector<Wake> wakes;
  for (std::uint64_t i = 0; i < kWakeTrials; ++i) {
    std::uint64_t got = ~0ull;
    wakes.push_back(measure_wake([&] { return pop_word(r.rx, got, kLongTimeout); },
                                 [&] { EXPECT_EQ(r.tx.try_push(word_bytes(i)), Status::ok); },
                                 consumer_waiters(r.seg), producer_notify(r.seg)));
    EXPECT_EQ(got, i) << what;
  }
  check_wakes(wakes, what);
}

TEST(BlockingWake, SpscConsumerWokenByPush) {
  RingPair<Spsc> r(8);
  check_pop_wakes(r, "spsc pop");
}

TEST(BlockingWake, SpscConsumerPeekWokenByClaimCommit) {
  RingPair<Spsc> r(8);
  std::vector<Wake> wakes;
  for (std::uint64_t i = 0; i < kWakeTrials; ++i) {
    std::uint64_t got = ~0ull;
    wakes.push_back(measure_wake(
        [&] {
          ReadClaim c = r.rx.peek(4, kLongTimeout);
          if (!c.empty()) got = bytes_word(c[0]);
          return c.status();  // released as it goes
        },
        [&] {
          WriteClaim c = r.tx.try_claim(1);
          ASSERT_FALSE(c.empty());
          std::memcpy(c[0].data(), word_bytes(i).data(), 8);
          EXPECT_EQ(c.commit(8), Status::ok);
        },
        consumer_waiters(r.seg), producer_notify(r.seg)));
    EXPECT_EQ(got, i);
  }
  check_wakes(wakes, "spsc peek");
}

// A full ring; kWakeTrials times, the producer asleep in push() is woken by
// a try_pop(). Every message comes out, in order.
template <class Ring>
void producer_woken_by_pop(const char* what) {
  constexpr std::uint64_t kCapacity = 4;
  RingPair<Ring> r(kCapacity);
  std::uint64_t next_in = 0, next_out = 0;
  for (; next_in < kCapacity; ++next_in) ASSERT_EQ(r.tx.try_push(word_bytes(next_in)), Status::ok);
  std::vector<Wake> wakes;
  for (int i = 0; i < kWakeTrials; ++i) {
    wakes.push_back(measure_wake([&] { return r.tx.push(word_bytes(next_in), kLongTimeout); },
                                 [&] {
                                   std::uint64_t v = 0;
                                   ASSERT_EQ(try_pop_word(r.rx, v), Status::ok);
                                   EXPECT_EQ(v, next_out++);
                                 },
                                 producer_waiters(r.seg), consumer_notify(r.seg)));
    ++next_in;  // the ring is full again
  }
  check_wakes(wakes, what);
  drain_in_order(r.rx, next_out);
  EXPECT_EQ(next_out, next_in);
}

TEST(BlockingWake, SpscProducerWokenByPop) { producer_woken_by_pop<Spsc>("spsc push"); }

TEST(BlockingWake, SpscProducerClaimWokenByRelease) {
  constexpr std::uint64_t kCapacity = 4;
  RingPair<Spsc> r(kCapacity);
  for (std::uint64_t i = 0; i < kCapacity; ++i) ASSERT_EQ(r.tx.try_push(word_bytes(i)), Status::ok);
  std::vector<Wake> wakes;
  for (int i = 0; i < kWakeTrials; ++i) {
    wakes.push_back(measure_wake(
        [&] {
          WriteClaim c = r.tx.claim(2, kLongTimeout);
          if (c.empty()) return c.status();
          const Status s = c.size() == 1 ? Status::ok : Status::corrupt;  // one slot was freed
          std::memcpy(c[0].data(), word_bytes(100 + i).data(), 8);
          return c.commit(8) == Status::ok ? s : Status::corrupt;
        },
        [&] {
          ReadClaim c = r.rx.try_peek(1);
          ASSERT_FALSE(c.empty());
          c.release();
        },
        producer_waiters(r.seg), consumer_notify(r.seg)));
  }
  check_wakes(wakes, "spsc claim");
}

TEST(BlockingWake, MpmcConsumersWokenOneMessageEach) {
  RingPair<Mpmc> r(8);
  check_pop_wakes(r, "mpmc pop");
}

// Three consumers asleep at once; each push must wake them so that exactly
// one takes the message, promptly, and the others go back to sleep.
TEST(BlockingWake, MpmcSeveralSleepersEachPushServesOne) {
  test::UniqueShm shm;
  constexpr int kSleepers = 3;
  Segment seg = make_ring(shm, RingKind::mpmc, 8);
  MpmcProducer tx = MpmcProducer::attach(seg);
  std::atomic<int> served{0};
  std::array<std::atomic<Clock::rep>, kSleepers> returned_at{};
  std::array<Status, kSleepers> status{};
  std::array<std::uint64_t, kSleepers> got{};
  std::vector<std::thread> sleepers;
  for (int c = 0; c < kSleepers; ++c) {
    sleepers.emplace_back([&, c] {
      MpmcConsumer rx = MpmcConsumer::attach(seg);
      status[c] = pop_word(rx, got[c], kLongTimeout);
      returned_at[c].store(Clock::now().time_since_epoch().count());
      served.fetch_add(1);
    });
  }
  std::vector<std::uint64_t> seen;
  for (int k = 0; k < kSleepers; ++k) {
    const auto left = static_cast<std::uint32_t>(kSleepers - k);
    ASSERT_TRUE(poll_until([&] { return load(consumer_waiters(seg)) == left; }, kAsleepDeadline))
        << left << " consumers should be asleep, " << load(consumer_waiters(seg)) << " are";
    const auto acted = Clock::now();
    ASSERT_EQ(tx.try_push(word_bytes(1000 + k)), Status::ok);
    ASSERT_TRUE(poll_until([&] { return served.load() == k + 1; }, kWakeBound))
        << "push " << k << " woke no consumer within " << ms(kWakeBound) << " ms";
    for (int c = 0; c < kSleepers; ++c) {
      const Clock::rep at = returned_at[c].load();
      if (at != 0 && Clock::time_point(Clock::duration(at)) >= acted) {
        EXPECT_LT(Clock::time_point(Clock::duration(at)) - acted, kWakeBound);
      }
    }
  }
  for (auto& t : sleepers) t.join();
  for (int c = 0; c < kSleepers; ++c) {
    EXPECT_EQ(status[c], Status::ok);
    seen.push_back(got[c]);
  }
  std::sort(seen.begin(), seen.end());
  EXPECT_EQ(seen, (std::vector<std::uint64_t>{1000, 1001, 1002}));
}

TEST(BlockingWake, MpmcProducerWokenByPop) { producer_woken_by_pop<Mpmc>("mpmc push"); }

// ---- a sleeper burns no CPU --------------------------------------------------

constexpr auto kIdleWait = 1200ms;
constexpr double kMaxCpuShare = 0.05;

struct Idle {
  Status status = Status::corrupt;
  std::chrono::nanoseconds wall{};
  std::chrono::nanoseconds cpu{};  // of the blocked thread itself
};

// Runs `block` on a new thread, measuring that thread's own CPU time over
// the call; once the thread is asleep, waits kIdleWait, then `unblock`s it.
template <class Block, class Unblock>
Idle measure_idle(Block&& block, Unblock&& unblock, const std::uint32_t* waiters) {
  Idle r;
  std::atomic<pid_t> tid{0};
  std::thread sleeper([&] {
    tid.store(this_thread_id());
    const auto cpu0 = thread_cpu_time();
    const auto wall0 = Clock::now();
    r.status = block();
    r.cpu = thread_cpu_time() - cpu0;
    r.wall = Clock::now() - wall0;
  });
  const bool asleep = poll_until(
      [&] { return tid.load() != 0 && load(waiters) != 0 && task_state(tid.load()) == 'S'; },
      kAsleepDeadline);
  EXPECT_TRUE(asleep) << "the blocked thread was never seen asleep";
  std::this_thread::sleep_for(kIdleWait);  // the interval measured, not a synchronisation
  unblock();
  sleeper.join();
  return r;
}

void check_idle(const Idle& r, const char* what) {
  const double share = static_cast<double>(r.cpu.count()) / static_cast<double>(r.wall.count());
  std::printf("[ blocking ] %s: blocked %.0f ms, used %.3f ms of CPU (%.3f%%)\n", what, ms(r.wall),
              ms(r.cpu), share * 100);
  EXPECT_EQ(r.status, Status::ok) << what;
  EXPECT_GE(r.wall, kIdleWait) << what;
  EXPECT_LT(share, kMaxCpuShare) << what << ": the blocked thread spins";
}

// The consumer waits in pop() for data, until a try_push().
template <class Ring>
void consumer_waiting_for_data(const char* what) {
  RingPair<Ring> r(8);
  std::uint64_t got = 0;
  check_idle(measure_idle([&] { return pop_word(r.rx, got, kLongTimeout); },
                          [&] { EXPECT_EQ(r.tx.try_push(word_bytes(7)), Status::ok); },
                          consumer_waiters(r.seg)),
             what);
}

// The producer waits in push() on a full ring for space, until a try_pop().
template <class Ring>
void producer_waiting_for_space(const char* what) {
  RingPair<Ring> r(4);
  for (std::uint64_t i = 0; i < 4; ++i) ASSERT_EQ(r.tx.try_push(word_bytes(i)), Status::ok);
  check_idle(measure_idle([&] { return r.tx.push(word_bytes(4), kLongTimeout); },
                          [&] {
                            std::uint64_t v = 0;
                            EXPECT_EQ(try_pop_word(r.rx, v), Status::ok);
                          },
                          producer_waiters(r.seg)),
             what);
}

TEST(BlockingIdle, SpscConsumerWaitingForDataDoesNotSpin) {
  consumer_waiting_for_data<Spsc>("spsc consumer");
}

TEST(BlockingIdle, SpscProducerWaitingForSpaceDoesNotSpin) {
  producer_waiting_for_space<Spsc>("spsc producer");
}

TEST(BlockingIdle, MpmcConsumerWaitingForDataDoesNotSpin) {
  consumer_waiting_for_data<Mpmc>("mpmc consumer");
}

TEST(BlockingIdle, MpmcProducerWaitingForSpaceDoesNotSpin) {
  producer_waiting_for_space<Mpmc>("mpmc producer");
}

// ---- timeouts ---------------------------------------------------------------

constexpr auto kShortTimeout = 200ms;
constexpr auto kOvershootBound = 1s;  // generous: a loaded machine may deschedule us

// Runs `call` (returns Status) and checks it timed out after at least
// `timeout`, not grossly later, without spinning through the wait.
template <class Call>
void expect_timeout(Call&& call, std::chrono::nanoseconds timeout, const std::string& what) {
  const auto cpu0 = thread_cpu_time();
  const auto t0 = Clock::now();
  const Status s = call();
  const auto wall = Clock::now() - t0;
  const auto cpu = thread_cpu_time() - cpu0;
  EXPECT_EQ(s, Status::timeout) << what;
  EXPECT_GE(wall, timeout) << what << " returned early";
  EXPECT_LT(wall, timeout + kOvershootBound) << what << " overshot: " << ms(wall) << " ms";
  if (timeout >= kShortTimeout) {
    EXPECT_LT(static_cast<double>(cpu.count()),
              kMaxCpuShare * static_cast<double>(wall.count()) + 5e6)
        << what << " used " << ms(cpu) << " ms of CPU while waiting " << ms(wall) << " ms";
  }
}

// Every blocking call of either role times out, on an empty ring (pop, peek)
// and on a full one (push, claim), also with a zero timeout. `kind` ("spsc",
// "mpmc") starts the name of each call in the messages.
template <class Ring>
void every_blocking_call_times_out(const std::string& kind) {
  constexpr std::uint64_t kCapacity = 4;
  RingPair<Ring> r(kCapacity);
  auto& tx = r.tx;
  auto& rx = r.rx;
  std::array<std::byte, 64> buf{};
  std::size_t size = 0;

  expect_timeout([&] { return rx.pop(buf, size, kShortTimeout); }, kShortTimeout, kind + " pop");
  expect_timeout([&] { return rx.peek(2, kShortTimeout).status(); }, kShortTimeout, kind + " peek");
  EXPECT_TRUE(rx.peek(2, kShortTimeout).empty());
  expect_timeout([&] { return rx.pop(buf, size, 0ns); }, 0ns, kind + " pop, zero timeout");

  for (std::uint64_t i = 0; i < kCapacity; ++i) ASSERT_EQ(tx.try_push(word_bytes(i)), Status::ok);
  expect_timeout([&] { return tx.push(word_bytes(99), kShortTimeout); }, kShortTimeout,
                 kind + " push");
  expect_timeout([&] { return tx.claim(1, kShortTimeout).status(); }, kShortTimeout,
                 kind + " claim");
  EXPECT_TRUE(tx.claim(1, kShortTimeout).empty());
  expect_timeout([&] { return tx.push(word_bytes(99), 0ns); }, 0ns, kind + " push, zero timeout");

  // A timed-out call changed nothing: the ring holds exactly what went in
  // (and an SPSC producer, which keeps its position, is still at its end).
  if constexpr (requires { tx.position(); }) {
    EXPECT_EQ(tx.position(), kCapacity);
  }
  for (std::uint64_t i = 0; i < kCapacity; ++i) {
    ASSERT_EQ(rx.try_pop(buf, size), Status::ok);
    EXPECT_EQ(bytes_word({buf.data(), size}), i);
  }
  EXPECT_EQ(rx.try_pop(buf, size), Status::would_block);
  EXPECT_EQ(load(consumer_waiters(r.seg)), 0u) << "a timed-out sleeper left its count behind";
  EXPECT_EQ(load(producer_waiters(r.seg)), 0u) << "a timed-out sleeper left its count behind";
}

TEST(BlockingTimeout, SpscEveryBlockingCallTimesOut) {
  every_blocking_call_times_out<Spsc>("spsc");
}

TEST(BlockingTimeout, MpmcEveryBlockingCallTimesOut) {
  every_blocking_call_times_out<Mpmc>("mpmc");
}

// A sleeper with no spinning at all (WaitPolicy{0, 0}) still honours its
// deadline and is still woken.
TEST(BlockingTimeout, NoSpinPolicyHonoursDeadlineAndWakes) {
  RingPair<Spsc> r(4, WaitPolicy{0, 0});
  std::uint64_t got = 0;
  expect_timeout([&] { return pop_word(r.rx, got, kShortTimeout); }, kShortTimeout, "no-spin pop");
  check_pop_wakes(r, "no-spin pop");
}

// ---- across processes ---------------------------------------------------------

// What a forked sleeper reports, per trial: its status, what it received,
// when it returned (steady_clock is CLOCK_MONOTONIC, one clock for all
// processes), and how many trials it has finished.
struct ChildReport {
  std::int32_t status[kWakeTrials];
  std::uint64_t value[kWakeTrials];
  Clock::rep returned_at[kWakeTrials];
  std::uint32_t completed;
};

class SharedReport {
 public:
  SharedReport() {
    void* p = ::mmap(nullptr, sizeof(ChildReport), PROT_READ | PROT_WRITE,
                     MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) throw std::runtime_error("mmap failed");
    report_ = static_cast<ChildReport*>(p);
  }
  ~SharedReport() { ::munmap(report_, sizeof(ChildReport)); }
  SharedReport(const SharedReport&) = delete;
  SharedReport& operator=(const SharedReport&) = delete;
  ChildReport& get() const { return *report_; }

 private:
  ChildReport* report_;
};

// Waits for `pid` until `limit`; kills it if it overruns. Returns its exit
// code, or -1 if it had to be killed or died of a signal.
int reap(pid_t pid, std::chrono::nanoseconds limit) {
  int status = 0;
  const bool exited = poll_until([&] { return ::waitpid(pid, &status, WNOHANG) == pid; }, limit);
  if (!exited) {
    ::kill(pid, SIGKILL);
    ::waitpid(pid, &status, 0);
    return -1;
  }
  return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

// A forked child runs `block(report, trial)` kWakeTrials times; before each
// the parent waits until the child is asleep in it (trial count, waiters
// word, process state S), then runs `unblock(trial)`. The wakes must be as
// prompt as within one process: a futex that is not shared between
// processes would leave the child to its periodic re-check.
template <class Block, class Unblock>
void cross_process_wake(Block&& block, Unblock&& unblock, const std::uint32_t* waiters,
                        const std::uint32_t* notify, const char* what) {
  SharedReport shared;
  ChildReport& report = shared.get();
  std::fflush(nullptr);
  const pid_t pid = ::fork();
  ASSERT_GE(pid, 0) << "fork failed";
  if (pid == 0) {
    int rc = 3;
    try {
      rc = 0;
      for (int i = 0; i < kWakeTrials && rc == 0; ++i) {
        const Status s = block(report, i);
        report.status[i] = static_cast<std::int32_t>(s);
        report.returned_at[i] = Clock::now().time_since_epoch().count();
        std::atomic_ref<std::uint32_t>(report.completed).store(static_cast<std::uint32_t>(i + 1));
        rc = s == Status::ok ? 0 : 1;
      }
    } catch (...) {
      rc = 3;
    }
    ::_exit(rc);
  }
  std::vector<Wake> wakes(kWakeTrials);
  std::vector<Clock::time_point> acted(kWakeTrials);
  for (int i = 0; i < kWakeTrials; ++i) {
    wakes[i].asleep = poll_until(
        [&] {
          return std::atomic_ref<std::uint32_t>(report.completed).load() ==
                     static_cast<std::uint32_t>(i) &&
                 load(waiters) != 0 && task_state(pid, /*other_process=*/true) == 'S';
        },
        kAsleepDeadline);
    if (!wakes[i].asleep) break;  // the child failed or hangs: reap() below tells
    const std::uint32_t notify_before = load(notify);
    acted[i] = Clock::now();
    unblock(i);
    wakes[i].notified = load(notify) != notify_before;
  }
  const int code = reap(pid, kLongTimeout + 5s);
  ASSERT_EQ(code, 0) << what << ": child exit code (trials completed: " << report.completed << ")";
  for (int i = 0; i < kWakeTrials; ++i) {
    wakes[i].status = static_cast<Status>(report.status[i]);
    wakes[i].latency = Clock::time_point(Clock::duration(report.returned_at[i])) - acted[i];
  }
  check_wakes(wakes, what);
}

// A consumer process, asleep in pop(), is woken by the parent's try_push()
// of `first` + the trial number, and receives it.
template <class Ring>
void consumer_process_woken_by_parent_push(std::uint64_t first, const char* what) {
  test::UniqueShm shm;
  Segment seg = make_ring(shm, Ring::kind, 8);
  typename Ring::Producer tx = Ring::Producer::attach(seg);
  cross_process_wake(
      [&](ChildReport& r, int i) {
        Segment s = Segment::open(shm.name());
        typename Ring::Consumer rx = Ring::Consumer::attach(s);
        const Status st = pop_word(rx, r.value[i], kLongTimeout);
        return st == Status::ok && r.value[i] == first + static_cast<std::uint64_t>(i)
                   ? st
                   : Status::corrupt;
      },
      [&](int i) {
        EXPECT_EQ(tx.try_push(word_bytes(first + static_cast<std::uint64_t>(i))), Status::ok);
      },
      consumer_waiters(seg), producer_notify(seg), what);
}

TEST(BlockingCrossProcess, SpscConsumerProcessWokenByParentPush) {
  consumer_process_woken_by_parent_push<Spsc>(0xC0FFEE, "spsc consumer process");
}

TEST(BlockingCrossProcess, SpscProducerProcessWokenByParentPop) {
  test::UniqueShm shm;
  constexpr std::uint64_t kCapacity = 4;
  Segment seg = make_ring(shm, RingKind::spsc, kCapacity);
  {
    SpscProducer tx = SpscProducer::attach(seg);
    for (std::uint64_t i = 0; i < kCapacity; ++i) ASSERT_EQ(tx.try_push(word_bytes(i)), Status::ok);
  }  // the role is released for the child
  SpscConsumer rx = SpscConsumer::attach(seg);
  std::uint64_t next_out = 0;
  cross_process_wake(
      [&](ChildReport&, int i) {
        Segment s = Segment::open(shm.name());
        SpscProducer tx = SpscProducer::attach(s);
        return tx.push(word_bytes(kCapacity + static_cast<std::uint64_t>(i)), kLongTimeout);
      },
      [&](int) {
        std::uint64_t v = 0;
        EXPECT_EQ(try_pop_word(rx, v), Status::ok);
        EXPECT_EQ(v, next_out++);
      },
      producer_waiters(seg), consumer_notify(seg), "spsc producer process");
  drain_in_order(rx, next_out);
  EXPECT_EQ(next_out, kCapacity + kWakeTrials);
}

TEST(BlockingCrossProcess, MpmcConsumerProcessWokenByParentPush) {
  consumer_process_woken_by_parent_push<Mpmc>(0xBEEF, "mpmc consumer process");
}

// A consumer process killed while asleep in pop() leaves its registration
// in the waiters word. Once a new consumer has taken the role over, nobody
// can be asleep on that side, yet every publication still finds a sleeper
// registered and makes a futex system call (about 20x slower): attaching the
// role clears the dead sleeper's count.
TEST(BlockingCrossProcess, SpscKilledSleeperLeavesNoWaiterBehind) {
  test::UniqueShm shm;
  Segment seg = make_ring(shm, RingKind::spsc, 8);
  std::fflush(nullptr);
  const pid_t pid = ::fork();
  ASSERT_GE(pid, 0) << "fork failed";
  if (pid == 0) {
    try {
      Segment s = Segment::open(shm.name());
      SpscConsumer rx = SpscConsumer::attach(s);
      std::uint64_t v = 0;
      (void)pop_word(rx, v, kLongTimeout);
    } catch (...) {
    }
    ::_exit(0);
  }
  const bool asleep =
      poll_until([&] { return load(consumer_waiters(seg)) != 0 && task_state(pid, true) == 'S'; },
                 kAsleepDeadline);
  ::kill(pid, SIGKILL);
  int status = 0;
  ::waitpid(pid, &status, 0);
  ASSERT_TRUE(asleep) << "the child was never seen asleep";

  SpscConsumer rx = SpscConsumer::attach(seg);  // takes the dead child's role over
  SpscProducer tx = SpscProducer::attach(seg);
  const std::uint32_t notify_before = load(producer_notify(seg));
  std::array<std::byte, 64> buf{};
  std::size_t size = 0;
  for (std::uint64_t i = 0; i < 100; ++i) {
    ASSERT_EQ(tx.try_push(word_bytes(i)), Status::ok);
    ASSERT_EQ(rx.try_pop(buf, size), Status::ok);
  }
  EXPECT_EQ(load(consumer_waiters(seg)), 0u) << "the killed consumer is still counted as asleep";
  EXPECT_EQ(load(producer_notify(seg)) - notify_before, 0u)
      << "pushes kept waking a consumer that no longer exists";
}

// ---- the sleeper handshake --------------------------------------------------
//
// A publication stores its position with release and then loads the sleeper
// count without a fence (spsc_view.hpp, "The sleeper handshake"), so its
// load may be satisfied before its store is visible. These tests force the
// one interleaving that then loses a wake-up: the publisher's load of the
// count comes first and sees nobody, the sleeper raises its count and
// re-checks (nothing there yet), and only then does the position store
// land. The publisher is the view's own publish() / release() / commit(),
// made to read a sleeper count that the sleeper does not raise (the value
// the early load returns); the sleeper is the wait loop of the handles. No
// wake-up comes, so the sleeper must come back with the message by itself,
// through its short first sleep. Its longest sleep is stretched to an hour:
// a wait loop that relied on the wake-up (or on a periodic long re-check)
// would hang here and fail on the watchdog, not pass slowly.

constexpr int kHandshakeTrials = 100;
constexpr auto kHandshakeWatchdog = 20s;  // far beyond the bound; only a hang reaches it

struct MissedWakeUp {
  std::vector<std::chrono::nanoseconds> delays;  // publication to the sleeper's return
  std::uint64_t late_wakeups = 0;                // wait_stats() over the trials
};

// `sleep_once(decoy)`: blocks in the wait loop until its condition holds,
// raising `decoy` as its sleeper count, and returns whether it got it.
// `publish()`: the publication under test; returns whether it saw a sleeper.
// `consume()`: takes what the sleeper waited for, checking it (trial number).
template <class Sleep, class Publish, class Consume>
MissedWakeUp force_missed_wake_ups(Sleep&& sleep_once, Publish&& publish, Consume&& consume) {
  MissedWakeUp out;
  const std::uint64_t late_before = wait_stats().late_wakeups;
  for (int trial = 0; trial < kHandshakeTrials; ++trial) {
    std::atomic<bool> rechecked{false};
    std::atomic<bool> got{false};
    std::atomic<bool> returned{false};
    Clock::time_point returned_at{};
    std::uint32_t decoy = 0;
    std::thread sleeper([&] {
      got = sleep_once(decoy, rechecked);
      returned_at = Clock::now();
      returned.store(true, std::memory_order_release);
    });
    // The sleeper has raised its count and re-checked, and found nothing.
    // Publish right after the re-check (yielding, not sleeping, while we
    // wait for it), so the sleeper's own sleep is what has to catch it.
    const auto watchdog = Clock::now() + kHandshakeWatchdog;
    while (!rechecked.load() && Clock::now() < watchdog) std::this_thread::yield();
    EXPECT_TRUE(rechecked.load());
    EXPECT_EQ(atomic::load_seq_cst(&decoy), 1u);
    const auto published_at = Clock::now();
    EXPECT_FALSE(publish()) << "the publisher saw a sleeper; the interleaving was not forced";
    const bool back =
        poll_until([&] { return returned.load(std::memory_order_acquire); }, kHandshakeWatchdog);
    EXPECT_TRUE(back) << "trial " << trial << ": the sleeper missed the publication and slept on";
    if (!back) {  // it sleeps for an hour: leave it to the process's end
      sleeper.detach();
      return out;
    }
    sleeper.join();
    EXPECT_TRUE(got.load()) << "trial " << trial;
    EXPECT_EQ(decoy, 0u) << "the sleeper left its count raised";
    consume(static_cast<std::uint64_t>(trial));
    out.delays.push_back(returned_at - published_at);
  }
  out.late_wakeups = wait_stats().late_wakeups - late_before;
  return out;
}

void report_missed_wake_ups(const char* what, MissedWakeUp& m) {
  ASSERT_EQ(m.delays.size(), static_cast<std::size_t>(kHandshakeTrials));
  // The trials were rescued by sleeps that ended by their time limit. Not
  // necessarily every one: futex may return early (a signal, as sanitizer
  // runtimes send), and the sleeper then finds the message by its own
  // re-check. What fails a broken protocol is the watchdog above.
  EXPECT_GE(m.late_wakeups, static_cast<std::uint64_t>(kHandshakeTrials) / 2);
  std::sort(m.delays.begin(), m.delays.end());
  std::printf("%s: a missed wake-up was caught after %.3f ms (median), %.3f ms (max)\n", what,
              ms(m.delays[m.delays.size() / 2]), ms(m.delays.back()));
}

// No spinning or yielding: straight to the sleep under test.
constexpr WaitPolicy kSleepAtOnce{0, 0};
// The sleep schedule with its ceiling stretched to an hour.
const detail::SleepBounds kOnlyTheFirstSleepRescues{detail::kFirstSleep, std::chrono::hours(1)};

TEST(SleeperHandshake, SpscConsumerMissingAPublicationWakesWithinTheFirstSleep) {
  test::HeapSegment heap(RingKind::spsc, 4, 64);
  const SpscView view(heap.base(), heap.geometry());
  SpscProducerCursor tx;
  SpscConsumerCursor rx;
  detail::WaitState state;
  auto sleep_once = [&](std::uint32_t& decoy, std::atomic<bool>& rechecked) {
    Status status = Status::ok;
    const std::uint64_t n = detail::block_until(
        detail::WaitSide{&decoy, &view.producer()->notify, &view.producer()->gpu_attached},
        kSleepAtOnce, state, std::chrono::hours(1), [&] { return view.readable(rx, 1, status); },
        [](std::uint64_t k) { return k != 0; },
        [&] {
          const bool ready = view.data_ready(rx);
          rechecked.store(true);
          return ready;
        },
        [] { return false; }, kOnlyTheFirstSleepRescues);
    return n == 1;
  };
  auto publish = [&] {
    Status status = Status::ok;
    EXPECT_EQ(view.writable(tx, 1, status), 1u);
    const std::uint64_t v = tx.head;
    std::memcpy(view.payload(tx.head), &v, sizeof v);
    view.set_length(tx.head, sizeof v);
    return view.publish(tx, 1);
  };
  auto consume = [&](std::uint64_t trial) {
    const ReadSlot slot = view.read_slot(rx.tail);
    ASSERT_EQ(slot.size, 8u);
    EXPECT_EQ(bytes_word({slot.data, slot.size}), trial) << "out of sequence";
    EXPECT_FALSE(view.release(rx, 1));
  };
  MissedWakeUp m = force_missed_wake_ups(sleep_once, publish, consume);
  report_missed_wake_ups("SPSC consumer", m);
}

TEST(SleeperHandshake, SpscProducerMissingAReleaseWakesWithinTheFirstSleep) {
  constexpr std::uint64_t kCapacity = 4;
  test::HeapSegment heap(RingKind::spsc, kCapacity, 64);
  const SpscView view(heap.base(), heap.geometry());
  SpscProducerCursor tx;
  SpscConsumerCursor rx;
  detail::WaitState state;
  // Fill the ring: the producer then waits for space.
  auto push = [&] {
    Status status = Status::ok;
    if (view.writable(tx, 1, status) != 1) return false;
    const std::uint64_t v = tx.head;
    std::memcpy(view.payload(tx.head), &v, sizeof v);
    view.set_length(tx.head, sizeof v);
    (void)view.publish(tx, 1);
    return true;
  };
  for (std::uint64_t i = 0; i < kCapacity; ++i) ASSERT_TRUE(push());
  auto sleep_once = [&](std::uint32_t& decoy, std::atomic<bool>& rechecked) {
    Status status = Status::ok;
    const std::uint64_t n = detail::block_until(
        detail::WaitSide{&decoy, &view.consumer()->notify, &view.consumer()->gpu_attached},
        kSleepAtOnce, state, std::chrono::hours(1), [&] { return view.writable(tx, 1, status); },
        [](std::uint64_t k) { return k != 0; },
        [&] {
          const bool ready = view.space_ready(tx);
          rechecked.store(true);
          return ready;
        },
        [] { return false; }, kOnlyTheFirstSleepRescues);
    return n == 1 && push();
  };
  // The release under test hands back the oldest message, checked first.
  auto release = [&] {
    const ReadSlot slot = view.read_slot(rx.tail);
    EXPECT_EQ(bytes_word({slot.data, slot.size}), rx.tail) << "out of sequence";
    return view.release(rx, 1);
  };
  MissedWakeUp m = force_missed_wake_ups(sleep_once, release, [](std::uint64_t) {});
  report_missed_wake_ups("SPSC producer", m);
  EXPECT_EQ(tx.head - rx.tail, kCapacity);
}

TEST(SleeperHandshake, MpmcConsumerMissingACommitWakesWithinTheFirstSleep) {
  test::HeapSegment heap(RingKind::mpmc, 4, 64);
  const MpmcView view(heap.base(), heap.geometry());
  detail::WaitState state;
  MpmcRange taken;
  auto sleep_once = [&](std::uint32_t& decoy, std::atomic<bool>& rechecked) {
    Status status = Status::ok;
    taken = detail::block_until(
        detail::WaitSide{&decoy, &view.producer()->notify, &view.producer()->gpu_attached},
        kSleepAtOnce, state, std::chrono::hours(1), [&] { return view.claim_read(1, status); },
        [](MpmcRange r) { return r.count != 0; },
        [&] {
          const bool ready = view.data_ready();
          rechecked.store(true);
          return ready;
        },
        [] { return false; }, kOnlyTheFirstSleepRescues);
    return taken.count == 1;
  };
  auto commit = [&] {
    Status status = Status::ok;
    const MpmcRange r = view.claim_write(1, status);
    EXPECT_EQ(r.count, 1u);
    std::memcpy(view.payload(r.first), &r.first, sizeof r.first);
    view.set_length(r.first, sizeof r.first);
    return view.commit(r);
  };
  auto consume = [&](std::uint64_t trial) {
    ASSERT_EQ(taken.first, trial) << "out of sequence";
    const ReadSlot slot = view.read_slot(taken.first);
    EXPECT_EQ(bytes_word({slot.data, slot.size}), trial);
    EXPECT_FALSE(view.release(taken));
  };
  MissedWakeUp m = force_missed_wake_ups(sleep_once, commit, consume);
  report_missed_wake_ups("MPMC consumer", m);
}

// ---- fitting the spin to the machine -----------------------------------------

// A blocking call on a thread confined to one CPU starts out not spinning:
// a peer on that CPU could not run meanwhile (spinning only comes back if
// the probes, one wait in 16, succeed). Counted in tries: a spin of an hour (and a
// billion tries) would try until the deadline.
TEST(WaitFitsTheMachine, NoSpinOnOneCpu) {
  test::HeapSegment heap(RingKind::spsc, 4, 64);
  const SpscView view(heap.base(), heap.geometry());
  SpscConsumerCursor rx;
  std::uint64_t tries = 0;
  detail::WaitState state;
  std::thread t([&] {
    cpu_set_t one;
    CPU_ZERO(&one);
    CPU_SET(sched_getcpu(), &one);
    ASSERT_EQ(::sched_setaffinity(0, sizeof one, &one), 0);
    state = detail::WaitState::for_this_thread();
    const WaitPolicy spin_long{1'000'000'000, 0, std::chrono::hours(1)};
    Status status = Status::ok;
    (void)detail::block_until(
        detail::WaitSide{&view.consumer_wait()->waiters, &view.producer()->notify,
                         &view.producer()->gpu_attached},
        spin_long, state, 20ms,
        [&] {
          ++tries;
          return view.readable(rx, 1, status);
        },
        [](std::uint64_t k) { return k != 0; }, [&] { return view.data_ready(rx); });
  });
  t.join();
  EXPECT_TRUE(state.one_cpu);
  // The first try, and one after each sleep round (the slices double from
  // 100 us up to the 20 ms deadline: a handful).
  EXPECT_LE(tries, 4u) << "the call spun on a single CPU";
}

// The spin ends by its time, whatever the iteration count: a call that waits
// for an hour reaches its futex sleep (observed: its sleeper count raised)
// although its policy allows a billion tries.
TEST(WaitFitsTheMachine, SpinIsBoundedInTime) {
  test::UniqueShm shm;
  const Segment seg = make_ring(shm, RingKind::spsc, 4);
  const WaitPolicy spin_long{1'000'000'000, 4, 2ms};
  SpscConsumer rx = SpscConsumer::attach(seg, spin_long);
  SpscProducer tx = SpscProducer::attach(seg);
  std::uint64_t got = 0;
  std::thread t([&] { EXPECT_EQ(pop_word(rx, got, kLongTimeout), Status::ok); });
  const bool asleep = poll_until([&] { return load(consumer_waiters(seg)) == 1; }, kAsleepDeadline);
  EXPECT_TRUE(asleep) << "the consumer never stopped spinning";
  ASSERT_EQ(tx.push(word_bytes(42), kLongTimeout), Status::ok);
  t.join();
  EXPECT_EQ(got, 42u);
}

// Spins that keep ending empty stop being spun (except a probe now and then),
// and spins that pay are spun again.
TEST(WaitFitsTheMachine, SpinAdaptsToHowOftenItPays) {
  test::HeapSegment heap(RingKind::spsc, 4, 64);
  const SpscView view(heap.base(), heap.geometry());
  SpscConsumerCursor rx;
  detail::WaitState state;
  state.one_cpu = false;
  const WaitPolicy policy{1'000'000'000, 0, 200us};
  std::uint64_t tries = 0;
  bool publish_on_second_try = false;
  SpscProducerCursor tx;
  auto wait_once = [&](std::chrono::nanoseconds timeout) {
    tries = 0;
    Status status = Status::ok;
    return detail::block_until(
        detail::WaitSide{&view.consumer_wait()->waiters, &view.producer()->notify,
                         &view.producer()->gpu_attached},
        policy, state, timeout,
        [&] {
          if (++tries == 2 && publish_on_second_try) {
            Status s = Status::ok;
            EXPECT_EQ(view.writable(tx, 1, s), 1u);
            view.set_length(tx.head, 0);
            (void)view.publish(tx, 1);
          }
          return view.readable(rx, 1, status);
        },
        [](std::uint64_t k) { return k != 0; }, [&] { return view.data_ready(rx); });
  };
  // Waits that time out: each spin ends empty.
  for (int i = 0; i < 40; ++i) EXPECT_EQ(wait_once(1ms), 0u);
  EXPECT_LT(state.spin_success, detail::WaitState::kSpinWorthIt);
  // Now a wait that is not a probe tries once, then yields/sleeps.
  while ((state.waits + 1) % detail::WaitState::kProbeEvery == 0) (void)wait_once(0ns);
  EXPECT_EQ(wait_once(1ms), 0u);
  EXPECT_LE(tries, 3u) << "spun although spinning has not paid for a while";
  // Spins that pay (the message comes on the second try) raise it again.
  publish_on_second_try = true;
  for (int i = 0; i < 40; ++i) {
    (void)wait_once(1ms);
    Status status = Status::ok;
    ASSERT_EQ(view.readable(rx, 1, status), 1u);  // published on the second try
    EXPECT_FALSE(view.release(rx, 1));
  }
  EXPECT_GE(state.spin_success, detail::WaitState::kSpinWorthIt);
}

}  // namespace
}  // namespace shmring
