#include "bridge/stream_state.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <string>

#include "shmring/bridge.hpp"

namespace shmring::bridge::detail {
namespace {

constexpr std::uint64_t kStateMagic = 0x3154534742524853;  // "SHRBGST1" little-endian

struct StateFile {
  std::uint64_t magic;
  std::uint64_t ring_created_ns;
  std::uint64_t stream_created_ns;
  std::uint64_t stream_creator;
  std::uint64_t base_stream_position;
  std::uint64_t base_ring_position;
  std::uint64_t checksum;  // of the fields above, so a torn or edited file is noticed
};
static_assert(sizeof(StateFile) == 56);

std::uint64_t checksum(const StateFile& f) noexcept {
  // FNV-1a over the bytes before the checksum field.
  const auto* p = reinterpret_cast<const unsigned char*>(&f);
  std::uint64_t h = 0xcbf29ce484222325;
  for (std::size_t i = 0; i < offsetof(StateFile, checksum); ++i) {
    h = (h ^ p[i]) * 0x100000001b3;
  }
  return h;
}

[[noreturn]] void fail(const std::string& path, const std::string& what) {
  throw BridgeError(BridgeErrc::ring, "bridge state " + path + ": " + what);
}

}  // namespace

std::string stream_state_path(const std::string& ring) {
  return "/dev/shm/" + ring + ".bridge-state";
}

std::optional<StreamState> load_stream_state(const std::string& ring) {
  const std::string path = stream_state_path(ring);
  const int fd = ::open(path.c_str(), O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
  if (fd < 0) {
    if (errno == ENOENT) return std::nullopt;
    fail(path, std::string("cannot open: ") + std::strerror(errno));
  }
  StateFile f{};
  const ssize_t n = ::read(fd, &f, sizeof f);
  const int read_errno = errno;
  ::close(fd);
  if (n < 0) fail(path, std::string("cannot read: ") + std::strerror(read_errno));
  const std::string remedy =
      "; remove it to start the stream afresh (messages the sender "
      "has not released will be delivered again)";
  if (n != static_cast<ssize_t>(sizeof f)) fail(path, "truncated" + remedy);
  if (f.magic != kStateMagic) fail(path, "not a bridge state file" + remedy);
  if (f.checksum != checksum(f)) fail(path, "checksum mismatch (corrupted)" + remedy);
  return StreamState{f.ring_created_ns, f.stream_created_ns, f.stream_creator,
                     f.base_stream_position, f.base_ring_position};
}

void store_stream_state(const std::string& ring, const StreamState& state) {
  const std::string path = stream_state_path(ring);
  const std::string temporary = path + ".tmp";
  StateFile f{kStateMagic,
              state.ring_created_ns,
              state.stream_created_ns,
              state.stream_creator,
              state.base_stream_position,
              state.base_ring_position,
              0};
  f.checksum = checksum(f);
  ::unlink(temporary.c_str());
  const int fd =
      ::open(temporary.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
  if (fd < 0) fail(temporary, std::string("cannot create: ") + std::strerror(errno));
  const ssize_t n = ::write(fd, &f, sizeof f);
  const int write_errno = errno;
  ::close(fd);
  if (n != static_cast<ssize_t>(sizeof f)) {
    ::unlink(temporary.c_str());
    fail(temporary,
         std::string("cannot write: ") + (n < 0 ? std::strerror(write_errno) : "short write"));
  }
  if (::rename(temporary.c_str(), path.c_str()) != 0) {
    const int rename_errno = errno;
    ::unlink(temporary.c_str());
    fail(path, std::string("cannot replace: ") + std::strerror(rename_errno));
  }
}

}  // namespace shmring::bridge::detail
