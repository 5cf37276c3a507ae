// Resource faults and interruptions, injected through the library's syscall
// wrapper (shmring/fault_injection.hpp) where the real fault cannot be made on
// demand: a full /dev/shm, a refused open, a failed mapping, EINTR in every
// system call and in every wait, and real signals during blocking calls.
// Each failure must give a clear error and leave nothing behind: no name in
// /dev/shm, no descriptor, no mapping.
#include <dirent.h>
#include <gtest/gtest.h>
#include <pthread.h>
#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <fstream>
#include <string>
#include <thread>
#include <vector>

#include "shmring/error.hpp"
#include "shmring/fault_injection.hpp"
#include "shmring/mpmc_ring.hpp"
#include "shmring/segment.hpp"
#include "shmring/spsc_ring.hpp"
#include "test_support.hpp"

namespace shmring {
namespace {

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;
using fault::Call;

// Fails `call` with `err` for its first `times` invocations (-1: always);
// counts every invocation of `call`.
struct Plan {
  Call call;
  int err;
  int times;
  std::atomic<int> seen{0};
};

int plan_hook(Call call, void* context) noexcept {
  auto* plan = static_cast<Plan*>(context);
  if (call != plan->call) return 0;
  const int n = plan->seen.fetch_add(1);
  return plan->times < 0 || n < plan->times ? plan->err : 0;
}

// What a process holds that a failed call could leak.
struct Resources {
  std::size_t fds = 0;
  std::size_t shm_mappings = 0;
  std::vector<std::string> init_files;  // this process's private create files

  static Resources now() {
    Resources r;
    if (DIR* d = ::opendir("/proc/self/fd")) {
      while (::readdir(d) != nullptr) ++r.fds;
      ::closedir(d);
    }
    std::ifstream maps("/proc/self/maps");
    for (std::string line; std::getline(maps, line);) {
      if (line.find("/dev/shm/") != std::string::npos) ++r.shm_mappings;
    }
    const std::string mine = ".shmring-init." + std::to_string(::getpid()) + ".";
    if (DIR* d = ::opendir(test::kShmDir)) {
      while (const dirent* e = ::readdir(d)) {
        if (std::string(e->d_name).rfind(mine, 0) == 0) r.init_files.emplace_back(e->d_name);
      }
      ::closedir(d);
    }
    return r;
  }
};

void expect_nothing_leaked(const Resources& before, const std::string& name) {
  const Resources after = Resources::now();
  EXPECT_EQ(after.fds, before.fds) << "a descriptor leaked";
  EXPECT_EQ(after.shm_mappings, before.shm_mappings) << "a mapping leaked";
  EXPECT_TRUE(after.init_files.empty()) << "left " << after.init_files.front();
  EXPECT_FALSE(test::shm_exists(name)) << "the name was left in /dev/shm";
}

CreateOptions small(RingKind kind = RingKind::spsc) {
  CreateOptions o;
  o.kind = kind;
  o.capacity = 16;
  o.slot_size = 64;
  return o;
}

// ---- create ------------------------------------------------------------------

struct CreateFault {
  Call call;
  int err;
  errc code;  // errc{} when the errno itself is reported
  const char* in_message;
};

class CreateFaults : public ::testing::TestWithParam<CreateFault> {};

TEST_P(CreateFaults, ClearErrorAndNothingLeft) {
  const CreateFault& c = GetParam();
  test::UniqueShm shm;
  const Resources before = Resources::now();
  {
    Plan plan{c.call, c.err, -1};
    fault::ScopedHook hook(plan_hook, &plan);
    std::error_code ec;
    Segment s = Segment::create(shm.name(), small(), ec);
    EXPECT_FALSE(s);
    const std::error_code want =
        c.code == errc{} ? std::error_code(c.err, std::system_category()) : make_error_code(c.code);
    EXPECT_EQ(ec, want) << last_error_message();
    EXPECT_NE(last_error_message().find("segment '" + shm.name() + "'"), std::string::npos)
        << last_error_message();
    EXPECT_NE(last_error_message().find(c.in_message), std::string::npos) << last_error_message();
    EXPECT_GE(plan.seen.load(), 1) << "the fault was never reached";
  }
  expect_nothing_leaked(before, shm.name());
  // With the fault gone the same call works.
  Segment s = Segment::create(shm.name(), small());
  EXPECT_TRUE(s);
  Segment::unlink(shm.name());
}

INSTANTIATE_TEST_SUITE_P(
    Injected, CreateFaults,
    ::testing::Values(CreateFault{Call::fallocate, ENOSPC, errc::no_space, "cannot reserve"},
                      CreateFault{Call::fallocate, EIO, errc{}, "posix_fallocate"},
                      CreateFault{Call::open, EACCES, errc::permission_denied, "create"},
                      CreateFault{Call::open, ENOSPC, errc::no_space, "create"},
                      CreateFault{Call::mmap, ENOMEM, errc{}, "mmap"},
                      CreateFault{Call::fchmod, EPERM, errc{}, "fchmod"},
                      CreateFault{Call::link, EACCES, errc::permission_denied, "create"}),
    [](const ::testing::TestParamInfo<CreateFault>& p) {
      return std::string(fault::to_string(p.param.call)) + "_" + std::to_string(p.param.err);
    });

// A signal arriving in any system call of create or open is retried, not
// reported.
TEST(Interrupted, EveryColdCallIsRetried) {
  test::UniqueShm shm;
  const Resources before = Resources::now();
  for (const Call call : {Call::open, Call::fallocate, Call::mmap, Call::fchmod, Call::link,
                          Call::fstat, Call::unlink}) {
    SCOPED_TRACE(fault::to_string(call));
    Plan plan{call, EINTR, 3};
    fault::ScopedHook hook(plan_hook, &plan);
    {
      Segment created = Segment::create(shm.name(), small());
      Segment opened = Segment::open(shm.name());
      EXPECT_EQ(opened.geometry(), created.geometry());
    }
    Segment::unlink(shm.name());
    EXPECT_GE(plan.seen.load(), 4) << "three interruptions, then the call that went through";
  }
  expect_nothing_leaked(before, shm.name());
}

// ---- open ----------------------------------------------------------------------

TEST(OpenFaults, RefusedOpenAndFailedMapping) {
  test::UniqueShm shm;
  Segment made = Segment::create(shm.name(), small(RingKind::mpmc));
  const Resources before = Resources::now();
  {
    Plan plan{Call::open, EACCES, -1};
    fault::ScopedHook hook(plan_hook, &plan);
    std::error_code ec;
    EXPECT_FALSE(Segment::open(shm.name(), {}, ec));
    EXPECT_EQ(ec, make_error_code(errc::permission_denied)) << last_error_message();
  }
  {
    Plan plan{Call::mmap, ENOMEM, -1};
    fault::ScopedHook hook(plan_hook, &plan);
    std::error_code ec;
    EXPECT_FALSE(Segment::open(shm.name(), {}, ec));
    EXPECT_EQ(ec, std::error_code(ENOMEM, std::system_category())) << last_error_message();
    EXPECT_NE(last_error_message().find("mmap"), std::string::npos) << last_error_message();
  }
  const Resources after = Resources::now();
  EXPECT_EQ(after.fds, before.fds);
  EXPECT_EQ(after.shm_mappings, before.shm_mappings);
  Segment::unlink(shm.name());
}

// open_or_create: a full /dev/shm is reported as such, and leaves the name
// free for a later attempt.
TEST(OpenFaults, OpenOrCreateOnAFullDevShm) {
  test::UniqueShm shm;
  const Resources before = Resources::now();
  {
    Plan plan{Call::fallocate, ENOSPC, -1};
    fault::ScopedHook hook(plan_hook, &plan);
    std::error_code ec;
    EXPECT_FALSE(Segment::open_or_create(shm.name(), small(), 1s, ec));
    EXPECT_EQ(ec, make_error_code(errc::no_space)) << last_error_message();
  }
  expect_nothing_leaked(before, shm.name());
  Segment s = Segment::open_or_create(shm.name(), small());
  EXPECT_TRUE(s.created());
  Segment::unlink(shm.name());
}

// ---- waits ---------------------------------------------------------------------

// Blocking calls with every futex sleep interrupted: they neither return
// before their deadline nor miss a message that comes while they wait.
template <class Ring>
void interrupted_waits(RingKind kind) {
  test::UniqueShm shm;
  CreateOptions o = small(kind);
  o.capacity = 2;
  Segment seg = Segment::create(shm.name(), o);
  auto tx = Ring::Producer::attach(seg, WaitPolicy{0, 0});
  auto rx = Ring::Consumer::attach(seg, WaitPolicy{0, 0});
  Plan plan{Call::futex_wait, EINTR, -1};
  fault::ScopedHook hook(plan_hook, &plan);

  std::byte buf[64];
  std::size_t size = 0;
  auto start = Clock::now();
  EXPECT_EQ(rx.pop(buf, size, 80ms), Status::timeout);
  EXPECT_GE(Clock::now() - start, 80ms) << "an interrupted wait returned early";
  EXPECT_GT(plan.seen.load(), 0) << "the consumer never slept";

  // Full ring: the producer waits too.
  const std::uint64_t one = 1;
  ASSERT_EQ(tx.try_push(std::as_bytes(std::span(&one, 1))), Status::ok);
  ASSERT_EQ(tx.try_push(std::as_bytes(std::span(&one, 1))), Status::ok);
  const int before = plan.seen.load();
  start = Clock::now();
  EXPECT_EQ(tx.push(std::as_bytes(std::span(&one, 1)), 80ms), Status::timeout);
  EXPECT_GE(Clock::now() - start, 80ms);
  EXPECT_GT(plan.seen.load(), before) << "the producer never slept";
  ASSERT_EQ(rx.try_pop(buf, size), Status::ok);
  ASSERT_EQ(rx.try_pop(buf, size), Status::ok);

  // A message that comes while the consumer sleeps (interrupted) is received.
  std::thread late([&] {
    std::this_thread::sleep_for(60ms);
    const std::uint64_t v = 42;
    EXPECT_EQ(tx.try_push(std::as_bytes(std::span(&v, 1))), Status::ok);
  });
  EXPECT_EQ(rx.pop(buf, size, 10s), Status::ok);
  late.join();
  ASSERT_EQ(size, sizeof(std::uint64_t));
  std::uint64_t got = 0;
  std::memcpy(&got, buf, sizeof got);
  EXPECT_EQ(got, 42u);
}

struct Spsc {
  using Producer = SpscProducer;
  using Consumer = SpscConsumer;
};
struct Mpmc {
  using Producer = MpmcProducer;
  using Consumer = MpmcConsumer;
};

TEST(Interrupted, SpscWaitsKeepTheirDeadline) { interrupted_waits<Spsc>(RingKind::spsc); }
TEST(Interrupted, MpmcWaitsKeepTheirDeadline) { interrupted_waits<Mpmc>(RingKind::mpmc); }

// Real signals (a handler installed without SA_RESTART, so the futex really
// returns EINTR) at a thread blocked in pop(): it keeps waiting until its
// deadline, and receives a message sent while it is being interrupted.
std::atomic<int> g_signals{0};

TEST(Interrupted, RealSignalsDuringABlockingPop) {
  struct sigaction sa {};
  sa.sa_handler = [](int) { g_signals.fetch_add(1, std::memory_order_relaxed); };
  sigemptyset(&sa.sa_mask);
  sa.sa_flags = 0;  // no SA_RESTART
  struct sigaction old {};
  ASSERT_EQ(::sigaction(SIGUSR1, &sa, &old), 0);

  test::UniqueShm shm;
  Segment seg = Segment::create(shm.name(), small());
  auto tx = SpscProducer::attach(seg);
  auto rx = SpscConsumer::attach(seg, WaitPolicy{0, 0});
  std::atomic<bool> waiting_done{false};
  Status timed_out = Status::ok;
  Status received = Status::timeout;
  std::chrono::nanoseconds waited{};
  std::uint64_t got = 0;
  std::thread waiter([&] {
    std::byte buf[64];
    std::size_t size = 0;
    const auto start = Clock::now();
    timed_out = rx.pop(buf, size, 150ms);
    waited = Clock::now() - start;
    received = rx.pop(buf, size, 10s);
    if (received == Status::ok) std::memcpy(&got, buf, sizeof got);
    waiting_done = true;
  });
  const pthread_t target = waiter.native_handle();
  const int at_start = g_signals.load();
  // Interrupt the waiter every 2 ms through both pops; send the message once
  // it has been interrupted a good number of times in the second one.
  bool sent = false;
  const auto start = Clock::now();
  while (!waiting_done && Clock::now() - start < 20s) {
    ::pthread_kill(target, SIGUSR1);
    std::this_thread::sleep_for(2ms);
    if (!sent && Clock::now() - start > 300ms) {
      const std::uint64_t v = 7;
      ASSERT_EQ(tx.try_push(std::as_bytes(std::span(&v, 1))), Status::ok);
      sent = true;
    }
  }
  waiter.join();
  ::sigaction(SIGUSR1, &old, nullptr);
  EXPECT_EQ(timed_out, Status::timeout);
  EXPECT_GE(waited, 150ms) << "a signal ended the wait early";
  EXPECT_EQ(received, Status::ok);
  EXPECT_EQ(got, 7u);
  EXPECT_GT(g_signals.load() - at_start, 20) << "the waiter was hardly interrupted";
  Segment::unlink(shm.name());
}

}  // namespace
}  // namespace shmring

int main(int argc, char** argv) {
  ::testing::InitGoogleTest(&argc, argv);
  ::testing::AddGlobalTestEnvironment(new shmring::test::ShmLeakCheck);
  return RUN_ALL_TESTS();
}
