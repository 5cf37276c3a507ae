// Waiting for a ring in an event loop: a descriptor that poll, epoll, select,
// asio, libuv or Qt can wait on, readable when a handle may make progress
// (data for a consumer, room for a producer), and a WaitSet that waits on
// many of them (and on any other descriptor) at once.
//
// The mechanism (docs/design.md, "Events"):
//
//   endpoint   each waiter makes a FIFO in /dev/shm, kEventFifoPrefix + 32
//              random hex digits, mode 0600 plus the segment's group/other
//              bits, and keeps it open O_RDWR|O_NONBLOCK. A publisher opens
//              it by name (O_RDWR|O_NOFOLLOW|O_NONBLOCK: a dead reader never
//              raises SIGPIPE, a full pipe never blocks), checks that it is
//              a FIFO owned by the waiter's uid, keeps the descriptor, and
//              writes one byte to signal. Chosen over a Unix datagram socket
//              (a send costs 1.5x a write and wakes later) and an eventfd
//              (as cheap as a FIFO, but it reaches another process only over
//              a socket, which needs the waiter to serve connections: an
//              event loop that never runs cannot hand it out); measured in
//              bench/event_signal_bench.cpp.
//   table      the waiter holds an entry of the segment's table for its kind
//              of progress (layout.hpp, EventTable), taken like a claim
//              record: by a lock the kernel drops at its death.
//   arming     to wait, the waiter raises the side's futex sleeper count
//              (WaitBlock::waiters), sets its bit in `armed`, then re-checks
//              the ring (a full fence between). A publisher that sees the
//              count (its existing check, unchanged) wakes the futex and
//              calls EventSignaller::signal(), which takes `armed` with one exchange
//              and writes a byte to each FIFO whose bit it took.
//   the look   the publisher's load of the count has no fence after its
//              position store (spsc_view.hpp, "The sleeper handshake"), so a
//              publication on its way while the waiter arms may miss the
//              raised count. As a futex sleeper's short first sleep catches
//              that, the waiter's descriptor also becomes readable
//              kFirstSleep (100 us) after it armed, if nothing else made it
//              so, then after twice that, up to kMaxSleep (50 ms): a "look".
//              A look reads like a signal; the caller tries, finds nothing,
//              and arms again (the count stays raised, so no new window
//              opens). WaitSet hides looks: it reports a waiter only when its
//              readiness predicate holds.
//   death      a waiter that dies leaves its entry unlocked; the next waiter
//              that registers on the table, and a publisher's signaller at
//              most every 100 ms, take the lock, drop the count the dead
//              waiter had raised, clear its bit and unlink its FIFO.
//
// Readable means "try now": a try may still find nothing after a look, or
// when another consumer of an MPMC ring was faster.
#pragma once

#include <sys/epoll.h>
#include <sys/types.h>

#include <array>
#include <chrono>
#include <concepts>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <system_error>
#include <vector>

#include "shmring/error.hpp"
#include "shmring/layout.hpp"
#include "shmring/segment.hpp"

namespace shmring {

// The names of waiters' FIFOs in /dev/shm begin with this.
inline constexpr std::string_view kEventFifoPrefix = ".shmring-event.";

// What a waiter waits for: data (a consumer; producers signal) or room (a
// producer; consumers signal).
enum class WaitFor : std::uint8_t { data, room };

constexpr const char* to_string(WaitFor w) noexcept { return w == WaitFor::data ? "data" : "room"; }

namespace detail {

class EventWaiter;

// The table of waiters for `what` in a segment's control area.
inline EventTable& event_table(std::byte* base, WaitFor what) noexcept {
  auto* control = reinterpret_cast<ControlArea*>(base);
  return what == WaitFor::data ? control->data_events : control->room_events;
}

// Opens the FIFO of a waiter at `path` as a publisher (or the waiter itself)
// does: O_RDWR|O_NONBLOCK|O_NOFOLLOW|O_CLOEXEC, then checks that it is a FIFO
// owned by `owner`. Returns the descriptor, or -1 with `ec` set
// (errc::bad_endpoint for a symbolic link, a file of another type or
// another owner; the errno of open otherwise) and the reason, naming the
// path, in shmring::last_error_message().
int open_event_fifo(const std::string& path, uid_t owner, std::error_code& ec);

// The FIFO path that endpoint id `id` names.
std::string event_fifo_path(const std::array<std::uint8_t, kEventIdBytes>& id);

// A publisher's side: signals the waiters armed in a table, keeping the FIFO
// descriptors it opened (one per entry, reopened when the entry's waiter
// changes). One per publishing handle, used by one thread at a time. Built
// from the segment, it also collects dead waiters' entries (at most every
// kCollectEvery, when it finds armed bits or signals); default-constructed,
// it only signals.
class EventSignaller {
 public:
  static constexpr std::chrono::milliseconds kCollectEvery{100};

  EventSignaller() noexcept = default;
  explicit EventSignaller(const Segment& segment);
  EventSignaller(EventSignaller&& other) noexcept;
  EventSignaller& operator=(EventSignaller&& other) noexcept;
  EventSignaller(const EventSignaller&) = delete;
  EventSignaller& operator=(const EventSignaller&) = delete;
  ~EventSignaller();

  // Writes a byte to the FIFO of every waiter for `what` whose bit is set in
  // the table of the segment at `base`, clearing the bits it took. Returns
  // how many it signalled. Call it where a futex wake is due (the side's
  // sleeper count was not 0), after the position store. noexcept, no
  // allocation; a FIFO that cannot be opened or is not a FIFO of the
  // waiter's uid is skipped and named in last_error() (that waiter's look
  // catches the publication).
  unsigned signal(std::byte* base, WaitFor what) noexcept;

  // The last refusal or failure, "" if none.
  const char* last_error() const noexcept { return last_error_; }
  // FIFOs signalled, and refused or failed, since construction.
  std::uint64_t signalled() const noexcept { return signalled_; }
  std::uint64_t refused() const noexcept { return refused_; }

 private:
  struct Cached {
    std::uint64_t id[2] = {0, 0};
    int fd = -1;
  };
  void close_all() noexcept;
  void maybe_collect(std::byte* base, WaitFor what) noexcept;
  int endpoint(std::byte* base, WaitFor what, std::size_t i) noexcept;

  Cached cache_[2][kEventEntries];
  std::shared_ptr<const void> lifetime_;  // the segment, for collection
  std::byte* base_ = nullptr;
  int segment_fd_ = -1;
  int lock_fd_ = -1;  // a description of its own, to lock dead entries while collecting
  std::int64_t next_collect_ns_[2] = {0, 0};
  std::uint64_t signalled_ = 0;
  std::uint64_t refused_ = 0;
  char last_error_[256] = {};
};

// Collects the entries of `what`'s table left by dead waiters: drops the
// sleeper count each had raised, clears its bit, unlinks its FIFO. Returns
// how many it collected. Cold path (a lock probe per entry in use).
std::size_t collect_dead_waiters(const Segment& segment, WaitFor what);

// One waiter: a handle's way to wait in an event loop. Holds an entry of the
// table for `what` for as long as it lives. `ready` is the handle's
// readiness check (may it make progress now?); it is only called from the
// thread that calls arm(), consume() and ready(), and must read the ring
// with seq_cst loads (as the views' data_ready() / space_ready() do) so that
// it stays after the raise of the count.
class EventWaiter {
 public:
  using Ready = std::function<bool()>;

  // What made the descriptor readable, as consume() found it.
  struct Woken {
    bool signalled = false;  // a publisher signalled (or took our bit)
    bool looked = false;     // the look's timer ran out
  };

  // Registers on the segment's table for `what`. Throws shmring::Error:
  // errc::no_segment (empty Segment), errc::invalid_argument (read-only
  // mapping, or no predicate), errc::role_taken (every entry is held by a
  // live waiter), errc::bad_endpoint, or the errno of a failed call, each
  // naming the segment.
  static EventWaiter open(const Segment& segment, WaitFor what, Ready ready);
  static EventWaiter open(const Segment& segment, WaitFor what, Ready ready, std::error_code& ec);

  EventWaiter() noexcept;
  EventWaiter(EventWaiter&&) noexcept;
  EventWaiter& operator=(EventWaiter&&) noexcept;
  EventWaiter(const EventWaiter&) = delete;
  EventWaiter& operator=(const EventWaiter&) = delete;
  // Disarms, gives the entry back and removes the FIFO (in the process that
  // opened it; a forked child's copy only closes its descriptors).
  ~EventWaiter();

  explicit operator bool() const noexcept { return impl_ != nullptr; }

  // The descriptor to wait on (an epoll instance holding the FIFO and the
  // look's timer): readable once a publisher signalled since arm(), or a
  // look is due. Stays readable until consume().
  int fd() const noexcept;

  // Prepares to wait: raises the count, sets the bit, re-checks. true: the
  // handle may make progress now (nothing stays armed; no need to wait);
  // false: armed, wait for fd(). Also true in a forked child (whose tries
  // answer wrong_process) and for an empty waiter.
  bool arm() noexcept;

  // After fd() was readable: empties it and says why it was readable. Once a
  // publisher has taken the bit, the raise of the count is given back; after
  // a look alone it stays (arm() again to go on waiting).
  Woken consume() noexcept;

  // Stops waiting: gives back the count and the bit if still raised.
  void disarm() noexcept;

  // Makes fd() readable now, with a byte to its own FIFO (consume() takes
  // it): for a handle that told its user to wait, then found the ring moved.
  void poke() noexcept;

  // The readiness predicate.
  bool ready() const;

  // The look's schedule: the first after `first`, each next one twice the
  // last, up to `max` (defaults kFirstSleep, kMaxSleep). Tests stretch it to
  // show that nothing but signals delivered a publication.
  void set_look_schedule(std::chrono::nanoseconds first, std::chrono::nanoseconds max) noexcept;

  WaitFor waits_for() const noexcept;
  bool armed() const noexcept;         // count raised by this waiter
  std::size_t entry() const noexcept;  // index in the table
  const std::string& fifo_path() const noexcept;

  struct Impl;  // src/event.cpp

 private:
  std::unique_ptr<Impl> impl_;
};

}  // namespace detail

// Something WaitSet::add can take besides a descriptor: an object with an
// event waiter (the role handles).
template <class T>
concept HasEventWaiter = requires(T& t) {
  { t.event_waiter() } -> std::same_as<detail::EventWaiter&>;
};

// Waits on many waiters and descriptors at once, on epoll. Move-only; not
// for concurrent use from several threads. A waiter added must outlive its
// membership (remove it, or destroy the set, first).
class WaitSet {
 public:
  struct Ready {
    std::uint64_t tag;     // as given to add()
    std::uint32_t events;  // EPOLLIN for a waiter; epoll's events for a descriptor
  };

  // Throws shmring::Error with the errno of epoll_create1.
  WaitSet();
  WaitSet(WaitSet&& other) noexcept;
  WaitSet& operator=(WaitSet&& other) noexcept;
  WaitSet(const WaitSet&) = delete;
  WaitSet& operator=(const WaitSet&) = delete;
  ~WaitSet();

  // A descriptor, reported when epoll reports `events` on it (level-
  // triggered). Throws shmring::Error: errc::invalid_argument for a tag
  // already in the set or a descriptor already in it, EBADF for a closed
  // descriptor, EPERM for one epoll cannot watch (a regular file).
  void add(int fd, std::uint64_t tag, std::uint32_t events = EPOLLIN);
  // A waiter, reported when its readiness predicate holds (never for a look
  // alone, never for nothing).
  void add(detail::EventWaiter& waiter, std::uint64_t tag);
  template <HasEventWaiter T>
  void add(T& source, std::uint64_t tag) {
    add(source.event_waiter(), tag);
  }
  // Throws shmring::Error with errc::invalid_argument for an unknown tag.
  // A waiter removed is disarmed.
  void remove(std::uint64_t tag);
  bool contains(std::uint64_t tag) const noexcept;
  std::size_t size() const noexcept { return members_.size(); }

  // Waits until a member is ready or `timeout` passes (a huge timeout waits
  // for ever; 0 only looks) and returns the ready members, each once, in no
  // particular order; empty on timeout. The span stays valid until the next
  // call. Waiters not reported stay armed (their count raised) until the
  // next wait() or remove(). A signal does not end the wait early.
  const std::vector<Ready>& wait(std::chrono::nanoseconds timeout);

 private:
  struct Member {
    std::uint64_t tag;
    int fd;
    detail::EventWaiter* waiter;  // nullptr for a descriptor
    std::uint32_t events;
  };
  Member* find_fd(int fd) noexcept;
  void add_member(Member m);
  void release() noexcept;

  int epoll_ = -1;
  std::vector<Member> members_;
  std::vector<Ready> ready_;
  std::vector<epoll_event> events_;
};

}  // namespace shmring
