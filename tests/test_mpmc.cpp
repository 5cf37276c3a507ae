// MPMC ring: white-box boundary states, claims and aborts, several handles
// interleaved in one thread, the attached counters, blocking forms.
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <cstring>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "shmring/error.hpp"
#include "shmring/mpmc_ring.hpp"
#include "shmring/mpmc_view.hpp"
#include "test_support.hpp"

namespace shmring {
namespace {

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;
using test::as_bytes;
using test::message;

Status push(MpmcProducer& p, const std::string& m) { return p.try_push(as_bytes(m)); }

std::optional<std::string> pop(MpmcConsumer& c, Status* status = nullptr,
                               std::size_t buffer = 4096) {
  std::vector<std::byte> buf(buffer);
  std::size_t size = ~std::size_t{0};
  const Status s = c.try_pop(buf, size);
  if (status != nullptr) *status = s;
  if (s != Status::ok) return std::nullopt;
  return test::to_string({buf.data(), size});
}

void write_claim_slot(WriteClaim& c, std::size_t i, const std::string& m) {
  std::memcpy(c[i].data(), m.data(), m.size());
  ASSERT_EQ(c.set_size(i, m.size()), Status::ok);
}

// A ring of `capacity` slots with a producer and a consumer attached.
using MpmcFixture = test::RingFixture<RingKind::mpmc, MpmcProducer, MpmcConsumer>;

// ---- empty, full, wrap ----------------------------------------------------------

TEST(MpmcBoundary, EmptyRing) {
  MpmcFixture f;
  f.expect_empty();
  const ReadClaim r = f.rx.try_peek(4);
  EXPECT_TRUE(r.empty());
  EXPECT_EQ(r.status(), Status::would_block);
  EXPECT_EQ(f.control()->consumer.position, 0u) << "an empty pop claims nothing";
}

TEST(MpmcBoundary, FullRing) {
  MpmcFixture f(4, 32);
  for (std::uint64_t i = 0; i < 4; ++i) ASSERT_EQ(push(f.tx, message(i, 32)), Status::ok);
  EXPECT_EQ(push(f.tx, "no room"), Status::would_block);
  const WriteClaim c = f.tx.try_claim(1);
  EXPECT_TRUE(c.empty());
  EXPECT_EQ(c.status(), Status::would_block);
  EXPECT_EQ(f.control()->producer.position, 4u) << "a full push claims nothing";
  EXPECT_EQ(pop(f.rx), message(0, 32));
  EXPECT_EQ(push(f.tx, message(4, 32)), Status::ok);
  EXPECT_EQ(push(f.tx, "no room"), Status::would_block);
  for (std::uint64_t i = 1; i <= 4; ++i) EXPECT_EQ(pop(f.rx), message(i, 32));
  f.expect_empty();
}

// An empty span has a null data(); memcpy must never see it.
TEST(MpmcBoundary, EmptySpansPushAndPopEmptyMessages) {
  MpmcFixture f(4, 16);
  ASSERT_EQ(f.tx.try_push({}), Status::ok);
  std::size_t n = 99;
  ASSERT_EQ(f.rx.try_pop({}, n), Status::ok);
  EXPECT_EQ(n, 0u);
  const char x = 'x';
  ASSERT_EQ(f.tx.try_push(std::as_bytes(std::span(&x, 1))), Status::ok);
  EXPECT_EQ(f.rx.try_pop({}, n), Status::too_large);
  EXPECT_EQ(n, 1u);
  EXPECT_EQ(pop(f.rx), "x") << "kept for a buffer that fits";
  f.expect_empty();
}

TEST(MpmcBoundary, TooLargeMessageLeavesTheRingUnchanged) {
  MpmcFixture f(4, 32);
  ASSERT_EQ(push(f.tx, "earlier"), Status::ok);
  EXPECT_EQ(push(f.tx, std::string(33, 'x')), Status::too_large);
  EXPECT_EQ(f.tx.push(as_bytes(std::string(33, 'x')), 1s), Status::too_large);
  EXPECT_EQ(f.control()->producer.position, 1u);
  EXPECT_EQ(push(f.tx, std::string(32, 'y')), Status::ok) << "exactly the slot size fits";
  EXPECT_EQ(pop(f.rx), "earlier");
  EXPECT_EQ(pop(f.rx), std::string(32, 'y'));
  f.expect_empty();
}

class MpmcWrap : public ::testing::TestWithParam<std::uint64_t> {};

TEST_P(MpmcWrap, ManyLapsInOrder) {
  const std::uint64_t capacity = GetParam();
  MpmcFixture f(capacity, 40);
  std::uint64_t sent = 0;
  std::uint64_t received = 0;
  for (std::uint64_t round = 0; round < 500 * capacity; ++round) {
    const std::uint64_t burst = 1 + round % capacity;
    for (std::uint64_t i = 0; i < burst; ++i)
      ASSERT_EQ(push(f.tx, message(sent++, 40)), Status::ok);
    if (burst == capacity) {
      ASSERT_EQ(push(f.tx, "overflow"), Status::would_block);
    }
    for (std::uint64_t i = 0; i < burst; ++i) ASSERT_EQ(pop(f.rx), message(received++, 40));
    f.expect_empty();
  }
  EXPECT_EQ(f.control()->producer.position, sent);
  EXPECT_EQ(f.control()->consumer.position, received);
  // Every slot shows the turns of its last lap.
  for (std::uint64_t pos = sent - capacity; pos < sent; ++pos) {
    EXPECT_EQ(f.trailer(pos)->committed, pos + 1);
    EXPECT_EQ(f.trailer(pos)->released, pos + capacity);
  }
}

INSTANTIATE_TEST_SUITE_P(SmallCapacities, MpmcWrap, ::testing::Values(1u, 2u, 4u, 8u));

// Counters and turns set directly to just below 2^32; the ring runs across.
TEST(MpmcBoundary, PositionsFarFromZero) {
  MpmcFixture f(4, 32);
  const std::uint64_t start = (std::uint64_t{1} << 32) - 2;
  f.control()->producer.position = start;
  f.control()->consumer.position = start;
  for (std::uint64_t pos = start; pos < start + 4; ++pos) f.trailer(pos)->released = pos;
  for (std::uint64_t i = 0; i < 30; ++i) {
    ASSERT_EQ(push(f.tx, message(i, 32)), Status::ok);
    ASSERT_EQ(push(f.tx, message(i + 500, 32)), Status::ok);
    ASSERT_EQ(pop(f.rx), message(i, 32));
    ASSERT_EQ(pop(f.rx), message(i + 500, 32));
  }
  EXPECT_EQ(f.control()->producer.position, start + 60);
  f.expect_empty();
}

// ---- claims ---------------------------------------------------------------------

TEST(MpmcClaim, InvisibleUntilCommit) {
  MpmcFixture f(4, 64);
  WriteClaim c = f.tx.try_claim(1);
  ASSERT_EQ(c.size(), 1u);
  EXPECT_EQ(c[0].size(), 64u);
  EXPECT_EQ(f.control()->producer.position, 1u) << "the claim moved the shared counter";
  std::memcpy(c[0].data(), "hidden", 6);
  f.expect_empty();
  EXPECT_EQ(f.control()->consumer.position, 0u);
  ASSERT_EQ(c.commit(6), Status::ok);
  EXPECT_TRUE(c.empty());
  EXPECT_EQ(pop(f.rx), "hidden");
}

TEST(MpmcClaim, CommitTooLargeKeepsTheClaim) {
  MpmcFixture f(4, 64);
  WriteClaim c = f.tx.try_claim(1);
  std::memcpy(c[0].data(), "abc", 3);
  EXPECT_EQ(c.commit(65), Status::too_large);
  EXPECT_FALSE(c.empty());
  f.expect_empty();
  ASSERT_EQ(c.commit(3), Status::ok);
  EXPECT_EQ(pop(f.rx), "abc");
  WriteClaim none;
  EXPECT_EQ(none.commit(1), Status::would_block);
}

TEST(MpmcClaim, BatchAcrossTheWrap) {
  MpmcFixture f(8, 64);
  for (int i = 0; i < 5; ++i) ASSERT_EQ(push(f.tx, "warm-up"), Status::ok);
  for (int i = 0; i < 5; ++i) ASSERT_EQ(pop(f.rx), "warm-up");
  WriteClaim c = f.tx.try_claim(100);
  ASSERT_EQ(c.size(), 8u);
  EXPECT_EQ(c.position(0), 5u);
  EXPECT_EQ(c[3].data(), f.segment.base() + f.segment.geometry().slots_offset) << "wrapped";
  for (std::size_t i = 0; i < 8; ++i) write_claim_slot(c, i, message(i, 64));
  f.expect_empty();
  c.commit_batch();
  ReadClaim r = f.rx.try_peek(100);
  ASSERT_EQ(r.size(), 8u);
  for (std::size_t i = 0; i < 8; ++i) EXPECT_EQ(test::to_string(r[i]), message(i, 64));
  EXPECT_TRUE(push(f.tx, "x") == Status::would_block) << "peeked slots are not free yet";
  r.release(3);
  EXPECT_EQ(r.size(), 5u);
  EXPECT_EQ(test::to_string(r[0]), message(3, 64));
  WriteClaim room = f.tx.try_claim(100);
  EXPECT_EQ(room.size(), 3u) << "exactly the released slots";
  room.abort();
  r.release(100);  // more than it holds: all of it
  EXPECT_TRUE(r.empty());
  f.expect_empty();  // the three aborted slots are skipped
  EXPECT_EQ(f.control()->consumer.position, f.control()->producer.position);
}

TEST(MpmcClaim, AbortIsSkippedSilently) {
  MpmcFixture f(8, 64);
  ASSERT_EQ(push(f.tx, "first"), Status::ok);
  WriteClaim c = f.tx.try_claim(2);
  ASSERT_EQ(c.size(), 2u);
  write_claim_slot(c, 0, "never seen");
  ASSERT_EQ(push(f.tx, "second"), Status::ok);
  EXPECT_EQ(pop(f.rx), "first");
  f.expect_empty();  // the claimed slot blocks the consumers until it is resolved
  c.abort();
  EXPECT_TRUE(c.empty());
  EXPECT_EQ(f.trailer(1)->flags, kSlotSkipped);
  EXPECT_EQ(f.trailer(2)->flags, kSlotSkipped);
  EXPECT_EQ(f.trailer(1)->committed, 2u) << "an aborted slot is committed, marked skipped";
  EXPECT_EQ(pop(f.rx), "second");
  f.expect_empty();
  EXPECT_EQ(f.control()->consumer.position, 4u);
  // The skipped slots were released: the ring has its full capacity again.
  for (std::uint64_t i = 0; i < 8; ++i) ASSERT_EQ(push(f.tx, message(i, 64)), Status::ok);
  EXPECT_EQ(push(f.tx, "full"), Status::would_block);
  for (std::uint64_t i = 0; i < 8; ++i) EXPECT_EQ(pop(f.rx), message(i, 64));
  EXPECT_EQ(f.trailer(1)->flags, 0u) << "a reused slot is no longer skipped";
}

TEST(MpmcClaim, CommitBatchOfAPrefixSkipsTheRest) {
  MpmcFixture f(8, 64);
  WriteClaim c = f.tx.try_claim(6);
  ASSERT_EQ(c.size(), 6u);
  for (std::size_t i = 0; i < 6; ++i) write_claim_slot(c, i, message(i, 64));
  c.commit_batch(2);
  EXPECT_TRUE(c.empty());
  ASSERT_EQ(push(f.tx, "after"), Status::ok);
  EXPECT_EQ(pop(f.rx), message(0, 64));
  EXPECT_EQ(pop(f.rx), message(1, 64));
  EXPECT_EQ(pop(f.rx), "after") << "slots 2..5 are skipped";
  f.expect_empty();
  // commit(claim, bytes) publishes slot 0 and skips the rest too.
  WriteClaim d = f.tx.try_claim(3);
  ASSERT_EQ(d.size(), 3u);
  std::memcpy(d[0].data(), "only", 4);
  ASSERT_EQ(d.commit(4), Status::ok);
  EXPECT_EQ(pop(f.rx), "only");
  f.expect_empty();
  EXPECT_EQ(f.control()->consumer.position, 10u);
}

TEST(MpmcClaim, PeekReturnsRunsOfMessagesOnly) {
  MpmcFixture f(8, 64);
  ASSERT_EQ(push(f.tx, "a"), Status::ok);
  ASSERT_EQ(push(f.tx, "b"), Status::ok);
  WriteClaim gap = f.tx.try_claim(1);
  gap.abort();
  ASSERT_EQ(push(f.tx, "c"), Status::ok);
  ReadClaim r = f.rx.try_peek(8);
  ASSERT_EQ(r.size(), 2u) << "a skipped slot ends a run";
  EXPECT_EQ(test::to_string(r[0]), "a");
  EXPECT_EQ(test::to_string(r[1]), "b");
  r.release();
  ReadClaim s = f.rx.try_peek(8);
  ASSERT_EQ(s.size(), 1u);
  EXPECT_EQ(test::to_string(s[0]), "c");
  EXPECT_EQ(s.position(0), 3u);
  s.release();
}

// ---- copying pops ----------------------------------------------------------------

TEST(MpmcCopy, SmallBufferHoldsTheMessage) {
  MpmcFixture f(4, 64);
  MpmcConsumer other = MpmcConsumer::attach(f.segment);
  ASSERT_EQ(push(f.tx, "a longer message"), Status::ok);
  ASSERT_EQ(push(f.tx, "next"), Status::ok);
  std::byte small[4];
  std::size_t size = 0;
  EXPECT_EQ(f.rx.try_pop(small, size), Status::too_large);
  EXPECT_EQ(size, 16u);
  EXPECT_EQ(f.rx.try_pop(small, size), Status::too_large) << "held, not lost";
  // The held message is this handle's: another consumer gets the next one.
  EXPECT_EQ(pop(other), "next");
  EXPECT_EQ(pop(f.rx), "a longer message");
  f.expect_empty();
  Status s = Status::ok;
  EXPECT_FALSE(pop(other, &s));
  EXPECT_EQ(s, Status::would_block);
}

// A kept message goes back to the ring with its handle when no consumer
// claimed past it since: nothing is lost. Once another consumer claimed past
// it, it cannot go back: it is released unread (a claimed slot would stall
// every producer a lap later) and counted as abandoned.
TEST(MpmcCopy, KeptMessageGoesBackWithItsHandleUnlessOthersReadPastIt) {
  for (const bool read_past : {false, true}) {
    SCOPED_TRACE(read_past ? "another consumer read past it" : "nobody read past it");
    MpmcFixture f(2, 64);
    ASSERT_EQ(push(f.tx, "too long for you"), Status::ok);
    ASSERT_EQ(push(f.tx, "second"), Status::ok);
    {
      MpmcConsumer c = MpmcConsumer::attach(f.segment);
      std::byte small[2];
      std::size_t size = 0;
      ASSERT_EQ(c.try_pop(small, size), Status::too_large);
      EXPECT_EQ(f.rx.position(), 1u);
      if (read_past) {
        EXPECT_EQ(pop(f.rx), "second");
      }
      EXPECT_EQ(push(f.tx, "third"), Status::would_block) << "slot 0 is still claimed";
    }
    if (read_past) {
      EXPECT_EQ(f.rx.abandoned(), 1u);
      EXPECT_EQ(push(f.tx, "third"), Status::ok) << "slot 0 was released";
      EXPECT_EQ(pop(f.rx), "third");
    } else {
      EXPECT_EQ(f.rx.position(), 0u) << "handed back";
      EXPECT_EQ(f.rx.abandoned(), 0u);
      EXPECT_EQ(pop(f.rx), "too long for you");
      EXPECT_EQ(pop(f.rx), "second");
    }
    f.expect_empty();
  }
}

// ---- read-ahead -------------------------------------------------------------------

// One claim takes every readable message up to the read-ahead, and the
// calls hand them out in order, claiming no more until they are gone.
TEST(MpmcReadAhead, OneClaimServesSeveralCalls) {
  MpmcFixture f(16, 64);
  EXPECT_EQ(f.rx.read_ahead(), 1u);
  f.rx.set_read_ahead(4);
  EXPECT_EQ(f.rx.read_ahead(), 4u);
  for (int i = 0; i < 6; ++i) ASSERT_EQ(push(f.tx, message(i, 64)), Status::ok);
  EXPECT_EQ(f.rx.kept(), 0u);
  EXPECT_EQ(pop(f.rx), message(0, 64));
  EXPECT_EQ(f.rx.position(), 4u) << "one claim of four";
  EXPECT_EQ(f.rx.kept(), 3u);
  EXPECT_EQ(pop(f.rx), message(1, 64));
  EXPECT_EQ(pop(f.rx), message(2, 64));
  EXPECT_EQ(f.rx.position(), 4u);
  EXPECT_EQ(pop(f.rx), message(3, 64));
  // Only two are readable: the next claim takes those, without waiting.
  EXPECT_EQ(pop(f.rx), message(4, 64));
  EXPECT_EQ(f.rx.position(), 6u);
  EXPECT_EQ(pop(f.rx), message(5, 64));
  f.expect_empty();
  // A peek of more than the read-ahead takes what it asks for.
  for (int i = 6; i < 12; ++i) ASSERT_EQ(push(f.tx, message(i, 64)), Status::ok);
  ReadClaim c = f.rx.try_peek(5);
  ASSERT_EQ(c.size(), 5u);
  for (std::size_t i = 0; i < 5; ++i) EXPECT_EQ(test::to_string(c[i]), message(6 + i, 64));
  c.release();
  EXPECT_EQ(pop(f.rx), message(11, 64));
  f.expect_empty();
  f.rx.set_read_ahead(0);
  EXPECT_EQ(f.rx.read_ahead(), 1u) << "clamped to at least 1";
  f.rx.set_read_ahead(1000);
  EXPECT_EQ(f.rx.read_ahead(), 16u) << "clamped to the capacity";
}

// Messages read ahead are the handle's: another consumer reads the ones
// after them. The handle that goes hands back what it still holds when
// nobody claimed past it, and what it cannot hand back is counted.
TEST(MpmcReadAhead, HeldMessagesAreTheHandlesAndGoBackWithIt) {
  MpmcFixture f(16, 64);
  MpmcConsumer other = MpmcConsumer::attach(f.segment);
  for (int i = 0; i < 10; ++i) ASSERT_EQ(push(f.tx, message(i, 64)), Status::ok);
  {
    MpmcConsumer c = MpmcConsumer::attach(f.segment);
    c.set_read_ahead(4);
    EXPECT_EQ(pop(c), message(0, 64));
    EXPECT_EQ(pop(other), message(4, 64)) << "1-3 are read ahead by c";
    EXPECT_EQ(pop(c), message(1, 64));
  }
  // 2 and 3 could not go back (other claimed 4): released unread, counted.
  EXPECT_EQ(f.rx.abandoned(), 2u);
  {
    MpmcConsumer c = MpmcConsumer::attach(f.segment);
    c.set_read_ahead(8);
    EXPECT_EQ(pop(c), message(5, 64));
    EXPECT_EQ(f.rx.position(), 10u);
  }
  // 6-9 went back: nobody had claimed past them.
  EXPECT_EQ(f.rx.position(), 6u);
  EXPECT_EQ(f.rx.abandoned(), 2u);
  for (int i = 6; i < 10; ++i) EXPECT_EQ(pop(other), message(i, 64));
  f.expect_empty();
  // The ring is whole: a full lap goes through.
  for (int i = 0; i < 16; ++i) ASSERT_EQ(push(f.tx, message(100 + i, 64)), Status::ok);
  for (int i = 0; i < 16; ++i) EXPECT_EQ(pop(f.rx), message(100 + i, 64));
}

// A consumer asleep on an empty ring is woken by messages handed back.
TEST(MpmcReadAhead, HandedBackMessagesWakeASleepingConsumer) {
  MpmcFixture f(16, 64);
  for (int i = 0; i < 3; ++i) ASSERT_EQ(push(f.tx, message(i, 64)), Status::ok);
  auto c = std::make_optional(MpmcConsumer::attach(f.segment));
  c->set_read_ahead(4);
  EXPECT_EQ(pop(*c), message(0, 64));
  std::string got;
  Status status = Status::would_block;
  std::thread sleeper([&] {
    std::byte buf[64];
    std::size_t size = 0;
    status = f.rx.pop(buf, size, 10s);
    if (status == Status::ok) got = test::to_string({buf, size});
  });
  // Handed back once the sleeper has gone to sleep.
  const MpmcView view(f.segment.base(), f.segment.geometry());
  const auto give_up = Clock::now() + 10s;
  while (atomic::load_seq_cst(&view.consumer_wait()->waiters) == 0 && Clock::now() < give_up) {
    std::this_thread::yield();
  }
  const bool slept = atomic::load_seq_cst(&view.consumer_wait()->waiters) != 0;
  c.reset();
  sleeper.join();
  ASSERT_TRUE(slept) << "the consumer never went to sleep";
  EXPECT_EQ(status, Status::ok);
  EXPECT_EQ(got, message(1, 64));
  EXPECT_EQ(pop(f.rx), message(2, 64));
}

// ---- several handles, one thread --------------------------------------------------

TEST(MpmcHandles, ProducersAndConsumersInterleaved) {
  MpmcFixture f(4, 64);
  MpmcProducer p2 = MpmcProducer::attach(f.segment);
  MpmcConsumer c2 = MpmcConsumer::attach(f.segment);
  // p1 claims position 0, p2 publishes position 1 before p1 commits.
  WriteClaim slow = f.tx.try_claim(1);
  ASSERT_EQ(slow.position(0), 0u);
  ASSERT_EQ(push(p2, "p2 first"), Status::ok);
  Status s = Status::ok;
  EXPECT_FALSE(pop(c2, &s)) << "position 0 is not committed yet";
  EXPECT_EQ(s, Status::would_block);
  write_claim_slot(slow, 0, "p1 slow");
  slow.commit_batch();
  EXPECT_EQ(pop(c2), "p1 slow");
  EXPECT_EQ(pop(f.rx), "p2 first");
  // c1 peeks position 2 and holds it; c2 takes position 3.
  ASSERT_EQ(push(f.tx, "two"), Status::ok);
  ASSERT_EQ(push(p2, "three"), Status::ok);
  ReadClaim held = f.rx.try_peek(1);
  ASSERT_EQ(held.size(), 1u);
  EXPECT_EQ(pop(c2), "three");
  // Positions 4, 5 reuse slots 0, 1; position 6 needs slot 2, still held by
  // c1, although slot 3 is free: the turns go in order.
  EXPECT_EQ(push(f.tx, "four"), Status::ok);
  EXPECT_EQ(push(p2, "five"), Status::ok);
  EXPECT_EQ(push(f.tx, "six"), Status::would_block);
  EXPECT_EQ(test::to_string(held[0]), "two");
  held.release();
  EXPECT_EQ(push(p2, "six"), Status::ok);
  EXPECT_EQ(pop(c2), "four");
  EXPECT_EQ(pop(f.rx), "five");
  EXPECT_EQ(pop(c2), "six");
  f.expect_empty();
  // Round-robin over both producers and consumers, many laps.
  std::uint64_t sent = 0;
  std::uint64_t received = 0;
  MpmcProducer* producers[] = {&f.tx, &p2};
  MpmcConsumer* consumers[] = {&f.rx, &c2};
  for (int round = 0; round < 400; ++round) {
    for (int k = 0; k < 3; ++k)
      ASSERT_EQ(push(*producers[(round + k) % 2], message(sent++, 64)), Status::ok);
    for (int k = 0; k < 3; ++k)
      ASSERT_EQ(pop(*consumers[(round * 7 + k) % 2]), message(received++, 64));
  }
}

TEST(MpmcHandles, AttachedCounters) {
  MpmcFixture f;
  EXPECT_EQ(f.control()->producer.attached, 1u);
  EXPECT_EQ(f.control()->consumer.attached, 1u);
  {
    MpmcProducer p2 = MpmcProducer::attach(f.segment);
    MpmcProducer p3 = MpmcProducer::attach(f.segment);
    MpmcConsumer c2 = MpmcConsumer::attach(f.segment);
    EXPECT_EQ(f.control()->producer.attached, 3u);
    EXPECT_EQ(f.control()->consumer.attached, 2u);
    MpmcProducer moved = std::move(p2);
    EXPECT_FALSE(p2);  // NOLINT(bugprone-use-after-move)
    EXPECT_EQ(f.control()->producer.attached, 3u) << "a move is not an attach";
    p3 = MpmcProducer();
    EXPECT_EQ(f.control()->producer.attached, 2u);
    std::error_code ec;
    MpmcConsumer c3 = MpmcConsumer::attach(f.segment, {}, ec);
    EXPECT_FALSE(ec);
    EXPECT_EQ(f.control()->consumer.attached, 3u);
  }
  EXPECT_EQ(f.control()->producer.attached, 1u);
  EXPECT_EQ(f.control()->consumer.attached, 1u);
  EXPECT_EQ(f.control()->producer.owner.identity, 0u) << "MPMC records no owner";
  f.tx = MpmcProducer();
  f.rx = MpmcConsumer();
  EXPECT_EQ(f.control()->producer.attached, 0u);
  EXPECT_EQ(f.control()->consumer.attached, 0u);
}

// ---- blocking forms ----------------------------------------------------------------

TEST(MpmcBlocking, TimeoutOnEmptyAndFull) {
  MpmcFixture f(2, 16);
  constexpr auto kTimeout = 30ms;
  std::byte buf[16];
  std::size_t size = 0;
  auto start = Clock::now();
  EXPECT_EQ(f.rx.pop(buf, size, kTimeout), Status::timeout);
  EXPECT_GE(Clock::now() - start, kTimeout);
  start = Clock::now();
  ReadClaim r = f.rx.peek(2, kTimeout);
  EXPECT_GE(Clock::now() - start, kTimeout);
  EXPECT_EQ(r.status(), Status::timeout);
  EXPECT_TRUE(r.empty());
  ASSERT_EQ(push(f.tx, "a"), Status::ok);
  ASSERT_EQ(push(f.tx, "b"), Status::ok);
  start = Clock::now();
  EXPECT_EQ(f.tx.push(as_bytes("c"), kTimeout), Status::timeout);
  EXPECT_GE(Clock::now() - start, kTimeout);
  start = Clock::now();
  WriteClaim w = f.tx.claim(1, kTimeout);
  EXPECT_GE(Clock::now() - start, kTimeout);
  EXPECT_EQ(w.status(), Status::timeout);
  EXPECT_TRUE(w.empty());
  EXPECT_EQ(f.control()->producer.position, 2u);
  EXPECT_EQ(f.control()->producer_wait.waiters, 0u);
  EXPECT_EQ(f.control()->consumer_wait.waiters, 0u);
  EXPECT_EQ(f.rx.pop(buf, size, kTimeout), Status::ok);
  EXPECT_EQ(test::to_string({buf, size}), "a");
}

// Producers that attach and leave (the stream left open) while a consumer
// waits are never taken for dead: the consumer's look at its producers may
// fall between a leaving producer's two steps (its record cleared, then its
// lock given up), and must not read that as a holder that died.
TEST(MpmcBlocking, ProducersComingAndGoingAreNotTakenForDead) {
  test::UniqueShm shm;
  Segment seg = test::make_ring(shm.name(), RingKind::mpmc, 4, 16);
  std::atomic<bool> done{false};
  std::thread churn([&] {
    for (int i = 0; i < 20000; ++i) {
      MpmcProducer p = MpmcProducer::attach(seg);
      p.set_close_on_exit(false);
    }
    done = true;
  });
  MpmcConsumer rx = MpmcConsumer::attach(seg, WaitPolicy{0, 0});
  std::uint64_t looks = 0;
  Status wrong = Status::timeout;
  while (!done.load()) {
    std::byte buf[16];
    std::size_t size = 0;
    const Status s = rx.pop(buf, size, 20us);
    ++looks;
    if (s != Status::timeout) {
      wrong = s;
      break;
    }
  }
  churn.join();
  EXPECT_EQ(wrong, Status::timeout) << to_string(wrong) << " after " << looks << " waits";
}

TEST(MpmcBlocking, SleepingConsumerIsWoken) {
  MpmcFixture f(4, 16);
  WaitPolicy sleep_at_once;
  sleep_at_once.spin_iterations = 0;
  sleep_at_once.yield_iterations = 0;
  MpmcConsumer rx = MpmcConsumer::attach(f.segment, sleep_at_once);
  MpmcProducer tx = MpmcProducer::attach(f.segment, sleep_at_once);
  std::thread producer([&] {
    for (int i = 0; i < 20; ++i) {
      EXPECT_EQ(tx.push(as_bytes("m" + std::to_string(i)), 30s), Status::ok);
    }
  });
  for (int i = 0; i < 20; ++i) {
    std::byte buf[16];
    std::size_t size = 0;
    ASSERT_EQ(rx.pop(buf, size, 30s), Status::ok);
    EXPECT_EQ(test::to_string({buf, size}), "m" + std::to_string(i));
  }
  producer.join();
}

// ---- the algorithm view over heap memory -------------------------------------------

TEST(MpmcViewHeap, ClaimCommitReadRelease) {
  test::HeapSegment mem(RingKind::mpmc, 4, 24);
  const MpmcView view(mem.base(), mem.geometry());
  Status s = Status::ok;
  EXPECT_EQ(view.claim_read(4, s).count, 0u);
  EXPECT_EQ(view.claim_write(0, s).count, 0u) << "max 0 claims nothing";
  const MpmcRange w = view.claim_write(3, s);
  EXPECT_EQ(w.first, 0u);
  EXPECT_EQ(w.count, 3u);
  EXPECT_EQ(mem.control()->producer.position, 3u);
  EXPECT_FALSE(view.data_ready());
  for (std::uint64_t i = 0; i < 3; ++i) view.set_length(i, static_cast<std::uint32_t>(i + 1));
  EXPECT_FALSE(view.commit(MpmcRange{0, 1}));
  EXPECT_TRUE(view.data_ready());
  mem.control()->consumer_wait.waiters = 1;
  EXPECT_TRUE(view.commit(MpmcRange{1, 1}, kSlotSkipped)) << "a sleeping consumer must be woken";
  mem.control()->consumer_wait.waiters = 0;
  view.commit(MpmcRange{2, 1});
  const MpmcRange r1 = view.claim_read(4, s);
  EXPECT_EQ(r1.first, 0u);
  EXPECT_EQ(r1.count, 1u) << "stops before the skipped slot";
  const MpmcRange r2 = view.claim_read(4, s);
  EXPECT_EQ(r2.first, 1u);
  EXPECT_EQ(r2.count, 1u) << "a skipped slot is a range of its own";
  EXPECT_TRUE(view.skipped(1));
  const MpmcRange r3 = view.claim_read(4, s);
  EXPECT_EQ(r3.first, 2u);
  EXPECT_EQ(r3.count, 1u);
  EXPECT_EQ(s, Status::ok);
  // Only slot 3 is free until the others are released.
  EXPECT_EQ(view.claim_write(4, s).count, 1u);
  EXPECT_EQ(view.claim_write(4, s).count, 0u);
  EXPECT_FALSE(view.space_ready());
  mem.control()->producer_wait.waiters = 1;
  EXPECT_TRUE(view.release(r1));
  mem.control()->producer_wait.waiters = 0;
  EXPECT_EQ(mem.trailer(0)->released, 4u);
  EXPECT_TRUE(view.space_ready());
  const MpmcRange w2 = view.claim_write(4, s);
  EXPECT_EQ(w2.first, 4u);
  EXPECT_EQ(w2.count, 1u);
}

}  // namespace
}  // namespace shmring
