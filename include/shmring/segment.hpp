// A named shared-memory segment in /dev/shm holding one ring.
//
// create(): made under a private name (O_CREAT|O_EXCL|O_NOFOLLOW, owner-only),
// memory reserved up front with posix_fallocate (a full /dev/shm fails here,
// never as a SIGBUS later), header and slots initialised, the ABI version
// stored last, the final mode set, and only then linked to its name, so a
// creator killed half-way never leaves a half-made ring under the name.
// open(): refuses symbolic links and (unless asked) other users' files,
// validates magic, ABI version, ring kind, geometry and the file's real size,
// waiting (bounded) for a creator that has not finished. The mapping lives as
// long as the Segment or any handle attached to it.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <system_error>

#include "shmring/layout.hpp"

namespace shmring {

// Names follow shm_open(3): an optional leading '/', then 1 to 255
// characters, none of them '/', and neither "." nor "..". Names beginning
// with kInitFilePrefix are the library's own.
inline constexpr std::size_t kMaxNameLength = 255;

// create() initialises a segment in /dev/shm under a private name made of this
// prefix and 128 random bits, then links it to its own name. The creator
// holds a lock on the file's first byte meanwhile (layout.hpp, lock_byte); a
// creator killed before linking leaves only such a file, unlocked, which
// `ring-inspect gc` removes.
inline constexpr std::string_view kInitFilePrefix = ".shmring-init.";

struct CreateOptions {
  RingKind kind = RingKind::spsc;
  std::uint64_t capacity = 1024;   // slots, a power of two
  std::uint64_t slot_size = 1024;  // largest message, bytes
  // Final permission bits, applied after initialisation (umask does not
  // apply). 0600 keeps the ring to its owner; 0660 shares it with the group.
  mode_t mode = 0600;
  // plain, or low_latency (SPSC, copy calls, slot_size <= 4096): see layout.hpp
  SlotFormat format = SlotFormat::plain;
  // Broadcast rings only (kind == RingKind::broadcast): how many subscribers
  // may read at once, 1..kMaxSubscribers (0, the default, is refused for a
  // broadcast ring and required for the others), and what the producer does
  // about a subscriber that falls a lap behind (layout.hpp, Delivery).
  std::uint32_t subscribers = 0;
  Delivery delivery = Delivery::reliable;
  // MPMC rings only (mpmc_ring.hpp, "Lanes"): 0, the default, for one lane
  // that any number of producers share (each claim a CAS on its counter);
  // 1..kMaxLanes (a power of two, at most capacity) for that many lanes of
  // capacity / lanes slots, each owned by one producer, which claims with a
  // plain store: producers on different lanes never contend, and the ring
  // takes at most `lanes` producers at once. 0 for the other kinds.
  std::uint32_t lanes = 0;
  // What the messages are, for every opener to read (Segment::metadata()):
  // up to kMetadataCapacity bytes, opaque to the library. The Python module
  // keeps a typed ring's dtype and shape here.
  std::string metadata;
};

struct OpenOptions {
  std::optional<RingKind> kind;  // refuse a segment of the other kind
  // How long to wait for a creator that has not finished initialising.
  std::chrono::milliseconds init_timeout{1000};
  bool read_only = false;  // map PROT_READ (inspection); roles cannot attach
  // A segment owned by another user is refused unless this is set: whoever
  // owns it could have planted it under a name this process trusts.
  bool allow_foreign_owner = false;
  // open_fd: refuse a descriptor whose size is not sealed (see create_sealed).
  bool require_sealed = false;
};

namespace detail {
struct Mapping;
}

class Segment {
 public:
  Segment() noexcept = default;
  Segment(Segment&&) noexcept = default;
  Segment& operator=(Segment&&) noexcept = default;
  Segment(const Segment&) = delete;
  Segment& operator=(const Segment&) = delete;
  ~Segment() = default;

  static Segment create(std::string_view name, const CreateOptions& options);
  static Segment create(std::string_view name, const CreateOptions& options, std::error_code& ec);

  static Segment open(std::string_view name, const OpenOptions& options = {});
  static Segment open(std::string_view name, const OpenOptions& options, std::error_code& ec);

  // Opens the segment if it exists (it must have the requested kind and
  // geometry), creates it otherwise; created() tells which happened. A file
  // under the name that was never initialised and whose recorded creator is
  // dead is replaced.
  static Segment open_or_create(std::string_view name, const CreateOptions& options,
                                std::chrono::milliseconds init_timeout = std::chrono::seconds(1));
  static Segment open_or_create(std::string_view name, const CreateOptions& options,
                                std::chrono::milliseconds init_timeout, std::error_code& ec);

  // A segment with no name: a memfd sealed against shrinking and growing
  // (F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL), so that no process, however
  // it got the descriptor, can truncate it and kill the processes mapping it
  // with SIGBUS, as a peer with write access to a named segment can. Other
  // processes get it as a descriptor: inherited, or passed over a Unix socket
  // (send_segment / receive_segment in segment_passing.hpp), and map it with
  // open_fd. `label` (the rules of names apply) shows in messages and in
  // /proc/<pid>/fd; options.mode does not apply.
  static Segment create_sealed(std::string_view label, const CreateOptions& options);
  static Segment create_sealed(std::string_view label, const CreateOptions& options,
                               std::error_code& ec);

  // Maps the segment behind a descriptor, with every check of open(); the
  // Segment keeps a duplicate, the caller keeps `fd`.
  static Segment open_fd(int fd, const OpenOptions& options = {});
  static Segment open_fd(int fd, const OpenOptions& options, std::error_code& ec);

  // Removes the name; processes that have it mapped keep their mapping.
  static void unlink(std::string_view name);
  static bool unlink(std::string_view name, std::error_code& ec);

  // Checks a name against the rules above; "" if fine, else why not.
  static std::string name_problem(std::string_view name);

  explicit operator bool() const noexcept { return map_ != nullptr; }
  const std::string& name() const noexcept;  // without the leading '/'
  const Geometry& geometry() const noexcept;
  // The creator's metadata (CreateOptions::metadata), as read at open.
  std::string_view metadata() const noexcept;
  std::byte* base() const noexcept;
  std::size_t size() const noexcept;
  // The segment file's descriptor, open as long as the Segment (or a handle
  // attached to it) lives; close-on-exec. Do not close it or lock through it.
  int fd() const noexcept;
  // Its size is sealed: nobody can truncate it (create_sealed).
  bool sealed() const noexcept;
  bool read_only() const noexcept;
  bool created() const noexcept;  // this call created the file

  // Keeps the mapping alive for as long as the returned token lives; role
  // handles and language bindings hold one.
  std::shared_ptr<const void> lifetime() const noexcept { return map_; }
  // Another Segment of the same mapping (no new descriptor or mapping): role
  // handles keep one to open their event waiter when first asked for it.
  Segment share() const noexcept { return Segment(map_); }

 private:
  explicit Segment(std::shared_ptr<const detail::Mapping> map) noexcept : map_(std::move(map)) {}
  std::shared_ptr<const detail::Mapping> map_;
};

}  // namespace shmring
