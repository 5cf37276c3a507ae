// Deadlines hold whatever the state of an MPMC ring: one 8-byte write to a
// counter (a peer scribbling it a lap ahead, or a lap of claims by processes
// that died) leaves a whole lap to recover and to pass over, and neither may
// hold a call past its deadline by more than the work of a bounded step
// (kMpmcRecoverStep positions recovered, kMpmcSkipStep skipped slots passed).
//
// The rings are 2^20 slots by default; SHMRING_DEADLINE_LOG2=24 runs them at
// 2^24 slots too (about 1 GiB of /dev/shm; sized down to what fits).
#include <gtest/gtest.h>
#include <sys/statvfs.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <thread>
#include <vector>

#include "shmring/mpmc_ring.hpp"
#include "shmring/segment.hpp"
#include "test_support.hpp"

namespace shmring {
namespace {

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

constexpr std::uint64_t kSlotSize = 16;

// How far past its deadline a call may run: the work of one recovery step
// and two tries at 1 us a slot (measured: 10-25 ns a slot on x86, so about
// 50x that, which covers sanitizers), plus 100 ms for being scheduled out on
// a loaded machine (a ThreadSanitizer run on a busy 2-vCPU VM once took 46
// ms for one try). A call that walks a lap instead is far past it: 2^20
// slots take 0.5-1 s under ThreadSanitizer, a lap of 2^24 0.2-1.4 s without.
constexpr auto kSlack = std::chrono::microseconds(kMpmcRecoverStep + 2 * kMpmcSkipStep) +
                        std::chrono::milliseconds(100);

std::uint64_t segment_bytes(unsigned log2) {
  Geometry g;
  EXPECT_EQ(compute_geometry(RingKind::mpmc, std::uint64_t{1} << log2, kSlotSize, g),
            GeometryCheck::ok);
  return g.segment_size;
}

// 20, and SHMRING_DEADLINE_LOG2 if set (down to the largest ring that fits in
// /dev/shm with room to spare).
std::vector<unsigned> ring_sizes() {
  std::vector<unsigned> sizes{20};
  const char* env = std::getenv("SHMRING_DEADLINE_LOG2");
  if (env == nullptr) return sizes;
  unsigned big = static_cast<unsigned>(std::strtoul(env, nullptr, 10));
  struct statvfs st {};
  if (::statvfs(test::kShmDir, &st) == 0) {
    const std::uint64_t free_bytes = std::uint64_t{st.f_bavail} * st.f_frsize;
    while (big > 20 && segment_bytes(big) + segment_bytes(big) / 4 > free_bytes) --big;
  }
  if (big > 20 && big <= 31) sizes.push_back(big);
  return sizes;
}

Segment make_ring(const std::string& name, unsigned log2) {
  CreateOptions o;
  o.kind = RingKind::mpmc;
  o.capacity = std::uint64_t{1} << log2;
  o.slot_size = kSlotSize;
  return Segment::create(name, o);
}

std::span<const std::byte> bytes_of(const std::uint64_t (&v)[2]) {
  return std::as_bytes(std::span<const std::uint64_t, 2>(v));
}

// An MPMC ring of 2^log2 slots with both roles attached, and its view to
// scribble on the counters with.
struct ScribbleRing {
  explicit ScribbleRing(unsigned log2)
      : shm(std::to_string(log2)),
        seg(make_ring(shm.name(), log2)),
        capacity(seg.geometry().capacity),
        view(seg.base(), seg.geometry()),
        tx(MpmcProducer::attach(seg)),
        rx(MpmcConsumer::attach(seg)) {}

  // The ring carries a message again: {a, b} goes through whole.
  void expect_carries(std::uint64_t a, std::uint64_t b) {
    const std::uint64_t m[2] = {a, b};
    ASSERT_EQ(tx.try_push(bytes_of(m)), Status::ok) << "the lap was released";
    std::byte buf[kSlotSize];
    std::size_t size = 0;
    ASSERT_EQ(rx.try_pop(buf, size), Status::ok);
    ASSERT_EQ(size, sizeof m);
    std::uint64_t got[2];
    std::memcpy(got, buf, sizeof got);
    EXPECT_EQ(got[0], a);
    EXPECT_EQ(got[1], b);
  }

  test::UniqueShm shm;
  Segment seg;
  std::uint64_t capacity;
  MpmcView view;
  MpmcProducer tx;
  MpmcConsumer rx;
};

template <class F>
Clock::duration timed(F&& f) {
  const auto t0 = Clock::now();
  f();
  return Clock::now() - t0;
}

double us(Clock::duration d) { return std::chrono::duration<double, std::micro>(d).count(); }

// The enqueue counter written a lap ahead: a producer's push(1 ms) recovers in
// steps until its deadline and returns; a consumer's try_pop passes over a
// bounded number of the skipped slots; repeated calls recover and drain the
// whole lap, and the ring then carries messages again.
TEST(MpmcDeadlines, ScribbledEnqueueCounter) {
  for (const unsigned log2 : ring_sizes()) {
    SCOPED_TRACE("capacity 2^" + std::to_string(log2));
    ScribbleRing r(log2);
    const std::uint64_t capacity = r.capacity;
    const std::uint64_t deq = atomic::load_seq_cst(&r.view.consumer()->position);
    atomic::store_seq_cst(&r.view.producer()->position, deq + capacity);

    const std::uint64_t m[2] = {7, 8};
    constexpr auto kTimeout = 1ms;
    Status s = Status::ok;
    const auto push_time = timed([&] { s = r.tx.push(bytes_of(m), kTimeout); });
    EXPECT_EQ(s, Status::timeout) << "no consumer frees a slot";
    EXPECT_LE(push_time, kTimeout + kSlack);
    EXPECT_GE(r.tx.abandoned(), 1u) << "a call that gives up still recovers a step";
    std::printf(
        "capacity 2^%u: push(1 ms) returned after %.0f us (%.0f us past its deadline), "
        "%llu positions recovered\n",
        log2, us(push_time), us(push_time - kTimeout),
        static_cast<unsigned long long>(r.tx.abandoned()));

    // Nobody has consumed: where the consumers wait is recovered already, so
    // only the note of where the pass stopped lets the next call go on.
    const std::uint64_t recovered = r.tx.abandoned();
    EXPECT_EQ(r.tx.push(bytes_of(m), 0ns), Status::timeout);
    EXPECT_GT(r.tx.abandoned(), recovered) << "a later blocking call goes on with the pass";

    // Drain: each try_pop passes over at most kMpmcSkipStep skipped slots,
    // each recover() step recovers at most kMpmcRecoverStep positions, and
    // either one makes progress until the lap is through.
    std::byte buf[kSlotSize];
    std::size_t size = 0;
    Clock::duration slowest_pop{};
    Clock::duration slowest_step{};
    std::uint64_t pops = 0;
    for (;;) {
      const std::uint64_t before = atomic::load_seq_cst(&r.view.consumer()->position);
      if (before == deq + capacity) break;
      const auto t = timed([&] { s = r.rx.try_pop(buf, size); });
      ASSERT_EQ(s, Status::would_block) << "the lap holds no message";
      slowest_pop = std::max(slowest_pop, t);
      ++pops;
      const std::uint64_t passed = atomic::load_seq_cst(&r.view.consumer()->position) - before;
      ASSERT_LE(passed, kMpmcSkipStep) << "one try_pop passed over too many skipped slots";
      if (passed != 0) continue;
      const std::uint64_t abandoned = r.tx.abandoned();
      std::uint64_t n = 0;
      slowest_step = std::max(slowest_step, timed([&] { n = r.tx.recover(); }));
      ASSERT_LE(n, kMpmcRecoverStep) << "one recover() did more than a step";
      ASSERT_NE(n, 0u) << "the consumers wait at a dead position, yet nothing was recovered";
      ASSERT_EQ(r.tx.abandoned(), abandoned + n);
    }
    EXPECT_EQ(r.tx.abandoned(), capacity) << "every position of the lap recovered, once";
    EXPECT_LE(slowest_pop, kSlack);
    EXPECT_LE(slowest_step, kSlack);
    std::printf(
        "capacity 2^%u: the lap drained in %llu try_pop calls, slowest %.0f us; "
        "slowest recover() step %.0f us\n",
        log2, static_cast<unsigned long long>(pops), us(slowest_pop), us(slowest_step));

    ASSERT_NO_FATAL_FAILURE(r.expect_carries(7, 8));
  }
}

// The dequeue counter written a lap ahead of a full ring: a consumer's
// pop(1 ms) recovers the "claimed" lap in steps until its deadline; repeated
// steps release the lap, and producers go on.
TEST(MpmcDeadlines, ScribbledDequeueCounter) {
  for (const unsigned log2 : ring_sizes()) {
    SCOPED_TRACE("capacity 2^" + std::to_string(log2));
    ScribbleRing r(log2);
    const std::uint64_t capacity = r.capacity;
    for (std::uint64_t i = 0; i < capacity; ++i) {
      const std::uint64_t m[2] = {i, ~i};
      ASSERT_EQ(r.tx.try_push(bytes_of(m)), Status::ok);
    }
    atomic::store_seq_cst(&r.view.consumer()->position, capacity);

    std::byte buf[kSlotSize];
    std::size_t size = 0;
    constexpr auto kTimeout = 1ms;
    Status s = Status::ok;
    const auto pop_time = timed([&] { s = r.rx.pop(buf, size, kTimeout); });
    EXPECT_EQ(s, Status::timeout) << "nothing was published past the lap";
    EXPECT_LE(pop_time, kTimeout + kSlack);
    EXPECT_GE(r.rx.abandoned(), 1u);
    std::printf(
        "capacity 2^%u: pop(1 ms) returned after %.0f us (%.0f us past its deadline), "
        "%llu positions recovered\n",
        log2, us(pop_time), us(pop_time - kTimeout),
        static_cast<unsigned long long>(r.rx.abandoned()));

    Clock::duration slowest_step{};
    while (r.rx.abandoned() < capacity) {
      std::uint64_t n = 0;
      slowest_step = std::max(slowest_step, timed([&] { n = r.rx.recover(); }));
      ASSERT_LE(n, kMpmcRecoverStep);
      ASSERT_NE(n, 0u) << "a pass that stops at the step bound goes on in the next call";
    }
    EXPECT_EQ(r.rx.recover(), 0u);
    EXPECT_EQ(r.rx.abandoned(), capacity);
    EXPECT_LE(slowest_step, kSlack);
    std::printf("capacity 2^%u: slowest recover() step %.0f us\n", log2, us(slowest_step));

    ASSERT_NO_FATAL_FAILURE(r.expect_carries(1, 2));
  }
}

// A lap of dead claims appears while producer and consumer threads run with
// short timeouts: several producers recover it in steps (one at a time),
// consumers pass over it in bounded runs, every message arrives exactly
// once, and exactly the lap is counted as abandoned.
TEST(MpmcDeadlines, DeadLapUnderLoad) {
  test::UniqueShm shm;
  constexpr unsigned kLog2 = 15;  // 8 recovery steps a lap
  constexpr unsigned kProducers = 3;
  constexpr unsigned kConsumers = 3;
  constexpr std::uint64_t kPerProducer = 40000;  // past the dead lap twice over
  Segment seg = make_ring(shm.name(), kLog2);
  const std::uint64_t capacity = seg.geometry().capacity;
  MpmcView view(seg.base(), seg.geometry());

  std::vector<std::atomic<std::uint32_t>> seen(kProducers * kPerProducer);
  std::atomic<std::uint64_t> delivered{0};
  std::atomic<std::uint64_t> errors{0};
  // A wedged ring fails the test instead of hanging it.
  const auto give_up = Clock::now() + 60s;
  std::vector<std::thread> threads;
  std::atomic<unsigned> waiting{0};
  std::atomic<bool> scribbled{false};
  for (unsigned p = 0; p < kProducers; ++p) {
    threads.emplace_back([&, p] {
      auto tx = MpmcProducer::attach(seg);
      bool waited = false;
      for (std::uint64_t i = 0; i < kPerProducer;) {
        if (i == kPerProducer / 4 && !waited) {  // the lap goes dead with 3/4 to come
          waited = true;
          ++waiting;
          while (!scribbled.load()) std::this_thread::yield();
        }
        const std::uint64_t m[2] = {p, i};
        const Status s = tx.push(bytes_of(m), 1ms);
        if (s == Status::ok) {
          ++i;
        } else if (s != Status::timeout || Clock::now() > give_up) {
          ++errors;
          return;
        }
      }
    });
  }
  for (unsigned c = 0; c < kConsumers; ++c) {
    threads.emplace_back([&] {
      auto rx = MpmcConsumer::attach(seg);
      std::byte buf[kSlotSize];
      std::size_t size = 0;
      while (delivered.load() < kProducers * kPerProducer) {
        const Status s = rx.pop(buf, size, 1ms);
        // closed: the last producer left while the other consumers still
        // hold the last messages.
        if ((s == Status::timeout || s == Status::closed) && Clock::now() < give_up) continue;
        std::uint64_t m[2];
        std::memcpy(m, buf, sizeof m);
        if (s != Status::ok || size != sizeof m || m[0] >= kProducers || m[1] >= kPerProducer) {
          ++errors;
          return;
        }
        seen[m[0] * kPerProducer + m[1]].fetch_add(1);
        ++delivered;
      }
      if (rx.abandoned() != 0) ++errors;  // no live consumer's claim was taken
    });
  }
  // A whole lap claimed at once by nobody, with more than two laps of
  // messages still to come (so the producers cannot finish before all of it
  // is recovered).
  while (waiting.load() < kProducers) std::this_thread::yield();
  atomic::fetch_add(&view.producer()->position, capacity);
  scribbled.store(true);
  for (auto& t : threads) t.join();
  const std::uint64_t deq = atomic::load_seq_cst(&view.consumer()->position);
  const std::uint64_t enq = atomic::load_seq_cst(&view.producer()->position);
  EXPECT_EQ(deq, enq) << "the consumers stopped at position " << deq << ": committed "
                      << view.trailer(deq)->committed << ", released "
                      << view.trailer(deq)->released << ", flags " << view.trailer(deq)->flags;
  EXPECT_EQ(errors.load(), 0u);
  EXPECT_EQ(delivered.load(), kProducers * kPerProducer);
  std::uint64_t once = 0;
  for (const auto& n : seen) once += n.load() == 1;
  EXPECT_EQ(once, kProducers * kPerProducer) << "every message delivered exactly once";
  // The producers recovered it between them (abandoned is the side's count).
  EXPECT_EQ(atomic::load_seq_cst(&view.producer()->abandoned), capacity);
}

}  // namespace
}  // namespace shmring
