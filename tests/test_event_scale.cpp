// Event-driven waiting at scale (docs/events.md), across processes:
//
//   - a WaitSet over 64 rings (64 segments: a segment's event table holds
//     kEventEntries waiters per kind, so 64 rings in one wait are 64
//     segments, or 4 broadcast segments of 16 subscribers, which fills each
//     table): a message on one ring, published by another process, ends the
//     wait with exactly that ring's handles ready, for every ring;
//   - lost wake-ups: a consumer that waits in epoll on its event_fd() alone
//     (it never spins) takes SHMRING_EVENT_HANDOFFS messages (default 200000)
//     from a producer process, each checked by its sequence number and
//     content; the reverse, a producer waiting for room on a ring of 2; and
//     both sides in epoll. A lost wake-up is a wait that does not end: each
//     wait has a deadline of kWaitDeadline and the failure names the message
//     where it stuck, and whether that message was there all along (a lost
//     wake-up) or never came (a stalled peer);
//   - the descriptors of 16 consumer processes killed while they waited (a
//     full table) are collected, by the next registration or by a
//     publisher. (A bare EventWaiter killed while armed:
//     test_events, EventDeath.AWaiterKilledWhileArmedIsCollected.)
//
// SHMRING_EVENT_HANDOFFS=5000000 is the long run of the lost-wake-up tests
// (minutes); SHMRING_STRESS_SCALE multiplies the default, and under
// ThreadSanitizer it is divided by 20. A waiter's "look" (event.hpp) makes
// its descriptor readable now and then even if no publisher signalled, so by
// default a lost signal costs a delay, not a hang; SHMRING_EVENT_SIGNALS_ONLY=1
// pushes the looks an hour out, so that every wake must come from a
// publisher's signal and a lost one fails at the deadline. (A publication
// whose load of the sleeper count ran ahead of its position store, the
// window the looks exist for, spsc_view.hpp, would fail that mode too: read
// a failure there against it.)
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/epoll.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <bit>
#include <chrono>
#include <cstdarg>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <numeric>
#include <random>
#include <string>
#include <thread>
#include <variant>
#include <vector>

#include "shmring/shmring.hpp"
#include "stress_message.hpp"
#include "test_support.hpp"

namespace shmring {
namespace {

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

// A wait on a descriptor that lasts this long lost its wake-up: a look (at
// most 50 ms apart) would have ended it even had no publisher signalled.
constexpr auto kWaitDeadline = 2s;
constexpr std::uint64_t kSlot = 64;
constexpr std::size_t kMaxPayload = kSlot - test::msg::kHeaderSize;

// ---- a forked peer -------------------------------------------------------------

// What a peer process reports: its first error. In a MAP_SHARED anonymous
// mapping made before fork(), so the parent reads it after the child is gone.
struct PeerReport {
  char error[512];
};

// Records the peer's first error; returns the exit code that says "failed".
int peer_fail(PeerReport& r, const char* fmt, ...) __attribute__((format(printf, 2, 3)));
int peer_fail(PeerReport& r, const char* fmt, ...) {
  if (r.error[0] == '\0') {
    va_list ap;
    va_start(ap, fmt);
    std::vsnprintf(r.error, sizeof r.error, fmt, ap);
    va_end(ap);
  }
  return 1;
}

// Another process running `body(report, commands_fd, ready_fd)`, which
// leaves with _exit(body's result) (no destructors: the parent's handles,
// copied by fork, stay untouched). Two pipes: commands from the parent, and
// a byte back from the peer when it is ready. A peer still running when the
// Peer is destroyed is killed.
class Peer {
 public:
  template <class Body>
  explicit Peer(Body&& body) {
    void* p = ::mmap(nullptr, sizeof(PeerReport), PROT_READ | PROT_WRITE,
                     MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) throw std::runtime_error("mmap of the peer report failed");
    report_ = new (p) PeerReport{};
    int to_peer[2];
    int from_peer[2];
    if (::pipe(to_peer) != 0 || ::pipe(from_peer) != 0) throw std::runtime_error("pipe failed");
    std::fflush(nullptr);  // nothing buffered is written twice
    const pid_t parent = ::getpid();
    pid_ = ::fork();
    if (pid_ < 0) throw std::runtime_error("fork failed");
    if (pid_ == 0) {
      ::prctl(PR_SET_PDEATHSIG, SIGKILL);  // a parent killed by its watchdog takes us along
      if (::getppid() != parent) ::_exit(3);
      ::close(to_peer[1]);
      ::close(from_peer[0]);
      int rc = 2;
      try {
        rc = body(*report_, to_peer[0], from_peer[1]);
      } catch (const std::exception& e) {
        rc = peer_fail(*report_, "exception: %s", e.what());
      } catch (...) {
        rc = peer_fail(*report_, "unknown exception");
      }
      ::_exit(rc);
    }
    ::close(to_peer[0]);
    ::close(from_peer[1]);
    commands_ = to_peer[1];
    ready_ = from_peer[0];
  }
  Peer(const Peer&) = delete;
  Peer& operator=(const Peer&) = delete;
  ~Peer() {
    if (commands_ >= 0) ::close(commands_);
    if (ready_ >= 0) ::close(ready_);
    if (pid_ > 0 && code_ == kRunning) {
      ::kill(pid_, SIGKILL);
      (void)test::wait_child(pid_);
    }
    ::munmap(report_, sizeof(PeerReport));
  }

  // Waits for the peer's ready byte; false if it ended first.
  bool wait_ready() {
    char b = 0;
    return ::read(ready_, &b, 1) == 1;
  }
  // Sends a command; false if the peer is gone.
  template <class T>
  bool send(const T& command) {
    return ::write(commands_, &command, sizeof command) == static_cast<ssize_t>(sizeof command);
  }
  // Closes the command pipe (the peer reads end of file), then waits for it.
  int finish() {
    if (commands_ >= 0) ::close(commands_);
    commands_ = -1;
    code_ = test::wait_child(pid_);
    return code_;
  }
  // Whether it is still running (without reaping it).
  bool alive() const {
    siginfo_t info{};
    return code_ == kRunning &&
           !(::waitid(P_PID, static_cast<id_t>(pid_), &info, WEXITED | WNOHANG | WNOWAIT) == 0 &&
             info.si_pid == pid_);
  }
  std::string error() const { return report_->error; }

 private:
  static constexpr int kRunning = -100;
  PeerReport* report_ = nullptr;
  pid_t pid_ = -1;
  int commands_ = -1;
  int ready_ = -1;
  int code_ = kRunning;
};

// The peer's side of the pipes.
bool say_ready(int ready_fd) {
  const char b = 1;
  return ::write(ready_fd, &b, 1) == 1;
}
template <class T>
bool receive(int commands_fd, T& command) {
  return ::read(commands_fd, &command, sizeof command) == static_cast<ssize_t>(sizeof command);
}

// ---- waiting on one descriptor ----------------------------------------------------

// An epoll instance watching one descriptor, as an event loop would.
class OneFdLoop {
 public:
  explicit OneFdLoop(int fd) : epoll_(::epoll_create1(EPOLL_CLOEXEC)) {
    epoll_event ev{};
    ev.events = EPOLLIN;
    ev.data.fd = fd;
    if (epoll_ < 0 || ::epoll_ctl(epoll_, EPOLL_CTL_ADD, fd, &ev) != 0) {
      throw std::runtime_error(std::string("epoll: ") + std::strerror(errno));
    }
  }
  OneFdLoop(const OneFdLoop&) = delete;
  OneFdLoop& operator=(const OneFdLoop&) = delete;
  ~OneFdLoop() { ::close(epoll_); }
  // Sleeps in epoll_wait until the descriptor is readable (true) or
  // `timeout` passed (false).
  bool wait(std::chrono::milliseconds timeout) const {
    const auto deadline = Clock::now() + timeout;
    for (;;) {
      const auto left =
          std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
      epoll_event ev{};
      const int n =
          ::epoll_wait(epoll_, &ev, 1, static_cast<int>(std::max<long long>(0, left.count())));
      if (n == 1) return true;
      if (n == 0) return false;
      if (errno != EINTR) return false;
    }
  }

 private:
  int epoll_;
};

// Irregular gaps, from none to tens of microseconds, so that the waiting side
// arms at every stage of a publication: before it, racing its position store
// and its load of the count, and after.
void jitter(std::mt19937& rng) {
  const unsigned r = rng() % 16;
  if (r == 0) {
    std::this_thread::sleep_for(std::chrono::microseconds(rng() % 50));
  } else if (r == 1) {
    std::this_thread::yield();
  } else if (r < 6) {
    for (auto spin = rng() % 2000; spin != 0; --spin) atomic::cpu_relax();
  }
}

// SHMRING_EVENT_SIGNALS_ONLY=1: looks an hour apart (see the top).
void maybe_signals_only(detail::EventWaiter& waiter) {
  const char* env = std::getenv("SHMRING_EVENT_SIGNALS_ONLY");
  if (env != nullptr && std::strcmp(env, "1") == 0) {
    waiter.set_look_schedule(std::chrono::hours(1), std::chrono::hours(1));
  }
}

std::uint64_t handoffs() {
  if (const char* env = std::getenv("SHMRING_EVENT_HANDOFFS"); env != nullptr && *env != '\0') {
    const long long v = std::atoll(env);
    return v < 1 ? 1 : static_cast<std::uint64_t>(v);
  }
  return test::msg::scaled(200'000, 20);
}

Segment make_ring(const test::UniqueShm& shm, RingKind kind, std::uint64_t capacity,
                  std::uint32_t subscribers = 0) {
  CreateOptions o;
  o.kind = kind;
  o.capacity = capacity;
  o.slot_size = kSlot;
  o.subscribers = subscribers;
  return Segment::create(shm.name(), o);
}

// ---- a WaitSet over 64 rings ---------------------------------------------------------

using AnyProducer = std::variant<SpscProducer, MpmcProducer, BroadcastProducer>;
using AnyConsumer = std::variant<SpscConsumer, MpmcConsumer, BroadcastSubscriber>;

AnyProducer attach_producer(const Segment& seg) {
  switch (seg.geometry().kind) {
    case RingKind::spsc:
      return SpscProducer::attach(seg);
    case RingKind::mpmc:
      return MpmcProducer::attach(seg);
    default:
      return BroadcastProducer::attach(seg);
  }
}

AnyConsumer attach_consumer(const Segment& seg) {
  switch (seg.geometry().kind) {
    case RingKind::spsc:
      return SpscConsumer::attach(seg);
    case RingKind::mpmc:
      return MpmcConsumer::attach(seg);
    default:
      return BroadcastSubscriber::attach(seg);
  }
}

// Which rings: 64 SPSC segments; 64 segments of the three kinds in turn; or
// 4 broadcast segments of 16 subscribers each (every event table full).
enum class Rings { spsc, mixed, full_broadcast_tables };

// One command to the peer: publish on `segment` the message of `round`.
struct Publish {
  std::uint32_t segment;
  std::uint32_t round;
};

void wait_set_over_64_rings(Rings rings) {
  constexpr std::size_t kHandles = 64;
  const std::size_t per_segment = rings == Rings::full_broadcast_tables ? kEventEntries : 1;
  const std::size_t segments = kHandles / per_segment;
  std::vector<std::unique_ptr<test::UniqueShm>> names;
  std::vector<Segment> segs;
  for (std::size_t s = 0; s < segments; ++s) {
    names.push_back(std::make_unique<test::UniqueShm>(std::to_string(s)));
    RingKind kind = RingKind::spsc;
    if (rings == Rings::full_broadcast_tables) kind = RingKind::broadcast;
    if (rings == Rings::mixed) {
      const RingKind kinds[3] = {RingKind::spsc, RingKind::mpmc, RingKind::broadcast};
      kind = kinds[s % 3];
    }
    segs.push_back(
        make_ring(*names.back(), kind, 8,
                  kind == RingKind::broadcast ? static_cast<std::uint32_t>(per_segment) : 0));
  }

  // The publishing process: a producer on every segment; publishes what it
  // is told, after a random gap, so that the wait below is mostly asleep
  // when the message lands.
  Peer peer([&](PeerReport& report, int commands, int ready) {
    std::vector<Segment> mine;
    std::vector<AnyProducer> producers;
    for (const auto& n : names) {
      mine.push_back(Segment::open(n->name()));
      producers.push_back(attach_producer(mine.back()));
    }
    if (!say_ready(ready)) return peer_fail(report, "cannot say ready");
    std::mt19937 rng(7);
    Publish cmd{};
    while (receive(commands, cmd)) {
      jitter(rng);
      const std::array<std::uint32_t, 2> m{cmd.segment, cmd.round};
      const Status s =
          std::visit([&](auto& tx) { return tx.try_push(std::as_bytes(std::span(m))); },
                     producers[cmd.segment]);
      if (s != Status::ok) {
        return peer_fail(report, "ring %u, round %u: try_push said %s", cmd.segment, cmd.round,
                         to_string(s));
      }
    }
    return 0;
  });
  ASSERT_TRUE(peer.wait_ready()) << peer.error();

  std::vector<AnyConsumer> consumers;
  std::vector<std::size_t> segment_of;
  consumers.reserve(kHandles);
  WaitSet set;
  for (std::size_t s = 0; s < segments; ++s) {
    for (std::size_t k = 0; k < per_segment; ++k) {
      consumers.push_back(attach_consumer(segs[s]));
      segment_of.push_back(s);
      std::visit([&](auto& rx) { set.add(rx, consumers.size() - 1); }, consumers.back());
    }
  }
  ASSERT_EQ(set.size(), kHandles);
  EXPECT_TRUE(set.wait(0ns).empty()) << "nothing published yet, yet something was ready";

  // Every segment twice, in a random order each time.
  std::vector<std::uint32_t> order(segments);
  std::iota(order.begin(), order.end(), 0u);
  std::mt19937 rng(11);
  std::uint32_t round = 0;
  std::array<std::byte, kSlot> buf{};
  for (int pass = 0; pass < 2; ++pass) {
    std::shuffle(order.begin(), order.end(), rng);
    for (const std::uint32_t s : order) {
      ++round;
      ASSERT_TRUE(peer.send(Publish{s, round})) << "the publisher is gone: " << peer.error();
      // Waits until every handle of ring s has been reported once; each is
      // drained as it is reported, as an event loop does. A broadcast
      // publisher writes to its subscribers' FIFOs one after the other, so
      // they may come in several waits.
      std::vector<std::uint64_t> want(per_segment);
      std::iota(want.begin(), want.end(), std::uint64_t{s} * per_segment);
      std::vector<std::uint64_t> got;
      const auto deadline = Clock::now() + kWaitDeadline;
      while (got.size() < want.size()) {
        const auto now = Clock::now();
        const auto& ready = set.wait(now < deadline ? deadline - now : 0ns);
        ASSERT_FALSE(ready.empty())
            << "ring " << s << " (round " << round << "): " << got.size() << " of " << want.size()
            << " handles reported within 2 s; publisher: "
            << (peer.alive() ? "alive" : peer.error());
        for (const WaitSet::Ready& r : ready) {
          ASSERT_TRUE(std::binary_search(want.begin(), want.end(), r.tag))
              << "ring " << s << " (round " << round << "): handle " << r.tag << " of ring "
              << segment_of[r.tag] << " was reported, with nothing published there";
          ASSERT_EQ(std::count(got.begin(), got.end(), r.tag), 0)
              << "handle " << r.tag << " reported again after it was drained";
          got.push_back(r.tag);
          AnyConsumer& rx = consumers[r.tag];
          std::size_t size = 0;
          auto pop = [&] { return std::visit([&](auto& c) { return c.try_pop(buf, size); }, rx); };
          ASSERT_EQ(pop(), Status::ok) << "handle " << r.tag << " was reported but found nothing";
          std::array<std::uint32_t, 2> m{};
          ASSERT_EQ(size, sizeof m);
          std::memcpy(m.data(), buf.data(), sizeof m);
          EXPECT_EQ(m[0], s);
          EXPECT_EQ(m[1], round);
          EXPECT_EQ(pop(), Status::would_block) << "handle " << r.tag << ": one message was sent";
        }
      }
      const auto& after = set.wait(0ns);
      EXPECT_TRUE(after.empty()) << "ring " << s << " drained, yet " << after.size()
                                 << " handles reported ready (first tag "
                                 << (after.empty() ? 0 : after[0].tag) << ")";
    }
  }
  EXPECT_EQ(peer.finish(), 0) << peer.error();
}

TEST(EventScale, WaitSetOver64SpscRingsReportsExactlyTheRingPublishedTo) {
  wait_set_over_64_rings(Rings::spsc);
}
TEST(EventScale, WaitSetOver64MixedRingsReportsExactlyTheRingPublishedTo) {
  wait_set_over_64_rings(Rings::mixed);
}
// A message on a broadcast ring is for every subscriber: the wait reports
// the 16 subscribers of that segment, whose table is full, and no other.
TEST(EventScale, WaitSetOver4FullBroadcastTablesReportsExactlyTheirSubscribers) {
  wait_set_over_64_rings(Rings::full_broadcast_tables);
}

// ---- lost wake-ups ---------------------------------------------------------------------

// Which side waits in epoll on its event_fd(); the other uses the blocking
// calls (spin, then futex) with jitter between messages.
enum class Epoll { consumer, producer, both };

struct HandoffStats {
  std::uint64_t waits = 0;        // epoll waits that ended readable
  std::uint64_t empty_wakes = 0;  // ... after which the first try found nothing
};

// The consumer loop of the protocol (docs/events.md): try_pop until
// would_block, then sleep in epoll on the descriptor; never a spin. Each
// message must be the next sequence number with its content intact. Returns
// "" or what went wrong, naming the message.
template <class Consumer>
std::string consume_by_epoll(Consumer& rx, std::uint64_t total, HandoffStats& stats) {
  const OneFdLoop loop(rx.event_fd());
  maybe_signals_only(rx.event_waiter());
  std::array<std::byte, kSlot> buf{};
  std::uint64_t seq = 0;
  bool after_wake = false;
  while (seq < total) {
    std::size_t size = 0;
    Status s;
    bool first = true;
    while ((s = rx.try_pop(buf, size)) == Status::ok) {
      test::msg::Header h{};
      const test::msg::Verdict v =
          test::msg::check(std::span(buf.data(), size), 1, total, kMaxPayload, h);
      if (v != test::msg::Verdict::ok) {
        return "message " + std::to_string(seq) + ": " + test::msg::to_string(v);
      }
      if (h.seq != seq) {
        return "expected message " + std::to_string(seq) + ", got " + std::to_string(h.seq);
      }
      ++seq;
      first = false;
    }
    if (after_wake && first) ++stats.empty_wakes;
    if (seq == total) break;  // what comes after the last (the close) is the caller's
    if (s != Status::would_block) {
      return "message " + std::to_string(seq) + ": try_pop said " + to_string(s);
    }
    if (!loop.wait(kWaitDeadline)) {
      // Stuck: was the message there all along (the wake-up was lost), or
      // did it never come?
      const Status late = rx.try_pop(buf, size);
      return late == Status::ok
                 ? "lost wake-up: message " + std::to_string(seq) +
                       " was in the ring, but the descriptor stayed unreadable for 2 s"
                 : "message " + std::to_string(seq) +
                       " never came within 2 s (the producer stalled; try_pop: " + to_string(late) +
                       ")";
    }
    ++stats.waits;
    after_wake = true;
  }
  return {};
}

// The producer loop: try_push until would_block, then sleep in epoll for
// room. Returns "" or what went wrong, naming the message.
template <class Producer>
std::string produce_by_epoll(Producer& tx, std::uint64_t total, HandoffStats& stats,
                             std::mt19937* rng) {
  const OneFdLoop loop(tx.event_fd());
  maybe_signals_only(tx.event_waiter());
  std::array<std::byte, kSlot> buf{};
  std::uint64_t seq = 0;
  bool after_wake = false;
  while (seq < total) {
    const std::size_t size = test::msg::write(buf, 0, seq, kMaxPayload);
    const Status s = tx.try_push(std::span(buf.data(), size));
    if (s == Status::ok) {
      ++seq;
      after_wake = false;
      if (rng != nullptr) jitter(*rng);
      continue;
    }
    if (after_wake) ++stats.empty_wakes;
    if (s != Status::would_block) {
      return "message " + std::to_string(seq) + ": try_push said " + to_string(s);
    }
    if (!loop.wait(kWaitDeadline)) {
      const Status late = tx.try_push(std::span(buf.data(), size));
      return late == Status::ok
                 ? "lost wake-up: there was room for message " + std::to_string(seq) +
                       ", but the descriptor stayed unreadable for 2 s"
                 : "no room for message " + std::to_string(seq) +
                       " within 2 s (the consumer stalled; try_push: " + to_string(late) + ")";
    }
    ++stats.waits;
    after_wake = true;
  }
  return {};
}

void handoffs_across_processes(Epoll who) {
  test::UniqueShm shm;
  // A ring of 2 fills at once: the producer waits for room at nearly every
  // message. Otherwise 8 slots, which the consumer drains between bursts.
  const std::uint64_t capacity = who == Epoll::consumer ? 8 : 2;
  const Segment seg = make_ring(shm, RingKind::spsc, capacity);
  const std::uint64_t total = handoffs();
  const bool parent_consumes = who != Epoll::producer;

  // The peer: the other role, by blocking calls (or by epoll too, for
  // Epoll::both), with jitter.
  Peer peer([&](PeerReport& report, int, int ready) {
    const Segment mine = Segment::open(shm.name());
    std::mt19937 rng(parent_consumes ? 21 : 22);
    std::array<std::byte, kSlot> buf{};
    if (parent_consumes) {
      SpscProducer tx = SpscProducer::attach(mine);
      if (!say_ready(ready)) return peer_fail(report, "cannot say ready");
      if (who == Epoll::both) {
        HandoffStats stats;
        const std::string why = produce_by_epoll(tx, total, stats, &rng);
        if (!why.empty()) return peer_fail(report, "producer: %s", why.c_str());
      } else {
        for (std::uint64_t seq = 0; seq < total; ++seq) {
          const std::size_t size = test::msg::write(buf, 0, seq, kMaxPayload);
          const Status s = tx.push(std::span(buf.data(), size), kWaitDeadline);
          if (s != Status::ok) {
            return peer_fail(report, "producer: push of message %llu said %s",
                             static_cast<unsigned long long>(seq), to_string(s));
          }
          jitter(rng);
        }
      }
      return tx.close() == Status::ok ? 0 : peer_fail(report, "producer: close failed");
    }
    SpscConsumer rx = SpscConsumer::attach(mine);
    if (!say_ready(ready)) return peer_fail(report, "cannot say ready");
    for (std::uint64_t seq = 0;; ++seq) {
      std::size_t size = 0;
      const Status s = rx.pop(buf, size, kWaitDeadline);
      if (seq == total) {
        return s == Status::closed ? 0
                                   : peer_fail(report,
                                               "consumer: after the last message, pop said "
                                               "%s, not closed",
                                               to_string(s));
      }
      if (s != Status::ok) {
        return peer_fail(report, "consumer: pop of message %llu said %s",
                         static_cast<unsigned long long>(seq), to_string(s));
      }
      test::msg::Header h{};
      const test::msg::Verdict v =
          test::msg::check(std::span(buf.data(), size), 1, total, kMaxPayload, h);
      if (v != test::msg::Verdict::ok || h.seq != seq) {
        return peer_fail(report, "consumer: message %llu: %s (seq %llu)",
                         static_cast<unsigned long long>(seq), test::msg::to_string(v),
                         static_cast<unsigned long long>(h.seq));
      }
      jitter(rng);
    }
  });
  ASSERT_TRUE(peer.wait_ready()) << peer.error();

  HandoffStats stats;
  const auto start = Clock::now();
  std::string why;
  if (parent_consumes) {
    SpscConsumer rx = SpscConsumer::attach(seg);
    why = consume_by_epoll(rx, total, stats);
    if (why.empty()) {
      // The producer closed after its last message: the descriptor says so.
      const OneFdLoop loop(rx.event_fd());
      std::array<std::byte, kSlot> buf{};
      std::size_t size = 0;
      // (A look may make it readable before the close lands: try again.)
      const auto deadline = Clock::now() + kWaitDeadline;
      Status s = rx.try_pop(buf, size);
      while (s == Status::would_block && Clock::now() < deadline && loop.wait(kWaitDeadline)) {
        s = rx.try_pop(buf, size);
      }
      EXPECT_EQ(s, Status::closed) << "after the last message";
    }
  } else {
    SpscProducer tx = SpscProducer::attach(seg);
    why = produce_by_epoll(tx, total, stats, nullptr);
    EXPECT_EQ(tx.close(), Status::ok);
  }
  const double seconds = std::chrono::duration<double>(Clock::now() - start).count();
  EXPECT_EQ(why, "") << (peer.alive() ? "" : "peer: " + peer.error());
  EXPECT_EQ(peer.finish(), 0) << peer.error();
  // Somebody must have slept, or the test tested nothing.
  EXPECT_GT(stats.waits, total / 100) << "the epoll side hardly ever waited";
  std::printf("%llu handoffs in %.2f s: %llu epoll waits, %llu of them found nothing first\n",
              static_cast<unsigned long long>(total), seconds,
              static_cast<unsigned long long>(stats.waits),
              static_cast<unsigned long long>(stats.empty_wakes));
}

TEST(EventLostWakeup, ConsumerWaitingInEpollOnlyGetsEveryMessage) {
  handoffs_across_processes(Epoll::consumer);
}
TEST(EventLostWakeup, ProducerWaitingForRoomInEpollOnlyOnARingOf2) {
  handoffs_across_processes(Epoll::producer);
}
TEST(EventLostWakeup, BothSidesWaitingInEpollOnlyOnARingOf2) {
  handoffs_across_processes(Epoll::both);
}

// ---- killed waiters ------------------------------------------------------------------------

std::uint32_t data_count(const Segment& seg) {
  return atomic::load_seq_cst(&test::control_of(seg.base())->consumer_wait.waiters);
}
std::uint32_t data_armed(const Segment& seg) {
  return atomic::load_seq_cst(&test::control_of(seg.base())->data_events.armed);
}
std::vector<std::string> data_fifos(const Segment& seg) {
  std::vector<std::string> paths;
  for (const EventEntry& e : test::control_of(seg.base())->data_events.entries) {
    std::array<std::uint8_t, kEventIdBytes> id{};
    std::memcpy(id.data(), e.endpoint, id.size());
    if (std::any_of(id.begin(), id.end(), [](std::uint8_t b) { return b != 0; })) {
      paths.push_back(detail::event_fifo_path(id));
    }
  }
  return paths;
}
bool exists(const std::string& path) {
  struct stat st {};
  return ::lstat(path.c_str(), &st) == 0;
}

// 16 consumer processes of an MPMC ring (a full table) each open their
// descriptor, which arms it on the empty ring, and are killed. Their raises
// of the count stay (every publication would take the wake path) until a
// collector finds their entries' locks gone: the next consumer to open a
// descriptor, or a producer's signaller.
void killed_consumers_collected(bool by_publisher) {
  test::UniqueShm shm;
  const Segment seg = make_ring(shm, RingKind::mpmc, 8);
  std::vector<std::unique_ptr<Peer>> waiters;
  for (std::size_t i = 0; i < kEventEntries; ++i) {
    waiters.push_back(std::make_unique<Peer>([&](PeerReport& report, int, int ready) {
      const Segment mine = Segment::open(shm.name());
      MpmcConsumer rx = MpmcConsumer::attach(mine);
      (void)rx.event_fd();
      // As an event loop starts: try; the would_block arms the descriptor.
      std::array<std::byte, kSlot> buf{};
      std::size_t size = 0;
      if (rx.try_pop(buf, size) != Status::would_block) {
        return peer_fail(report, "the empty ring gave a message");
      }
      if (!say_ready(ready)) return peer_fail(report, "cannot say ready");
      for (;;) ::pause();
    }));
    ASSERT_TRUE(waiters.back()->wait_ready()) << waiters.back()->error();
  }
  EXPECT_EQ(data_count(seg), kEventEntries * kEventWaiter);
  EXPECT_EQ(std::popcount(data_armed(seg)), static_cast<int>(kEventEntries));
  const std::vector<std::string> fifos = data_fifos(seg);
  ASSERT_EQ(fifos.size(), kEventEntries);
  for (const std::string& f : fifos) EXPECT_TRUE(exists(f)) << f;
  {
    // The table is full of live waiters.
    MpmcConsumer rx = MpmcConsumer::attach(seg);
    try {
      (void)rx.event_fd();
      ADD_FAILURE() << "a 17th descriptor was handed out while 16 waiters live";
    } catch (const Error& e) {
      EXPECT_EQ(e.code(), make_error_code(errc::role_taken)) << e.what();
    }
  }
  waiters.clear();  // SIGKILL and reaped: no destructor of theirs ran
  EXPECT_EQ(data_count(seg), kEventEntries * kEventWaiter)
      << "nothing collects before somebody looks";

  MpmcConsumer rx = MpmcConsumer::attach(seg);
  if (by_publisher) {
    MpmcProducer tx = MpmcProducer::attach(seg);
    const std::array<std::byte, 8> m{};
    ASSERT_EQ(tx.try_push(m), Status::ok);  // the count is raised: it signals, and collects
    EXPECT_EQ(data_count(seg), 0u) << "the dead waiters' raises were not dropped";
    EXPECT_EQ(data_armed(seg), 0u);
    for (const std::string& f : fifos) EXPECT_FALSE(exists(f)) << f << " was left behind";
    // A new consumer's descriptor: readable at once, the message is there.
    const OneFdLoop loop(rx.event_fd());
    EXPECT_TRUE(loop.wait(0ms));
    std::array<std::byte, kSlot> buf{};
    std::size_t size = 0;
    EXPECT_EQ(rx.try_pop(buf, size), Status::ok);
  } else {
    (void)rx.event_fd();  // registration collects first
    std::array<std::byte, kSlot> buf{};
    std::size_t size = 0;
    EXPECT_EQ(rx.try_pop(buf, size), Status::would_block);  // and this arms it
    EXPECT_EQ(data_count(seg), kEventWaiter) << "only the new waiter's raise may remain";
    EXPECT_EQ(data_armed(seg), std::uint32_t{1} << rx.event_waiter().entry());
    for (const std::string& f : fifos) EXPECT_FALSE(exists(f)) << f << " was left behind";
    // And the freed entries take 15 more waiters.
    std::vector<MpmcConsumer> more;
    for (std::size_t i = 1; i < kEventEntries; ++i) {
      more.push_back(MpmcConsumer::attach(seg));
      EXPECT_GE(more.back().event_fd(), 0);
      EXPECT_EQ(more.back().try_pop(buf, size), Status::would_block);
    }
    EXPECT_EQ(data_count(seg), kEventEntries * kEventWaiter);
  }
}

TEST(EventScaleDeath, SixteenKilledConsumersCollectedByTheNextRegistration) {
  killed_consumers_collected(false);
}
TEST(EventScaleDeath, SixteenKilledConsumersCollectedByAPublisher) {
  killed_consumers_collected(true);
}

}  // namespace
}  // namespace shmring
