// Ring<T>: one trivially copyable T per slot, over SPSC and MPMC.
#include <gtest/gtest.h>

#include <chrono>
#include <cstring>
#include <optional>
#include <string>
#include <type_traits>

#include "shmring/error.hpp"
#include "shmring/typed_ring.hpp"
#include "test_support.hpp"

namespace shmring {
namespace {

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

struct Sample {
  std::uint64_t seq;
  double value;
  std::int32_t sensor;
  char tag[12];
};
static_assert(std::is_trivially_copyable_v<Sample>);

struct Big {
  std::uint64_t words[16];
};

Sample make_sample(std::uint64_t seq) {
  Sample s{};
  s.seq = seq;
  s.value = static_cast<double>(seq) * 0.5 - 3.0;
  s.sensor = static_cast<std::int32_t>(seq % 7) - 3;
  std::snprintf(s.tag, sizeof s.tag, "s%llu", static_cast<unsigned long long>(seq));
  return s;
}

void expect_sample(const Sample& got, std::uint64_t seq) {
  const Sample want = make_sample(seq);
  EXPECT_EQ(got.seq, want.seq);
  EXPECT_EQ(got.value, want.value);
  EXPECT_EQ(got.sensor, want.sensor);
  EXPECT_STREQ(got.tag, want.tag);
}

template <class Fn>
Error thrown_error(Fn&& fn) {
  try {
    fn();
  } catch (const Error& e) {
    return e;
  }
  ADD_FAILURE() << "did not throw shmring::Error";
  return Error(std::error_code(), "");
}

TEST(TypedRing, SpscRoundTrip) {
  test::UniqueShm shm;
  auto ring = Ring<Sample>::create(shm.name(), 8);
  EXPECT_EQ(ring.segment().geometry().kind, RingKind::spsc);
  EXPECT_EQ(ring.segment().geometry().slot_size, sizeof(Sample));
  EXPECT_EQ(ring.segment().geometry().capacity, 8u);
  auto tx = ring.producer();
  auto rx = Ring<Sample>::open(shm.name()).consumer();
  ASSERT_TRUE(tx);
  ASSERT_TRUE(rx);
  std::uint64_t sent = 0;
  std::uint64_t received = 0;
  for (int round = 0; round < 50; ++round) {
    while (tx.try_push(make_sample(sent)) == Status::ok) ++sent;
    EXPECT_EQ(sent - received, 8u) << "full after exactly capacity elements";
    for (int i = 0; i < 5; ++i) {
      Sample s{};
      ASSERT_EQ(rx.try_pop(s), Status::ok);
      expect_sample(s, received++);
    }
    while (auto s = rx.try_pop()) expect_sample(*s, received++);
    EXPECT_EQ(received, sent);
  }
  Sample s{};
  EXPECT_EQ(rx.try_pop(s), Status::would_block);
  EXPECT_FALSE(rx.try_pop());
  Segment::unlink(shm.name());
}

TEST(TypedRing, MpmcRoundTrip) {
  test::UniqueShm shm;
  using R = Ring<Sample, RingKind::mpmc>;
  auto ring = R::create(shm.name(), 4);
  EXPECT_EQ(ring.segment().geometry().kind, RingKind::mpmc);
  auto p1 = ring.producer();
  auto p2 = ring.producer();
  auto c1 = ring.consumer();
  auto c2 = R::open(shm.name()).consumer();
  std::uint64_t sent = 0;
  std::uint64_t received = 0;
  for (int round = 0; round < 100; ++round) {
    ASSERT_EQ(p1.try_push(make_sample(sent++)), Status::ok);
    ASSERT_EQ(p2.try_push(make_sample(sent++)), Status::ok);
    ASSERT_EQ(p1.try_push(make_sample(sent++)), Status::ok);
    auto a = c2.try_pop();
    ASSERT_TRUE(a);
    expect_sample(*a, received++);
    Sample b{};
    ASSERT_EQ(c1.try_pop(b), Status::ok);
    expect_sample(b, received++);
    auto c = c1.try_pop();
    ASSERT_TRUE(c);
    expect_sample(*c, received++);
  }
  EXPECT_FALSE(c1.try_pop());
  Segment::unlink(shm.name());
}

TEST(TypedRing, SpscRolesStillApply) {
  test::UniqueShm shm;
  auto ring = Ring<Sample>::create(shm.name(), 4);
  auto tx = ring.producer();
  const Error e = thrown_error([&] { (void)ring.producer(); });
  EXPECT_EQ(e.code(), make_error_code(errc::role_taken));
  Segment::unlink(shm.name());
}

TEST(TypedRing, OpenOrCreate) {
  test::UniqueShm shm;
  auto first = Ring<Sample>::open_or_create(shm.name(), 16);
  EXPECT_TRUE(first.segment().created());
  auto second = Ring<Sample>::open_or_create(shm.name(), 16);
  EXPECT_FALSE(second.segment().created());
  EXPECT_EQ(second.segment().geometry(), first.segment().geometry());
  auto tx = first.producer();
  auto rx = second.consumer();
  ASSERT_EQ(tx.try_push(make_sample(42)), Status::ok);
  auto s = rx.try_pop();
  ASSERT_TRUE(s);
  expect_sample(*s, 42);
  // Another element type means another slot size.
  const Error e = thrown_error([&] { (void)Ring<Big>::open_or_create(shm.name(), 16); });
  EXPECT_EQ(e.code(), make_error_code(errc::geometry_mismatch));
  Segment::unlink(shm.name());
}

TEST(TypedRing, OpenChecksKindAndSlotSize) {
  test::UniqueShm shm;
  auto ring = Ring<Sample>::create(shm.name(), 4);
  Error e = thrown_error([&] { (void)Ring<Sample, RingKind::mpmc>::open(shm.name()); });
  EXPECT_EQ(e.code(), make_error_code(errc::kind_mismatch));
  e = thrown_error([&] { (void)Ring<Big>::open(shm.name()); });
  EXPECT_EQ(e.code(), make_error_code(errc::message_too_large));
  const std::string what = e.what();
  EXPECT_NE(what.find("segment '" + shm.name() + "'"), std::string::npos) << what;
  EXPECT_NE(what.find("slots hold " + std::to_string(sizeof(Sample)) + " bytes"), std::string::npos)
      << what;
  EXPECT_NE(what.find("needs " + std::to_string(sizeof(Big))), std::string::npos) << what;
  // A smaller element fits a larger slot.
  auto small = Ring<std::uint32_t>::open(shm.name());
  EXPECT_EQ(small.segment().geometry().slot_size, sizeof(Sample));
  Segment::unlink(shm.name());
}

TEST(TypedRing, OpenOfAnMpmcRingWithSmallSlots) {
  test::UniqueShm shm;
  CreateOptions o;
  o.kind = RingKind::mpmc;
  o.capacity = 4;
  o.slot_size = sizeof(Sample) - 1;
  { Segment s = Segment::create(shm.name(), o); }
  const Error e = thrown_error([&] { (void)Ring<Sample, RingKind::mpmc>::open(shm.name()); });
  EXPECT_EQ(e.code(), make_error_code(errc::message_too_large));
  Segment::unlink(shm.name());
}

// A raw producer on the same ring writes a message of another size.
template <RingKind Kind>
void smaller_message_is_corrupt_and_consumed(SlotFormat format = SlotFormat::plain) {
  test::UniqueShm shm;
  auto ring = Ring<Sample, Kind>::create(shm.name(), 4, 0600, format);
  auto tx = ring.producer();
  auto rx = ring.consumer();
  ASSERT_EQ(tx.raw().try_push(test::as_bytes("short")), Status::ok);
  ASSERT_EQ(tx.try_push(make_sample(7)), Status::ok);
  Sample s{};
  EXPECT_EQ(rx.try_pop(s), Status::corrupt);
  ASSERT_EQ(rx.try_pop(s), Status::ok) << "the odd message was consumed";
  expect_sample(s, 7);
  ASSERT_EQ(tx.raw().try_push(test::as_bytes("")), Status::ok);
  EXPECT_FALSE(rx.try_pop()) << "the optional form drops it too";
  EXPECT_EQ(rx.try_pop(s), Status::would_block);
  Segment::unlink(shm.name());
}

TEST(TypedRing, SmallerMessageIsCorruptSpsc) {
  smaller_message_is_corrupt_and_consumed<RingKind::spsc>();
}
TEST(TypedRing, SmallerMessageIsCorruptMpmc) {
  smaller_message_is_corrupt_and_consumed<RingKind::mpmc>();
}
TEST(TypedRing, SmallerMessageIsCorruptLowLatency) {
  smaller_message_is_corrupt_and_consumed<RingKind::spsc>(SlotFormat::low_latency);
}

// A message larger than sizeof(T), in a ring whose slots are larger than T,
// is reported corrupt and consumed, so it cannot wedge the typed consumer.
template <RingKind Kind>
void larger_message_is_corrupt_and_consumed() {
  test::UniqueShm shm;
  CreateOptions o;
  o.kind = Kind;
  o.capacity = 4;
  o.slot_size = 2 * sizeof(Sample);
  { Segment s = Segment::create(shm.name(), o); }
  auto ring = Ring<Sample, Kind>::open(shm.name());
  auto tx = ring.producer();
  auto rx = ring.consumer();
  const std::string longer(sizeof(Sample) + 8, 'L');
  ASSERT_EQ(tx.raw().try_push(test::as_bytes(longer)), Status::ok);
  ASSERT_EQ(tx.try_push(make_sample(9)), Status::ok);
  Sample s{};
  EXPECT_EQ(rx.try_pop(s), Status::corrupt) << "a message of another size is corrupt";
  ASSERT_EQ(rx.try_pop(s), Status::ok) << "... and consumed, so the next element arrives";
  expect_sample(s, 9);
  Segment::unlink(shm.name());
}

TEST(TypedRing, LargerMessageIsCorruptSpsc) {
  larger_message_is_corrupt_and_consumed<RingKind::spsc>();
}
TEST(TypedRing, LargerMessageIsCorruptMpmc) {
  larger_message_is_corrupt_and_consumed<RingKind::mpmc>();
}

// Low-latency slots: the consumer copies through the copy calls (a peek is
// unsupported there); a message of another size: SmallerMessageIsCorrupt*.
TEST(TypedRing, LowLatencySlots) {
  test::UniqueShm shm;
  auto ring = Ring<Sample>::create(shm.name(), 4, 0600, SlotFormat::low_latency);
  EXPECT_EQ(ring.segment().geometry().format, SlotFormat::low_latency);
  auto tx = ring.producer();
  auto rx = Ring<Sample>::open(shm.name()).consumer();
  std::uint64_t sent = 0;
  std::uint64_t received = 0;
  for (int round = 0; round < 20; ++round) {
    while (tx.try_push(make_sample(sent)) == Status::ok) ++sent;
    EXPECT_EQ(sent - received, 4u);
    Sample s{};
    ASSERT_EQ(rx.pop(s, 1s), Status::ok);
    expect_sample(s, received++);
    while (auto v = rx.try_pop()) expect_sample(*v, received++);
    EXPECT_EQ(received, sent);
  }
  Sample s{};
  EXPECT_EQ(rx.pop(s, 1ms), Status::timeout);
  EXPECT_EQ(rx.raw().try_peek(1).status(), Status::unsupported);
  Segment::unlink(shm.name());
}

TEST(TypedRing, BlockingFormsTimeOut) {
  test::UniqueShm shm;
  auto ring = Ring<Sample>::create(shm.name(), 2);
  auto tx = ring.producer();
  auto rx = ring.consumer();
  auto start = Clock::now();
  EXPECT_FALSE(rx.pop(20ms));
  EXPECT_GE(Clock::now() - start, 20ms);
  Sample s{};
  start = Clock::now();
  EXPECT_EQ(rx.pop(s, 20ms), Status::timeout);
  EXPECT_GE(Clock::now() - start, 20ms);
  ASSERT_EQ(tx.push(make_sample(1), 1s), Status::ok);
  ASSERT_EQ(tx.push(make_sample(2), 1s), Status::ok);
  start = Clock::now();
  EXPECT_EQ(tx.push(make_sample(3), 20ms), Status::timeout);
  EXPECT_GE(Clock::now() - start, 20ms);
  auto got = rx.pop(1s);
  ASSERT_TRUE(got);
  expect_sample(*got, 1);
  ASSERT_EQ(rx.pop(s, 1s), Status::ok);
  expect_sample(s, 2);
  Segment::unlink(shm.name());
}

TEST(TypedRing, DefaultHandlesAreEmpty) {
  Ring<Sample>::Producer p;
  Ring<Sample>::Consumer c;
  EXPECT_FALSE(p);
  EXPECT_FALSE(c);
}

}  // namespace
}  // namespace shmring
