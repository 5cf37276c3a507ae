#include "bridge/files.hpp"

#include <fcntl.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstring>

namespace shmring::bridge::detail {
namespace {

std::string errno_text(int err) { return std::strerror(err); }

const char* file_type(mode_t mode) {
  if (S_ISDIR(mode)) return "a directory";
  if (S_ISFIFO(mode)) return "a FIFO";
  if (S_ISSOCK(mode)) return "a socket";
  if (S_ISCHR(mode) || S_ISBLK(mode)) return "a device";
  return "a special file";
}

class Fd {
 public:
  explicit Fd(int fd) : fd_(fd) {}
  ~Fd() {
    if (fd_ >= 0) ::close(fd_);
  }
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
  int get() const noexcept { return fd_; }
  // Closes now, reporting the error a delayed write may only show here.
  int close() noexcept {
    const int rc = ::close(fd_);
    fd_ = -1;
    return rc;
  }

 private:
  int fd_;
};

}  // namespace

std::optional<std::string> read_own_file(std::string_view label, const std::string& path,
                                         std::size_t max_bytes, Secrecy secrecy, BridgeErrc code) {
  const auto fail = [&](const std::string& what) -> BridgeError {
    return BridgeError(code, std::string(label) + " " + path + ": " + what);
  };
  // O_NONBLOCK: opening a FIFO for reading would otherwise wait for a writer
  // that may never come.
  Fd fd(::open(path.c_str(), O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC | O_NOCTTY));
  if (fd.get() < 0) {
    if (errno == ENOENT) return std::nullopt;
    if (errno == ELOOP) throw fail("is a symbolic link; only a regular file is accepted");
    throw fail("cannot open: " + errno_text(errno));
  }
  struct stat st {};
  if (::fstat(fd.get(), &st) != 0) throw fail("cannot stat: " + errno_text(errno));
  if (!S_ISREG(st.st_mode)) {
    throw fail(std::string("is ") + file_type(st.st_mode) + ", not a regular file");
  }
  if (st.st_uid != ::geteuid()) {
    throw fail("belongs to uid " + std::to_string(st.st_uid) + ", not to this user (uid " +
               std::to_string(::geteuid()) + ")");
  }
  if (secrecy == Secrecy::secret && (st.st_mode & 077) != 0) {
    char mode[8];
    std::snprintf(mode, sizeof mode, "%04o", static_cast<unsigned>(st.st_mode & 07777));
    throw fail(std::string("may be accessed by group or others (mode ") + mode +
               "); make it private: chmod 600 " + path);
  }
  if (static_cast<std::uint64_t>(st.st_size) > max_bytes) {
    throw fail("is " + std::to_string(st.st_size) + " bytes, more than the " +
               std::to_string(max_bytes) + " expected");
  }
  std::string contents(static_cast<std::size_t>(st.st_size), '\0');
  std::size_t got = 0;
  while (got < contents.size()) {
    const ssize_t n = ::read(fd.get(), contents.data() + got, contents.size() - got);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) throw fail("cannot read: " + errno_text(errno));
    if (n == 0) break;
    got += static_cast<std::size_t>(n);
  }
  contents.resize(got);
  return contents;
}

void replace_file(std::string_view label, const std::string& path, std::string_view contents,
                  mode_t mode, BridgeErrc code) {
  const auto error = [&](const std::string& file, const std::string& what) {
    return BridgeError(code, std::string(label) + " " + file + ": " + what);
  };
  // A name nobody can predict, created exclusively: whatever another user
  // planted in the directory (a link to a file of ours, a FIFO) is never
  // opened, and a collision just draws another name.
  std::string temporary;
  int raw = -1;
  for (int attempt = 0; raw < 0 && attempt < 100; ++attempt) {
    std::uint64_t r = 0;
    if (::getrandom(&r, sizeof r, 0) != static_cast<ssize_t>(sizeof r)) {
      throw error(path, "no random bytes for a temporary name: " + errno_text(errno));
    }
    char suffix[24];
    std::snprintf(suffix, sizeof suffix, ".%016llx", static_cast<unsigned long long>(r));
    temporary = path + suffix;
    raw = ::open(temporary.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, mode);
    if (raw < 0 && errno != EEXIST) break;
  }
  if (raw < 0) throw error(temporary, "cannot create: " + errno_text(errno));
  Fd fd(raw);
  const auto fail = [&](const std::string& file, const std::string& what) {
    ::unlink(temporary.c_str());
    return error(file, what);
  };
  std::size_t done = 0;
  while (done < contents.size()) {
    const ssize_t n = ::write(fd.get(), contents.data() + done, contents.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      throw fail(temporary, "cannot write: " + (n < 0 ? errno_text(errno) : "nothing written"));
    }
    done += static_cast<std::size_t>(n);
  }
  if (fd.close() != 0) throw fail(temporary, "cannot write: " + errno_text(errno));
  if (::rename(temporary.c_str(), path.c_str()) != 0) {
    throw fail(path, "cannot replace: " + errno_text(errno));
  }
}

}  // namespace shmring::bridge::detail

namespace shmring::bridge {

std::string read_key_file(const std::string& path) {
  constexpr std::size_t kMinKey = 16;
  std::optional<std::string> key =
      detail::read_own_file("key file", path, 4096, detail::Secrecy::secret, BridgeErrc::config);
  if (!key) throw BridgeError(BridgeErrc::config, "key file " + path + ": does not exist");
  if (key->size() < kMinKey) {
    throw BridgeError(BridgeErrc::config,
                      "key file " + path + ": " + std::to_string(key->size()) +
                          " bytes; a key needs at least " + std::to_string(kMinKey) +
                          " (make one with: head -c 32 /dev/urandom > " + path + ")");
  }
  return *std::move(key);
}

}  // namespace shmring::bridge
