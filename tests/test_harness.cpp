// The harness's own mechanisms (harness/): segments removed on every way
// out, a stale segment replaced but a live one refused, forked children
// watched as a group, and the numbers of a report. Whatever installs signal
// handlers or fills the segment registry runs in a forked child, so this
// process keeps neither.
#include <gtest/gtest.h>
#include <signal.h>
#include <unistd.h>

#include <chrono>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "harness/processes.hpp"
#include "harness/report.hpp"
#include "harness/segments.hpp"
#include "test_support.hpp"

namespace shmring {
namespace {

using namespace std::chrono_literals;

CreateOptions small_ring() {
  CreateOptions c;
  c.capacity = 4;
  c.slot_size = 64;
  return c;
}

// Waits (bounded) until `done()`; false if it never was.
template <class Done>
bool wait_until(Done&& done) {
  const auto deadline = std::chrono::steady_clock::now() + 30s;
  while (!done()) {
    if (std::chrono::steady_clock::now() >= deadline) return false;
    std::this_thread::sleep_for(1ms);
  }
  return true;
}

TEST(HarnessSegments, RemovedWhenTheProgramEnds) {
  test::UniqueShm a("a"), b("b");
  const pid_t child = harness::fork_child([&] {
    const harness::SegmentCleanup cleanup;
    harness::create_segment(a.name(), small_ring(), false);
    harness::create_segment(b.name(), small_ring(), false);
    return test::shm_exists(a.name()) && test::shm_exists(b.name()) ? 0 : 1;
  });
  ASSERT_GT(child, 0);
  const int status = harness::reap(child);
  EXPECT_TRUE(harness::exited_ok(status)) << harness::describe_exit(status);
  EXPECT_FALSE(test::shm_exists(a.name()));
  EXPECT_FALSE(test::shm_exists(b.name()));
}

TEST(HarnessSegments, RemovedOnAFatalSignal) {
  test::UniqueShm shm;
  // The child says when create_segment() has returned: the file shows before
  // the name is registered for removal, and a signal in between (a slow
  // machine, an emulator) would find nothing to remove.
  int ready[2];
  ASSERT_EQ(::pipe(ready), 0);
  const pid_t child = harness::fork_child([&] {
    const harness::SegmentCleanup cleanup;
    harness::create_segment(shm.name(), small_ring(), false);
    const char byte = 1;
    if (::write(ready[1], &byte, 1) != 1) return 3;
    // Short sleeps rather than pause(): under ThreadSanitizer a signal
    // reaches the program's handler at the next intercepted call, and one
    // that lands just before pause() would leave the child there for good.
    for (;;) std::this_thread::sleep_for(std::chrono::milliseconds(1));
    return 0;
  });
  ASSERT_GT(child, 0);
  ::close(ready[1]);
  char byte = 0;
  const ssize_t got = ::read(ready[0], &byte, 1);
  ::close(ready[0]);
  ASSERT_EQ(got, 1) << "the child did not create its segment";
  ::kill(child, SIGTERM);
  const int status = harness::reap(child);
  EXPECT_TRUE(harness::killed_by(status, SIGTERM)) << harness::describe_exit(status);
  EXPECT_FALSE(test::shm_exists(shm.name())) << "the handler did not remove the segment";
}

TEST(HarnessSegments, AStaleSegmentIsReplacedALiveOneRefused) {
  test::UniqueShm shm;
  // Made by a process that is gone: stale.
  const pid_t maker = harness::fork_child([&] {
    Segment::create(shm.name(), small_ring());
    return 0;
  });
  ASSERT_TRUE(harness::exited_ok(harness::reap(maker)));
  ASSERT_TRUE(test::shm_exists(shm.name()));
  auto replace = [&](bool replace_stale) {
    return harness::fork_child([&] {
      const harness::SegmentCleanup cleanup;
      try {
        const Segment s = harness::create_segment(shm.name(), small_ring(), replace_stale);
        return s.created() ? 0 : 1;
      } catch (const std::runtime_error& e) {
        return std::string(e.what()).find("running process") != std::string::npos ? 2 : 4;
      }
    });
  };
  // Without replace_stale the name is simply taken.
  int status = harness::reap(replace(false));
  ASSERT_TRUE(WIFEXITED(status)) << harness::describe_exit(status);
  EXPECT_EQ(WEXITSTATUS(status), 4) << "an existing name must be refused";
  status = harness::reap(replace(true));
  EXPECT_TRUE(harness::exited_ok(status)) << harness::describe_exit(status);
  EXPECT_FALSE(test::shm_exists(shm.name())) << "the replacement was not removed at the end";

  // Made by this process, which runs: refused, and left alone.
  const Segment live = Segment::create(shm.name(), small_ring());
  status = harness::reap(replace(true));
  ASSERT_TRUE(WIFEXITED(status)) << harness::describe_exit(status);
  EXPECT_EQ(WEXITSTATUS(status), 2) << "a live creator's segment must be refused";
  EXPECT_TRUE(test::shm_exists(shm.name()));
}

TEST(HarnessSegments, OpenWaitsForTheCreatorThenGivesUp) {
  test::UniqueShm shm;
  const pid_t maker = harness::fork_child([&] {
    std::this_thread::sleep_for(50ms);  // the opener starts first
    Segment::create(shm.name(), small_ring());
    return 0;
  });
  const Segment s = harness::open_segment(shm.name(), {}, 30s);
  EXPECT_EQ(s.geometry().capacity, 4u);
  EXPECT_TRUE(harness::exited_ok(harness::reap(maker)));
  test::UniqueShm missing("missing");
  EXPECT_THROW(harness::open_segment(missing.name(), {}, 20ms), Error);
}

TEST(HarnessChildren, OneEndingIsSeenAndTheRestStoppedAfterTheGrace) {
  std::vector<std::optional<int>> statuses;
  {
    harness::Children children;
    children.spawn([] { return 7; });
    children.spawn([] {
      for (;;) ::pause();
      return 0;
    });
    EXPECT_TRUE(wait_until([&] { return !children.all_running(); }));
    children.reap_all(10ms);
    statuses = children.statuses();
  }
  ASSERT_EQ(statuses.size(), 2u);
  ASSERT_TRUE(statuses[0] && statuses[1]);
  EXPECT_TRUE(WIFEXITED(*statuses[0]) && WEXITSTATUS(*statuses[0]) == 7);
  EXPECT_TRUE(harness::killed_by(*statuses[1], SIGKILL)) << harness::describe_exit(*statuses[1]);
}

TEST(HarnessChildren, NoneOutlivesTheGroup) {
  pid_t pid = 0;
  {
    harness::Children children;
    pid = children.spawn([] {
      for (;;) ::pause();
      return 0;
    });
  }
  EXPECT_EQ(::kill(pid, 0), -1) << "the destructor left child " << pid << " running";
}

TEST(HarnessReport, UnitsKeepThreeOrFourDigits) {
  EXPECT_EQ(harness::format_ns(351), "351 ns");
  EXPECT_EQ(harness::format_ns(45'260), "45.26 us");
  EXPECT_EQ(harness::format_ns(1'280'000), "1.28 ms");
  EXPECT_EQ(harness::format_ns(2.5e9), "2.50 s");
  EXPECT_EQ(harness::format_bytes(64), "64 B");
  EXPECT_EQ(harness::format_bytes(139'136), "135.9 KiB");
  EXPECT_EQ(harness::format_bytes(3u << 20), "3.0 MiB");
  EXPECT_EQ(harness::format_rate(41'470'000), "41.47 M");
  EXPECT_EQ(harness::format_rate(3'200), "3.20 k");
  EXPECT_EQ(harness::format_rate(950), "950");
}

TEST(HarnessReport, LatencySummaryIsNearestRank) {
  std::vector<std::int64_t> ns;
  for (std::int64_t v = 1000; v >= 1; --v) ns.push_back(v);  // unsorted on purpose
  EXPECT_EQ(harness::latency_summary(ns),
            "min 1 ns  p50 501 ns  p90 900 ns  p99 990 ns  p99.9 999 ns  max 1.00 us  mean 500 ns");
  std::vector<std::int64_t> none;
  EXPECT_EQ(harness::latency_summary(none), "");
}

}  // namespace
}  // namespace shmring
