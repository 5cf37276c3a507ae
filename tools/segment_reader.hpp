// ring-inspect's reader: everything the tool takes from the bytes of a
// segment (positions, owners, sleeper counts, slot trailers, the words of
// low-latency slots) and from the names in /dev/shm, apart from how it prints
// them.
//
// The segment is never mapped: every read is a pread into a local copy. A
// peer with write access can truncate the file at any time, and a mapping
// read past the new end of the file raises SIGBUS; pread instead comes back
// short, which the reader reports as a ReadError ("segment shrank to N bytes,
// the header says M"). Every value comes from memory any peer may have
// scribbled on, so each is copied once and then only computed with;
// fuzz/fuzz_inspect_reader.cpp feeds the reader arbitrary files.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "shmring/layout.hpp"
#include "shmring/process.hpp"

namespace ring_inspect {

// A read of a segment that was opened fine failed: the file shrank (a peer
// truncated it), its header no longer describes the ring that was validated,
// or the read itself failed. what() starts with the segment's name.
class ReadError : public std::runtime_error {
 public:
  ReadError(const std::string& name, std::string detail)
      : std::runtime_error(name + ": " + detail), detail_(std::move(detail)) {}
  const std::string& detail() const noexcept { return detail_; }

 private:
  std::string detail_;
};

// Why SegmentFile::open refused a name.
struct OpenFailure {
  std::string message;     // without the name
  bool not_found = false;  // no file under the name (it may have been removed meanwhile)
};

// A segment in /dev/shm opened for reading by pread. open() takes the same
// precautions as the library's read-only open (no symbolic links, no FIFOs,
// a short wait for a creator still initialising) and checks the header the
// same way (magic, ABI version, kind, flags, geometry, the file's size), but
// never maps the file, so nothing done to the file afterwards can fault the
// tool. Other users' rings are opened too: looking never writes. The file
// descriptor keeps the file that had the name at open, as a mapping would.
class SegmentFile {
 public:
  static std::optional<SegmentFile> open(std::string_view name,
                                         std::chrono::milliseconds init_timeout,
                                         OpenFailure& failure);

  SegmentFile(SegmentFile&& other) noexcept;
  SegmentFile& operator=(SegmentFile&& other) noexcept;
  SegmentFile(const SegmentFile&) = delete;
  SegmentFile& operator=(const SegmentFile&) = delete;
  ~SegmentFile();

  const std::string& name() const noexcept { return name_; }  // without a leading '/'
  const shmring::SegmentHeader& header() const noexcept { return header_; }  // as validated
  const shmring::Geometry& geometry() const noexcept { return geometry_; }

  // Copies `n` bytes at `offset` (inside the validated segment size) to
  // `out`; throws ReadError if the file no longer holds them.
  void read(std::uint64_t offset, void* out, std::size_t n) const;

  // The file's size now (fstat), for messages.
  std::uint64_t size_now() const;

  // Whether a live process holds the record at `byte` (layout.hpp,
  // lock_byte): the one test of liveness that holds across users and pid
  // namespaces.
  bool held(std::uint64_t byte) const { return shmring::process::lock_held(fd_, byte); }

 private:
  SegmentFile(int fd, std::string name, const shmring::SegmentHeader& h, const shmring::Geometry& g)
      : fd_(fd), name_(std::move(name)), header_(h), geometry_(g) {}
  int fd_ = -1;
  std::string name_;
  shmring::SegmentHeader header_{};
  shmring::Geometry geometry_;
};

// Checks a header as the library's open does and returns the geometry it
// describes; "" if it is fine, else what is wrong.
std::string header_problem(const shmring::SegmentHeader& h, std::uint64_t file_size,
                           shmring::Geometry& out);

// A process holding an MPMC claim record (layout.hpp, ClaimRecord).
struct Claimant {
  std::uint64_t identity = 0;
  std::uint64_t low = shmring::kClaimIdle;  // kClaimIdle: holds no claim now
  bool live = false;                        // its holder keeps the record's lock

  std::uint32_t pid() const { return shmring::process::pid_of(identity); }
  bool alive() const { return live; }
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
  std::uint32_t waiters = 0;        // futex sleepers
  std::uint32_t event_waiters = 0;  // armed event descriptors
  std::uint64_t abandoned = 0;      // MPMC: positions recovered from dead processes
  std::uint32_t incarnation = 0;    // SPSC producer: producers attached so far
  std::vector<Claimant> claimants;  // MPMC: holders of this side's claim records
  bool owner_live = false;          // SPSC: somebody keeps the role's lock

  std::uint32_t owner_pid() const { return shmring::process::pid_of(owner_identity); }
  bool has_owner() const { return owner_identity != 0; }
  bool owner_alive() const { return has_owner() && owner_live; }
  const char* owner_state() const {
    return !has_owner() ? "none" : owner_alive() ? "alive" : "dead";
  }
};

// A broadcast subscriber block (layout.hpp, SubscriberBlock).
struct Subscriber {
  std::uint32_t index = 0;
  std::uint64_t cursor = 0;  // next position it reads
  std::uint64_t holder = 0;  // identity of its holder, 0 if none
  std::uint64_t start_time = 0;
  std::uint32_t state = 0;  // kSubscriberFree / Active / Retired, or a scribble
  std::uint32_t session = 0;
  bool evicted = false;  // the producer found this session's holder dead
  std::uint64_t lapped = 0;
  std::uint64_t lost = 0;
  std::uint64_t joined_at = 0;
  bool live = false;  // somebody keeps the block's lock

  std::uint32_t pid() const { return shmring::process::pid_of(holder); }
  // "free", "joining", "active", "retired", "dead", "dead (evicted)" or
  // "corrupt state".
  const char* state_name() const;
  bool active() const { return state == shmring::kSubscriberActive; }
};

struct Snapshot {
  std::string name;
  shmring::SegmentHeader header{};
  shmring::Geometry geometry;
  Side producer;
  Side consumer;
  std::uint64_t floor = 0;              // reliable broadcast: the producer's floor
  std::vector<Subscriber> subscribers;  // broadcast: every block
  // MPMC: each lane's enqueue and dequeue counters (one entry per lane; the
  // sides' positions, abandoned counts and claimants are over every lane).
  struct Lane {
    std::uint64_t enqueued = 0;
    std::uint64_t dequeued = 0;
  };
  std::vector<Lane> lanes;

  bool spsc() const { return geometry.kind == shmring::RingKind::spsc; }
  bool broadcast() const { return geometry.kind == shmring::RingKind::broadcast; }
  bool low_latency() const { return geometry.format == shmring::SlotFormat::low_latency; }
  // Producer position minus consumer position (broadcast: minus the cursor
  // of the slowest active subscriber, 0 with none); may be odd on a damaged
  // ring.
  std::int64_t lag() const;
  // Broadcast: the producer's position minus this subscriber's cursor.
  std::int64_t lag(const Subscriber& sub) const {
    return static_cast<std::int64_t>(producer.position - sub.cursor);
  }
  std::uint64_t fill() const;
  double fill_percent() const;
  bool creator_alive() const;
  // What makes the segment "in use" for remove; empty if nothing does.
  std::string in_use() const;
};

// The header and control blocks, read in one pread; throws ReadError if the
// file shrank or the header no longer matches the one validated at open.
Snapshot snapshot(const SegmentFile& file);

// One slot as the trailer describes it for `position`.
struct SlotView {
  std::uint64_t position;
  std::uint64_t index;
  std::uint64_t committed;
  std::uint32_t length_raw;
  std::uint32_t length;  // clamped to the slot size
  std::uint32_t flags;
  std::uint64_t released;
  bool is_committed;                // the trailer says `position` is readable
  std::vector<unsigned char> data;  // the payload's first min(length, max_bytes) bytes
};

// Throws ReadError if the file shrank.
SlotView slot_at(const SegmentFile& file, std::uint64_t pos, std::uint64_t max_bytes);

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
// into `data` (the length fields are not affected). Throws ReadError if the
// file shrank.
LowLatencySlot low_latency_slot_at(const SegmentFile& file, std::uint64_t pos,
                                   std::uint64_t max_bytes = shmring::kMaxLowLatencySlotSize);

// The mean payload length of up to the last 64 slots below `position`, read
// (clamped) from their trailers, or from word 0 of low-latency slots: an
// estimate, since slots below the tail may already hold the next lap. Throws
// ReadError if the file shrank.
double mean_length(const SegmentFile& file, std::uint64_t position);

// Whether the file starts with shmring's magic (read without mapping it).
bool has_shmring_magic(const std::string& path);

// The private file a creator initialises a segment under before giving it its
// name (shmring::kInitFilePrefix and random digits).
bool is_init_file(std::string_view name);

// Whether the creator of such a file still works on it: it holds the
// creator's lock (layout.hpp, lock_byte::kCreator). A file that cannot be
// opened counts as being worked on (never removed on a guess).
bool init_file_in_progress(const std::string& path);

}  // namespace ring_inspect
