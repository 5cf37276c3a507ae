// MPMC recovery of claims held by dead processes: a producer killed between
// claim and commit, a consumer killed between peek and release. Children
// are killed with SIGKILL at exactly those points; the survivors must not
// stall, must never read a half-written slot, and must count what was lost.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstring>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "shmring/error.hpp"
#include "shmring/mpmc_ring.hpp"
#include "shmring/segment.hpp"
#include "test_support.hpp"

namespace shmring {
namespace {

using namespace std::chrono_literals;

Segment make_mpmc(const std::string& name, std::uint64_t capacity = 8, std::uint32_t lanes = 0) {
  CreateOptions o;
  o.kind = RingKind::mpmc;
  o.capacity = capacity;
  o.slot_size = 64;
  o.lanes = lanes;
  return Segment::create(name, o);
}

std::span<const std::byte> bytes_of(const std::uint64_t& v) {
  return std::as_bytes(std::span<const std::uint64_t, 1>(&v, 1));
}

std::optional<std::uint64_t> try_pop_value(MpmcConsumer& rx) {
  std::byte buf[64];
  std::size_t size = 0;
  if (rx.try_pop(buf, size) != Status::ok) return std::nullopt;
  EXPECT_EQ(size, sizeof(std::uint64_t));
  std::uint64_t v = 0;
  std::memcpy(&v, buf, sizeof v);
  return v;
}

// Runs `body` in a child that is then killed with SIGKILL (body never
// returns normally: it ends with the kill).
template <class Body>
void die_in_child(Body&& body) {
  const pid_t pid = ::fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    body();
    ::raise(SIGKILL);
    ::_exit(99);
  }
  int status = 0;
  ASSERT_EQ(::waitpid(pid, &status, 0), pid);
  ASSERT_TRUE(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL) << "the child did not die";
}

// A producer in a child claims positions 0 and 1 and is killed holding them.
void producer_dies_holding_two_claims(const std::string& name) {
  die_in_child([&] {
    Segment s = Segment::open(name);
    auto dying = MpmcProducer::attach(s);
    const WriteClaim c = dying.try_claim(2);  // positions 0 and 1
    ::raise(SIGKILL);                         // with the claim held
  });
}

// A consumer thread popping up to `count` values into `got` (blocking pops
// of 10 s each; it stops at the first that fails).
std::thread consume_in_thread(const Segment& seg, std::size_t count,
                              std::vector<std::uint64_t>& got) {
  return std::thread([&seg, count, &got] {
    auto rx = MpmcConsumer::attach(seg);
    std::byte buf[64];
    std::size_t size = 0;
    while (got.size() < count && rx.pop(buf, size, 10s) == Status::ok) {
      std::uint64_t v = 0;
      std::memcpy(&v, buf, sizeof v);
      got.push_back(v);
    }
  });
}

TEST(MpmcRecovery, ProducerKilledBetweenClaimAndCommit) {
  test::UniqueShm shm;
  Segment seg = make_mpmc(shm.name());
  auto rx = MpmcConsumer::attach(seg);
  auto tx = MpmcProducer::attach(seg);
  die_in_child([&] {
    Segment s = Segment::open(shm.name());
    auto dying = MpmcProducer::attach(s);
    for (std::uint64_t v : {100u, 101u}) (void)dying.try_push(bytes_of(v));
    WriteClaim c = dying.try_claim(3);  // positions 2..4, half written, never committed
    std::memset(c[0].data(), 0xee, 10);
    ::raise(SIGKILL);  // with the claim held
  });
  EXPECT_EQ(try_pop_value(rx), 100u);
  EXPECT_EQ(try_pop_value(rx), 101u);
  EXPECT_EQ(try_pop_value(rx), std::nullopt) << "position 2 is claimed, not committed";
  const std::uint64_t v = 5;
  ASSERT_EQ(tx.try_push(bytes_of(v)), Status::ok);  // position 5, behind the dead claim
  EXPECT_EQ(try_pop_value(rx), std::nullopt) << "the consumers wait at position 2";

  EXPECT_EQ(tx.recover(), 3u);
  EXPECT_EQ(tx.abandoned(), 3u);
  EXPECT_EQ(tx.recover(), 0u) << "nothing left to recover";
  EXPECT_EQ(try_pop_value(rx), 5u) << "the dead claim is passed over, never read";
  EXPECT_EQ(try_pop_value(rx), std::nullopt);
}

// A producer facing a ring filled up behind a dead producer's two claims
// recovers them by itself: `push_all` pushes 0..19 with it, and a consumer
// thread receives every message in order. (The consumer gives up after 10 s
// without a message, so a failed push_all ends the test, never hangs it.)
template <class PushAll>
void expect_the_producer_recovers(PushAll push_all) {
  constexpr std::uint64_t kCount = 20;
  test::UniqueShm shm;
  Segment seg = make_mpmc(shm.name());
  auto tx = MpmcProducer::attach(seg);
  producer_dies_holding_two_claims(shm.name());
  std::vector<std::uint64_t> got;
  std::thread consumer = consume_in_thread(seg, kCount, got);
  push_all(tx, kCount);
  consumer.join();
  ASSERT_EQ(got.size(), kCount);
  for (std::uint64_t v = 0; v < kCount; ++v) EXPECT_EQ(got[v], v);
  EXPECT_EQ(tx.abandoned(), 2u);
}

TEST(MpmcRecovery, BlockingProducerRecoversByItself) {
  expect_the_producer_recovers([](MpmcProducer& tx, std::uint64_t count) {
    for (std::uint64_t v = 0; v < count; ++v) ASSERT_EQ(tx.push(bytes_of(v), 10s), Status::ok) << v;
  });
}

// The same with a producer that never blocks: it waits on its descriptor
// after each would_block (as an event loop does), and its try_push that
// found the ring full did the recovery step a blocking call does.
TEST(MpmcRecovery, DescriptorDrivenProducerRecoversByItself) {
  expect_the_producer_recovers([](MpmcProducer& tx, std::uint64_t count) {
    const int fd = tx.event_fd();
    for (std::uint64_t v = 0; v < count;) {
      const Status s = tx.try_push(bytes_of(v));
      if (s == Status::ok) {
        ++v;
        continue;
      }
      ASSERT_EQ(s, Status::would_block);
      ASSERT_TRUE(test::readable(fd, 10000ms)) << "the producer's descriptor stayed quiet at " << v;
    }
  });
}

// A claim held by a live handle is never taken from it, whatever waits.
TEST(MpmcRecovery, LiveClaimsAreNeverRecovered) {
  test::UniqueShm shm;
  Segment seg = make_mpmc(shm.name());
  auto slow = MpmcProducer::attach(seg);
  auto other = MpmcProducer::attach(seg);
  auto rx = MpmcConsumer::attach(seg);
  WriteClaim held = slow.try_claim(2);
  ASSERT_EQ(held.size(), 2u);
  const std::uint64_t v = 7;
  ASSERT_EQ(other.try_push(bytes_of(v)), Status::ok);
  EXPECT_EQ(other.recover(), 0u);
  EXPECT_EQ(rx.recover(), 0u);
  EXPECT_EQ(try_pop_value(rx), std::nullopt);
  for (std::size_t i = 0; i < 2; ++i) {
    const std::uint64_t x = 50 + i;
    std::memcpy(held[i].data(), &x, sizeof x);
    ASSERT_EQ(held.set_size(i, sizeof x), Status::ok);
  }
  held.commit_batch();
  EXPECT_EQ(try_pop_value(rx), 50u);
  EXPECT_EQ(try_pop_value(rx), 51u);
  EXPECT_EQ(try_pop_value(rx), 7u);
  EXPECT_EQ(other.abandoned(), 0u);
}

TEST(MpmcRecovery, ConsumerKilledWhileReading) {
  test::UniqueShm shm;
  Segment seg = make_mpmc(shm.name(), 4);
  auto tx = MpmcProducer::attach(seg);
  auto rx = MpmcConsumer::attach(seg);
  for (std::uint64_t v = 0; v < 4; ++v) ASSERT_EQ(tx.try_push(bytes_of(v)), Status::ok);
  die_in_child([&] {
    Segment s = Segment::open(shm.name());
    auto dying = MpmcConsumer::attach(s);
    const ReadClaim c = dying.try_peek(2);  // positions 0 and 1, read, never released
    ::raise(SIGKILL);                       // with the claim held
  });
  EXPECT_EQ(try_pop_value(rx), 2u);
  EXPECT_EQ(try_pop_value(rx), 3u);
  const std::uint64_t v = 4;
  EXPECT_EQ(tx.try_push(bytes_of(v)), Status::would_block)
      << "slot of position 4 waits for position 0's release";
  EXPECT_EQ(tx.recover(), 0u) << "producers do not release consumers' slots";
  EXPECT_EQ(rx.recover(), 2u);
  EXPECT_EQ(rx.abandoned(), 2u);
  for (std::uint64_t x = 4; x < 6; ++x) ASSERT_EQ(tx.try_push(bytes_of(x)), Status::ok);
  EXPECT_EQ(try_pop_value(rx), 4u);
  EXPECT_EQ(try_pop_value(rx), 5u);
}

// A blocking consumer recovers a dead consumer's slots by itself, so a
// producer waiting on them goes on.
TEST(MpmcRecovery, BlockingConsumerRecoversByItself) {
  test::UniqueShm shm;
  Segment seg = make_mpmc(shm.name(), 4);
  auto tx = MpmcProducer::attach(seg);
  for (std::uint64_t v = 0; v < 4; ++v) ASSERT_EQ(tx.try_push(bytes_of(v)), Status::ok);
  // Attached before the other dies: with no live consumer at all, a producer
  // waiting on a full ring would be told peer_dead instead.
  auto rx = MpmcConsumer::attach(seg);
  die_in_child([&] {
    Segment s = Segment::open(shm.name());
    auto dying = MpmcConsumer::attach(s);
    const ReadClaim c = dying.try_peek(4);
    ::raise(SIGKILL);  // with the claim held
  });
  std::atomic<bool> stop{false};
  std::atomic<std::uint64_t> received{0};
  std::thread consumer([&] {
    std::byte buf[64];
    std::size_t size = 0;
    while (!stop) {
      if (rx.pop(buf, size, 50ms) == Status::ok) ++received;
    }
  });
  for (std::uint64_t v = 4; v < 14; ++v) ASSERT_EQ(tx.push(bytes_of(v), 10s), Status::ok) << v;
  while (received < 10) std::this_thread::sleep_for(1ms);
  stop = true;
  consumer.join();
  EXPECT_EQ(received.load(), 10u);
  EXPECT_EQ(atomic::load_relaxed(&RingView(seg.base(), seg.geometry()).consumer()->abandoned), 4u);
}

// Every CPU handle holds one claim record; when all are held by live
// handles, attach says so; a dead holder's record is taken over.
TEST(MpmcRecovery, ClaimRecordsAreLimitedAndReused) {
  test::UniqueShm shm;
  Segment seg = make_mpmc(shm.name());
  die_in_child([&] {
    Segment s = Segment::open(shm.name());
    auto dying = MpmcProducer::attach(s);
    (void)dying;
  });
  std::vector<MpmcProducer> handles;
  for (std::size_t i = 0; i < kClaimRecords; ++i) handles.push_back(MpmcProducer::attach(seg));
  std::error_code ec;
  MpmcProducer one_more = MpmcProducer::attach(seg, WaitPolicy{}, ec);
  EXPECT_EQ(ec, make_error_code(errc::role_taken));
  EXPECT_NE(last_error_message().find("claim records"), std::string::npos) << last_error_message();
  handles.pop_back();
  EXPECT_TRUE(MpmcProducer::attach(seg));
}

// ---- lanes --------------------------------------------------------------------

// A producer that dies holding claims in its lane stalls that lane only.
// Any producer recovers them, whatever its own lane; the dead producer's
// lane goes to the next producer that attaches.
TEST(MpmcRecovery, DeadClaimsInAnotherLaneAreRecovered) {
  test::UniqueShm shm;
  Segment seg = make_mpmc(shm.name(), 16, 2);
  auto tx = MpmcProducer::attach(seg);
  ASSERT_EQ(tx.lane(), 0u);
  auto rx = MpmcConsumer::attach(seg);
  die_in_child([&] {
    Segment s = Segment::open(shm.name());
    auto dying = MpmcProducer::attach(s);  // lane 1
    if (dying.lane() != 1) ::_exit(3);
    const std::uint64_t v = 100;
    (void)dying.try_push(bytes_of(v));
    const WriteClaim c = dying.try_claim(2);  // lane 1's positions 1 and 2, never committed
    ::raise(SIGKILL);
  });
  auto late = MpmcProducer::attach(seg);
  EXPECT_EQ(late.lane(), 1u) << "the dead producer's lane is free again";
  const std::uint64_t v0 = 7, v1 = 8;
  ASSERT_EQ(tx.try_push(bytes_of(v0)), Status::ok);
  ASSERT_EQ(late.try_push(bytes_of(v1)), Status::ok);  // lane 1's position 3
  std::vector<std::uint64_t> got;
  while (const std::optional<std::uint64_t> v = try_pop_value(rx)) got.push_back(*v);
  EXPECT_EQ(got, (std::vector<std::uint64_t>{7, 100})) << "lane 1 waits at the dead claim";
  EXPECT_EQ(tx.recover(), 2u) << "recovered by a producer of lane 0";
  EXPECT_EQ(tx.abandoned(), 2u);
  EXPECT_EQ(late.abandoned(), 2u);
  EXPECT_EQ(try_pop_value(rx), 8u) << "the dead claim is passed over, never read";
  EXPECT_EQ(try_pop_value(rx), std::nullopt);
}

// A consumer that dies holding a claim in one lane stalls that lane's
// producer a lap later; a live consumer recovers it.
TEST(MpmcRecovery, DeadConsumerClaimsInEachLaneAreRecovered) {
  test::UniqueShm shm;
  Segment seg = make_mpmc(shm.name(), 8, 2);
  auto a = MpmcProducer::attach(seg);
  auto b = MpmcProducer::attach(seg);
  MpmcProducer& lane1 = a.lane() == 1 ? a : b;
  auto rx = MpmcConsumer::attach(seg);  // home: lane 0
  for (std::uint64_t v = 0; v < 4; ++v) ASSERT_EQ(lane1.try_push(bytes_of(v)), Status::ok);
  die_in_child([&] {
    Segment s = Segment::open(shm.name());
    auto dying = MpmcConsumer::attach(s);
    const ReadClaim c = dying.try_peek(2);  // lane 1's positions 0 and 1, never released
    if (c.size() != 2) ::_exit(3);
    ::raise(SIGKILL);
  });
  EXPECT_EQ(try_pop_value(rx), 2u);
  EXPECT_EQ(try_pop_value(rx), 3u);
  const std::uint64_t v = 4;
  EXPECT_EQ(lane1.try_push(bytes_of(v)), Status::would_block) << "waits for position 0's release";
  EXPECT_EQ(rx.recover(), 2u);
  EXPECT_EQ(rx.abandoned(), 2u);
  ASSERT_EQ(lane1.try_push(bytes_of(v)), Status::ok);
  EXPECT_EQ(try_pop_value(rx), 4u);
}

}  // namespace
}  // namespace shmring
