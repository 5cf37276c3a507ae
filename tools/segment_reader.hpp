// ring-inspect's reader: everything the tool takes from the bytes of a
// segment (positions, owners, sleeper counts, slot trailers) and from the
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

// The mean payload length of up to the last 64 slots below `position`, read
// (clamped) from their trailers: an estimate, since slots below the tail may
// already hold the next lap.
double mean_length(const shmring::Segment& seg, std::uint64_t position);

// Whether the file starts with shmring's magic (read without mapping it).
bool has_shmring_magic(const std::string& path);

// The private file a creator initialises a segment under before giving it its
// name (".shmring-init.<pid>.<start time>.<n>"): its creator, or nothing if
// `name` is not one.
std::optional<shmring::process::Identity> init_file_creator(std::string_view name);

}  // namespace ring_inspect
