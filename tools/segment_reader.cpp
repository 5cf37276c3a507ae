#include "segment_reader.hpp"

#include <fcntl.h>
#include <fmt/format.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <cstddef>
#include <cstring>
#include <thread>
#include <utility>
#include <vector>

#include "shmring/low_latency.hpp"
#include "shmring/ring_view.hpp"
#include "shmring/segment.hpp"

namespace ring_inspect {

namespace {

constexpr const char* kShmDir = "/dev/shm/";

std::string strip_slash(std::string_view name) {
  if (!name.empty() && name.front() == '/') name.remove_prefix(1);
  return std::string(name);
}

// pread until `n` bytes came, the file ended or an error: the bytes read.
ssize_t pread_full(int fd, void* out, std::size_t n, std::uint64_t offset) {
  std::size_t done = 0;
  while (done < n) {
    const ssize_t r =
        ::pread(fd, static_cast<char*>(out) + done, n - done, static_cast<off_t>(offset + done));
    if (r < 0 && errno == EINTR) continue;
    if (r < 0) return -1;
    if (r == 0) break;
    done += static_cast<std::size_t>(r);
  }
  return static_cast<ssize_t>(done);
}

// The header fields that describe the layout; the rest (creator, creation
// time) is informational.
bool same_layout(const shmring::SegmentHeader& a, const shmring::SegmentHeader& b) {
  return a.magic == b.magic && a.abi_version == b.abi_version && a.ring_kind == b.ring_kind &&
         a.flags == b.flags && a.capacity == b.capacity && a.slot_size == b.slot_size &&
         a.slot_stride == b.slot_stride && a.slots_offset == b.slots_offset &&
         a.segment_size == b.segment_size && a.subscribers == b.subscribers && a.lanes == b.lanes &&
         a.delivery == b.delivery;
}

}  // namespace

std::string header_problem(const shmring::SegmentHeader& h, std::uint64_t file_size,
                           shmring::Geometry& out) {
  using shmring::RingKind;
  using shmring::SlotFormat;
  if (h.magic != shmring::kMagic) {
    return fmt::format("header magic is {:#x}, expected {:#x} ('SHMRING1')", h.magic,
                       shmring::kMagic);
  }
  if (h.abi_version != shmring::kAbiVersion) {
    return fmt::format("ABI version is {}, this ring-inspect speaks version {}", h.abi_version,
                       shmring::kAbiVersion);
  }
  if (h.ring_kind != static_cast<std::uint32_t>(RingKind::spsc) &&
      h.ring_kind != static_cast<std::uint32_t>(RingKind::mpmc) &&
      h.ring_kind != static_cast<std::uint32_t>(RingKind::broadcast)) {
    return fmt::format("ring kind {} is not spsc (1), mpmc (2) or broadcast (3)", h.ring_kind);
  }
  if ((h.flags & ~shmring::kHeaderKnownFlags) != 0) {
    return fmt::format("header flags {:#x} have bits this ring-inspect does not know ({:#x})",
                       h.flags, h.flags & ~shmring::kHeaderKnownFlags);
  }
  const SlotFormat format = (h.flags & shmring::kHeaderLowLatencySlots) != 0
                                ? SlotFormat::low_latency
                                : SlotFormat::plain;
  shmring::Geometry g;
  if (const shmring::GeometryCheck c = shmring::compute_geometry(
          static_cast<RingKind>(h.ring_kind), h.capacity, h.slot_size, g, format, h.subscribers,
          static_cast<shmring::Delivery>(h.delivery), h.lanes);
      c != shmring::GeometryCheck::ok) {
    return fmt::format(
        "header geometry is invalid: {} (capacity {}, slot size {}, {} slots, {} subscribers, "
        "delivery {})",
        shmring::to_string(c), h.capacity, h.slot_size, shmring::to_string(format), h.subscribers,
        h.delivery);
  }
  if (h.slot_stride != g.slot_stride || h.slots_offset != g.slots_offset ||
      h.segment_size != g.segment_size) {
    return fmt::format(
        "header layout (stride {}, slots at {}, size {}) does not match capacity {} x slot size "
        "{} (expected stride {}, slots at {}, size {})",
        h.slot_stride, h.slots_offset, h.segment_size, h.capacity, h.slot_size, g.slot_stride,
        g.slots_offset, g.segment_size);
  }
  if (file_size < g.segment_size) {
    return fmt::format("file is {} bytes, the header says {}: truncated", file_size,
                       g.segment_size);
  }
  if (file_size > g.segment_size) {
    return fmt::format("file is {} bytes, larger than the {} the header says", file_size,
                       g.segment_size);
  }
  out = g;
  return {};
}

std::optional<SegmentFile> SegmentFile::open(std::string_view raw,
                                             std::chrono::milliseconds init_timeout,
                                             OpenFailure& failure) {
  failure = {};
  if (std::string problem = shmring::Segment::name_problem(raw); !problem.empty()) {
    failure.message = "invalid name: " + problem;
    return std::nullopt;
  }
  const std::string name = strip_slash(raw);
  const std::string path = kShmDir + name;
  // O_NONBLOCK: a FIFO planted under the name must not block the open (the
  // regular-file check below then refuses it).
  const int fd = ::open(path.c_str(), O_RDONLY | O_NOFOLLOW | O_CLOEXEC | O_NONBLOCK);
  if (fd < 0) {
    failure.not_found = errno == ENOENT;
    failure.message = fmt::format("open {}: {}{}", path, std::strerror(errno),
                                  errno == ELOOP ? " (a symbolic link: refused)" : "");
    return std::nullopt;
  }
  struct Close {
    int fd;
    ~Close() {
      if (fd >= 0) ::close(fd);
    }
  } guard{fd};
  // Wait (bounded) for a creator still at work: for a header's worth of
  // bytes, then for the version it stores last.
  const auto deadline = std::chrono::steady_clock::now() + init_timeout;
  shmring::SegmentHeader h{};
  struct stat st {};
  for (;;) {
    if (::fstat(fd, &st) != 0) {
      failure.message = fmt::format("fstat failed: {}", std::strerror(errno));
      return std::nullopt;
    }
    if (!S_ISREG(st.st_mode)) {
      failure.message = path + " is not a regular file";
      return std::nullopt;
    }
    if (pread_full(fd, &h, sizeof h, 0) == static_cast<ssize_t>(sizeof h)) {
      if (h.magic != 0 && h.magic != shmring::kMagic) break;  // header_problem says why
      if (h.abi_version != 0) break;
    }
    if (std::chrono::steady_clock::now() >= deadline) {
      failure.message = fmt::format(
          "no initialised header after {} ms (file is {} bytes): its creator is still "
          "initialising, died doing so, or it is not a shmring segment",
          init_timeout.count(), st.st_size);
      return std::nullopt;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  shmring::Geometry g;
  // The size now: the file may have changed since the fstat above.
  if (::fstat(fd, &st) != 0) {
    failure.message = fmt::format("fstat failed: {}", std::strerror(errno));
    return std::nullopt;
  }
  if (std::string problem = header_problem(h, static_cast<std::uint64_t>(st.st_size), g);
      !problem.empty()) {
    failure.message = std::move(problem);
    return std::nullopt;
  }
  guard.fd = -1;
  return SegmentFile(fd, name, h, g);
}

SegmentFile::SegmentFile(SegmentFile&& other) noexcept
    : fd_(std::exchange(other.fd_, -1)),
      name_(std::move(other.name_)),
      header_(other.header_),
      geometry_(other.geometry_) {}

SegmentFile& SegmentFile::operator=(SegmentFile&& other) noexcept {
  if (this != &other) {
    if (fd_ >= 0) ::close(fd_);
    fd_ = std::exchange(other.fd_, -1);
    name_ = std::move(other.name_);
    header_ = other.header_;
    geometry_ = other.geometry_;
  }
  return *this;
}

SegmentFile::~SegmentFile() {
  if (fd_ >= 0) ::close(fd_);
}

std::uint64_t SegmentFile::size_now() const {
  struct stat st {};
  return ::fstat(fd_, &st) == 0 ? static_cast<std::uint64_t>(st.st_size) : 0;
}

void SegmentFile::read(std::uint64_t offset, void* out, std::size_t n) const {
  const ssize_t got = pread_full(fd_, out, n, offset);
  if (got < 0) {
    throw ReadError(name_, fmt::format("read of {} bytes at offset {} failed: {}", n, offset,
                                       std::strerror(errno)));
  }
  if (static_cast<std::size_t>(got) == n) return;
  const std::uint64_t size = size_now();
  if (size < geometry_.segment_size) {
    throw ReadError(name_, fmt::format("segment shrank to {} bytes, the header says {}", size,
                                       geometry_.segment_size));
  }
  // Truncated and grown again between the read and the fstat.
  throw ReadError(name_, fmt::format("segment shrank while being read (it is {} bytes now, the "
                                     "header says {})",
                                     size, geometry_.segment_size));
}

std::int64_t Snapshot::lag() const {
  if (!broadcast()) return static_cast<std::int64_t>(producer.position - consumer.position);
  std::int64_t most = 0;
  for (const Subscriber& sub : subscribers) {
    if (sub.active() && sub.live) most = std::max(most, lag(sub));
  }
  return most;
}

std::uint64_t Snapshot::fill() const {
  const std::int64_t l = lag();
  if (l <= 0) return 0;
  return std::min<std::uint64_t>(static_cast<std::uint64_t>(l), geometry.capacity);
}

double Snapshot::fill_percent() const {
  return geometry.capacity == 0
             ? 0.0
             : 100.0 * static_cast<double>(fill()) / static_cast<double>(geometry.capacity);
}

bool Snapshot::creator_alive() const {
  return shmring::process::alive(
      shmring::process::pack({header.creator_pid, header.creator_start_time}));
}

std::string Snapshot::in_use() const {
  std::vector<std::string> why;
  if (broadcast()) {
    if (producer.owner_alive())
      why.push_back(fmt::format("producer pid {} alive", producer.owner_pid()));
    for (const Subscriber& sub : subscribers) {
      if (sub.live) why.push_back(fmt::format("subscriber {} pid {} alive", sub.index, sub.pid()));
    }
  } else if (spsc()) {
    if (producer.owner_alive())
      why.push_back(fmt::format("producer pid {} alive", producer.owner_pid()));
    if (consumer.owner_alive())
      why.push_back(fmt::format("consumer pid {} alive", consumer.owner_pid()));
  } else {
    if (producer.attached != 0)
      why.push_back(fmt::format("{} producer(s) attached", producer.attached));
    if (consumer.attached != 0)
      why.push_back(fmt::format("{} consumer(s) attached", consumer.attached));
  }
  if (producer.gpu_attached != 0)
    why.push_back(fmt::format("{} GPU producer(s) attached", producer.gpu_attached));
  if (consumer.gpu_attached != 0)
    why.push_back(fmt::format("{} GPU consumer(s) attached", consumer.gpu_attached));
  return fmt::format("{}", fmt::join(why, ", "));
}

namespace {

// From the local copy: plain reads (no peer writes to it).
// The claim records of a side of the lane whose words begin at `lane`.
void add_claimants(const SegmentFile& file, bool producer, const shmring::ClaimTable& claims,
                   std::uint64_t lane, Side& s) {
  for (std::size_t i = 0; i < shmring::kClaimRecords; ++i) {
    const shmring::ClaimRecord& r = claims.records[i];
    if (r.holder == 0) continue;
    s.claimants.push_back(
        Claimant{r.holder, r.low, file.held(shmring::lock_byte::claim_record(producer, i, lane))});
  }
}

Side read_side(const SegmentFile& file, bool producer, const shmring::SideBlock& b,
               const shmring::WaitBlock& w, const shmring::ClaimTable& claims) {
  Side s;
  s.position = b.position;
  s.notify = b.notify;
  s.attached = b.attached;
  s.owner_identity = b.owner.identity;
  s.owner_start_time = b.owner.start_time;
  s.gpu_attached = b.gpu_attached;
  s.gpu_flags = b.gpu_flags;
  s.waiters = w.waiters & shmring::kFutexWaiterMask;
  s.event_waiters = w.waiters / shmring::kEventWaiter;
  s.abandoned = b.abandoned;
  s.incarnation = b.incarnation;
  if (s.owner_identity != 0) s.owner_live = file.held(shmring::lock_byte::owner(producer));
  add_claimants(file, producer, claims, 0, s);
  return s;
}

// Where `pos`'s slot starts in the file.
std::uint64_t slot_offset(const shmring::Geometry& g, std::uint64_t pos) {
  return g.slots_offset + (pos & g.mask()) * g.slot_stride;
}

// The library's lap flag formula (low_latency::lap_flag) needs a RingView but
// only reads its capacity: a view over a local control area, whose slots
// pointer is one past that copy and is never used.
std::uint32_t expected_lap_flag(const shmring::Geometry& g, std::uint64_t pos) {
  shmring::ControlArea local{};
  static_assert(sizeof local == shmring::kSlotsOffset);
  return shmring::low_latency::lap_flag(shmring::RingView(reinterpret_cast<std::byte*>(&local), g),
                                        pos);
}

}  // namespace

Snapshot snapshot(const SegmentFile& file) {
  // One pread for every block, so the values come from (nearly) one moment;
  // pread copies bytes, not words, so a value written meanwhile may be torn,
  // like any other value a peer may scribble.
  shmring::ControlArea c{};
  file.read(0, &c, sizeof c);
  if (!same_layout(c.header, file.header())) {
    throw ReadError(
        file.name(),
        fmt::format("the header changed since the segment was opened (magic {:#x}, "
                    "ABI version {}, capacity {}, slot size {})",
                    c.header.magic, c.header.abi_version, c.header.capacity, c.header.slot_size));
  }
  Snapshot s;
  s.name = file.name();
  s.header = c.header;
  s.geometry = file.geometry();
  s.consumer = read_side(file, /*producer=*/false, c.consumer, c.consumer_wait, c.consumer_claims);
  s.producer = read_side(file, /*producer=*/true, c.producer, c.producer_wait, c.producer_claims);
  s.floor = c.producer.floor;
  const shmring::Geometry& g = file.geometry();
  if (g.kind == shmring::RingKind::mpmc) {
    s.lanes.push_back({c.producer.position, c.consumer.position});
    // Lanes 1 on (the validated count): their counters, recoveries and
    // claim records join the sides'.
    for (std::uint32_t l = 1; l < g.lane_count(); ++l) {
      shmring::LaneArea a{};
      file.read(shmring::lane_offset(l), &a, sizeof a);
      s.lanes.push_back({a.producer.position, a.consumer.position});
      for (const bool prod : {true, false}) {
        Side& side = prod ? s.producer : s.consumer;
        const shmring::SideBlock& b = prod ? a.producer : a.consumer;
        side.position += b.position;
        side.abandoned += b.abandoned;
        add_claimants(file, prod, prod ? a.producer_claims : a.consumer_claims,
                      shmring::lane_offset(l), side);
      }
    }
  }
  if (g.kind == shmring::RingKind::broadcast) {
    // The validated count, never the header's bytes as they are now.
    std::vector<shmring::SubscriberBlock> blocks(g.subscribers);
    if (!blocks.empty()) {
      file.read(shmring::kSlotsOffset, blocks.data(),
                blocks.size() * sizeof(shmring::SubscriberBlock));
    }
    for (std::uint32_t i = 0; i < blocks.size(); ++i) {
      const shmring::SubscriberBlock& b = blocks[i];
      Subscriber sub;
      sub.index = i;
      sub.cursor = b.cursor;
      sub.holder = b.holder;
      sub.start_time = b.start_time;
      sub.state = b.state;
      sub.session = b.session;
      sub.evicted = b.session != 0 && b.evicted == b.session;
      sub.lapped = b.lapped;
      sub.lost = b.lost;
      sub.joined_at = b.joined_at;
      sub.live = file.held(shmring::lock_byte::subscriber(i));
      s.subscribers.push_back(sub);
    }
  }
  return s;
}

const char* Subscriber::state_name() const {
  switch (state) {
    case shmring::kSubscriberFree:
      return live ? "joining" : "free";
    case shmring::kSubscriberActive:
      if (live) return "active";
      return evicted ? "dead (evicted)" : "dead";
    case shmring::kSubscriberRetired:
      return live ? "joining" : "retired";
    default:
      return "corrupt state";
  }
}

SlotView slot_at(const SegmentFile& file, std::uint64_t pos, std::uint64_t max_bytes) {
  const auto& g = file.geometry();
  SlotView v{};
  v.position = pos;
  v.index = pos & g.mask();
  shmring::SlotTrailer t{};
  file.read(slot_offset(g, pos) + g.trailer_offset(), &t, sizeof t);
  v.committed = t.committed;
  v.length_raw = t.length;
  v.flags = t.flags;
  v.released = t.released;
  v.length = static_cast<std::uint32_t>(std::min<std::uint64_t>(v.length_raw, g.slot_size));
  v.is_committed = v.committed != 0 && v.committed == pos + 1;
  v.data.resize(std::min<std::uint64_t>(v.length, max_bytes));
  if (!v.data.empty()) file.read(slot_offset(g, pos), v.data.data(), v.data.size());
  return v;
}

const char* LowLatencySlot::state() const {
  // Current first (a lap flag is never 0, so a current slot was written).
  if (!current()) return written() ? "other lap" : "not written";
  if (!length_ok()) return "corrupt length";
  return mismatched == 0 ? "complete" : "incomplete";
}

LowLatencySlot low_latency_slot_at(const SegmentFile& file, std::uint64_t pos,
                                   std::uint64_t max_bytes) {
  namespace ll = shmring::low_latency;
  const auto& g = file.geometry();
  LowLatencySlot v;
  v.position = pos;
  v.index = pos & g.mask();
  // The slot holds low_latency_words(slot_size) words (the geometry was
  // validated at open, so they lie inside the slot's stride).
  const std::uint64_t slot_words_n = shmring::low_latency_words(g.slot_size);
  std::uint64_t w0 = 0;
  file.read(slot_offset(g, pos), &w0, sizeof w0);
  v.flag = static_cast<std::uint32_t>(w0 >> 32);
  v.incarnation = v.flag >> ll::kLapBits;
  v.lap_flag = v.flag & ll::kLapMask;
  v.expected_lap_flag = expected_lap_flag(g, pos);
  v.length_raw = static_cast<std::uint32_t>(w0);
  v.length = static_cast<std::uint32_t>(std::min<std::uint64_t>(v.length_raw, g.slot_size));
  v.words = std::min(ll::message_words(v.length), slot_words_n);
  // Words 1.. of the message, read after word 0 as a consumer reads them.
  std::vector<std::uint64_t> w(v.words > 0 ? v.words - 1 : 0);
  if (!w.empty()) file.read(slot_offset(g, pos) + 8, w.data(), 8 * w.size());
  const std::uint64_t keep = std::min<std::uint64_t>(v.length, max_bytes);
  v.data.reserve(keep);
  for (const std::uint64_t x : w) {
    if (static_cast<std::uint32_t>(x >> 32) != v.flag) ++v.mismatched;
    const auto d = static_cast<std::uint32_t>(x);
    for (std::uint64_t b = 0; b < 4 && v.data.size() < keep; ++b) {
      v.data.push_back(static_cast<unsigned char>(d >> (8 * b)));
    }
  }
  return v;
}

double mean_length(const SegmentFile& file, std::uint64_t position) {
  const auto& g = file.geometry();
  const std::uint64_t n = std::min<std::uint64_t>({position, 64, g.capacity});
  if (n == 0) return 0.0;
  const bool low_latency = g.format == shmring::SlotFormat::low_latency;
  std::uint64_t total = 0;
  for (std::uint64_t p = position - n; p < position; ++p) {
    // Low-latency slots keep the length in word 0; their trailers are unused.
    std::uint32_t length = 0;
    if (low_latency) {
      std::uint64_t w0 = 0;
      file.read(slot_offset(g, p), &w0, sizeof w0);
      length = static_cast<std::uint32_t>(w0);
    } else {
      file.read(slot_offset(g, p) + g.trailer_offset() + offsetof(shmring::SlotTrailer, length),
                &length, sizeof length);
    }
    total += std::min<std::uint64_t>(length, g.slot_size);
  }
  return static_cast<double>(total) / static_cast<double>(n);
}

bool has_shmring_magic(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_NOFOLLOW | O_CLOEXEC | O_NONBLOCK);
  if (fd < 0) return false;
  std::uint64_t magic = 0;
  const ssize_t n = ::pread(fd, &magic, sizeof magic, 0);
  ::close(fd);
  return n == static_cast<ssize_t>(sizeof magic) && magic == shmring::kMagic;
}

bool is_init_file(std::string_view name) {
  return name.substr(0, shmring::kInitFilePrefix.size()) == shmring::kInitFilePrefix;
}

bool init_file_in_progress(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_NOFOLLOW | O_CLOEXEC | O_NONBLOCK);
  if (fd < 0) return errno != ENOENT;
  const bool held = shmring::process::lock_held(fd, shmring::lock_byte::kCreator);
  ::close(fd);
  return held;
}

}  // namespace ring_inspect
