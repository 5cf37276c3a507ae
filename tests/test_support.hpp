// Helpers shared by the test suites: unique segment names, cleanup of
// /dev/shm, raw access to the segment file, and fork() helpers.
#pragma once

#include <dirent.h>
#include <fcntl.h>
#include <gtest/gtest.h>
#include <poll.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <new>
#include <optional>
#include <ostream>
#include <span>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "shmring/layout.hpp"
#include "shmring/process.hpp"
#include "shmring/segment.hpp"
#include "shmring/status.hpp"

namespace shmring {
// Readable statuses in assertion messages (found by ADL).
inline void PrintTo(Status s, std::ostream* os) { *os << to_string(s); }
}  // namespace shmring

namespace shmring::test {

inline constexpr const char* kShmDir = "/dev/shm/";

// Every name a test makes starts with this, followed by the pid, so a leak
// check can find (only) this process's files.
// The CPU time the calling thread used so far: what a waiting call costs,
// whatever else the machine runs meanwhile.
inline std::chrono::nanoseconds thread_cpu_time() {
  timespec ts{};
  ::clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return std::chrono::seconds(ts.tv_sec) + std::chrono::nanoseconds(ts.tv_nsec);
}

inline std::string name_prefix() { return "shmring_test_" + std::to_string(::getpid()) + "_"; }

// "shmring_test_<pid>_<suite>_<test>[_<suffix>]", unique per process, test and
// suffix; characters outside [A-Za-z0-9_.-] (a parameterised test's '/')
// become '_'. Kept well below the 255-character limit.
inline std::string unique_name(std::string_view suffix = {}) {
  std::string name = name_prefix();
  if (const auto* info = ::testing::UnitTest::GetInstance()->current_test_info()) {
    name += info->test_suite_name();
    name += '_';
    name += info->name();
  } else {
    name += "global";
  }
  if (!suffix.empty()) {
    name += '_';
    name += suffix;
  }
  for (char& c : name) {
    const bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                    c == '_' || c == '-' || c == '.';
    if (!ok) c = '_';
  }
  if (name.size() > 200) name.resize(200);
  return name;
}

inline std::string shm_path(std::string_view name) {
  if (!name.empty() && name.front() == '/') name.remove_prefix(1);
  return std::string(kShmDir) + std::string(name);
}

inline bool shm_exists(std::string_view name) {
  struct stat st {};
  return ::lstat(shm_path(name).c_str(), &st) == 0;
}

// Unlinks a /dev/shm entry when the scope ends, whatever the test did.
class ShmGuard {
 public:
  explicit ShmGuard(std::string name) : name_(std::move(name)) { remove(); }
  ShmGuard(const ShmGuard&) = delete;
  ShmGuard& operator=(const ShmGuard&) = delete;
  ~ShmGuard() { remove(); }
  const std::string& name() const noexcept { return name_; }
  std::string path() const { return shm_path(name_); }
  operator const std::string&() const noexcept { return name_; }  // NOLINT: convenience

 private:
  void remove() const { ::unlink(shm_path(name_).c_str()); }
  std::string name_;
};

// A unique name plus its guard: `UniqueShm shm; Segment::create(shm.name(), ...)`.
class UniqueShm : public ShmGuard {
 public:
  explicit UniqueShm(std::string_view suffix = {}) : ShmGuard(unique_name(suffix)) {}
};

// A new SPSC or MPMC segment `name` (a UniqueShm will do) of `capacity` slots
// of `slot_size` bytes (MPMC: in `lanes` owned lanes, or 0 for one shared).
inline Segment make_ring(const std::string& name, RingKind kind, std::uint64_t capacity,
                         std::uint64_t slot_size = 64, SlotFormat format = SlotFormat::plain,
                         std::uint32_t lanes = 0) {
  CreateOptions o;
  o.kind = kind;
  o.capacity = capacity;
  o.slot_size = slot_size;
  o.format = format;
  o.lanes = lanes;
  return Segment::create(name, o);
}

// ---- raw file access (bypassing the library) --------------------------------

inline std::int64_t file_size(std::string_view name) {
  struct stat st {};
  if (::stat(shm_path(name).c_str(), &st) != 0) return -1;
  return static_cast<std::int64_t>(st.st_size);
}

inline mode_t file_mode(std::string_view name) {
  struct stat st {};
  if (::stat(shm_path(name).c_str(), &st) != 0) return 0;
  return st.st_mode & 07777;
}

// Writes `bytes` at `offset` of the segment file. Returns false on failure.
inline bool write_file_at(std::string_view name, std::uint64_t offset,
                          std::span<const std::byte> bytes) {
  const int fd = ::open(shm_path(name).c_str(), O_RDWR | O_CLOEXEC | O_NOFOLLOW);
  if (fd < 0) return false;
  const ssize_t n = ::pwrite(fd, bytes.data(), bytes.size(), static_cast<off_t>(offset));
  ::close(fd);
  return n == static_cast<ssize_t>(bytes.size());
}

template <class T>
bool write_value_at(std::string_view name, std::uint64_t offset, const T& value) {
  return write_file_at(name, offset, std::as_bytes(std::span<const T, 1>(&value, 1)));
}

inline bool read_file_at(std::string_view name, std::uint64_t offset, std::span<std::byte> out) {
  const int fd = ::open(shm_path(name).c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
  if (fd < 0) return false;
  const ssize_t n = ::pread(fd, out.data(), out.size(), static_cast<off_t>(offset));
  ::close(fd);
  return n == static_cast<ssize_t>(out.size());
}

template <class T>
T read_value_at(std::string_view name, std::uint64_t offset) {
  T v{};
  EXPECT_TRUE(read_file_at(name, offset, std::as_writable_bytes(std::span<T, 1>(&v, 1))));
  return v;
}

inline bool truncate_file(std::string_view name, std::uint64_t size) {
  const int fd = ::open(shm_path(name).c_str(), O_RDWR | O_CLOEXEC | O_NOFOLLOW);
  if (fd < 0) return false;
  const int rc = ::ftruncate(fd, static_cast<off_t>(size));
  ::close(fd);
  return rc == 0;
}

// Creates a plain file in /dev/shm (not made by shmring) with `content`.
inline bool make_plain_file(std::string_view name, std::span<const std::byte> content,
                            mode_t mode = 0600) {
  const int fd = ::open(shm_path(name).c_str(), O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, mode);
  if (fd < 0) return false;
  const ssize_t n = content.empty() ? 0 : ::write(fd, content.data(), content.size());
  ::close(fd);
  return n == static_cast<ssize_t>(content.size());
}

// ---- bytes ------------------------------------------------------------------

inline std::span<const std::byte> as_bytes(std::string_view s) {
  return std::as_bytes(std::span<const char>(s.data(), s.size()));
}

inline std::string to_string(std::span<const std::byte> b) {
  return std::string(reinterpret_cast<const char*>(b.data()), b.size());
}

// A message of one 8-byte word (the suites that only count messages send
// their sequence number so), and the word back from the front of a message
// (0 past its end).
inline std::array<std::byte, 8> word_bytes(std::uint64_t v) {
  std::array<std::byte, 8> b{};
  std::memcpy(b.data(), &v, 8);
  return b;
}
inline std::uint64_t bytes_word(std::span<const std::byte> b) {
  std::uint64_t v = 0;
  std::memcpy(&v, b.data(), std::min<std::size_t>(8, b.size()));
  return v;
}

// ---- waiting for a condition -------------------------------------------------

// Whether `fd` becomes readable within `timeout` (EINTR retried).
inline bool readable(int fd, std::chrono::milliseconds timeout) {
  pollfd p{fd, POLLIN, 0};
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  for (;;) {
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        deadline - std::chrono::steady_clock::now());
    const int rc = ::poll(&p, 1, static_cast<int>(std::max<std::int64_t>(left.count(), 0)));
    if (rc > 0) return (p.revents & POLLIN) != 0;
    if (rc == 0) return false;
    if (errno != EINTR) return false;
  }
}

// Polls `pred` every `interval` until it holds (true) or `timeout` passes
// (false): for a condition another thread or process makes true, with no
// event to wait on.
template <class Pred>
bool poll_until(Pred&& pred, std::chrono::nanoseconds timeout,
                std::chrono::nanoseconds interval = std::chrono::microseconds(100)) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (!pred()) {
    if (std::chrono::steady_clock::now() >= deadline) return false;
    std::this_thread::sleep_for(interval);
  }
  return true;
}

// ---- a segment's bytes on the heap -------------------------------------------

// Memory laid out and initialised as Segment::create would, for driving the
// algorithm views (SpscView, MpmcView) without /dev/shm.
class HeapSegment {
 public:
  HeapSegment(RingKind kind, std::uint64_t capacity, std::uint64_t slot_size) {
    if (compute_geometry(kind, capacity, slot_size, geometry_) != GeometryCheck::ok) {
      ADD_FAILURE() << "bad geometry for HeapSegment";
      return;
    }
    // Exactly segment_size bytes, so that under ASan a byte past the last
    // slot is a heap overflow.
    const std::size_t bytes = static_cast<std::size_t>(geometry_.segment_size);
    base_ = static_cast<std::byte*>(::operator new (bytes, std::align_val_t{kBlockSize}));
    std::memset(base_, 0, bytes);
    auto* h = &reinterpret_cast<ControlArea*>(base_)->header;
    h->magic = kMagic;
    h->abi_version = kAbiVersion;
    h->ring_kind = static_cast<std::uint32_t>(kind);
    h->capacity = geometry_.capacity;
    h->slot_size = geometry_.slot_size;
    h->slot_stride = geometry_.slot_stride;
    h->slots_offset = geometry_.slots_offset;
    h->segment_size = geometry_.segment_size;
    for (std::uint64_t i = 0; i < capacity; ++i) trailer(i)->released = i;
  }
  HeapSegment(const HeapSegment&) = delete;
  HeapSegment& operator=(const HeapSegment&) = delete;
  ~HeapSegment() {
    if (base_ != nullptr) ::operator delete (base_, std::align_val_t{kBlockSize});
  }
  std::byte* base() const noexcept { return base_; }
  std::size_t size() const noexcept { return static_cast<std::size_t>(geometry_.segment_size); }
  const Geometry& geometry() const noexcept { return geometry_; }
  ControlArea* control() const noexcept { return reinterpret_cast<ControlArea*>(base_); }
  SlotTrailer* trailer(std::uint64_t position) const noexcept {
    return reinterpret_cast<SlotTrailer*>(base_ + geometry_.slots_offset +
                                          (position & geometry_.mask()) * geometry_.slot_stride +
                                          geometry_.trailer_offset());
  }

 private:
  Geometry geometry_;
  std::byte* base_ = nullptr;
};

// The trailer of `position` in a mapped segment (white-box access).
inline SlotTrailer* trailer_of(std::byte* base, const Geometry& g, std::uint64_t position) {
  return reinterpret_cast<SlotTrailer*>(base + g.slots_offset +
                                        (position & g.mask()) * g.slot_stride + g.trailer_offset());
}
inline ControlArea* control_of(std::byte* base) { return reinterpret_cast<ControlArea*>(base); }

// A message that names its sequence number and has a size that varies with it
// (0 .. slot_size bytes), so order, loss, duplication and length are checked.
inline std::string message(std::uint64_t seq, std::uint64_t slot_size) {
  std::string m = "#" + std::to_string(seq) + ":";
  const std::size_t size = static_cast<std::size_t>(seq % (slot_size + 1));
  if (m.size() > size) return m.substr(0, size);
  m.resize(size, static_cast<char>('a' + seq % 26));
  return m;
}

// A ring of `capacity` slots with both roles attached: Producer and Consumer
// are SpscProducer/SpscConsumer or MpmcProducer/MpmcConsumer, as Kind says.
// The roles go before the segment is unlinked.
template <RingKind Kind, class Producer, class Consumer>
struct RingFixture {
  explicit RingFixture(std::uint64_t capacity = 8, std::uint64_t slot_size = 64,
                       std::string_view suffix = {}, SlotFormat format = SlotFormat::plain)
      : shm(suffix),
        segment(make_ring(shm.name(), Kind, capacity, slot_size, format)),
        tx(Producer::attach(segment)),
        rx(Consumer::attach(segment)) {}
  ~RingFixture() {
    tx = Producer();
    rx = Consumer();
    Segment::unlink(shm.name());
  }
  RingFixture(const RingFixture&) = delete;
  RingFixture& operator=(const RingFixture&) = delete;

  ControlArea* control() const { return control_of(segment.base()); }
  SlotTrailer* trailer(std::uint64_t pos) const {
    return trailer_of(segment.base(), segment.geometry(), pos);
  }

  Status push(std::string_view m) { return tx.try_push(as_bytes(m)); }
  // The next message (popped into a buffer of the slot size), or nothing
  // with the status that try_pop returned.
  std::optional<std::string> pop(Status* status = nullptr) {
    std::vector<std::byte> buf(segment.geometry().slot_size);
    std::size_t size = ~std::size_t{0};
    const Status s = rx.try_pop(buf, size);
    if (status != nullptr) *status = s;
    if (s != Status::ok) return std::nullopt;
    if (size > buf.size()) {
      ADD_FAILURE() << "try_pop reported " << size << " bytes, more than the buffer";
      return std::nullopt;
    }
    return to_string({buf.data(), size});
  }
  // Nothing to pop: try_pop says would_block. `why` goes with a failure.
  void expect_empty(const std::string& why = {}) {
    Status s = Status::ok;
    EXPECT_FALSE(pop(&s)) << why;
    EXPECT_EQ(s, Status::would_block) << why;
  }

  UniqueShm shm;
  Segment segment;
  Producer tx;
  Consumer rx;
};

// ---- the creator's lock (layout.hpp, lock_byte::kCreator) -------------------

// Whether anybody holds the creator's lock on the file at `path`.
inline bool creator_locked(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
  if (fd < 0) return false;
  const bool locked = process::lock_held(fd, lock_byte::kCreator);
  ::close(fd);
  return locked;
}

// Holds the creator's lock on a file, as a creator at work does, until
// released or destroyed.
class CreatorLock {
 public:
  explicit CreatorLock(const std::string& path)
      : fd_(::open(path.c_str(), O_RDWR | O_CLOEXEC | O_NOFOLLOW)) {
    struct flock l {};
    l.l_type = F_WRLCK;
    l.l_whence = SEEK_SET;
    l.l_start = static_cast<off_t>(lock_byte::kCreator);
    l.l_len = 1;
    held_ = fd_ >= 0 && ::fcntl(fd_, F_OFD_SETLK, &l) == 0;
  }
  ~CreatorLock() { release(); }
  CreatorLock(const CreatorLock&) = delete;
  CreatorLock& operator=(const CreatorLock&) = delete;
  bool held() const { return held_; }
  void release() {
    if (fd_ >= 0) ::close(fd_);
    fd_ = -1;
    held_ = false;
  }

 private:
  int fd_;
  bool held_ = false;
};

// ---- processes --------------------------------------------------------------

// Waits for a child; its exit status, or -1 if it did not exit normally.
inline int wait_child(pid_t pid) {
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0) {
    if (errno != EINTR) return -1;
  }
  return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

// Runs `body` in a fork()ed child, which leaves with _exit(body()) (no
// destructors, no atexit handlers: like a crash). Returns the child's exit
// status, or -1 if it did not exit normally.
template <class Body>
int run_in_child(Body&& body) {
  const pid_t pid = ::fork();
  if (pid < 0) return -1;
  if (pid == 0) {
    int rc = 99;
    try {
      rc = body();
    } catch (...) {
      rc = 98;
    }
    ::_exit(rc);
  }
  return wait_child(pid);
}

// Fails the test program if a test left a segment of this process in /dev/shm.
// Only names made since this program started count: pids wrap (at 32768 by
// default), and a killed earlier program whose pid this one reuses may have
// left names with the same prefix.
class ShmLeakCheck : public ::testing::Environment {
 public:
  void SetUp() override { ::clock_gettime(CLOCK_REALTIME, &start_); }
  void TearDown() override {
    const std::string prefix = name_prefix();
    std::vector<std::string> leaked;
    if (DIR* d = ::opendir(kShmDir)) {
      while (const dirent* e = ::readdir(d)) {
        if (std::strncmp(e->d_name, prefix.c_str(), prefix.size()) != 0) continue;
        struct stat st {};
        if (::stat(shm_path(e->d_name).c_str(), &st) != 0) continue;
        // File times come from the kernel's coarse clock, a tick behind:
        // a second of slack, far less than pids take to wrap.
        const bool ours = st.st_ctim.tv_sec + 1 >= start_.tv_sec;
        if (ours) leaked.emplace_back(e->d_name);
      }
      ::closedir(d);
    }
    for (const auto& name : leaked) {
      ADD_FAILURE() << "test left " << kShmDir << name << " behind";
      ::unlink(shm_path(name).c_str());
    }
  }

 private:
  timespec start_{};
};

inline ::testing::Environment* const kShmLeakCheck =
    ::testing::AddGlobalTestEnvironment(new ShmLeakCheck);

}  // namespace shmring::test
