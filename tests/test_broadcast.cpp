// Broadcast rings below the role handles: the segment format (header fields,
// subscriber blocks, validation on open), the algorithm view (reliable
// back-pressure, joining, lossy laps and the seqlock, conflated reads) and
// the liveness of subscribers across processes (a killed subscriber is
// evicted and the producer goes on).
//
// Every message carries its position and a checksum of its payload
// (stress_message.hpp), so a subscriber tells a whole message from a torn,
// stale or misplaced one. Counts scale with SHMRING_STRESS_SCALE and shrink
// under ThreadSanitizer; waits poll a condition until a deadline.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "broadcast_support.hpp"
#include "detail/holding.hpp"
#include "detail/subscribers.hpp"
#include "shmring/broadcast_view.hpp"
#include "shmring/error.hpp"
#include "shmring/segment.hpp"
#include "stress_message.hpp"
#include "test_support.hpp"

namespace shmring {
namespace {

using namespace test::broadcast_suite;

// The message for `position`: its header says seq = position.
std::size_t make_message(std::vector<std::byte>& buf, std::uint64_t position) {
  buf.resize(kSlot);
  return msg::write(buf, 0, position, kMaxPayload);
}

// Publishes the message of c.head; false if the ring had no room.
bool try_push(const BroadcastView& v, BroadcastProducerCursor& c, std::vector<std::byte>& buf) {
  Status st = Status::ok;
  if (v.writable(c, 1, st) == 0) {
    EXPECT_EQ(st, Status::ok);
    return false;
  }
  const std::size_t n = make_message(buf, c.head);
  v.write(c.head, buf.data(), static_cast<std::uint32_t>(n));
  v.publish(c, 1);
  return true;
}

// Publishes messages from the head up to `total` as fast as the ring takes
// them; a producer held back past `deadline` fails the test and sets
// `failed`, as does any other thread's failure stop it.
void produce_until(const BroadcastView& v, std::uint64_t total, Clock::time_point deadline,
                   std::atomic<bool>& failed) {
  BroadcastProducerCursor p = v.resume();
  std::vector<std::byte> buf;
  while (p.head < total && !failed) {
    if (!try_push(v, p, buf)) {
      if (Clock::now() > deadline) {
        ADD_FAILURE() << "producer stuck at " << p.head;
        failed = true;
      }
      std::this_thread::yield();
    }
  }
}

// Whether `bytes` is the intact message of `position`.
::testing::AssertionResult is_message(const std::byte* bytes, std::size_t size,
                                      std::uint64_t position) {
  msg::Header h{};
  const msg::Verdict v = msg::check({bytes, size}, 1, ~std::uint64_t{0}, kMaxPayload, h);
  if (v != msg::Verdict::ok) {
    return ::testing::AssertionFailure() << "message at " << position << ": " << msg::to_string(v);
  }
  if (h.seq != position) {
    return ::testing::AssertionFailure() << "position " << position << " holds message " << h.seq;
  }
  return ::testing::AssertionSuccess();
}

// Reads and releases the message at c.next (copying it, which in a lossy
// ring is the seqlock read). ok, would_block, overrun or another status.
Status try_pop(const BroadcastView& v, BroadcastSubscriberCursor& c, std::vector<std::byte>& out,
               std::uint64_t& position) {
  Status st = Status::ok;
  if (v.readable(c, 1, st) == 0) return st == Status::ok ? Status::would_block : st;
  out.resize(kSlot);
  std::uint32_t size = 0;
  position = c.next;
  const Status copied = v.copy_out(c.next, out.data(), out.size(), size);
  if (copied != Status::ok) return copied;
  out.resize(size);
  v.release(c, 1);
  return Status::ok;
}

// ---- the segment -----------------------------------------------------------

TEST(BroadcastSegment, HeaderAndSubscriberBlocks) {
  Ring r(broadcast(3, Delivery::lossy, 8, 100));
  const Geometry& g = r.segment.geometry();
  EXPECT_EQ(g.kind, RingKind::broadcast);
  EXPECT_EQ(g.subscribers, 3u);
  EXPECT_EQ(g.delivery, Delivery::lossy);
  EXPECT_EQ(g.slots_offset, sizeof(ControlArea) + 3 * sizeof(SubscriberBlock));
  EXPECT_EQ(g.slots_offset % kBlockSize, 0u);
  EXPECT_EQ(g.segment_size, g.slots_offset + 8 * g.slot_stride);
  EXPECT_EQ(test::file_size(r.shm.name()), static_cast<std::int64_t>(g.segment_size));
  const auto h = test::read_value_at<SegmentHeader>(r.shm.name(), 0);
  EXPECT_EQ(h.ring_kind, 3u);
  EXPECT_EQ(h.subscribers, 3u);
  EXPECT_EQ(h.delivery, 1u);
  EXPECT_EQ(h.slots_offset, g.slots_offset);
  Segment opened = Segment::open(r.shm.name());
  EXPECT_EQ(opened.geometry(), g);
  OpenOptions want;
  want.kind = RingKind::broadcast;
  EXPECT_TRUE(Segment::open(r.shm.name(), want));
  want.kind = RingKind::spsc;
  std::error_code ec;
  EXPECT_FALSE(Segment::open(r.shm.name(), want, ec));
  EXPECT_EQ(ec, make_error_code(errc::kind_mismatch));
  // Every block starts free.
  const BroadcastView v = r.view();
  for (std::uint32_t i = 0; i < 3; ++i) {
    EXPECT_EQ(v.subscriber(i)->state, kSubscriberFree);
    EXPECT_FALSE(v.counts(i));
  }
  // Other kinds have neither.
  test::UniqueShm other;
  CreateOptions spsc;
  spsc.capacity = 8;
  spsc.slot_size = 100;
  Segment s = Segment::create(other.name(), spsc);
  EXPECT_EQ(s.geometry().subscribers, 0u);
  EXPECT_EQ(s.geometry().slots_offset, kSlotsOffset);
  Segment::unlink(other.name());
}

void expect_create_fails(const CreateOptions& o, errc code,
                         std::initializer_list<std::string> shows) {
  test::UniqueShm shm;
  std::error_code ec;
  EXPECT_FALSE(Segment::create(shm.name(), o, ec));
  EXPECT_EQ(ec, make_error_code(code)) << ec.message();
  const std::string m = last_error_message();
  for (const std::string& s : shows) EXPECT_NE(m.find(s), std::string::npos) << m;
  EXPECT_FALSE(test::shm_exists(shm.name()));
}

TEST(BroadcastSegment, CreateRefusesBadOptionsByName) {
  expect_create_fails(broadcast(0, Delivery::reliable), errc::invalid_argument,
                      {"1 to 64 subscribers", "0 subscribers", "CreateOptions::subscribers"});
  expect_create_fails(broadcast(65, Delivery::lossy), errc::invalid_argument,
                      {"1 to 64 subscribers", "65 subscribers"});
  CreateOptions o = broadcast(2, static_cast<Delivery>(7));
  expect_create_fails(o, errc::invalid_argument,
                      {"neither reliable (0) nor lossy (1)", "delivery 7"});
  o = broadcast(4, Delivery::reliable);
  o.kind = RingKind::spsc;
  expect_create_fails(o, errc::invalid_argument, {"only broadcast rings have subscribers"});
  o = broadcast(0, Delivery::lossy);
  o.kind = RingKind::mpmc;
  expect_create_fails(o, errc::invalid_argument, {"lossy delivery needs a broadcast ring"});
  o = broadcast(2, Delivery::reliable, 8, 64);
  o.format = SlotFormat::low_latency;
  expect_create_fails(o, errc::invalid_slot_format, {"low-latency slots need an spsc ring"});
  // The bounds themselves are fine.
  Ring one(broadcast(1, Delivery::reliable, 2, 8), "one");
  Ring many(broadcast(kMaxSubscribers, Delivery::lossy, 2, 8), "many");
  EXPECT_EQ(many.segment.geometry().slots_offset, kSlotsOffset + 64 * 128);
}

void expect_open_fails(const std::string& name, errc code,
                       std::initializer_list<std::string> shows) {
  OpenOptions o;
  o.init_timeout = 50ms;
  std::error_code ec;
  EXPECT_FALSE(Segment::open(name, o, ec));
  EXPECT_EQ(ec, make_error_code(code)) << ec.message();
  const std::string m = last_error_message();
  for (const std::string& s : shows) EXPECT_NE(m.find(s), std::string::npos) << m;
}

TEST(BroadcastSegment, OpenNamesACorruptSubscriberCountOrMode) {
  Ring r(broadcast(3, Delivery::reliable, 8, 64));
  const std::string& name = r.shm.name();
  struct Field {
    std::size_t offset;
    std::uint32_t value;
    std::vector<std::string> shows;
  };
  const Field fields[] = {
      {offsetof(SegmentHeader, subscribers),
       0,
       {"header geometry is invalid", "1 to 64", "0 subscribers"}},
      {offsetof(SegmentHeader, subscribers), 65, {"1 to 64", "65 subscribers"}},
      {offsetof(SegmentHeader, subscribers), 0xffffffffu, {"1 to 64", "4294967295 subscribers"}},
      // Valid alone, but the slots would begin elsewhere.
      {offsetof(SegmentHeader, subscribers), 4, {"does not match", "slots at"}},
      {offsetof(SegmentHeader, delivery), 2, {"neither reliable (0) nor lossy (1)", "delivery 2"}},
      {offsetof(SegmentHeader, ring_kind), 1, {"only broadcast rings have subscribers"}},
      {offsetof(SegmentHeader, ring_kind), 4, {"ring kind 4", "broadcast (3)"}},
  };
  for (const Field& f : fields) {
    SCOPED_TRACE("field at " + std::to_string(f.offset) + " = " + std::to_string(f.value));
    const auto original = test::read_value_at<std::uint32_t>(name, f.offset);
    ASSERT_TRUE(test::write_value_at(name, f.offset, f.value));
    OpenOptions o;
    o.init_timeout = 50ms;
    std::error_code ec;
    EXPECT_FALSE(Segment::open(name, o, ec));
    EXPECT_EQ(ec, make_error_code(errc::corrupt_header)) << ec.message();
    const std::string m = last_error_message();
    for (const std::string& s : f.shows) EXPECT_NE(m.find(s), std::string::npos) << m;
    ASSERT_TRUE(test::write_value_at(name, f.offset, original));
  }
  // An spsc ring whose header claims a lossy delivery.
  test::UniqueShm other;
  CreateOptions spsc;
  spsc.capacity = 8;
  spsc.slot_size = 64;
  { Segment s = Segment::create(other.name(), spsc); }
  ASSERT_TRUE(
      test::write_value_at<std::uint32_t>(other.name(), offsetof(SegmentHeader, delivery), 1));
  expect_open_fails(other.name(), errc::corrupt_header, {"lossy delivery needs a broadcast ring"});
  Segment::unlink(other.name());
  EXPECT_TRUE(Segment::open(name)) << "restored header opens again";
}

TEST(BroadcastSegment, OpenOrCreateComparesSubscribersAndDelivery) {
  test::UniqueShm shm;
  Segment first = Segment::open_or_create(shm.name(), broadcast(4, Delivery::reliable));
  ASSERT_TRUE(first.created());
  std::error_code ec;
  EXPECT_FALSE(Segment::open_or_create(shm.name(), broadcast(5, Delivery::reliable), 1s, ec));
  EXPECT_EQ(ec, make_error_code(errc::geometry_mismatch));
  EXPECT_NE(last_error_message().find("4 subscribers"), std::string::npos) << last_error_message();
  EXPECT_FALSE(Segment::open_or_create(shm.name(), broadcast(4, Delivery::lossy), 1s, ec));
  EXPECT_EQ(ec, make_error_code(errc::geometry_mismatch));
  EXPECT_NE(last_error_message().find("delivery lossy"), std::string::npos) << last_error_message();
  Segment again = Segment::open_or_create(shm.name(), broadcast(4, Delivery::reliable));
  EXPECT_FALSE(again.created());
  Segment::unlink(shm.name());
}

// ---- reliable: the view ----------------------------------------------------

TEST(BroadcastReliable, TheSlowestSubscriberHoldsTheProducerBack) {
  Ring r(broadcast(3, Delivery::reliable, 8));
  const BroadcastView v = r.view();
  BroadcastProducerCursor p = v.resume();
  BroadcastSubscriberCursor fast = v.join(0, JoinAt::oldest);
  BroadcastSubscriberCursor slow = v.join(2, JoinAt::oldest);
  std::vector<std::byte> buf;
  int pushed = 0;
  while (try_push(v, p, buf)) ++pushed;
  EXPECT_EQ(pushed, 8) << "a lap, and no more";
  // Both read every message; only the fast one releases.
  std::vector<std::byte> out;
  std::uint64_t pos = 0;
  for (std::uint64_t i = 0; i < 8; ++i) {
    ASSERT_EQ(try_pop(v, fast, out, pos), Status::ok);
    EXPECT_EQ(pos, i);
    EXPECT_TRUE(is_message(out.data(), out.size(), i));
  }
  EXPECT_EQ(try_pop(v, fast, out, pos), Status::would_block);
  Status st = Status::ok;
  EXPECT_EQ(v.writable(p, 1, st), 0u) << "the slow subscriber has released nothing";
  EXPECT_FALSE(v.space_ready(p));
  // The slow one reads three in place and releases them: three slots free.
  ASSERT_EQ(v.readable(slow, 8, st), 8u);
  for (std::uint64_t i = 0; i < 3; ++i) {
    const ReadSlot s = v.read_slot(slow.next + i);
    EXPECT_TRUE(is_message(s.data, s.size, i));
    EXPECT_TRUE(v.still_valid(slow.next + i));
  }
  v.release(slow, 3);
  EXPECT_TRUE(v.space_ready(p));
  EXPECT_EQ(v.writable(p, 8, st), 3u);
  // Once the slow one leaves, only the fast one counts.
  EXPECT_FALSE(v.leave(slow));
  EXPECT_FALSE(v.counts(2));
  EXPECT_TRUE(v.counts(0));
  EXPECT_EQ(v.writable(p, 8, st), 8u);
  EXPECT_EQ(st, Status::ok);
}

TEST(BroadcastReliable, NoSubscriberMeansNoBackPressure) {
  Ring r(broadcast(2, Delivery::reliable, 4));
  const BroadcastView v = r.view();
  BroadcastProducerCursor p = v.resume();
  std::vector<std::byte> buf;
  for (int i = 0; i < 50; ++i) ASSERT_TRUE(try_push(v, p, buf)) << i;
  EXPECT_EQ(p.head, 50u);
}

TEST(BroadcastReliable, LateJoinFromOldestNewestOrNext) {
  Ring r(broadcast(3, Delivery::reliable, 8));
  const BroadcastView v = r.view();
  BroadcastProducerCursor p = v.resume();
  std::vector<std::byte> buf;
  for (int i = 0; i < 20; ++i) ASSERT_TRUE(try_push(v, p, buf));
  std::vector<std::byte> out;
  std::uint64_t pos = 0;
  // Oldest: the producer's floor, from which it keeps every message; never
  // more than a lap back, and everything from it on is intact.
  BroadcastSubscriberCursor oldest = v.join(0, JoinAt::oldest);
  EXPECT_GE(oldest.next, 20u - 8u);
  EXPECT_LT(oldest.next, 20u);
  EXPECT_EQ(oldest.next, v.subscriber(0)->joined_at);
  for (std::uint64_t i = oldest.next; i < 20; ++i) {
    ASSERT_EQ(try_pop(v, oldest, out, pos), Status::ok);
    EXPECT_EQ(pos, i);
    EXPECT_TRUE(is_message(out.data(), out.size(), i));
  }
  BroadcastSubscriberCursor newest = v.join(1, JoinAt::newest);
  EXPECT_EQ(newest.next, 19u);
  ASSERT_EQ(try_pop(v, newest, out, pos), Status::ok);
  EXPECT_TRUE(is_message(out.data(), out.size(), 19));
  BroadcastSubscriberCursor next = v.join(2, JoinAt::next);
  EXPECT_EQ(next.next, 20u);
  EXPECT_EQ(try_pop(v, next, out, pos), Status::would_block);
  EXPECT_FALSE(v.data_ready(next));
  ASSERT_TRUE(try_push(v, p, buf));
  EXPECT_TRUE(v.data_ready(next));
  for (auto* c : {&oldest, &newest, &next}) {
    ASSERT_EQ(try_pop(v, *c, out, pos), Status::ok);
    EXPECT_TRUE(is_message(out.data(), out.size(), 20));
  }
}

TEST(BroadcastReliable, AJoinerBelowTheFloorMovesUpToIt) {
  // The producer published a floor above position 0 before the joiner
  // looked: a joiner must not start below it, since the producer may rewrite
  // those slots without scanning again.
  Ring r(broadcast(2, Delivery::reliable, 8));
  const BroadcastView v = r.view();
  BroadcastProducerCursor p = v.resume();
  std::vector<std::byte> buf;
  for (int i = 0; i < 8; ++i) ASSERT_TRUE(try_push(v, p, buf));
  Status st = Status::ok;
  ASSERT_TRUE(v.refresh(p, st));
  EXPECT_EQ(test::control_of(r.segment.base())->producer.floor, 8u)
      << "no subscriber: floor = head";
  const BroadcastSubscriberCursor c = v.join(0, JoinAt::oldest);
  EXPECT_EQ(c.next, 8u);
  EXPECT_EQ(v.subscriber(0)->cursor, 8u);
  // The producer's next scan counts it: a lap from its cursor, no more.
  for (int i = 0; i < 8; ++i) ASSERT_TRUE(try_push(v, p, buf));
  EXPECT_FALSE(try_push(v, p, buf));
}

TEST(BroadcastReliable, ACursorAheadOfTheHeadIsCorrupt) {
  Ring r(broadcast(1, Delivery::reliable, 4));
  const BroadcastView v = r.view();
  BroadcastProducerCursor p = v.resume();
  BroadcastSubscriberCursor c = v.join(0, JoinAt::next);
  std::vector<std::byte> buf;
  for (int i = 0; i < 4; ++i) ASSERT_TRUE(try_push(v, p, buf));
  v.subscriber(0)->cursor = 1000;  // a peer scribbles
  Status st = Status::ok;
  EXPECT_EQ(v.writable(p, 1, st), 0u);
  EXPECT_EQ(st, Status::corrupt);
  EXPECT_TRUE(v.space_ready(p)) << "reported, not slept on";
  (void)c;
}

TEST(BroadcastReliable, AProducerThatTakesOverContinuesWithoutResubscribing) {
  Ring r(broadcast(2, Delivery::reliable, 8));
  const BroadcastView v = r.view();
  BroadcastSubscriberCursor a = v.join(0, JoinAt::oldest);
  BroadcastSubscriberCursor b = v.join(1, JoinAt::oldest);
  std::vector<std::byte> buf;
  {
    BroadcastProducerCursor first = v.resume();
    for (int i = 0; i < 5; ++i) ASSERT_TRUE(try_push(v, first, buf));
    // It commits position 5 and dies before its head store.
    Status st = Status::ok;
    ASSERT_EQ(v.writable(first, 1, st), 1u);
    const std::size_t n = make_message(buf, 5);
    v.write(5, buf.data(), static_cast<std::uint32_t>(n));
    atomic::store_release(&v.trailer(5)->committed, std::uint64_t{6});
  }
  BroadcastProducerCursor second = v.resume();
  EXPECT_EQ(second.head, 6u) << "continues after the committed slot, never over it";
  int pushed = 0;
  while (try_push(v, second, buf)) ++pushed;
  EXPECT_EQ(pushed, 2) << "the subscribers' cursors still hold it back";
  std::vector<std::byte> out;
  std::uint64_t pos = 0;
  for (auto* c : {&a, &b}) {
    for (std::uint64_t i = 0; i < 8; ++i) {
      ASSERT_EQ(try_pop(v, *c, out, pos), Status::ok);
      EXPECT_TRUE(is_message(out.data(), out.size(), i));
    }
  }
}

TEST(BroadcastReliable, ConflatedReadTakesTheNewestAndReleasesTheRest) {
  Ring r(broadcast(2, Delivery::reliable, 8));
  const BroadcastView v = r.view();
  BroadcastProducerCursor p = v.resume();
  BroadcastSubscriberCursor slow = v.join(0, JoinAt::oldest);
  BroadcastSubscriberCursor latest = v.join(1, JoinAt::oldest);
  std::vector<std::byte> buf;
  for (int i = 0; i < 6; ++i) ASSERT_TRUE(try_push(v, p, buf));
  EXPECT_EQ(v.newest(latest), 5u);
  std::vector<std::byte> out;
  std::uint64_t pos = 0;
  ASSERT_EQ(try_pop(v, latest, out, pos), Status::ok);
  EXPECT_EQ(pos, 5u);
  EXPECT_TRUE(is_message(out.data(), out.size(), 5));
  EXPECT_EQ(v.newest(latest), 0u) << "nothing newer";
  EXPECT_EQ(try_pop(v, latest, out, pos), Status::would_block);
  // The slow one still holds the producer back: two more, then full.
  EXPECT_TRUE(try_push(v, p, buf));
  EXPECT_TRUE(try_push(v, p, buf));
  EXPECT_FALSE(try_push(v, p, buf));
  EXPECT_EQ(v.subscriber(1)->lost, 0u) << "a conflated read loses nothing it did not ask to";
  (void)slow;
}

// Every subscriber thread sees every message, in order and intact, while
// subscribers join late and leave early; the producer waits only for the
// ones still there.
TEST(BroadcastReliable, EverySubscriberSeesEveryMessageInOrder) {
  constexpr std::uint32_t kSubs = 4;
  Ring r(broadcast(kSubs, Delivery::reliable, 64));
  const BroadcastView v = r.view();
  const std::uint64_t total = msg::scaled(200'000, 10);
  const auto deadline = Clock::now() + kDeadline;
  std::atomic<bool> failed{false};
  std::atomic<std::uint32_t> joined{0};
  std::vector<std::uint64_t> first(kSubs), received(kSubs);

  auto subscriber = [&](std::uint32_t index) {
    // Subscriber 3 joins late (from the newest); subscriber 2 leaves half-way.
    if (index == 3) {
      while (atomic::load_acquire(&v.producer()->position) < total / 4 && !failed) {
        std::this_thread::yield();
      }
    }
    BroadcastSubscriberCursor c = v.join(index, index == 3 ? JoinAt::newest : JoinAt::oldest);
    first[index] = c.next;
    joined.fetch_add(1);
    const std::uint64_t stop = index == 2 ? total / 2 : total;
    std::vector<std::byte> out(kSlot);
    while (c.next < stop && !failed) {
      Status st = Status::ok;
      const std::uint64_t n = v.readable(c, 16, st);
      if (st != Status::ok) {
        ADD_FAILURE() << "subscriber " << index << ": " << to_string(st);
        failed = true;
        return;
      }
      if (n == 0) {
        if (Clock::now() > deadline) {
          ADD_FAILURE() << "subscriber " << index << " stuck at " << c.next;
          failed = true;
          return;
        }
        std::this_thread::yield();
        continue;
      }
      for (std::uint64_t i = 0; i < n && c.next + i < stop; ++i) {
        const ReadSlot s = v.read_slot(c.next + i);  // in place
        if (!is_message(s.data, s.size, c.next + i)) {
          ADD_FAILURE() << "subscriber " << index << ": "
                        << is_message(s.data, s.size, c.next + i).message();
          failed = true;
          return;
        }
        ++received[index];
      }
      v.release(c, std::min(n, stop - c.next));
    }
    if (index == 2) v.leave(c);
  };
  std::vector<std::thread> threads;
  for (std::uint32_t i = 0; i < kSubs; ++i) threads.emplace_back(subscriber, i);
  // Subscribers 0-2 join at the start; the producer waits for them so that
  // they see message 0.
  while (joined.load() < 3 && Clock::now() < deadline) std::this_thread::yield();
  produce_until(v, total, deadline, failed);
  for (auto& t : threads) t.join();
  ASSERT_FALSE(failed);
  EXPECT_EQ(first[0], 0u);
  EXPECT_EQ(received[0], total);
  EXPECT_EQ(received[1], total);
  EXPECT_EQ(received[2], total / 2);
  EXPECT_GE(first[3], total / 4 - 1);
  EXPECT_EQ(received[3], total - first[3]);
}

// Joins race the producer's scans (the floor handshake): subscribers join
// from the oldest message, read a few, leave and join again while the
// producer fills a small ring as fast as it can. A joiner that started on a
// slot the producer was rewriting would read a wrong or torn message (and
// ThreadSanitizer would see the race).
TEST(BroadcastReliable, JoinsRacingTheProducerNeverReadARewrittenSlot) {
  constexpr std::uint32_t kSubs = 2;
  Ring r(broadcast(kSubs, Delivery::reliable, 8));
  const BroadcastView v = r.view();
  const std::uint64_t total = msg::scaled(4'000, 10);
  const auto deadline = Clock::now() + kDeadline;
  std::atomic<bool> done{false}, failed{false};
  std::atomic<std::uint64_t> joins{0};
  auto subscriber = [&](std::uint32_t index) {
    std::vector<std::byte> out;
    while (!done && !failed) {
      BroadcastSubscriberCursor c = v.join(index, JoinAt::oldest);
      joins.fetch_add(1);
      for (int k = 0; k < 3 && !done && !failed;) {
        std::uint64_t pos = 0;
        const Status st = try_pop(v, c, out, pos);
        if (st == Status::would_block) {
          std::this_thread::yield();
          continue;
        }
        if (st != Status::ok || !is_message(out.data(), out.size(), pos)) {
          ADD_FAILURE() << "subscriber " << index << " at " << pos << ": " << to_string(st) << " "
                        << is_message(out.data(), out.size(), pos).message();
          failed = true;
        }
        ++k;
      }
      v.leave(c);
    }
  };
  std::vector<std::thread> threads;
  for (std::uint32_t i = 0; i < kSubs; ++i) threads.emplace_back(subscriber, i);
  // The race is between joins and publications: start once both have joined
  // (a reliable ring with nobody joined holds nothing back).
  while (joins.load() < kSubs && Clock::now() < deadline) std::this_thread::yield();
  produce_until(v, total, deadline, failed);
  done = true;
  for (auto& t : threads) t.join();
  EXPECT_FALSE(failed);
  EXPECT_GT(joins.load(), 10u);
}

// ---- reliable: subscribers in other processes ---------------------------------

// A child process that takes a subscriber block, joins, reports its index
// through `pipe_w` and then reads nothing until killed.
pid_t spawn_stuck_subscriber(const std::string& name, int pipe_w) {
  const pid_t pid = ::fork();
  if (pid != 0) return pid;
  Segment s = Segment::open(name);
  std::shared_ptr<detail::Holding> holding;
  detail::Failure f;
  const auto index = detail::take_subscriber(s, holding, f);
  std::uint32_t report = index ? *index : 0xffffffffu;
  if (index) (void)BroadcastView(s.base(), s.geometry()).join(*index, JoinAt::oldest);
  if (::write(pipe_w, &report, sizeof report) != sizeof report) ::_exit(3);
  for (;;) ::pause();
}

TEST(BroadcastLiveness, AKilledSubscriberIsEvictedAndTheProducerGoesOn) {
  Ring r(broadcast(2, Delivery::reliable, 8));
  const BroadcastView v = r.view();
  int fds[2];
  ASSERT_EQ(::pipe(fds), 0);
  const pid_t child = spawn_stuck_subscriber(r.shm.name(), fds[1]);
  ASSERT_GT(child, 0);
  std::uint32_t index = 0;
  ASSERT_EQ(::read(fds[0], &index, sizeof index), static_cast<ssize_t>(sizeof index));
  ::close(fds[0]);
  ::close(fds[1]);
  ASSERT_LT(index, 2u);
  EXPECT_TRUE(detail::subscriber_alive(r.segment.fd(), index));
  EXPECT_EQ(process::pid_of(v.subscriber(index)->holder), static_cast<std::uint32_t>(child));

  // This process subscribes too, through the other block.
  std::shared_ptr<detail::Holding> holding;
  detail::Failure f;
  const auto mine = detail::take_subscriber(r.segment, holding, f);
  ASSERT_TRUE(mine) << f.message;
  EXPECT_NE(*mine, index);
  BroadcastSubscriberCursor me = v.join(*mine, JoinAt::oldest);
  {
    std::shared_ptr<detail::Holding> third;
    EXPECT_FALSE(detail::take_subscriber(r.segment, third, f));
    EXPECT_EQ(f.code, make_error_code(errc::role_taken));
    EXPECT_NE(f.message.find("all 2 subscriber blocks"), std::string::npos) << f.message;
  }

  BroadcastProducerCursor p = v.resume();
  std::vector<std::byte> buf, out;
  std::uint64_t pos = 0;
  for (int i = 0; i < 8; ++i) ASSERT_TRUE(try_push(v, p, buf));
  for (int i = 0; i < 8; ++i) ASSERT_EQ(try_pop(v, me, out, pos), Status::ok);
  EXPECT_FALSE(try_push(v, p, buf)) << "the stuck subscriber holds the producer back";
  EXPECT_EQ(detail::evict_dead_subscribers(v, r.segment.fd()), 0u) << "it lives";
  EXPECT_FALSE(try_push(v, p, buf));

  ASSERT_EQ(::kill(child, SIGKILL), 0);
  EXPECT_EQ(test::wait_child(child), -1);
  // The kernel has dropped its lock once waitpid returned.
  EXPECT_FALSE(detail::subscriber_alive(r.segment.fd(), index));
  EXPECT_TRUE(v.counts(index)) << "dead, but not evicted yet";
  EXPECT_EQ(detail::evict_dead_subscribers(v, r.segment.fd()), 1u);
  EXPECT_FALSE(v.counts(index));
  EXPECT_EQ(detail::evict_dead_subscribers(v, r.segment.fd()), 0u) << "once";
  for (int i = 0; i < 8; ++i) ASSERT_TRUE(try_push(v, p, buf)) << i;
  EXPECT_FALSE(try_push(v, p, buf)) << "the live subscriber still counts";

  // The dead block is taken again; its new session counts.
  std::shared_ptr<detail::Holding> again;
  const auto reused = detail::take_subscriber(r.segment, again, f);
  ASSERT_TRUE(reused) << f.message;
  EXPECT_EQ(*reused, index);
  BroadcastSubscriberCursor late = v.join(*reused, JoinAt::next);
  EXPECT_TRUE(v.counts(index));
  EXPECT_EQ(late.next, p.head);
  // Both retire: no back-pressure any more.
  detail::retire_subscriber(v, me, holding);
  detail::retire_subscriber(v, late, again);
  EXPECT_FALSE(detail::subscriber_alive(r.segment.fd(), index));
  EXPECT_EQ(v.subscriber(index)->state, kSubscriberRetired);
  EXPECT_EQ(v.subscriber(index)->holder, 0u) << "cleared by the holding";
  for (int i = 0; i < 20; ++i) ASSERT_TRUE(try_push(v, p, buf));
}

TEST(BroadcastLiveness, TakeSubscriberRefusesOtherKindsAndReadOnlyMappings) {
  test::UniqueShm shm;
  CreateOptions o;
  o.capacity = 8;
  o.slot_size = 64;
  Segment s = Segment::create(shm.name(), o);
  std::shared_ptr<detail::Holding> h;
  detail::Failure f;
  EXPECT_FALSE(detail::take_subscriber(s, h, f));
  EXPECT_EQ(f.code, make_error_code(errc::kind_mismatch));
  EXPECT_NE(f.message.find("this one is spsc"), std::string::npos) << f.message;
  Segment::unlink(shm.name());
  Ring r(broadcast(1, Delivery::lossy, 8));
  OpenOptions ro;
  ro.read_only = true;
  Segment view_only = Segment::open(r.shm.name(), ro);
  EXPECT_FALSE(detail::take_subscriber(view_only, h, f));
  EXPECT_EQ(f.code, make_error_code(errc::permission_denied));
}

// ---- lossy -----------------------------------------------------------------

TEST(BroadcastLossy, TheProducerNeverWaitsAndALappedSubscriberSkipsAhead) {
  Ring r(broadcast(2, Delivery::lossy, 8));
  const BroadcastView v = r.view();
  BroadcastProducerCursor p = v.resume();
  BroadcastSubscriberCursor slow = v.join(0, JoinAt::oldest);
  std::vector<std::byte> buf, out;
  for (int i = 0; i < 20; ++i) ASSERT_TRUE(try_push(v, p, buf)) << "never waits";
  std::uint64_t pos = 0;
  EXPECT_EQ(try_pop(v, slow, out, pos), Status::overrun);
  EXPECT_EQ(v.recover_overrun(slow), 19u);
  EXPECT_EQ(slow.next, 19u);
  EXPECT_EQ(slow.lapped, 1u);
  EXPECT_EQ(slow.lost, 19u);
  EXPECT_EQ(v.subscriber(0)->lapped, 1u);
  EXPECT_EQ(v.subscriber(0)->lost, 19u);
  ASSERT_EQ(try_pop(v, slow, out, pos), Status::ok);
  EXPECT_TRUE(is_message(out.data(), out.size(), 19));
  EXPECT_EQ(try_pop(v, slow, out, pos), Status::would_block);
  EXPECT_EQ(v.recover_overrun(slow), 0u) << "not lapped: nothing skipped";
  // A lap exactly: still readable from the cursor.
  for (int i = 0; i < 8; ++i) ASSERT_TRUE(try_push(v, p, buf));
  for (std::uint64_t i = 20; i < 28; ++i) {
    ASSERT_EQ(try_pop(v, slow, out, pos), Status::ok) << i;
    EXPECT_TRUE(is_message(out.data(), out.size(), i));
  }
  // Joining late: oldest is a lap back, newest is the last one.
  BroadcastSubscriberCursor oldest = v.join(1, JoinAt::oldest);
  EXPECT_EQ(oldest.next, 20u);
  ASSERT_EQ(try_pop(v, oldest, out, pos), Status::ok);
  EXPECT_TRUE(is_message(out.data(), out.size(), 20));
  v.leave(oldest);
  BroadcastSubscriberCursor newest = v.join(1, JoinAt::newest);
  EXPECT_EQ(newest.next, 27u);
  EXPECT_EQ(v.subscriber(1)->lapped, 0u) << "a new session starts with clean counts";
}

TEST(BroadcastLossy, AMessageRewrittenWhileReadIsDetected) {
  // The seqlock, interleaved by hand: the subscriber finds position 0
  // readable and starts reading; the producer laps it meanwhile.
  Ring r(broadcast(1, Delivery::lossy, 2));
  const BroadcastView v = r.view();
  BroadcastProducerCursor p = v.resume();
  BroadcastSubscriberCursor c = v.join(0, JoinAt::oldest);
  std::vector<std::byte> buf, out(kSlot);
  ASSERT_TRUE(try_push(v, p, buf));
  Status st = Status::ok;
  ASSERT_EQ(v.readable(c, 1, st), 1u);
  const ReadSlot in_place = v.read_slot(0);
  ASSERT_TRUE(is_message(in_place.data, in_place.size, 0));
  ASSERT_TRUE(try_push(v, p, buf));
  // The producer claims slot 0 again (position 2) and is writing it.
  ASSERT_EQ(v.writable(p, 1, st), 1u);
  EXPECT_FALSE(v.still_valid(0)) << "being rewritten";
  std::uint32_t size = 0;
  EXPECT_EQ(v.copy_out(0, out.data(), out.size(), size), Status::overrun);
  const std::size_t n = make_message(buf, 2);
  v.write(2, buf.data(), static_cast<std::uint32_t>(n));
  v.publish(p, 1);
  EXPECT_FALSE(v.still_valid(0)) << "rewritten";
  EXPECT_EQ(v.copy_out(0, out.data(), out.size(), size), Status::overrun);
  EXPECT_EQ(v.readable(c, 1, st), 0u);
  EXPECT_EQ(st, Status::overrun);
  EXPECT_EQ(v.recover_overrun(c), 2u);
  std::uint64_t pos = 0;
  ASSERT_EQ(try_pop(v, c, out, pos), Status::ok);
  EXPECT_EQ(pos, 2u);
  EXPECT_TRUE(is_message(out.data(), out.size(), 2));
}

// An empty poll decides from the slot at the cursor: one that holds an
// earlier position was not claimed for the cursor yet, so it is nothing
// yet, never a lap; a slot being written (0) is a lap only when the head is
// more than a lap past the cursor.
TEST(BroadcastLossy, AnEmptyPollIsALapOnlyWhenTheSlotSaysSo) {
  Ring r(broadcast(1, Delivery::lossy, 4));
  const BroadcastView v = r.view();
  BroadcastProducerCursor p = v.resume();
  BroadcastSubscriberCursor c = v.join(0, JoinAt::oldest);
  std::vector<std::byte> buf, out;
  std::uint64_t pos = 0;
  for (int i = 0; i < 4; ++i) ASSERT_TRUE(try_push(v, p, buf));
  for (std::uint64_t i = 0; i < 4; ++i) ASSERT_EQ(try_pop(v, c, out, pos), Status::ok) << i;
  EXPECT_EQ(try_pop(v, c, out, pos), Status::would_block) << "slot 0 holds position 0";
  // Claimed for position 4 (being written): still nothing yet.
  Status st = Status::ok;
  ASSERT_EQ(v.writable(p, 1, st), 1u);
  EXPECT_EQ(try_pop(v, c, out, pos), Status::would_block) << "being written, head at 4";
  const std::size_t n = make_message(buf, 4);
  v.write(4, buf.data(), static_cast<std::uint32_t>(n));
  v.publish(p, 1);
  ASSERT_EQ(try_pop(v, c, out, pos), Status::ok);
  EXPECT_TRUE(is_message(out.data(), out.size(), 4));
  // Published 5..9, then claimed 10..13: the cursor's slot (5) is being
  // written with the head more than a lap past the cursor.
  for (int i = 0; i < 5; ++i) ASSERT_TRUE(try_push(v, p, buf));
  ASSERT_EQ(v.writable(p, 4, st), 4u);
  EXPECT_EQ(v.trailer(5)->committed, 0u);
  EXPECT_EQ(try_pop(v, c, out, pos), Status::overrun);
  EXPECT_EQ(v.recover_overrun(c), 4u) << "5..8 lost, 9 the newest";
  EXPECT_EQ(c.next, 9u);
}

TEST(BroadcastLossy, ConflatedReadReturnsTheNewest) {
  Ring r(broadcast(1, Delivery::lossy, 8));
  const BroadcastView v = r.view();
  BroadcastProducerCursor p = v.resume();
  BroadcastSubscriberCursor c = v.join(0, JoinAt::next);
  std::vector<std::byte> buf, out;
  std::uint64_t pos = 0;
  EXPECT_EQ(v.newest(c), 0u) << "nothing published";
  for (int i = 0; i < 5; ++i) ASSERT_TRUE(try_push(v, p, buf));
  EXPECT_EQ(v.newest(c), 4u);
  ASSERT_EQ(try_pop(v, c, out, pos), Status::ok);
  EXPECT_TRUE(is_message(out.data(), out.size(), 4));
  for (int i = 0; i < 30; ++i) ASSERT_TRUE(try_push(v, p, buf));
  EXPECT_EQ(v.newest(c), 29u);
  ASSERT_EQ(try_pop(v, c, out, pos), Status::ok);
  EXPECT_EQ(pos, 34u);
  EXPECT_TRUE(is_message(out.data(), out.size(), 34));
  EXPECT_EQ(c.lost, 0u);
  EXPECT_EQ(c.lapped, 0u);
}

// The seqlock under fire: a producer thread rewrites a 4-slot ring as fast as
// it can while subscribers copy messages out. Every message a subscriber
// takes must be whole (checksum) and newer than the last; laps and torn
// copies are reported as overrun, never delivered.
TEST(BroadcastLossy, HammeredSubscribersNeverTakeATornMessage) {
  constexpr std::uint32_t kSubs = 2;
  Ring r(broadcast(kSubs, Delivery::lossy, 4));
  const BroadcastView v = r.view();
  // The run ends once every subscriber has taken `want` messages and been
  // lapped; on a machine too loaded for that, the deadline ends it and a
  // smaller count still has to be whole.
  const std::uint64_t want = msg::scaled(50'000, 50);
  const auto deadline = Clock::now() + 20s;
  std::atomic<bool> stop{false}, failed{false};
  struct Counts {  // written by a subscriber, watched by the main thread
    std::atomic<std::uint64_t> delivered{0}, overruns{0}, torn{0}, lost{0};
  };
  std::vector<Counts> counts(kSubs);
  auto subscriber = [&](std::uint32_t index) {
    BroadcastSubscriberCursor c = v.join(index, JoinAt::newest);
    std::vector<std::byte> out(kSlot);
    std::uint64_t last = 0;
    bool any = false;
    Counts& k = counts[index];
    while (!stop && !failed) {
      Status st = Status::ok;
      if (v.readable(c, 1, st) == 0) {
        if (st == Status::overrun) {
          ++k.overruns;
          v.recover_overrun(c);
        } else if (st != Status::ok) {
          ADD_FAILURE() << to_string(st);
          failed = true;
        }
        continue;
      }
      std::uint32_t size = 0;
      const std::uint64_t pos = c.next;
      const Status copied = v.copy_out(pos, out.data(), out.size(), size);
      if (copied == Status::overrun) {
        ++k.torn;  // the producer rewrote it under the copy: detected
        v.recover_overrun(c);
        continue;
      }
      if (copied != Status::ok || !is_message(out.data(), size, pos) || (any && pos <= last)) {
        ADD_FAILURE() << "subscriber " << index << " at " << pos << ": " << to_string(copied) << " "
                      << is_message(out.data(), size, pos).message() << " (last " << last << ")";
        failed = true;
        return;
      }
      any = true;
      last = pos;
      ++k.delivered;
      v.release(c, 1);
    }
    k.lost = c.lost;
  };
  std::vector<std::thread> threads;
  for (std::uint32_t i = 0; i < kSubs; ++i) threads.emplace_back(subscriber, i);
  std::thread producer([&] {
    BroadcastProducerCursor p = v.resume();
    std::vector<std::byte> buf;
    while (!stop && !failed) ASSERT_TRUE(try_push(v, p, buf));
  });
  // Until every subscriber has taken enough messages and been lapped.
  auto enough = [&] {
    for (const Counts& k : counts) {
      if (k.delivered.load() < want) return false;
      if (k.overruns.load() + k.torn.load() == 0) return false;
    }
    return true;
  };
  while (!enough() && !failed && Clock::now() < deadline) std::this_thread::sleep_for(1ms);
  stop = true;
  producer.join();
  for (auto& t : threads) t.join();
  ASSERT_FALSE(failed);
  for (std::uint32_t i = 0; i < kSubs; ++i) {
    SCOPED_TRACE("subscriber " + std::to_string(i));
    EXPECT_GE(counts[i].delivered.load(), std::min<std::uint64_t>(want, 100));
    EXPECT_GT(counts[i].overruns.load() + counts[i].torn.load(), 0u)
        << "never lapped: the test proved nothing";
    EXPECT_GT(counts[i].lost.load(), 0u);
    EXPECT_EQ(v.subscriber(i)->lost, counts[i].lost.load());
  }
  std::printf("[ lossy    ] delivered %llu/%llu, lapped %llu/%llu, torn copies caught %llu/%llu\n",
              static_cast<unsigned long long>(counts[0].delivered.load()),
              static_cast<unsigned long long>(counts[1].delivered.load()),
              static_cast<unsigned long long>(counts[0].overruns.load()),
              static_cast<unsigned long long>(counts[1].overruns.load()),
              static_cast<unsigned long long>(counts[0].torn.load()),
              static_cast<unsigned long long>(counts[1].torn.load()));
}

}  // namespace
}  // namespace shmring
