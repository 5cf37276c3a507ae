// ring-inspect's reader: everything the tool takes from the bytes of a
// segment (positions, owners, sleeper counts, slot trailers, the words of
// low-latency slots) and from the
// names in /dev/shm, apart from how it prints them. Every value comes from
// memory any peer may have scribbled on, so each is copied once and then
// only computed with; fuzz/fuzz_inspect_reader.cpp feeds it arbitrary files.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "shmring/layout.hpp"
#include "shmring/process.hpp"
#include "shmring/segment.hpp"

namespace ring_inspect {

// How the tool opens segments: read-only, a short wait for a creator still
// initialising, and other users' rings too (looking never writes).
shmring::OpenOptions inspect_options();

// A process holding an MPMC claim record (layout.hpp, ClaimRecord).
struct Claimant {
  std::uint64_t identity = 0;
  std::uint64_t low = shmring::kClaimIdle;  // kClaimIdle: holds no claim now

  std::uint32_t pid() const { return shmring::process::pid_of(identity); }
  bool alive() const { return shmring::process::alive(identity); }
  bool holding() const { return low != shmring::kClaimIdle; }
};

struct Side {
  std::uint64_t position = 0;
  std::uint32_t notify = 0;
  std::uint32_t attached = 0;
  std::uint64_t owner_identity = 0;
  std::uint64_t owner_start_time = 0;
  std::uint32_t gpu_attached = 0;
  std::uint32_t gpu_flags = 0;
  std::uint32_t waiters = 0;
  std::uint64_t abandoned = 0;      // MPMC: positions recovered from dead processes
  std::uint32_t incarnation = 0;    // SPSC producer: producers attached so far
  std::vector<Claimant> claimants;  // MPMC: holders of this side's claim records

  std::uint32_t owner_pid() const { return shmring::process::pid_of(owner_identity); }
  bool has_owner() const { return owner_identity != 0; }
  bool owner_alive() const { return has_owner() && shmring::process::alive(owner_identity); }
  const char* owner_state() const {
    return !has_owner() ? "none" : owner_alive() ? "alive" : "dead";
  }
};

struct Snapshot {
  std::string name;
  shmring::SegmentHeader header{};
  shmring::Geometry geometry;
  Side producer;
  Side consumer;

  bool spsc() const { return geometry.kind == shmring::RingKind::spsc; }
  bool low_latency() const { return geometry.format == shmring::SlotFormat::low_latency; }
  // Producer position minus consumer position; may be odd on a damaged ring.
  std::int64_t lag() const {
    return static_cast<std::int64_t>(producer.position - consumer.position);
  }
  std::uint64_t fill() const;
  double fill_percent() const;
  bool creator_alive() const;
  // What makes the segment "in use" for remove; empty if nothing does.
  std::string in_use() const;
};

Snapshot snapshot(const shmring::Segment& seg);

// One slot as the trailer describes it for `position`.
struct SlotView {
  std::uint64_t position;
  std::uint64_t index;
  std::uint64_t committed;
  std::uint32_t length_raw;
  std::uint32_t length;  // clamped to the slot size
  std::uint32_t flags;
  std::uint64_t released;
  bool is_committed;  // the trailer says `position` is readable
  const std::byte* payload;
};

SlotView slot_at(const shmring::Segment& seg, std::uint64_t pos);

// One slot of a low-latency ring (shmring/low_latency.hpp) as its words
// describe it for `position`: word 0 holds the length and the flag
// (incarnation << 24 | lap flag), words 1.. four message bytes each. The
// trailer is unused in this format. Every word is loaded once; the length is
// clamped to the slot size before any word past word 0 is looked at.
struct LowLatencySlot {
  std::uint64_t position = 0;
  std::uint64_t index = 0;
  std::uint32_t flag = 0;         // word 0's flag
  std::uint32_t incarnation = 0;  // flag >> 24: the producer that wrote it
  std::uint32_t lap_flag = 0;     // flag's low 24 bits: lap mod (2^24 - 1) + 1, 0 if never written
  std::uint32_t expected_lap_flag = 0;  // what `position`'s words carry once written
  std::uint32_t length_raw = 0;         // word 0's low 32 bits
  std::uint32_t length = 0;             // clamped to the slot size
  std::uint64_t words = 0;              // words the (clamped) message occupies, word 0 included
  std::uint64_t mismatched = 0;         // of words 1..words-1: carrying another flag than word 0
  std::vector<unsigned char> data;      // the message bytes reassembled (length of them)

  bool written() const { return lap_flag != 0; }  // some lap's words (a lap flag is never 0)
  bool current() const { return lap_flag == expected_lap_flag; }
  bool length_ok() const { return length_raw == length; }
  // What a consumer would take: `position`'s lap, a possible length, and
  // every word of the message carrying word 0's flag.
  bool complete() const { return current() && length_ok() && mismatched == 0; }
  // "complete", "not written", "other lap", "incomplete" or "corrupt length".
  const char* state() const;
};

// The words of `position`'s slot; `max_bytes` bounds the bytes reassembled
// into `data` (the length fields are not affected).
LowLatencySlot low_latency_slot_at(const shmring::Segment& seg, std::uint64_t pos,
                                   std::uint64_t max_bytes = shmring::kMaxLowLatencySlotSize);

// The mean payload length of up to the last 64 slots below `position`, read
// (clamped) from their trailers, or from word 0 of low-latency slots: an
// estimate, since slots below the tail may already hold the next lap.
double mean_length(const shmring::Segment& seg, std::uint64_t position);

// Whether the file starts with shmring's magic (read without mapping it).
bool has_shmring_magic(const std::string& path);

// The private file a creator initialises a segment under before giving it its
// name (".shmring-init.<pid>.<start time>.<n>"): its creator, or nothing if
// `name` is not one.
std::optional<shmring::process::Identity> init_file_creator(std::string_view name);

}  // namespace ring_inspect
