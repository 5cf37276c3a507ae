// Claims as move-only objects that finish themselves, and the handle calls
// around them: each misuse that used to wedge a ring or publish under a
// writer is either impossible or a named status. Run for both ring kinds
// where the semantics agree.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdint>
#include <cstring>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

#include "shmring/shmring.hpp"
#include "test_support.hpp"

namespace shmring {
namespace {

using test::UniqueShm;

template <class Tx, class Rx>
struct Ring {
  static constexpr bool kMpmc = std::is_same_v<Tx, MpmcProducer>;
  explicit Ring(std::uint64_t capacity = 8) {
    CreateOptions o;
    o.kind = kMpmc ? RingKind::mpmc : RingKind::spsc;
    o.capacity = capacity;
    o.slot_size = 64;
    segment = Segment::create(shm.name(), o);
    tx = Tx::attach(segment);
    rx = Rx::attach(segment);
  }
  Status push(std::uint64_t v) { return tx.try_push(std::as_bytes(std::span(&v, 1))); }
  std::optional<std::uint64_t> pop() {
    std::uint64_t v = 0;
    std::size_t size = 0;
    const Status s = rx.try_pop(std::as_writable_bytes(std::span(&v, 1)), size);
    if (s != Status::ok) return std::nullopt;
    EXPECT_EQ(size, sizeof v);
    return v;
  }
  // Writes `v` into slot i of a claim.
  static void put(WriteClaim& c, std::size_t i, std::uint64_t v) {
    std::memcpy(c[i].data(), &v, sizeof v);
    ASSERT_EQ(c.set_size(i, sizeof v), Status::ok);
  }
  static std::uint64_t word(std::span<const std::byte> m) {
    std::uint64_t v = 0;
    EXPECT_EQ(m.size(), sizeof v);
    std::memcpy(&v, m.data(), sizeof v);
    return v;
  }
  UniqueShm shm;
  Segment segment;
  Tx tx;
  Rx rx;
};

using SpscRing = Ring<SpscProducer, SpscConsumer>;
using MpmcRing = Ring<MpmcProducer, MpmcConsumer>;

template <class R>
class Claims : public ::testing::Test {};
using Kinds = ::testing::Types<SpscRing, MpmcRing>;
TYPED_TEST_SUITE(Claims, Kinds);

// A write claim dropped unfinished gives its slots up: SPSC frees them, MPMC
// commits them as skipped. Either way the ring goes on, lap after lap (a
// dropped MPMC claim used to stall every consumer at its positions).
TYPED_TEST(Claims, DroppedWriteClaimAbortsAndTheRingGoesOn) {
  TypeParam r(4);
  std::uint64_t next = 0;
  for (int lap = 0; lap < 6; ++lap) {
    {
      WriteClaim c = r.tx.try_claim(3);
      ASSERT_EQ(c.size(), 3u);
      for (std::size_t i = 0; i < 3; ++i) TypeParam::put(c, i, 999);
    }  // dropped
    EXPECT_EQ(r.pop(), std::nullopt) << "nothing of a dropped claim is read";
    ASSERT_EQ(r.push(next), Status::ok) << "lap " << lap;
    EXPECT_EQ(r.pop(), next) << "lap " << lap;
    ++next;
  }
}

// A read claim dropped unfinished counts as read: the messages are not seen
// again and their slots are free.
TYPED_TEST(Claims, DroppedReadClaimReleases) {
  TypeParam r(4);
  for (std::uint64_t v = 0; v < 4; ++v) ASSERT_EQ(r.push(v), Status::ok);
  {
    ReadClaim c = r.rx.try_peek(2);
    ASSERT_EQ(c.size(), 2u);
    EXPECT_EQ(TypeParam::word(c[0]), 0u);
  }
  EXPECT_EQ(r.pop(), 2u);
  ASSERT_EQ(r.push(4), Status::ok) << "the dropped claim's slots are free";
  ASSERT_EQ(r.push(5), Status::ok);
  EXPECT_EQ(r.pop(), 3u);
  EXPECT_EQ(r.pop(), 4u);
  EXPECT_EQ(r.pop(), 5u);
}

// Finishing twice, or a claim that got nothing: a named status, no effect.
TYPED_TEST(Claims, FinishedAndFailedClaimsSayWhy) {
  TypeParam r(2);
  WriteClaim c = r.tx.try_claim(1);
  TypeParam::put(c, 0, 7);
  ASSERT_EQ(c.commit(8), Status::ok);
  EXPECT_TRUE(c.empty());
  EXPECT_EQ(c.status(), Status::finished);
  EXPECT_EQ(c.commit(8), Status::finished);
  EXPECT_EQ(c.commit_batch(), Status::finished);
  c.abort();  // nothing to abort: no effect
  ASSERT_EQ(r.push(8), Status::ok);
  WriteClaim none = r.tx.try_claim(1);
  EXPECT_EQ(none.status(), Status::would_block) << "the ring is full";
  EXPECT_EQ(none.commit(1), Status::would_block);

  ReadClaim m = r.rx.try_peek(2);
  ASSERT_EQ(m.size(), 2u);
  EXPECT_EQ(TypeParam::word(m[0]), 7u);
  EXPECT_EQ(TypeParam::word(m[1]), 8u);
  EXPECT_EQ(m.release(), Status::ok);
  EXPECT_EQ(m.release(), Status::finished);
  EXPECT_EQ(m.status(), Status::finished);
  EXPECT_EQ(r.pop(), std::nullopt);
}

// A claim follows its handle when the handle moves, and outlives it: the
// commit after the handle is gone still publishes, and the role stays held
// until then.
TYPED_TEST(Claims, ClaimOutlivesAndFollowsItsHandle) {
  TypeParam r(4);
  WriteClaim c = r.tx.try_claim(1);
  TypeParam::put(c, 0, 41);
  auto moved = std::move(r.tx);
  EXPECT_FALSE(r.tx);
  EXPECT_EQ(r.tx.try_push(std::as_bytes(std::span("x", 1))), Status::detached);
  EXPECT_EQ(r.tx.try_claim(1).status(), Status::detached);
  ASSERT_EQ(c.commit(8), Status::ok) << "the claim followed the moved handle";
  EXPECT_EQ(r.pop(), 41u);

  WriteClaim late = moved.try_claim(1);
  TypeParam::put(late, 0, 42);
  moved = decltype(moved)();  // the handle goes first
  if constexpr (!TypeParam::kMpmc) {
    std::error_code ec;
    (void)SpscProducer::attach(r.segment, {}, ec);
    EXPECT_EQ(ec, make_error_code(errc::role_taken)) << "the live claim keeps the role";
  }
  ASSERT_EQ(late.commit(8), Status::ok);
  EXPECT_EQ(r.pop(), 42u);
  if constexpr (!TypeParam::kMpmc) {
    EXPECT_TRUE(SpscProducer::attach(r.segment)) << "the role went with the last claim";
  }
}

// A copy of a claim in a forked child refuses to finish (wrong_process),
// and dropping it there changes nothing in the ring.
TYPED_TEST(Claims, ClaimInAForkedChildDoesNothing) {
  TypeParam r(4);
  ASSERT_EQ(r.push(1), Status::ok);
  WriteClaim w = r.tx.try_claim(1);
  TypeParam::put(w, 0, 2);
  ReadClaim m = r.rx.try_peek(1);
  ASSERT_EQ(m.size(), 1u);
  const int rc = test::run_in_child([&] {
    if (w.commit(8) != Status::wrong_process) return 1;
    if (m.release() != Status::wrong_process) return 2;
    WriteClaim dropped = std::move(w);
    return 0;  // `m` and `dropped` go with the child's memory; nothing changes
  });
  ASSERT_EQ(rc, 0);
  ASSERT_EQ(w.commit(8), Status::ok) << "the parent's claim is untouched";
  EXPECT_EQ(TypeParam::word(m[0]), 1u);
  ASSERT_EQ(m.release(), Status::ok);
  EXPECT_EQ(r.pop(), 2u);
}

// drain(): every readable message in place, in order, one release for all.
TYPED_TEST(Claims, DrainHandsEveryMessageInOrder) {
  TypeParam r(8);
  for (std::uint64_t v = 0; v < 6; ++v) ASSERT_EQ(r.push(v), Status::ok);
  std::vector<std::uint64_t> seen;
  const std::size_t n =
      r.rx.drain([&](std::span<const std::byte> m) { seen.push_back(TypeParam::word(m)); }, 4);
  EXPECT_EQ(n, 4u);
  EXPECT_EQ(seen, (std::vector<std::uint64_t>{0, 1, 2, 3}));
  EXPECT_EQ(r.rx.drain([&](std::span<const std::byte> m) { seen.push_back(TypeParam::word(m)); }),
            2u);
  EXPECT_EQ(seen.size(), 6u);
  EXPECT_EQ(seen.back(), 5u);
  EXPECT_EQ(r.rx.drain([](std::span<const std::byte>) {}), 0u) << "empty ring";
  EXPECT_EQ(r.rx.drain([](std::span<const std::byte>) {}, 8, std::chrono::milliseconds(1)), 0u);
}

// A handler that throws: the messages up to it count as read, the rest are
// handed out again, first.
TYPED_TEST(Claims, DrainKeepsWhatAThrowingHandlerDidNotReach) {
  TypeParam r(8);
  for (std::uint64_t v = 0; v < 5; ++v) ASSERT_EQ(r.push(v), Status::ok);
  std::vector<std::uint64_t> seen;
  EXPECT_THROW(r.rx.drain([&](std::span<const std::byte> m) {
    seen.push_back(TypeParam::word(m));
    if (seen.back() == 2) throw std::runtime_error("handler failed");
  }),
               std::runtime_error);
  EXPECT_EQ(seen, (std::vector<std::uint64_t>{0, 1, 2}));
  EXPECT_EQ(r.pop(), 3u) << "the rest stays, in order";
  EXPECT_EQ(r.pop(), 4u);
  EXPECT_EQ(r.pop(), std::nullopt);
}

// put_back(): a peek handed back unread is read again, first.
TYPED_TEST(Claims, PutBackIsReadAgain) {
  TypeParam r(8);
  for (std::uint64_t v = 0; v < 3; ++v) ASSERT_EQ(r.push(v), Status::ok);
  ReadClaim c = r.rx.try_peek(2);
  ASSERT_EQ(c.size(), 2u);
  ASSERT_EQ(c.put_back(), Status::ok);
  EXPECT_EQ(c.status(), Status::finished);
  EXPECT_EQ(r.pop(), 0u);
  // The rest of the put-back run, then the ring (MPMC hands out the kept run
  // as a claim of its own).
  std::vector<std::uint64_t> seen;
  while (r.rx.drain([&](std::span<const std::byte> m) { seen.push_back(TypeParam::word(m)); })) {
  }
  EXPECT_EQ(seen, (std::vector<std::uint64_t>{1, 2}));
}

// Both kinds take many messages in one call and report their position.
TYPED_TEST(Claims, PushManyAndPosition) {
  TypeParam r(4);
  const std::uint64_t a = 10, b = 11, c = 12;
  std::string big(100, 'x');
  const std::span<const std::byte> msgs[] = {
      std::as_bytes(std::span(&a, 1)), std::as_bytes(std::span(&b, 1)),
      std::as_bytes(std::span(big)), std::as_bytes(std::span(&c, 1))};
  EXPECT_EQ(r.tx.try_push_many(msgs), 2u) << "stops at the message that does not fit";
  EXPECT_EQ(r.tx.position(), 2u);
  EXPECT_EQ(r.pop(), 10u);
  EXPECT_EQ(r.rx.position(), 1u);
  EXPECT_EQ(r.pop(), 11u);
  const std::span<const std::byte> many[] = {msgs[0], msgs[1], msgs[3], msgs[0], msgs[1]};
  EXPECT_EQ(r.tx.try_push_many(many), 4u) << "stops when full";
  EXPECT_EQ(r.tx.position(), 6u);
}

// A handle's wait policy can be changed after attach.
TYPED_TEST(Claims, WaitPolicyIsSettable) {
  TypeParam r(2);
  WaitPolicy p;
  p.spin_iterations = 0;
  p.yield_iterations = 3;
  r.rx.set_wait_policy(p);
  EXPECT_EQ(r.rx.wait_policy().spin_iterations, 0u);
  EXPECT_EQ(r.rx.wait_policy().yield_iterations, 3u);
  std::uint64_t v = 0;
  std::size_t size = 0;
  EXPECT_EQ(r.rx.pop(std::as_writable_bytes(std::span(&v, 1)), size, std::chrono::milliseconds(1)),
            Status::timeout);
}

// ---- SPSC: one claim at a time ----------------------------------------------

// While a claim is live, the producer's other calls that take slots would
// publish the claimed slot under the writer (SPSC publishes in order): busy,
// nothing changed. Likewise a consumer with a live peek.
TEST(SpscClaims, CopyCallsWhileAClaimIsLiveAreBusy) {
  SpscRing r(8);
  WriteClaim c = r.tx.try_claim(1);
  ASSERT_EQ(c.size(), 1u);
  EXPECT_EQ(r.push(5), Status::busy);
  const std::uint64_t v = 6;
  const std::span<const std::byte> one[] = {std::as_bytes(std::span(&v, 1))};
  EXPECT_EQ(r.tx.try_push_many(one), 0u);
  EXPECT_EQ(r.tx.try_claim(1).status(), Status::busy);
  EXPECT_EQ(r.tx.claim(1, std::chrono::seconds(5)).status(), Status::busy) << "no wait";
  EXPECT_EQ(r.tx.push(std::as_bytes(std::span(&v, 1)), std::chrono::seconds(5)), Status::busy);
  EXPECT_EQ(r.tx.position(), 0u);
  SpscRing::put(c, 0, 4);
  ASSERT_EQ(c.commit(8), Status::ok);
  ASSERT_EQ(r.push(5), Status::ok) << "free again once the claim is finished";

  ReadClaim m = r.rx.try_peek(1);
  ASSERT_EQ(m.size(), 1u);
  EXPECT_EQ(r.pop(), std::nullopt);
  std::uint64_t out = 0;
  std::size_t size = 0;
  EXPECT_EQ(r.rx.try_pop(std::as_writable_bytes(std::span(&out, 1)), size), Status::busy);
  EXPECT_EQ(r.rx.try_peek(1).status(), Status::busy);
  EXPECT_EQ(r.rx.position(), 0u);
  EXPECT_EQ(SpscRing::word(m[0]), 4u);
  ASSERT_EQ(m.release(), Status::ok);
  EXPECT_EQ(r.pop(), 5u);
}

// ---- MPMC: several claims at once --------------------------------------------

// A producer may hold claims and push meanwhile; consumers see each message
// once its claim commits, in position order.
TEST(MpmcClaims, SeveralClaimsAndCopiesInterleave) {
  MpmcRing r(8);
  WriteClaim first = r.tx.try_claim(1);
  ASSERT_EQ(r.push(2), Status::ok);
  WriteClaim third = r.tx.try_claim(1);
  ASSERT_EQ(first.size(), 1u);
  ASSERT_EQ(third.size(), 1u);
  EXPECT_EQ(r.pop(), std::nullopt) << "position 0 is not committed";
  MpmcRing::put(third, 0, 3);
  ASSERT_EQ(third.commit(8), Status::ok);
  MpmcRing::put(first, 0, 1);
  ASSERT_EQ(first.commit(8), Status::ok);
  EXPECT_EQ(r.pop(), 1u);
  EXPECT_EQ(r.pop(), 2u);
  EXPECT_EQ(r.pop(), 3u);
}

// A handle keeps one run of put-back messages; a run that does not adjoin
// it is refused (busy, the claim kept) rather than dropped.
TEST(MpmcClaims, PutBackOfARunThatDoesNotAdjoinIsRefused) {
  MpmcRing r(8);
  for (std::uint64_t v = 0; v < 6; ++v) ASSERT_EQ(r.push(v), Status::ok);
  ReadClaim a = r.rx.try_peek(2);  // 0, 1
  ReadClaim b = r.rx.try_peek(2);  // 2, 3
  ReadClaim c = r.rx.try_peek(2);  // 4, 5
  ASSERT_EQ(a.put_back(), Status::ok);
  EXPECT_EQ(c.put_back(), Status::busy);
  EXPECT_EQ(c.size(), 2u) << "kept by the claim";
  ASSERT_EQ(b.put_back(), Status::ok) << "adjoins the kept run";
  ASSERT_EQ(c.put_back(), Status::ok) << "now it adjoins too";
  for (std::uint64_t v = 0; v < 6; ++v) EXPECT_EQ(r.pop(), v);
  EXPECT_EQ(r.pop(), std::nullopt);
}

}  // namespace
}  // namespace shmring
