#include "shmring/segment.hpp"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cinttypes>
#include <climits>
#include <cstdio>
#include <cstring>
#include <thread>
#include <utility>

#include "detail/fail.hpp"
#include "detail/holder_lock.hpp"
#include "detail/sys.hpp"
#include "shmring/atomic.hpp"
#include "shmring/process.hpp"

namespace shmring {
namespace detail {

struct Mapping {
  std::string name;
  Geometry geometry;
  std::string metadata;  // a copy: the segment's bytes may change under us
  std::byte* base = nullptr;
  std::size_t size = 0;
  // Kept open for liveness: holders' locks are asked about through it, and
  // holders open descriptions of their own from it. It holds no lock itself.
  int fd = -1;
  bool read_only = false;
  bool created = false;

  Mapping() = default;
  Mapping(const Mapping&) = delete;
  Mapping& operator=(const Mapping&) = delete;
  ~Mapping() {
    if (base != nullptr) ::munmap(base, size);
    if (fd >= 0) ::close(fd);
  }
};

}  // namespace detail

namespace {

using detail::fail;
using detail::fail_errno;
using detail::Failure;
using Clock = std::chrono::steady_clock;

constexpr const char* kShmDir = "/dev/shm/";

std::string_view strip_slash(std::string_view name) {
  if (!name.empty() && name.front() == '/') name.remove_prefix(1);
  return name;
}

std::string hex(std::uint64_t v) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "0x%" PRIx64, v);
  return buf;
}

std::string num(std::uint64_t v) { return std::to_string(v); }

// Closes a descriptor on every path out of create/open.
struct Fd {
  int fd = -1;
  ~Fd() {
    if (fd >= 0) ::close(fd);  // never retried on EINTR: Linux has closed it already
  }
};

struct Unmap {
  void* addr = MAP_FAILED;
  std::size_t size = 0;
  ~Unmap() {
    if (addr != MAP_FAILED) ::munmap(addr, size);
  }
};

errc errc_for_open(int err) {
  switch (err) {
    case ENOENT:
      return errc::not_found;
    case EEXIST:
      return errc::already_exists;
    case EACCES:
    case EPERM:
      return errc::permission_denied;
    case ELOOP:   // O_NOFOLLOW met a symlink
    case EISDIR:  // a directory, opened for writing
    case ENXIO:   // a socket, or a FIFO with no writer
      return errc::not_a_segment;
    case ENOSPC:
    case ENOMEM:
    case EFBIG:
      return errc::no_space;
    default:
      return errc{};
  }
}

Failure open_failure(int err, std::string_view name, std::string_view what) {
  const errc e = errc_for_open(err);
  std::string detail = std::string(what) + ": " + std::strerror(err);
  if (err == ELOOP)
    detail = std::string(what) + ": the name is a symbolic link, which is never followed";
  if (err == EISDIR) detail = std::string(what) + ": the name is a directory, not a segment";
  if (err == ENXIO)
    detail = std::string(what) + ": the name is a socket or a device, not a segment";
  return e == errc{} ? fail_errno(err, name, detail) : fail(e, name, detail);
}

Failure check_name(std::string_view raw) {
  std::string problem = Segment::name_problem(raw);
  if (problem.empty()) return {};
  // The name goes into the message: escape what would cut or garble it.
  std::string printable;
  for (const char ch : raw) {
    if (static_cast<unsigned char>(ch) < 0x20 || ch == 0x7f) {
      char esc[8];
      std::snprintf(esc, sizeof esc, "\\x%02x",
                    static_cast<unsigned>(static_cast<unsigned char>(ch)));
      printable += esc;
    } else {
      printable += ch;
    }
  }
  return fail(errc::invalid_name, printable, problem);
}

errc errc_for(GeometryCheck c) {
  switch (c) {
    case GeometryCheck::capacity_zero:
    case GeometryCheck::capacity_not_power_of_two:
    case GeometryCheck::capacity_too_large:
      return errc::invalid_capacity;
    case GeometryCheck::slot_size_zero:
    case GeometryCheck::slot_size_too_large:
    case GeometryCheck::low_latency_slot_too_large:
      return errc::invalid_slot_size;
    case GeometryCheck::format_unknown:
    case GeometryCheck::format_needs_spsc:
      return errc::invalid_slot_format;
    case GeometryCheck::size_overflow:
      return errc::size_overflow;
    case GeometryCheck::kind_unknown:
    case GeometryCheck::subscribers_out_of_range:
    case GeometryCheck::subscribers_need_broadcast:
    case GeometryCheck::delivery_unknown:
    case GeometryCheck::delivery_needs_broadcast:
    case GeometryCheck::lanes_out_of_range:
    case GeometryCheck::lanes_need_mpmc:
      return errc::invalid_argument;
    case GeometryCheck::ok:
      break;
  }
  return errc{};
}

constexpr const char* kKindRule = "is not spsc (1), mpmc (2) or broadcast (3)";

bool known_kind(std::uint32_t kind) {
  return kind == static_cast<std::uint32_t>(RingKind::spsc) ||
         kind == static_cast<std::uint32_t>(RingKind::mpmc) ||
         kind == static_cast<std::uint32_t>(RingKind::broadcast);
}

// "capacity 8, slot size 64, plain slots" and, where they apply or are
// wrong, the lanes, the subscriber count and the delivery mode, by number
// when unknown.
std::string describe(RingKind kind, std::uint64_t capacity, std::uint64_t slot_size,
                     SlotFormat format, std::uint32_t subscribers, std::uint32_t delivery,
                     std::uint32_t lanes) {
  std::string d = "capacity " + num(capacity) + ", slot size " + num(slot_size) + ", " +
                  to_string(format) + " slots";
  if (lanes != 0) d += ", " + num(lanes) + " lanes";
  if (kind == RingKind::broadcast || subscribers != 0)
    d += ", " + num(subscribers) + " subscribers";
  if (kind == RingKind::broadcast || delivery != 0) {
    const auto mode = static_cast<Delivery>(delivery);
    d += ", delivery " + (mode == Delivery::reliable || mode == Delivery::lossy
                              ? std::string(to_string(mode))
                              : num(delivery));
  }
  return d;
}

// Checks a header against everything a reader relies on, and returns the
// geometry it describes. The header is read through a local copy so a peer
// cannot change a field between its check and its use.
Failure validate_header(const SegmentHeader& h, std::string_view name,
                        std::optional<RingKind> want_kind, std::uint64_t file_size, Geometry& out) {
  if (h.magic != kMagic) {
    return fail(errc::bad_magic, name,
                "header magic is " + hex(h.magic) + ", expected " + hex(kMagic) + " ('SHMRING1')");
  }
  if (h.abi_version != kAbiVersion) {
    return fail(errc::abi_mismatch, name,
                "ABI version is " + num(h.abi_version) + ", this library speaks version " +
                    num(kAbiVersion));
  }
  if (!known_kind(h.ring_kind)) {
    return fail(errc::corrupt_header, name, "ring kind " + num(h.ring_kind) + " " + kKindRule);
  }
  const auto kind = static_cast<RingKind>(h.ring_kind);
  if (want_kind && *want_kind != kind) {
    return fail(errc::kind_mismatch, name,
                std::string("the ring is ") + to_string(kind) + ", the caller asked for " +
                    to_string(*want_kind));
  }
  if ((h.flags & ~kHeaderKnownFlags) != 0) {
    return fail(errc::corrupt_header, name,
                "header flags " + hex(h.flags) + " have bits this library does not know (" +
                    hex(h.flags & ~kHeaderKnownFlags) + ")");
  }
  const SlotFormat format =
      (h.flags & kHeaderLowLatencySlots) != 0 ? SlotFormat::low_latency : SlotFormat::plain;
  Geometry g;
  if (const GeometryCheck c =
          compute_geometry(kind, h.capacity, h.slot_size, g, format, h.subscribers,
                           static_cast<Delivery>(h.delivery), h.lanes);
      c != GeometryCheck::ok) {
    return fail(
        errc::corrupt_header, name,
        std::string("header geometry is invalid: ") + to_string(c) + " (" +
            describe(kind, h.capacity, h.slot_size, format, h.subscribers, h.delivery, h.lanes) +
            ")");
  }
  if (h.slot_stride != g.slot_stride || h.slots_offset != g.slots_offset ||
      h.segment_size != g.segment_size) {
    return fail(errc::corrupt_header, name,
                "header layout (stride " + num(h.slot_stride) + ", slots at " +
                    num(h.slots_offset) + ", size " + num(h.segment_size) +
                    ") does not match capacity " + num(h.capacity) + " x slot size " +
                    num(h.slot_size) + " (expected stride " + num(g.slot_stride) + ", slots at " +
                    num(g.slots_offset) + ", size " + num(g.segment_size) + ")");
  }
  if (file_size < g.segment_size) {
    return fail(errc::truncated, name,
                "file is " + num(file_size) + " bytes, the header says " + num(g.segment_size));
  }
  if (file_size > g.segment_size) {
    return fail(errc::corrupt_header, name,
                "file is " + num(file_size) + " bytes, larger than the " + num(g.segment_size) +
                    " the header says");
  }
  out = g;
  return {};
}

std::uint64_t unix_ns() {
  timespec ts;
  ::clock_gettime(CLOCK_REALTIME, &ts);
  return static_cast<std::uint64_t>(ts.tv_sec) * 1'000'000'000ull +
         static_cast<std::uint64_t>(ts.tv_nsec);
}

// The private name a segment is initialised under: 128 random bits, so that
// nobody can take it first. Whether its creator still works on it is told by
// the creator's lock (lock_byte::kCreator), not by the name.
std::string init_name() {
  std::uint64_t r[2] = {};
  if (::getrandom(r, sizeof r, 0) != static_cast<ssize_t>(sizeof r)) {
    // No entropy source: still unique per process and call, if guessable.
    static std::atomic<std::uint64_t> counter{0};
    r[0] = static_cast<std::uint64_t>(::getpid()) << 32 ^ unix_ns();
    r[1] = counter.fetch_add(1, std::memory_order_relaxed);
  }
  char buf[40];
  std::snprintf(buf, sizeof buf, "%016" PRIx64 "%016" PRIx64, r[0], r[1]);
  return std::string(kInitFilePrefix) + buf;
}

// Takes or gives up the creator's lock on a file being initialised.
int creator_lock(int fd, short type) {
  return detail::set_byte_lock(fd, type, lock_byte::kCreator);
}

// Maps the whole segment that `g` describes; the mapping keeps `fd`.
std::shared_ptr<detail::Mapping> map_segment(Fd& fd, const std::string& name, const Geometry& g,
                                             int prot, Failure& f) {
  void* addr = sys::mmap(g.segment_size, prot, fd.fd);
  if (addr == MAP_FAILED) {
    f = fail_errno(errno, name, "mmap of " + num(g.segment_size) + " bytes failed");
    return nullptr;
  }
  auto map = std::make_shared<detail::Mapping>();
  map->fd = std::exchange(fd.fd, -1);
  map->name = name;
  map->geometry = g;
  map->base = static_cast<std::byte*>(addr);
  map->size = g.segment_size;
  return map;
}

// The checks every create makes of its options and of the caller; the
// geometry and the identity to record on success.
Failure check_create(const std::string& name, const CreateOptions& o, Geometry& g,
                     process::Identity& self) {
  if (!known_kind(static_cast<std::uint32_t>(o.kind))) {
    return fail(errc::invalid_argument, name,
                "ring kind " + num(static_cast<std::uint32_t>(o.kind)) + " " + kKindRule);
  }
  if (const GeometryCheck c = compute_geometry(o.kind, o.capacity, o.slot_size, g, o.format,
                                               o.subscribers, o.delivery, o.lanes);
      c != GeometryCheck::ok) {
    std::string what = std::string(to_string(c)) + " (" +
                       describe(o.kind, o.capacity, o.slot_size, o.format, o.subscribers,
                                static_cast<std::uint32_t>(o.delivery), o.lanes) +
                       ")";
    if (c == GeometryCheck::subscribers_out_of_range) what += ": set CreateOptions::subscribers";
    return fail(errc_for(c), name, what);
  }
  if (o.metadata.size() > kMetadataCapacity) {
    return fail(errc::invalid_argument, name,
                "metadata of " + num(o.metadata.size()) + " bytes does not fit the " +
                    num(kMetadataCapacity) + " a segment holds");
  }
  if ((o.mode & ~mode_t{0666}) != 0) {
    char mode[16];
    std::snprintf(mode, sizeof mode, "0%o", static_cast<unsigned>(o.mode));
    return fail(errc::invalid_argument, name,
                std::string("mode ") + mode + " is not a subset of 0666 (read/write bits only)");
  }
  // Recorded in the header for display.
  return detail::identify_self(name, "the creator", self);
}

// Reserves the memory of a new file (a full /dev/shm fails here, never as a
// SIGBUS later), maps it and writes the header and slots; the ABI version is
// stored last.
std::shared_ptr<detail::Mapping> build(Fd& fd, const std::string& name, const Geometry& g,
                                       const std::string& metadata, const process::Identity& self,
                                       Failure& f) {
  if (const int err = sys::fallocate(fd.fd, static_cast<off_t>(g.segment_size)); err != 0) {
    f = err == ENOSPC || err == EFBIG || err == ENOMEM
            ? fail(errc::no_space, name,
                   "cannot reserve " + num(g.segment_size) +
                       " bytes of shared memory: " + std::strerror(err))
            : fail_errno(err, name, "posix_fallocate of " + num(g.segment_size) + " bytes failed");
    return nullptr;
  }
  auto map = map_segment(fd, name, g, PROT_READ | PROT_WRITE, f);
  if (!map) return nullptr;
  map->created = true;

  // The file is fresh from fallocate, so every byte is zero: only the
  // non-zero fields are written.
  auto* ctl = reinterpret_cast<ControlArea*>(map->base);
  SegmentHeader& h = ctl->header;
  // Atomic because an opener may be polling it already (see do_open).
  atomic::store_relaxed(&h.magic, kMagic);
  h.ring_kind = static_cast<std::uint32_t>(g.kind);
  h.flags = g.format == SlotFormat::low_latency ? kHeaderLowLatencySlots : 0;
  // Broadcast: the subscriber blocks stay zero, every one free.
  h.subscribers = g.subscribers;
  h.delivery = static_cast<std::uint32_t>(g.delivery);
  h.lanes = g.lanes;
  h.capacity = g.capacity;
  h.slot_size = g.slot_size;
  h.slot_stride = g.slot_stride;
  h.slots_offset = g.slots_offset;
  h.segment_size = g.segment_size;
  h.created_unix_ns = unix_ns();
  h.creator_pid = self.pid;
  h.creator_start_time = self.start_time;
  ctl->metadata.length = static_cast<std::uint32_t>(metadata.size());
  if (!metadata.empty()) std::memcpy(ctl->metadata.bytes, metadata.data(), metadata.size());
  map->metadata = metadata;
  // Slot i is free for position i of its lane (the MPMC turn; SPSC ignores
  // it): a lane's slots are a ring of capacity / lanes.
  const std::uint64_t trailer_at = g.slots_offset + g.trailer_offset();
  const std::uint64_t lane_mask = g.capacity / g.lane_count() - 1;
  for (std::uint64_t i = 0; i < g.capacity; ++i) {
    auto* t = reinterpret_cast<SlotTrailer*>(map->base + trailer_at + i * g.slot_stride);
    t->released = i & lane_mask;
  }
  // SYNC POINT (release, pairs with open's acquire of abi_version): the
  // whole initialised segment visible to any process that sees the version.
  atomic::store_release(&h.abi_version, kAbiVersion);
  return map;
}

std::shared_ptr<detail::Mapping> do_create(std::string_view raw, const CreateOptions& o,
                                           Failure& f) {
  if ((f = check_name(raw))) return nullptr;
  const std::string name(strip_slash(raw));
  Geometry g;
  process::Identity self;
  if ((f = check_create(name, o, g, self))) return nullptr;
  const std::string path = kShmDir + name;
  // Cheap early refusal: allocating the whole segment only to find the name
  // taken would waste (and, for a large ring, briefly exhaust) /dev/shm.
  // link() below is the real, atomic check.
  if (struct stat st{}; ::lstat(path.c_str(), &st) == 0) {
    f = open_failure(EEXIST, name, "create " + path);
    return nullptr;
  }
  // The segment is made under a private name and linked to its own only once
  // initialised, so nobody ever finds a half-made ring under the name: a
  // creator killed at any point leaves the name free (and a private file,
  // unlocked once its creator is gone, that `ring-inspect gc` collects).
  // Owner-only until then.
  std::string temp;
  Fd fd;
  for (int attempt = 0; fd.fd < 0; ++attempt) {
    // EEXIST: a name drawn twice, or planted by someone: draw again.
    temp = kShmDir + init_name();
    fd.fd = sys::open(temp.c_str(), O_RDWR | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
    if (fd.fd < 0 && (errno != EEXIST || attempt >= 16)) {
      f = open_failure(errno, name, "create " + temp);
      return nullptr;
    }
  }
  if (const int err = creator_lock(fd.fd, F_WRLCK); err != 0) {
    f = fail_errno(err, name, "cannot lock " + temp + " while initialising it");
    sys::unlink(temp.c_str());
    return nullptr;
  }
  struct UnlinkTemp {
    const std::string& path;
    ~UnlinkTemp() { sys::unlink(path.c_str()); }
  } unlink_temp{temp};

  auto map = build(fd, name, g, o.metadata, self, f);
  if (!map) return nullptr;

  // Always: the umask may have narrowed the 0600 that open() asked for.
  if (sys::fchmod(map->fd, o.mode) != 0) {
    f = fail_errno(errno, name, "fchmod to the final mode failed");
    return nullptr;
  }
  // Publishes the name: fails with EEXIST if it appeared meanwhile, and never
  // follows a symbolic link planted under it.
  if (sys::link(temp.c_str(), path.c_str()) != 0) {
    f = open_failure(errno, name, "create " + path);
    return nullptr;
  }
  // The mapping's descriptor must hold no lock (see Mapping::fd).
  creator_lock(map->fd, F_UNLCK);
  return map;
}

std::shared_ptr<detail::Mapping> open_descriptor(Fd& fd, const std::string& name,
                                                 const std::string& path, const OpenOptions& o,
                                                 Failure& f);

std::shared_ptr<detail::Mapping> do_open(std::string_view raw, const OpenOptions& o, Failure& f) {
  if ((f = check_name(raw))) return nullptr;
  const std::string name(strip_slash(raw));
  const std::string path = kShmDir + name;
  Fd fd;
  // O_NONBLOCK: a FIFO planted under the name must not block a read-only
  // open (the regular-file check below then refuses it).
  fd.fd = sys::open(path.c_str(),
                    (o.read_only ? O_RDONLY : O_RDWR) | O_NOFOLLOW | O_CLOEXEC | O_NONBLOCK);
  if (fd.fd < 0) {
    f = open_failure(errno, name, "open " + path);
    return nullptr;
  }
  return open_descriptor(fd, name, path, o, f);
}

// What every open checks of a file open as `fd`, then the mapping, which
// keeps `fd`. `path` names the file in messages.
std::shared_ptr<detail::Mapping> open_descriptor(Fd& fd, const std::string& name,
                                                 const std::string& path, const OpenOptions& o,
                                                 Failure& f) {
  const auto deadline = Clock::now() + o.init_timeout;
  const int prot = o.read_only ? PROT_READ : PROT_READ | PROT_WRITE;
  // Wait (bounded) for the creator: first for the file to have a header's
  // worth of bytes, then for the version it stores last.
  SegmentHeader header{};
  struct stat st {};
  for (;;) {
    if (sys::fstat(fd.fd, &st) != 0) {
      f = fail_errno(errno, name, "fstat failed");
      return nullptr;
    }
    if (!S_ISREG(st.st_mode)) {
      f = fail(errc::not_a_segment, name, path + " is not a regular file");
      return nullptr;
    }
    // Another user's ring is refused unless asked for: its owner could have
    // planted it under a name this process expects to be its own.
    if (st.st_uid != ::geteuid() && !o.allow_foreign_owner) {
      f = fail(errc::permission_denied, name,
               path + " is owned by uid " + num(st.st_uid) + ", not by this process's uid " +
                   num(::geteuid()) + " (set OpenOptions::allow_foreign_owner to open it)");
      return nullptr;
    }
    if (static_cast<std::uint64_t>(st.st_size) >= sizeof(SegmentHeader)) {
      Unmap head;
      head.size = sizeof(SegmentHeader);
      head.addr = ::mmap(nullptr, head.size, PROT_READ, MAP_SHARED, fd.fd, 0);
      if (head.addr == MAP_FAILED) {
        f = fail_errno(errno, name, "mmap of the header failed");
        return nullptr;
      }
      auto* h = static_cast<SegmentHeader*>(head.addr);
      // SYNC POINT (acquire, pairs with create's release): a non-zero
      // version means the creator's initialisation is visible.
      const std::uint32_t version = atomic::load_acquire(&h->abi_version);
      const std::uint64_t magic = atomic::load_relaxed(&h->magic);
      if (magic != 0 && magic != kMagic) {
        f = fail(errc::bad_magic, name,
                 "header magic is " + hex(magic) + ", expected " + hex(kMagic) +
                     " ('SHMRING1'): not a shmring segment");
        return nullptr;
      }
      if (version != 0) {
        std::memcpy(&header, h, sizeof header);
        break;
      }
    }
    if (Clock::now() >= deadline) {
      f = fail(errc::init_timeout, name,
               "no initialised header after " +
                   num(static_cast<std::uint64_t>(o.init_timeout.count())) + " ms (file is " +
                   num(static_cast<std::uint64_t>(st.st_size)) +
                   " bytes): its creator is still initialising, died doing so, or it is not a "
                   "shmring segment");
      return nullptr;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  Geometry g;
  if ((f = validate_header(header, name, o.kind, static_cast<std::uint64_t>(st.st_size), g))) {
    return nullptr;
  }
  // A sparse file (holes in /dev/shm) has no memory behind some pages: the
  // first write to one when /dev/shm is full kills the writer with SIGBUS.
  // Reserve them now, or refuse with a reason. Reading a hole is harmless.
  if (!o.read_only && static_cast<std::uint64_t>(st.st_blocks) * 512 < g.segment_size) {
    if (const int err = sys::fallocate(fd.fd, static_cast<off_t>(g.segment_size)); err != 0) {
      f = fail(err == ENOSPC || err == EFBIG || err == ENOMEM
                   ? make_error_code(errc::no_space)
                   : std::error_code(err, std::system_category()),
               name,
               "the file has " + num(static_cast<std::uint64_t>(st.st_blocks) * 512) + " of its " +
                   num(g.segment_size) +
                   " bytes in memory (it is sparse), and reserving the rest failed: " +
                   std::strerror(err));
      return nullptr;
    }
  }
  auto map = map_segment(fd, name, g, prot, f);
  if (!map) return nullptr;
  map->read_only = o.read_only;
  // The header must not have changed between the check and the mapping.
  if (std::memcmp(map->base, &header, sizeof header) != 0) {
    f = fail(errc::corrupt_header, name, "header changed while the segment was being opened");
    return nullptr;
  }
  // Copied once; a length a peer scribbled is refused, never followed.
  const auto* meta = &reinterpret_cast<const ControlArea*>(map->base)->metadata;
  const std::uint32_t length = atomic::load_relaxed(&meta->length);
  if (length > kMetadataCapacity) {
    f = fail(errc::corrupt_header, name,
             "metadata length " + num(length) + " exceeds the " + num(kMetadataCapacity) +
                 " bytes a segment holds");
    return nullptr;
  }
  map->metadata.assign(reinterpret_cast<const char*>(meta->bytes), length);
  return map;
}

// A sealed memfd: the creator adds the seals once the segment is complete,
// F_SEAL_SEAL last so nobody can take them back off.
constexpr int kSizeSeals = F_SEAL_SHRINK | F_SEAL_GROW;

std::shared_ptr<detail::Mapping> do_create_sealed(std::string_view label, const CreateOptions& o,
                                                  Failure& f) {
  // The label goes into /proc/<pid>/fd links and messages: refuse what would
  // garble them, as for names.
  if ((f = check_name(label))) return nullptr;
  const std::string name = "memfd:" + std::string(strip_slash(label));
  Geometry g;
  process::Identity self;
  if ((f = check_create(name, o, g, self))) return nullptr;
  Fd fd;
  fd.fd = ::memfd_create(name.c_str() + 6, MFD_CLOEXEC | MFD_ALLOW_SEALING);
  if (fd.fd < 0) {
    f = fail_errno(errno, name, std::string("memfd_create failed: ") + std::strerror(errno));
    return nullptr;
  }
  auto map = build(fd, name, g, o.metadata, self, f);
  if (!map) return nullptr;
  if (::fcntl(map->fd, F_ADD_SEALS, kSizeSeals | F_SEAL_SEAL) != 0) {
    f = fail_errno(errno, name, std::string("cannot seal the memfd: ") + std::strerror(errno));
    return nullptr;
  }
  return map;
}

// How a descriptor is named in messages: what /proc says it is
// ("memfd:frames", a path), or its number.
std::string descriptor_name(int fd) {
  char link[48];
  std::snprintf(link, sizeof link, "/proc/self/fd/%d", fd);
  char target[PATH_MAX];
  const ssize_t n = ::readlink(link, target, sizeof target - 1);
  if (n <= 0) return "fd " + num(static_cast<std::uint64_t>(fd));
  std::string t(target, static_cast<std::size_t>(n));
  if (const auto del = t.rfind(" (deleted)"); del != std::string::npos && del + 10 == t.size()) {
    t.resize(del);
  }
  if (t.rfind(kShmDir, 0) == 0) return t.substr(std::strlen(kShmDir));
  if (!t.empty() && t.front() == '/') t.erase(0, 1);
  return t;
}

std::shared_ptr<detail::Mapping> do_open_fd(int given, const OpenOptions& o, Failure& f) {
  const std::string name = descriptor_name(given);
  Fd fd;
  fd.fd = ::fcntl(given, F_DUPFD_CLOEXEC, 0);
  if (fd.fd < 0) {
    f = fail_errno(errno, name,
                   std::string("cannot duplicate the descriptor: ") + std::strerror(errno));
    return nullptr;
  }
  const int flags = ::fcntl(fd.fd, F_GETFL);
  if (!o.read_only && (flags & O_ACCMODE) != O_RDWR) {
    f = fail(errc::permission_denied, name,
             "the descriptor is open read-only; set OpenOptions::read_only to map it so");
    return nullptr;
  }
  if (o.require_sealed) {
    const int seals = ::fcntl(fd.fd, F_GET_SEALS);
    if (seals < 0 || (seals & kSizeSeals) != kSizeSeals) {
      f = fail(errc::not_sealed, name,
               "the descriptor's size is not sealed (F_SEAL_SHRINK | F_SEAL_GROW): whoever "
               "holds it could truncate the segment under this process");
      return nullptr;
    }
  }
  return open_descriptor(fd, name, name, o, f);
}

// Removes the file under `path` if a creator began it and died before
// finishing: the magic is there, the version never came, and nobody holds
// the creator's lock. (create() itself never exposes a
// half-made file; this recovers files left by creators that did.) Only a file
// of our own user is touched, and only if the name still refers to the file
// that was examined.
bool remove_abandoned(const std::string& path) {
  Fd fd;
  fd.fd = sys::open(path.c_str(), O_RDONLY | O_NOFOLLOW | O_CLOEXEC | O_NONBLOCK);
  if (fd.fd < 0) return false;
  struct stat st {};
  if (sys::fstat(fd.fd, &st) != 0 || !S_ISREG(st.st_mode) || st.st_uid != ::geteuid()) {
    return false;
  }
  SegmentHeader h{};
  if (::pread(fd.fd, &h, sizeof h, 0) != static_cast<ssize_t>(sizeof h)) return false;
  if (h.magic != kMagic || h.abi_version != 0) return false;
  if (process::lock_held(fd.fd, lock_byte::kCreator)) return false;
  struct stat now {};
  if (::lstat(path.c_str(), &now) != 0 || now.st_ino != st.st_ino || now.st_dev != st.st_dev) {
    return false;
  }
  return sys::unlink(path.c_str()) == 0;
}

std::shared_ptr<detail::Mapping> do_open_or_create(std::string_view raw, const CreateOptions& o,
                                                   std::chrono::milliseconds init_timeout,
                                                   Failure& f) {
  // A segment may be unlinked between our failed create and our open (or
  // created between a failed open and our create): retry a few times.
  for (int attempt = 0; attempt < 8; ++attempt) {
    auto map = do_create(raw, o, f);
    if (map || f.code != make_error_code(errc::already_exists)) return map;
    if (remove_abandoned(kShmDir + std::string(strip_slash(raw)))) {
      f = {};
      continue;
    }
    OpenOptions oo;
    oo.kind = o.kind;
    oo.init_timeout = init_timeout;
    f = {};
    map = do_open(raw, oo, f);
    if (f.code == make_error_code(errc::not_found)) {
      f = {};
      continue;
    }
    if (!map) return map;
    const Geometry& have = map->geometry;
    if (have.capacity != o.capacity || have.slot_size != o.slot_size || have.format != o.format ||
        have.subscribers != o.subscribers || have.delivery != o.delivery || have.lanes != o.lanes) {
      f = fail(errc::geometry_mismatch, map->name,
               "existing ring has " +
                   describe(have.kind, have.capacity, have.slot_size, have.format, have.subscribers,
                            static_cast<std::uint32_t>(have.delivery), have.lanes) +
                   "; the caller asked for " +
                   describe(o.kind, o.capacity, o.slot_size, o.format, o.subscribers,
                            static_cast<std::uint32_t>(o.delivery), o.lanes));
      return nullptr;
    }
    return map;
  }
  f = fail(errc::not_found, strip_slash(raw),
           "the segment kept appearing and vanishing while opened");
  return nullptr;
}

bool do_unlink(std::string_view raw, Failure& f) {
  if ((f = check_name(raw))) return false;
  const std::string name(strip_slash(raw));
  const std::string path = kShmDir + name;
  if (sys::unlink(path.c_str()) != 0) {
    f = open_failure(errno, name, "unlink " + path);
    return false;
  }
  return true;
}

}  // namespace

std::string Segment::name_problem(std::string_view name) {
  const std::string_view bare = strip_slash(name);
  if (bare.empty()) return "the name is empty";
  if (bare.size() > kMaxNameLength) {
    return "the name has " + num(bare.size()) + " characters, at most " + num(kMaxNameLength) +
           " are allowed";
  }
  if (bare.find('/') != std::string_view::npos) {
    return "the name contains '/' (only one leading '/' is allowed)";
  }
  if (bare.find('\0') != std::string_view::npos) return "the name contains a NUL byte";
  if (bare == "." || bare == "..") return "the name is '.' or '..'";
  if (bare.substr(0, kInitFilePrefix.size()) == kInitFilePrefix) {
    return "names beginning with '" + std::string(kInitFilePrefix) +
           "' are reserved for segments being created";
  }
  return {};
}

Segment Segment::create(std::string_view name, const CreateOptions& options) {
  return Segment(detail::or_throw([&](Failure& f) { return do_create(name, options, f); }));
}
Segment Segment::create(std::string_view name, const CreateOptions& options, std::error_code& ec) {
  return Segment(detail::or_report(ec, [&](Failure& f) { return do_create(name, options, f); }));
}
Segment Segment::open(std::string_view name, const OpenOptions& options) {
  return Segment(detail::or_throw([&](Failure& f) { return do_open(name, options, f); }));
}
Segment Segment::open(std::string_view name, const OpenOptions& options, std::error_code& ec) {
  return Segment(detail::or_report(ec, [&](Failure& f) { return do_open(name, options, f); }));
}
Segment Segment::open_or_create(std::string_view name, const CreateOptions& options,
                                std::chrono::milliseconds init_timeout) {
  return Segment(detail::or_throw(
      [&](Failure& f) { return do_open_or_create(name, options, init_timeout, f); }));
}
Segment Segment::open_or_create(std::string_view name, const CreateOptions& options,
                                std::chrono::milliseconds init_timeout, std::error_code& ec) {
  return Segment(detail::or_report(
      ec, [&](Failure& f) { return do_open_or_create(name, options, init_timeout, f); }));
}
Segment Segment::create_sealed(std::string_view label, const CreateOptions& options) {
  return Segment(detail::or_throw([&](Failure& f) { return do_create_sealed(label, options, f); }));
}
Segment Segment::create_sealed(std::string_view label, const CreateOptions& options,
                               std::error_code& ec) {
  return Segment(
      detail::or_report(ec, [&](Failure& f) { return do_create_sealed(label, options, f); }));
}
Segment Segment::open_fd(int fd, const OpenOptions& options) {
  return Segment(detail::or_throw([&](Failure& f) { return do_open_fd(fd, options, f); }));
}
Segment Segment::open_fd(int fd, const OpenOptions& options, std::error_code& ec) {
  return Segment(detail::or_report(ec, [&](Failure& f) { return do_open_fd(fd, options, f); }));
}
void Segment::unlink(std::string_view name) {
  detail::or_throw([&](Failure& f) { return do_unlink(name, f); });
}
bool Segment::unlink(std::string_view name, std::error_code& ec) {
  return detail::or_report(ec, [&](Failure& f) { return do_unlink(name, f); });
}

namespace {
const detail::Mapping& empty_mapping() {
  static const detail::Mapping m;
  return m;
}
}  // namespace

const std::string& Segment::name() const noexcept { return (map_ ? *map_ : empty_mapping()).name; }
std::string_view Segment::metadata() const noexcept {
  return (map_ ? *map_ : empty_mapping()).metadata;
}
const Geometry& Segment::geometry() const noexcept {
  return (map_ ? *map_ : empty_mapping()).geometry;
}
std::byte* Segment::base() const noexcept { return map_ ? map_->base : nullptr; }
std::size_t Segment::size() const noexcept { return map_ ? map_->size : 0; }
int Segment::fd() const noexcept { return map_ ? map_->fd : -1; }
bool Segment::sealed() const noexcept {
  if (!map_) return false;
  const int seals = ::fcntl(map_->fd, F_GET_SEALS);
  return seals >= 0 && (seals & kSizeSeals) == kSizeSeals;
}
bool Segment::read_only() const noexcept { return map_ && map_->read_only; }
bool Segment::created() const noexcept { return map_ && map_->created; }

}  // namespace shmring
