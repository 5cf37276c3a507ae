// Low-latency slots (SlotFormat::low_latency): the geometry rules, the header
// flag, copy calls over every length and many laps, the refusal of zero-copy
// calls, and white-box states of the flagged words: half-written messages,
// words of two incarnations, hostile lengths, and a producer that died
// between its last word and its head store.
#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstring>
#include <optional>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "shmring/error.hpp"
#include "shmring/low_latency.hpp"
#include "shmring/process.hpp"
#include "shmring/segment.hpp"
#include "shmring/spsc_ring.hpp"
#include "shmring/spsc_view.hpp"
#include "test_support.hpp"

namespace shmring {
namespace {

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;
using test::as_bytes;

constexpr SlotFormat kLowLatency = SlotFormat::low_latency;

CreateOptions ll(std::uint64_t capacity = 8, std::uint64_t slot_size = 64,
                 RingKind kind = RingKind::spsc) {
  CreateOptions o;
  o.kind = kind;
  o.capacity = capacity;
  o.slot_size = slot_size;
  o.format = kLowLatency;
  return o;
}

OpenOptions quick_open() {
  OpenOptions o;
  o.init_timeout = 50ms;
  return o;
}

// Message `seq` of exactly `size` bytes. Every byte value occurs (0x00 and
// 0xff included), and the bytes depend on both seq and the offset, so a
// shifted, stale or torn copy differs.
std::string body(std::uint64_t seq, std::size_t size) {
  std::string m(size, '\0');
  std::uint64_t x = seq * 0x9E3779B97F4A7C15ull + size;
  for (std::size_t i = 0; i < size; ++i) {
    x ^= x >> 29;
    x *= 0xBF58476D1CE4E5B9ull;
    x += i;
    m[i] = static_cast<char>(x >> 56);
  }
  return m;
}

// The words a slot holds for `m` written at `position` by incarnation `inc`,
// computed from the format's definition (not through low_latency.hpp): word 0
// the length, word k the message bytes 4(k-1)..4k-1 little-endian and
// zero-padded, each with flag inc << 24 | (lap + 1) in its high half; every
// word of the slot.
std::vector<std::uint64_t> expected_words(std::uint64_t slot_size, std::uint64_t capacity,
                                          std::uint64_t position, std::uint32_t inc,
                                          const std::string& m) {
  std::uint64_t n = 1 + (slot_size + 3) / 4;
  if (n % 2 != 0) ++n;
  const std::uint64_t flag = ((inc & 0xFF) << 24) | ((position / capacity + 1) & 0xFFFFFF);
  std::vector<std::uint64_t> w(n);
  w[0] = flag << 32 | m.size();
  for (std::uint64_t k = 1; k < n; ++k) {
    std::uint64_t data = 0;
    for (std::uint64_t b = 0; b < 4; ++b) {
      const std::uint64_t at = 4 * (k - 1) + b;
      if (at < m.size()) data |= std::uint64_t{static_cast<unsigned char>(m[at])} << (8 * b);
    }
    w[k] = flag << 32 | data;
  }
  return w;
}

// An SPSC ring of low-latency slots with both roles attached.
struct LlFixture : test::RingFixture<RingKind::spsc, SpscProducer, SpscConsumer> {
  explicit LlFixture(std::uint64_t capacity = 8, std::uint64_t slot_size = 64)
      : RingFixture(capacity, slot_size, {}, kLowLatency) {
    // The white-box tests write words by hand after dropping the producer:
    // its going must not end the stream.
    tx.set_close_on_exit(false);
  }
  SpscView view() const { return SpscView(segment.base(), segment.geometry()); }
  std::uint64_t slot_size() const { return segment.geometry().slot_size; }
  std::uint64_t capacity() const { return segment.geometry().capacity; }
  std::uint64_t slot_words() const { return low_latency_words(slot_size()); }
  // The incarnation bits the producer attached last puts in its flags.
  std::uint32_t incarnation() const {
    return atomic::load_relaxed(&control()->producer.incarnation) & 0xFF;
  }
  std::uint64_t* words(std::uint64_t position) const {
    return low_latency::words(view(), position);
  }
  std::uint64_t word(std::uint64_t position, std::uint64_t k) const {
    return atomic::load_relaxed(words(position) + k);
  }
  void set_word(std::uint64_t position, std::uint64_t k, std::uint64_t value) const {
    atomic::store_relaxed(words(position) + k, value);
  }
  std::vector<std::uint64_t> slot(std::uint64_t position) const {
    std::vector<std::uint64_t> w(slot_words());
    for (std::uint64_t k = 0; k < w.size(); ++k) w[k] = word(position, k);
    return w;
  }
  std::vector<std::uint64_t> expected(std::uint64_t position, std::uint32_t inc,
                                      const std::string& m) const {
    return expected_words(slot_size(), capacity(), position, inc, m);
  }

  Status pop_status() {
    Status s = Status::ok;
    (void)pop(&s);
    return s;
  }
};

// ---- geometry ------------------------------------------------------------------

TEST(LowLatencyGeometry, StrideHoldsTheWordsAndTheTrailer) {
  for (std::uint64_t slot = 1; slot <= kMaxLowLatencySlotSize; ++slot) {
    // One length word and one per 4 bytes, rounded up to an even count.
    std::uint64_t words = 1 + (slot + 3) / 4;
    if (words % 2 != 0) ++words;
    ASSERT_EQ(low_latency_words(slot), words) << "slot " << slot;
    Geometry g;
    ASSERT_EQ(compute_geometry(RingKind::spsc, 8, slot, g, kLowLatency), GeometryCheck::ok)
        << "slot " << slot;
    EXPECT_EQ(g.format, kLowLatency);
    EXPECT_EQ(g.slot_size, slot);
    EXPECT_EQ(g.slot_stride, round_up(8 * words + sizeof(SlotTrailer), kPayloadAlign))
        << "slot " << slot;
    EXPECT_EQ(g.slot_stride % kPayloadAlign, 0u);
    EXPECT_GE(g.trailer_offset(), 8 * words) << "the trailer must not overlap the words";
    EXPECT_EQ(g.slots_offset, kSlotsOffset);
    EXPECT_EQ(g.segment_size, kSlotsOffset + 8 * g.slot_stride);
  }
  // A few by hand.
  struct Case {
    std::uint64_t slot, stride;
  };
  for (const Case c : {Case{1, 64}, Case{4, 64}, Case{5, 64}, Case{12, 64}, Case{13, 128},
                       Case{56, 192}, Case{64, 192}, Case{4096, 8256}}) {
    Geometry g;
    ASSERT_EQ(compute_geometry(RingKind::spsc, 2, c.slot, g, kLowLatency), GeometryCheck::ok);
    EXPECT_EQ(g.slot_stride, c.stride) << "slot " << c.slot;
  }
  // The plain format of the same sizes is unchanged.
  Geometry plain;
  ASSERT_EQ(compute_geometry(RingKind::spsc, 8, 64, plain), GeometryCheck::ok);
  EXPECT_EQ(plain.format, SlotFormat::plain);
  EXPECT_EQ(plain.slot_stride, 128u);
}

TEST(LowLatencyGeometry, MpmcIsRefused) {
  Geometry g;
  g.capacity = 12345;
  const Geometry before = g;
  EXPECT_EQ(compute_geometry(RingKind::mpmc, 8, 64, g, kLowLatency),
            GeometryCheck::format_needs_spsc);
  EXPECT_EQ(compute_geometry(RingKind::mpmc, 1, 1, g, kLowLatency),
            GeometryCheck::format_needs_spsc);
  EXPECT_EQ(g, before) << "output untouched on failure";
  EXPECT_EQ(compute_geometry(RingKind::mpmc, 8, 64, g, SlotFormat::plain), GeometryCheck::ok);
}

TEST(LowLatencyGeometry, SlotsAbove4096AreRefused) {
  Geometry g;
  EXPECT_EQ(compute_geometry(RingKind::spsc, 8, kMaxLowLatencySlotSize, g, kLowLatency),
            GeometryCheck::ok);
  for (std::uint64_t slot : {kMaxLowLatencySlotSize + 1, std::uint64_t{8192}, kMaxSlotSize}) {
    EXPECT_EQ(compute_geometry(RingKind::spsc, 8, slot, g, kLowLatency),
              GeometryCheck::low_latency_slot_too_large)
        << "slot " << slot;
    EXPECT_EQ(compute_geometry(RingKind::spsc, 8, slot, g, SlotFormat::plain), GeometryCheck::ok)
        << "plain slots of " << slot << " bytes stay allowed";
  }
  // The general slot-size rules still come first.
  EXPECT_EQ(compute_geometry(RingKind::spsc, 8, 0, g, kLowLatency), GeometryCheck::slot_size_zero);
  EXPECT_EQ(compute_geometry(RingKind::spsc, 8, kMaxSlotSize + 1, g, kLowLatency),
            GeometryCheck::slot_size_too_large);
}

TEST(LowLatencyGeometry, UnknownFormatIsRefused) {
  Geometry g;
  for (std::uint32_t f : {2u, 3u, 0x80000000u, ~0u}) {
    EXPECT_EQ(compute_geometry(RingKind::spsc, 8, 64, g, static_cast<SlotFormat>(f)),
              GeometryCheck::format_unknown)
        << "format " << f;
    EXPECT_STREQ(to_string(static_cast<SlotFormat>(f)), "unknown");
  }
  EXPECT_STREQ(to_string(SlotFormat::plain), "plain");
  EXPECT_STREQ(to_string(kLowLatency), "low_latency");
}

TEST(LowLatencyGeometry, NewChecksHaveTheirOwnDescriptions) {
  const GeometryCheck all[] = {
      GeometryCheck::ok,
      GeometryCheck::capacity_zero,
      GeometryCheck::capacity_not_power_of_two,
      GeometryCheck::capacity_too_large,
      GeometryCheck::slot_size_zero,
      GeometryCheck::slot_size_too_large,
      GeometryCheck::size_overflow,
      GeometryCheck::format_unknown,
      GeometryCheck::format_needs_spsc,
      GeometryCheck::low_latency_slot_too_large,
  };
  std::set<std::string> seen;
  for (GeometryCheck c : all) {
    const std::string s = to_string(c);
    EXPECT_NE(s, "unknown");
    EXPECT_TRUE(seen.insert(s).second) << "duplicate description " << s;
  }
  EXPECT_GE(kAbiVersion, 3u) << "low-latency slots came with ABI 3";
}

// ---- create / open -----------------------------------------------------------------

// Both overloads of a call that must fail with `code`.
template <class Throwing, class Reporting>
void expect_fails(Throwing&& throwing, Reporting&& reporting, errc code,
                  std::initializer_list<std::string_view> parts) {
  try {
    throwing();
    ADD_FAILURE() << "did not throw";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), make_error_code(code)) << e.what();
    for (std::string_view p : parts) {
      EXPECT_NE(std::string(e.what()).find(p), std::string::npos)
          << "message lacks \"" << p << "\": " << e.what();
    }
  }
  std::error_code ec;
  const bool result = static_cast<bool>(reporting(ec));
  EXPECT_FALSE(result);
  EXPECT_EQ(ec, make_error_code(code)) << last_error_message();
  for (std::string_view p : parts) {
    EXPECT_NE(last_error_message().find(p), std::string::npos)
        << "message lacks \"" << p << "\": " << last_error_message();
  }
}

void expect_create_fails(const std::string& name, const CreateOptions& o, errc code,
                         std::initializer_list<std::string_view> parts) {
  expect_fails([&] { (void)Segment::create(name, o); },
               [&](std::error_code& ec) { return Segment::create(name, o, ec); }, code, parts);
  EXPECT_FALSE(test::shm_exists(name)) << "a refused create leaves no file";
}

void expect_open_fails(const std::string& name, errc code,
                       std::initializer_list<std::string_view> parts) {
  expect_fails([&] { (void)Segment::open(name, quick_open()); },
               [&](std::error_code& ec) { return Segment::open(name, quick_open(), ec); }, code,
               parts);
}

TEST(LowLatencySegment, CreateRefusesWhatTheGeometryRefuses) {
  test::UniqueShm shm;
  expect_create_fails(shm.name(), ll(8, 64, RingKind::mpmc), errc::invalid_slot_format, {"spsc"});
  expect_create_fails(shm.name(), ll(8, kMaxLowLatencySlotSize + 1), errc::invalid_slot_size,
                      {"4096"});
  CreateOptions unknown = ll(8, 64);
  unknown.format = static_cast<SlotFormat>(7);
  expect_create_fails(shm.name(), unknown, errc::invalid_slot_format, {"slot format"});
  // The largest slot is accepted.
  Segment s = Segment::create(shm.name(), ll(2, kMaxLowLatencySlotSize));
  EXPECT_EQ(s.geometry().format, kLowLatency);
  Segment::unlink(shm.name());
}

TEST(LowLatencySegment, CreateOpenRoundTripKeepsTheFormat) {
  test::UniqueShm shm;
  Segment created = Segment::create(shm.name(), ll(16, 100));
  ASSERT_TRUE(created);
  EXPECT_EQ(created.geometry().format, kLowLatency);
  Geometry want;
  ASSERT_EQ(compute_geometry(RingKind::spsc, 16, 100, want, kLowLatency), GeometryCheck::ok);
  EXPECT_EQ(created.geometry(), want);
  EXPECT_EQ(created.size(), want.segment_size);
  EXPECT_EQ(test::file_size(shm.name()), static_cast<std::int64_t>(want.segment_size));
  // The header's bytes: the flag, the version, the low-latency stride.
  EXPECT_EQ(test::read_value_at<std::uint32_t>(shm.name(), offsetof(SegmentHeader, flags)),
            kHeaderLowLatencySlots);
  EXPECT_EQ(test::read_value_at<std::uint32_t>(shm.name(), offsetof(SegmentHeader, abi_version)),
            kAbiVersion);
  EXPECT_EQ(test::read_value_at<std::uint64_t>(shm.name(), offsetof(SegmentHeader, slot_stride)),
            want.slot_stride);

  Segment opened = Segment::open(shm.name());
  ASSERT_TRUE(opened);
  EXPECT_EQ(opened.geometry(), created.geometry());
  EXPECT_EQ(opened.geometry().format, kLowLatency);
  OpenOptions spsc_only;
  spsc_only.kind = RingKind::spsc;
  EXPECT_EQ(Segment::open(shm.name(), spsc_only).geometry().format, kLowLatency);
  Segment::unlink(shm.name());

  // And a plain ring keeps flags 0 and the plain format.
  CreateOptions plain = ll(16, 100);
  plain.format = SlotFormat::plain;
  Segment p = Segment::create(shm.name(), plain);
  EXPECT_EQ(test::read_value_at<std::uint32_t>(shm.name(), offsetof(SegmentHeader, flags)), 0u);
  EXPECT_EQ(Segment::open(shm.name()).geometry().format, SlotFormat::plain);
  Segment::unlink(shm.name());
}

TEST(LowLatencySegment, OpenRefusesUnknownFlagBits) {
  test::UniqueShm shm;
  { Segment s = Segment::create(shm.name(), ll(8, 64)); }
  const std::size_t at = offsetof(SegmentHeader, flags);
  for (std::uint32_t flags : {kHeaderLowLatencySlots | 2u, kHeaderLowLatencySlots | 0x100u,
                              kHeaderLowLatencySlots | 0x80000000u, 2u, ~0u}) {
    SCOPED_TRACE("flags " + std::to_string(flags));
    ASSERT_TRUE(test::write_value_at(shm.name(), at, flags));
    expect_open_fails(shm.name(), errc::corrupt_header, {"flags", "does not know"});
  }
  ASSERT_TRUE(test::write_value_at(shm.name(), at, kHeaderLowLatencySlots));
  EXPECT_EQ(Segment::open(shm.name()).geometry().format, kLowLatency) << "restored header opens";
  Segment::unlink(shm.name());
}

// The flag alone changes the stride a header must have: a low-latency ring
// whose flag was cleared (or a plain ring given the flag) does not open as
// the other format.
TEST(LowLatencySegment, OpenRefusesAFlagThatContradictsTheLayout) {
  test::UniqueShm shm;
  const std::size_t at = offsetof(SegmentHeader, flags);
  { Segment s = Segment::create(shm.name(), ll(8, 64)); }
  ASSERT_TRUE(test::write_value_at<std::uint32_t>(shm.name(), at, 0));
  expect_open_fails(shm.name(), errc::corrupt_header, {"does not match"});
  Segment::unlink(shm.name());

  CreateOptions plain = ll(8, 64);
  plain.format = SlotFormat::plain;
  { Segment s = Segment::create(shm.name(), plain); }
  ASSERT_TRUE(test::write_value_at<std::uint32_t>(shm.name(), at, kHeaderLowLatencySlots));
  expect_open_fails(shm.name(), errc::corrupt_header, {"does not match"});
  Segment::unlink(shm.name());
}

TEST(LowLatencySegment, OpenRefusesLowLatencyMpmcHeaders) {
  test::UniqueShm shm;
  // A low-latency ring whose kind says mpmc: every layout field is consistent
  // with low-latency slots, only the kind is not.
  { Segment s = Segment::create(shm.name(), ll(8, 64)); }
  ASSERT_TRUE(test::write_value_at<std::uint32_t>(shm.name(), offsetof(SegmentHeader, ring_kind),
                                                  static_cast<std::uint32_t>(RingKind::mpmc)));
  expect_open_fails(shm.name(), errc::corrupt_header, {"need an spsc ring"});
  Segment::unlink(shm.name());
  // An MPMC ring given the flag.
  CreateOptions mpmc = ll(8, 64, RingKind::mpmc);
  mpmc.format = SlotFormat::plain;
  { Segment s = Segment::create(shm.name(), mpmc); }
  ASSERT_TRUE(test::write_value_at<std::uint32_t>(shm.name(), offsetof(SegmentHeader, flags),
                                                  kHeaderLowLatencySlots));
  expect_open_fails(shm.name(), errc::corrupt_header, {"need an spsc ring"});
  Segment::unlink(shm.name());
}

TEST(LowLatencySegment, OpenOrCreateWithTheOtherFormatIsAMismatch) {
  test::UniqueShm shm;
  CreateOptions plain = ll(8, 64);
  plain.format = SlotFormat::plain;
  {
    Segment first = Segment::open_or_create(shm.name(), ll(8, 64));
    ASSERT_TRUE(first.created());
    expect_fails(
        [&] { (void)Segment::open_or_create(shm.name(), plain); },
        [&](std::error_code& ec) { return Segment::open_or_create(shm.name(), plain, 1s, ec); },
        errc::geometry_mismatch, {"low_latency slots", "plain slots"});
    Segment again = Segment::open_or_create(shm.name(), ll(8, 64));
    ASSERT_TRUE(again);
    EXPECT_FALSE(again.created());
    EXPECT_EQ(again.geometry(), first.geometry());
  }
  Segment::unlink(shm.name());
  {
    Segment first = Segment::open_or_create(shm.name(), plain);
    ASSERT_TRUE(first.created());
    expect_fails(
        [&] { (void)Segment::open_or_create(shm.name(), ll(8, 64)); },
        [&](std::error_code& ec) { return Segment::open_or_create(shm.name(), ll(8, 64), 1s, ec); },
        errc::geometry_mismatch, {"plain slots", "low_latency slots"});
    EXPECT_EQ(Segment::open(shm.name()).geometry().format, SlotFormat::plain)
        << "existing ring unchanged";
  }
  Segment::unlink(shm.name());
}

// ---- the words in a slot -------------------------------------------------------------

// What try_push stores is the format's ABI: every word of the slot, each with
// the position's flag, the bytes little-endian and zero-padded.
TEST(LowLatencyWords, PushWritesEveryWordOfTheSlot) {
  LlFixture f(4, 37);
  const std::uint32_t inc = f.incarnation();
  ASSERT_NE(inc, 0u) << "the first producer's incarnation is 1";
  for (std::uint64_t pos = 0; pos < 3 * f.capacity(); ++pos) {
    const std::string m = body(pos, pos % 3 == 0 ? 0 : (pos * 7) % 38);
    ASSERT_EQ(f.push(m), Status::ok);
    EXPECT_EQ(f.slot(pos), f.expected(pos, inc, m)) << "position " << pos;
    const auto w0 = f.word(pos, 0);
    EXPECT_EQ(static_cast<std::uint32_t>(w0), m.size());
    EXPECT_EQ(w0 >> 56, inc) << "incarnation in the flag's top byte";
    EXPECT_EQ((w0 >> 32) & 0xFFFFFF, pos / f.capacity() + 1) << "lap + 1 in the flag";
    EXPECT_EQ(f.pop(), m);
  }
  // No trailer is ever written: the consumer never needs it.
  for (std::uint64_t i = 0; i < f.capacity(); ++i) {
    EXPECT_EQ(test::trailer_of(f.segment.base(), f.segment.geometry(), i)->committed, 0u);
  }
}

TEST(LowLatencyWords, WriteMatchesTheFormat) {
  LlFixture f(2, 4096);
  for (std::size_t size : {0u, 1u, 3u, 4u, 5u, 55u, 56u, 57u, 4095u, 4096u}) {
    const std::string m = body(size, size);
    low_latency::write(f.view(), 5, 0x2A, m.data(), static_cast<std::uint32_t>(m.size()));
    EXPECT_EQ(f.slot(5), f.expected(5, 0x2A, m)) << "size " << size;
    EXPECT_TRUE(low_latency::complete(f.view(), 5));
  }
}

// ---- copy calls ----------------------------------------------------------------

// Every length from 0 to the slot size, across slot sizes around the word
// and first-round boundaries, popped into a buffer of exactly that length
// between guard bytes.
TEST(LowLatencyRing, EveryLengthExactBytes) {
  for (std::uint64_t slot : {1u, 3u, 4u, 5u, 8u, 55u, 56u, 57u, 60u, 64u, 100u, 1000u, 4096u}) {
    SCOPED_TRACE("slot " + std::to_string(slot));
    LlFixture f(4, slot);
    for (std::size_t len = 0; len <= slot; ++len) {
      const std::string m = body(len + 1000 * slot, len);
      ASSERT_EQ(f.push(m), Status::ok) << "length " << len;
      std::vector<std::byte> buf(len + 16, std::byte{0xEE});
      std::size_t size = ~std::size_t{0};
      ASSERT_EQ(f.rx.try_pop({buf.data() + 8, len}, size), Status::ok) << "length " << len;
      ASSERT_EQ(size, len);
      ASSERT_EQ(test::to_string({buf.data() + 8, len}), m) << "length " << len;
      for (std::size_t g = 0; g < 8; ++g) {
        ASSERT_EQ(buf[g], std::byte{0xEE}) << "wrote before the buffer, length " << len;
        ASSERT_EQ(buf[8 + len + g], std::byte{0xEE}) << "wrote past the buffer, length " << len;
      }
    }
    EXPECT_EQ(f.tx.position(), slot + 1);
    EXPECT_EQ(f.rx.position(), slot + 1);
    EXPECT_EQ(f.pop_status(), Status::would_block);
    // Batched: a full ring of lengths at once, then drained.
    for (std::size_t len = 0; len <= slot; len += 4) {
      const std::uint64_t n = std::min<std::uint64_t>(4, slot + 1 - len);
      for (std::uint64_t i = 0; i < n; ++i) ASSERT_EQ(f.push(body(len + i, len + i)), Status::ok);
      for (std::uint64_t i = 0; i < n; ++i) ASSERT_EQ(f.pop(), body(len + i, len + i));
    }
  }
}

class LowLatencyWrap : public ::testing::TestWithParam<std::uint64_t> {};

TEST_P(LowLatencyWrap, ManyLapsInOrder) {
  const std::uint64_t capacity = GetParam();
  constexpr std::uint64_t kSlot = 24;
  LlFixture f(capacity, kSlot);
  std::uint64_t sent = 0;
  std::uint64_t received = 0;
  for (std::uint64_t round = 0; round < 300 * capacity; ++round) {
    const std::uint64_t burst = 1 + round % capacity;
    for (std::uint64_t i = 0; i < burst; ++i, ++sent) {
      ASSERT_EQ(f.push(body(sent, sent % (kSlot + 1))), Status::ok) << sent;
    }
    if (burst == capacity) {
      ASSERT_EQ(f.push("overflow"), Status::would_block);
    }
    for (std::uint64_t i = 0; i < burst; ++i, ++received) {
      ASSERT_EQ(f.pop(), body(received, received % (kSlot + 1))) << received;
    }
    // The slot at the tail holds the message of the previous lap, complete
    // and with this incarnation: only its lap tells it apart.
    ASSERT_EQ(f.pop_status(), Status::would_block) << "a message of the previous lap read again";
  }
  EXPECT_EQ(f.tx.position(), sent);
  EXPECT_EQ(f.rx.position(), received);
  EXPECT_EQ(f.control()->producer.position, sent);
  EXPECT_EQ(f.control()->consumer.position, received);
  EXPECT_GT(sent / capacity, 100u) << "many laps";
}

INSTANTIATE_TEST_SUITE_P(SmallCapacities, LowLatencyWrap, ::testing::Values(1u, 2u, 4u, 8u));

// The lap counter is 24 bits: around its wrap (positions set directly in the
// segment) a message of lap 2^24 - 1 (flag lap bits 0) and of lap 2^24 (flag
// lap bits 1, as lap 0) are still told apart from the previous lap's.
TEST(LowLatencyRing, LapCounterWraps) {
  test::UniqueShm shm;
  constexpr std::uint64_t kCapacity = 2;
  Segment seg = Segment::create(shm.name(), ll(kCapacity, 16));
  const std::uint64_t start = ((std::uint64_t{1} << 24) - 2) * kCapacity;  // lap 2^24 - 2
  test::control_of(seg.base())->producer.position = start;
  test::control_of(seg.base())->consumer.position = start;
  {
    SpscProducer tx = SpscProducer::attach(seg);
    SpscConsumer rx = SpscConsumer::attach(seg);
    ASSERT_EQ(tx.position(), start) << "the zeroed slots do not look complete";
    std::byte buf[16];
    std::size_t size = 0;
    for (std::uint64_t i = 0; i < 5 * kCapacity; ++i) {
      const std::string m = body(i, i % 17);
      ASSERT_EQ(tx.try_push(as_bytes(m)), Status::ok) << i;
      ASSERT_EQ(rx.try_pop(buf, size), Status::ok) << i;
      EXPECT_EQ(test::to_string({buf, size}), m) << i;
      ASSERT_EQ(rx.try_pop(buf, size), Status::would_block) << "after position " << start + i;
    }
  }
  Segment::unlink(shm.name());
}

TEST(LowLatencyRing, PushManyStopsAtTheFirstTooLarge) {
  LlFixture f(8, 16);
  const std::string a = body(1, 0), b = body(2, 16), big = body(3, 17), c = body(4, 5);
  const std::span<const std::byte> batch[] = {as_bytes(a), as_bytes(b), as_bytes(big), as_bytes(c)};
  EXPECT_EQ(f.tx.try_push_many(batch), 2u);
  EXPECT_EQ(f.tx.position(), 2u);
  const std::span<const std::byte> rest[] = {as_bytes(c), as_bytes(a), as_bytes(b), as_bytes(c),
                                             as_bytes(a), as_bytes(b), as_bytes(c)};
  EXPECT_EQ(f.tx.try_push_many(rest), 6u) << "only the free slots";
  EXPECT_EQ(f.pop(), a);
  EXPECT_EQ(f.pop(), b);
  for (const std::string* m : {&c, &a, &b, &c, &a, &b}) EXPECT_EQ(f.pop(), *m);
  EXPECT_EQ(f.pop_status(), Status::would_block);
}

TEST(LowLatencyRing, TooLargePushWritesNothing) {
  LlFixture f(2, 40);
  ASSERT_EQ(f.push(body(0, 40)), Status::ok);
  ASSERT_EQ(f.pop(), body(0, 40));
  const auto before = f.slot(1);
  const std::string big = body(1, 41);
  EXPECT_EQ(f.push(big), Status::too_large);
  EXPECT_EQ(f.tx.push(as_bytes(big), 10s), Status::too_large) << "the blocking form too, at once";
  EXPECT_EQ(f.slot(1), before) << "a refused message leaves the slot's words untouched";
  EXPECT_EQ(f.tx.position(), 1u);
  EXPECT_EQ(f.control()->producer.position, 1u);
  EXPECT_EQ(f.pop_status(), Status::would_block);
  ASSERT_EQ(f.push(body(2, 40)), Status::ok);
  EXPECT_EQ(f.pop(), body(2, 40));
}

TEST(LowLatencyRing, TooLargePopKeepsTheMessage) {
  LlFixture f(4, 64);
  const std::string m = body(7, 50);
  ASSERT_EQ(f.push(m), Status::ok);
  ASSERT_EQ(f.push("next"), Status::ok);
  std::vector<std::byte> buf(64, std::byte{0xEE});
  for (std::size_t small : {0u, 1u, 4u, 49u}) {
    std::size_t size = 0;
    EXPECT_EQ(f.rx.try_pop({buf.data(), small}, size), Status::too_large) << small;
    EXPECT_EQ(size, m.size()) << "too_large reports the message's size";
    EXPECT_EQ(f.rx.position(), 0u) << "the message is kept";
    EXPECT_EQ(f.control()->consumer.position, 0u);
    for (std::size_t i = small; i < buf.size(); ++i) {
      ASSERT_EQ(buf[i], std::byte{0xEE}) << "wrote past a " << small << "-byte buffer";
    }
  }
  std::size_t size = 0;
  EXPECT_EQ(f.rx.pop({buf.data(), 10}, size, 10s), Status::too_large) << "the blocking form too";
  EXPECT_EQ(size, m.size());
  ASSERT_EQ(f.rx.try_pop({buf.data(), size}, size), Status::ok);
  EXPECT_EQ(test::to_string({buf.data(), size}), m);
  EXPECT_EQ(f.pop(), "next");
  EXPECT_EQ(f.pop_status(), Status::would_block);
}

// ---- zero-copy calls -------------------------------------------------------------

TEST(LowLatencyRing, ZeroCopyCallsAreUnsupported) {
  LlFixture f(2, 32);
  const auto start = Clock::now();
  {
    WriteClaim w = f.tx.try_claim(1);
    EXPECT_TRUE(w.empty());
    EXPECT_EQ(w.status(), Status::unsupported);
    EXPECT_EQ(f.tx.try_claim(0).status(), Status::unsupported);
    EXPECT_EQ(f.tx.claim(1, 60s).status(), Status::unsupported) << "no wait";
    EXPECT_EQ(f.tx.claim(0, 60s).status(), Status::unsupported);
    EXPECT_EQ(w.commit(4), Status::unsupported) << "an empty claim publishes nothing";
    EXPECT_EQ(w.commit_batch(), Status::unsupported);
    EXPECT_EQ(f.tx.position(), 0u);
  }
  {
    ReadClaim r = f.rx.try_peek(1);
    EXPECT_TRUE(r.empty());
    EXPECT_EQ(r.status(), Status::unsupported) << "on an empty ring";
    EXPECT_EQ(f.rx.peek(1, 60s).status(), Status::unsupported) << "no wait";
  }
  // With messages in, and on a full ring: still unsupported, not ok or would_block.
  ASSERT_EQ(f.push("a"), Status::ok);
  ASSERT_EQ(f.push("b"), Status::ok);
  EXPECT_EQ(f.tx.try_claim(1).status(), Status::unsupported);
  EXPECT_EQ(f.tx.claim(1, 60s).status(), Status::unsupported);
  {
    ReadClaim r = f.rx.try_peek(2);
    EXPECT_EQ(r.status(), Status::unsupported);
    EXPECT_EQ(r.size(), 0u);
    r.release();
    EXPECT_EQ(f.rx.position(), 0u) << "releasing an empty claim consumes nothing";
    EXPECT_EQ(f.rx.peek(1, 60s).status(), Status::unsupported);
    EXPECT_EQ(f.rx.peek(0, 60s).status(), Status::unsupported);
  }
  EXPECT_LT(Clock::now() - start, 30s) << "an unsupported blocking call waited";
  EXPECT_STREQ(to_string(Status::unsupported), "unsupported");
  // The copy calls still work after.
  EXPECT_EQ(f.pop(), "a");
  EXPECT_EQ(f.pop(), "b");
  EXPECT_EQ(f.pop_status(), Status::would_block);
}

// ---- white-box: states a producer can leave behind ------------------------------------

// Writes the words [from, to) of `expected` into `position`'s slot.
void store_words(const LlFixture& f, std::uint64_t position, const std::vector<std::uint64_t>& w,
                 std::uint64_t from, std::uint64_t to) {
  for (std::uint64_t k = from; k < to && k < w.size(); ++k) f.set_word(position, k, w[k]);
}

// A message whose word 0 carries the right flag while a later word still
// holds the previous lap's is not delivered until that word is written.
TEST(LowLatencyWhiteBox, HalfWrittenMessageIsNotDelivered) {
  constexpr std::uint64_t kCapacity = 2;
  LlFixture f(kCapacity, 64);
  // One lap, so every slot holds complete words of lap 0.
  for (std::uint64_t i = 0; i < kCapacity; ++i) {
    ASSERT_EQ(f.push(body(i, 64)), Status::ok);
    ASSERT_EQ(f.pop(), body(i, 64));
  }
  const std::uint32_t inc = f.incarnation();
  f.tx = SpscProducer();  // positions are written by hand from here
  const std::uint64_t pos = kCapacity;
  const std::string m = body(99, 30);  // words 0..8
  const auto w = f.expected(pos, inc, m);
  const std::uint64_t need = low_latency::message_words(m.size());
  ASSERT_EQ(need, 9u);
  const auto stale = f.slot(pos);
  ASSERT_EQ(stale[0] >> 32 & 0xFFFFFF, 1u) << "the slot holds lap 0's words";

  for (std::uint64_t missing : {std::uint64_t{1}, std::uint64_t{5}, need - 1}) {
    SCOPED_TRACE("word " + std::to_string(missing) + " stale");
    store_words(f, pos, stale, 0, stale.size());
    store_words(f, pos, w, 0, w.size());
    f.set_word(pos, missing, stale[missing]);
    EXPECT_EQ(f.pop_status(), Status::would_block);
    EXPECT_EQ(f.rx.position(), pos);
    EXPECT_FALSE(low_latency::complete(f.view(), pos));
    // A stale flag with the right data is as incomplete as wrong data.
    f.set_word(pos, missing,
               (stale[missing] & 0xFFFFFFFF00000000ull) | (w[missing] & 0xFFFFFFFFull));
    EXPECT_EQ(f.pop_status(), Status::would_block);
  }
  // Written in order, word by word: not readable until the last needed word.
  store_words(f, pos, stale, 0, stale.size());
  for (std::uint64_t k = 0; k < need; ++k) {
    EXPECT_EQ(f.pop_status(), Status::would_block) << "readable with only " << k << " words";
    f.set_word(pos, k, w[k]);
  }
  EXPECT_TRUE(low_latency::complete(f.view(), pos));
  EXPECT_EQ(f.pop(), m);
  EXPECT_EQ(f.rx.position(), pos + 1);
  EXPECT_EQ(f.pop_status(), Status::would_block);
}

// Words of one position with the flags of two incarnations (a producer that
// died half-way, and its successor rewriting the position) never pass for
// one message, whichever incarnation word 0 carries.
TEST(LowLatencyWhiteBox, MixOfTwoIncarnationsIsNotDelivered) {
  LlFixture f(4, 64);
  f.tx = SpscProducer();
  const std::string old_m = body(1, 40), new_m = body(2, 40);  // 11 words each
  const auto w1 = f.expected(0, 1, old_m);
  const auto w2 = f.expected(0, 2, new_m);
  const auto same_data = f.expected(0, 2, old_m);  // incarnation 2, the same bytes
  const std::uint64_t need = low_latency::message_words(40);
  for (std::uint64_t split = 1; split < need; ++split) {
    SCOPED_TRACE("split at word " + std::to_string(split));
    store_words(f, 0, w2, 0, split);
    store_words(f, 0, w1, split, w1.size());
    EXPECT_EQ(f.pop_status(), Status::would_block) << "new word 0, old rest";
    EXPECT_FALSE(low_latency::complete(f.view(), 0));
    store_words(f, 0, w1, 0, split);
    store_words(f, 0, w2, split, w2.size());
    EXPECT_EQ(f.pop_status(), Status::would_block) << "old word 0, new rest";
    // Even when the bytes agree, the incarnation differs.
    store_words(f, 0, w1, 0, split);
    store_words(f, 0, same_data, split, same_data.size());
    EXPECT_EQ(f.pop_status(), Status::would_block) << "same bytes, two incarnations";
  }
  EXPECT_EQ(f.rx.position(), 0u);
  // Completed by either incarnation alone, it is delivered.
  store_words(f, 0, w2, 0, w2.size());
  EXPECT_EQ(f.pop(), new_m);
  store_words(f, 1, f.expected(1, 1, old_m), 0, w1.size());
  EXPECT_EQ(f.pop(), old_m);
}

TEST(LowLatencyWhiteBox, HostileLengthIsCorrupt) {
  LlFixture f(4, 64);
  const std::uint32_t inc = f.incarnation();
  f.tx = SpscProducer();
  auto w = f.expected(0, inc, body(0, 64));
  const std::uint64_t flag = w[0] >> 32;
  for (std::uint32_t length : {65u, 68u, 0x10000u, 0xFFFFFFFFu}) {
    SCOPED_TRACE("length " + std::to_string(length));
    store_words(f, 0, w, 0, w.size());
    f.set_word(0, 0, flag << 32 | length);
    std::vector<std::byte> buf(64);
    std::size_t size = 12345;
    EXPECT_EQ(f.rx.try_pop(buf, size), Status::corrupt);
    EXPECT_EQ(f.rx.try_pop(buf, size), Status::corrupt) << "the ring stays stalled";
    EXPECT_EQ(f.rx.pop(buf, size, 60s), Status::corrupt) << "the blocking form does not wait";
    // A big buffer does not make it acceptable.
    std::vector<std::byte> big(0x20000);
    EXPECT_EQ(f.rx.try_pop(big, size), Status::corrupt);
    EXPECT_EQ(f.rx.position(), 0u);
    EXPECT_EQ(f.control()->consumer.position, 0u);
    EXPECT_FALSE(low_latency::complete(f.view(), 0));
  }
  // A producer attaching resumes at the corrupt position, and its message
  // replaces it.
  f.tx = SpscProducer::attach(f.segment);
  EXPECT_EQ(f.tx.position(), 0u);
  ASSERT_EQ(f.push(body(5, 64)), Status::ok);
  EXPECT_EQ(f.pop(), body(5, 64));
}

// A hostile length with a stale flag is simply not written yet.
TEST(LowLatencyWhiteBox, HostileLengthOfAnotherLapIsNotRead) {
  LlFixture f(4, 64);
  f.set_word(0, 0, std::uint64_t{0x01000002} << 32 | 0xFFFFFFFFu);  // lap 1: position 4's
  EXPECT_EQ(f.pop_status(), Status::would_block);
}

// ---- producer takeover ---------------------------------------------------------------

// A child process attaches the producer, pushes, then writes two whole
// messages and half of a third as its try_push would but dies before the
// head store that publishes them (the owner record still names it). The
// successor resumes after the two whole ones (the consumer may have read
// them), rewrites the half one, and the consumer gets every message once.
TEST(LowLatencyTakeover, DeadProducerBeforeItsHeadStore) {
  constexpr std::uint64_t kSlot = 48;
  LlFixture f(16, kSlot);
  f.tx = SpscProducer();
  const std::uint32_t before = f.control()->producer.incarnation;
  constexpr std::uint64_t kPushed = 5;
  const int rc = test::run_in_child([&] {
    SpscProducer p = SpscProducer::attach(f.segment);
    for (std::uint64_t i = 0; i < kPushed; ++i) {
      if (p.try_push(as_bytes(body(i, i * 9 % (kSlot + 1)))) != Status::ok) ::_exit(1);
    }
    const SpscView v(f.segment.base(), f.segment.geometry());
    const std::uint32_t inc = f.control()->producer.incarnation & 0xFF;
    for (std::uint64_t i = kPushed; i < kPushed + 2; ++i) {
      const std::string m = body(i, i * 9 % (kSlot + 1));
      low_latency::write(v, i, inc, m.data(), static_cast<std::uint32_t>(m.size()));
    }
    // Half of the third: word 0 and the first pair, of a 40-byte message.
    const std::string half = body(1000, 40);
    std::uint64_t* w = low_latency::words(v, kPushed + 2);
    const std::uint32_t flag = low_latency::flag(v, kPushed + 2, inc);
    atomic::store_relaxed(w, low_latency::word(40, flag));
    atomic::store_relaxed(
        w + 1,
        low_latency::word(
            low_latency::chunk(reinterpret_cast<const std::byte*>(half.data()), 40, 1), flag));
    ::_exit(p.position() == kPushed ? 0 : 2);  // no destructor: the role stays recorded
    return 3;
  });
  ASSERT_EQ(rc, 0);
  EXPECT_EQ(f.control()->producer.incarnation, before + 1);
  EXPECT_NE(f.control()->producer.owner.identity, 0u) << "the dead child still holds the record";
  EXPECT_NE(process::pid_of(f.control()->producer.owner.identity),
            static_cast<std::uint32_t>(::getpid()));
  EXPECT_EQ(f.control()->producer.position, kPushed) << "the orphans were never published";
  EXPECT_FALSE(low_latency::complete(f.view(), kPushed + 2));

  f.tx = SpscProducer::attach(f.segment);
  EXPECT_EQ(f.tx.position(), kPushed + 2) << "resumes after the whole orphans, not after the half";
  EXPECT_EQ(f.control()->producer.position, kPushed + 2) << "and publishes them";
  EXPECT_EQ(f.control()->producer.incarnation, before + 2);
  EXPECT_EQ(process::pid_of(f.control()->producer.owner.identity),
            static_cast<std::uint32_t>(::getpid()));
  constexpr std::uint64_t kTotal = 12;
  for (std::uint64_t i = kPushed + 2; i < kTotal; ++i) {
    ASSERT_EQ(f.push(body(i, i * 9 % (kSlot + 1))), Status::ok) << i;
  }
  EXPECT_EQ(f.word(kPushed + 2, 0) >> 56, (before + 2) & 0xFF) << "rewritten by the successor";
  for (std::uint64_t i = 0; i < kTotal; ++i) EXPECT_EQ(f.pop(), body(i, i * 9 % (kSlot + 1))) << i;
  EXPECT_EQ(f.pop_status(), Status::would_block) << "every message exactly once";
}

// The same with the handle destroyed (the role released) after the unpublished
// writes, and with the consumer having read the orphans already: its tail is
// ahead of the published head, and the successor continues from the tail.
TEST(LowLatencyTakeover, ConsumerReadTheOrphansFirst) {
  LlFixture f(8, 32);
  ASSERT_EQ(f.push(body(0, 0)), Status::ok);
  const std::uint32_t inc = f.incarnation();
  const SpscView v = f.view();
  for (std::uint64_t pos = 1; pos <= 3; ++pos) {
    const std::string m = body(pos, pos * 5);
    low_latency::write(v, pos, inc, m.data(), static_cast<std::uint32_t>(m.size()));
  }
  f.tx = SpscProducer();
  ASSERT_EQ(f.control()->producer.position, 1u);
  for (std::uint64_t pos = 0; pos <= 3; ++pos) EXPECT_EQ(f.pop(), body(pos, pos * 5 % 33)) << pos;
  ASSERT_EQ(f.control()->consumer.position, 4u);
  EXPECT_EQ(f.pop_status(), Status::would_block);

  std::error_code ec;
  f.tx = SpscProducer::attach(f.segment, {}, ec);
  ASSERT_FALSE(ec) << last_error_message();
  EXPECT_EQ(f.tx.position(), 4u);
  for (std::uint64_t pos = 4; pos < 20; ++pos) {
    ASSERT_EQ(f.push(body(pos, pos % 33)), Status::ok);
    EXPECT_EQ(f.pop(), body(pos, pos % 33)) << pos;
  }
  EXPECT_EQ(f.pop_status(), Status::would_block);
}

// Orphans beyond the head, none read yet: the successor stops at the ring's
// end (a whole lap of orphans) and never overwrites one.
TEST(LowLatencyTakeover, ResumeStopsAtAFullRing) {
  LlFixture f(4, 16);
  const std::uint32_t inc = f.incarnation();
  f.tx = SpscProducer();
  for (std::uint64_t pos = 0; pos < 4; ++pos) {
    const std::string m = body(pos, pos + 1);
    low_latency::write(f.view(), pos, inc, m.data(), static_cast<std::uint32_t>(m.size()));
  }
  f.tx = SpscProducer::attach(f.segment);
  EXPECT_EQ(f.tx.position(), 4u);
  EXPECT_EQ(f.push("x"), Status::would_block) << "the ring is full of orphans";
  for (std::uint64_t pos = 0; pos < 4; ++pos) EXPECT_EQ(f.pop(), body(pos, pos + 1));
  ASSERT_EQ(f.push("x"), Status::ok);
  EXPECT_EQ(f.pop(), "x");
}

TEST(LowLatencyTakeover, IncarnationGrowsWithEachProducerAttach) {
  LlFixture f(4, 16);
  const std::uint32_t first = f.control()->producer.incarnation;
  EXPECT_EQ(first, 1u) << "one producer has attached";
  std::uint32_t expect = first;
  for (int round = 0; round < 5; ++round) {
    ASSERT_EQ(f.push(body(round, 8)), Status::ok);
    const std::uint64_t pos = f.tx.position() - 1;
    EXPECT_EQ(f.word(pos, 0) >> 56, expect & 0xFF) << "round " << round;
    EXPECT_EQ(f.pop(), body(round, 8));
    // A consumer's attach does not change it.
    f.rx = SpscConsumer();
    f.rx = SpscConsumer::attach(f.segment);
    EXPECT_EQ(f.control()->producer.incarnation, expect);
    // A refused producer attach does not either.
    std::error_code ec;
    (void)SpscProducer::attach(f.segment, {}, ec);
    EXPECT_EQ(ec, make_error_code(errc::role_taken));
    EXPECT_EQ(f.control()->producer.incarnation, expect);
    f.tx = SpscProducer();
    f.tx = SpscProducer::attach(f.segment);
    EXPECT_EQ(f.control()->producer.incarnation, ++expect);
  }
}

// The flag keeps 8 bits of the incarnation: at 256 they are 0 again, and a
// message written with incarnation bits 0 is still delivered.
TEST(LowLatencyTakeover, IncarnationBitsWrap) {
  LlFixture f(2, 16);
  f.tx = SpscProducer();
  f.control()->producer.incarnation = 255;
  f.tx = SpscProducer::attach(f.segment);
  EXPECT_EQ(f.control()->producer.incarnation, 256u);
  for (std::uint64_t i = 0; i < 6; ++i) {
    ASSERT_EQ(f.push(body(i, 16)), Status::ok);
    EXPECT_EQ(f.word(i, 0) >> 56, 0u);
    EXPECT_EQ(f.pop(), body(i, 16));
    EXPECT_EQ(f.pop_status(), Status::would_block);
  }
}

// ---- blocking ----------------------------------------------------------------------

TEST(LowLatencyBlocking, PopTimesOutOnAnEmptyRing) {
  LlFixture f(2, 16);
  std::byte buf[16];
  std::size_t size = 0;
  constexpr auto kTimeout = 30ms;
  const auto start = Clock::now();
  EXPECT_EQ(f.rx.pop(buf, size, kTimeout), Status::timeout);
  EXPECT_GE(Clock::now() - start, kTimeout);
  EXPECT_EQ(f.rx.pop(buf, size, 0ns), Status::timeout);
  EXPECT_EQ(f.control()->consumer_wait.waiters, 0u);
  // Full: the push times out.
  ASSERT_EQ(f.push("a"), Status::ok);
  ASSERT_EQ(f.push("b"), Status::ok);
  EXPECT_EQ(f.tx.push(as_bytes("c"), kTimeout), Status::timeout);
  EXPECT_EQ(f.tx.position(), 2u);
  EXPECT_EQ(f.control()->producer_wait.waiters, 0u);
  EXPECT_EQ(f.pop(), "a");
  EXPECT_EQ(f.pop(), "b");
}

// The consumer sleeps (its waiters count says so) before a producer thread
// pushes; the push wakes it (the notify word proves the wake was sent).
TEST(LowLatencyBlocking, SleepingPopWakesOnPush) {
  test::UniqueShm shm;
  Segment seg = Segment::create(shm.name(), ll(4, 64));
  const WaitPolicy no_spin{0, 0};
  SpscConsumer rx = SpscConsumer::attach(seg, no_spin);
  SpscProducer tx = SpscProducer::attach(seg, no_spin);
  ControlArea* c = test::control_of(seg.base());
  constexpr int kRounds = 20;
  std::atomic<bool> stop{false};
  std::atomic<int> received{0};
  std::thread producer([&] {
    for (int i = 0; i < kRounds && !stop.load(); ++i) {
      const auto deadline = Clock::now() + 30s;
      // The consumer has message i - 1 and sleeps in its next pop.
      while (received.load() != i || atomic::load_seq_cst(&c->consumer_wait.waiters) == 0) {
        if (stop.load() || Clock::now() > deadline) return;
        std::this_thread::yield();
      }
      const std::string m = body(static_cast<std::uint64_t>(i), static_cast<std::size_t>(i * 3));
      if (tx.try_push(as_bytes(m)) != Status::ok) return;
    }
  });
  const std::uint32_t notified_before = atomic::load_seq_cst(&c->producer.notify);
  for (int i = 0; i < kRounds; ++i) {
    std::byte buf[64];
    std::size_t size = 0;
    const Status s = rx.pop(buf, size, 30s);
    if (s != Status::ok) {
      ADD_FAILURE() << "pop " << i << ": " << to_string(s);
      break;
    }
    EXPECT_EQ(test::to_string({buf, size}),
              body(static_cast<std::uint64_t>(i), static_cast<std::size_t>(i * 3)));
    received.store(i + 1);
  }
  stop.store(true);
  producer.join();
  EXPECT_EQ(received.load(), kRounds);
  // Each push found the consumer asleep; a wake may rarely coincide with the
  // sleeper's periodic re-check, so not every push needs to have sent one.
  EXPECT_GE(atomic::load_seq_cst(&c->producer.notify) - notified_before,
            static_cast<std::uint32_t>(kRounds / 2));
  EXPECT_EQ(atomic::load_seq_cst(&c->consumer_wait.waiters), 0u);
  tx = SpscProducer();
  rx = SpscConsumer();
  Segment::unlink(shm.name());
}

// The producer sleeps on a full ring (its waiters count says so) before a
// consumer thread pops; the pop wakes it.
TEST(LowLatencyBlocking, SleepingPushWakesOnPop) {
  test::UniqueShm shm;
  constexpr std::uint64_t kCapacity = 2;
  Segment seg = Segment::create(shm.name(), ll(kCapacity, 16));
  const WaitPolicy no_spin{0, 0};
  SpscConsumer rx = SpscConsumer::attach(seg, no_spin);
  SpscProducer tx = SpscProducer::attach(seg, no_spin);
  ControlArea* c = test::control_of(seg.base());
  for (std::uint64_t i = 0; i < kCapacity; ++i) {
    ASSERT_EQ(tx.try_push(as_bytes(body(i, 16))), Status::ok);
  }
  constexpr std::uint64_t kRounds = 20;
  std::atomic<bool> stop{false};
  std::atomic<std::uint64_t> popped{0}, pushed{0};
  std::thread consumer([&] {
    for (std::uint64_t i = 0; i < kRounds && !stop.load(); ++i) {
      const auto deadline = Clock::now() + 30s;
      // The producer's push i - 1 returned and push i sleeps on the full ring.
      while (pushed.load() != i || atomic::load_seq_cst(&c->producer_wait.waiters) == 0) {
        if (stop.load() || Clock::now() > deadline) return;
        std::this_thread::yield();
      }
      std::byte buf[16];
      std::size_t size = 0;
      if (rx.try_pop(buf, size) != Status::ok || test::to_string({buf, size}) != body(i, 16)) {
        return;
      }
      popped.fetch_add(1);
    }
  });
  const std::uint32_t notified_before = atomic::load_seq_cst(&c->consumer.notify);
  for (std::uint64_t i = kCapacity; i < kCapacity + kRounds; ++i) {
    const Status s = tx.push(as_bytes(body(i, 16)), 30s);
    if (s != Status::ok) {
      ADD_FAILURE() << "push " << i << ": " << to_string(s);
      break;
    }
    pushed.store(i - kCapacity + 1);
  }
  stop.store(true);
  consumer.join();
  EXPECT_EQ(popped.load(), kRounds);
  // Each push slept until a pop; a wake may rarely coincide with the
  // sleeper's periodic re-check, so not every pop needs to have sent one.
  EXPECT_GE(atomic::load_seq_cst(&c->consumer.notify) - notified_before, kRounds / 2);
  EXPECT_EQ(atomic::load_seq_cst(&c->producer_wait.waiters), 0u);
  for (std::uint64_t i = kRounds; i < kRounds + kCapacity; ++i) {
    std::byte buf[16];
    std::size_t size = 0;
    ASSERT_EQ(rx.try_pop(buf, size), Status::ok);
    EXPECT_EQ(test::to_string({buf, size}), body(i, 16));
  }
  tx = SpscProducer();
  rx = SpscConsumer();
  Segment::unlink(shm.name());
}

}  // namespace
}  // namespace shmring
