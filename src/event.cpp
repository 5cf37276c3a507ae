#include "shmring/event.hpp"

#include <fcntl.h>
#include <sys/epoll.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/timerfd.h>
#include <unistd.h>

#include <algorithm>
#include <bit>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <mutex>
#include <string>
#include <utility>

#include "detail/blocking.hpp"
#include "detail/fail.hpp"
#include "detail/holder_lock.hpp"
#include "detail/holding.hpp"
#include "detail/sys.hpp"
#include "shmring/atomic.hpp"
#include "shmring/process.hpp"

namespace shmring {
namespace detail {
namespace {

constexpr const char* kShmDir = "/dev/shm/";

std::uint32_t& side_count(std::byte* base, WaitFor what) noexcept {
  auto* control = reinterpret_cast<ControlArea*>(base);
  // Waiters for data are consumers: the count producers look at after each
  // publication; waiters for room are producers.
  return what == WaitFor::data ? control->consumer_wait.waiters : control->producer_wait.waiters;
}

const std::uint32_t& peer_gpus(std::byte* base, WaitFor what) noexcept {
  auto* control = reinterpret_cast<ControlArea*>(base);
  return what == WaitFor::data ? control->producer.gpu_attached : control->consumer.gpu_attached;
}

// The endpoint id as two words: read and written with atomics, since the
// entry lives in shared memory and a publisher may read it while a waiter
// registers.
void load_id(const EventEntry& e, std::uint64_t out[2]) noexcept {
  const auto* w = reinterpret_cast<const std::uint64_t*>(e.endpoint);
  out[0] = atomic::load_acquire(&w[0]);
  out[1] = atomic::load_acquire(&w[1]);
}

void store_id(EventEntry& e, const std::uint64_t id[2]) noexcept {
  auto* w = reinterpret_cast<std::uint64_t*>(e.endpoint);
  atomic::store_release(&w[0], id[0]);
  atomic::store_release(&w[1], id[1]);
}

// "/dev/shm/.shmring-event.<32 hex digits>" into `out` (no allocation: the
// signal path uses it).
void fifo_path(const std::uint64_t id[2], char (&out)[80]) noexcept {
  std::snprintf(out, sizeof out, "%s%.*s%016llx%016llx", kShmDir,
                static_cast<int>(kEventFifoPrefix.size()), kEventFifoPrefix.data(),
                static_cast<unsigned long long>(id[0]), static_cast<unsigned long long>(id[1]));
}

const char* file_type(mode_t mode) noexcept {
  if (S_ISREG(mode)) return "a regular file";
  if (S_ISDIR(mode)) return "a directory";
  if (S_ISSOCK(mode)) return "a socket";
  if (S_ISCHR(mode) || S_ISBLK(mode)) return "a device";
  if (S_ISLNK(mode)) return "a symbolic link";
  return "not a FIFO";
}

// The one way an event FIFO is opened, by its waiter and by publishers.
// O_RDWR: a FIFO opened so never blocks in open, and always has a reader
// (ourselves), so a write after the waiter's death neither fails with EPIPE
// nor raises SIGPIPE. O_NOFOLLOW: /dev/shm is writable by everybody; a
// symbolic link planted under the name is refused (ELOOP), never followed.
// `why` gets the reason of a refusal (no allocation).
int open_fifo(const char* path, uid_t owner, char* why, std::size_t why_size,
              std::error_code& ec) noexcept {
  const int fd = sys::open(path, O_RDWR | O_NONBLOCK | O_NOFOLLOW | O_CLOEXEC);
  if (fd < 0) {
    const int err = errno;
    if (err == ELOOP) {
      ec = make_error_code(errc::bad_endpoint);
      std::snprintf(why, why_size, "event FIFO %s is a symbolic link: refused", path);
    } else {
      ec = std::error_code(err, std::system_category());
      std::snprintf(why, why_size, "cannot open event FIFO %s: %s", path, std::strerror(err));
    }
    return -1;
  }
  struct stat st {};
  if (sys::fstat(fd, &st) != 0) {
    const int err = errno;
    ::close(fd);
    ec = std::error_code(err, std::system_category());
    std::snprintf(why, why_size, "cannot fstat event FIFO %s: %s", path, std::strerror(err));
    return -1;
  }
  if (!S_ISFIFO(st.st_mode)) {
    ::close(fd);
    ec = make_error_code(errc::bad_endpoint);
    std::snprintf(why, why_size, "event FIFO %s is %s, not a FIFO: refused", path,
                  file_type(st.st_mode));
    return -1;
  }
  if (st.st_uid != owner) {
    ::close(fd);
    ec = make_error_code(errc::bad_endpoint);
    std::snprintf(why, why_size,
                  "event FIFO %s is owned by uid %u, not by its waiter's uid %u: refused", path,
                  static_cast<unsigned>(st.st_uid), static_cast<unsigned>(owner));
    return -1;
  }
  ec.clear();
  return fd;
}

// Unlinks a dead waiter's FIFO if the name holds a FIFO (never another kind
// of file a peer might name through the entry's bytes).
void unlink_fifo(const std::uint64_t id[2]) noexcept {
  if (id[0] == 0 && id[1] == 0) return;
  char path[80];
  fifo_path(id, path);
  struct stat st {};
  if (::lstat(path, &st) == 0 && S_ISFIFO(st.st_mode)) (void)::unlink(path);
}

std::int64_t now_ns() noexcept {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(Clock::now().time_since_epoch())
      .count();
}

// Collects entry `i` of `table`, whose lock the caller holds through a
// description of its own (so its holder is dead, and nobody takes the entry
// meanwhile). Returns whether there was anything to collect.
// SYNC POINT (collector): the dead waiter set `raised` after raising the
// count and clears it before dropping the count, so raised == 1 means its
// raise is outstanding: it is dropped once, here, under the lock. A waiter
// killed between its raise and the store of `raised` leaves the count one too
// high (publishers then take the wake path needlessly), never too low.
bool collect_entry(std::byte* base, WaitFor what, std::size_t i) noexcept {
  EventTable& table = event_table(base, what);
  EventEntry& e = table.entries[i];
  bool any = false;
  const std::uint32_t bit = std::uint32_t{1} << i;
  if ((atomic::fetch_and(&table.armed, ~bit) & bit) != 0) any = true;
  std::uint32_t one = 1;
  if (atomic::compare_exchange(&e.raised, one, std::uint32_t{0})) {
    atomic::fetch_sub(&side_count(base, what), kEventWaiter);
    any = true;
  }
  std::uint64_t id[2];
  load_id(e, id);
  if (id[0] != 0 || id[1] != 0) {
    unlink_fifo(id);
    const std::uint64_t none[2] = {0, 0};
    store_id(e, none);
    any = true;
  }
  return any;
}

// Collects every entry of the table whose holder is dead, locking each
// through `lock_fd` (a description of the segment file of the caller's own)
// while it does; `skip` is the caller's own entry, if any.
std::size_t collect_table(std::byte* base, WaitFor what, int lock_fd,
                          std::size_t skip = kEventEntries) noexcept {
  EventTable& table = event_table(base, what);
  const std::uint32_t armed = atomic::load_seq_cst(&table.armed);
  std::size_t collected = 0;
  for (std::size_t i = 0; i < kEventEntries; ++i) {
    if (i == skip) continue;
    EventEntry& e = table.entries[i];
    std::uint64_t id[2];
    load_id(e, id);
    const bool in_use =
        (armed >> i & 1u) != 0 || atomic::load_seq_cst(&e.raised) != 0 || id[0] != 0 || id[1] != 0;
    if (!in_use) continue;
    const std::uint64_t byte = lock_byte::event_entry(what == WaitFor::data, i);
    if (set_byte_lock(lock_fd, F_WRLCK, byte) != 0) continue;  // a live waiter holds it
    if (collect_entry(base, what, i)) ++collected;
    std::uint64_t holder = atomic::load_seq_cst(&e.holder);
    if (holder != 0) atomic::compare_exchange(&e.holder, holder, std::uint64_t{0});
    (void)set_byte_lock(lock_fd, F_UNLCK, byte);
  }
  return collected;
}

}  // namespace

std::string event_fifo_path(const std::array<std::uint8_t, kEventIdBytes>& id) {
  std::uint64_t w[2];
  std::memcpy(w, id.data(), sizeof w);
  char path[80];
  fifo_path(w, path);
  return path;
}

int open_event_fifo(const std::string& path, uid_t owner, std::error_code& ec) {
  char why[512];
  const int fd = open_fifo(path.c_str(), owner, why, sizeof why, ec);
  if (fd < 0) {
    Failure{ec, why}.report(ec);
  }
  return fd;
}

// ---- the publisher's side ---------------------------------------------------

EventSignaller::EventSignaller(const Segment& segment)
    : lifetime_(segment.lifetime()), base_(segment.base()), segment_fd_(segment.fd()) {}

EventSignaller::EventSignaller(EventSignaller&& other) noexcept { *this = std::move(other); }

EventSignaller& EventSignaller::operator=(EventSignaller&& other) noexcept {
  if (this == &other) return *this;
  close_all();
  for (int s = 0; s < 2; ++s) {
    for (std::size_t i = 0; i < kEventEntries; ++i) {
      cache_[s][i] = std::exchange(other.cache_[s][i], Cached{});
    }
    next_collect_ns_[s] = other.next_collect_ns_[s];
  }
  lifetime_ = std::move(other.lifetime_);
  base_ = std::exchange(other.base_, nullptr);
  segment_fd_ = std::exchange(other.segment_fd_, -1);
  lock_fd_ = std::exchange(other.lock_fd_, -1);
  signalled_ = other.signalled_;
  refused_ = other.refused_;
  std::memcpy(last_error_, other.last_error_, sizeof last_error_);
  return *this;
}

EventSignaller::~EventSignaller() { close_all(); }

void EventSignaller::close_all() noexcept {
  for (auto& side : cache_) {
    for (Cached& c : side) {
      if (c.fd >= 0) ::close(c.fd);
      c = Cached{};
    }
  }
  if (lock_fd_ >= 0) ::close(lock_fd_);
  lock_fd_ = -1;
}

int EventSignaller::endpoint(std::byte* base, WaitFor what, std::size_t i) noexcept {
  const EventEntry& e = event_table(base, what).entries[i];
  std::uint64_t id[2];
  load_id(e, id);
  if (id[0] == 0 && id[1] == 0) return -1;  // registering: it cannot have armed yet
  Cached& c = cache_[what == WaitFor::data ? 0 : 1][i];
  if (c.fd >= 0 && c.id[0] == id[0] && c.id[1] == id[1]) return c.fd;
  if (c.fd >= 0) ::close(c.fd);
  c = Cached{};
  char path[80];
  fifo_path(id, path);
  std::error_code ec;
  const int fd = open_fifo(path, atomic::load_acquire(&e.uid), last_error_, sizeof last_error_, ec);
  if (fd < 0) return -1;
  c.id[0] = id[0];
  c.id[1] = id[1];
  c.fd = fd;
  return fd;
}

unsigned EventSignaller::signal(std::byte* base, WaitFor what) noexcept {
  EventTable& table = event_table(base, what);
  // SYNC POINT (seq_cst read-modify-write, pairs with arm()'s fetch_or on
  // `armed`): the exchange reads the latest `armed` and comes after our
  // position store. If a waiter's fetch_or comes first, we take its bit; if
  // ours comes first, its fetch_or reads ours and acquires our position
  // store, so its re-check sees the publication. An RMW, not a fence and a
  // load: the wake path is already taken (a futex wake is due), one more
  // RMW costs nothing there, and the argument needs no fence rules.
  std::uint32_t taken = atomic::exchange(&table.armed, 0u);
  // A forged bit beyond the table names no entry.
  taken &= kEventEntries >= 32 ? ~0u : (std::uint32_t{1} << kEventEntries) - 1;
  unsigned n = 0;
  while (taken != 0) {
    const auto i = static_cast<std::size_t>(std::countr_zero(taken));
    taken &= taken - 1;
    // The raise of the waiter we signal has done its work: give it back
    // for it, so that a waiter that never comes to consume() (an event loop
    // busy elsewhere) leaves no count that sends every later publication
    // down this path. `raised` is the token: whoever moves it from 1 to 0
    // (we, the waiter's lower() or a collector) drops the count, once.
    std::uint32_t one = 1;
    if (atomic::compare_exchange(&table.entries[i].raised, one, std::uint32_t{0})) {
      atomic::fetch_sub(&side_count(base, what), kEventWaiter);
    }
    const int fd = endpoint(base, what, i);
    if (fd < 0) {
      ++refused_;
      continue;
    }
    const char byte = 1;
    // A full pipe (EAGAIN) is readable already; anything else is a FIFO gone
    // wrong, and the waiter's look catches the publication.
    ssize_t w;
    do {
      w = ::write(fd, &byte, 1);
    } while (w < 0 && errno == EINTR);
    if (w < 0 && errno != EAGAIN) {
      std::snprintf(last_error_, sizeof last_error_, "cannot write to event FIFO of entry %zu: %s",
                    i, std::strerror(errno));
      ++refused_;
      continue;
    }
    ++n;
  }
  signalled_ += n;
  maybe_collect(base, what);
  return n;
}

void EventSignaller::maybe_collect(std::byte* base, WaitFor what) noexcept {
  // Only in the segment it was built for: the lock description must be of
  // the file mapped at `base`.
  if (base_ == nullptr || base != base_) return;
  const std::int64_t now = now_ns();
  std::int64_t& next = next_collect_ns_[what == WaitFor::data ? 0 : 1];
  if (now < next) return;
  next = now + std::chrono::nanoseconds(kCollectEvery).count();
  if (lock_fd_ < 0) {
    char path[48];
    std::snprintf(path, sizeof path, "/proc/self/fd/%d", segment_fd_);
    lock_fd_ = sys::open(path, O_RDWR | O_CLOEXEC);
    if (lock_fd_ < 0) return;
  }
  (void)collect_table(base, what, lock_fd_);
}

// ---- the process's shared signaller -------------------------------------------

namespace {

// A description of the segment file of our own (/proc/self/fd), whose locks
// are ours alone; -1 on failure with errno set.
int own_description(int segment_fd) noexcept {
  char path[48];
  std::snprintf(path, sizeof path, "/proc/self/fd/%d", segment_fd);
  return sys::open(path, O_RDWR | O_CLOEXEC);
}

}  // namespace

std::size_t collect_dead_waiters(const Segment& segment, WaitFor what) {
  if (!segment) fail(errc::no_segment, "", "collect_dead_waiters needs an open segment").raise();
  const int fd = own_description(segment.fd());
  if (fd < 0) {
    const int err = errno;
    fail_errno(err, segment.name(),
               std::string("cannot open a description of its own to collect dead waiters: ") +
                   std::strerror(err))
        .raise();
  }
  const std::size_t n = collect_table(segment.base(), what, fd);
  ::close(fd);
  return n;
}

// ---- the waiter's side ----------------------------------------------------------

struct EventWaiter::Impl {
  std::shared_ptr<Holding> holding;  // the entry's lock; keeps the mapping alive
  std::byte* base = nullptr;
  WaitFor what = WaitFor::data;
  std::size_t index = 0;
  std::uint32_t bit = 0;
  std::string path;
  bool made_fifo = false;
  int fifo = -1;
  int timer = -1;
  int epoll = -1;
  Ready ready;
  std::uint32_t generation = process::generation();
  // Our raise of the side's count is outstanding (entry.raised == 1).
  bool raised = false;
  // The look's timer is set; the length of the last look.
  bool timer_set = false;
  std::chrono::nanoseconds slice{0};
  std::chrono::nanoseconds first_look = kFirstSleep;
  std::chrono::nanoseconds max_look = kMaxSleep;

  EventTable& table() const noexcept { return event_table(base, what); }
  EventEntry& entry() const noexcept { return table().entries[index]; }
  std::uint32_t& count() const noexcept { return side_count(base, what); }
  bool here() const noexcept { return generation == process::generation(); }

  void set_timer(std::chrono::nanoseconds after) noexcept {
    itimerspec t{};
    t.it_value.tv_sec = static_cast<time_t>(after.count() / 1'000'000'000);
    t.it_value.tv_nsec = static_cast<long>(after.count() % 1'000'000'000);
    if (t.it_value.tv_sec == 0 && t.it_value.tv_nsec == 0) t.it_value.tv_nsec = 1;
    (void)::timerfd_settime(timer, 0, &t, nullptr);
    timer_set = true;
  }
  void cancel_timer() noexcept {
    if (!timer_set) return;
    const itimerspec zero{};
    (void)::timerfd_settime(timer, 0, &zero, nullptr);
    std::uint64_t expirations;
    (void)::read(timer, &expirations, sizeof expirations);  // one that ran out meanwhile
    timer_set = false;
  }

  // Gives back our raise: bit first, then `raised`, then the count. A
  // publisher that signalled us, or a collector, may have given it back
  // already: whoever moves `raised` from 1 to 0 drops the count.
  void lower() noexcept {
    if (!raised) return;
    atomic::fetch_and(&table().armed, ~bit);
    std::uint32_t one = 1;
    if (atomic::compare_exchange(&entry().raised, one, std::uint32_t{0})) {
      atomic::fetch_sub(&count(), kEventWaiter);
    }
    raised = false;
    cancel_timer();
  }

  Impl() = default;
  Impl(const Impl&) = delete;
  Impl& operator=(const Impl&) = delete;
  ~Impl() {
    if (here() && holding) {
      lower();
      const std::uint64_t none[2] = {0, 0};
      store_id(entry(), none);
    }
    if (here() && made_fifo) (void)::unlink(path.c_str());
    if (epoll >= 0) ::close(epoll);
    if (timer >= 0) ::close(timer);
    if (fifo >= 0) ::close(fifo);
    // holding goes last: the entry is cleared before its lock is let go.
  }
};

EventWaiter::EventWaiter() noexcept = default;
EventWaiter::EventWaiter(EventWaiter&&) noexcept = default;
EventWaiter& EventWaiter::operator=(EventWaiter&&) noexcept = default;
EventWaiter::~EventWaiter() = default;

namespace {

std::unique_ptr<EventWaiter::Impl> open_waiter(const Segment& segment, WaitFor what,
                                               EventWaiter::Ready& ready, Failure& f) {
  if (!segment) {
    f = fail(errc::no_segment, "", "an event waiter needs an open segment");
    return nullptr;
  }
  const std::string& name = segment.name();
  if (segment.read_only()) {
    f = fail(errc::invalid_argument, name, "an event waiter needs a read-write mapping");
    return nullptr;
  }
  if (!ready) {
    f = fail(errc::invalid_argument, name, "an event waiter needs a readiness predicate");
    return nullptr;
  }
  auto impl = std::make_unique<EventWaiter::Impl>();
  impl->base = segment.base();
  impl->what = what;
  impl->holding = Holding::prepare(segment, f);
  if (!impl->holding) return nullptr;
  // Whatever dead waiters left is collected first: their raised counts
  // would send every publication down the wake path, their FIFOs would stay.
  if (const int fd = own_description(segment.fd()); fd >= 0) {
    (void)collect_table(impl->base, what, fd);
    ::close(fd);
  }
  EventTable& table = event_table(impl->base, what);
  const bool data = what == WaitFor::data;
  bool taken = false;
  for (std::size_t i = 0; i < kEventEntries && !taken; ++i) {
    const int err = impl->holding->take(&table.entries[i].holder, lock_byte::event_entry(data, i));
    if (err == EAGAIN) continue;
    if (err != 0) {
      f = fail_errno(err, name, std::string("cannot lock an event entry: ") + std::strerror(err));
      impl->holding.reset();
      return nullptr;
    }
    impl->index = i;
    impl->bit = std::uint32_t{1} << i;
    taken = true;
    // A dead predecessor's leftovers (it died after the collection above).
    (void)collect_entry(impl->base, what, i);
  }
  if (!taken) {
    impl->holding.reset();
    f = fail(errc::role_taken, name,
             "all " + std::to_string(kEventEntries) + " event entries of the waiters for " +
                 to_string(what) + " are held by live waiters");
    return nullptr;
  }
  // The FIFO: a fresh random name (mkfifo fails on any file already there,
  // so nothing planted is ever taken over), opened and checked as a
  // publisher will.
  const uid_t uid = ::geteuid();
  struct stat seg {};
  const mode_t mode = sys::fstat(segment.fd(), &seg) == 0 && S_ISREG(seg.st_mode)
                          ? (seg.st_mode & 0666) | 0600
                          : 0600;
  std::uint64_t id[2] = {0, 0};
  char path[80];
  for (int attempt = 0;; ++attempt) {
    if (::getrandom(id, sizeof id, 0) != static_cast<ssize_t>(sizeof id)) {
      const int err = errno;
      f = fail_errno(err, name,
                     std::string("cannot draw an event FIFO name: ") + std::strerror(err));
      return nullptr;
    }
    if (id[0] == 0 && id[1] == 0) continue;
    fifo_path(id, path);
    if (::mkfifo(path, 0600) == 0) break;
    const int err = errno;
    if (err != EEXIST || attempt >= 8) {
      f = fail_errno(err, name,
                     std::string("cannot make event FIFO ") + path + ": " + std::strerror(err));
      return nullptr;
    }
  }
  impl->path = path;
  impl->made_fifo = true;
  char why[512];
  std::error_code ec;
  impl->fifo = open_fifo(path, uid, why, sizeof why, ec);
  if (impl->fifo < 0) {
    f = fail(ec, name, why);
    return nullptr;
  }
  // mkfifo applied the umask: set the mode, so that publishers of the
  // segment's group (where it is shared with the group) may open it.
  (void)::fchmod(impl->fifo, mode);
  impl->timer = ::timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
  impl->epoll = ::epoll_create1(EPOLL_CLOEXEC);
  if (impl->timer < 0 || impl->epoll < 0) {
    const int err = errno;
    f = fail_errno(err, name,
                   std::string("cannot make the event waiter's timer or epoll instance: ") +
                       std::strerror(err));
    return nullptr;
  }
  for (const int fd : {impl->fifo, impl->timer}) {
    epoll_event ev{};
    ev.events = EPOLLIN;
    ev.data.fd = fd;
    if (::epoll_ctl(impl->epoll, EPOLL_CTL_ADD, fd, &ev) != 0) {
      const int err = errno;
      f = fail_errno(err, name, std::string("epoll_ctl: ") + std::strerror(err));
      return nullptr;
    }
  }
  EventEntry& e = table.entries[impl->index];
  atomic::store_release(&e.uid, static_cast<std::uint32_t>(uid));
  store_id(e, id);  // last: publishers open the FIFO once they see it
  impl->ready = std::move(ready);
  return impl;
}

}  // namespace

EventWaiter EventWaiter::open(const Segment& segment, WaitFor what, Ready ready) {
  EventWaiter w;
  w.impl_ = or_throw([&](Failure& f) { return open_waiter(segment, what, ready, f); });
  return w;
}

EventWaiter EventWaiter::open(const Segment& segment, WaitFor what, Ready ready,
                              std::error_code& ec) {
  EventWaiter w;
  w.impl_ = or_report(ec, [&](Failure& f) { return open_waiter(segment, what, ready, f); });
  return w;
}

int EventWaiter::fd() const noexcept { return impl_ ? impl_->epoll : -1; }
WaitFor EventWaiter::waits_for() const noexcept { return impl_ ? impl_->what : WaitFor::data; }
bool EventWaiter::armed() const noexcept { return impl_ && impl_->raised; }
std::size_t EventWaiter::entry() const noexcept { return impl_ ? impl_->index : kEventEntries; }
const std::string& EventWaiter::fifo_path() const noexcept {
  static const std::string none;
  return impl_ ? impl_->path : none;
}
bool EventWaiter::ready() const { return impl_ && impl_->ready(); }

void EventWaiter::set_look_schedule(std::chrono::nanoseconds first,
                                    std::chrono::nanoseconds max) noexcept {
  if (!impl_) return;
  impl_->first_look = first;
  impl_->max_look = std::max(first, max);
}

bool EventWaiter::arm() noexcept {
  if (!impl_ || !impl_->here()) return true;
  Impl& s = *impl_;
  bool fresh = false;
  // A publisher that took our bit gave our raise back (signal()): raise
  // again. If it takes the bit only after this load, its exchange comes
  // before our fetch_or below, which then acquires its publication for
  // the re-check.
  if (s.raised && atomic::load_seq_cst(&s.entry().raised) == 0) s.raised = false;
  if (!s.raised) {
    // SYNC POINT (seq_cst RMW; the sleeper handshake, SYNC POINTs 6-9): a
    // publication whose load of the count comes after this sees it and
    // signals.
    atomic::fetch_add(&s.count(), kEventWaiter);
    atomic::store_seq_cst(&s.entry().raised, std::uint32_t{1});
    s.raised = true;
    fresh = true;
  }
  // SYNC POINT (seq_cst RMW, pairs with signal()'s exchange): if the
  // publisher's exchange comes first, this reads it and acquires the
  // publisher's position store, which the re-check below then sees; if this
  // comes first, the exchange takes our bit and the publisher signals.
  atomic::fetch_or(&s.table().armed, s.bit);
  bool ready_now = true;
  try {
    ready_now = s.ready();
  } catch (...) {
    // A predicate that throws cannot say "not ready": let the caller try.
  }
  if (ready_now) {
    s.lower();
    return true;
  }
  // The look: a publication already on its way when the count was raised
  // may have missed it (the publisher's load is not fenced after its store);
  // as a futex sleeper's first sleep, a look after kFirstSleep catches it,
  // then after twice the last, up to kMaxSleep (kGpuPeerSleep with a GPU on
  // the other side: a kernel never signals).
  const bool gpu_peer = atomic::load_relaxed(&peer_gpus(s.base, s.what)) != 0;
  const std::chrono::nanoseconds cap =
      gpu_peer ? std::chrono::nanoseconds(kGpuPeerSleep) : s.max_look;
  if (fresh || s.slice.count() == 0) {
    s.slice = std::min(s.first_look, cap);
  } else if (!s.timer_set) {
    s.slice = std::min(cap, s.slice * 2);
  }
  if (!s.timer_set) s.set_timer(s.slice);
  return false;
}

EventWaiter::Woken EventWaiter::consume() noexcept {
  Woken w;
  if (!impl_) return w;
  Impl& s = *impl_;
  char buf[64];
  for (;;) {
    const ssize_t n = ::read(s.fifo, buf, sizeof buf);
    if (n > 0) {
      w.signalled = true;
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    break;
  }
  std::uint64_t expirations = 0;
  if (::read(s.timer, &expirations, sizeof expirations) ==
      static_cast<ssize_t>(sizeof expirations)) {
    w.looked = true;
    s.timer_set = false;
  }
  if (!s.here()) return w;
  // Our bit gone means a publisher took it (the byte may still be on its
  // way): this raise has done its work; give it back.
  if (s.raised && (atomic::load_seq_cst(&s.table().armed) & s.bit) == 0) {
    w.signalled = true;
    s.lower();
  }
  return w;
}

void EventWaiter::disarm() noexcept {
  if (impl_ && impl_->here()) impl_->lower();
}

void EventWaiter::poke() noexcept {
  if (!impl_) return;
  const char byte = 1;
  // A full pipe is readable already; nothing else can fail here.
  while (::write(impl_->fifo, &byte, 1) < 0 && errno == EINTR) {
  }
}

}  // namespace detail

// ---- WaitSet ----------------------------------------------------------------------

namespace {

[[noreturn]] void wait_set_error(std::error_code code, const std::string& what) {
  throw Error(code, "WaitSet: " + what);
}

// epoll_pwait2 (Linux 5.11) takes nanoseconds; epoll_wait milliseconds,
// rounded up so that a short timeout is never a busy loop.
int epoll_wait_ns(int epoll, epoll_event* events, int max, std::chrono::nanoseconds timeout) {
#ifdef SYS_epoll_pwait2
  static std::atomic<bool> no_pwait2{false};
  if (!no_pwait2.load(std::memory_order_relaxed)) {
    timespec ts{};
    ts.tv_sec = static_cast<time_t>(timeout.count() / 1'000'000'000);
    ts.tv_nsec = static_cast<long>(timeout.count() % 1'000'000'000);
    const long rc = ::syscall(SYS_epoll_pwait2, epoll, events, max, &ts, nullptr, 0);
    if (rc >= 0 || errno != ENOSYS) return static_cast<int>(rc);
    no_pwait2.store(true, std::memory_order_relaxed);
  }
#endif
  const auto ms = std::chrono::ceil<std::chrono::milliseconds>(timeout).count();
  return ::epoll_wait(epoll, events, max, static_cast<int>(std::min<long long>(ms, 1 << 30)));
}

}  // namespace

WaitSet::WaitSet() : epoll_(::epoll_create1(EPOLL_CLOEXEC)) {
  if (epoll_ < 0) {
    const int err = errno;
    wait_set_error(std::error_code(err, std::system_category()),
                   std::string("epoll_create1 failed: ") + std::strerror(err));
  }
}

WaitSet::WaitSet(WaitSet&& other) noexcept
    : epoll_(std::exchange(other.epoll_, -1)),
      members_(std::move(other.members_)),
      ready_(std::move(other.ready_)),
      events_(std::move(other.events_)) {
  other.members_.clear();
}

WaitSet& WaitSet::operator=(WaitSet&& other) noexcept {
  if (this != &other) {
    release();
    epoll_ = std::exchange(other.epoll_, -1);
    members_ = std::move(other.members_);
    other.members_.clear();
    ready_ = std::move(other.ready_);
    events_ = std::move(other.events_);
  }
  return *this;
}

WaitSet::~WaitSet() { release(); }

void WaitSet::release() noexcept {
  for (const Member& m : members_) {
    if (m.waiter != nullptr) m.waiter->disarm();
  }
  members_.clear();
  if (epoll_ >= 0) ::close(epoll_);
  epoll_ = -1;
}

bool WaitSet::contains(std::uint64_t tag) const noexcept {
  return std::any_of(members_.begin(), members_.end(),
                     [&](const Member& m) { return m.tag == tag; });
}

WaitSet::Member* WaitSet::find_fd(int fd) noexcept {
  for (Member& m : members_) {
    if (m.fd == fd) return &m;
  }
  return nullptr;
}

void WaitSet::add_member(Member m) {
  if (epoll_ < 0) {
    wait_set_error(make_error_code(errc::invalid_argument), "add on a moved-from set");
  }
  if (contains(m.tag)) {
    wait_set_error(make_error_code(errc::invalid_argument),
                   "tag " + std::to_string(m.tag) + " is already in the set");
  }
  if (m.fd < 0) {
    wait_set_error(
        std::make_error_code(std::errc::bad_file_descriptor),
        "descriptor " + std::to_string(m.fd) + " (tag " + std::to_string(m.tag) + ") is not open");
  }
  if (const Member* other = find_fd(m.fd)) {
    wait_set_error(make_error_code(errc::invalid_argument), "descriptor " + std::to_string(m.fd) +
                                                                " is already in the set (tag " +
                                                                std::to_string(other->tag) + ")");
  }
  epoll_event ev{};
  ev.events = m.events;
  ev.data.fd = m.fd;
  if (::epoll_ctl(epoll_, EPOLL_CTL_ADD, m.fd, &ev) != 0) {
    const int err = errno;
    std::string why = "cannot watch descriptor " + std::to_string(m.fd) + " (tag " +
                      std::to_string(m.tag) + "): ";
    if (err == EPERM) {
      why += "epoll cannot watch this kind of file (a regular file or a directory)";
    } else if (err == EBADF) {
      why += "it is not open";
    } else {
      why += std::strerror(err);
    }
    wait_set_error(std::error_code(err, std::system_category()), why);
  }
  members_.push_back(m);
}

void WaitSet::add(int fd, std::uint64_t tag, std::uint32_t events) {
  add_member(Member{tag, fd, nullptr, events});
}

void WaitSet::add(detail::EventWaiter& waiter, std::uint64_t tag) {
  if (!waiter) {
    wait_set_error(make_error_code(errc::invalid_argument),
                   "tag " + std::to_string(tag) + ": the event waiter is empty");
  }
  add_member(Member{tag, waiter.fd(), &waiter, EPOLLIN});
}

void WaitSet::remove(std::uint64_t tag) {
  const auto it =
      std::find_if(members_.begin(), members_.end(), [&](const Member& m) { return m.tag == tag; });
  if (it == members_.end()) {
    wait_set_error(make_error_code(errc::invalid_argument),
                   "remove: no member has tag " + std::to_string(tag));
  }
  // A descriptor closed meanwhile left epoll by itself: nothing to undo.
  (void)::epoll_ctl(epoll_, EPOLL_CTL_DEL, it->fd, nullptr);
  if (it->waiter != nullptr) it->waiter->disarm();
  members_.erase(it);
}

const std::vector<WaitSet::Ready>& WaitSet::wait(std::chrono::nanoseconds timeout) {
  ready_.clear();
  if (epoll_ < 0) {
    wait_set_error(make_error_code(errc::invalid_argument), "wait on a moved-from set");
  }
  const auto deadline = detail::deadline_after(timeout);
  // Every waiter armed (re-checked) before anything sleeps: one that may
  // make progress now is reported without a system call more.
  for (Member& m : members_) {
    if (m.waiter != nullptr && m.waiter->arm()) ready_.push_back({m.tag, EPOLLIN});
  }
  events_.resize(std::max<std::size_t>(members_.size(), 1));
  const bool look_only = !ready_.empty();  // then only gather what else is ready
  for (;;) {
    const auto now = detail::Clock::now();
    const std::chrono::nanoseconds left = look_only || now >= deadline
                                              ? std::chrono::nanoseconds::zero()
                                              : std::chrono::nanoseconds(deadline - now);
    const int n = epoll_wait_ns(epoll_, events_.data(), static_cast<int>(events_.size()), left);
    if (n < 0) {
      const int err = errno;
      if (err == EINTR) continue;  // the deadline is looked at again
      wait_set_error(std::error_code(err, std::system_category()),
                     std::string("epoll_wait failed: ") + std::strerror(err));
    }
    for (int i = 0; i < n; ++i) {
      const epoll_event& ev = events_[static_cast<std::size_t>(i)];
      Member* m = find_fd(ev.data.fd);
      if (m == nullptr) continue;
      const bool listed = std::any_of(ready_.begin(), ready_.end(),
                                      [&](const Ready& r) { return r.tag == m->tag; });
      if (m->waiter == nullptr) {
        if (!listed) ready_.push_back({m->tag, ev.events});
        continue;
      }
      (void)m->waiter->consume();
      if (listed) continue;
      // Reported only when it may make progress; after a look (or a byte
      // that came late) it is armed again, and a re-check that finds it
      // ready reports it.
      bool ready_now = false;
      try {
        ready_now = m->waiter->ready();
      } catch (...) {
        ready_now = true;  // let the caller try, and see the error there
      }
      if (ready_now) {
        m->waiter->disarm();
        ready_.push_back({m->tag, EPOLLIN});
      } else if (m->waiter->arm()) {
        ready_.push_back({m->tag, EPOLLIN});
      }
    }
    if (!ready_.empty() || look_only || detail::Clock::now() >= deadline) return ready_;
  }
}

}  // namespace shmring
