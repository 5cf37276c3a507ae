#include "detail/holder_lock.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

#include "detail/sys.hpp"
#include "shmring/process.hpp"

namespace shmring::detail {
namespace {

// The descriptors of live holder locks, for the fork handler. The handler
// runs in the child while the forking thread holds `registry_mutex` (taken in
// the prepare handler), so no other thread can be halfway through a change.
std::mutex registry_mutex;
std::vector<int>& registry() {
  static std::vector<int>* fds = new std::vector<int>;  // never destroyed: used at exit
  return *fds;
}

void enroll(int fd) {
  const std::lock_guard<std::mutex> lock(registry_mutex);
  registry().push_back(fd);
}

void withdraw(int fd) noexcept {
  const std::lock_guard<std::mutex> lock(registry_mutex);
  auto& fds = registry();
  fds.erase(std::remove(fds.begin(), fds.end(), fd), fds.end());
}

struct flock byte_lock(short type, std::uint64_t byte) noexcept {
  struct flock l {};
  l.l_type = type;
  l.l_whence = SEEK_SET;
  l.l_start = static_cast<off_t>(byte);
  l.l_len = 1;
  return l;
}

}  // namespace

void lock_registry_for_fork() noexcept { registry_mutex.lock(); }
void unlock_registry_after_fork() noexcept { registry_mutex.unlock(); }

void drop_inherited_locks() noexcept {
  // Only async-signal-safe calls here: the child of a multithreaded parent.
  const int null_fd = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
  for (const int fd : registry()) {
    if (null_fd >= 0) {
      ::dup3(null_fd, fd, O_CLOEXEC);
    } else {
      ::close(fd);  // rather a free number than the parent's roles held
    }
  }
  if (null_fd >= 0) ::close(null_fd);
}

HolderLock::HolderLock(int fd) noexcept : fd_(fd) {}
HolderLock::HolderLock(HolderLock&& other) noexcept : fd_(std::exchange(other.fd_, -1)) {}
HolderLock& HolderLock::operator=(HolderLock&& other) noexcept {
  if (this != &other) {
    close();
    fd_ = std::exchange(other.fd_, -1);
  }
  return *this;
}
HolderLock::~HolderLock() { close(); }

void HolderLock::close() noexcept {
  if (fd_ < 0) return;
  withdraw(fd_);
  ::close(fd_);  // drops every lock of the description
  fd_ = -1;
}

HolderLock HolderLock::open(int segment_fd, std::string_view segment, Failure& f) {
  char path[48];
  std::snprintf(path, sizeof path, "/proc/self/fd/%d", segment_fd);
  // The magic link leads to the file itself, even one unlinked or passed in
  // as a descriptor; the check below makes sure of it.
  const int fd = sys::open(path, O_RDWR | O_CLOEXEC);
  if (fd < 0) {
    const int err = errno;
    f = fail_errno(err, segment,
                   std::string("cannot open a descriptor of its own to hold the role (") + path +
                       "): " + std::strerror(err));
    return {};
  }
  HolderLock lock(fd);
  struct stat a {
  }, b{};
  if (sys::fstat(segment_fd, &a) != 0 || sys::fstat(fd, &b) != 0 || a.st_ino != b.st_ino ||
      a.st_dev != b.st_dev) {
    f = fail(std::make_error_code(std::errc::no_such_device), segment,
             std::string(path) + " does not lead to the segment's file");
    return {};
  }
  enroll(fd);
  return lock;
}

int set_byte_lock(int fd, short type, std::uint64_t byte) noexcept {
  struct flock l = byte_lock(type, byte);
  if (::fcntl(fd, F_OFD_SETLK, &l) == 0) return 0;
  return errno == EACCES ? EAGAIN : errno;
}

Failure identify_self(std::string_view segment, std::string_view as_what, process::Identity& out) {
  const std::optional<process::Identity> self = process::self();
  if (!self) {
    const int err = errno != 0 ? errno : ENOENT;
    return fail_errno(err, segment,
                      "cannot read /proc/self/stat to record " + std::string(as_what) + ": " +
                          std::strerror(err));
  }
  out = *self;
  return {};
}

int HolderLock::try_lock(std::uint64_t byte) noexcept { return set_byte_lock(fd_, F_WRLCK, byte); }

void HolderLock::unlock(std::uint64_t byte) noexcept { (void)set_byte_lock(fd_, F_UNLCK, byte); }

}  // namespace shmring::detail

namespace shmring::process {

bool lock_held(int fd, std::uint64_t byte) noexcept {
  struct flock l = shmring::detail::byte_lock(F_WRLCK, byte);
  if (::fcntl(fd, F_OFD_GETLK, &l) != 0) return true;
  return l.l_type != F_UNLCK;
}

}  // namespace shmring::process
