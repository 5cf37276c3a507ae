// shmring-demo: a producer process streams messages to a consumer process
// through one ring in /dev/shm, every message verified (sequence number and
// checksum), then measures round-trip latency with ping/pong over two more
// rings.
//
//   shmring-demo                                   # forks: both roles, one report
//   shmring-demo --role producer --name cam &      # or the same binary twice
//   shmring-demo --role consumer --name cam
//   shmring-demo --slot-format low_latency         # SPSC rings of low-latency slots
//   shmring-demo --kind broadcast --subscribers 3  # fan-out: every subscriber process
//                                                  # reads (and verifies) every message
//
// The messages, the forked processes and the watchdog are the test
// harness's (harness/), shared with the benchmarks and the tests.
// Exit status: 0 every message verified, 1 a message failed verification,
// 2 bad command line, 3 a runtime failure (segment, peer died, stall).
#include <fmt/core.h>
#include <fmt/format.h>
#include <sched.h>
#include <signal.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <array>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstring>
#include <map>
#include <optional>
#include <span>
#include <string>
#include <thread>
#include <type_traits>
#include <vector>

#include "harness/cpus.hpp"
#include "harness/message.hpp"
#include "harness/processes.hpp"
#include "harness/watchdog.hpp"
#include "shmring/shmring.hpp"

namespace {

using namespace shmring;
using Clock = std::chrono::steady_clock;
using namespace std::chrono_literals;
using harness::Verdict;

constexpr int kExitOk = 0;
constexpr int kExitVerifyFailed = 1;
constexpr int kExitUsage = 2;
constexpr int kExitRuntime = 3;

// Every blocking call waits at most this long before the loop checks that its
// peer is still there; --timeout bounds the total time without progress.
constexpr auto kPoll = 100ms;
constexpr std::uint64_t kLatencyCapacity = 16;

enum class Role { both, producer, consumer };

struct Options {
  std::uint64_t messages = 2'000'000;
  std::uint64_t size = 64;
  std::uint64_t capacity = 1024;
  std::uint64_t batch = 16;
  std::uint64_t round_trips = 100'000;
  RingKind kind = RingKind::spsc;
  SlotFormat format = SlotFormat::plain;
  Role role = Role::both;
  std::string name;  // segment name prefix
  bool pin = true;
  std::optional<std::array<int, 2>> cpus;  // producer, consumer
  std::uint64_t timeout_s = 10;
  std::uint64_t subscribers = 2;  // fan-out (--kind broadcast)
  Delivery delivery = Delivery::reliable;
};

struct RunError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// The rules between options; "" when they are usable. `fanout_given`:
// --subscribers or --delivery was given.
std::string check_options(Options& o, bool fanout_given) {
  if (o.messages == 0) return "--messages must be at least 1";
  if (o.size < harness::kStampBytes) {
    return fmt::format(
        "--size must be at least {} bytes (8-byte sequence number + 8-byte checksum)",
        harness::kStampBytes);
  }
  if (o.size > kMaxSlotSize) return fmt::format("--size must be at most {} bytes", kMaxSlotSize);
  if (o.format == SlotFormat::low_latency && o.kind == RingKind::mpmc) {
    return "--slot-format low_latency needs --kind spsc: low-latency slots have no `committed` "
           "word, so several producers or consumers (mpmc) cannot share them";
  }
  if (o.format == SlotFormat::low_latency && o.size > kMaxLowLatencySlotSize) {
    return fmt::format("--size must be at most {} bytes with --slot-format low_latency",
                       kMaxLowLatencySlotSize);
  }
  if (o.kind == RingKind::broadcast) {
    if (o.subscribers == 0 || o.subscribers > kMaxSubscribers) {
      return fmt::format("--subscribers must be between 1 and {}", kMaxSubscribers);
    }
    if (o.role != Role::both)
      return "--kind broadcast runs every process itself: it takes no --role";
    if (o.format == SlotFormat::low_latency) {
      return "--slot-format low_latency needs --kind spsc, not broadcast";
    }
  } else if (fanout_given) {
    return "--subscribers and --delivery are for --kind broadcast (the fan-out mode)";
  }
  if (o.capacity == 0 || (o.capacity & (o.capacity - 1)) != 0) {
    return fmt::format("--capacity {} is not a power of two", o.capacity);
  }
  if (o.batch == 0 || o.batch > o.capacity) {
    return fmt::format("--batch must be between 1 and the capacity ({})", o.capacity);
  }
  if (o.timeout_s == 0) return "--timeout must be at least 1 second";
  if (o.name.empty()) {
    o.name = o.role == Role::both ? fmt::format("shmring-demo-{}", ::getpid()) : "shmring-demo";
  }
  for (const char* suffix : {"-data", "-ping", "-pong"}) {
    if (auto problem = Segment::name_problem(o.name + suffix); !problem.empty()) {
      return fmt::format("--name '{}': {}", o.name, problem);
    }
  }
  return {};
}

// ---- reports ---------------------------------------------------------------

std::int64_t now_ns() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(Clock::now().time_since_epoch())
      .count();
}

// What a consumer (a subscriber) found. Plain data: a forked one writes it
// into shared memory and the parent prints it.
struct ConsumerReport {
  std::uint32_t joined = 0;  // fan-out: attached (the producer starts after all)
  std::uint64_t received = 0, verified = 0, failures = 0;
  std::uint64_t first_failure_seq = 0;  // the expected sequence number
  Verdict first_failure = Verdict::ok;
  std::int64_t first_ns = 0, last_ns = 0;  // first message seen, last released
  std::uint64_t pings_verified = 0, ping_failures = 0;
  std::uint64_t gaps = 0, lost = 0, laps = 0;  // lossy: never seen; counted by the ring
  char error[512] = {};

  // Message `m`, expected to be number `seq`. False if it failed verification.
  bool take(std::span<const std::byte> m, std::uint64_t size, std::uint64_t seq) {
    const Verdict v = harness::verify_message(m, size, seq);
    if (received++ == 0) first_ns = now_ns();
    if (v == Verdict::ok) return ++verified, true;
    if (failures++ == 0) first_failure = v, first_failure_seq = seq;
    return false;
  }
};

struct ProducerReport {
  std::uint64_t sent = 0;
  std::int64_t start_ns = 0, end_ns = 0;
  std::uint64_t pongs_verified = 0, pong_failures = 0;
  std::vector<std::int64_t> round_trip_ns;
  std::string error;
};

// Retries `attempt` (a claim or peek, empty when it failed, or a copy call
// returning a Status), each waiting up to kPoll, until it succeeds; the
// watchdog decides how long that may take.
template <class Attempt>
auto await(harness::Watchdog& wd, std::string_view op, std::string_view ring, Attempt&& attempt) {
  const char* waiting_for = op == "claim" || op == "push" ? "free slots" : "messages";
  for (;;) {
    auto r = attempt();
    constexpr bool copy_call = std::is_same_v<decltype(r), Status>;
    Status st = Status::ok;
    if constexpr (copy_call) {
      st = r;
    } else if (r.empty()) {
      st = r.status();
    }
    if (st == Status::ok) {
      wd.progress();
      if constexpr (!copy_call)
        return r;
      else
        return;
    }
    if (st != Status::timeout) {
      throw RunError(fmt::format("{} on the {} ring failed: {}", op, ring, to_string(st)));
    }
    if (auto why = wd.idle(fmt::format("{} in the {} ring", waiting_for, ring)); !why.empty()) {
      throw RunError(why);
    }
  }
}

// ---- segments, cleanup, CPUs -----------------------------------------------

template <RingKind K>
using Producer = std::conditional_t<K == RingKind::spsc, SpscProducer, MpmcProducer>;
template <RingKind K>
using Consumer = std::conditional_t<K == RingKind::spsc, SpscConsumer, MpmcConsumer>;

struct Segments {
  Segment data, ping, pong;  // fan-out: no ping and pong
};

// The names this process created, for unlinking on every way out, signals
// included (the handler may only call async-signal-safe functions).
struct CleanupState {
  static constexpr std::size_t kMax = 3;
  char paths[kMax][300] = {};
  std::atomic<int> count{0};
  pid_t owner = 0;  // only this process unlinks (a forked child does not)
  pid_t child = 0;  // killed on a signal
};
CleanupState g_cleanup;

void unlink_paths() noexcept {
  const int n = g_cleanup.count.exchange(0);
  for (int i = 0; i < n; ++i) ::unlink(g_cleanup.paths[i]);
}

// The owner cleans up and takes its child along. A forked consumer cleans up
// only for an owner that died (it gets SIGTERM then: its death signal), so a
// `kill -9` of the demo leaves nothing behind either.
extern "C" void on_fatal_signal(int sig) {
  if (::getpid() == g_cleanup.owner) {
    if (g_cleanup.child > 0) ::kill(g_cleanup.child, SIGKILL);
    unlink_paths();
  } else if (::getppid() != g_cleanup.owner) {
    unlink_paths();
  }
  ::signal(sig, SIG_DFL);
  ::raise(sig);
}

struct CleanupOnExit {
  ~CleanupOnExit() {
    if (::getpid() == g_cleanup.owner) unlink_paths();
  }
};

// Creates a segment. In --role mode a leftover of a run that died is
// replaced; a segment whose creator still runs is not.
Segment create_segment(const std::string& name, RingKind kind, std::uint64_t capacity,
                       const Options& o, bool replace_stale) {
  CreateOptions c;
  c.kind = kind;
  c.format = o.format;
  c.capacity = capacity;
  c.slot_size = o.size;
  c.subscribers = kind == RingKind::broadcast ? static_cast<std::uint32_t>(o.subscribers) : 0;
  c.delivery = o.delivery;
  std::error_code ec;
  Segment s = Segment::create(name, c, ec);
  if (!s && replace_stale && ec == errc::already_exists) {
    OpenOptions oo;
    oo.read_only = true;
    oo.init_timeout = 100ms;
    std::error_code open_ec;
    if (const Segment old = Segment::open(name, oo, open_ec)) {
      const auto* h = reinterpret_cast<const SegmentHeader*>(old.base());
      const process::Identity creator{h->creator_pid, h->creator_start_time};
      if (process::alive(process::pack(creator))) {
        throw RunError(
            fmt::format("segment '{}' belongs to a running process (pid {}); choose another --name",
                        name, creator.pid));
      }
    }
    fmt::print("removing stale segment /dev/shm/{}\n", name);
    Segment::unlink(name, ec);
    s = Segment::create(name, c, ec);
  }
  if (!s) throw Error(ec, last_error_message());
  const int i = g_cleanup.count.load();
  fmt::format_to_n(g_cleanup.paths[i], sizeof g_cleanup.paths[i] - 1, "/dev/shm/{}", name);
  g_cleanup.count.store(i + 1);
  return s;
}

Segments create_segments(const Options& o, bool replace_stale) {
  Segments s;
  s.data = create_segment(o.name + "-data", o.kind, o.capacity, o, replace_stale);
  if (o.kind == RingKind::broadcast) return s;
  s.ping = create_segment(o.name + "-ping", o.kind, kLatencyCapacity, o, replace_stale);
  s.pong = create_segment(o.name + "-pong", o.kind, kLatencyCapacity, o, replace_stale);
  return s;
}

// --role consumer: waits (bounded) for the producer to create the segments.
Segments open_segments(const Options& o) {
  const auto deadline = Clock::now() + std::chrono::seconds(o.timeout_s);
  auto open = [&](const std::string& name) {
    OpenOptions oo;
    oo.kind = o.kind;
    for (;;) {
      std::error_code ec;
      if (Segment s = Segment::open(name, oo, ec)) {
        if (s.geometry().slot_size != o.size || s.geometry().format != o.format) {
          throw RunError(fmt::format(
              "segment '{}' holds {} slots of {} bytes, the options say {} slots of {}; give "
              "both sides the same options",
              name, to_string(s.geometry().format), s.geometry().slot_size, to_string(o.format),
              o.size));
        }
        return s;
      }
      if (ec != errc::not_found || Clock::now() >= deadline) {
        throw Error(ec, last_error_message());
      }
      std::this_thread::sleep_for(20ms);
    }
  };
  return Segments{open(o.name + "-data"), open(o.name + "-ping"), open(o.name + "-pong")};
}

// The CPUs for the producer and the consumer, or nothing when not pinning.
std::optional<std::array<int, 2>> choose_cpus(const Options& o, std::string& note) {
  if (!o.pin) {
    note = "not pinned (--no-pin)";
    return std::nullopt;
  }
  if (o.cpus) return o.cpus;
  const std::vector<int> cpus = harness::allowed_cpus();
  if (cpus.size() < 2) {
    note = "not pinned: one CPU available, producer and consumer share it";
    return std::nullopt;
  }
  return std::array<int, 2>{cpus[0], cpus[1]};
}

// A refusal to pin is reported, not fatal.
void pin_or_warn(int cpu) {
  if (!harness::pin_to_cpu(cpu)) {
    fmt::print(stderr, "warning: cannot pin pid {} to CPU {}: {}\n", ::getpid(), cpu,
               std::strerror(errno));
  }
}

// ---- printing --------------------------------------------------------------

std::string format_ns(double ns) {
  if (ns < 1e3) return fmt::format("{:.0f} ns", ns);
  if (ns < 1e6) return fmt::format("{:.2f} us", ns / 1e3);
  if (ns < 1e9) return fmt::format("{:.2f} ms", ns / 1e6);
  return fmt::format("{:.2f} s", ns / 1e9);
}

std::string format_bytes(std::uint64_t b) {
  if (b < 1024) return fmt::format("{} B", b);
  if (b < 1024 * 1024) return fmt::format("{:.1f} KiB", static_cast<double>(b) / 1024);
  if (b < 1024ull * 1024 * 1024) {
    return fmt::format("{:.1f} MiB", static_cast<double>(b) / (1024 * 1024));
  }
  return fmt::format("{:.2f} GiB", static_cast<double>(b) / (1024.0 * 1024 * 1024));
}

double seconds(std::int64_t ns) { return static_cast<double>(std::max<std::int64_t>(ns, 1)) / 1e9; }

void print_header(const Options& o, const Segments& s, const std::string& cpu_note) {
  if (o.kind == RingKind::broadcast) {
    fmt::print(
        "shmring demo: broadcast ring ({}), {} slots x {}, batch {}, {} messages to {} "
        "subscriber processes\n",
        to_string(o.delivery), o.capacity, format_bytes(o.size), o.batch,
        fmt::group_digits(o.messages), o.subscribers);
    fmt::print("  segment  /dev/shm/{} ({})\n", s.data.name(), format_bytes(s.data.size()));
    return;
  }
  fmt::print("shmring demo: {} ring{}, {} slots x {}, batch {}, {} messages\n", to_string(o.kind),
             o.format == SlotFormat::low_latency ? " (low-latency slots, copy calls)" : "",
             o.capacity, format_bytes(o.size), o.batch, fmt::group_digits(o.messages));
  fmt::print("  segment  /dev/shm/{} ({}), ping/pong rings /dev/shm/{}-ping|-pong\n", s.data.name(),
             format_bytes(s.data.size()), o.name);
  if (!cpu_note.empty()) fmt::print("  cpus     {}\n", cpu_note);
}

void print_stream(const Options& o, std::uint64_t verified, std::int64_t ns) {
  const double secs = seconds(ns);
  const double rate = static_cast<double>(verified) / secs;
  fmt::print("stream:   {} messages of {} received and verified in {:.3f} s\n",
             fmt::group_digits(verified), format_bytes(o.size), secs);
  const std::string msgs = rate >= 1e6   ? fmt::format("{:.2f} M", rate / 1e6)
                           : rate >= 1e3 ? fmt::format("{:.2f} k", rate / 1e3)
                                         : fmt::format("{:.0f}", rate);
  fmt::print("          {} msg/s   {:.3f} GB/s\n", msgs, rate * static_cast<double>(o.size) / 1e9);
}

void print_latency(const Options& o, std::vector<std::int64_t>& rtt) {
  if (rtt.empty()) return;
  std::sort(rtt.begin(), rtt.end());
  auto pct = [&](double p) {
    const auto idx =
        static_cast<std::size_t>(p / 100.0 * static_cast<double>(rtt.size() - 1) + 0.5);
    return format_ns(static_cast<double>(rtt[std::min(idx, rtt.size() - 1)]));
  };
  double sum = 0;
  for (const auto v : rtt) sum += static_cast<double>(v);
  fmt::print("latency:  {} round trips of {} (ping ring -> consumer -> pong ring), verified\n",
             fmt::group_digits(rtt.size()), format_bytes(o.size));
  fmt::print("          min {}  p50 {}  p90 {}  p99 {}  p99.9 {}  max {}  mean {}\n", pct(0),
             pct(50), pct(90), pct(99), pct(99.9), pct(100),
             format_ns(sum / static_cast<double>(rtt.size())));
}

// The verdict for the whole run: prints it, returns the exit status. A message
// that failed verification outranks a run that stopped early.
int print_verdict(const Options& o, const ConsumerReport& c, const ProducerReport* p,
                  bool stopped_early) {
  const std::uint64_t pong_failures = p != nullptr ? p->pong_failures : 0;
  if (c.failures != 0) {
    fmt::print("FAILED:   {} of {} messages failed verification; the first, #{}: {}\n",
               fmt::group_digits(c.failures), fmt::group_digits(c.received), c.first_failure_seq,
               to_string(c.first_failure));
  }
  if (c.ping_failures != 0 || pong_failures != 0) {
    fmt::print("FAILED:   {} pings and {} pongs failed verification\n", c.ping_failures,
               pong_failures);
  }
  if (c.failures != 0 || c.ping_failures != 0 || pong_failures != 0) return kExitVerifyFailed;
  if (stopped_early || c.verified != o.messages) {
    fmt::print("FAILED:   the run stopped early; {} of {} messages were received and verified\n",
               fmt::group_digits(c.verified), fmt::group_digits(o.messages));
    return kExitRuntime;
  }
  std::string latency;
  if (c.pings_verified != 0) {
    latency = fmt::format(", {} pings", fmt::group_digits(c.pings_verified));
    if (p != nullptr) latency += fmt::format(" and {} pongs", fmt::group_digits(p->pongs_verified));
  }
  fmt::print("result:   OK, all {} messages{} verified\n", fmt::group_digits(c.verified), latency);
  return kExitOk;
}

// Errors of a process: the producer's, or a forked one's (its report's text
// and how it ended). True if there was one.
bool print_errors(std::string_view who, const char* error, std::optional<int> status) {
  if (error[0] != '\0') fmt::print("error:    {}: {}\n", who, error);
  if (status && !harness::exited_ok(*status) && (error[0] == '\0' || WIFSIGNALED(*status))) {
    fmt::print("error:    {} {}\n", who, harness::describe_exit(*status));
  }
  return error[0] != '\0' || (status && !harness::exited_ok(*status));
}

int report_pipeline(const Options& o, const ConsumerReport& c, int status, ProducerReport& p) {
  if (c.received != 0 && c.last_ns > c.first_ns)
    print_stream(o, c.verified, c.last_ns - c.first_ns);
  print_latency(o, p.round_trip_ns);
  bool failed = print_errors("producer", p.error.c_str(), std::nullopt);
  failed = print_errors("consumer", c.error, status) || failed;
  return print_verdict(o, c, &p, failed);
}

int report_producer(const Options& o, ProducerReport& p) {
  fmt::print("stream:   {} messages sent in {:.3f} s\n", fmt::group_digits(p.sent),
             static_cast<double>(p.end_ns - p.start_ns) / 1e9);
  print_latency(o, p.round_trip_ns);
  if (p.pong_failures != 0) {
    fmt::print("FAILED:   {} pongs failed verification\n", p.pong_failures);
    return kExitVerifyFailed;
  }
  fmt::print("result:   OK, {} messages sent{}\n", fmt::group_digits(p.sent),
             p.pongs_verified == 0
                 ? std::string()
                 : fmt::format(", {} pongs verified", fmt::group_digits(p.pongs_verified)));
  return kExitOk;
}

// A line per subscriber and one for the producer. Every message is accounted
// for: verified, or (lossy) a counted gap that the ring counted as lost.
int report_fanout(const Options& o, const ConsumerReport* subs,
                  const std::vector<std::optional<int>>& statuses, const ProducerReport& p) {
  const bool lossy = o.delivery == Delivery::lossy;
  bool verify_failed = false, failed = false;
  std::uint64_t all_verified = 0;
  for (std::uint64_t k = 0; k < o.subscribers; ++k) {
    const ConsumerReport& s = subs[k];
    const double secs = seconds(s.last_ns - s.first_ns);
    fmt::print("sub {:>2}:   {} verified in {:.3f} s, {:.2f} M msg/s{}\n", k,
               fmt::group_digits(s.verified), secs, static_cast<double>(s.verified) / secs / 1e6,
               lossy ? fmt::format(", {} sequence gaps ({} lost in {} laps)",
                                   fmt::group_digits(s.gaps), fmt::group_digits(s.lost), s.laps)
                     : "");
    if (s.failures != 0) {
      fmt::print("FAILED:   subscriber {}: {} messages failed verification; the first, #{}: {}\n",
                 k, s.failures, s.first_failure_seq, to_string(s.first_failure));
      verify_failed = true;
    }
    const std::uint64_t accounted = s.verified + (lossy ? s.gaps : 0);
    if (s.error[0] == '\0' && s.failures == 0 &&
        (accounted != o.messages || (lossy && s.gaps != s.lost))) {
      fmt::print(
          "FAILED:   subscriber {}: {} verified + {} gaps of {} messages; the ring "
          "counted {} lost\n",
          k, s.verified, s.gaps, o.messages, s.lost);
      verify_failed = true;
    }
    failed = print_errors(fmt::format("subscriber {}", k), s.error, statuses[k]) || failed;
    all_verified += s.verified;
  }
  if (p.sent != 0) {
    const double secs = seconds(p.end_ns - p.start_ns);
    fmt::print("producer: {} published in {:.3f} s, {:.2f} M msg/s\n", fmt::group_digits(p.sent),
               secs, static_cast<double>(p.sent) / secs / 1e6);
  }
  failed = print_errors("producer", p.error.c_str(), std::nullopt) || failed;
  if (verify_failed) return kExitVerifyFailed;
  if (failed) {
    fmt::print("FAILED:   the run stopped early\n");
    return kExitRuntime;
  }
  if (lossy) {
    fmt::print(
        "result:   OK, {} subscribers: every message read was whole, {} verified, every "
        "gap counted\n",
        o.subscribers, fmt::group_digits(all_verified));
  } else {
    fmt::print("result:   OK, all {} messages verified by each of {} subscribers\n",
               fmt::group_digits(o.messages), o.subscribers);
  }
  return kExitOk;
}

// ---- the command line -----------------------------------------------------

// An option taking one of the names in `values`, stored as its value.
template <class E>
CLI::Option* add_choice(CLI::App& app, const char* name, E& to, const char* text,
                        std::map<std::string, E> values) {
  std::vector<std::string> names;
  for (const auto& [key, value] : values) names.push_back(key);
  return app
      .add_option_function<std::string>(
          name, [&to, values](const std::string& v) { to = values.at(v); }, text)
      ->check(CLI::IsMember(names));
}

// Returns an exit status when the program is done (help, a bad command line).
std::optional<int> parse_options(int argc, char** argv, Options& o) {
  CLI::App app{
      "Streams messages from a producer process to a consumer process through one shmring ring\n"
      "in /dev/shm, verifies every message, reports throughput, then measures round-trip\n"
      "latency with ping/pong over two rings.",
      "shmring-demo"};
  app.footer(
      "Exit status: 0 every message verified, 1 verification failed, 2 usage, 3 runtime "
      "failure.");
  std::string cpus;
  app.add_option("--messages", o.messages, "messages to stream")->capture_default_str();
  app.add_option("--size", o.size, "message size, >= 16: sequence + checksum + body")
      ->capture_default_str();
  app.add_option("--capacity", o.capacity, "slots in the ring, a power of two")
      ->capture_default_str();
  add_choice(
      app, "--kind", o.kind,
      "spsc, mpmc or broadcast; broadcast is the fan-out mode: one producer, "
      "--subscribers processes that each read every message (no ping/pong phase)",
      {{"spsc", RingKind::spsc}, {"mpmc", RingKind::mpmc}, {"broadcast", RingKind::broadcast}});
  auto* subscribers = app.add_option("--subscribers", o.subscribers,
                                     "broadcast: subscriber processes, 1-64 (default 2)");
  auto* delivery =
      add_choice(app, "--delivery", o.delivery,
                 "broadcast: reliable (default; every subscriber verifies every message, the "
                 "producer waits for the slowest) or lossy (the producer never waits; "
                 "subscribers verify what they read and count the sequence gaps)",
                 {{"reliable", Delivery::reliable}, {"lossy", Delivery::lossy}});
  add_choice(app, "--slot-format", o.format,
             "plain (default) or low_latency: SPSC only, size <= 4096; messages are copied "
             "in and out (push/pop), not claimed",
             {{"plain", SlotFormat::plain}, {"low_latency", SlotFormat::low_latency}});
  app.add_option("--batch", o.batch, "slots claimed, committed and released at once")
      ->capture_default_str();
  app.add_option("--round-trips", o.round_trips, "ping/pong round trips to time, 0 skips")
      ->capture_default_str();
  add_choice(app, "--role", o.role,
             "both (fork; default), producer or consumer: run one side and start the other "
             "side separately with the same options",
             {{"both", Role::both}, {"producer", Role::producer}, {"consumer", Role::consumer}});
  app.add_option("--name", o.name,
                 "segment name prefix (default shmring-demo-<pid>, or shmring-demo with --role)");
  app.add_option("--cpus", cpus, "P,C: pin the producer to CPU P and the consumer to CPU C");
  app.add_flag("!--no-pin", o.pin, "do not pin (by default: two different CPUs if there are 2+)");
  app.add_option("--timeout", o.timeout_s, "give up after S seconds without progress")
      ->capture_default_str();
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e) == 0 ? kExitOk : kExitUsage;
  }
  std::string err;
  if (!cpus.empty()) {
    try {
      const std::vector<int> list = harness::parse_cpu_list(cpus);
      if (list.size() != 2) throw std::invalid_argument("not two CPUs");
      o.cpus = std::array<int, 2>{list[0], list[1]};
    } catch (const std::invalid_argument&) {
      err = fmt::format("--cpus: '{}' is not two CPU numbers like 0,1", cpus);
    }
  }
  if (err.empty()) err = check_options(o, subscribers->count() + delivery->count() != 0);
  if (err.empty()) return std::nullopt;
  fmt::print(stderr, "shmring-demo: {}\nRun with --help for more information.\n", err);
  return kExitUsage;
}

// ---- the roles -------------------------------------------------------------

// Streams the messages: claimed and written in place (as relaxed atomic
// words in a lossy broadcast ring, whose subscribers may read the slots
// meanwhile), or with low-latency slots copied in, as many as there is room
// for with one publication.
template <class P>
void produce(P& tx, const Options& o, harness::Watchdog& wd, ProducerReport& r) {
  const auto size = static_cast<std::size_t>(o.size);
  const bool words = o.delivery == Delivery::lossy;
  std::vector<std::byte> batch(static_cast<std::size_t>(o.batch) * size);
  std::vector<std::span<const std::byte>> messages;
  r.start_ns = now_ns();
  while (r.sent < o.messages) {
    const std::uint64_t want = std::min(o.batch, o.messages - r.sent);
    if (o.format == SlotFormat::low_latency) {
      messages.clear();
      for (std::size_t i = 0; i < want; ++i) {
        const std::span<std::byte> m(batch.data() + i * size, size);
        harness::fill_message(m, r.sent + i);
        messages.emplace_back(m);
      }
      std::size_t done = tx.try_push_many(messages);
      if (done != 0) wd.progress();
      for (; done < want; ++done)
        await(wd, "push", "data", [&] { return tx.push(messages[done], kPoll); });
      r.sent += want;
      continue;
    }
    WriteClaim c = await(wd, "claim", "data", [&] { return tx.claim(want, kPoll); });
    for (std::size_t i = 0; i < c.size(); ++i) {
      if (words) {
        harness::fill_message({batch.data(), size}, r.sent + i);
        store_words(c[i].data(), batch.data(), size);
      } else {
        harness::fill_message(c[i].first(size), r.sent + i);
      }
      if (c.set_size(i, size) != Status::ok) throw RunError("set_size refused a message that fits");
    }
    const std::size_t n = c.size();  // commit_batch empties the claim
    c.commit_batch();
    r.sent += n;
  }
  r.end_ns = now_ns();
}

// Receives and verifies every message: in place, or copied out of
// low-latency slots (and of a lossy broadcast ring, where a copy is checked
// against a rewrite while it was made, and a lap skips messages, counted as
// gaps).
template <class C>
void consume(C& rx, const Options& o, harness::Watchdog& wd, ConsumerReport& r) {
  const bool lossy = o.delivery == Delivery::lossy;
  std::vector<std::byte> buffer(static_cast<std::size_t>(o.size));
  std::uint64_t expected = 0;
  while (expected < o.messages) {
    if (o.format == SlotFormat::plain && !lossy) {
      ReadClaim c = await(wd, "peek", "data",
                          [&] { return rx.peek(std::min(o.batch, o.messages - expected), kPoll); });
      for (std::size_t i = 0; i < c.size(); ++i) r.take(c[i], o.size, expected++);
      c.release();
      continue;
    }
    std::size_t got = 0;
    await(wd, "pop", "data", [&] {
      Status st = Status::overrun;
      while (st == Status::overrun) st = rx.pop(buffer, got, kPoll);  // lapped: counted
      return st;
    });
    const std::span<const std::byte> m(buffer.data(), got);
    // Lossy: the sequence number it carries, if it moved forward.
    const std::uint64_t seq = harness::message_tag(m);
    const std::uint64_t want = lossy && seq > expected && seq < o.messages ? seq : expected;
    if (r.take(m, o.size, want)) r.gaps += want - expected;
    expected = want + 1;
  }
  r.last_ns = now_ns();
  if constexpr (std::is_same_v<C, BroadcastSubscriber>) {
    r.lost = rx.lost();
    r.laps = rx.lapped();
  }
}

// One message out and one in, on the ping and pong rings: claimed and peeked
// in place on plain slots, copied on low-latency ones.
template <class P>
void send_one(P& tx, const Options& o, harness::Watchdog& wd, const char* ring,
              std::span<const std::byte> copy_of, std::uint64_t seq) {
  const auto size = static_cast<std::size_t>(o.size);
  std::array<std::byte, kMaxLowLatencySlotSize> buffer;
  if (o.format == SlotFormat::low_latency) {
    const std::span<std::byte> m(buffer.data(), size);
    if (copy_of.empty()) harness::fill_message(m, seq);
    await(wd, "push", ring, [&] { return tx.push(copy_of.empty() ? m : copy_of, kPoll); });
    return;
  }
  WriteClaim w = await(wd, "claim", ring, [&] { return tx.claim(1, kPoll); });
  if (copy_of.empty()) {
    harness::fill_message(w[0].first(size), seq);
  } else {
    std::memcpy(w[0].data(), copy_of.data(), copy_of.size());
  }
  if (w.commit(copy_of.empty() ? size : copy_of.size()) != Status::ok) {
    throw RunError(fmt::format("commit on the {} ring failed", ring));
  }
}
template <class C, class Use>
void receive_one(C& rx, const Options& o, harness::Watchdog& wd, const char* ring, Use&& use) {
  if (o.format == SlotFormat::low_latency) {
    std::array<std::byte, kMaxLowLatencySlotSize> buffer;
    std::size_t got = 0;
    await(wd, "pop", ring, [&] { return rx.pop(buffer, got, kPoll); });
    return use(std::span<const std::byte>(buffer.data(), got));
  }
  ReadClaim m = await(wd, "peek", ring, [&] { return rx.peek(1, kPoll); });
  use(m[0]);
  m.release();
}

std::uint64_t warmup(const Options& o) {
  return std::clamp<std::uint64_t>(o.round_trips / 10, 100, 10'000);
}

// The producer's side: streams, then sends the pings and times each round trip.
template <RingKind K>
void run_producer(const Options& o, const Segments& s, harness::Watchdog& wd, ProducerReport& r) {
  auto tx = Producer<K>::attach(s.data);
  produce(tx, o, wd, r);
  if (o.round_trips == 0) return;
  auto ping = Producer<K>::attach(s.ping);
  auto pong = Consumer<K>::attach(s.pong);
  r.round_trip_ns.reserve(static_cast<std::size_t>(o.round_trips));
  for (std::uint64_t i = 0; i < warmup(o) + o.round_trips; ++i) {
    const auto t0 = Clock::now();
    send_one(ping, o, wd, "ping", {}, i);
    Verdict v{};
    receive_one(pong, o, wd, "pong", [&](auto m) { v = harness::verify_message(m, o.size, i); });
    const auto t1 = Clock::now();
    ++(v == Verdict::ok ? r.pongs_verified : r.pong_failures);
    if (v == Verdict::ok && i >= warmup(o)) r.round_trip_ns.push_back((t1 - t0).count());
  }
}

// The consumer's side: receives the stream, then answers each ping by copying
// it into the pong ring (slot to slot, on plain slots).
template <RingKind K>
void run_consumer(const Options& o, const Segments& s, harness::Watchdog& wd, ConsumerReport& r) {
  auto rx = Consumer<K>::attach(s.data);
  consume(rx, o, wd, r);
  if (o.round_trips == 0) return;
  auto ping = Consumer<K>::attach(s.ping);
  auto pong = Producer<K>::attach(s.pong);
  for (std::uint64_t i = 0; i < warmup(o) + o.round_trips; ++i) {
    receive_one(ping, o, wd, "ping", [&](std::span<const std::byte> m) {
      ++(harness::verify_message(m, o.size, i) == Verdict::ok ? r.pings_verified : r.ping_failures);
      send_one(pong, o, wd, "pong", m, i);
    });
  }
}

// ---- modes -----------------------------------------------------------------

// Forks the consumer (or, fan-out, every subscriber) and produces here, each
// pinned where the options say; the consumers report through shared memory.
template <RingKind K>
int run_forked(const Options& o) {
  constexpr bool fanout = K == RingKind::broadcast;
  std::string cpu_note;
  const auto cpus = fanout ? std::nullopt : choose_cpus(o, cpu_note);
  if (cpus)
    cpu_note = fmt::format("producer on CPU {}, consumer on CPU {}", (*cpus)[0], (*cpus)[1]);
  const Segments segments = create_segments(o, /*replace_stale=*/false);
  print_header(o, segments, cpu_note);
  const std::size_t n = fanout ? static_cast<std::size_t>(o.subscribers) : 1;
  harness::SharedArray<ConsumerReport> reports(n);
  std::vector<pid_t> children;
  std::vector<std::optional<int>> statuses(n);
  const pid_t parent = ::getpid();
  for (std::size_t k = 0; k < n; ++k) {
    // A consumer must not outlive the producer (SIGTERM: it then unlinks the
    // segments the producer could not), nor unlink anything otherwise.
    const pid_t child = harness::fork_child(
        [&, k] {
          if (cpus) pin_or_warn((*cpus)[1]);
          try {
            harness::Watchdog wd(std::chrono::seconds(o.timeout_s),
                                 [&] { return ::getppid() == parent; });
            if constexpr (fanout) {
              auto sub = BroadcastSubscriber::attach(segments.data, JoinAt::next);
              if (sub.position() != 0) throw RunError("joined after the stream had started");
              std::atomic_ref<std::uint32_t>(reports[k].joined).store(1);
              consume(sub, o, wd, reports[k]);
            } else {
              run_consumer<K>(o, segments, wd, reports[k]);
            }
          } catch (const std::exception& e) {
            harness::set_text(reports[k].error, e.what());
            return kExitRuntime;
          }
          return kExitOk;
        },
        SIGTERM);
    if (child < 0) {
      for (const pid_t c : children) harness::kill_and_reap(c);
      throw RunError(fmt::format("fork: {}", std::strerror(errno)));
    }
    children.push_back(child);
    // On a signal the cleanup kills one child; the others die with this
    // process (their death signal).
    g_cleanup.child = children.front();
  }
  auto all_alive = [&] {
    for (std::size_t k = 0; k < n; ++k) {
      if (!statuses[k]) statuses[k] = harness::reap_now(children[k]);
    }
    return std::none_of(statuses.begin(), statuses.end(), [](auto& s) { return s.has_value(); });
  };
  if (cpus) pin_or_warn((*cpus)[0]);
  ProducerReport p;
  try {
    // Fan-out: every subscriber joins before the first message, so each reads them all.
    harness::Watchdog wd(std::chrono::seconds(o.timeout_s), all_alive);
    for (std::size_t k = 0; fanout && k < n; ++k) {
      while (std::atomic_ref<std::uint32_t>(reports[k].joined).load() == 0) {
        if (!wd.idle("every subscriber to join").empty())
          throw RunError("not every subscriber joined");
        std::this_thread::sleep_for(1ms);
      }
    }
    if constexpr (fanout) {
      auto tx = BroadcastProducer::attach(segments.data);
      produce(tx, o, wd, p);
    } else {
      run_producer<K>(o, segments, wd, p);
    }
  } catch (const std::exception& e) {
    p.error = e.what();
  }
  for (std::size_t k = 0; k < n; ++k) {
    if (statuses[k]) continue;
    // After a failure, a consumer still draining gets a moment, then is stopped.
    statuses[k] = p.error.empty() ? harness::reap(children[k])
                                  : harness::reap_within(children[k], 200ms).status;
  }
  g_cleanup.child = 0;
  return fanout ? report_fanout(o, &reports[0], statuses, p)
                : report_pipeline(o, reports[0], *statuses[0], p);
}

// --role producer / consumer: one side in this process.
template <RingKind K>
int run_one_role(const Options& o) {
  std::string cpu_note;
  const auto cpus = choose_cpus(o, cpu_note);
  const bool producer = o.role == Role::producer;
  if (cpus) pin_or_warn(producer ? (*cpus)[0] : (*cpus)[1]);
  if (cpus)
    cpu_note = fmt::format("{} on CPU {}", producer ? "producer" : "consumer", ::sched_getcpu());
  harness::Watchdog wd(std::chrono::seconds(o.timeout_s));
  if (!producer) {
    const Segments s = open_segments(o);
    print_header(o, s, cpu_note);
    ConsumerReport c;
    run_consumer<K>(o, s, wd, c);
    print_stream(o, c.verified, c.last_ns - c.first_ns);
    return print_verdict(o, c, nullptr, false);
  }
  const Segments s = create_segments(o, /*replace_stale=*/true);
  print_header(o, s, cpu_note);
  fmt::print("waiting for: shmring-demo --role consumer --name {} (same options)\n", o.name);
  std::fflush(stdout);
  ProducerReport p;
  run_producer<K>(o, s, wd, p);
  return report_producer(o, p);
}

template <RingKind K>
int run(const Options& o) {
  return o.role == Role::both ? run_forked<K>(o) : run_one_role<K>(o);
}

}  // namespace

int main(int argc, char** argv) {
  Options o;
  if (const auto done = parse_options(argc, argv, o)) return *done;
  g_cleanup.owner = ::getpid();
  CleanupOnExit cleanup;
  for (const int sig : {SIGINT, SIGTERM, SIGHUP, SIGQUIT}) ::signal(sig, on_fatal_signal);
  try {
    switch (o.kind) {
      case RingKind::spsc:
        return run<RingKind::spsc>(o);
      case RingKind::mpmc:
        return run<RingKind::mpmc>(o);
      default:
        return run_forked<RingKind::broadcast>(o);
    }
  } catch (const std::exception& e) {
    fmt::print(stderr, "shmring-demo: {}\n", e.what());
  }
  return kExitRuntime;
}
