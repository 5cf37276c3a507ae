// The role handles' event descriptors and end of stream (handle.hpp,
// docs/events.md): consumers and producers driven by poll or a WaitSet on
// event_fd() alone, every message checked by its sequence number; close ->
// drain -> Status::closed, within a process and across processes; a producer
// (or consumer) that died reported as Status::peer_dead; descriptors readable
// when the stream ends.
//
// Counts scale with SHMRING_STRESS_SCALE (and shrink under ThreadSanitizer).
#include <gtest/gtest.h>
#include <poll.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <array>
#include <chrono>
#include <cstring>
#include <random>
#include <thread>
#include <type_traits>

#include "shmring/event.hpp"
#include "shmring/mpmc_ring.hpp"
#include "shmring/segment.hpp"
#include "shmring/spsc_ring.hpp"
#include "stress_message.hpp"
#include "test_support.hpp"

namespace shmring {
namespace {

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;
using test::bytes_word;
using test::make_ring;
using test::readable;
using test::word_bytes;

// Far beyond any look (50 ms at most) and any scheduling delay of a loaded
// machine: a wait that runs into it lost a wake-up.
constexpr auto kWatchdog = 5s;

template <RingKind Kind>
struct Roles;
template <>
struct Roles<RingKind::spsc> {
  using Producer = SpscProducer;
  using Consumer = SpscConsumer;
};
template <>
struct Roles<RingKind::mpmc> {
  using Producer = MpmcProducer;
  using Consumer = MpmcConsumer;
};

// Irregular gaps, from none to tens of microseconds, so that the other side
// arms at every stage of a publication.
void jitter(std::mt19937& rng) {
  const unsigned gap = rng() % 8;
  if (gap == 0) std::this_thread::sleep_for(std::chrono::microseconds(rng() % 50));
  if (gap == 1) std::this_thread::yield();
}

// ---- a consumer driven by poll on its own descriptor ----------------------------

// The protocol of docs/events.md and nothing else: poll until readable, then
// try_pop until it says would_block (which re-armed the descriptor). The
// producer closes at the end; the loop must end with Status::closed after
// the last message, every message in order.
template <RingKind Kind>
void consumer_driven_by_poll() {
  test::UniqueShm shm;
  const Segment seg = make_ring(shm, Kind, 16);
  auto rx = Roles<Kind>::Consumer::attach(seg);
  auto tx = Roles<Kind>::Producer::attach(seg);
  const std::uint64_t total = test::msg::scaled(4000, 4);
  const int fd = rx.event_fd();
  ASSERT_GE(fd, 0);
  EXPECT_EQ(rx.event_fd(), fd) << "one descriptor per handle";
  std::thread producer([&] {
    std::mt19937 rng(3);
    for (std::uint64_t i = 0; i < total; ++i) {
      while (tx.try_push(word_bytes(i)) != Status::ok) std::this_thread::yield();
      jitter(rng);
    }
    EXPECT_EQ(tx.close(), Status::ok);
  });
  std::uint64_t taken = 0;
  std::uint64_t wakes = 0;
  Status last = Status::ok;
  std::array<std::byte, 64> buf{};
  while (last != Status::closed) {
    ASSERT_TRUE(readable(fd, kWatchdog)) << "message " << taken << " never made it readable";
    ++wakes;
    std::size_t size = 0;
    while ((last = rx.try_pop(buf, size)) == Status::ok) {
      ASSERT_EQ(bytes_word(buf), taken) << "out of sequence";
      ++taken;
    }
    ASSERT_TRUE(last == Status::would_block || last == Status::closed) << to_string(last);
  }
  producer.join();
  EXPECT_EQ(taken, total);
  // The end is sticky: the descriptor stays readable and every try says so.
  EXPECT_TRUE(readable(fd, 0ms));
  std::size_t size = 0;
  EXPECT_EQ(rx.try_pop(buf, size), Status::closed);
  EXPECT_EQ(rx.pop(buf, size, 10s), Status::closed);
  std::printf("%s: %llu messages, %llu wake-ups\n", to_string(Kind),
              static_cast<unsigned long long>(total), static_cast<unsigned long long>(wakes));
}

TEST(HandleEvents, SpscConsumerDrivenByPollUntilClosed) {
  consumer_driven_by_poll<RingKind::spsc>();
}
TEST(HandleEvents, MpmcConsumerDrivenByPollUntilClosed) {
  consumer_driven_by_poll<RingKind::mpmc>();
}

// ---- a producer waiting for room through its descriptor --------------------------

template <RingKind Kind>
void producer_driven_by_poll() {
  test::UniqueShm shm;
  const Segment seg = make_ring(shm, Kind, 4);
  auto rx = Roles<Kind>::Consumer::attach(seg);
  auto tx = Roles<Kind>::Producer::attach(seg);
  const std::uint64_t total = test::msg::scaled(3000, 4);
  std::uint64_t taken = 0;
  std::thread consumer([&] {
    std::mt19937 rng(5);
    std::array<std::byte, 64> buf{};
    for (;;) {
      std::size_t size = 0;
      const Status s = rx.pop(buf, size, kWatchdog);
      if (s == Status::closed) break;
      ASSERT_EQ(s, Status::ok);
      ASSERT_EQ(bytes_word(buf), taken) << "out of sequence";
      ++taken;
      jitter(rng);
    }
  });
  const int fd = tx.event_fd();
  std::uint64_t sent = 0;
  std::uint64_t full = 0;
  while (sent < total) {
    const Status s = tx.try_push(word_bytes(sent));
    if (s == Status::ok) {
      ++sent;
      continue;
    }
    ASSERT_EQ(s, Status::would_block);
    ++full;
    ASSERT_TRUE(readable(fd, kWatchdog)) << "room for message " << sent << " never signalled";
  }
  EXPECT_EQ(tx.close(), Status::ok);
  EXPECT_EQ(tx.try_push(word_bytes(0)), Status::closed) << "a closed producer pushes nothing";
  consumer.join();
  EXPECT_EQ(taken, total);
  EXPECT_GT(full, 0u) << "the ring of 4 never filled: the test tested nothing";
}

TEST(HandleEvents, SpscProducerWaitsForRoomThroughItsDescriptor) {
  producer_driven_by_poll<RingKind::spsc>();
}
TEST(HandleEvents, MpmcProducerWaitsForRoomThroughItsDescriptor) {
  producer_driven_by_poll<RingKind::mpmc>();
}

// ---- WaitSet over handles -----------------------------------------------------

// Two rings, one of each kind, in one WaitSet by their handles; each
// producer closes its ring at the end. Every report finds something (a
// message or the end), and both streams arrive whole.
TEST(HandleEvents, WaitSetOverSpscAndMpmcHandlesUntilBothClose) {
  test::UniqueShm shm_a("a");
  test::UniqueShm shm_b("b");
  const Segment a = make_ring(shm_a, RingKind::spsc, 8);
  const Segment b = make_ring(shm_b, RingKind::mpmc, 8);
  SpscConsumer rx_a = SpscConsumer::attach(a);
  MpmcConsumer rx_b = MpmcConsumer::attach(b);
  const std::uint64_t total = test::msg::scaled(2000, 4);
  std::thread pa([&] {
    SpscProducer tx = SpscProducer::attach(a);
    std::mt19937 rng(1);
    for (std::uint64_t i = 0; i < total; ++i) {
      ASSERT_EQ(tx.push(word_bytes(i), kWatchdog), Status::ok);
      jitter(rng);
    }
    // Closed by its end (close-on-exit).
  });
  std::thread pb([&] {
    MpmcProducer tx = MpmcProducer::attach(b);
    std::mt19937 rng(2);
    for (std::uint64_t i = 0; i < total; ++i) {
      ASSERT_EQ(tx.push(word_bytes(i), kWatchdog), Status::ok);
      jitter(rng);
    }
  });
  WaitSet set;
  set.add(rx_a, 1);
  set.add(rx_b, 2);
  std::uint64_t taken[3] = {0, 0, 0};
  std::uint64_t empty_reports = 0;
  std::array<std::byte, 64> buf{};
  while (set.size() != 0) {
    const auto& ready = set.wait(kWatchdog);
    ASSERT_FALSE(ready.empty()) << "a ring with news was never reported";
    for (const WaitSet::Ready& r : ready) {
      std::uint64_t got = 0;
      Status s;
      std::size_t size = 0;
      while ((s = r.tag == 1 ? rx_a.try_pop(buf, size) : rx_b.try_pop(buf, size)) == Status::ok) {
        ASSERT_EQ(bytes_word(buf), taken[r.tag]) << "ring " << r.tag << " out of sequence";
        ++taken[r.tag];
        ++got;
      }
      if (s == Status::closed) {
        set.remove(r.tag);
        continue;
      }
      ASSERT_EQ(s, Status::would_block);
      if (got == 0) ++empty_reports;
    }
  }
  pa.join();
  pb.join();
  EXPECT_EQ(taken[1], total);
  EXPECT_EQ(taken[2], total);
  // An MPMC report may find nothing only if another consumer was faster;
  // there is none here, and an SPSC report never does.
  EXPECT_EQ(empty_reports, 0u);
}

// ---- close, drain, closed ---------------------------------------------------------

// The producer is another process that pushes and leaves (close-on-exit);
// the consumer, waiting on its descriptor, reads every message, then
// Status::closed, and a blocking call returns it at once.
template <RingKind Kind>
void close_across_processes() {
  test::UniqueShm shm;
  const Segment seg = make_ring(shm, Kind, 8);
  auto rx = Roles<Kind>::Consumer::attach(seg);
  const int fd = rx.event_fd();
  const std::uint64_t total = test::msg::scaled(500, 4);
  const pid_t pid = ::fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    int rc = 0;
    try {
      const Segment mine = Segment::open(shm.name());
      auto tx = Roles<Kind>::Producer::attach(mine);
      for (std::uint64_t i = 0; i < total && rc == 0; ++i) {
        if (tx.push(word_bytes(i), kWatchdog) != Status::ok) rc = 21;
      }
    } catch (...) {
      rc = 22;
    }
    ::_exit(rc);  // after the producer's end: it closed the stream
  }
  std::uint64_t taken = 0;
  Status s = Status::ok;
  std::array<std::byte, 64> buf{};
  while (s != Status::closed) {
    ASSERT_TRUE(readable(fd, kWatchdog)) << "after message " << taken;
    std::size_t size = 0;
    while ((s = rx.try_pop(buf, size)) == Status::ok) {
      ASSERT_EQ(bytes_word(buf), taken);
      ++taken;
    }
    ASSERT_TRUE(s == Status::would_block || s == Status::closed) << to_string(s);
  }
  EXPECT_EQ(test::wait_child(pid), 0) << "21: a push failed, 22: an exception";
  EXPECT_EQ(taken, total);
  const auto start = Clock::now();
  std::size_t size = 0;
  EXPECT_EQ(rx.pop(buf, size, 30s), Status::closed);
  EXPECT_LT(Clock::now() - start, 10s) << "a blocking pop waited on a closed stream";
  ReadClaim claim = rx.peek(1, 30s);
  EXPECT_EQ(claim.status(), Status::closed);
}

TEST(HandleEnd, SpscCloseDrainClosedAcrossProcesses) { close_across_processes<RingKind::spsc>(); }
TEST(HandleEnd, MpmcCloseDrainClosedAcrossProcesses) { close_across_processes<RingKind::mpmc>(); }

// A consumer asleep in a blocking pop (futex, no descriptor) is woken by the
// close: the pop returns closed long before its deadline.
TEST(HandleEnd, CloseWakesABlockingPop) {
  test::UniqueShm shm;
  const Segment seg = make_ring(shm, RingKind::spsc, 8);
  SpscConsumer rx = SpscConsumer::attach(seg);
  SpscProducer tx = SpscProducer::attach(seg);
  std::atomic<bool> popping{false};
  Status got = Status::ok;
  std::thread consumer([&] {
    std::array<std::byte, 64> buf{};
    std::size_t size = 0;
    popping = true;
    got = rx.pop(buf, size, 60s);
  });
  while (!popping) std::this_thread::yield();
  EXPECT_EQ(tx.close(), Status::ok);
  EXPECT_EQ(tx.close(), Status::ok) << "closing twice is harmless";
  consumer.join();  // the test's own timeout catches a pop that never returns
  EXPECT_EQ(got, Status::closed);
  EXPECT_TRUE(tx.closed());
}

// With close-on-exit off, a producer's end leaves the stream open: the
// consumer times out, and a producer that attaches later goes on. A closed
// stream is reopened by the next producer that attaches.
TEST(HandleEnd, CloseOnExitOffAndReopenByAttach) {
  test::UniqueShm shm;
  const Segment seg = make_ring(shm, RingKind::spsc, 8);
  SpscConsumer rx = SpscConsumer::attach(seg);
  std::array<std::byte, 64> buf{};
  std::size_t size = 0;
  {
    SpscProducer tx = SpscProducer::attach(seg);
    EXPECT_TRUE(tx.close_on_exit());
    tx.set_close_on_exit(false);
    ASSERT_EQ(tx.try_push(word_bytes(1)), Status::ok);
  }
  EXPECT_EQ(rx.pop(buf, size, 0ms), Status::ok);
  EXPECT_EQ(rx.pop(buf, size, 1ms), Status::timeout) << "no close: the stream goes on";
  {
    SpscProducer tx = SpscProducer::attach(seg);
    ASSERT_EQ(tx.try_push(word_bytes(2)), Status::ok);
  }  // closes
  EXPECT_EQ(rx.try_pop(buf, size), Status::ok);
  EXPECT_EQ(bytes_word(buf), 2u);
  EXPECT_EQ(rx.try_pop(buf, size), Status::closed);
  SpscProducer again = SpscProducer::attach(seg);
  EXPECT_EQ(rx.try_pop(buf, size), Status::would_block) << "attach reopens the stream";
  ASSERT_EQ(again.try_push(word_bytes(3)), Status::ok);
  EXPECT_EQ(rx.try_pop(buf, size), Status::ok);
}

// MPMC: the last producer out closes; an explicit close() ends the stream
// for every consumer while others are attached.
TEST(HandleEnd, MpmcLastProducerOutCloses) {
  test::UniqueShm shm;
  const Segment seg = make_ring(shm, RingKind::mpmc, 8);
  MpmcConsumer rx = MpmcConsumer::attach(seg);
  std::array<std::byte, 64> buf{};
  std::size_t size = 0;
  {
    MpmcProducer first = MpmcProducer::attach(seg);
    {
      MpmcProducer second = MpmcProducer::attach(seg);
      ASSERT_EQ(second.try_push(word_bytes(1)), Status::ok);
    }
    EXPECT_EQ(rx.try_pop(buf, size), Status::ok);
    EXPECT_EQ(rx.try_pop(buf, size), Status::would_block) << "a producer is still there";
    ASSERT_EQ(first.try_push(word_bytes(2)), Status::ok);
  }
  EXPECT_EQ(rx.try_pop(buf, size), Status::ok);
  EXPECT_EQ(rx.try_pop(buf, size), Status::closed);

  MpmcProducer a = MpmcProducer::attach(seg);
  MpmcProducer b = MpmcProducer::attach(seg);
  EXPECT_EQ(rx.try_pop(buf, size), Status::would_block);
  EXPECT_EQ(a.close(), Status::ok);
  EXPECT_EQ(rx.try_pop(buf, size), Status::closed);
  EXPECT_EQ(a.try_push(word_bytes(3)), Status::closed);
  EXPECT_EQ(b.try_push(word_bytes(4)), Status::ok) << "the others' pushes still go in";
  EXPECT_EQ(rx.try_pop(buf, size), Status::ok);
}

// ---- peer death ---------------------------------------------------------------------

// A producer process publishes some messages and is killed: the consumer
// reads them, then Status::peer_dead, from a blocking pop and through its
// descriptor.
template <RingKind Kind>
void dead_producer_detected() {
  test::UniqueShm shm;
  const Segment seg = make_ring(shm, Kind, 8);
  auto rx = Roles<Kind>::Consumer::attach(seg);
  const int fd = rx.event_fd();
  const pid_t pid = ::fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    const Segment mine = Segment::open(shm.name());
    auto tx = Roles<Kind>::Producer::attach(mine);
    for (std::uint64_t i = 0; i < 3; ++i) (void)tx.try_push(word_bytes(i));
    ::raise(SIGKILL);  // no destructor runs: nothing closes the stream
    ::_exit(1);
  }
  int status = 0;
  ASSERT_EQ(::waitpid(pid, &status, 0), pid);
  ASSERT_TRUE(WIFSIGNALED(status));
  std::array<std::byte, 64> buf{};
  std::size_t size = 0;
  for (std::uint64_t i = 0; i < 3; ++i) {
    ASSERT_EQ(rx.pop(buf, size, kWatchdog), Status::ok) << "message " << i;
    EXPECT_EQ(bytes_word(buf), i);
  }
  // Through the descriptor: no publisher will ever signal, the look finds
  // the death.
  EXPECT_EQ(rx.try_pop(buf, size), Status::would_block) << "try_ alone does not probe";
  ASSERT_TRUE(readable(fd, kWatchdog)) << "a dead producer never made the descriptor readable";
  EXPECT_EQ(rx.try_pop(buf, size), Status::peer_dead);
  const auto start = Clock::now();
  EXPECT_EQ(rx.pop(buf, size, 30s), Status::peer_dead);
  EXPECT_LT(Clock::now() - start, 10s);
}

TEST(HandlePeer, SpscDeadProducerIsPeerDead) { dead_producer_detected<RingKind::spsc>(); }
TEST(HandlePeer, MpmcDeadProducerIsPeerDead) { dead_producer_detected<RingKind::mpmc>(); }

// A consumer process is killed while the ring is full: the producer's
// blocking push says peer_dead rather than wait for room nobody will make.
template <RingKind Kind>
void dead_consumer_detected() {
  test::UniqueShm shm;
  const Segment seg = make_ring(shm, Kind, 4);
  auto tx = Roles<Kind>::Producer::attach(seg);
  std::size_t sent = 0;
  while (tx.try_push(word_bytes(sent)) == Status::ok) ++sent;
  ASSERT_EQ(sent, 4u);
  EXPECT_EQ(tx.push(word_bytes(9), 1ms), Status::timeout) << "no consumer yet: it may still come";
  const pid_t pid = ::fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    const Segment mine = Segment::open(shm.name());
    auto rx = Roles<Kind>::Consumer::attach(mine);
    ::raise(SIGKILL);
    ::_exit(1);
  }
  int status = 0;
  ASSERT_EQ(::waitpid(pid, &status, 0), pid);
  const auto start = Clock::now();
  EXPECT_EQ(tx.push(word_bytes(9), 30s), Status::peer_dead);
  EXPECT_LT(Clock::now() - start, 10s);
  // A new consumer takes over (MPMC: joins) and room comes again.
  auto rx = Roles<Kind>::Consumer::attach(seg);
  std::array<std::byte, 64> buf{};
  std::size_t size = 0;
  ASSERT_EQ(rx.try_pop(buf, size), Status::ok);
  EXPECT_EQ(tx.push(word_bytes(9), kWatchdog), Status::ok);
}

TEST(HandlePeer, SpscDeadConsumerIsPeerDeadForAFullProducer) {
  dead_consumer_detected<RingKind::spsc>();
}
TEST(HandlePeer, MpmcDeadConsumerIsPeerDeadForAFullProducer) {
  dead_consumer_detected<RingKind::mpmc>();
}

// ---- errors -------------------------------------------------------------------------

TEST(HandleEvents, ClearErrors) {
  SpscConsumer empty;
  EXPECT_THROW((void)empty.event_fd(), Error);
  EXPECT_FALSE(empty.has_event_fd());
  test::UniqueShm shm;
  const Segment seg = make_ring(shm, RingKind::spsc, 8);
  SpscConsumer rx = SpscConsumer::attach(seg);
  (void)rx.event_fd();
  EXPECT_TRUE(rx.has_event_fd());
  const int rc = test::run_in_child([&] {
    try {
      (void)rx.event_fd();
    } catch (const Error& e) {
      return std::strstr(e.what(), "another process") != nullptr ? 0 : 2;
    }
    return 1;
  });
  EXPECT_EQ(rc, 0) << "a forked child's copy must refuse, naming why";
  SpscProducer tx;
  EXPECT_EQ(tx.close(), Status::detached);
}

}  // namespace
}  // namespace shmring
