// What waiting through the event descriptor costs (docs/events.md), between
// two processes pinned to two CPUs, next to the cache-line floor measured
// before and after:
//
//   futex   64 B round trip through two SPSC rings, both sides in blocking
//           pops that never spin (WaitPolicy with no spin or yield phase):
//           each message wakes a sleeper on the futex
//   epoll   the same, both sides waiting in epoll_wait on their consumer's
//           event_fd(), then try_pop until would_block (the protocol)
//   floors  the same sleep and wake without a ring: a futex ping-pong on a
//           shared word, and a byte through a pipe each way in epoll_wait
//   publish 64 B messages a second, try_push + try_pop with nobody waiting,
//           with and without event_fd() opened (and never waited on) on the
//           consumer handle: in one thread (push, then pop), and streaming
//           from a producer process to a consumer process that spins; and
//           the same stream to a consumer that waits in epoll, or in pop()
//
// Every message carries its sequence number (bench_support.hpp,
// MessageTemplate) and is checked on arrival; the echo side checks what it
// echoes. No Google Benchmark: one plain program, so that it runs wherever
// it is copied.
//
//   shmring_event_rtt_bench [--reps N] [--rounds N] [--messages N] [--quick] [--json]
//
// SHMRING_BENCH_CPUS="a,b" picks the two CPUs (default: the first two this
// process may use). --json prints one JSON object per repetition (for
// bench/events_bench.py, which interleaves them with the Python
// measurements and writes the report); without it, a table of medians.
#include <sys/epoll.h>
#include <sys/utsname.h>

#include <algorithm>
#include <array>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <map>
#include <string>
#include <string_view>
#include <thread>
#include <utility>
#include <vector>

#include "bench_support.hpp"
#include "shmring/shmring.hpp"

namespace {

using namespace shmring;
using namespace shmring::bench;
using namespace std::chrono_literals;

constexpr std::size_t kMessage = 64;
// How long each side holds its message in the "asleep" round trips: several
// times what arming a descriptor or entering the futex takes, and below the
// first look (kFirstSleep, 100 us), which would wake the waiter by itself.
constexpr std::chrono::nanoseconds kAsleep = std::chrono::microseconds(50);

struct Options {
  int reps = 5;
  std::uint64_t rounds = 20'000;       // round trips per latency measurement
  std::uint64_t warmup = 1'000;        // round trips before those
  std::uint64_t messages = 2'000'000;  // per publisher-rate measurement
  bool json = false;
};

std::vector<int> g_cpus;
std::uint64_t g_quantum = 1;

// ---- results ------------------------------------------------------------------------

struct Latency {
  double p50 = 0, p99 = 0, min = 0;
  double sleeps = -1;  // ring round trips: sleeps of both sides per round trip
};

// One repetition: every measurement once, in this order.
struct Rep {
  Latency floor_before, futex_floor, futex, pipe_floor, epoll, futex_asleep, epoll_asleep,
      floor_after;
  double same_thread_plain = 0, same_thread_fd = 0, same_thread_armed = 0;  // msg/s
  double stream_plain = 0, stream_fd = 0;                                   // msg/s
  double stream_epoll = 0, stream_blocking = 0;                             // msg/s
  std::string load_before, load_after;
};

std::string load_average() {
  std::ifstream f("/proc/loadavg");
  std::string a, b, c;
  f >> a >> b >> c;
  return a + " " + b + " " + c;
}

std::string cpu_model() {
  std::ifstream f("/proc/cpuinfo");
  for (std::string line; std::getline(f, line);) {
    if (line.rfind("model name", 0) == 0) {
      const auto colon = line.find(':');
      return colon == std::string::npos ? line
                                        : line.substr(line.find_first_not_of(' ', colon + 1));
    }
  }
  return "unknown";
}

[[noreturn]] void die(const std::string& why) {
  std::fprintf(stderr, "shmring_event_rtt_bench: %s\n", why.c_str());
  std::exit(1);
}

// The echo agent's outcome, or the failure of the measuring side.
void check_team(Team& team, bool ok, const char* what) {
  const bool finished = ok && team.wait_all(kFinished, 20s);
  const std::string problem = team.stop();
  std::string why = team.first_error();
  if (why.empty() && !ok) why = "the measuring side gave up (a lost message or a stalled peer)";
  if (why.empty() && !problem.empty()) why = problem;
  if (why.empty() && !finished) why = "the echo process did not finish";
  if (!why.empty()) die(std::string(what) + ": " + why);
}

// ---- the floor ------------------------------------------------------------------------

Latency floor_rtt(const Options& o) {
  SharedRegion region(sizeof(Control));
  Control* control = new (region.data()) Control{};
  SharedRegion line_region(4096);
  auto* line = static_cast<std::uint64_t*>(line_region.data());
  *line = 0;
  Team team(*control, /*separate_processes=*/true);
  team.spawn(0, g_cpus[1], [&] {
    Spinner spinner(*control, g_cpus[0] == g_cpus[1]);
    control->agents[0].state.store(kReady, std::memory_order_release);
    if (floor_echo(*control, 0, line, line, spinner)) {
      control->agents[0].state.store(kFinished, std::memory_order_release);
    }
  });
  if (!team.wait_all(kReady, 20s)) check_team(team, false, "floor");
  Spinner spinner(*control, g_cpus[0] == g_cpus[1], [&] { return team.children_alive(); });
  LatencyRecorder recorder(o.rounds);
  const TickCalibration calibration;
  std::uint64_t v = 0;
  bool ok = true;
  for (std::uint64_t i = 0; i < o.warmup && ok; ++i) ok = floor_round_trip(line, line, v, spinner);
  recorder.start();
  for (std::uint64_t i = 0; i < o.rounds && ok; ++i) {
    ok = floor_round_trip(line, line, v, spinner);
    recorder.lap();
  }
  const double ns_per_tick = calibration.ns_per_tick();
  atomic::store_release(line, kStopTag);
  check_team(team, ok, "floor");
  const auto s = recorder.summarise(ns_per_tick, g_quantum);
  return {s.p50, s.p99, s.min};
}

// An epoll instance on one descriptor, as an event loop has.
class Epoll {
 public:
  explicit Epoll(int fd) : epoll_(::epoll_create1(EPOLL_CLOEXEC)) {
    epoll_event ev{};
    ev.events = EPOLLIN;
    ev.data.fd = fd;
    if (epoll_ < 0 || ::epoll_ctl(epoll_, EPOLL_CTL_ADD, fd, &ev) != 0) {
      throw std::runtime_error(std::string("epoll: ") + std::strerror(errno));
    }
  }
  Epoll(const Epoll&) = delete;
  Epoll& operator=(const Epoll&) = delete;
  ~Epoll() { ::close(epoll_); }
  // Sleeps until readable (true) or `ms` passed (false).
  bool wait(int ms) const noexcept {
    epoll_event ev{};
    int n;
    while ((n = ::epoll_wait(epoll_, &ev, 1, ms)) < 0 && errno == EINTR) {
    }
    return n == 1;
  }

 private:
  int epoll_;
};

// ---- the kernel's floors -----------------------------------------------------------------

// What sleeping and waking cost without a ring, between the same two CPUs:
// a counter passed back and forth, each side asleep until the other's store.
//   futex  on the counter's word itself (shmring::futex::wait / wake_all),
//          the floor of the futex round trip
//   pipe   a byte through a pipe each way, each side in epoll_wait, the floor
//          of the epoll round trip
enum class KernelFloor { futex, pipe };

Latency kernel_floor(const Options& o, KernelFloor kind) {
  const char* what = kind == KernelFloor::futex ? "futex floor" : "pipe floor";
  SharedRegion region(sizeof(Control));
  Control* control = new (region.data()) Control{};
  SharedRegion words_region(4096);
  auto* ping = static_cast<std::uint32_t*>(words_region.data());
  std::uint32_t* pong = ping + 32;  // its own 128-byte block
  int to_echo[2] = {-1, -1};
  int to_main[2] = {-1, -1};
  if (kind == KernelFloor::pipe &&
      (::pipe2(to_echo, O_CLOEXEC) != 0 || ::pipe2(to_main, O_CLOEXEC) != 0)) {
    die(std::string("pipe: ") + std::strerror(errno));
  }
  const std::uint64_t total = o.warmup + o.rounds;
  Team team(*control, /*separate_processes=*/true);
  team.spawn(0, g_cpus[1], [&] {
    std::unique_ptr<Epoll> loop;
    if (kind == KernelFloor::pipe) loop = std::make_unique<Epoll>(to_echo[0]);
    control->agents[0].state.store(kReady, std::memory_order_release);
    for (std::uint64_t i = 0; i < total; ++i) {
      const auto v = static_cast<std::uint32_t>(i + 1);
      if (kind == KernelFloor::futex) {
        for (int idle = 0; atomic::load_acquire(ping) != v; ++idle) {
          if (idle > 20 || control->aborted()) {
            control->fail(0, "%s: ping %u never came", what, v);
            return;
          }
          futex::wait(ping, v - 1, 1s);
        }
        atomic::store_release(pong, v);
        futex::wake_all(pong);
        continue;
      }
      unsigned char b = 0;
      while (::read(to_echo[0], &b, 1) != 1) {
        if (!loop->wait(20000) || control->aborted()) {
          control->fail(0, "%s: ping %u never came", what, v);
          return;
        }
      }
      if (b != static_cast<unsigned char>(v) || ::write(to_main[1], &b, 1) != 1) {
        control->fail(0, "%s: ping %u arrived as %u or could not be answered", what, v, b);
        return;
      }
    }
    control->agents[0].state.store(kFinished, std::memory_order_release);
  });
  if (!team.wait_all(kReady, 20s)) check_team(team, false, what);
  std::unique_ptr<Epoll> loop;
  if (kind == KernelFloor::pipe) {
    loop = std::make_unique<Epoll>(to_main[0]);
    // Non-blocking reads: the wait is epoll's, as a ring's descriptor user has it.
    ::fcntl(to_main[0], F_SETFL, O_NONBLOCK);
  }
  LatencyRecorder recorder(o.rounds);
  const TickCalibration calibration;
  bool ok = true;
  for (std::uint64_t i = 0; i < total && ok; ++i) {
    if (i == o.warmup) recorder.start();
    const auto v = static_cast<std::uint32_t>(i + 1);
    if (kind == KernelFloor::futex) {
      atomic::store_release(ping, v);
      futex::wake_all(ping);
      for (int idle = 0; ok && atomic::load_acquire(pong) != v; ++idle) {
        ok = idle <= 20;
        futex::wait(pong, v - 1, 1s);
      }
    } else {
      unsigned char b = static_cast<unsigned char>(v);
      ok = ::write(to_echo[1], &b, 1) == 1;
      while (ok && ::read(to_main[0], &b, 1) != 1) ok = loop->wait(20000);
      ok = ok && b == static_cast<unsigned char>(v);
    }
    if (i >= o.warmup) recorder.lap();
  }
  const double ns_per_tick = calibration.ns_per_tick();
  if (!ok) control->abort.store(1, std::memory_order_release);
  check_team(team, ok, what);
  for (const int fd : {to_echo[0], to_echo[1], to_main[0], to_main[1]}) {
    if (fd >= 0) ::close(fd);
  }
  const auto s = recorder.summarise(ns_per_tick, g_quantum);
  return {s.p50, s.p99, s.min};
}

// ---- round trips through two rings ---------------------------------------------------------

// Sleeps on the futex at once: no spin, no yield.
constexpr WaitPolicy kNoSpin{0, 0, std::chrono::nanoseconds::zero()};

enum class Wait { futex, epoll };

// How often a side of a round trip really slept. Epoll: waits that lasted
// over kSleptNs (a descriptor that is readable already answers in well under
// a microsecond; a sleep and wake-up take several). Futex: the sleeps
// shmring's wait loop entered (wait_stats()).
struct Sleeps {
  std::uint64_t epoll_waits = 0;
  std::uint64_t epoll_slept = 0;
  std::uint64_t futex_sleeps = 0;
};
constexpr std::chrono::nanoseconds kSleptNs{2000};

// Takes the next message from `rx`, waiting as `how` says; false if the
// ring reported an error, the run was aborted, or nothing came for
// kStallLimit (a lost message or a dead peer).
bool take(SpscConsumer& rx, Wait how, const Epoll* loop, std::span<std::byte> buf,
          std::size_t& size, const Control& control, Sleeps& sleeps) {
  constexpr int kStallLimit = 20;  // seconds
  for (int idle = 0; idle < kStallLimit && !control.aborted();) {
    if (how == Wait::futex) {
      const Status s = rx.pop(buf, size, 1s);
      if (s == Status::ok) return true;
      if (s != Status::timeout) return false;
      ++idle;
      continue;
    }
    const Status s = rx.try_pop(buf, size);
    if (s == Status::ok) return true;
    if (s != Status::would_block) return false;
    const auto start = Clock::now();
    if (!loop->wait(1000)) ++idle;
    ++sleeps.epoll_waits;
    if (Clock::now() - start > kSleptNs) ++sleeps.epoll_slept;
  }
  return false;
}

// Spins until `delay` has passed since `from` (a pause between tries).
void spin_until(Clock::time_point from, std::chrono::nanoseconds delay) noexcept {
  while (Clock::now() - from < delay) atomic::cpu_relax();
}

// A 64 B round trip through a ping ring and a pong ring. `asleep` > 0: each
// side holds its message that long before sending it, so that the other has
// gone to sleep by then (in the futex, or in epoll_wait), and the echo's
// hold is taken off the result: the round trip of two sleeping peers. With
// 0, each side answers at once, and a waiter still arming when the answer
// comes does not sleep at all.
Latency ring_rtt(const Options& o, Wait how, std::chrono::nanoseconds asleep) {
  const char* what = how == Wait::futex ? "futex round trip" : "epoll round trip";
  SharedRegion region(sizeof(Control));
  Control* control = new (region.data()) Control{};
  CreateOptions co;
  co.capacity = 8;
  co.slot_size = kMessage;
  NameGuard ping_name(unique_name("ping"));
  NameGuard pong_name(unique_name("pong"));
  const Segment ping = Segment::create(ping_name.name(), co);
  const Segment pong = Segment::create(pong_name.name(), co);
  const std::uint64_t total = o.warmup + o.rounds;
  SharedRegion echo_sleeps_region(sizeof(Sleeps));
  auto* echo_sleeps = new (echo_sleeps_region.data()) Sleeps{};

  Team team(*control, /*separate_processes=*/true);
  team.spawn(0, g_cpus[1], [&] {
    const Segment in_seg = Segment::open(ping_name.name());
    const Segment out_seg = Segment::open(pong_name.name());
    SpscConsumer rx = SpscConsumer::attach(in_seg, kNoSpin);
    SpscProducer tx = SpscProducer::attach(out_seg, kNoSpin);
    std::unique_ptr<Epoll> loop;
    if (how == Wait::epoll) loop = std::make_unique<Epoll>(rx.event_fd());
    MessageTemplate msg(kMessage);
    std::array<std::byte, kMessage> buf{};
    Sleeps sleeps;
    const std::uint64_t sleeps_before = wait_stats().sleeps;
    control->agents[0].state.store(kReady, std::memory_order_release);
    for (std::uint64_t i = 0; i < total; ++i) {
      std::size_t size = 0;
      if (!take(rx, how, loop.get(), buf, size, *control, sleeps)) {
        control->fail(0, "echo: ping %llu never came", static_cast<unsigned long long>(i));
        return;
      }
      std::uint64_t tag = 0;
      if (!msg.check_copied(buf.data(), size, tag) || tag != i) {
        control->fail(0, "echo: ping %llu arrived as %llu", static_cast<unsigned long long>(i),
                      static_cast<unsigned long long>(tag));
        return;
      }
      if (asleep.count() != 0) spin_until(Clock::now(), asleep);
      // One message in flight: the pong ring always has room.
      if (const Status s = tx.try_push(msg.stamped(tag)); s != Status::ok) {
        control->fail(0, "echo: pong %llu: %s", static_cast<unsigned long long>(i), to_string(s));
        return;
      }
    }
    sleeps.futex_sleeps = wait_stats().sleeps - sleeps_before;
    *echo_sleeps = sleeps;
    tx.set_close_on_exit(false);
    control->agents[0].state.store(kFinished, std::memory_order_release);
  });
  if (!team.wait_all(kReady, 20s)) check_team(team, false, what);

  SpscProducer tx = SpscProducer::attach(ping, kNoSpin);
  SpscConsumer rx = SpscConsumer::attach(pong, kNoSpin);
  std::unique_ptr<Epoll> loop;
  if (how == Wait::epoll) loop = std::make_unique<Epoll>(rx.event_fd());
  MessageTemplate msg(kMessage);
  std::array<std::byte, kMessage> buf{};
  LatencyRecorder recorder(o.rounds);
  const TickCalibration calibration;
  Sleeps sleeps;
  const std::uint64_t sleeps_before = wait_stats().sleeps;
  bool ok = true;
  for (std::uint64_t i = 0; i < total && ok; ++i) {
    if (asleep.count() != 0) {
      spin_until(Clock::now(), asleep);
      recorder.start();  // the interval is this round trip alone
    } else if (i == o.warmup) {
      recorder.start();
    }
    if (tx.try_push(msg.stamped(i)) != Status::ok) {
      ok = false;
      break;
    }
    std::size_t size = 0;
    std::uint64_t tag = 0;
    ok = take(rx, how, loop.get(), buf, size, *control, sleeps) &&
         msg.check_copied(buf.data(), size, tag) && tag == i;
    if (i >= o.warmup) recorder.lap();
  }
  const double ns_per_tick = calibration.ns_per_tick();
  sleeps.futex_sleeps = wait_stats().sleeps - sleeps_before;
  if (!ok) control->abort.store(1, std::memory_order_release);
  check_team(team, ok, what);
  auto s = recorder.summarise(ns_per_tick, g_quantum);
  const double hold = static_cast<double>(asleep.count());
  s.p50 -= hold;
  s.p99 -= hold;
  s.min -= hold;
  // Sleeps of both sides per round trip (warm-up included in both counts).
  const double per = 1.0 / static_cast<double>(total);
  const double slept =
      how == Wait::futex
          ? static_cast<double>(sleeps.futex_sleeps + echo_sleeps->futex_sleeps) * per
          : static_cast<double>(sleeps.epoll_slept + echo_sleeps->epoll_slept) * per;
  return {s.p50, s.p99, s.min, slept};
}

// ---- the publisher with nobody waiting ------------------------------------------------------

// What the consumer's descriptor is doing in same_thread_rate().
enum class Descriptor {
  none,    // never asked for
  opened,  // event_fd() was asked for, and nothing else
  armed,   // then a try_pop said would_block, which armed it, as an event
           // loop's last try before it waits; it is never waited on
};

// One thread: try_push, then try_pop of that message, `messages` times.
double same_thread_rate(const Options& o, Descriptor descriptor) {
  CreateOptions co;
  co.capacity = 1024;
  co.slot_size = kMessage;
  NameGuard name(unique_name("same"));
  const Segment seg = Segment::create(name.name(), co);
  SpscProducer tx = SpscProducer::attach(seg);
  SpscConsumer rx = SpscConsumer::attach(seg);
  MessageTemplate msg(kMessage);
  std::array<std::byte, kMessage> buf{};
  if (descriptor != Descriptor::none) (void)rx.event_fd();
  if (descriptor == Descriptor::armed) {
    std::size_t size = 0;
    if (rx.try_pop(buf, size) != Status::would_block) die("same-thread: the empty ring said ok");
  }
  const auto start = Clock::now();
  for (std::uint64_t i = 0; i < o.messages; ++i) {
    std::size_t size = 0;
    std::uint64_t tag = 0;
    if (tx.try_push(msg.stamped(i)) != Status::ok || rx.try_pop(buf, size) != Status::ok ||
        !msg.check_copied(buf.data(), size, tag) || tag != i) {
      die("same-thread push/pop: message " + std::to_string(i) + " lost or damaged");
    }
  }
  const double s = std::chrono::duration<double>(Clock::now() - start).count();
  return static_cast<double>(o.messages) / s;
}

// How the consumer of stream_rate() waits when the ring is empty.
enum class StreamConsumer {
  spin,      // try_pop again (the Spinner), no descriptor
  spin_fd,   // the same with event_fd() opened and never waited on: each
             // try_pop that finds the ring empty re-arms it
  epoll,     // sleeps in epoll_wait on event_fd() (the protocol)
  blocking,  // pop(), shmring's wait loop (spin, then futex)
};

// A producer (this process) streams to a consumer process; the producer
// spins on would_block (the Spinner). The rate is the consumer's, first
// message to last.
double stream_rate(const Options& o, StreamConsumer how) {
  SharedRegion region(sizeof(Control));
  Control* control = new (region.data()) Control{};
  struct Result {
    alignas(128) double seconds = 0;
  };
  SharedRegion result_region(sizeof(Result));
  auto* result = new (result_region.data()) Result{};
  CreateOptions co;
  co.capacity = 1024;
  co.slot_size = kMessage;
  NameGuard name(unique_name("stream"));
  const Segment seg = Segment::create(name.name(), co);
  const bool share = g_cpus[0] == g_cpus[1];

  Team team(*control, /*separate_processes=*/true);
  team.spawn(0, g_cpus[1], [&] {
    const Segment mine = Segment::open(name.name());
    SpscConsumer rx = SpscConsumer::attach(mine);
    std::unique_ptr<Epoll> loop;
    if (how == StreamConsumer::spin_fd) (void)rx.event_fd();
    if (how == StreamConsumer::epoll) loop = std::make_unique<Epoll>(rx.event_fd());
    MessageTemplate msg(kMessage);
    std::array<std::byte, kMessage> buf{};
    Spinner spinner(*control, share);
    Sleeps sleeps;
    control->agents[0].state.store(kReady, std::memory_order_release);
    Clock::time_point first{};
    for (std::uint64_t i = 0; i < o.messages;) {
      std::size_t size = 0;
      Status s;
      if (how == StreamConsumer::blocking || how == StreamConsumer::epoll) {
        s = take(rx, how == StreamConsumer::epoll ? Wait::epoll : Wait::futex, loop.get(), buf,
                 size, *control, sleeps)
                ? Status::ok
                : Status::timeout;
      } else {
        s = rx.try_pop(buf, size);
      }
      if (s == Status::would_block) {
        if (!spinner.failed_attempt()) {
          control->fail(0, "consumer: message %llu never came", static_cast<unsigned long long>(i));
          return;
        }
        continue;
      }
      std::uint64_t tag = 0;
      if (s != Status::ok || !msg.check_copied(buf.data(), size, tag) || tag != i) {
        control->fail(0, "consumer: message %llu: %s, tag %llu", static_cast<unsigned long long>(i),
                      to_string(s), static_cast<unsigned long long>(tag));
        return;
      }
      if (i == 0) first = Clock::now();
      spinner.progress();
      ++i;
    }
    result->seconds = std::chrono::duration<double>(Clock::now() - first).count();
    control->agents[0].state.store(kFinished, std::memory_order_release);
  });
  if (!team.wait_all(kReady, 20s)) check_team(team, false, "stream");
  {
    SpscProducer tx = SpscProducer::attach(seg);
    tx.set_close_on_exit(false);
    MessageTemplate msg(kMessage);
    Spinner spinner(*control, share, [&] { return team.children_alive(); });
    bool ok = true;
    for (std::uint64_t i = 0; i < o.messages && ok;) {
      if (tx.try_push(msg.stamped(i)) == Status::ok) {
        spinner.progress();
        ++i;
      } else {
        ok = spinner.failed_attempt();
      }
    }
    check_team(team, ok, "stream");
  }
  return static_cast<double>(o.messages - 1) / result->seconds;
}

// ---- the run --------------------------------------------------------------------------------

Rep one_rep(const Options& o) {
  Rep r;
  r.load_before = load_average();
  r.floor_before = floor_rtt(o);
  r.futex_floor = kernel_floor(o, KernelFloor::futex);
  r.futex = ring_rtt(o, Wait::futex, 0ns);
  r.pipe_floor = kernel_floor(o, KernelFloor::pipe);
  r.epoll = ring_rtt(o, Wait::epoll, 0ns);
  r.futex_asleep = ring_rtt(o, Wait::futex, kAsleep);
  r.epoll_asleep = ring_rtt(o, Wait::epoll, kAsleep);
  r.same_thread_plain = same_thread_rate(o, Descriptor::none);
  r.same_thread_fd = same_thread_rate(o, Descriptor::opened);
  r.same_thread_armed = same_thread_rate(o, Descriptor::armed);
  r.stream_plain = stream_rate(o, StreamConsumer::spin);
  r.stream_fd = stream_rate(o, StreamConsumer::spin_fd);
  r.stream_epoll = stream_rate(o, StreamConsumer::epoll);
  r.stream_blocking = stream_rate(o, StreamConsumer::blocking);
  r.floor_after = floor_rtt(o);
  r.load_after = load_average();
  return r;
}

std::string json_latency(const Latency& l) {
  char b[160];
  std::snprintf(b, sizeof b,
                "{\"p50_ns\": %.1f, \"p99_ns\": %.1f, \"min_ns\": %.1f, \"sleeps\": %.2f}", l.p50,
                l.p99, l.min, l.sleeps);
  return b;
}

void print_json(const Rep& r, const Options& o) {
  std::printf(
      "{\"cpu_model\": \"%s\", \"cpus_online\": %ld, \"pinned\": \"%s\", \"rounds\": %llu, "
      "\"messages\": %llu, \"load_before\": \"%s\", \"load_after\": \"%s\", "
      "\"floor_before\": %s, \"futex_floor\": %s, \"futex\": %s, \"pipe_floor\": %s, "
      "\"epoll\": %s, \"futex_asleep\": %s, \"epoll_asleep\": %s, \"floor_after\": %s, "
      "\"same_thread_plain\": %.0f, \"same_thread_fd\": %.0f, \"same_thread_armed\": %.0f, "
      "\"stream_plain\": %.0f, "
      "\"stream_fd\": %.0f, \"stream_epoll\": %.0f, \"stream_blocking\": %.0f}\n",
      cpu_model().c_str(), ::sysconf(_SC_NPROCESSORS_ONLN), cpu_list_string(g_cpus).c_str(),
      static_cast<unsigned long long>(o.rounds), static_cast<unsigned long long>(o.messages),
      r.load_before.c_str(), r.load_after.c_str(), json_latency(r.floor_before).c_str(),
      json_latency(r.futex_floor).c_str(), json_latency(r.futex).c_str(),
      json_latency(r.pipe_floor).c_str(), json_latency(r.epoll).c_str(),
      json_latency(r.futex_asleep).c_str(), json_latency(r.epoll_asleep).c_str(),
      json_latency(r.floor_after).c_str(), r.same_thread_plain, r.same_thread_fd,
      r.same_thread_armed, r.stream_plain, r.stream_fd, r.stream_epoll, r.stream_blocking);
  std::fflush(stdout);
}

// Median and range of one quantity over the repetitions.
struct Spread {
  double median, min, max;
};
template <class Get>
Spread spread(const std::vector<Rep>& reps, Get get) {
  std::vector<double> v;
  for (const Rep& r : reps) v.push_back(get(r));
  std::sort(v.begin(), v.end());
  const std::size_t n = v.size();
  const double med = n % 2 == 1 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
  return {med, v.front(), v.back()};
}

void print_table(const std::vector<Rep>& reps, const Options& o) {
  std::printf("machine: %s, %ld CPUs online; pinned to CPUs %s; %d repetitions\n",
              cpu_model().c_str(), ::sysconf(_SC_NPROCESSORS_ONLN), cpu_list_string(g_cpus).c_str(),
              static_cast<int>(reps.size()));
  std::printf("round trips: %llu per measurement (after %llu warm-up); rates: %llu messages\n\n",
              static_cast<unsigned long long>(o.rounds), static_cast<unsigned long long>(o.warmup),
              static_cast<unsigned long long>(o.messages));
  const std::pair<const char*, Latency Rep::*> rows[] = {
      {"cache-line floor, before", &Rep::floor_before},
      {"futex wait/wake ping-pong (floor)", &Rep::futex_floor},
      {"64 B round trip, futex (no spin)", &Rep::futex},
      {"pipe + epoll ping-pong (floor)", &Rep::pipe_floor},
      {"64 B round trip, epoll + event_fd", &Rep::epoll},
      {"  the same, both peers asleep: futex", &Rep::futex_asleep},
      {"  the same, both peers asleep: epoll", &Rep::epoll_asleep},
      {"cache-line floor, after", &Rep::floor_after},
  };
  for (const auto& [name, field] : rows) {
    const Spread a = spread(reps, [field](const Rep& r) { return (r.*field).p50; });
    const Spread b = spread(reps, [field](const Rep& r) { return (r.*field).p99; });
    std::printf("  %-38s p50 %8.2f us (%.2f-%.2f)   p99 %8.2f us (%.2f-%.2f)", name, a.median / 1e3,
                a.min / 1e3, a.max / 1e3, b.median / 1e3, b.min / 1e3, b.max / 1e3);
    if ((reps.front().*field).sleeps >= 0) {
      std::printf("   sleeps per round trip %.2f",
                  spread(reps, [field](const Rep& r) { return (r.*field).sleeps; }).median);
    }
    std::printf("\n");
  }
  auto rate = [&](const char* name, auto get) {
    const Spread s = spread(reps, get);
    std::printf("  %-38s %8.2f M msg/s (%.2f-%.2f)\n", name, s.median / 1e6, s.min / 1e6,
                s.max / 1e6);
  };
  std::printf("\n");
  rate("one thread, no descriptor", [](const Rep& r) { return r.same_thread_plain; });
  rate("one thread, event_fd() opened", [](const Rep& r) { return r.same_thread_fd; });
  rate("one thread, event_fd() armed", [](const Rep& r) { return r.same_thread_armed; });
  rate("two processes, no descriptor", [](const Rep& r) { return r.stream_plain; });
  rate("two processes, event_fd() opened", [](const Rep& r) { return r.stream_fd; });
  rate("two processes, consumer in epoll", [](const Rep& r) { return r.stream_epoll; });
  rate("two processes, consumer in pop()", [](const Rep& r) { return r.stream_blocking; });
  const double epoll_ratio = spread(reps, [](const Rep& r) { return r.epoll.p50; }).median /
                             spread(reps, [](const Rep& r) { return r.futex.p50; }).median;
  const double asleep_ratio = spread(reps, [](const Rep& r) { return r.epoll_asleep.p50; }).median /
                              spread(reps, [](const Rep& r) { return r.futex_asleep.p50; }).median;
  std::printf("\nepoll / futex round trip p50: %.2fx, both peers asleep %.2fx (target <= 2x)\n",
              epoll_ratio, asleep_ratio);
  std::printf(
      "publisher rate with / without descriptor: one thread %.2fx (armed, never waited on "
      "%.2fx), two processes %.2fx (target ~1.0x)\n",
      spread(reps, [](const Rep& r) { return r.same_thread_fd; }).median /
          spread(reps, [](const Rep& r) { return r.same_thread_plain; }).median,
      spread(reps, [](const Rep& r) { return r.same_thread_armed; }).median /
          spread(reps, [](const Rep& r) { return r.same_thread_plain; }).median,
      spread(reps, [](const Rep& r) { return r.stream_fd; }).median /
          spread(reps, [](const Rep& r) { return r.stream_plain; }).median);
}

std::uint64_t number(const char* flag, const char* text) {
  char* end = nullptr;
  const unsigned long long v = std::strtoull(text, &end, 10);
  if (text[0] == '\0' || *end != '\0' || v == 0) {
    die(std::string(flag) + " needs a positive number, not '" + text + "'");
  }
  return v;
}

}  // namespace

int main(int argc, char** argv) {
  Options o;
  for (int i = 1; i < argc; ++i) {
    const std::string_view a = argv[i];
    auto value = [&]() -> const char* {
      if (i + 1 >= argc) die(std::string(a) + " needs a value");
      return argv[++i];
    };
    if (a == "--reps") {
      o.reps = static_cast<int>(number("--reps", value()));
    } else if (a == "--rounds") {
      o.rounds = number("--rounds", value());
      o.warmup = std::max<std::uint64_t>(1, o.rounds / 20);
    } else if (a == "--messages") {
      o.messages = number("--messages", value());
    } else if (a == "--quick") {
      o.reps = 1;
      o.rounds = 300;
      o.warmup = 30;
      o.messages = 20'000;
    } else if (a == "--json") {
      o.json = true;
    } else if (a == "--help" || a == "-h") {
      std::printf(
          "usage: shmring_event_rtt_bench [--reps N] [--rounds N] [--messages N] [--quick] "
          "[--json]\n"
          "  --reps N      repetitions, each every measurement once (default 5)\n"
          "  --rounds N    round trips per latency measurement (default 20000)\n"
          "  --messages N  messages per publisher-rate measurement (default 2000000)\n"
          "  --quick       one short repetition (a smoke run)\n"
          "  --json        one JSON object per repetition instead of the table\n"
          "SHMRING_BENCH_CPUS=a,b: the two CPUs (default: the first two allowed)\n");
      return 0;
    } else {
      die("unknown argument '" + std::string(a) + "' (--help lists them)");
    }
  }
  try {
    g_cpus = bench_cpus_from_env();
  } catch (const std::exception& e) {
    die(e.what());
  }
  if (!pin_to_cpu(g_cpus[0])) die("cannot pin to CPU " + std::to_string(g_cpus[0]));
  g_quantum = tick_quantum();
  std::vector<Rep> reps;
  try {
    for (int i = 0; i < o.reps; ++i) {
      reps.push_back(one_rep(o));
      if (o.json) print_json(reps.back(), o);
    }
  } catch (const std::exception& e) {
    die(e.what());
  }
  if (!o.json) print_table(reps, o);
  if (const auto left = remove_leftover_segments(); !left.empty()) {
    die("segments left behind: " + left.front());
  }
  return 0;
}
