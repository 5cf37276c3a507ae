#include "bridge/stream_state.hpp"

#include <cstring>
#include <string>

#include "bridge/files.hpp"
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
  // Another user may plant anything under this name in /dev/shm: only our
  // own regular file is a state.
  const std::optional<std::string> bytes =
      read_own_file("bridge state", path, sizeof(StateFile), Secrecy::shared, BridgeErrc::ring);
  if (!bytes) return std::nullopt;
  StateFile f{};
  const std::string remedy =
      "; remove it to start the stream afresh (messages the sender "
      "has not released will be delivered again)";
  if (bytes->size() != sizeof f) fail(path, "truncated" + remedy);
  std::memcpy(&f, bytes->data(), sizeof f);
  if (f.magic != kStateMagic) fail(path, "not a bridge state file" + remedy);
  if (f.checksum != checksum(f)) fail(path, "checksum mismatch (corrupted)" + remedy);
  return StreamState{f.ring_created_ns, f.stream_created_ns, f.stream_creator,
                     f.base_stream_position, f.base_ring_position};
}

void store_stream_state(const std::string& ring, const StreamState& state) {
  StateFile f{kStateMagic,
              state.ring_created_ns,
              state.stream_created_ns,
              state.stream_creator,
              state.base_stream_position,
              state.base_ring_position,
              0};
  f.checksum = checksum(f);
  replace_file("bridge state", stream_state_path(ring),
               std::string_view(reinterpret_cast<const char*>(&f), sizeof f), 0600,
               BridgeErrc::ring);
}

}  // namespace shmring::bridge::detail
