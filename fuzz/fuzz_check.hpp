// Helpers shared by the fuzz targets: bounds checks, whose violation traps so
// that a fuzzer reports it as a crash and a replay fails, and the file in
// /dev/shm through which the whole-segment targets hand their input to open.
#pragma once

#include <fcntl.h>
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace shmring::fuzz {

// Traps unless [p, p + n) lies inside [lo, hi).
inline void check_inside(const void* p, std::uint64_t n, const void* lo, const void* hi) {
  const auto a = reinterpret_cast<std::uintptr_t>(p);
  const auto l = reinterpret_cast<std::uintptr_t>(lo);
  const auto h = reinterpret_cast<std::uintptr_t>(hi);
  if (a < l || a > h || n > h - a) __builtin_trap();
}

inline void check(bool ok) {
  if (!ok) __builtin_trap();
}

// Reads every byte of [p, p + n) so that a sanitizer sees the access.
inline std::uint64_t touch(const std::byte* p, std::uint64_t n) {
  std::uint64_t sum = 0;
  for (std::uint64_t i = 0; i < n; ++i) sum += static_cast<std::uint8_t>(p[i]);
  return sum;
}

// An input written whole as the segment file /dev/shm/<prefix><pid> (one name
// per process, so parallel fuzzing jobs do not collide), to be opened by
// name(); the file is unlinked again when this goes out of scope, so nothing
// is left in /dev/shm (except after a crash). ok() is false where the file
// could not be written whole.
class SegmentFile {
 public:
  SegmentFile(std::string_view prefix, const std::uint8_t* data, std::size_t size)
      : name_(std::string(prefix) + std::to_string(::getpid())), path_("/dev/shm/" + name_) {
    const int fd =
        ::open(path_.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0600);
    if (fd < 0) return;
    std::size_t done = 0;
    while (done < size) {
      const ssize_t n = ::write(fd, data + done, size - done);
      if (n <= 0) break;
      done += static_cast<std::size_t>(n);
    }
    ::close(fd);
    ok_ = done == size;
  }
  ~SegmentFile() { ::unlink(path_.c_str()); }
  SegmentFile(const SegmentFile&) = delete;
  SegmentFile& operator=(const SegmentFile&) = delete;

  bool ok() const noexcept { return ok_; }
  const std::string& name() const noexcept { return name_; }

 private:
  std::string name_;
  std::string path_;
  bool ok_ = false;
};

}  // namespace shmring::fuzz
