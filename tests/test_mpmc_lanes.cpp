// MPMC rings of owned lanes (mpmc_ring.hpp, "Lanes"): the lane counts a
// ring accepts, producers that own lanes, consumers that read
// every lane starting at home, claims that keep a consumer on its lane, and
// a sleeping consumer woken by a publication on any lane.
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <system_error>
#include <thread>
#include <vector>

#include "shmring/error.hpp"
#include "shmring/layout.hpp"
#include "shmring/mpmc_ring.hpp"
#include "shmring/ring_view.hpp"
#include "shmring/segment.hpp"
#include "test_support.hpp"

namespace shmring {
namespace {

using namespace std::chrono_literals;
using test::as_bytes;

Status push(MpmcProducer& p, const std::string& m) { return p.try_push(as_bytes(m)); }

std::optional<std::string> pop(MpmcConsumer& c, Status* status = nullptr) {
  std::byte buf[256];
  std::size_t size = 0;
  const Status s = c.try_pop(buf, size);
  if (status != nullptr) *status = s;
  if (s != Status::ok) return std::nullopt;
  return test::to_string({buf, size});
}

Segment make_lanes(const test::UniqueShm& shm, std::uint64_t capacity, std::uint32_t lanes) {
  return test::make_ring(shm.name(), RingKind::mpmc, capacity, 64, SlotFormat::plain, lanes);
}

TEST(MpmcLanes, LaneCountsOutsideTheRulesAreRefusedByName) {
  struct Case {
    RingKind kind;
    std::uint64_t capacity;
    std::uint32_t lanes;
  };
  for (const Case c :
       {Case{RingKind::mpmc, 64, 3}, Case{RingKind::mpmc, 64, 32}, Case{RingKind::mpmc, 4, 8},
        Case{RingKind::spsc, 64, 1}, Case{RingKind::broadcast, 64, 2}}) {
    test::UniqueShm shm;
    CreateOptions o;
    o.kind = c.kind;
    o.capacity = c.capacity;
    o.subscribers = c.kind == RingKind::broadcast ? 1 : 0;
    o.lanes = c.lanes;
    std::error_code ec;
    const Segment s = Segment::create(shm.name(), o, ec);
    EXPECT_FALSE(s) << c.lanes << " lanes";
    EXPECT_EQ(ec, make_error_code(errc::invalid_argument)) << c.lanes << " lanes";
    EXPECT_EQ(test::file_size(shm.name()), -1) << "nothing is left under the name";
  }
  try {
    test::UniqueShm shm;
    (void)make_lanes(shm, 64, 3);
    FAIL() << "3 lanes were accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("1 to 16 lanes"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("3 lanes"), std::string::npos) << e.what();
  }
}

// One owned lane: one producer feeding any number of consumers; a second
// producer is refused, and the first one's claims need no CAS.
TEST(MpmcLanes, OneOwnedLaneTakesOneProducer) {
  test::UniqueShm shm;
  const Segment seg = make_lanes(shm, 8, 1);
  MpmcProducer tx = MpmcProducer::attach(seg);
  std::error_code ec;
  EXPECT_FALSE(MpmcProducer::attach(seg, {}, ec));
  EXPECT_EQ(ec, make_error_code(errc::role_taken));
  MpmcConsumer a = MpmcConsumer::attach(seg);
  MpmcConsumer b = MpmcConsumer::attach(seg);
  for (int i = 0; i < 8; ++i) ASSERT_EQ(push(tx, "m" + std::to_string(i)), Status::ok);
  EXPECT_EQ(push(tx, "full"), Status::would_block);
  for (int i = 0; i < 8; ++i) EXPECT_EQ(pop(i % 2 == 0 ? a : b), "m" + std::to_string(i));
  tx = MpmcProducer();
  EXPECT_TRUE(MpmcProducer::attach(seg)) << "the lane is free again";
}

// A lane's producer that found the lane full waits for a gap of free slots
// (MpmcProducerCore::refilling): it claims at once when the gap is free, and
// within a bounded number of tries when only one slot is, with try_push and
// with a blocking push alike. Nothing is lost or reordered either way.
TEST(MpmcLanes, AFullLanesProducerResumesAtAGapOrSoonAfterOneSlot) {
  test::UniqueShm shm;
  const Segment seg = make_lanes(shm, 64, 1);
  MpmcProducer tx = MpmcProducer::attach(seg);
  MpmcConsumer rx = MpmcConsumer::attach(seg);
  int sent = 0;
  int read = 0;
  const auto fill = [&] {
    while (push(tx, "m" + std::to_string(sent)) == Status::ok) ++sent;
  };
  const auto take = [&](int n) {
    for (int i = 0; i < n; ++i) ASSERT_EQ(pop(rx), "m" + std::to_string(read++));
  };
  fill();
  ASSERT_EQ(sent, 64);
  // The gap: a quarter of the lane (16 slots) past the position it claims at.
  take(17);
  EXPECT_EQ(push(tx, "m" + std::to_string(sent)), Status::ok) << "the gap was free";
  ++sent;
  fill();
  // One free slot only: a bounded number of tries, then it is taken.
  take(1);
  int tries = 1;
  while (push(tx, "m" + std::to_string(sent)) == Status::would_block) {
    ++tries;
    ASSERT_LE(tries, static_cast<int>(detail::MpmcProducerCore::kRefillPolls) + 1);
  }
  EXPECT_GT(tries, 1) << "it waited for the gap first";
  ++sent;
  EXPECT_EQ(push(tx, "over"), Status::would_block);
  take(1);
  EXPECT_EQ(tx.push(as_bytes("m" + std::to_string(sent)), 2s), Status::ok)
      << "a blocking push takes the one free slot";
  ++sent;
  take(sent - read);
  EXPECT_FALSE(pop(rx));
}

// Lanes 1 on have their words between the control area and the slots; the
// slots are the lanes' in turn.
TEST(MpmcLanes, GeometryPlacesTheLaneAreasBeforeTheSlots) {
  Geometry g;
  ASSERT_EQ(
      compute_geometry(RingKind::mpmc, 64, 64, g, SlotFormat::plain, 0, Delivery::reliable, 4),
      GeometryCheck::ok);
  EXPECT_EQ(g.lanes, 4u);
  EXPECT_EQ(g.slots_offset, kSlotsOffset + 3 * sizeof(LaneArea));
  EXPECT_EQ(g.segment_size, g.slots_offset + 64 * g.slot_stride);
  std::vector<std::byte> memory(g.segment_size);
  const RingView lane2(memory.data(), g, 2);
  EXPECT_EQ(lane2.capacity(), 16u);
  EXPECT_EQ(lane2.payload(0), memory.data() + g.slots_offset + 32 * g.slot_stride);
  EXPECT_EQ(lane2.payload(16), lane2.payload(0)) << "a lane's positions wrap within it";
  EXPECT_EQ(reinterpret_cast<std::byte*>(lane2.producer()),
            memory.data() + kSlotsOffset + sizeof(LaneArea) + offsetof(ControlArea, producer));
  EXPECT_EQ(lane2.producer_wait(), RingView(memory.data(), g).producer_wait())
      << "sleeper counts are the ring's";
}

TEST(MpmcLanes, OpenOrCreateComparesTheLanes) {
  test::UniqueShm shm;
  const Segment made = make_lanes(shm, 64, 4);
  EXPECT_EQ(made.geometry().lanes, 4u);
  EXPECT_EQ(Segment::open(shm.name()).geometry().lanes, 4u);
  CreateOptions o;
  o.kind = RingKind::mpmc;
  o.capacity = 64;
  o.slot_size = 64;
  o.lanes = 2;
  std::error_code ec;
  EXPECT_FALSE(Segment::open_or_create(shm.name(), o, 1s, ec));
  EXPECT_EQ(ec, make_error_code(errc::geometry_mismatch));
}

// A producer owns a lane: the ring takes as many producers as it has
// lanes and says so to one more; a lane given back goes to the next that
// attaches.
TEST(MpmcLanes, EachProducerOwnsALane) {
  test::UniqueShm shm;
  const Segment seg = make_lanes(shm, 64, 4);
  std::vector<MpmcProducer> producers;
  std::set<std::uint32_t> lanes;
  for (int i = 0; i < 4; ++i) {
    producers.push_back(MpmcProducer::attach(seg));
    lanes.insert(producers.back().lane());
  }
  EXPECT_EQ(lanes, (std::set<std::uint32_t>{0, 1, 2, 3}));
  std::error_code ec;
  EXPECT_FALSE(MpmcProducer::attach(seg, {}, ec));
  EXPECT_EQ(ec, make_error_code(errc::role_taken));
  EXPECT_NE(last_error_message().find("all 4 lanes"), std::string::npos) << last_error_message();
  EXPECT_EQ(reinterpret_cast<const ControlArea*>(seg.base())->producer.attached, 4u)
      << "the refused producer is not counted";
  const std::uint32_t freed = producers[2].lane();
  producers[2] = MpmcProducer();
  EXPECT_EQ(MpmcProducer::attach(seg).lane(), freed);
  producers[2] = MpmcProducer::attach(seg);
  EXPECT_EQ(producers[2].lane(), freed);
}

// Producers that attach at the same moment still get a lane each: a lane
// is taken by locking its owner record, not by counting.
TEST(MpmcLanes, ProducersAttachingAtOnceGetALaneEach) {
  test::UniqueShm shm;
  const Segment seg = make_lanes(shm, 64, 8);
  for (int round = 0; round < 20; ++round) {
    std::vector<MpmcProducer> producers(8);
    std::atomic<int> ready{0};
    std::vector<std::thread> threads;
    for (std::size_t i = 0; i < producers.size(); ++i) {
      threads.emplace_back([&, i] {
        ready.fetch_add(1);
        while (ready.load() < 8) {
        }
        producers[i] = MpmcProducer::attach(seg);
      });
    }
    for (std::thread& t : threads) t.join();
    std::set<std::uint32_t> lanes;
    for (const MpmcProducer& p : producers) lanes.insert(p.lane());
    ASSERT_EQ(lanes.size(), 8u) << "round " << round;
  }
}

// Each lane is a ring of capacity / lanes slots: a producer's lane fills
// while the others still have room, and one consumer reads every lane, each
// producer's messages in its order.
TEST(MpmcLanes, OneConsumerReadsEveryLaneInEachProducersOrder) {
  test::UniqueShm shm;
  const Segment seg = make_lanes(shm, 16, 4);
  std::vector<MpmcProducer> producers;
  for (int i = 0; i < 4; ++i) producers.push_back(MpmcProducer::attach(seg));
  MpmcConsumer rx = MpmcConsumer::attach(seg);
  for (int k = 0; k < 4; ++k) ASSERT_EQ(push(producers[1], "p1 " + std::to_string(k)), Status::ok);
  EXPECT_EQ(push(producers[1], "p1 4"), Status::would_block) << "its lane holds 16 / 4";
  for (int p : {0, 2, 3}) {
    for (int k = 0; k < 3; ++k) {
      ASSERT_EQ(push(producers[p], "p" + std::to_string(p) + " " + std::to_string(k)), Status::ok);
    }
  }
  EXPECT_EQ(producers[0].position(), 13u) << "positions are summed over the lanes";
  std::map<char, int> next;
  for (int n = 0; n < 13; ++n) {
    const std::optional<std::string> m = pop(rx);
    ASSERT_TRUE(m) << n;
    const char who = (*m)[1];
    EXPECT_EQ(*m, std::string("p") + who + " " + std::to_string(next[who]++));
  }
  EXPECT_EQ(next, (std::map<char, int>{{'0', 3}, {'1', 4}, {'2', 3}, {'3', 3}}));
  Status s = Status::ok;
  EXPECT_FALSE(pop(rx, &s));
  EXPECT_EQ(s, Status::would_block);
  EXPECT_EQ(rx.position(), 13u);
  EXPECT_EQ(push(producers[1], "p1 4"), Status::ok) << "its lane was read";
}

// Consumers attached one after another start at different lanes, so that
// two consumers with work on both lanes do not both begin on one.
TEST(MpmcLanes, ConsumersStartAtHomeLanesInTurn) {
  test::UniqueShm shm;
  const Segment seg = make_lanes(shm, 16, 2);
  MpmcProducer a = MpmcProducer::attach(seg);
  MpmcProducer b = MpmcProducer::attach(seg);
  ASSERT_NE(a.lane(), b.lane());
  MpmcProducer& lane0 = a.lane() == 0 ? a : b;
  MpmcProducer& lane1 = a.lane() == 0 ? b : a;
  MpmcConsumer c0 = MpmcConsumer::attach(seg);
  MpmcConsumer c1 = MpmcConsumer::attach(seg);
  ASSERT_EQ(push(lane0, "zero"), Status::ok);
  ASSERT_EQ(push(lane1, "one"), Status::ok);
  EXPECT_EQ(pop(c1), "one") << "the second consumer's home is lane 1";
  EXPECT_EQ(pop(c0), "zero");
  ASSERT_EQ(push(lane0, "zero again"), Status::ok);
  EXPECT_EQ(pop(c1), "zero again") << "an empty home: the other lanes are tried";
}

// While a consumer holds a claim, its further claims come from that lane
// (its claim record covers one lane at a time); once it is idle, every lane
// is open to it again.
TEST(MpmcLanes, AHeldClaimKeepsTheConsumerOnItsLane) {
  test::UniqueShm shm;
  const Segment seg = make_lanes(shm, 16, 2);
  MpmcProducer a = MpmcProducer::attach(seg);
  MpmcProducer b = MpmcProducer::attach(seg);
  MpmcProducer& lane0 = a.lane() == 0 ? a : b;
  MpmcProducer& lane1 = a.lane() == 0 ? b : a;
  MpmcConsumer rx = MpmcConsumer::attach(seg);  // home: lane 0
  ASSERT_EQ(push(lane0, "first"), Status::ok);
  ReadClaim held = rx.try_peek(1);
  ASSERT_EQ(held.size(), 1u);
  EXPECT_EQ(test::to_string(held[0]), "first");
  ASSERT_EQ(push(lane1, "other lane"), Status::ok);
  Status s = Status::ok;
  EXPECT_FALSE(pop(rx, &s)) << "lane 0 is empty and the claim keeps the consumer there";
  EXPECT_EQ(s, Status::would_block);
  ASSERT_EQ(push(lane0, "second"), Status::ok);
  EXPECT_EQ(pop(rx), "second");
  held.release();
  EXPECT_EQ(pop(rx), "other lane");
}

// A consumer asleep in pop() for data on any lane is woken by a publication
// on whichever lane; a producer asleep for room in its lane is woken when
// that lane is read.
TEST(MpmcLanes, SleepersAreWokenAcrossLanes) {
  test::UniqueShm shm;
  const Segment seg = make_lanes(shm, 8, 4);
  WaitPolicy sleep_at_once;
  sleep_at_once.spin_iterations = 0;
  sleep_at_once.yield_iterations = 0;
  std::vector<MpmcProducer> producers;
  for (int i = 0; i < 4; ++i) producers.push_back(MpmcProducer::attach(seg, sleep_at_once));
  MpmcConsumer rx = MpmcConsumer::attach(seg, sleep_at_once);
  constexpr int kRounds = 50;
  std::thread writer([&] {
    for (int i = 0; i < kRounds; ++i) {
      // Each lane in turn, so every wake-up but lane 0's comes from another lane.
      MpmcProducer& p = producers[static_cast<std::size_t>(i % 4)];
      EXPECT_EQ(p.push(as_bytes("m" + std::to_string(i)), 30s), Status::ok);
    }
    // Two slots per lane: the third push waits for the consumer.
    for (int i = 0; i < 3; ++i) {
      EXPECT_EQ(producers[3].push(as_bytes("full " + std::to_string(i)), 30s), Status::ok);
    }
  });
  std::map<std::string, int> got;
  for (int i = 0; i < kRounds + 3; ++i) {
    std::byte buf[64];
    std::size_t size = 0;
    ASSERT_EQ(rx.pop(buf, size, 30s), Status::ok) << i;
    ++got[test::to_string({buf, size})];
  }
  writer.join();
  EXPECT_EQ(got.size(), static_cast<std::size_t>(kRounds + 3)) << "each message once";
  Status s = Status::ok;
  EXPECT_FALSE(pop(rx, &s));
}

// drain() and batches work lane by lane: one claim never spans two lanes.
TEST(MpmcLanes, BatchesStayWithinALane) {
  test::UniqueShm shm;
  const Segment seg = make_lanes(shm, 32, 2);
  MpmcProducer a = MpmcProducer::attach(seg);
  MpmcProducer b = MpmcProducer::attach(seg);
  MpmcConsumer rx = MpmcConsumer::attach(seg);
  const std::string ma[] = {"a0", "a1", "a2"};
  const std::string mb[] = {"b0", "b1"};
  std::vector<std::span<const std::byte>> batch_a, batch_b;
  for (const std::string& m : ma) batch_a.push_back(as_bytes(m));
  for (const std::string& m : mb) batch_b.push_back(as_bytes(m));
  ASSERT_EQ(a.try_push_many(batch_a), 3u);
  ASSERT_EQ(b.try_push_many(batch_b), 2u);
  std::vector<std::string> first, second;
  EXPECT_EQ(rx.drain([&](std::span<const std::byte> m) { first.push_back(test::to_string(m)); }),
            a.lane() == 0 ? 3u : 2u);
  EXPECT_EQ(rx.drain([&](std::span<const std::byte> m) { second.push_back(test::to_string(m)); }),
            a.lane() == 0 ? 2u : 3u);
  const std::vector<std::string> want_a(std::begin(ma), std::end(ma));
  const std::vector<std::string> want_b(std::begin(mb), std::end(mb));
  EXPECT_EQ(a.lane() == 0 ? first : second, want_a);
  EXPECT_EQ(a.lane() == 0 ? second : first, want_b);
}

}  // namespace
}  // namespace shmring
