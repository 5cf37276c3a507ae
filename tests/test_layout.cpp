// The segment ABI: geometry rules, slot layout and the bytes of a header.
#include <gtest/gtest.h>

#include <cstring>
#include <set>
#include <string>

#include "shmring/layout.hpp"
#include "shmring/process.hpp"
#include "shmring/ring_view.hpp"
#include "shmring/segment.hpp"
#include "test_support.hpp"

namespace shmring {
namespace {

__extension__ typedef unsigned __int128 u128;

GeometryCheck check(std::uint64_t capacity, std::uint64_t slot_size,
                    RingKind kind = RingKind::spsc) {
  Geometry g;
  return compute_geometry(kind, capacity, slot_size, g);
}

// ---- the rules, one GeometryCheck each ---------------------------------------

TEST(Geometry, CapacityZero) { EXPECT_EQ(check(0, 64), GeometryCheck::capacity_zero); }

TEST(Geometry, CapacityNotPowerOfTwo) {
  for (std::uint64_t c :
       {3ull, 5ull, 6ull, 7ull, 12ull, 1000ull, (1ull << 20) + 1, (1ull << 31) - 1}) {
    EXPECT_EQ(check(c, 64), GeometryCheck::capacity_not_power_of_two) << "capacity " << c;
  }
  // Not a power of two and too large: the power-of-two rule is named.
  EXPECT_EQ(check(~0ull, 64), GeometryCheck::capacity_not_power_of_two);
}

TEST(Geometry, CapacityTooLarge) {
  EXPECT_EQ(check(kMaxCapacity * 2, 1), GeometryCheck::capacity_too_large);
  EXPECT_EQ(check(std::uint64_t{1} << 63, 1), GeometryCheck::capacity_too_large);
  EXPECT_EQ(check(kMaxCapacity, 1), GeometryCheck::ok) << "kMaxCapacity itself is allowed";
}

TEST(Geometry, SlotSizeZero) { EXPECT_EQ(check(8, 0), GeometryCheck::slot_size_zero); }

TEST(Geometry, SlotSizeTooLarge) {
  EXPECT_EQ(check(1, kMaxSlotSize + 1), GeometryCheck::slot_size_too_large);
  EXPECT_EQ(check(1, ~0ull), GeometryCheck::slot_size_too_large);
  EXPECT_EQ(check(1, kMaxSlotSize), GeometryCheck::ok) << "kMaxSlotSize itself is allowed";
}

TEST(Geometry, SizeOverflow) {
  EXPECT_EQ(check(kMaxCapacity, kMaxSlotSize), GeometryCheck::size_overflow);
  // The largest power-of-two capacity that fits with the largest slot, and
  // the next one up, computed here in 128 bits independently of the library.
  const std::uint64_t stride = round_up(kMaxSlotSize + sizeof(SlotTrailer), kPayloadAlign);
  std::uint64_t fits = 1;
  while (u128{kSlotsOffset} + u128{fits * 2} * stride <= kMaxSegmentSize) fits *= 2;
  Geometry g;
  ASSERT_EQ(compute_geometry(RingKind::spsc, fits, kMaxSlotSize, g), GeometryCheck::ok);
  EXPECT_LE(g.segment_size, kMaxSegmentSize);
  EXPECT_EQ(check(fits * 2, kMaxSlotSize), GeometryCheck::size_overflow);
}

// Every power-of-two capacity against a spread of slot sizes: the library's
// verdict matches the rule "header + capacity x stride <= 16 TiB" evaluated
// in 128-bit arithmetic, and an accepted geometry is self-consistent.
TEST(Geometry, SizeRuleMatchesWideArithmetic) {
  const std::uint64_t slot_sizes[] = {1,
                                      31,
                                      32,
                                      33,
                                      64,
                                      100,
                                      4096,
                                      65536,
                                      (1u << 20) + 7,
                                      kMaxSlotSize / 2,
                                      kMaxSlotSize - 1,
                                      kMaxSlotSize};
  for (unsigned shift = 0; shift <= 31; ++shift) {
    const std::uint64_t capacity = std::uint64_t{1} << shift;
    for (std::uint64_t slot : slot_sizes) {
      const u128 stride = (u128{slot} + 32 + 63) / 64 * 64;
      const bool fits = u128{kSlotsOffset} + stride * capacity <= kMaxSegmentSize;
      Geometry g;
      const GeometryCheck c = compute_geometry(RingKind::mpmc, capacity, slot, g);
      ASSERT_EQ(c, fits ? GeometryCheck::ok : GeometryCheck::size_overflow)
          << "capacity " << capacity << " slot " << slot;
      if (!fits) continue;
      EXPECT_EQ(g.kind, RingKind::mpmc);
      EXPECT_EQ(g.capacity, capacity);
      EXPECT_EQ(g.slot_size, slot);
      EXPECT_EQ(g.slot_stride, static_cast<std::uint64_t>(stride));
      EXPECT_EQ(g.mask(), capacity - 1);
      EXPECT_TRUE(u128{g.segment_size} == u128{g.slots_offset} + stride * capacity);
    }
  }
}

TEST(Geometry, OutputUntouchedOnFailure) {
  Geometry g;
  g.capacity = 12345;
  g.slot_size = 678;
  const Geometry before = g;
  EXPECT_NE(compute_geometry(RingKind::spsc, 3, 64, g), GeometryCheck::ok);
  EXPECT_NE(compute_geometry(RingKind::spsc, 4, 0, g), GeometryCheck::ok);
  EXPECT_NE(compute_geometry(RingKind::spsc, kMaxCapacity, kMaxSlotSize, g), GeometryCheck::ok);
  EXPECT_EQ(g, before);
}

TEST(Geometry, UsableAtCompileTime) {
  constexpr Geometry g = [] {
    Geometry out;
    compute_geometry(RingKind::spsc, 16, 100, out);
    return out;
  }();
  static_assert(g.capacity == 16 && g.slot_stride % kPayloadAlign == 0);
  static_assert(g.trailer_offset() + sizeof(SlotTrailer) == g.slot_stride);
  EXPECT_EQ(g.slot_size, 100u);
}

TEST(Geometry, EveryCheckHasItsOwnDescription) {
  const GeometryCheck all[] = {GeometryCheck::ok,
                               GeometryCheck::capacity_zero,
                               GeometryCheck::capacity_not_power_of_two,
                               GeometryCheck::capacity_too_large,
                               GeometryCheck::slot_size_zero,
                               GeometryCheck::slot_size_too_large,
                               GeometryCheck::size_overflow};
  std::set<std::string> seen;
  for (GeometryCheck c : all) {
    const std::string s = to_string(c);
    EXPECT_FALSE(s.empty());
    EXPECT_NE(s, "unknown");
    EXPECT_TRUE(seen.insert(s).second) << "duplicate description " << s;
  }
  EXPECT_NE(std::string(to_string(GeometryCheck::capacity_zero)).find("capacity"),
            std::string::npos);
  EXPECT_NE(std::string(to_string(GeometryCheck::slot_size_zero)).find("slot size"),
            std::string::npos);
}

// ---- slot layout -------------------------------------------------------------

TEST(SlotLayout, PayloadAlignedAndTrailerAtTheEnd) {
  for (std::uint64_t slot = 1; slot <= 1024; ++slot) {
    Geometry g;
    ASSERT_EQ(compute_geometry(RingKind::spsc, 4, slot, g), GeometryCheck::ok);
    EXPECT_EQ(g.slots_offset % kPayloadAlign, 0u);
    EXPECT_EQ(g.slots_offset % kBlockSize, 0u) << "slot 0 starts a 128-byte block";
    EXPECT_EQ(g.slots_offset, sizeof(ControlArea)) << "slots follow the control blocks";
    EXPECT_EQ(g.slot_stride % kPayloadAlign, 0u) << "every payload is 64-byte aligned";
    EXPECT_EQ(g.trailer_offset() + sizeof(SlotTrailer), g.slot_stride) << "trailer ends the slot";
    EXPECT_GE(g.trailer_offset(), g.slot_size) << "payload and trailer never overlap";
    EXPECT_EQ(g.trailer_offset() % alignof(SlotTrailer), 0u);
    // No wasted line: one line less could not hold payload + trailer.
    EXPECT_LT(g.slot_stride - kPayloadAlign, slot + sizeof(SlotTrailer));
  }
}

TEST(SlotLayout, SmallPayloadSharesTheLineOfItsTrailer) {
  for (std::uint64_t slot = 1; slot <= 64 - sizeof(SlotTrailer); ++slot) {
    Geometry g;
    ASSERT_EQ(compute_geometry(RingKind::spsc, 2, slot, g), GeometryCheck::ok);
    EXPECT_EQ(g.slot_stride, kPayloadAlign) << "slot " << slot;
    // The whole payload and the trailer's committed word lie in one line.
    EXPECT_EQ((g.slot_size - 1) / 64, g.trailer_offset() / 64);
    EXPECT_EQ((g.trailer_offset() + offsetof(SlotTrailer, committed)) / 64, 0u);
  }
  Geometry g;
  ASSERT_EQ(compute_geometry(RingKind::spsc, 2, 64 - sizeof(SlotTrailer) + 1, g),
            GeometryCheck::ok);
  EXPECT_EQ(g.slot_stride, 2 * kPayloadAlign) << "one byte more needs a second line";
}

TEST(SlotLayout, ViewAddressesMatchTheGeometry) {
  Geometry g;
  ASSERT_EQ(compute_geometry(RingKind::spsc, 8, 100, g), GeometryCheck::ok);
  alignas(128) static std::byte buffer[16384];
  ASSERT_LE(g.segment_size, sizeof buffer);
  RingView view(buffer, g);
  for (std::uint64_t pos = 0; pos < 3 * g.capacity; ++pos) {
    const std::uint64_t slot = pos & g.mask();
    EXPECT_EQ(view.payload(pos), buffer + g.slots_offset + slot * g.slot_stride);
    EXPECT_EQ(reinterpret_cast<std::byte*>(view.trailer(pos)),
              buffer + g.slots_offset + slot * g.slot_stride + g.trailer_offset());
    EXPECT_EQ(reinterpret_cast<std::uintptr_t>(view.payload(pos)) % kPayloadAlign, 0u);
  }
  // Positions far beyond the slot count are masked, never out of bounds.
  EXPECT_EQ(view.payload(~0ull), buffer + g.slots_offset + (g.capacity - 1) * g.slot_stride);
  EXPECT_EQ(reinterpret_cast<std::byte*>(view.control()), buffer);
  EXPECT_EQ(reinterpret_cast<std::byte*>(view.producer()), buffer + 128);
  EXPECT_EQ(reinterpret_cast<std::byte*>(view.producer_wait()), buffer + 256);
  EXPECT_EQ(reinterpret_cast<std::byte*>(view.consumer()), buffer + 384);
  EXPECT_EQ(reinterpret_cast<std::byte*>(view.consumer_wait()), buffer + 512);
  EXPECT_EQ(reinterpret_cast<std::byte*>(view.producer_claims()), buffer + 640);
  EXPECT_EQ(reinterpret_cast<std::byte*>(view.consumer_claims()), buffer + 2688);
  EXPECT_EQ(g.slots_offset, 8064u);
}

// ---- ABI constants -----------------------------------------------------------

TEST(Abi, MagicSpellsShmring1) {
  char text[9] = {};
  std::memcpy(text, &kMagic, 8);
  EXPECT_STREQ(text, "SHMRING1");
}

TEST(Abi, Constants) {
  EXPECT_EQ(kBlockSize, 128u) << "fixed, never the compiler's interference size";
  EXPECT_EQ(kPayloadAlign, 64u);
  EXPECT_GE(kAbiVersion, 1u) << "0 means 'still initialising'";
  EXPECT_EQ(sizeof(SegmentHeader), kBlockSize);
  EXPECT_EQ(sizeof(ProducerBlock), kBlockSize);
  EXPECT_EQ(sizeof(ConsumerBlock), kBlockSize);
  EXPECT_EQ(sizeof(WaitBlock), kBlockSize);
  EXPECT_EQ(sizeof(ControlArea), 63 * kBlockSize)
      << "5 blocks, then two claim tables of 16, then 8 of metadata, then two event tables of 9";
  EXPECT_EQ(kSlotsOffset, sizeof(ControlArea));
  EXPECT_EQ(sizeof(SlotTrailer), 32u);
  EXPECT_EQ(static_cast<std::uint32_t>(RingKind::spsc), 1u);
  EXPECT_EQ(static_cast<std::uint32_t>(RingKind::mpmc), 2u);
  EXPECT_STREQ(to_string(RingKind::spsc), "spsc");
  EXPECT_STREQ(to_string(RingKind::mpmc), "mpmc");
  EXPECT_STREQ(to_string(static_cast<RingKind>(7)), "unknown");
  // Every product of the limits fits 64 bits, and a slot length fits 32.
  EXPECT_TRUE(u128{kMaxCapacity} * (kMaxSlotSize + 64) <= ~std::uint64_t{0});
  EXPECT_LE(kMaxSlotSize, std::uint64_t{0xffffffff});
}

TEST(Abi, ProducerAndConsumerWordsAreInDifferentBlocks) {
  const std::size_t producer = offsetof(ControlArea, producer) + offsetof(ProducerBlock, position);
  const std::size_t consumer = offsetof(ControlArea, consumer) + offsetof(ConsumerBlock, position);
  const std::size_t pwait = offsetof(ControlArea, producer_wait) + offsetof(WaitBlock, waiters);
  const std::size_t cwait = offsetof(ControlArea, consumer_wait) + offsetof(WaitBlock, waiters);
  const std::size_t words[] = {producer, consumer, pwait, cwait};
  std::set<std::size_t> blocks;
  for (std::size_t w : words) blocks.insert(w / kBlockSize);
  EXPECT_EQ(blocks.size(), 4u);
  EXPECT_EQ(blocks.count(0), 0u) << "no hot word in the header block";
}

// The bytes a freshly created segment holds, read from the file at fixed
// offsets (not through the structs): this is what other languages rely on.
TEST(Abi, CreatedSegmentBytes) {
  test::UniqueShm shm;
  CreateOptions o;
  o.kind = RingKind::mpmc;
  o.capacity = 8;
  o.slot_size = 100;
  const std::uint64_t before =
      static_cast<std::uint64_t>(std::chrono::duration_cast<std::chrono::nanoseconds>(
                                     std::chrono::system_clock::now().time_since_epoch())
                                     .count());
  Segment s = Segment::create(shm.name(), o);
  const std::uint64_t after =
      static_cast<std::uint64_t>(std::chrono::duration_cast<std::chrono::nanoseconds>(
                                     std::chrono::system_clock::now().time_since_epoch())
                                     .count());
  const Geometry& g = s.geometry();
  const std::string& n = shm.name();
  EXPECT_EQ(test::read_value_at<std::uint64_t>(n, 0), kMagic);
  EXPECT_EQ(test::read_value_at<std::uint32_t>(n, 8), kAbiVersion);
  EXPECT_EQ(test::read_value_at<std::uint32_t>(n, 12), 2u);
  EXPECT_EQ(test::read_value_at<std::uint64_t>(n, 16), 8u);
  EXPECT_EQ(test::read_value_at<std::uint64_t>(n, 24), 100u);
  EXPECT_EQ(test::read_value_at<std::uint64_t>(n, 32), g.slot_stride);
  EXPECT_EQ(test::read_value_at<std::uint64_t>(n, 40), g.slots_offset);
  EXPECT_EQ(test::read_value_at<std::uint64_t>(n, 48), g.segment_size);
  const auto created_ns = test::read_value_at<std::uint64_t>(n, 56);
  EXPECT_GE(created_ns, before);
  EXPECT_LE(created_ns, after);
  EXPECT_EQ(test::read_value_at<std::uint32_t>(n, 64), static_cast<std::uint32_t>(::getpid()));
  EXPECT_EQ(test::read_value_at<std::uint32_t>(n, 68), 0u) << "flags are reserved";
  EXPECT_EQ(test::read_value_at<std::uint64_t>(n, 72), process::self()->start_time);
  EXPECT_EQ(test::file_size(n), static_cast<std::int64_t>(g.segment_size));
  EXPECT_EQ(s.size(), g.segment_size);
  // Control blocks start zeroed: positions, notify words, sleepers, owners.
  for (std::uint64_t off = 128; off < g.slots_offset; off += 8) {
    EXPECT_EQ(test::read_value_at<std::uint64_t>(n, off), 0u) << "offset " << off;
  }
  // Each slot: committed 0, length 0, flags 0, released = its index (the
  // MPMC turn for position i).
  for (std::uint64_t i = 0; i < g.capacity; ++i) {
    const std::uint64_t t = g.slots_offset + i * g.slot_stride + g.slot_stride - 32;
    EXPECT_EQ(test::read_value_at<std::uint64_t>(n, t + 0), 0u);
    EXPECT_EQ(test::read_value_at<std::uint32_t>(n, t + 8), 0u);
    EXPECT_EQ(test::read_value_at<std::uint32_t>(n, t + 12), 0u);
    EXPECT_EQ(test::read_value_at<std::uint64_t>(n, t + 16), i);
  }
  Segment::unlink(shm.name());
}

TEST(Process, IdentityPacking) {
  const process::Identity self = process::self().value();
  EXPECT_EQ(self.pid, static_cast<std::uint32_t>(::getpid()));
  EXPECT_NE(self.start_time, 0u);
  const std::uint64_t packed = process::pack(self);
  EXPECT_EQ(process::pid_of(packed), self.pid);
  EXPECT_EQ(packed >> 32, self.start_time & 0xffffffffu);
  EXPECT_TRUE(process::alive(packed));
  // The same pid with another start time is a different (dead) process.
  process::Identity other = self;
  other.start_time += 1;
  EXPECT_FALSE(process::alive(process::pack(other)));
  EXPECT_FALSE(process::alive(0));
}

TEST(Process, ExitedChildIsDead) {
  std::uint64_t packed = 0;
  int pipefd[2];
  ASSERT_EQ(::pipe(pipefd), 0);
  const int rc = test::run_in_child([&] {
    const std::uint64_t mine = process::pack(process::self().value());
    return ::write(pipefd[1], &mine, sizeof mine) == sizeof mine ? 0 : 1;
  });
  ASSERT_EQ(rc, 0);
  ASSERT_EQ(::read(pipefd[0], &packed, sizeof packed), static_cast<ssize_t>(sizeof packed));
  ::close(pipefd[0]);
  ::close(pipefd[1]);
  EXPECT_NE(process::pid_of(packed), static_cast<std::uint32_t>(::getpid()));
  EXPECT_FALSE(process::alive(packed)) << "a reaped child is not alive";
}

}  // namespace
}  // namespace shmring
