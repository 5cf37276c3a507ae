// SPSC ring: white-box boundary states over a real segment and over the
// algorithm view on the heap, roles and their takeover, blocking forms.
#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstring>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "shmring/error.hpp"
#include "shmring/process.hpp"
#include "shmring/spsc_ring.hpp"
#include "shmring/spsc_view.hpp"
#include "test_support.hpp"

namespace shmring {
namespace {

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;
using test::as_bytes;
using test::message;

// A ring of `capacity` slots with both roles attached.
using SpscFixture = test::RingFixture<RingKind::spsc, SpscProducer, SpscConsumer>;

// ---- empty and full --------------------------------------------------------

TEST(SpscBoundary, EmptyRing) {
  SpscFixture f;
  f.expect_empty();
  const ReadClaim c = f.rx.try_peek(4);
  EXPECT_TRUE(c.empty());
  EXPECT_FALSE(c);
  EXPECT_EQ(c.status(), Status::would_block);
  EXPECT_EQ(f.rx.position(), 0u);
  EXPECT_EQ(f.tx.position(), 0u);
}

TEST(SpscBoundary, FullRing) {
  SpscFixture f(8, 64);
  for (std::uint64_t i = 0; i < 8; ++i) ASSERT_EQ(f.push(message(i, 64)), Status::ok) << i;
  EXPECT_EQ(f.push("one too many"), Status::would_block);
  EXPECT_EQ(f.tx.position(), 8u) << "a refused push publishes nothing";
  const WriteClaim c = f.tx.try_claim(1);
  EXPECT_TRUE(c.empty());
  EXPECT_EQ(c.status(), Status::would_block);
  const std::span<const std::byte> one[] = {as_bytes("x")};
  EXPECT_EQ(f.tx.try_push_many(one), 0u);
  // One pop frees exactly one slot.
  EXPECT_EQ(f.pop(), message(0, 64));
  EXPECT_EQ(f.push(message(8, 64)), Status::ok);
  EXPECT_EQ(f.push("again too many"), Status::would_block);
  for (std::uint64_t i = 1; i <= 8; ++i) EXPECT_EQ(f.pop(), message(i, 64));
  f.expect_empty();
}

TEST(SpscBoundary, ZeroLengthAndFullSlotMessages) {
  SpscFixture f(4, 100);
  const std::string full(100, 'F');
  ASSERT_EQ(f.push(""), Status::ok);
  ASSERT_EQ(f.push(full), Status::ok);
  EXPECT_EQ(f.pop(), "");
  EXPECT_EQ(f.pop(), full);
}

// An empty span has a null data(); memcpy must never see it (the UBSan
// build aborts on memcpy(p, nullptr, 0)). Plain and low-latency slots.
TEST(SpscBoundary, EmptySpansPushAndPopEmptyMessages) {
  for (const SlotFormat format : {SlotFormat::plain, SlotFormat::low_latency}) {
    SCOPED_TRACE(to_string(format));
    test::UniqueShm shm;
    CreateOptions o;
    o.capacity = 4;
    o.slot_size = 16;
    o.format = format;
    Segment seg = Segment::create(shm.name(), o);
    SpscProducer tx = SpscProducer::attach(seg);
    SpscConsumer rx = SpscConsumer::attach(seg);
    ASSERT_EQ(tx.try_push({}), Status::ok);
    const std::span<const std::byte> none[] = {{}, {}};
    ASSERT_EQ(tx.try_push_many(none), 2u);
    for (int i = 0; i < 3; ++i) {
      std::size_t n = 99;
      ASSERT_EQ(rx.try_pop({}, n), Status::ok) << i;
      EXPECT_EQ(n, 0u);
    }
    // A message that does not fit an empty buffer stays in the ring.
    const char x = 'x';
    ASSERT_EQ(tx.try_push(std::as_bytes(std::span(&x, 1))), Status::ok);
    std::size_t n = 0;
    EXPECT_EQ(rx.try_pop({}, n), Status::too_large);
    EXPECT_EQ(n, 1u);
    Segment::unlink(shm.name());
  }
}

// ---- wrap-around -------------------------------------------------------------

class SpscWrap : public ::testing::TestWithParam<std::uint64_t> {};

TEST_P(SpscWrap, ManyLapsInOrder) {
  const std::uint64_t capacity = GetParam();
  SpscFixture f(capacity, 40);
  std::uint64_t sent = 0;
  std::uint64_t received = 0;
  // Each round fills 1..capacity slots, then drains them: every fill level
  // meets every slot index, over many laps.
  for (std::uint64_t round = 0; round < 500 * capacity; ++round) {
    const std::uint64_t burst = 1 + round % capacity;
    for (std::uint64_t i = 0; i < burst; ++i) ASSERT_EQ(f.push(message(sent++, 40)), Status::ok);
    if (burst == capacity) {
      ASSERT_EQ(f.push("overflow"), Status::would_block);
    }
    for (std::uint64_t i = 0; i < burst; ++i) ASSERT_EQ(f.pop(), message(received++, 40));
    Status s = Status::ok;
    ASSERT_FALSE(f.pop(&s));
    ASSERT_EQ(s, Status::would_block);
  }
  EXPECT_EQ(f.tx.position(), sent);
  EXPECT_EQ(f.rx.position(), received);
  EXPECT_EQ(f.control()->producer.position, sent);
  EXPECT_EQ(f.control()->consumer.position, received);
  EXPECT_GT(sent / capacity, 100u) << "many laps";
}

INSTANTIATE_TEST_SUITE_P(SmallCapacities, SpscWrap, ::testing::Values(1u, 2u, 4u, 8u));

// Positions need not start at 0: a ring whose positions sit just below 2^32
// (set directly in the segment) runs across that boundary unchanged.
TEST(SpscBoundary, PositionsFarFromZero) {
  test::UniqueShm shm;
  CreateOptions o;
  o.capacity = 4;
  o.slot_size = 32;
  Segment seg = Segment::create(shm.name(), o);
  const std::uint64_t start = (std::uint64_t{1} << 32) - 3;
  test::control_of(seg.base())->producer.position = start;
  test::control_of(seg.base())->consumer.position = start;
  {
    SpscProducer tx = SpscProducer::attach(seg);
    SpscConsumer rx = SpscConsumer::attach(seg);
    EXPECT_EQ(tx.position(), start);
    EXPECT_EQ(rx.position(), start);
    for (std::uint64_t i = 0; i < 40; ++i) {
      ASSERT_EQ(tx.try_push(as_bytes(message(i, 32))), Status::ok);
      ASSERT_EQ(tx.try_push(as_bytes(message(i + 1000, 32))), Status::ok);
      std::byte buf[32];
      std::size_t size = 0;
      ASSERT_EQ(rx.try_pop(buf, size), Status::ok);
      EXPECT_EQ(test::to_string({buf, size}), message(i, 32));
      ASSERT_EQ(rx.try_pop(buf, size), Status::ok);
      EXPECT_EQ(test::to_string({buf, size}), message(i + 1000, 32));
    }
    EXPECT_EQ(tx.position(), start + 80);
    EXPECT_EQ(test::trailer_of(seg.base(), seg.geometry(), start + 79)->committed, start + 80);
  }
  Segment::unlink(shm.name());
}

// ---- zero-copy claims -----------------------------------------------------------

TEST(SpscClaim, InvisibleUntilCommit) {
  SpscFixture f(4, 64);
  WriteClaim c = f.tx.try_claim(1);
  ASSERT_EQ(c.size(), 1u);
  ASSERT_EQ(c.status(), Status::ok);
  EXPECT_EQ(c.position(0), 0u);
  EXPECT_EQ(c[0].size(), 64u) << "the whole slot is lent";
  EXPECT_EQ(reinterpret_cast<std::uintptr_t>(c[0].data()) % kPayloadAlign, 0u);
  std::memcpy(c[0].data(), "in place", 8);
  f.expect_empty("a claimed, uncommitted slot is not readable");
  EXPECT_TRUE(f.rx.try_peek(1).empty());
  EXPECT_NE(f.trailer(0)->committed, 1u);
  EXPECT_EQ(f.control()->producer.position, 0u);

  ASSERT_EQ(c.commit(8), Status::ok);
  EXPECT_TRUE(c.empty()) << "commit consumes the claim";
  EXPECT_EQ(f.trailer(0)->committed, 1u);
  EXPECT_EQ(f.control()->producer.position, 1u);
  EXPECT_EQ(f.pop(), "in place");
}

TEST(SpscClaim, AbortLeavesNothingVisible) {
  SpscFixture f(4, 64);
  WriteClaim c = f.tx.try_claim(3);
  ASSERT_EQ(c.size(), 3u);
  for (std::size_t i = 0; i < 3; ++i) std::memcpy(c[i].data(), "junk", 4);
  c.abort();
  EXPECT_TRUE(c.empty());
  EXPECT_EQ(f.tx.position(), 0u);
  EXPECT_TRUE(f.rx.try_peek(4).empty());
  // The aborted slots are claimed again from the same position.
  WriteClaim again = f.tx.try_claim(4);
  ASSERT_EQ(again.size(), 4u) << "aborted slots are free again";
  EXPECT_EQ(again.position(0), 0u);
  again.abort();
  ASSERT_EQ(f.push("real"), Status::ok);
  EXPECT_EQ(f.pop(), "real");
  f.expect_empty();
}

TEST(SpscClaim, CommitTooLargePublishesNothing) {
  SpscFixture f(4, 64);
  WriteClaim c = f.tx.try_claim(1);
  ASSERT_FALSE(c.empty());
  std::memcpy(c[0].data(), "abc", 3);
  EXPECT_EQ(c.commit(65), Status::too_large);
  EXPECT_FALSE(c.empty()) << "the claim is kept for another try";
  EXPECT_EQ(f.tx.position(), 0u);
  EXPECT_TRUE(f.rx.try_peek(1).empty());
  EXPECT_EQ(c.set_size(0, 65), Status::too_large);
  ASSERT_EQ(c.commit(3), Status::ok);
  EXPECT_EQ(f.pop(), "abc");
}

TEST(SpscClaim, CommitOfAnEmptyOrFinishedClaim) {
  SpscFixture f(4, 64);
  WriteClaim none;
  EXPECT_EQ(none.commit(1), Status::would_block) << "a claim that got no slots says why";
  WriteClaim first = f.tx.try_claim(1);
  ASSERT_EQ(first.commit(1), Status::ok);
  EXPECT_EQ(first.status(), Status::finished);
  EXPECT_EQ(first.commit(1), Status::finished);
  EXPECT_EQ(first.commit_batch(), Status::finished);
  EXPECT_EQ(f.tx.position(), 1u) << "a finished claim publishes nothing";
  EXPECT_EQ(f.rx.try_peek(4).size(), 1u);
}

// Positions start near the end of the slot array, so one claim wraps.
TEST(SpscClaim, BatchAcrossTheWrap) {
  SpscFixture f(8, 64);
  for (std::uint64_t i = 0; i < 6; ++i) ASSERT_EQ(f.push("warm-up"), Status::ok);
  for (std::uint64_t i = 0; i < 6; ++i) ASSERT_EQ(f.pop(), "warm-up");
  WriteClaim c = f.tx.try_claim(100);
  ASSERT_EQ(c.size(), 8u) << "at most the free slots";
  EXPECT_EQ(c.position(0), 6u);
  EXPECT_EQ(c.position(7), 13u);
  // Slots 6, 7, then 0: the claim's third payload lies before its first.
  EXPECT_LT(c[2].data(), c[0].data());
  EXPECT_EQ(c[2].data(), f.segment.base() + f.segment.geometry().slots_offset);
  for (std::size_t i = 0; i < c.size(); ++i) {
    const std::string m = message(i, 64);
    std::memcpy(c[i].data(), m.data(), m.size());
    ASSERT_EQ(c.set_size(i, m.size()), Status::ok);
  }
  EXPECT_TRUE(f.rx.try_peek(8).empty()) << "nothing before the commit";
  c.commit_batch();
  EXPECT_EQ(f.tx.position(), 14u);
  EXPECT_EQ(f.control()->producer.position, 14u) << "one head store for the batch";
  ReadClaim r = f.rx.try_peek(100);
  ASSERT_EQ(r.size(), 8u);
  for (std::size_t i = 0; i < r.size(); ++i) {
    EXPECT_EQ(test::to_string(r[i]), message(i, 64));
    EXPECT_EQ(r.position(i), 6 + i);
  }
  // Release part of the claim: the rest stays in it and stays readable.
  r.release(3);
  EXPECT_EQ(r.size(), 5u);
  EXPECT_EQ(r.position(0), 9u);
  EXPECT_EQ(test::to_string(r[0]), message(3, 64));
  EXPECT_EQ(f.rx.position(), 9u);
  EXPECT_EQ(f.control()->consumer.position, 9u);
  // Exactly the three released slots are free for the producer.
  WriteClaim room = f.tx.try_claim(100);
  EXPECT_EQ(room.size(), 3u);
  room.abort();
  r.release(0);  // nothing: ignored
  EXPECT_EQ(r.size(), 5u);
  EXPECT_EQ(f.rx.position(), 9u);
  r.release(6);  // more than it holds: clamped to the claim, as in MPMC
  EXPECT_TRUE(r.empty());
  EXPECT_EQ(f.rx.position(), 14u);
  EXPECT_TRUE(f.rx.try_peek(8).empty());
}

TEST(SpscClaim, CommitBatchOfAPrefix) {
  SpscFixture f(8, 64);
  WriteClaim c = f.tx.try_claim(5);
  ASSERT_EQ(c.size(), 5u);
  for (std::size_t i = 0; i < 5; ++i) {
    const std::string m = message(i, 64);
    std::memcpy(c[i].data(), m.data(), m.size());
    ASSERT_EQ(c.set_size(i, m.size()), Status::ok);
  }
  c.commit_batch(2);
  EXPECT_TRUE(c.empty());
  EXPECT_EQ(f.tx.position(), 2u);
  // The three slots not committed are claimed again, from position 2.
  WriteClaim next = f.tx.try_claim(1);
  EXPECT_EQ(next.position(0), 2u);
  next.abort();
  ReadClaim r = f.rx.try_peek(8);
  ASSERT_EQ(r.size(), 2u);
  EXPECT_EQ(test::to_string(r[0]), message(0, 64));
  EXPECT_EQ(test::to_string(r[1]), message(1, 64));
  r.release();
  // A batch commit of 0 slots publishes nothing.
  WriteClaim zero = f.tx.try_claim(2);
  zero.commit_batch(0);
  EXPECT_EQ(f.tx.position(), 2u);
  EXPECT_TRUE(f.rx.try_peek(8).empty());
}

TEST(SpscClaim, UnsizedSlotsPublishTheWholeSlot) {
  SpscFixture f(4, 48);
  WriteClaim c = f.tx.try_claim(1);
  std::memset(c[0].data(), 'z', 48);
  c.commit_batch();
  EXPECT_EQ(f.pop(), std::string(48, 'z'));
}

TEST(SpscClaim, PeekLendsInPlace) {
  SpscFixture f(4, 64);
  ASSERT_EQ(f.push("zero-copy"), Status::ok);
  ReadClaim r = f.rx.try_peek(1);
  ASSERT_EQ(r.size(), 1u);
  EXPECT_EQ(r[0].data(), f.segment.base() + f.segment.geometry().slots_offset)
      << "the consumer reads the slot itself";
  ReadClaim again = f.rx.try_peek(1);
  EXPECT_EQ(again.position(0), r.position(0)) << "peek without release consumes nothing";
  r.release();
  EXPECT_TRUE(f.rx.try_peek(1).empty());
}

// ---- copying calls -------------------------------------------------------------

TEST(SpscCopy, TryPushMany) {
  SpscFixture f(4, 16);
  const std::vector<std::string> texts = {"a", "bb", "ccc", "dddd", "eeeee", "ffffff"};
  std::vector<std::span<const std::byte>> spans;
  for (const auto& t : texts) spans.push_back(as_bytes(t));
  EXPECT_EQ(f.tx.try_push_many({}), 0u);
  EXPECT_EQ(f.tx.try_push_many(spans), 4u) << "as many as fit";
  EXPECT_EQ(f.control()->producer.position, 4u);
  for (std::size_t i = 0; i < 4; ++i) EXPECT_EQ(f.pop(), texts[i]);
  // A message too large stops the batch there; those before it go in.
  const std::string big(17, 'B');
  const std::span<const std::byte> mixed[] = {as_bytes("ok1"), as_bytes("ok2"), as_bytes(big),
                                              as_bytes("never")};
  EXPECT_EQ(f.tx.try_push_many(mixed), 2u);
  EXPECT_EQ(f.pop(), "ok1");
  EXPECT_EQ(f.pop(), "ok2");
  f.expect_empty();
}

TEST(SpscCopy, MessageLargerThanTheSlot) {
  SpscFixture f(4, 32);
  ASSERT_EQ(f.push("earlier"), Status::ok);
  EXPECT_EQ(f.push(std::string(33, 'x')), Status::too_large);
  EXPECT_EQ(f.tx.push(as_bytes(std::string(33, 'x')), 1s), Status::too_large)
      << "the blocking form refuses at once";
  EXPECT_EQ(f.tx.position(), 1u) << "the ring is unchanged";
  EXPECT_EQ(f.pop(), "earlier");
  f.expect_empty();
}

TEST(SpscCopy, PopBufferTooSmallKeepsTheMessage) {
  SpscFixture f(4, 64);
  ASSERT_EQ(f.push("twelve bytes"), Status::ok);
  ASSERT_EQ(f.push("next"), Status::ok);
  std::byte small[5];
  std::size_t size = 0;
  EXPECT_EQ(f.rx.try_pop(small, size), Status::too_large);
  EXPECT_EQ(size, 12u) << "size tells how large a buffer is needed";
  EXPECT_EQ(f.rx.position(), 0u);
  EXPECT_EQ(f.rx.try_pop(small, size), Status::too_large) << "still there";
  EXPECT_EQ(f.pop(), "twelve bytes");
  EXPECT_EQ(f.pop(), "next");
}

// ---- roles -----------------------------------------------------------------------

TEST(SpscRoles, SecondAttachInTheSameProcessIsRefused) {
  SpscFixture f;
  const std::string pid = std::to_string(::getpid());
  for (int overload = 0; overload < 2; ++overload) {
    std::string what;
    std::error_code code;
    if (overload == 0) {
      try {
        (void)SpscProducer::attach(f.segment);
        ADD_FAILURE() << "second producer attached";
      } catch (const Error& e) {
        code = e.code();
        what = e.what();
      }
    } else {
      SpscProducer p = SpscProducer::attach(f.segment, {}, code);
      EXPECT_FALSE(p);
      what = last_error_message();
    }
    EXPECT_EQ(code, make_error_code(errc::role_taken));
    EXPECT_NE(what.find("producer role is held by live process " + pid), std::string::npos) << what;
    EXPECT_NE(what.find(f.shm.name()), std::string::npos) << what;
  }
  std::error_code ec;
  SpscConsumer c = SpscConsumer::attach(f.segment, {}, ec);
  EXPECT_EQ(ec, make_error_code(errc::role_taken));
  EXPECT_FALSE(c);
  EXPECT_NE(last_error_message().find("consumer role is held by live process " + pid),
            std::string::npos)
      << last_error_message();
  // A refused attach does not disturb the holder.
  EXPECT_EQ(f.push("still mine"), Status::ok);
  EXPECT_EQ(f.pop(), "still mine");
}

TEST(SpscRoles, RoleIsFreeAfterTheHandleIsDestroyed) {
  SpscFixture f;
  EXPECT_NE(f.control()->producer.owner.identity, 0u);
  EXPECT_EQ(process::pid_of(f.control()->producer.owner.identity),
            static_cast<std::uint32_t>(::getpid()));
  ASSERT_EQ(f.push("before"), Status::ok);
  // Moving the handle moves the role: the moved-from handle releases nothing.
  SpscProducer moved = std::move(f.tx);
  EXPECT_FALSE(f.tx);
  std::error_code ec;
  (void)SpscProducer::attach(f.segment, {}, ec);
  EXPECT_EQ(ec, make_error_code(errc::role_taken));
  moved = SpscProducer();
  EXPECT_EQ(f.control()->producer.owner.identity, 0u);
  f.tx = SpscProducer::attach(f.segment);
  EXPECT_EQ(f.tx.position(), 1u) << "continues from the published head";
  ASSERT_EQ(f.push("after"), Status::ok);

  f.rx = SpscConsumer();
  EXPECT_EQ(f.control()->consumer.owner.identity, 0u);
  f.rx = SpscConsumer::attach(f.segment);
  EXPECT_EQ(f.pop(), "before");
  EXPECT_EQ(f.pop(), "after");
}

// Closes a pipe end on scope exit so a child blocked on it never hangs.
struct PipeEnd {
  int fd = -1;
  ~PipeEnd() { close(); }
  void close() {
    if (fd >= 0) ::close(fd);
    fd = -1;
  }
};

// A child process attaches the producer, pushes, and dies without detaching.
// While it lives the role is refused; after it is gone the parent takes the
// role over and continues from the committed positions.
TEST(SpscRoles, DeadProducerIsTakenOver) {
  SpscFixture f(16, 32);
  f.tx = SpscProducer();  // the child will hold the producer role
  int ready[2];
  int go[2];
  ASSERT_EQ(::pipe(ready), 0);
  ASSERT_EQ(::pipe(go), 0);
  constexpr std::uint64_t kChildMessages = 5;
  const pid_t child = ::fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    ::close(ready[0]);
    ::close(go[1]);
    std::error_code ec;
    SpscProducer p = SpscProducer::attach(f.segment, {}, ec);
    if (ec) ::_exit(10);
    char byte = 1;
    if (::write(ready[1], &byte, 1) != 1) ::_exit(11);
    if (::read(go[0], &byte, 1) != 1) ::_exit(12);  // EOF: the parent gave up
    for (std::uint64_t i = 0; i < kChildMessages; ++i) {
      if (p.try_push(as_bytes(message(i, 32))) != Status::ok) ::_exit(13);
    }
    ::_exit(0);  // no destructor: the role record still names this process
  }
  PipeEnd ready_r{ready[0]};
  PipeEnd go_w{go[1]};
  ::close(ready[1]);
  ::close(go[0]);
  char byte = 0;
  ASSERT_EQ(::read(ready_r.fd, &byte, 1), 1) << "child did not attach";
  {
    std::error_code ec;
    SpscProducer p = SpscProducer::attach(f.segment, {}, ec);
    EXPECT_EQ(ec, make_error_code(errc::role_taken));
    EXPECT_NE(last_error_message().find("live process " + std::to_string(child)), std::string::npos)
        << last_error_message();
  }
  ASSERT_EQ(::write(go_w.fd, &byte, 1), 1);
  int status = 0;
  ASSERT_EQ(::waitpid(child, &status, 0), child);
  ASSERT_TRUE(WIFEXITED(status));
  ASSERT_EQ(WEXITSTATUS(status), 0);
  EXPECT_EQ(process::pid_of(f.control()->producer.owner.identity),
            static_cast<std::uint32_t>(child))
      << "the dead child still holds the record";

  f.tx = SpscProducer::attach(f.segment);
  EXPECT_EQ(f.tx.position(), kChildMessages);
  EXPECT_EQ(process::pid_of(f.control()->producer.owner.identity),
            static_cast<std::uint32_t>(::getpid()));
  for (std::uint64_t i = kChildMessages; i < 12; ++i) ASSERT_EQ(f.push(message(i, 32)), Status::ok);
  for (std::uint64_t i = 0; i < 12; ++i) EXPECT_EQ(f.pop(), message(i, 32)) << i;
  f.expect_empty("every message exactly once");
}

TEST(SpscRoles, DeadConsumerIsTakenOver) {
  SpscFixture f(8, 32);
  for (std::uint64_t i = 0; i < 6; ++i) ASSERT_EQ(f.push(message(i, 32)), Status::ok);
  f.rx = SpscConsumer();
  const int rc = test::run_in_child([&] {
    SpscConsumer c = SpscConsumer::attach(f.segment);
    std::byte buf[32];
    std::size_t size = 0;
    for (int i = 0; i < 2; ++i) {
      if (c.try_pop(buf, size) != Status::ok) ::_exit(1);
      if (test::to_string({buf, size}) != message(static_cast<std::uint64_t>(i), 32)) ::_exit(2);
    }
    // A peeked but unreleased message is not consumed.
    const ReadClaim held = c.try_peek(1);
    if (held.empty()) ::_exit(3);
    ::_exit(0);  // with `c` and `held` alive: the consumer role stays recorded
    return 4;
  });
  ASSERT_EQ(rc, 0);
  EXPECT_NE(f.control()->consumer.owner.identity, 0u);
  f.rx = SpscConsumer::attach(f.segment);
  EXPECT_EQ(f.rx.position(), 2u);
  for (std::uint64_t i = 2; i < 6; ++i) EXPECT_EQ(f.pop(), message(i, 32));
  f.expect_empty();
}

// A zombie (exited, not yet reaped) holds no role: its /proc entry says so,
// even though kill(pid, 0) would still succeed.
TEST(SpscRoles, ZombieOwnerIsDead) {
  SpscFixture f(8, 32);
  f.tx = SpscProducer();
  const pid_t child = ::fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    std::error_code ec;
    SpscProducer p = SpscProducer::attach(f.segment, {}, ec);
    if (ec) ::_exit(10);
    if (p.try_push(as_bytes("from the child")) != Status::ok) ::_exit(11);
    ::_exit(0);  // the role record still names this process
  }
  // Wait until the child has exited, but leave it unreaped (a zombie).
  siginfo_t info{};
  ASSERT_EQ(::waitid(P_PID, static_cast<id_t>(child), &info, WEXITED | WNOWAIT), 0);
  ASSERT_EQ(info.si_code, CLD_EXITED);
  ASSERT_EQ(info.si_status, 0);
  std::error_code ec;
  f.tx = SpscProducer::attach(f.segment, {}, ec);
  const std::string message = last_error_message();
  int status = 0;
  ::waitpid(child, &status, 0);  // reap it whatever happened
  EXPECT_FALSE(ec) << "a zombie owner was taken for alive: " << message;
  EXPECT_EQ(f.pop(), "from the child");
}

// A fork()ed child inherits a copy of its parent's handle; destroying that
// copy in the child must not give up the role the parent still holds.
TEST(SpscRoles, ForkedChildDoesNotReleaseTheParentsRole) {
  SpscFixture f(8, 32);
  const std::uint64_t mine = f.control()->producer.owner.identity;
  ASSERT_EQ(process::pid_of(mine), static_cast<std::uint32_t>(::getpid()));
  const int rc = test::run_in_child([&] {
    { SpscProducer inherited = std::move(f.tx); }  // the child's copy goes away
    { SpscConsumer inherited = std::move(f.rx); }
    return 0;
  });
  ASSERT_EQ(rc, 0);
  EXPECT_EQ(f.control()->producer.owner.identity, mine) << "the child released the parent's role";
  std::error_code ec;
  SpscProducer second = SpscProducer::attach(f.segment, {}, ec);
  EXPECT_EQ(ec, make_error_code(errc::role_taken)) << "two producers attached at once";
  SpscConsumer second_rx = SpscConsumer::attach(f.segment, {}, ec);
  EXPECT_EQ(ec, make_error_code(errc::role_taken)) << "two consumers attached at once";
}

// Writes what a producer writes for `position`, except the head store.
void commit_without_head(const SpscView& view, std::uint64_t position, const std::string& m) {
  std::memcpy(view.payload(position), m.data(), m.size());
  view.set_length(position, static_cast<std::uint32_t>(m.size()));
  view.trailer(position)->committed = position + 1;
}

// A predecessor that committed slot trailers but died before its head store:
// the successor resumes after them, so nothing the consumer may read is
// overwritten.
TEST(SpscRoles, ResumeAfterCommittedSlotsBeyondTheHead) {
  SpscFixture f(8, 32);
  ASSERT_EQ(f.push(message(0, 32)), Status::ok);
  f.tx = SpscProducer();
  const SpscView view(f.segment.base(), f.segment.geometry());
  for (std::uint64_t pos = 1; pos <= 3; ++pos) commit_without_head(view, pos, message(pos, 32));
  ASSERT_EQ(f.control()->producer.position, 1u);

  f.tx = SpscProducer::attach(f.segment);
  EXPECT_EQ(f.tx.position(), 4u);
  EXPECT_EQ(f.control()->producer.position, 4u) << "the head now covers the orphaned commits";
  ASSERT_EQ(f.push(message(4, 32)), Status::ok);
  for (std::uint64_t i = 0; i <= 4; ++i) EXPECT_EQ(f.pop(), message(i, 32));
  f.expect_empty();
}

// The same, but the consumer has already read the orphaned slots (it polls
// the trailers, not the head): its tail is ahead of the published head.
TEST(SpscRoles, ResumeWhenTheConsumerReadPastTheHead) {
  SpscFixture f(8, 32);
  f.tx = SpscProducer();
  const SpscView view(f.segment.base(), f.segment.geometry());
  for (std::uint64_t pos = 0; pos < 3; ++pos) commit_without_head(view, pos, message(pos, 32));
  for (std::uint64_t pos = 0; pos < 3; ++pos) EXPECT_EQ(f.pop(), message(pos, 32));
  ASSERT_EQ(f.control()->producer.position, 0u);
  ASSERT_EQ(f.control()->consumer.position, 3u);

  std::error_code ec;
  f.tx = SpscProducer::attach(f.segment, {}, ec);
  ASSERT_FALSE(ec) << last_error_message();
  EXPECT_EQ(f.tx.position(), 3u);
  ASSERT_EQ(f.push(message(3, 32)), Status::ok);
  EXPECT_EQ(f.pop(), message(3, 32));
  // A consumer re-attaching in that state is accepted too.
  f.rx = SpscConsumer();
  f.rx = SpscConsumer::attach(f.segment, {}, ec);
  EXPECT_FALSE(ec) << last_error_message();
  EXPECT_EQ(f.rx.position(), 4u);
}

// ---- blocking forms ----------------------------------------------------------------

TEST(SpscBlocking, TimeoutOnEmptyAndFull) {
  SpscFixture f(2, 16);
  constexpr auto kTimeout = 30ms;
  std::byte buf[16];
  std::size_t size = 0;
  auto start = Clock::now();
  EXPECT_EQ(f.rx.pop(buf, size, kTimeout), Status::timeout);
  EXPECT_GE(Clock::now() - start, kTimeout);
  EXPECT_LT(Clock::now() - start, 30s);
  start = Clock::now();
  ReadClaim r = f.rx.peek(1, kTimeout);
  EXPECT_GE(Clock::now() - start, kTimeout);
  EXPECT_TRUE(r.empty());
  EXPECT_EQ(r.status(), Status::timeout);

  ASSERT_EQ(f.push("a"), Status::ok);
  ASSERT_EQ(f.push("b"), Status::ok);
  start = Clock::now();
  EXPECT_EQ(f.tx.push(as_bytes("c"), kTimeout), Status::timeout);
  EXPECT_GE(Clock::now() - start, kTimeout);
  start = Clock::now();
  WriteClaim w = f.tx.claim(1, kTimeout);
  EXPECT_GE(Clock::now() - start, kTimeout);
  EXPECT_TRUE(w.empty());
  EXPECT_EQ(w.status(), Status::timeout);
  EXPECT_EQ(f.tx.position(), 2u) << "a timed-out push changes nothing";
  // The sleeper counts are back to zero after the waits.
  EXPECT_EQ(f.control()->producer_wait.waiters, 0u);
  EXPECT_EQ(f.control()->consumer_wait.waiters, 0u);
}

TEST(SpscBlocking, ReadyRingReturnsAtOnce) {
  SpscFixture f(2, 16);
  EXPECT_EQ(f.tx.push(as_bytes("now"), 0ns), Status::ok);
  WriteClaim w = f.tx.claim(1, 0ns);
  ASSERT_EQ(w.size(), 1u);
  EXPECT_EQ(w.status(), Status::ok);
  w.abort();
  std::byte buf[16];
  std::size_t size = 0;
  EXPECT_EQ(f.rx.pop(buf, size, 0ns), Status::ok);
  EXPECT_EQ(test::to_string({buf, size}), "now");
  EXPECT_EQ(f.rx.pop(buf, size, 0ns), Status::timeout);
  std::byte small[1];
  ASSERT_EQ(f.push("too big"), Status::ok);
  EXPECT_EQ(f.rx.pop(small, size, 1s), Status::too_large) << "not a reason to wait";
}

// A consumer asleep on the futex (no spinning, no yielding) is woken by a
// push from another thread. Whenever the push happens, the pop returns it.
TEST(SpscBlocking, SleepingConsumerIsWoken) {
  SpscFixture f(4, 16);
  WaitPolicy sleep_at_once;
  sleep_at_once.spin_iterations = 0;
  sleep_at_once.yield_iterations = 0;
  f.rx = SpscConsumer();
  f.rx = SpscConsumer::attach(f.segment, sleep_at_once);
  f.tx = SpscProducer();
  f.tx = SpscProducer::attach(f.segment, sleep_at_once);
  std::thread producer([&] {
    for (int i = 0; i < 20; ++i) {
      const std::string m = "m" + std::to_string(i);
      EXPECT_EQ(f.tx.push(as_bytes(m), 30s), Status::ok);
    }
  });
  for (int i = 0; i < 20; ++i) {
    std::byte buf[16];
    std::size_t size = 0;
    ASSERT_EQ(f.rx.pop(buf, size, 30s), Status::ok);
    EXPECT_EQ(test::to_string({buf, size}), "m" + std::to_string(i));
  }
  producer.join();
}

// A timeout too large to add to the clock means "forever", not "already
// expired": the pop waits for the push, whenever it comes.
TEST(SpscBlocking, HugeTimeoutWaitsForever) {
  SpscFixture f(2, 16);
  std::thread producer([&] {
    std::this_thread::sleep_for(20ms);
    EXPECT_EQ(f.tx.push(as_bytes("late"), std::chrono::nanoseconds::max()), Status::ok);
  });
  std::byte buf[16];
  std::size_t size = 0;
  EXPECT_EQ(f.rx.pop(buf, size, std::chrono::nanoseconds::max()), Status::ok);
  producer.join();
  EXPECT_EQ(test::to_string({buf, size}), "late");
}

// ---- the algorithm view over heap memory -------------------------------------------

TEST(SpscViewHeap, PublishReadRelease) {
  test::HeapSegment mem(RingKind::spsc, 4, 24);
  const SpscView view(mem.base(), mem.geometry());
  SpscProducerCursor pc;
  SpscConsumerCursor cc;
  Status s = Status::ok;
  EXPECT_EQ(view.readable(cc, 4, s), 0u);
  EXPECT_EQ(view.writable(pc, 10, s), 4u);
  EXPECT_EQ(s, Status::ok);
  for (std::uint64_t i = 0; i < 3; ++i) view.set_length(pc.head + i, static_cast<std::uint32_t>(i));
  EXPECT_FALSE(view.publish(pc, 3)) << "no sleeper, no wake-up";
  EXPECT_EQ(pc.head, 3u);
  EXPECT_EQ(mem.control()->producer.position, 3u);
  EXPECT_TRUE(view.data_ready(cc));
  EXPECT_EQ(view.readable(cc, 10, s), 3u);
  EXPECT_EQ(view.read_slot(2).size, 2u);
  EXPECT_EQ(view.writable(pc, 10, s), 1u);
  mem.control()->producer_wait.waiters = 1;
  EXPECT_TRUE(view.release(cc, 2)) << "a sleeping producer must be woken";
  mem.control()->producer_wait.waiters = 0;
  EXPECT_EQ(cc.tail, 2u);
  EXPECT_EQ(view.writable(pc, 10, s), 3u);
  mem.control()->consumer_wait.waiters = 2;
  EXPECT_TRUE(view.publish(pc, 1));
  mem.control()->consumer_wait.waiters = 0;
  EXPECT_EQ(view.readable(cc, 10, s), 2u);
}

TEST(SpscViewHeap, ReadableStopsAtAnImpossibleLength) {
  test::HeapSegment mem(RingKind::spsc, 8, 24);
  const SpscView view(mem.base(), mem.geometry());
  SpscProducerCursor pc;
  SpscConsumerCursor cc;
  Status s = Status::ok;
  ASSERT_EQ(view.writable(pc, 3, s), 3u);
  view.set_length(0, 24);
  view.set_length(1, 25);
  view.set_length(2, 1);
  view.publish(pc, 3);
  EXPECT_EQ(view.readable(cc, 8, s), 1u) << "the run ends before the bad slot";
  EXPECT_EQ(s, Status::ok);
  view.release(cc, 1);
  EXPECT_EQ(view.readable(cc, 8, s), 0u);
  EXPECT_EQ(s, Status::corrupt) << "the bad slot first: corrupt";
  EXPECT_EQ(view.read_slot(1).size, 24u) << "a clamped length never reaches past the slot";
}

TEST(SpscViewHeap, ResumeHead) {
  test::HeapSegment mem(RingKind::spsc, 4, 24);
  const SpscView view(mem.base(), mem.geometry());
  EXPECT_EQ(view.resume_head(0, 0), 0u);
  for (std::uint64_t pos = 0; pos < 4; ++pos) mem.trailer(pos)->committed = pos + 1;
  EXPECT_EQ(view.resume_head(0, 0), 4u) << "stops after one full lap";
  EXPECT_EQ(view.resume_head(2, 0), 4u);
  mem.trailer(1)->committed = 0;
  EXPECT_EQ(view.resume_head(0, 0), 1u) << "stops at the first gap";
}

TEST(SpscViewHeap, ImpossibleTailIsCorrupt) {
  test::HeapSegment mem(RingKind::spsc, 4, 24);
  const SpscView view(mem.base(), mem.geometry());
  SpscProducerCursor pc{4, 0};  // full, as far as the cache knows
  Status s = Status::ok;
  mem.control()->consumer.position = 9;  // ahead of the head
  EXPECT_EQ(view.writable(pc, 1, s), 0u);
  EXPECT_EQ(s, Status::corrupt);
  EXPECT_TRUE(view.space_ready(pc)) << "so a blocking caller retries and sees corrupt";
  s = Status::ok;
  mem.control()->consumer.position = 2;
  EXPECT_EQ(view.writable(pc, 1, s), 1u);
  EXPECT_EQ(s, Status::ok);
  EXPECT_EQ(pc.cached_tail, 2u);
}

}  // namespace
}  // namespace shmring
