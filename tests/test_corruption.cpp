// A peer that writes impossible values into the shared bytes may stall a
// ring; it must never make us crash, hang, or touch memory outside the
// segment. Role handles are driven over real segments (the "peer" writes
// through a second mapping of the same name); the algorithm views are also
// driven over heap memory of exactly the segment's size, so that under
// AddressSanitizer any access past the last slot is reported.
#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstring>
#include <optional>
#include <random>
#include <string>
#include <vector>

#include "shmring/error.hpp"
#include "shmring/mpmc_ring.hpp"
#include "shmring/mpmc_view.hpp"
#include "shmring/process.hpp"
#include "shmring/spsc_ring.hpp"
#include "shmring/spsc_view.hpp"
#include "test_support.hpp"

namespace shmring {
namespace {

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;
using test::as_bytes;

constexpr std::uint64_t kFar = 1'000'000'000'000'000'000ull;  // 1e18

// A ring plus a second mapping of it, through which a "peer" scribbles.
struct Corruptible {
  Corruptible(RingKind kind, std::uint64_t capacity, std::uint64_t slot_size) {
    CreateOptions o;
    o.kind = kind;
    o.capacity = capacity;
    o.slot_size = slot_size;
    segment = Segment::create(shm.name(), o);
    peer = Segment::open(shm.name());
  }
  ~Corruptible() { Segment::unlink(shm.name()); }
  ControlArea* ctl() const { return test::control_of(peer.base()); }
  SlotTrailer* trailer(std::uint64_t pos) const {
    return test::trailer_of(peer.base(), peer.geometry(), pos);
  }
  // Whether [p, p + n) lies inside the slot area of our own mapping.
  bool in_slots(const std::byte* p, std::size_t n) const {
    const std::byte* lo = segment.base() + segment.geometry().slots_offset;
    const std::byte* hi = segment.base() + segment.size();
    return p >= lo && p + n <= hi;
  }

  test::UniqueShm shm;
  Segment segment;
  Segment peer;
};

bool status_is_one_of(Status s, std::initializer_list<Status> allowed) {
  for (Status a : allowed) {
    if (s == a) return true;
  }
  return false;
}

// ---- SPSC: positions ------------------------------------------------------------

TEST(CorruptSpsc, ImpossiblePositionsRefuseAttach) {
  Corruptible r(RingKind::spsc, 8, 32);
  struct Case {
    std::uint64_t head;
    std::uint64_t tail;
  };
  const Case cases[] = {
      {kFar, 0},         // head far ahead of the tail
      {0, kFar},         // tail far ahead of the head
      {9, 0},            // more than a lap of messages
      {100, 100 + 9},    // tail more than a lap ahead
      {~0ull - 100, 5},  // tail 106 ahead, modulo 2^64
  };
  for (const Case& c : cases) {
    SCOPED_TRACE("head " + std::to_string(c.head) + " tail " + std::to_string(c.tail));
    r.ctl()->producer.position = c.head;
    r.ctl()->consumer.position = c.tail;
    std::error_code ec;
    SpscProducer p = SpscProducer::attach(r.segment, {}, ec);
    EXPECT_EQ(ec, make_error_code(errc::corrupt_header));
    EXPECT_NE(last_error_message().find("positions are impossible"), std::string::npos)
        << last_error_message();
    EXPECT_NE(last_error_message().find("head " + std::to_string(c.head)), std::string::npos);
    EXPECT_FALSE(p);
    SpscConsumer q = SpscConsumer::attach(r.segment, {}, ec);
    EXPECT_EQ(ec, make_error_code(errc::corrupt_header));
    EXPECT_FALSE(q);
    // A refused attach gives the role back.
    EXPECT_EQ(r.ctl()->producer.owner.identity, 0u);
    EXPECT_EQ(r.ctl()->consumer.owner.identity, 0u);
  }
  r.ctl()->producer.position = 3;
  r.ctl()->consumer.position = 3;
  EXPECT_TRUE(SpscProducer::attach(r.segment)) << "consistent positions attach again";
}

TEST(CorruptSpsc, ProducerSeesAnImpossibleTail) {
  Corruptible r(RingKind::spsc, 4, 32);
  SpscProducer tx = SpscProducer::attach(r.segment);
  for (int i = 0; i < 4; ++i) ASSERT_EQ(tx.try_push(as_bytes("m")), Status::ok);
  for (std::uint64_t bad : {kFar, std::uint64_t{5}, std::uint64_t{~0ull}}) {
    SCOPED_TRACE("tail " + std::to_string(bad));
    r.ctl()->consumer.position = bad;  // ahead of the head (4), or far away
    EXPECT_EQ(tx.try_push(as_bytes("x")), Status::corrupt);
    const WriteClaim c = tx.try_claim(2);
    EXPECT_TRUE(c.empty());
    EXPECT_EQ(c.status(), Status::corrupt);
    const std::span<const std::byte> many[] = {as_bytes("a"), as_bytes("b")};
    EXPECT_EQ(tx.try_push_many(many), 0u);
    // A blocking push reports it at once instead of waiting for space.
    const auto start = Clock::now();
    EXPECT_EQ(tx.push(as_bytes("x"), 20s), Status::corrupt);
    EXPECT_LT(Clock::now() - start, 10s);
    const WriteClaim w = tx.claim(1, 20s);
    EXPECT_EQ(w.status(), Status::corrupt);
    EXPECT_EQ(tx.position(), 4u) << "nothing was published";
  }
  // Exactly one lap behind the head is a full ring, not corruption.
  r.ctl()->consumer.position = 0;
  tx = SpscProducer();
  r.ctl()->producer.position = 4;
  tx = SpscProducer::attach(r.segment);
  r.ctl()->consumer.position = 0;
  EXPECT_EQ(tx.try_push(as_bytes("x")), Status::would_block) << "a full ring, not corrupt";
  r.ctl()->consumer.position = 2;
  EXPECT_EQ(tx.try_push(as_bytes("x")), Status::ok) << "a sane tail again: the ring moves";
}

TEST(CorruptSpsc, ConsumerSeesAnImpossibleHead) {
  Corruptible r(RingKind::spsc, 4, 32);
  SpscConsumer rx = SpscConsumer::attach(r.segment);
  r.ctl()->producer.position = kFar;
  std::byte buf[32];
  std::size_t size = 0;
  // The consumer reads slot trailers, not the head: nothing is readable.
  EXPECT_EQ(rx.try_pop(buf, size), Status::would_block);
  EXPECT_TRUE(rx.try_peek(4).empty());
  const auto start = Clock::now();
  EXPECT_EQ(rx.pop(buf, size, 30ms), Status::timeout);
  EXPECT_GE(Clock::now() - start, 30ms);
  EXPECT_EQ(rx.position(), 0u);
}

// ---- SPSC: slot trailers ---------------------------------------------------------

TEST(CorruptSpsc, LengthLargerThanTheSlotStallsTheRing) {
  for (std::uint32_t bad : {33u, 64u, 0x7fffffffu, 0xffffffffu}) {
    SCOPED_TRACE("length " + std::to_string(bad));
    Corruptible r(RingKind::spsc, 4, 32);
    SpscProducer tx = SpscProducer::attach(r.segment);
    SpscConsumer rx = SpscConsumer::attach(r.segment);
    ASSERT_EQ(tx.try_push(as_bytes("good")), Status::ok);
    ASSERT_EQ(tx.try_push(as_bytes("bad")), Status::ok);
    r.trailer(1)->length = bad;
    std::byte buf[64];
    std::size_t size = 0;
    ASSERT_EQ(rx.try_pop(buf, size), Status::ok);
    EXPECT_EQ(test::to_string({buf, size}), "good");
    for (int i = 0; i < 3; ++i) {
      EXPECT_EQ(rx.try_pop(buf, size), Status::corrupt) << "stalled, every time";
    }
    EXPECT_EQ(rx.try_peek(4).status(), Status::corrupt);
    const auto start = Clock::now();
    EXPECT_EQ(rx.pop(buf, size, 20s), Status::corrupt) << "a blocking pop reports it at once";
    EXPECT_LT(Clock::now() - start, 10s);
    EXPECT_EQ(rx.position(), 1u);
    // The producer fills the ring and stops: the stalled slot is not overrun.
    int pushed = 0;
    while (tx.try_push(as_bytes("more")) == Status::ok) ++pushed;
    EXPECT_EQ(pushed, 3);
    EXPECT_EQ(tx.try_push(as_bytes("more")), Status::would_block);
    EXPECT_EQ(r.trailer(1)->length, bad) << "slot 1 was not rewritten";
    EXPECT_EQ(r.trailer(1)->committed, 2u);
  }
}

TEST(CorruptSpsc, BadLengthEndsAPeekRun) {
  Corruptible r(RingKind::spsc, 8, 32);
  SpscProducer tx = SpscProducer::attach(r.segment);
  SpscConsumer rx = SpscConsumer::attach(r.segment);
  for (int i = 0; i < 5; ++i)
    ASSERT_EQ(tx.try_push(as_bytes("ok" + std::to_string(i))), Status::ok);
  r.trailer(3)->length = 1000;
  ReadClaim c = rx.try_peek(8);
  ASSERT_EQ(c.size(), 3u) << "the run ends before the bad slot";
  for (std::size_t i = 0; i < c.size(); ++i) {
    EXPECT_EQ(test::to_string(c[i]), "ok" + std::to_string(i));
    EXPECT_TRUE(r.in_slots(c[i].data(), c[i].size()));
  }
  // The peer rewrites the length of a lent slot: the span is clamped to the slot.
  r.trailer(1)->length = 0xffffffffu;
  EXPECT_EQ(c[1].size(), 32u);
  EXPECT_TRUE(r.in_slots(c[1].data(), c[1].size()));
  c.release();
  EXPECT_EQ(rx.try_peek(8).status(), Status::corrupt);
}

TEST(CorruptSpsc, GarbageCommittedWordsNeverReadOutOfBounds) {
  Corruptible r(RingKind::spsc, 4, 32);
  SpscConsumer rx = SpscConsumer::attach(r.segment);
  // The peer marks slots committed for positions that were never written,
  // with arbitrary lengths; whatever is read stays inside its slot.
  std::mt19937_64 rng(12345);
  for (int round = 0; round < 2000; ++round) {
    const std::uint64_t pos = rx.position() + rng() % 6;
    r.trailer(pos)->committed = (rng() % 2) ? pos + 1 : rng();
    r.trailer(pos)->length = static_cast<std::uint32_t>(rng() % 3 == 0 ? rng() : rng() % 40);
    std::byte buf[32];
    std::size_t size = 0;
    const Status s = rx.try_pop(buf, size);
    ASSERT_TRUE(status_is_one_of(s, {Status::ok, Status::would_block, Status::corrupt}))
        << to_string(s);
    if (s == Status::ok) {
      EXPECT_LE(size, 32u);
    }
    ReadClaim c = rx.try_peek(4);
    for (std::size_t i = 0; i < c.size(); ++i) {
      ASSERT_TRUE(r.in_slots(c[i].data(), c[i].size()));
      ASSERT_LE(c[i].size(), 32u);
    }
    if (s == Status::corrupt) {
      r.trailer(rx.position())->length = 0;  // let it move on
    }
  }
}

// ---- SPSC: owner records and sleeper counts -------------------------------------------

TEST(CorruptSpsc, GarbageOwnerRecordIsTakenOver) {
  Corruptible r(RingKind::spsc, 4, 32);
  // A pid that cannot exist (above pid_max), and our own pid with a start
  // time that is not ours: both are dead owners.
  const std::uint64_t garbage[] = {0x00000000'7ffffffeull,
                                   0xdeadbeef'00000000ull | std::uint64_t(::getpid())};
  for (std::uint64_t g : garbage) {
    r.ctl()->producer.owner.identity = g;
    r.ctl()->consumer.owner.identity = g;
    std::error_code ec;
    SpscProducer p = SpscProducer::attach(r.segment, {}, ec);
    EXPECT_FALSE(ec) << last_error_message();
    SpscConsumer c = SpscConsumer::attach(r.segment, {}, ec);
    EXPECT_FALSE(ec) << last_error_message();
  }
  // Whatever the record says, the role is decided by its holder's lock: a
  // live holder elsewhere is respected however its record was scribbled.
  int to_parent[2], to_child[2];
  ASSERT_EQ(::pipe(to_parent), 0);
  ASSERT_EQ(::pipe(to_child), 0);
  const pid_t child = ::fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    std::error_code cec;
    SpscProducer held = SpscProducer::attach(r.segment, {}, cec);
    const char ok = cec ? 'n' : 'y';
    (void)!::write(to_parent[1], &ok, 1);
    char go = 0;
    (void)!::read(to_child[0], &go, 1);
    ::_exit(0);
  }
  char ok = 0;
  ASSERT_EQ(::read(to_parent[0], &ok, 1), 1);
  ASSERT_EQ(ok, 'y');
  for (std::uint64_t g : {std::uint64_t{0}, garbage[0], garbage[1]}) {
    r.ctl()->producer.owner.identity = g;
    std::error_code ec;
    SpscProducer p = SpscProducer::attach(r.segment, {}, ec);
    EXPECT_EQ(ec, make_error_code(errc::role_taken)) << "record 0x" << std::hex << g;
    EXPECT_NE(last_error_message().find("producer role is held by live process"), std::string::npos)
        << last_error_message();
  }
  const char go = 'g';
  (void)!::write(to_child[1], &go, 1);
  int status = 0;
  ASSERT_EQ(::waitpid(child, &status, 0), child);
  for (int fd : {to_parent[0], to_parent[1], to_child[0], to_child[1]}) ::close(fd);
  // Its holder gone, the role is free again.
  std::error_code ec;
  SpscProducer p = SpscProducer::attach(r.segment, {}, ec);
  EXPECT_FALSE(ec) << last_error_message();
}

TEST(CorruptSpsc, GarbageSleeperCountsOnlyCostWakeUps) {
  Corruptible r(RingKind::spsc, 4, 32);
  SpscProducer tx = SpscProducer::attach(r.segment);
  SpscConsumer rx = SpscConsumer::attach(r.segment);
  r.ctl()->producer_wait.waiters = 0xffffffffu;
  r.ctl()->consumer_wait.waiters = 0x12345678u;
  r.ctl()->producer.notify = 0xabcdef01u;
  r.ctl()->consumer.notify = 0xffffffffu;
  for (int i = 0; i < 20; ++i) {
    ASSERT_EQ(tx.try_push(as_bytes("w" + std::to_string(i))), Status::ok);
    std::byte buf[32];
    std::size_t size = 0;
    ASSERT_EQ(rx.try_pop(buf, size), Status::ok);
    EXPECT_EQ(test::to_string({buf, size}), "w" + std::to_string(i));
  }
  std::byte buf[32];
  std::size_t size = 0;
  const auto start = Clock::now();
  EXPECT_EQ(rx.pop(buf, size, 30ms), Status::timeout);
  EXPECT_GE(Clock::now() - start, 30ms);
}

// ---- MPMC: slot trailers ----------------------------------------------------------

TEST(CorruptMpmc, LengthLargerThanTheSlotIsDroppedAndCounted) {
  Corruptible r(RingKind::mpmc, 8, 32);
  MpmcProducer tx = MpmcProducer::attach(r.segment);
  MpmcConsumer rx = MpmcConsumer::attach(r.segment);
  ASSERT_EQ(tx.try_push(as_bytes("m0")), Status::ok);
  ASSERT_EQ(tx.try_push(as_bytes("m1")), Status::ok);
  ASSERT_EQ(tx.try_push(as_bytes("m2")), Status::ok);
  r.trailer(1)->length = 33;
  std::byte buf[64];
  std::size_t size = 0;
  ASSERT_EQ(rx.try_pop(buf, size), Status::ok);
  EXPECT_EQ(test::to_string({buf, size}), "m0");
  EXPECT_EQ(rx.corrupt_dropped(), 0u);
  EXPECT_EQ(rx.try_pop(buf, size), Status::corrupt);
  EXPECT_EQ(rx.corrupt_dropped(), 1u);
  ASSERT_EQ(rx.try_pop(buf, size), Status::ok) << "the ring keeps moving";
  EXPECT_EQ(test::to_string({buf, size}), "m2");
  EXPECT_EQ(rx.try_pop(buf, size), Status::would_block);
  // The dropped slot was released: the full capacity is available again.
  int pushed = 0;
  while (tx.try_push(as_bytes("fill")) == Status::ok) ++pushed;
  EXPECT_EQ(pushed, 8);
}

TEST(CorruptMpmc, BadLengthDropsTheWholeRun) {
  Corruptible r(RingKind::mpmc, 8, 32);
  MpmcProducer tx = MpmcProducer::attach(r.segment);
  MpmcConsumer rx = MpmcConsumer::attach(r.segment);
  MpmcConsumer other = MpmcConsumer::attach(r.segment);
  for (int i = 0; i < 4; ++i) ASSERT_EQ(tx.try_push(as_bytes("r" + std::to_string(i))), Status::ok);
  r.trailer(2)->length = 0xffffffffu;
  const ReadClaim c = rx.try_peek(3);
  EXPECT_TRUE(c.empty());
  EXPECT_EQ(c.status(), Status::corrupt);
  EXPECT_EQ(rx.corrupt_dropped(), 3u) << "the run it claimed is dropped";
  EXPECT_EQ(other.corrupt_dropped(), 0u) << "counted per handle";
  std::byte buf[32];
  std::size_t size = 0;
  ASSERT_EQ(other.try_pop(buf, size), Status::ok);
  EXPECT_EQ(test::to_string({buf, size}), "r3");
}

TEST(CorruptMpmc, GarbageCommittedWords) {
  Corruptible r(RingKind::mpmc, 4, 32);
  MpmcProducer tx = MpmcProducer::attach(r.segment);
  MpmcConsumer rx = MpmcConsumer::attach(r.segment);
  std::byte buf[32];
  std::size_t size = 0;
  // Ahead of the consumer's turn: impossible, since the counter did not move.
  r.trailer(0)->committed = 12345;
  EXPECT_EQ(rx.try_pop(buf, size), Status::corrupt);
  EXPECT_EQ(rx.try_peek(2).status(), Status::corrupt);
  auto start = Clock::now();
  EXPECT_EQ(rx.pop(buf, size, 20s), Status::corrupt);
  EXPECT_LT(Clock::now() - start, 10s);
  EXPECT_EQ(r.ctl()->consumer.position, 0u) << "nothing claimed";
  // Behind (as if from a long-gone lap): simply empty.
  r.trailer(0)->committed = ~0ull;
  EXPECT_EQ(rx.try_pop(buf, size), Status::would_block);
  start = Clock::now();
  EXPECT_EQ(rx.pop(buf, size, 30ms), Status::timeout);
  EXPECT_GE(Clock::now() - start, 30ms);
  // Set right again, the ring works.
  r.trailer(0)->committed = 0;
  ASSERT_EQ(tx.try_push(as_bytes("fine")), Status::ok);
  ASSERT_EQ(rx.try_pop(buf, size), Status::ok);
  EXPECT_EQ(test::to_string({buf, size}), "fine");
}

TEST(CorruptMpmc, GarbageReleasedWords) {
  Corruptible r(RingKind::mpmc, 4, 32);
  MpmcProducer tx = MpmcProducer::attach(r.segment);
  r.trailer(0)->released = 777;  // ahead of the producer's turn
  EXPECT_EQ(tx.try_push(as_bytes("x")), Status::corrupt);
  EXPECT_EQ(tx.try_claim(2).status(), Status::corrupt);
  auto start = Clock::now();
  EXPECT_EQ(tx.push(as_bytes("x"), 20s), Status::corrupt);
  EXPECT_LT(Clock::now() - start, 10s);
  r.trailer(0)->released = ~0ull;  // behind: looks full
  EXPECT_EQ(tx.try_push(as_bytes("x")), Status::would_block);
  start = Clock::now();
  EXPECT_EQ(tx.push(as_bytes("x"), 30ms), Status::timeout);
  EXPECT_GE(Clock::now() - start, 30ms);
  EXPECT_EQ(r.ctl()->producer.position, 0u) << "nothing claimed";
  r.trailer(0)->released = 0;
  EXPECT_EQ(tx.try_push(as_bytes("x")), Status::ok);
}

TEST(CorruptMpmc, GarbageFlags) {
  Corruptible r(RingKind::mpmc, 4, 32);
  MpmcProducer tx = MpmcProducer::attach(r.segment);
  MpmcConsumer rx = MpmcConsumer::attach(r.segment);
  ASSERT_EQ(tx.try_push(as_bytes("a")), Status::ok);
  ASSERT_EQ(tx.try_push(as_bytes("b")), Status::ok);
  r.trailer(0)->flags = kSlotSkipped;  // the peer hides a message: it is skipped
  r.trailer(1)->flags = 0xdead;        // unknown bits: still a message
  std::byte buf[32];
  std::size_t size = 0;
  ASSERT_EQ(rx.try_pop(buf, size), Status::ok);
  EXPECT_EQ(test::to_string({buf, size}), "b");
  EXPECT_EQ(rx.try_pop(buf, size), Status::would_block);
}

// ---- MPMC: counters ---------------------------------------------------------------

TEST(CorruptMpmc, CountersFarOutOfRange) {
  Corruptible r(RingKind::mpmc, 4, 32);
  MpmcProducer tx = MpmcProducer::attach(r.segment);
  MpmcConsumer rx = MpmcConsumer::attach(r.segment);
  std::byte buf[32];
  std::size_t size = 0;
  for (std::uint64_t bad :
       {kFar, kFar + 3, std::uint64_t{1} << 63, std::uint64_t{4}, (std::uint64_t{1} << 62) + 1}) {
    SCOPED_TRACE("counter " + std::to_string(bad));
    r.ctl()->producer.position = bad;
    r.ctl()->consumer.position = bad;
    const Status p = tx.try_push(as_bytes("x"));
    EXPECT_TRUE(status_is_one_of(p, {Status::would_block, Status::corrupt})) << to_string(p);
    const Status c = rx.try_pop(buf, size);
    EXPECT_TRUE(status_is_one_of(c, {Status::would_block, Status::corrupt})) << to_string(c);
    const WriteClaim w = tx.try_claim(4);
    EXPECT_TRUE(w.empty());
    const ReadClaim rc = rx.try_peek(4);
    EXPECT_TRUE(rc.empty());
    EXPECT_EQ(tx.push(as_bytes("x"), 5ms) == Status::ok, false);
    EXPECT_EQ(rx.pop(buf, size, 5ms) == Status::ok, false);
  }
  // At 2^64 - 1 the turn a reader waits for (position + 1) wraps to 0, the
  // value of a slot never written: a zero-length phantom message may be
  // delivered. Harmless (it lies inside its slot), and only a peer can put
  // the counter there.
  r.ctl()->producer.position = ~0ull;
  r.ctl()->consumer.position = ~0ull;
  {
    const Status p = tx.try_push(as_bytes("x"));
    EXPECT_TRUE(status_is_one_of(p, {Status::would_block, Status::corrupt})) << to_string(p);
    size = 12345;
    const Status c = rx.try_pop(buf, size);
    EXPECT_TRUE(status_is_one_of(c, {Status::ok, Status::would_block, Status::corrupt}));
    if (c == Status::ok) {
      EXPECT_EQ(size, 0u);
    }
  }
  // The consumer counter ahead of the producer's: the ring stalls, no more.
  r.ctl()->producer.position = 0;
  r.ctl()->consumer.position = 2;
  int pushed = 0;
  while (tx.try_push(as_bytes("s")) == Status::ok) ++pushed;
  EXPECT_LE(pushed, 4);
  int popped = 0;
  while (rx.try_pop(buf, size) == Status::ok) ++popped;
  EXPECT_LE(popped, pushed);
}

// ---- the header, rewritten after creation --------------------------------------------

TEST(CorruptHeader, AttachedHandlesKeepTheirBounds) {
  Corruptible r(RingKind::mpmc, 4, 32);
  MpmcProducer tx = MpmcProducer::attach(r.segment);
  MpmcConsumer rx = MpmcConsumer::attach(r.segment);
  // The peer claims the ring is far larger than it is.
  r.ctl()->header.capacity = std::uint64_t{1} << 20;
  r.ctl()->header.slot_size = std::uint64_t{1} << 20;
  r.ctl()->header.slot_stride = std::uint64_t{1} << 21;
  r.ctl()->header.segment_size = std::uint64_t{1} << 41;
  std::error_code ec;
  EXPECT_FALSE(Segment::open(r.shm.name(), {}, ec));
  EXPECT_EQ(ec, make_error_code(errc::corrupt_header));
  // Our handles validated the header when they were made and use that copy.
  for (int i = 0; i < 20; ++i) {
    WriteClaim w = tx.try_claim(4);
    ASSERT_FALSE(w.empty());
    for (std::size_t k = 0; k < w.size(); ++k) {
      ASSERT_EQ(w[k].size(), 32u);
      ASSERT_TRUE(r.in_slots(w[k].data(), w[k].size()));
      std::memset(w[k].data(), 'h', w[k].size());
    }
    w.commit_batch();
    ReadClaim c = rx.try_peek(4);
    ASSERT_FALSE(c.empty());
    for (std::size_t k = 0; k < c.size(); ++k) ASSERT_TRUE(r.in_slots(c[k].data(), c[k].size()));
    c.release();
  }
  EXPECT_EQ(tx.capacity(), 4u);
  EXPECT_EQ(rx.slot_size(), 32u);
  // A fresh attach through the Segment validated before the damage still works.
  EXPECT_TRUE(MpmcConsumer::attach(r.segment));
}

TEST(CorruptHeader, NewOpensAreRefused) {
  Corruptible r(RingKind::spsc, 4, 32);
  SpscProducer tx = SpscProducer::attach(r.segment);
  r.ctl()->header.magic = 0x4141414141414141ull;
  std::error_code ec;
  EXPECT_FALSE(Segment::open(r.shm.name(), {}, ec));
  EXPECT_EQ(ec, make_error_code(errc::bad_magic));
  r.ctl()->header.magic = kMagic;
  r.ctl()->header.ring_kind = 3;
  EXPECT_FALSE(Segment::open(r.shm.name(), {}, ec));
  EXPECT_EQ(ec, make_error_code(errc::corrupt_header));
  r.ctl()->header.ring_kind = static_cast<std::uint32_t>(RingKind::spsc);
  EXPECT_TRUE(Segment::open(r.shm.name(), {}, ec));
  EXPECT_EQ(tx.try_push(as_bytes("still fine")), Status::ok);
}

// ---- the views over heap memory (the ASan proof) ---------------------------------------

// Random words, biased towards values near the truth where the code has
// branches, and towards extremes.
std::uint64_t garbage(std::mt19937_64& rng, std::uint64_t near) {
  switch (rng() % 6) {
    case 0:
      return rng();
    case 1:
      return near + rng() % 9 - 4;
    case 2:
      return ~0ull - rng() % 4;
    case 3:
      return near + (rng() % 3) * 4;
    case 4:
      return std::uint64_t{1} << (rng() % 64);
    default:
      return near;
  }
}

// Reads a slot the way the consumers do (data, clamped size) and touches
// every byte of it: under ASan, a byte outside the heap buffer fails.
std::uint64_t touch(const ReadSlot& s) {
  std::uint64_t sum = 0;
  for (std::uint32_t i = 0; i < s.size; ++i) sum += static_cast<std::uint8_t>(s.data[i]);
  return sum;
}

TEST(CorruptViewsOnTheHeap, SpscFuzz) {
  std::mt19937_64 rng(2024);
  std::uint64_t checksum = 0;
  for (std::uint64_t capacity : {1u, 2u, 4u, 8u}) {
    test::HeapSegment mem(RingKind::spsc, capacity, 40);
    const SpscView view(mem.base(), mem.geometry());
    std::byte* const lo = mem.base() + mem.geometry().slots_offset;
    std::byte* const hi = mem.base() + mem.size();
    SpscProducerCursor pc;
    SpscConsumerCursor cc;
    int corrupt = 0;
    int read = 0;
    for (int step = 0; step < 20000; ++step) {
      // The peer writes something.
      switch (rng() % 5) {
        case 0:
          mem.control()->consumer.position = garbage(rng, pc.cached_tail);
          break;
        case 1:
          mem.control()->producer.position = garbage(rng, cc.tail);
          break;
        case 2:
          mem.trailer(rng())->committed = garbage(rng, cc.tail + 1);
          break;
        case 3:
          mem.trailer(rng())->length = static_cast<std::uint32_t>(garbage(rng, 40));
          break;
        default:
          break;
      }
      Status s = Status::ok;
      // Producer side.
      const std::uint64_t n = view.writable(pc, 1 + rng() % capacity, s);
      ASSERT_LE(n, capacity);
      ASSERT_TRUE(s == Status::ok || (s == Status::corrupt && n == 0));
      if (s == Status::corrupt) ++corrupt;
      for (std::uint64_t i = 0; i < n; ++i) {
        std::byte* p = view.payload(pc.head + i);
        ASSERT_TRUE(p >= lo && p + 40 <= hi);
        std::memset(p, static_cast<int>(step), 40);
        view.set_length(pc.head + i, static_cast<std::uint32_t>(rng() % 41));
      }
      if (n != 0) view.publish(pc, n);
      // Consumer side.
      s = Status::ok;
      const std::uint64_t m = view.readable(cc, 1 + rng() % capacity, s);
      ASSERT_LE(m, capacity);
      for (std::uint64_t i = 0; i < m; ++i) {
        const ReadSlot slot = view.read_slot(cc.tail + i);
        ASSERT_LE(slot.size, 40u);
        ASSERT_TRUE(slot.data >= lo && slot.data + slot.size <= hi);
        checksum += touch(slot);
        ++read;
      }
      if (m != 0) view.release(cc, m);
      if (s == Status::corrupt) {
        ++corrupt;
        ++cc.tail;  // a consumer that gives up on the slot
      }
      (void)view.data_ready(cc);
      (void)view.space_ready(pc);
      const std::uint64_t head = garbage(rng, pc.head);
      const std::uint64_t resumed = view.resume_head(head, garbage(rng, cc.tail));
      ASSERT_LE(resumed - head, capacity) << "resume_head looks at most one lap ahead";
    }
    EXPECT_GT(corrupt, 0) << "the fuzz reached the corrupt branches";
    EXPECT_GT(read, 100) << "the fuzz kept the ring moving";
  }
  EXPECT_NE(checksum, 0u);
}

TEST(CorruptViewsOnTheHeap, MpmcFuzz) {
  std::mt19937_64 rng(777);
  std::uint64_t checksum = 0;
  for (std::uint64_t capacity : {1u, 2u, 4u, 8u}) {
    test::HeapSegment mem(RingKind::mpmc, capacity, 24);
    const MpmcView view(mem.base(), mem.geometry());
    std::byte* const lo = mem.base() + mem.geometry().slots_offset;
    std::byte* const hi = mem.base() + mem.size();
    int corrupt = 0;
    int moved = 0;
    for (int step = 0; step < 20000; ++step) {
      const std::uint64_t wpos = mem.control()->producer.position;
      const std::uint64_t rpos = mem.control()->consumer.position;
      switch (rng() % 7) {
        case 0:
          mem.control()->producer.position = garbage(rng, wpos);
          break;
        case 1:
          mem.control()->consumer.position = garbage(rng, rpos);
          break;
        case 2:
          mem.trailer(rng())->committed = garbage(rng, rpos + 1);
          break;
        case 3:
          mem.trailer(rng())->released = garbage(rng, wpos);
          break;
        case 4:
          mem.trailer(rng())->length = static_cast<std::uint32_t>(garbage(rng, 24));
          break;
        case 5:
          mem.trailer(rng())->flags = static_cast<std::uint32_t>(rng() % 3);
          break;
        default:
          break;
      }
      Status s = Status::ok;
      const MpmcRange w = view.claim_write(1 + rng() % capacity, s);
      ASSERT_LE(w.count, capacity);
      if (s == Status::corrupt) ++corrupt;
      for (std::uint64_t i = 0; i < w.count; ++i) {
        std::byte* p = view.payload(w.first + i);
        ASSERT_TRUE(p >= lo && p + 24 <= hi);
        std::memset(p, static_cast<int>(step), 24);
        view.set_length(w.first + i, static_cast<std::uint32_t>(rng() % 25));
      }
      if (w.count != 0) {
        view.commit(w, rng() % 4 == 0 ? kSlotSkipped : 0);
        ++moved;
      }
      s = Status::ok;
      const MpmcRange r = view.claim_read(1 + rng() % capacity, s);
      ASSERT_LE(r.count, capacity);
      if (s == Status::corrupt) ++corrupt;
      for (std::uint64_t i = 0; i < r.count; ++i) {
        // What MpmcConsumer does: skip, or check the length, then read.
        if (view.skipped(r.first + i)) continue;
        if (!view.length_ok(view.committed_length(r.first + i))) continue;
        const ReadSlot slot = view.read_slot(r.first + i);
        ASSERT_LE(slot.size, 24u);
        ASSERT_TRUE(slot.data >= lo && slot.data + slot.size <= hi);
        checksum += touch(slot);
      }
      if (r.count != 0) view.release(r);
      (void)view.data_ready();
      (void)view.space_ready();
      // A peer that repairs one word now and then keeps the ring moving.
      if (rng() % 8 == 0) {
        const std::uint64_t p = mem.control()->producer.position;
        mem.trailer(p)->released = p;
      }
      if (rng() % 8 == 0) {
        const std::uint64_t p = mem.control()->consumer.position;
        mem.trailer(p)->committed = p + 1;
      }
    }
    EXPECT_GT(corrupt, 0) << "the fuzz reached the corrupt branch";
    EXPECT_GT(moved, 100) << "the fuzz kept the ring moving";
  }
  EXPECT_NE(checksum, 0u);
}

}  // namespace
}  // namespace shmring
