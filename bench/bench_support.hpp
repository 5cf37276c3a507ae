// Machinery shared by the ring benchmarks: core pinning, a control block in
// shared memory, agents that run as threads or as forked processes, spin
// loops that give up instead of hanging, a cycle counter, message stamping
// and the percentile arithmetic.
#pragma once

#include <dirent.h>
#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#if defined(__x86_64__) || defined(__i386__)
#include <x86intrin.h>
#endif

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdarg>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <functional>
#include <span>
#include <stdexcept>
#include <string>
#include <string_view>
#include <thread>
#include <utility>
#include <vector>

#include "harness/cpus.hpp"
#include "harness/processes.hpp"
#include "harness/watchdog.hpp"
#include "shmring/atomic.hpp"

namespace shmring::bench {

using Clock = std::chrono::steady_clock;

// ---- cores -----------------------------------------------------------------

// SHMRING_BENCH_CPUS="a,b[,c,...]" (ranges "a-b" allowed). The first two
// carry every SPSC and latency benchmark; MPMC producer i runs on entry 2i,
// consumer i on entry 2i+1 (modulo the list), so a longer list spreads wider
// MPMC configurations over more cores.
inline std::vector<int> parse_cpu_list(std::string_view text) {
  std::vector<int> cpus = harness::parse_cpu_list(text);
  if (cpus.size() < 2) cpus.push_back(cpus[0]);
  return cpus;
}

// SHMRING_BENCH_CPUS if set; else the first two CPUs this process may run
// on (the same one twice on a single-CPU machine: slow, but it runs).
inline std::vector<int> bench_cpus_from_env() {
  const char* env = std::getenv("SHMRING_BENCH_CPUS");
  if (env != nullptr && *env != '\0') return parse_cpu_list(env);
  std::vector<int> cpus = harness::allowed_cpus();
  if (cpus.size() > 2) cpus.resize(2);
  if (cpus.empty()) cpus.push_back(0);
  if (cpus.size() < 2) cpus.push_back(cpus[0]);
  return cpus;
}

// Removes and lists the segments this process left in /dev/shm (a benchmark
// that does so has a cleanup bug).
inline std::vector<std::string> remove_leftover_segments() {
  std::vector<std::string> left;
  const std::string prefix = "shmring_bench_" + std::to_string(::getpid()) + "_";
  if (DIR* dir = ::opendir("/dev/shm")) {
    while (const dirent* e = ::readdir(dir)) {
      if (std::string_view(e->d_name).starts_with(prefix)) left.emplace_back(e->d_name);
    }
    ::closedir(dir);
  }
  for (const std::string& name : left) ::shm_unlink(("/" + name).c_str());
  return left;
}

inline std::string cpu_list_string(const std::vector<int>& cpus) {
  std::string s;
  for (int c : cpus) {
    if (!s.empty()) s += ',';
    s += std::to_string(c);
  }
  return s;
}

using harness::pin_to_cpu;

// ---- names and shared memory -------------------------------------------------

// "shmring_bench_<pid>_<n>_<what>": unique per process and call, and easy to
// find in /dev/shm if a run is killed before it unlinks.
inline std::string unique_name(std::string_view what) {
  static std::atomic<unsigned> counter{0};
  return "shmring_bench_" + std::to_string(::getpid()) + "_" +
         std::to_string(counter.fetch_add(1)) + "_" + std::string(what);
}

// A small shared-memory region from /dev/shm whose name is removed as soon as
// it is mapped: forked children inherit the mapping, and nothing is left
// behind whatever happens to the run.
class SharedRegion {
 public:
  explicit SharedRegion(std::size_t size) : size_(size) {
    const std::string name = "/" + unique_name("ctl");
    const int fd = ::shm_open(name.c_str(), O_RDWR | O_CREAT | O_EXCL, 0600);
    if (fd < 0) throw std::runtime_error("shm_open " + name + ": " + std::strerror(errno));
    ::shm_unlink(name.c_str());
    if (::ftruncate(fd, static_cast<off_t>(size)) != 0) {
      const int err = errno;
      ::close(fd);
      throw std::runtime_error("ftruncate " + name + ": " + std::strerror(err));
    }
    base_ = ::mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    const int err = errno;
    ::close(fd);
    if (base_ == MAP_FAILED) throw std::runtime_error("mmap " + name + ": " + std::strerror(err));
  }
  SharedRegion(const SharedRegion&) = delete;
  SharedRegion& operator=(const SharedRegion&) = delete;
  ~SharedRegion() { ::munmap(base_, size_); }
  void* data() const noexcept { return base_; }
  std::size_t size() const noexcept { return size_; }

 private:
  void* base_ = MAP_FAILED;
  std::size_t size_ = 0;
};

// Unlinks a ring segment's name at scope exit (and on request earlier), so
// /dev/shm stays clean on every path out of a benchmark.
class NameGuard {
 public:
  explicit NameGuard(std::string name) : name_(std::move(name)) {}
  NameGuard(const NameGuard&) = delete;
  NameGuard& operator=(const NameGuard&) = delete;
  ~NameGuard() { remove(); }
  const std::string& name() const noexcept { return name_; }
  void remove() noexcept {
    if (!removed_) ::shm_unlink(("/" + name_).c_str());
    removed_ = true;
  }

 private:
  std::string name_;
  bool removed_ = false;
};

// Maps every page of a mapping now, so that page faults of the first lap do
// not land inside the measured interval. The contents are left untouched.
inline void prefault(void* base, std::size_t size) noexcept {
#ifndef MADV_POPULATE_WRITE
#define MADV_POPULATE_WRITE 23
#endif
  if (::madvise(base, size, MADV_POPULATE_WRITE) == 0) return;
  // Older kernels: read every page (maps the pages; a write later may still
  // take a minor fault, outside the first lap's critical path at worst).
  const long page = ::sysconf(_SC_PAGESIZE);
  volatile const unsigned char* p = static_cast<const unsigned char*>(base);
  unsigned sink = 0;
  for (std::size_t off = 0; off < size; off += static_cast<std::size_t>(page)) sink += p[off];
  (void)sink;
}

// ---- the control block ---------------------------------------------------------

inline constexpr int kMaxAgents = 32;
inline constexpr unsigned kMaxProducers = 16;
// The benchmark thread's own record (producer 0), after every spawned agent's.
inline constexpr int kMainAgent = kMaxAgents - 1;
static_assert(2 * kMaxProducers <= kMaxAgents);

enum AgentState : std::uint32_t { kStarting = 0, kReady = 1, kFinished = 2, kFailed = 3 };

// Per producer, as seen by one consumer: how many of its messages, and the
// sum of their sequence numbers (with the per-consumer order check, this
// catches a lost, duplicated or reordered message).
struct Tally {
  std::uint64_t count = 0;
  std::uint64_t sum = 0;
};

struct alignas(128) AgentRecord {
  std::atomic<std::uint32_t> state{kStarting};
  std::uint64_t messages = 0;
  char error[200] = {};
  Tally tally[kMaxProducers] = {};
};

// Lives in a SharedRegion. Each field that somebody polls sits in its own
// 128-byte block, and none is written during a measurement except
// producers_done (once per producer, at its end).
struct Control {
  alignas(128) std::atomic<std::uint32_t> go{0};
  alignas(128) std::atomic<std::uint32_t> abort{0};
  alignas(128) std::atomic<std::uint32_t> producers_done{0};
  alignas(128) AgentRecord agents[kMaxAgents];

  void fail(int agent, const char* fmt, ...) noexcept __attribute__((format(printf, 3, 4))) {
    AgentRecord& a = agents[agent];
    va_list ap;
    va_start(ap, fmt);
    std::vsnprintf(a.error, sizeof a.error, fmt, ap);
    va_end(ap);
    a.state.store(kFailed, std::memory_order_release);
    abort.store(1, std::memory_order_release);
  }
  bool aborted() const noexcept { return abort.load(std::memory_order_acquire) != 0; }
};

static_assert(std::atomic<std::uint32_t>::is_always_lock_free,
              "control words are shared between processes");

// ---- spinning ------------------------------------------------------------------

// Called after every failed attempt (ring full or empty). Pauses, or yields
// when agents share a core; every 4096 failures in a row it checks for an
// abort and for a stall, so a dead or broken peer fails the benchmark instead
// of hanging it.
class Spinner {
 public:
  using Liveness = std::function<bool()>;  // false: a peer died
  static constexpr std::chrono::seconds kStallLimit{20};

  Spinner(const Control& control, bool may_yield, Liveness liveness = {})
      : spin_(
            kStallLimit,
            [&control, liveness = std::move(liveness)] {
              return !control.aborted() && (!liveness || liveness());
            },
            may_yield ? 64 : 0) {}

  bool failed_attempt() noexcept { return spin_.failed_attempt(); }
  void progress() noexcept { spin_.progress(); }
  bool stalled() const noexcept { return spin_.stalled(); }
  std::uint64_t failures() const noexcept { return spin_.failures(); }

 private:
  harness::Spinner spin_;
};

// ---- agents: threads or processes -----------------------------------------------

// Runs agent bodies either as threads of this process or as forked children.
// A body returns normally or reports through Control::fail. A child never
// returns into the benchmark: it leaves with _exit.
class Team {
 public:
  Team(Control& control, bool separate_processes)
      : control_(control), processes_(separate_processes) {}
  Team(const Team&) = delete;
  Team& operator=(const Team&) = delete;
  ~Team() { stop(); }

  bool processes() const noexcept { return processes_; }

  // Starts agent `id` (an index into Control::agents) pinned to `cpu`.
  void spawn(int id, int cpu, std::function<void()> body) {
    ids_.push_back(id);
    auto run = [this, id, cpu, body = std::move(body)] {
      if (!pin_to_cpu(cpu)) {
        control_.fail(id, "cannot pin agent %d to CPU %d: %s", id, cpu, std::strerror(errno));
        return;
      }
      try {
        body();
      } catch (const std::exception& e) {
        control_.fail(id, "agent %d: %s", id, e.what());
      } catch (...) {
        control_.fail(id, "agent %d: unknown exception", id);
      }
    };
    if (!processes_) {
      threads_.emplace_back(std::move(run));
      return;
    }
    const pid_t pid = harness::fork_child([&run] {
      run();
      return 0;
    });
    if (pid < 0) {
      control_.fail(id, "fork: %s", std::strerror(errno));
      return;
    }
    pids_.emplace_back(id, pid);
  }

  // False once a child process has exited without finishing its work
  // (threads cannot vanish alone).
  bool children_alive() const noexcept {
    for (const auto& [id, pid] : pids_) {
      siginfo_t info{};
      if (::waitid(P_PID, static_cast<id_t>(pid), &info, WEXITED | WNOHANG | WNOWAIT) == 0 &&
          info.si_pid == pid &&
          control_.agents[id].state.load(std::memory_order_acquire) < kFinished) {
        return false;
      }
    }
    return true;
  }

  // Waits until every agent has reached `state`. False on a failure, an
  // abort, a child gone early, or the timeout.
  bool wait_all(AgentState state, std::chrono::milliseconds timeout, bool yield = true) const {
    const auto deadline = Clock::now() + timeout;
    for (std::uint64_t spins = 1;; ++spins) {
      if (const int r = scan(state); r != 0) return r > 0;
      if (control_.aborted()) return false;
      if ((spins & 0x3ff) == 0) {
        if (Clock::now() > deadline) return false;
        if (!children_alive()) return false;
      }
      if (yield) {
        ::sched_yield();
      } else {
        atomic::cpu_relax();
      }
    }
  }

  // Raises abort, then joins threads and reaps children (killing any that do
  // not leave within a few seconds). Returns a description of any child that
  // did not exit cleanly, or "".
  std::string stop() {
    std::string problem;
    if (!threads_.empty() || !pids_.empty()) {
      bool all_finished = true;
      for (int id : ids_) {
        if (control_.agents[id].state.load(std::memory_order_acquire) < kFinished) {
          all_finished = false;
        }
      }
      if (!all_finished) control_.abort.store(1, std::memory_order_release);
    }
    for (auto& t : threads_) t.join();
    threads_.clear();
    for (const auto& [id, pid] : pids_) {
      const harness::Reaped r = harness::reap_within(pid, std::chrono::seconds(2));
      if (r.killed) {
        problem += "agent process " + std::to_string(pid) + " did not exit and was killed; ";
      } else if (!harness::exited_ok(r.status)) {
        problem +=
            "agent process " + std::to_string(pid) + " " + harness::describe_exit(r.status) + "; ";
      }
    }
    pids_.clear();
    return problem;
  }

  // The first agent error recorded, or "".
  std::string first_error() const {
    for (int id : ids_) {
      if (control_.agents[id].state.load(std::memory_order_acquire) == kFailed) {
        return control_.agents[id].error;
      }
    }
    return {};
  }

 private:
  Control& control_;
  bool processes_;
  std::vector<int> ids_;
  std::vector<std::thread> threads_;
  std::vector<std::pair<int, pid_t>> pids_;  // agent id, process

  // 1: every agent reached `state`; -1: one failed; 0: not yet.
  int scan(AgentState state) const noexcept {
    bool all = true;
    for (int id : ids_) {
      const std::uint32_t s = control_.agents[id].state.load(std::memory_order_acquire);
      if (s == kFailed) return -1;
      if (s < state) all = false;
    }
    return all ? 1 : 0;
  }
};

// ---- time ------------------------------------------------------------------------

// One timestamp per round trip: the cycle counter where it is cheap and
// constant-rate, else steady_clock. The lfence keeps rdtsc from running ahead
// of the load that ended the previous round trip.
inline std::uint64_t ticks() noexcept {
#if defined(__x86_64__) || defined(__i386__)
  _mm_lfence();
  return __rdtsc();
#else
  return static_cast<std::uint64_t>(Clock::now().time_since_epoch().count());
#endif
}

// The step the tick counter advances by: the GCD of many consecutive
// differences (1 on a fine-grained counter; 26 on some AMD parts, whose TSC
// moves in ~10 ns steps).
inline std::uint64_t tick_quantum() noexcept {
  std::uint64_t g = 0;
  std::uint64_t prev = ticks();
  for (int i = 0; i < 20000; ++i) {
    const std::uint64_t now = ticks();
    std::uint64_t a = now - prev, b = g;
    while (b != 0) {
      const std::uint64_t t = a % b;
      a = b;
      b = t;
    }
    g = a;
    prev = now;
  }
  return g == 0 ? 1 : g;
}

// Converts ticks to nanoseconds by timing a whole run against steady_clock.
class TickCalibration {
 public:
  TickCalibration() : t0_(Clock::now()), k0_(ticks()) {}
  double ns_per_tick() const {
    const std::uint64_t k1 = ticks();
    const auto t1 = Clock::now();
    const double ns = std::chrono::duration<double, std::nano>(t1 - t0_).count();
    return k1 > k0_ ? ns / static_cast<double>(k1 - k0_) : 1.0;
  }

 private:
  Clock::time_point t0_;
  std::uint64_t k0_;
};

// Round-trip samples in ticks. Storage is reserved up front so recording is
// one store; beyond the cap, samples are dropped (percentiles come from the
// first kMaxSamples round trips).
class LatencyRecorder {
 public:
  static constexpr std::size_t kMaxSamples = std::size_t{1} << 24;

  explicit LatencyRecorder(std::uint64_t expected)
      : samples_(static_cast<std::size_t>(std::min<std::uint64_t>(expected, kMaxSamples))) {}

  void start() noexcept { prev_ = ticks(); }
  void lap() noexcept {
    const std::uint64_t now = ticks();
    add(now - prev_);
    prev_ = now;
  }
  // The tick at which the current lap began (start() or the last lap()).
  std::uint64_t lap_start() const noexcept { return prev_; }
  // A sample taken elsewhere (ticks), e.g. a one-way latency.
  void add(std::uint64_t d) noexcept {
    if (n_ < samples_.size())
      samples_[n_++] = d > UINT32_MAX ? UINT32_MAX : static_cast<std::uint32_t>(d);
  }

  struct Summary {
    double p50 = 0, p90 = 0, p99 = 0, p999 = 0, min = 0;
  };
  // `quantum`: the step the tick counter advances by (tick_quantum()). A
  // percentile falls inside one step; it is placed there by linear
  // interpolation over the samples of that step (the grouped-data median),
  // so a 10 ns clock step does not round a 100 ns round trip by 10%.
  Summary summarise(double ns_per_tick, std::uint64_t quantum) {
    Summary s;
    if (n_ == 0) return s;
    const auto first = samples_.begin();
    const auto last = samples_.begin() + static_cast<std::ptrdiff_t>(n_);
    auto at = [&](double q) {
      const double rank = q * static_cast<double>(n_);
      const std::size_t k = std::min(n_ - 1, static_cast<std::size_t>(rank));
      std::nth_element(first, first + static_cast<std::ptrdiff_t>(k), last);
      const std::uint32_t v = samples_[k];
      std::size_t below = 0, equal = 0;
      for (auto it = first; it != last; ++it) {
        below += *it < v;
        equal += *it == v;
      }
      const double step = static_cast<double>(quantum);
      const double within = (rank - static_cast<double>(below) + 0.5) / static_cast<double>(equal);
      const double ticks_at =
          static_cast<double>(v) - step / 2 + step * std::clamp(within, 0.0, 1.0);
      return std::max(0.0, ticks_at) * ns_per_tick;
    };
    s.p50 = at(0.50);
    s.p90 = at(0.90);
    s.p99 = at(0.99);
    s.p999 = at(0.999);
    s.min = static_cast<double>(*std::min_element(first, last)) * ns_per_tick;
    return s;
  }

 private:
  std::vector<std::uint32_t> samples_;
  std::size_t n_ = 0;
  std::uint64_t prev_ = 0;
};

// ---- messages ----------------------------------------------------------------------

// Every message carries a tag, (producer << 48) | sequence, in its first 8
// bytes and (when it has room) in its last 8; the bytes between hold a fixed
// pattern whose XOR fold a zero-copy reader checks, so every reader touches
// every byte and nobody wins by dropping or skipping data.
inline constexpr unsigned kProducerShift = 48;
inline constexpr std::uint64_t kSequenceMask = (std::uint64_t{1} << kProducerShift) - 1;
inline constexpr std::uint64_t kStopTag = ~std::uint64_t{0};

inline std::uint64_t make_tag(unsigned producer, std::uint64_t sequence) noexcept {
  return (std::uint64_t{producer} << kProducerShift) | sequence;
}

inline std::uint64_t load_word(const std::byte* p) noexcept {
  std::uint64_t v;
  std::memcpy(&v, p, sizeof v);
  return v;
}
inline void store_word(std::byte* p, std::uint64_t v) noexcept { std::memcpy(p, &v, sizeof v); }

inline std::uint64_t xor_fold(const std::byte* p, std::size_t bytes) noexcept {
  std::uint64_t acc0 = 0, acc1 = 0, acc2 = 0, acc3 = 0;
  std::size_t i = 0;
  for (; i + 32 <= bytes; i += 32) {
    acc0 ^= load_word(p + i);
    acc1 ^= load_word(p + i + 8);
    acc2 ^= load_word(p + i + 16);
    acc3 ^= load_word(p + i + 24);
  }
  for (; i + 8 <= bytes; i += 8) acc0 ^= load_word(p + i);
  return acc0 ^ acc1 ^ acc2 ^ acc3;
}

// A message template of `size` bytes (a multiple of 8, at least 8).
class MessageTemplate {
 public:
  explicit MessageTemplate(std::size_t size) : size_(size), bytes_(size) {
    for (std::size_t i = 0; i + 8 <= size; i += 8) {
      store_word(bytes_.data() + i, 0x9E3779B97F4A7C15ull * (i / 8 + 1));
    }
    interior_fold_ = size >= 16 ? xor_fold(bytes_.data() + 8, size - 16) : 0;
  }
  std::size_t size() const noexcept { return size_; }

  // The copy API: stamp the template, hand it to try_push.
  std::span<const std::byte> stamped(std::uint64_t tag) noexcept {
    stamp(bytes_.data(), tag);
    return {bytes_.data(), size_};
  }
  // The zero-copy API: write the whole message into a lent slot.
  void write(std::byte* slot, std::uint64_t tag) const noexcept {
    if (size_ > 8) std::memcpy(slot, bytes_.data(), size_);
    stamp(slot, tag);
  }

  // Checks a message that was already copied out (the copy touched every byte).
  bool check_copied(const std::byte* m, std::size_t got, std::uint64_t& tag) const noexcept {
    if (got != size_) return false;
    tag = load_word(m);
    return size_ < 16 || load_word(m + size_ - 8) == tag;
  }
  // Checks a message in place, reading every byte.
  bool check_in_place(const std::byte* m, std::size_t got, std::uint64_t& tag) const noexcept {
    if (!check_copied(m, got, tag)) return false;
    return size_ < 16 || xor_fold(m + 8, size_ - 16) == interior_fold_;
  }

 private:
  void stamp(std::byte* p, std::uint64_t tag) const noexcept {
    store_word(p, tag);
    if (size_ >= 16) store_word(p + size_ - 8, tag);
  }
  std::size_t size_;
  std::vector<std::byte> bytes_;
  std::uint64_t interior_fold_ = 0;
};

// Order and completeness of what one consumer saw. With one consumer every
// producer's sequence must arrive exactly 0, 1, 2, ...; with several, each
// consumer must see each producer's sequence strictly increasing, and the
// tallies over all consumers must add up.
class SequenceChecker {
 public:
  SequenceChecker(unsigned producers, bool exact) : producers_(producers), exact_(exact) {
    next_.assign(producers, 0);
    tally_.assign(producers, Tally{});
  }
  // "" if fine, else what is wrong.
  const char* accept(std::uint64_t tag) noexcept {
    const std::uint64_t p = tag >> kProducerShift;
    const std::uint64_t seq = tag & kSequenceMask;
    if (p >= producers_) return "tag names a producer that does not exist";
    if (exact_ ? seq != next_[p] : seq < next_[p]) {
      return exact_ ? "sequence gap or reorder" : "sequence went backwards or repeated";
    }
    next_[p] = seq + 1;
    tally_[p].count += 1;
    tally_[p].sum += seq;
    return nullptr;
  }
  std::uint64_t expected_next(unsigned p) const noexcept { return next_[p]; }
  const std::vector<Tally>& tally() const noexcept { return tally_; }

 private:
  unsigned producers_;
  bool exact_;
  std::vector<std::uint64_t> next_;
  std::vector<Tally> tally_;
};

// ---- the cache-line floor ----------------------------------------------------------

// The latency floor of two cores: two processes pass a count back and forth,
// each waiting for the other's store with a Spinner. The measuring side
// stores v + 1 into `ping` and waits for v + 2 in `pong`; the echo side
// answers each odd value with the next even one. Whatever a ring adds to a
// round trip is measured above this.
//   One line (ping == pong, one word alone in its 128-byte block, e.g. at
//   the start of a page of a SharedRegion): the usual cache-line ping-pong,
//   where each side reads the line and then writes it.
//   Two lines (ping and pong in blocks of their own): each line has one
//   writer and one reader, as the slots of a pair of rings (one each way)
//   have. Some processors hand a line that a core reads and then writes over
//   exclusive on the read, so one line can cost fewer transfers per round
//   trip than two; the two-line figure is then the floor of any round trip
//   through two one-way channels.
//   Messages (two lines, and a FloorMessage): each count goes with a 64-byte
//   message in the line before its word, the layout of a ring slot whose
//   payload fills a line (payload line, then the line of its `committed`
//   word). The reader can load the payload only after it has seen the word,
//   so a message costs two transfers in a row each way: the floor of a
//   64-byte round trip through two rings of that layout.
//   Split messages (two lines, a FloorMessage of Layout::split): the count
//   word starts its block, the 64-byte message follows it, and a second copy
//   of the count follows the message, in the second line. The reader polls
//   both words and reads the message once both carry the count: each line
//   is its own proof of arrival, so the two lines travel at once. The floor
//   of a 64-byte round trip through a layout with a sequence word per line.
//   Touched messages (the layout of Messages): the reader's poll also loads
//   the message's line, whose value it drops, so that the line is on its
//   way while the word's is; it reads the message once the word has come.

// The messages of the message floor, one per side (each stamps its own).
struct FloorMessage {
  static constexpr std::size_t kSize = 64;
  MessageTemplate message{kSize};
  std::byte received[kSize];
  // Messages, split messages or touched messages (above).
  enum class Layout { before_word, split, touched };
  Layout layout = Layout::before_word;

  explicit FloorMessage(Layout l = Layout::before_word) : layout(l) {}
  bool split() const noexcept { return layout == Layout::split; }

  std::byte* payload_of(std::uint64_t* word) const noexcept {
    return split() ? reinterpret_cast<std::byte*>(word + 1)
                   : reinterpret_cast<std::byte*>(word) - kSize;
  }
  const std::byte* payload_of(const std::uint64_t* word) const noexcept {
    return split() ? reinterpret_cast<const std::byte*>(word + 1)
                   : reinterpret_cast<const std::byte*>(word) - kSize;
  }
  // Split: the copy of the count after the message, in the second line.
  static std::uint64_t* second_word(std::uint64_t* word) noexcept { return word + 1 + kSize / 8; }
  static const std::uint64_t* second_word(const std::uint64_t* word) noexcept {
    return word + 1 + kSize / 8;
  }
  // Before the count `v` goes out through `word`.
  void send(std::uint64_t* word, std::uint64_t v) noexcept {
    std::memcpy(payload_of(word), message.stamped(v).data(), kSize);
    if (split()) atomic::store_release(second_word(word), v);
  }
  // The count that has arrived through `word`: split, the smaller of the
  // two words (both loaded before either is looked at), or kStopTag.
  std::uint64_t arrived(const std::uint64_t* word) const noexcept {
    if (layout == Layout::touched) {
      const std::uint64_t line =
          atomic::load_relaxed(reinterpret_cast<const std::uint64_t*>(payload_of(word)));
      asm volatile("" : : "r"(line));
    }
    const std::uint64_t a = atomic::load_acquire(word);
    if (!split()) return a;
    const std::uint64_t b = atomic::load_acquire(second_word(word));
    return a == kStopTag ? a : std::min(a, b);
  }
  // After the count `v` came in through `word`: the message that came with it.
  bool received_intact(const std::uint64_t* word, std::uint64_t v) noexcept {
    std::memcpy(received, payload_of(word), kSize);
    std::uint64_t tag = 0;
    return message.check_copied(received, kSize, tag) && tag == v;
  }
};

// The count that has arrived through `word`, with or without a message.
inline std::uint64_t floor_arrived(const FloorMessage* m, const std::uint64_t* word) noexcept {
  return m != nullptr ? m->arrived(word) : atomic::load_acquire(word);
}

// The echo side, in its own agent: answers until it reads kStopTag (true) or
// the spinner gives up or the sequence breaks (false, reported through
// control.fail for `agent`). With `m`, each count comes with a message.
inline bool floor_echo(Control& control, int agent, const std::uint64_t* ping, std::uint64_t* pong,
                       Spinner& spinner, FloorMessage* m = nullptr) {
  std::uint64_t answered = 0;  // the last value stored into pong
  for (;;) {
    std::uint64_t v;
    // Values only grow (kStopTag is the largest): below answered + 1 is
    // either our own answer (one line) or the ping before it (two lines).
    while ((v = floor_arrived(m, ping)) < answered + 1) {
      if (!spinner.failed_attempt()) return false;
    }
    if (v == kStopTag) return true;
    if (v != answered + 1) {
      control.fail(agent, "ping-pong word went from %llu to %llu",
                   static_cast<unsigned long long>(answered), static_cast<unsigned long long>(v));
      return false;
    }
    if (m != nullptr && !m->received_intact(ping, v)) {
      control.fail(agent, "message %llu damaged", static_cast<unsigned long long>(v));
      return false;
    }
    answered = v + 1;
    if (m != nullptr) m->send(pong, answered);
    atomic::store_release(pong, answered);
    spinner.progress();
  }
}

// One round trip from the measuring side; `v` is the last value it saw (0 at
// first). False if the spinner gave up, or (with `m`) the reply's message was
// not the one that came with its count.
inline bool floor_round_trip(std::uint64_t* ping, const std::uint64_t* pong, std::uint64_t& v,
                             Spinner& spinner, FloorMessage* m = nullptr) noexcept {
  if (m != nullptr) m->send(ping, v + 1);
  atomic::store_release(ping, v + 1);
  while (floor_arrived(m, pong) != v + 2) {
    if (!spinner.failed_attempt()) return false;
  }
  spinner.progress();
  v += 2;
  return m == nullptr || m->received_intact(pong, v);
}

}  // namespace shmring::bench
