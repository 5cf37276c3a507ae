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
// Exit status: 0 every message verified, 1 a message failed verification,
// 2 bad command line, 3 a runtime failure (segment, peer died, stall).
#include <fmt/core.h>
#include <fmt/format.h>
#include <sched.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <cerrno>
#include <charconv>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <functional>
#include <new>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <system_error>
#include <thread>
#include <vector>

#include "shmring/shmring.hpp"

namespace {

using Clock = std::chrono::steady_clock;
using namespace std::chrono_literals;

constexpr int kExitOk = 0;
constexpr int kExitVerifyFailed = 1;
constexpr int kExitUsage = 2;
constexpr int kExitRuntime = 3;

// Every blocking call waits at most this long before the loop checks that its
// peer is still there; --timeout bounds the total time without progress.
constexpr auto kPoll = 100ms;

// ---- options ---------------------------------------------------------------

enum class Role { both, producer, consumer };

struct Options {
  std::uint64_t messages = 2'000'000;
  std::uint64_t size = 64;
  std::uint64_t capacity = 1024;
  std::uint64_t batch = 16;
  std::uint64_t round_trips = 100'000;
  shmring::RingKind kind = shmring::RingKind::spsc;
  shmring::SlotFormat format = shmring::SlotFormat::plain;
  Role role = Role::both;
  std::string name;  // segment name prefix
  bool pin = true;
  std::optional<std::array<int, 2>> cpus;  // producer, consumer
  std::uint64_t timeout_s = 10;
  // Fan-out (--kind broadcast): subscriber processes, and the ring's delivery.
  std::uint64_t subscribers = 2;
  bool subscribers_given = false;
  shmring::Delivery delivery = shmring::Delivery::reliable;
  bool delivery_given = false;
};

constexpr std::uint64_t kHeaderBytes = 16;  // sequence number + checksum
constexpr std::uint64_t kLatencyCapacity = 16;

void print_usage(std::FILE* to) {
  fmt::print(to,
             "usage: shmring-demo [options]\n"
             "  Streams messages from a producer process to a consumer process through one\n"
             "  shmring ring in /dev/shm, verifies every message, reports throughput, then\n"
             "  measures round-trip latency with ping/pong over two rings.\n\n"
             "  --messages N      messages to stream (default 2000000)\n"
             "  --size BYTES      message size, >= 16: sequence + checksum + body (default 64)\n"
             "  --capacity N      slots in the ring, a power of two (default 1024)\n"
             "  --kind K          spsc, mpmc or broadcast (default spsc); broadcast is the\n"
             "                    fan-out mode: one producer, --subscribers processes that\n"
             "                    each read every message (no ping/pong phase)\n"
             "  --subscribers N   broadcast: subscriber processes, 1-64 (default 2)\n"
             "  --delivery D      broadcast: reliable (default; every subscriber verifies\n"
             "                    every message, the producer waits for the slowest) or\n"
             "                    lossy (the producer never waits; subscribers verify what\n"
             "                    they read and count the sequence gaps)\n"
             "  --slot-format F   plain (default) or low_latency: SPSC only, size <= 4096;\n"
             "                    messages are copied in and out (push/pop), not claimed\n"
             "  --batch N         slots claimed, committed and released at once (default 16)\n"
             "  --round-trips N   ping/pong round trips to time, 0 skips (default 100000)\n"
             "  --role R          both (fork; default), producer or consumer: run one side\n"
             "                    and start the other side separately with the same options\n"
             "  --name NAME       segment name prefix (default shmring-demo-<pid>, or\n"
             "                    shmring-demo with --role)\n"
             "  --cpus P,C        pin the producer to CPU P and the consumer to CPU C\n"
             "  --no-pin          do not pin (by default: two different CPUs if there are 2+)\n"
             "  --timeout S       give up after S seconds without progress (default 10)\n"
             "  -h, --help        this text\n\n"
             "  exit status: 0 every message verified, 1 verification failed, 2 usage,\n"
             "  3 runtime failure\n");
}

std::optional<std::uint64_t> parse_u64(std::string_view s) {
  std::uint64_t v = 0;
  const auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  if (ec != std::errc{} || end != s.data() + s.size()) return std::nullopt;
  return v;
}

// Returns an error message, or "" when the options are usable.
std::string parse_options(int argc, char** argv, Options& o, bool& help) {
  std::vector<std::string_view> args(argv + 1, argv + argc);
  for (std::size_t i = 0; i < args.size(); ++i) {
    std::string_view arg = args[i];
    std::string_view value;
    bool has_value = false;
    if (const auto eq = arg.find('='); arg.starts_with("--") && eq != std::string_view::npos) {
      value = arg.substr(eq + 1);
      arg = arg.substr(0, eq);
      has_value = true;
    }
    auto next = [&](std::string_view& out) -> bool {
      if (has_value) {
        out = value;
        return true;
      }
      if (i + 1 >= args.size()) return false;
      out = args[++i];
      return true;
    };
    auto number = [&](std::uint64_t& out) -> std::string {
      std::string_view v;
      if (!next(v)) return fmt::format("{} needs a value", arg);
      const auto n = parse_u64(v);
      if (!n) return fmt::format("{}: '{}' is not a non-negative integer", arg, v);
      out = *n;
      return {};
    };
    std::string err;
    std::string_view v;
    if (arg == "-h" || arg == "--help") {
      help = true;
      return {};
    } else if (arg == "--messages") {
      err = number(o.messages);
    } else if (arg == "--size") {
      err = number(o.size);
    } else if (arg == "--capacity") {
      err = number(o.capacity);
    } else if (arg == "--batch") {
      err = number(o.batch);
    } else if (arg == "--round-trips") {
      err = number(o.round_trips);
    } else if (arg == "--timeout") {
      err = number(o.timeout_s);
    } else if (arg == "--kind") {
      if (!next(v)) return "--kind needs a value";
      if (v == "spsc") {
        o.kind = shmring::RingKind::spsc;
      } else if (v == "mpmc") {
        o.kind = shmring::RingKind::mpmc;
      } else if (v == "broadcast") {
        o.kind = shmring::RingKind::broadcast;
      } else {
        return fmt::format("--kind: '{}' is not spsc, mpmc or broadcast", v);
      }
    } else if (arg == "--subscribers") {
      err = number(o.subscribers);
      o.subscribers_given = true;
    } else if (arg == "--delivery") {
      if (!next(v)) return "--delivery needs a value";
      if (v == "reliable") {
        o.delivery = shmring::Delivery::reliable;
      } else if (v == "lossy") {
        o.delivery = shmring::Delivery::lossy;
      } else {
        return fmt::format("--delivery: '{}' is neither reliable nor lossy", v);
      }
      o.delivery_given = true;
    } else if (arg == "--slot-format") {
      if (!next(v)) return "--slot-format needs a value";
      if (v == "plain") {
        o.format = shmring::SlotFormat::plain;
      } else if (v == "low_latency") {
        o.format = shmring::SlotFormat::low_latency;
      } else {
        return fmt::format("--slot-format: '{}' is neither plain nor low_latency", v);
      }
    } else if (arg == "--role") {
      if (!next(v)) return "--role needs a value";
      if (v == "both") {
        o.role = Role::both;
      } else if (v == "producer") {
        o.role = Role::producer;
      } else if (v == "consumer") {
        o.role = Role::consumer;
      } else {
        return fmt::format("--role: '{}' is not both, producer or consumer", v);
      }
    } else if (arg == "--name") {
      if (!next(v)) return "--name needs a value";
      o.name = std::string(v);
    } else if (arg == "--cpus") {
      if (!next(v)) return "--cpus needs a value";
      const auto comma = v.find(',');
      const auto p = comma == std::string_view::npos ? std::nullopt : parse_u64(v.substr(0, comma));
      const auto c =
          comma == std::string_view::npos ? std::nullopt : parse_u64(v.substr(comma + 1));
      if (!p || !c || *p >= CPU_SETSIZE || *c >= CPU_SETSIZE) {
        return fmt::format("--cpus: '{}' is not two CPU numbers like 0,1", v);
      }
      o.cpus = std::array<int, 2>{static_cast<int>(*p), static_cast<int>(*c)};
    } else if (arg == "--no-pin") {
      o.pin = false;
    } else {
      return fmt::format("unknown option '{}'", arg);
    }
    if (!err.empty()) return err;
  }
  if (o.messages == 0) return "--messages must be at least 1";
  if (o.size < kHeaderBytes) {
    return fmt::format(
        "--size must be at least {} bytes (8-byte sequence number + 8-byte checksum)",
        kHeaderBytes);
  }
  if (o.size > shmring::kMaxSlotSize) {
    return fmt::format("--size must be at most {} bytes", shmring::kMaxSlotSize);
  }
  if (o.format == shmring::SlotFormat::low_latency) {
    if (o.kind != shmring::RingKind::spsc) {
      return "--slot-format low_latency needs --kind spsc: low-latency slots have no "
             "`committed` word, so several producers or consumers (mpmc) cannot share them";
    }
    if (o.size > shmring::kMaxLowLatencySlotSize) {
      return fmt::format("--size must be at most {} bytes with --slot-format low_latency",
                         shmring::kMaxLowLatencySlotSize);
    }
  }
  if (o.kind == shmring::RingKind::broadcast) {
    if (o.subscribers == 0 || o.subscribers > shmring::kMaxSubscribers) {
      return fmt::format("--subscribers must be between 1 and {}", shmring::kMaxSubscribers);
    }
    if (o.role != Role::both) {
      return "--kind broadcast runs every process itself: it takes no --role";
    }
    if (o.format == shmring::SlotFormat::low_latency) {
      return "--slot-format low_latency needs --kind spsc, not broadcast";
    }
  } else if (o.subscribers_given || o.delivery_given) {
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
    if (auto problem = shmring::Segment::name_problem(o.name + suffix); !problem.empty()) {
      return fmt::format("--name '{}': {}", o.name, problem);
    }
  }
  return {};
}

// ---- messages --------------------------------------------------------------
//
// [0, 8) sequence number, [8, 16) checksum of everything else, then a body
// derived from the sequence number. The consumer checks all three.

std::uint64_t load64(const std::byte* p) noexcept {
  std::uint64_t v;
  std::memcpy(&v, p, sizeof v);
  return v;
}
void store64(std::byte* p, std::uint64_t v) noexcept { std::memcpy(p, &v, sizeof v); }

constexpr std::uint64_t kPrime1 = 0x9E3779B185EBCA87ull;
constexpr std::uint64_t kPrime2 = 0xC2B2AE3D27D4EB4Full;

constexpr std::uint64_t rotl(std::uint64_t v, int r) noexcept { return (v << r) | (v >> (64 - r)); }

// An xxHash64-style four-lane hash: fast enough that the demo measures the
// ring, not the checksum, and any flipped, lost or shifted byte changes it.
std::uint64_t checksum(std::uint64_t seq, std::span<const std::byte> body) noexcept {
  std::uint64_t lane[4] = {seq ^ kPrime1, seq + kPrime2, rotl(seq, 17), ~seq};
  std::size_t i = 0;
  for (; i + 32 <= body.size(); i += 32) {
    for (std::size_t l = 0; l < 4; ++l) {
      lane[l] = rotl(lane[l] + load64(body.data() + i + 8 * l) * kPrime2, 31) * kPrime1;
    }
  }
  for (; i + 8 <= body.size(); i += 8) {
    lane[0] = rotl(lane[0] + load64(body.data() + i) * kPrime2, 31) * kPrime1;
  }
  for (; i < body.size(); ++i) {
    lane[1] = rotl(lane[1] ^ (static_cast<std::uint64_t>(body[i]) * kPrime1), 11) * kPrime2;
  }
  std::uint64_t h = rotl(lane[0], 1) + rotl(lane[1], 7) + rotl(lane[2], 12) + rotl(lane[3], 18);
  h ^= body.size();
  h ^= h >> 33;
  h *= kPrime2;
  h ^= h >> 29;
  return h;
}

void fill_message(std::span<std::byte> msg, std::uint64_t seq) noexcept {
  std::byte* body = msg.data() + kHeaderBytes;
  const std::size_t body_size = msg.size() - kHeaderBytes;
  std::uint64_t word = seq * kPrime1;
  std::size_t i = 0;
  for (; i + 8 <= body_size; i += 8) store64(body + i, word++);
  for (; i < body_size; ++i) body[i] = static_cast<std::byte>(word >> (8 * (i % 8)));
  store64(msg.data(), seq);
  store64(msg.data() + 8, checksum(seq, {body, body_size}));
}

enum class Verdict { ok, wrong_size, wrong_sequence, bad_checksum };

const char* to_string(Verdict v) {
  switch (v) {
    case Verdict::ok:
      return "ok";
    case Verdict::wrong_size:
      return "wrong size";
    case Verdict::wrong_sequence:
      return "wrong sequence number";
    case Verdict::bad_checksum:
      return "bad checksum";
  }
  return "?";
}

Verdict verify_message(std::span<const std::byte> msg, std::uint64_t size,
                       std::uint64_t expected_seq) noexcept {
  if (msg.size() != size) return Verdict::wrong_size;
  const std::uint64_t seq = load64(msg.data());
  if (seq != expected_seq) return Verdict::wrong_sequence;
  if (load64(msg.data() + 8) != checksum(seq, msg.subspan(kHeaderBytes))) {
    return Verdict::bad_checksum;
  }
  return Verdict::ok;
}

// ---- results ---------------------------------------------------------------

// What the consumer side found. Plain data: in fork mode the child writes it
// into an anonymous shared mapping and the parent prints it.
struct ConsumerReport {
  std::uint64_t received = 0;
  std::uint64_t verified = 0;
  std::uint64_t failures = 0;
  std::uint64_t first_failure_seq = 0;  // the expected sequence number
  Verdict first_failure = Verdict::ok;
  std::int64_t first_ns = 0;  // steady clock, first message seen
  std::int64_t last_ns = 0;   // steady clock, last message released
  std::uint64_t pings_verified = 0;
  std::uint64_t ping_failures = 0;
  char error[512] = {};
};

struct ProducerReport {
  std::uint64_t sent = 0;
  std::int64_t start_ns = 0;
  std::int64_t end_ns = 0;
  std::uint64_t pongs_verified = 0;
  std::uint64_t pong_failures = 0;
  std::vector<std::int64_t> round_trip_ns;
  std::string error;
};

std::int64_t now_ns() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(Clock::now().time_since_epoch())
      .count();
}

void set_error(ConsumerReport& r, std::string_view what) {
  const std::size_t n = std::min(what.size(), sizeof r.error - 1);
  std::memcpy(r.error, what.data(), n);
  r.error[n] = '\0';
}

// ---- waiting on a peer -----------------------------------------------------

// Each blocking call returns after kPoll at the latest; the watchdog then
// decides whether to keep waiting. No clock is read on the hot path.
class Watchdog {
 public:
  Watchdog(std::uint64_t timeout_s, std::function<bool()> peer_alive)
      : max_idle_polls_(timeout_s * 1000 / static_cast<std::uint64_t>(kPoll.count())),
        peer_alive_(std::move(peer_alive)) {}

  void progress() noexcept { idle_polls_ = 0; }
  // After a wait that timed out: "" to keep waiting, else why to give up.
  std::string idle(std::string_view waiting_for) {
    if (peer_alive_ && !peer_alive_()) {
      return fmt::format("the peer process exited while we waited for {}", waiting_for);
    }
    if (++idle_polls_ >= max_idle_polls_) {
      return fmt::format("no progress for {} ms while waiting for {}",
                         idle_polls_ * static_cast<std::uint64_t>(kPoll.count()), waiting_for);
    }
    return {};
  }

 private:
  std::uint64_t max_idle_polls_;
  std::uint64_t idle_polls_ = 0;
  std::function<bool()> peer_alive_;
};

struct RunError {
  std::string message;
};

// Blocks for up to `max` writable slots, polling the watchdog.
template <class Producer>
shmring::WriteClaim claim_slots(Producer& tx, std::uint64_t max, Watchdog& wd,
                                std::string_view what) {
  for (;;) {
    shmring::WriteClaim c = tx.claim(static_cast<std::size_t>(max), kPoll);
    if (!c.empty()) {
      wd.progress();
      return c;
    }
    if (c.status() != shmring::Status::timeout) {
      throw RunError{fmt::format("claim on the {} ring failed: {}", what, to_string(c.status()))};
    }
    if (auto why = wd.idle(fmt::format("free slots in the {} ring", what)); !why.empty()) {
      throw RunError{why};
    }
  }
}

// Blocks for up to `max` readable messages, polling the watchdog.
template <class Consumer>
shmring::ReadClaim peek_messages(Consumer& rx, std::uint64_t max, Watchdog& wd,
                                 std::string_view what) {
  for (;;) {
    shmring::ReadClaim c = rx.peek(static_cast<std::size_t>(max), kPoll);
    if (!c.empty()) {
      wd.progress();
      return c;
    }
    if (c.status() != shmring::Status::timeout) {
      throw RunError{fmt::format("peek on the {} ring failed: {}", what, to_string(c.status()))};
    }
    if (auto why = wd.idle(fmt::format("messages in the {} ring", what)); !why.empty()) {
      throw RunError{why};
    }
  }
}

// ---- the two roles ---------------------------------------------------------

struct Segments {
  shmring::Segment data, ping, pong;
};

template <shmring::RingKind K>
struct Handles;
template <>
struct Handles<shmring::RingKind::spsc> {
  using Producer = shmring::SpscProducer;
  using Consumer = shmring::SpscConsumer;
};
template <>
struct Handles<shmring::RingKind::mpmc> {
  using Producer = shmring::MpmcProducer;
  using Consumer = shmring::MpmcConsumer;
};

// ---- low-latency slots: copy calls ------------------------------------------
//
// A ring of low-latency slots (--slot-format low_latency, SPSC only) lends no
// slot in place: messages are copied in (try_push_many for a batch, push for
// what did not fit) and copied out (pop), then verified as above.

void push_message(shmring::SpscProducer& tx, std::span<const std::byte> msg, Watchdog& wd,
                  std::string_view what) {
  for (;;) {
    const shmring::Status st = tx.push(msg, kPoll);
    if (st == shmring::Status::ok) {
      wd.progress();
      return;
    }
    if (st != shmring::Status::timeout) {
      throw RunError{fmt::format("push on the {} ring failed: {}", what, to_string(st))};
    }
    if (auto why = wd.idle(fmt::format("free slots in the {} ring", what)); !why.empty()) {
      throw RunError{why};
    }
  }
}

// Blocks for the next message, copied into `buffer` (the slot size); returns
// its size.
std::size_t pop_message(shmring::SpscConsumer& rx, std::span<std::byte> buffer, Watchdog& wd,
                        std::string_view what) {
  for (;;) {
    std::size_t size = 0;
    const shmring::Status st = rx.pop(buffer, size, kPoll);
    if (st == shmring::Status::ok) {
      wd.progress();
      return size;
    }
    if (st != shmring::Status::timeout) {
      throw RunError{fmt::format("pop on the {} ring failed: {}", what, to_string(st))};
    }
    if (auto why = wd.idle(fmt::format("messages in the {} ring", what)); !why.empty()) {
      throw RunError{why};
    }
  }
}

void run_producer_copy(const Options& o, const Segments& s, Watchdog& wd, ProducerReport& r) {
  shmring::SpscProducer tx = shmring::SpscProducer::attach(s.data);
  const auto size = static_cast<std::size_t>(o.size);
  std::vector<std::byte> batch(static_cast<std::size_t>(o.batch) * size);
  std::vector<std::span<const std::byte>> messages;
  r.start_ns = now_ns();
  std::uint64_t seq = 0;
  while (seq < o.messages) {
    const std::size_t n = static_cast<std::size_t>(std::min(o.batch, o.messages - seq));
    messages.clear();
    for (std::size_t i = 0; i < n; ++i) {
      const std::span<std::byte> m(batch.data() + i * size, size);
      fill_message(m, seq + i);
      messages.emplace_back(m);
    }
    // As many as there is room for with one publication, the rest waiting.
    std::size_t done = tx.try_push_many(messages);
    if (done != 0) wd.progress();
    for (; done < n; ++done) push_message(tx, messages[done], wd, "data");
    seq += n;
    r.sent = seq;
  }
  r.end_ns = now_ns();

  if (o.round_trips == 0) return;
  shmring::SpscProducer ping = shmring::SpscProducer::attach(s.ping);
  shmring::SpscConsumer pong = shmring::SpscConsumer::attach(s.pong);
  std::vector<std::byte> out(size), in(size);
  const std::uint64_t warmup = std::clamp<std::uint64_t>(o.round_trips / 10, 100, 10'000);
  r.round_trip_ns.reserve(static_cast<std::size_t>(o.round_trips));
  for (std::uint64_t i = 0; i < warmup + o.round_trips; ++i) {
    const auto t0 = Clock::now();
    fill_message(out, i);
    push_message(ping, out, wd, "ping");
    const std::size_t got = pop_message(pong, in, wd, "pong");
    const Verdict v = verify_message(std::span<const std::byte>(in.data(), got), o.size, i);
    const auto t1 = Clock::now();
    if (v != Verdict::ok) {
      ++r.pong_failures;
      continue;
    }
    ++r.pongs_verified;
    if (i >= warmup) r.round_trip_ns.push_back((t1 - t0).count());
  }
}

void run_consumer_copy(const Options& o, const Segments& s, Watchdog& wd, ConsumerReport& r) {
  shmring::SpscConsumer rx = shmring::SpscConsumer::attach(s.data);
  std::vector<std::byte> buffer(static_cast<std::size_t>(s.data.geometry().slot_size));
  std::uint64_t expected = 0;
  for (; expected < o.messages; ++expected) {
    const std::size_t got = pop_message(rx, buffer, wd, "data");
    if (expected == 0) r.first_ns = now_ns();
    const Verdict v =
        verify_message(std::span<const std::byte>(buffer.data(), got), o.size, expected);
    if (v == Verdict::ok) {
      ++r.verified;
    } else if (r.failures++ == 0) {
      r.first_failure = v;
      r.first_failure_seq = expected;
    }
    r.received = expected + 1;
  }
  r.last_ns = now_ns();

  if (o.round_trips == 0) return;
  shmring::SpscConsumer ping = shmring::SpscConsumer::attach(s.ping);
  shmring::SpscProducer pong = shmring::SpscProducer::attach(s.pong);
  const std::uint64_t warmup = std::clamp<std::uint64_t>(o.round_trips / 10, 100, 10'000);
  for (std::uint64_t i = 0; i < warmup + o.round_trips; ++i) {
    const std::size_t got = pop_message(ping, buffer, wd, "ping");
    const std::span<const std::byte> m(buffer.data(), got);
    if (verify_message(m, o.size, i) == Verdict::ok) {
      ++r.pings_verified;
    } else {
      ++r.ping_failures;
    }
    push_message(pong, m, wd, "pong");
  }
}

// Streams the messages (zero-copy: each is written in its slot), then sends
// the pings and times each round trip.
template <shmring::RingKind K>
void run_producer(const Options& o, const Segments& s, Watchdog& wd, ProducerReport& r) {
  if constexpr (K == shmring::RingKind::spsc) {
    if (o.format == shmring::SlotFormat::low_latency) return run_producer_copy(o, s, wd, r);
  }
  using P = typename Handles<K>::Producer;
  using C = typename Handles<K>::Consumer;
  P tx = P::attach(s.data);
  r.start_ns = now_ns();
  std::uint64_t seq = 0;
  while (seq < o.messages) {
    shmring::WriteClaim c = claim_slots(tx, std::min(o.batch, o.messages - seq), wd, "data");
    for (std::size_t i = 0; i < c.size(); ++i) {
      fill_message(c[i].first(static_cast<std::size_t>(o.size)), seq + i);
      if (c.set_size(i, static_cast<std::size_t>(o.size)) != shmring::Status::ok) {
        throw RunError{"set_size refused a message that fits its slot"};
      }
    }
    const std::size_t n = c.size();  // commit_batch empties the claim
    c.commit_batch();
    seq += n;
    r.sent = seq;
  }
  r.end_ns = now_ns();

  if (o.round_trips == 0) return;
  P ping = P::attach(s.ping);
  C pong = C::attach(s.pong);
  const std::uint64_t warmup = std::clamp<std::uint64_t>(o.round_trips / 10, 100, 10'000);
  r.round_trip_ns.reserve(static_cast<std::size_t>(o.round_trips));
  for (std::uint64_t i = 0; i < warmup + o.round_trips; ++i) {
    const auto t0 = Clock::now();
    shmring::WriteClaim w = claim_slots(ping, 1, wd, "ping");
    fill_message(w[0].first(static_cast<std::size_t>(o.size)), i);
    if (w.commit(static_cast<std::size_t>(o.size)) != shmring::Status::ok) {
      throw RunError{"commit on the ping ring failed"};
    }
    shmring::ReadClaim m = peek_messages(pong, 1, wd, "pong");
    const Verdict v = verify_message(m[0], o.size, i);
    m.release();
    const auto t1 = Clock::now();
    if (v != Verdict::ok) {
      ++r.pong_failures;
      continue;
    }
    ++r.pongs_verified;
    if (i >= warmup) r.round_trip_ns.push_back((t1 - t0).count());
  }
}

// Receives and verifies every message in place, then answers each ping by
// copying it, slot to slot, into the pong ring.
template <shmring::RingKind K>
void run_consumer(const Options& o, const Segments& s, Watchdog& wd, ConsumerReport& r) {
  if constexpr (K == shmring::RingKind::spsc) {
    if (o.format == shmring::SlotFormat::low_latency) return run_consumer_copy(o, s, wd, r);
  }
  using P = typename Handles<K>::Producer;
  using C = typename Handles<K>::Consumer;
  C rx = C::attach(s.data);
  std::uint64_t expected = 0;
  while (expected < o.messages) {
    shmring::ReadClaim c = peek_messages(rx, std::min(o.batch, o.messages - expected), wd, "data");
    if (expected == 0) r.first_ns = now_ns();
    for (std::size_t i = 0; i < c.size(); ++i, ++expected) {
      const Verdict v = verify_message(c[i], o.size, expected);
      if (v == Verdict::ok) {
        ++r.verified;
      } else if (r.failures++ == 0) {
        r.first_failure = v;
        r.first_failure_seq = expected;
      }
    }
    c.release();
    r.received = expected;
  }
  r.last_ns = now_ns();

  if (o.round_trips == 0) return;
  C ping = C::attach(s.ping);
  P pong = P::attach(s.pong);
  const std::uint64_t warmup = std::clamp<std::uint64_t>(o.round_trips / 10, 100, 10'000);
  for (std::uint64_t i = 0; i < warmup + o.round_trips; ++i) {
    shmring::ReadClaim m = peek_messages(ping, 1, wd, "ping");
    if (verify_message(m[0], o.size, i) == Verdict::ok) {
      ++r.pings_verified;
    } else {
      ++r.ping_failures;
    }
    shmring::WriteClaim w = claim_slots(pong, 1, wd, "pong");
    std::memcpy(w[0].data(), m[0].data(), m[0].size());
    if (w.commit(m[0].size()) != shmring::Status::ok) {
      throw RunError{"commit on the pong ring failed"};
    }
    m.release();
  }
}

// ---- segments, cleanup, CPUs -----------------------------------------------

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

void unlink_created() noexcept {
  if (::getpid() == g_cleanup.owner) unlink_paths();
}

// The owner cleans up and takes its child along. A forked consumer cleans up
// only for an owner that died (it gets SIGTERM then: PR_SET_PDEATHSIG), so a
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

void remember_created(const std::string& name) {
  const int i = g_cleanup.count.load();
  if (i >= static_cast<int>(CleanupState::kMax)) return;
  fmt::format_to_n(g_cleanup.paths[i], sizeof g_cleanup.paths[i] - 1, "/dev/shm/{}", name);
  g_cleanup.count.store(i + 1);
}

struct CleanupOnExit {
  ~CleanupOnExit() { unlink_created(); }
};

shmring::CreateOptions create_options(shmring::RingKind kind, std::uint64_t capacity,
                                      std::uint64_t size, shmring::SlotFormat format) {
  shmring::CreateOptions c;
  c.kind = kind;
  c.format = format;
  c.capacity = capacity;
  c.slot_size = size;
  return c;
}

// Creates a segment. In --role mode a leftover of a run that died is
// replaced; a segment whose creator still runs is not.
shmring::Segment create_segment(const std::string& name, const shmring::CreateOptions& c,
                                bool replace_stale) {
  std::error_code ec;
  shmring::Segment s = shmring::Segment::create(name, c, ec);
  if (!s && replace_stale && ec == shmring::errc::already_exists) {
    shmring::OpenOptions oo;
    oo.read_only = true;
    oo.init_timeout = 100ms;
    std::error_code open_ec;
    const shmring::Segment old = shmring::Segment::open(name, oo, open_ec);
    if (old) {
      const auto* h = reinterpret_cast<const shmring::SegmentHeader*>(old.base());
      const shmring::process::Identity creator{h->creator_pid, h->creator_start_time};
      if (shmring::process::alive(shmring::process::pack(creator))) {
        throw RunError{
            fmt::format("segment '{}' belongs to a running process (pid {}); choose "
                        "another --name",
                        name, creator.pid)};
      }
    }
    fmt::print("removing stale segment /dev/shm/{}\n", name);
    shmring::Segment::unlink(name, ec);
    s = shmring::Segment::create(name, c, ec);
  }
  if (!s) throw shmring::Error(ec, shmring::last_error_message());
  remember_created(name);
  return s;
}

Segments create_segments(const Options& o, bool replace_stale) {
  Segments s;
  s.data = create_segment(o.name + "-data", create_options(o.kind, o.capacity, o.size, o.format),
                          replace_stale);
  s.ping = create_segment(
      o.name + "-ping", create_options(o.kind, kLatencyCapacity, o.size, o.format), replace_stale);
  s.pong = create_segment(
      o.name + "-pong", create_options(o.kind, kLatencyCapacity, o.size, o.format), replace_stale);
  return s;
}

// --role consumer: waits (bounded) for the producer to create the segments.
Segments open_segments(const Options& o) {
  const auto deadline = Clock::now() + std::chrono::seconds(o.timeout_s);
  auto open = [&](const std::string& name) {
    shmring::OpenOptions oo;
    oo.kind = o.kind;
    for (;;) {
      std::error_code ec;
      shmring::Segment s = shmring::Segment::open(name, oo, ec);
      if (s) {
        if (s.geometry().slot_size != o.size) {
          throw RunError{
              fmt::format("segment '{}' holds {}-byte slots, --size is {}; give both "
                          "sides the same options",
                          name, s.geometry().slot_size, o.size)};
        }
        if (s.geometry().format != o.format) {
          throw RunError{fmt::format(
              "segment '{}' holds {} slots, --slot-format is {}; give "
              "both sides the same options",
              name, shmring::to_string(s.geometry().format), shmring::to_string(o.format))};
        }
        return s;
      }
      if (ec != shmring::errc::not_found || Clock::now() >= deadline) {
        throw shmring::Error(ec, shmring::last_error_message());
      }
      std::this_thread::sleep_for(20ms);
    }
  };
  Segments s;
  s.data = open(o.name + "-data");
  s.ping = open(o.name + "-ping");
  s.pong = open(o.name + "-pong");
  return s;
}

std::vector<int> allowed_cpus() {
  std::vector<int> cpus;
  cpu_set_t set;
  CPU_ZERO(&set);
  if (::sched_getaffinity(0, sizeof set, &set) != 0) return cpus;
  for (int c = 0; c < CPU_SETSIZE; ++c) {
    if (CPU_ISSET(c, &set)) cpus.push_back(c);
  }
  return cpus;
}

// The CPUs for the producer and the consumer, or nothing when not pinning.
std::optional<std::array<int, 2>> choose_cpus(const Options& o, std::string& note) {
  if (!o.pin) {
    note = "not pinned (--no-pin)";
    return std::nullopt;
  }
  if (o.cpus) return o.cpus;
  const std::vector<int> cpus = allowed_cpus();
  if (cpus.size() < 2) {
    note = "not pinned: one CPU available, producer and consumer share it";
    return std::nullopt;
  }
  return std::array<int, 2>{cpus[0], cpus[1]};
}

// Pins the calling process; a refusal is reported, not fatal.
void pin_to(int cpu) {
  cpu_set_t set;
  CPU_ZERO(&set);
  CPU_SET(cpu, &set);
  if (::sched_setaffinity(0, sizeof set, &set) != 0) {
    fmt::print(stderr, "warning: cannot pin pid {} to CPU {}: {}\n", ::getpid(), cpu,
               std::strerror(errno));
  }
}

// ---- reporting -------------------------------------------------------------

std::string format_ns(double ns) {
  if (ns < 1e3) return fmt::format("{:.0f} ns", ns);
  if (ns < 1e6) return fmt::format("{:.2f} us", ns / 1e3);
  if (ns < 1e9) return fmt::format("{:.2f} ms", ns / 1e6);
  return fmt::format("{:.2f} s", ns / 1e9);
}

std::string format_bytes(std::uint64_t b) {
  if (b < 1024) return fmt::format("{} B", b);
  if (b < 1024 * 1024) return fmt::format("{:.1f} KiB", static_cast<double>(b) / 1024);
  if (b < 1024ull * 1024 * 1024)
    return fmt::format("{:.1f} MiB", static_cast<double>(b) / (1024 * 1024));
  return fmt::format("{:.2f} GiB", static_cast<double>(b) / (1024.0 * 1024 * 1024));
}

void print_header(const Options& o, const Segments& s, const std::string& cpu_note) {
  fmt::print("shmring demo: {} ring{}, {} slots x {}, batch {}, {} messages\n",
             shmring::to_string(o.kind),
             o.format == shmring::SlotFormat::low_latency ? " (low-latency slots, copy calls)" : "",
             o.capacity, format_bytes(o.size), o.batch, fmt::group_digits(o.messages));
  fmt::print("  segment  /dev/shm/{} ({}), ping/pong rings /dev/shm/{}-ping|-pong\n", s.data.name(),
             format_bytes(s.data.size()), o.name);
  if (!cpu_note.empty()) fmt::print("  cpus     {}\n", cpu_note);
}

void print_stream(const Options& o, std::uint64_t verified, std::int64_t ns) {
  const double secs = static_cast<double>(std::max<std::int64_t>(ns, 1)) / 1e9;
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
    return static_cast<double>(rtt[std::min(idx, rtt.size() - 1)]);
  };
  double sum = 0;
  for (const auto v : rtt) sum += static_cast<double>(v);
  fmt::print("latency:  {} round trips of {} (ping ring -> consumer -> pong ring), verified\n",
             fmt::group_digits(rtt.size()), format_bytes(o.size));
  fmt::print("          min {}  p50 {}  p90 {}  p99 {}  p99.9 {}  max {}  mean {}\n",
             format_ns(static_cast<double>(rtt.front())), format_ns(pct(50)), format_ns(pct(90)),
             format_ns(pct(99)), format_ns(pct(99.9)), format_ns(static_cast<double>(rtt.back())),
             format_ns(sum / static_cast<double>(rtt.size())));
}

// The verdict for the whole run: prints it, returns the exit code. A message
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
  const std::uint64_t pings = c.pings_verified;
  std::string latency;
  if (pings != 0) {
    latency = fmt::format(", {} pings", fmt::group_digits(pings));
    if (p != nullptr) latency += fmt::format(" and {} pongs", fmt::group_digits(p->pongs_verified));
  }
  fmt::print("result:   OK, all {} messages{} verified\n", fmt::group_digits(c.verified), latency);
  return kExitOk;
}

// ---- modes -----------------------------------------------------------------

template <shmring::RingKind K>
int run_both(const Options& o) {
  std::string cpu_note;
  const auto cpus = choose_cpus(o, cpu_note);
  Segments segments = create_segments(o, /*replace_stale=*/false);
  if (cpus) {
    cpu_note = fmt::format("producer on CPU {}, consumer on CPU {}", (*cpus)[0], (*cpus)[1]);
  }
  print_header(o, segments, cpu_note);

  void* shared = ::mmap(nullptr, sizeof(ConsumerReport), PROT_READ | PROT_WRITE,
                        MAP_SHARED | MAP_ANONYMOUS, -1, 0);
  if (shared == MAP_FAILED) throw RunError{fmt::format("mmap: {}", std::strerror(errno))};
  auto* report = new (shared) ConsumerReport();

  const pid_t parent = ::getpid();
  std::fflush(nullptr);
  const pid_t child = ::fork();
  if (child < 0) throw RunError{fmt::format("fork: {}", std::strerror(errno))};
  if (child == 0) {
    // The consumer. It must not outlive the producer, nor unlink anything.
    ::prctl(PR_SET_PDEATHSIG, SIGTERM);
    if (::getppid() != parent) ::_exit(kExitRuntime);
    if (cpus) pin_to((*cpus)[1]);
    int rc = kExitOk;
    try {
      Watchdog wd(o.timeout_s, [parent] { return ::getppid() == parent; });
      run_consumer<K>(o, segments, wd, *report);
    } catch (const RunError& e) {
      set_error(*report, e.message);
      rc = kExitRuntime;
    } catch (const std::exception& e) {
      set_error(*report, e.what());
      rc = kExitRuntime;
    }
    std::fflush(nullptr);
    ::_exit(rc);
  }
  g_cleanup.child = child;

  // The producer, in this process.
  if (cpus) pin_to((*cpus)[0]);
  ProducerReport p;
  std::optional<int> child_status;
  auto child_alive = [&] {
    int st = 0;
    if (!child_status && ::waitpid(child, &st, WNOHANG) == child) child_status = st;
    return !child_status;
  };
  try {
    Watchdog wd(o.timeout_s, child_alive);
    run_producer<K>(o, segments, wd, p);
  } catch (const RunError& e) {
    p.error = e.message;
  } catch (const std::exception& e) {
    p.error = e.what();
  }
  if (!p.error.empty() && !child_status) {
    // Give a consumer that is still draining a moment, then stop it.
    for (int i = 0; i < 20 && child_alive(); ++i) std::this_thread::sleep_for(10ms);
    if (child_alive()) ::kill(child, SIGKILL);
  }
  if (!child_status) {
    int st = 0;
    while (::waitpid(child, &st, 0) < 0 && errno == EINTR) {
    }
    child_status = st;
  }
  g_cleanup.child = 0;

  int rc = kExitOk;
  if (report->received != 0 && report->last_ns > report->first_ns) {
    print_stream(o, report->verified, report->last_ns - report->first_ns);
  }
  print_latency(o, p.round_trip_ns);
  if (!p.error.empty()) {
    fmt::print("error:    producer: {}\n", p.error);
    rc = kExitRuntime;
  }
  if (report->error[0] != '\0') {
    fmt::print("error:    consumer: {}\n", report->error);
    rc = kExitRuntime;
  }
  if (WIFSIGNALED(*child_status)) {
    fmt::print("error:    consumer process killed by signal {} ({})\n", WTERMSIG(*child_status),
               strsignal(WTERMSIG(*child_status)));
    rc = kExitRuntime;
  } else if (WIFEXITED(*child_status) && WEXITSTATUS(*child_status) != 0 && rc == kExitOk) {
    fmt::print("error:    consumer exited with status {}\n", WEXITSTATUS(*child_status));
    rc = kExitRuntime;
  }
  const int verdict = print_verdict(o, *report, &p, rc != kExitOk);
  ::munmap(shared, sizeof(ConsumerReport));
  return verdict;
}

template <shmring::RingKind K>
int run_one_role(const Options& o) {
  std::string cpu_note;
  const auto cpus = choose_cpus(o, cpu_note);
  const bool producer = o.role == Role::producer;
  if (cpus) pin_to(producer ? (*cpus)[0] : (*cpus)[1]);
  Watchdog wd(o.timeout_s, nullptr);
  if (producer) {
    Segments s = create_segments(o, /*replace_stale=*/true);
    print_header(o, s, cpus ? fmt::format("producer on CPU {}", ::sched_getcpu()) : cpu_note);
    fmt::print("waiting for: shmring-demo --role consumer --name {} (same options)\n", o.name);
    std::fflush(stdout);
    ProducerReport p;
    run_producer<K>(o, s, wd, p);
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
  Segments s = open_segments(o);
  print_header(o, s, cpus ? fmt::format("consumer on CPU {}", ::sched_getcpu()) : cpu_note);
  ConsumerReport c;
  run_consumer<K>(o, s, wd, c);
  print_stream(o, c.verified, c.last_ns - c.first_ns);
  return print_verdict(o, c, nullptr, false);
}

// ---- fan-out: one producer, k subscriber processes (--kind broadcast) --------
//
// Every subscriber joins before the first message and reads the whole
// stream. Reliable: each verifies every message in place (its sequence number
// is the next one, its checksum holds); the producer waits for the slowest.
// Lossy: the producer never waits; each subscriber copies a message out
// (checked against a rewrite while it copied, so never torn), verifies it,
// and counts the sequence numbers it never saw, which must equal what the
// ring says it lost (BroadcastSubscriber::lost()).

struct SubscriberReport {
  std::uint32_t joined = 0;  // set once attached: the producer starts after all
  ConsumerReport stream;     // received, verified, first failure, times, error
  std::uint64_t gaps = 0;    // lossy: sequence numbers never seen
  std::uint64_t lost = 0;    // lossy: what the ring counted as lost
  std::uint64_t laps = 0;
};

// Verifies message `m` read as the next after `expected` (lossy: it may come
// later), counting the gap; updates `expected`. False if it failed.
bool take_fanout_message(const Options& o, std::span<const std::byte> m, std::uint64_t& expected,
                         SubscriberReport& r) {
  ConsumerReport& c = r.stream;
  const bool lossy = o.delivery == shmring::Delivery::lossy;
  const std::uint64_t seq = m.size() >= 8 ? load64(m.data()) : expected;
  // Lossy: the sequence number it carries, if it moved forward; a reliable
  // ring must deliver exactly the next one.
  const std::uint64_t want = lossy && seq > expected && seq < o.messages ? seq : expected;
  const Verdict v = verify_message(m, o.size, want);
  if (c.received++ == 0) c.first_ns = now_ns();
  if (v != Verdict::ok) {
    if (c.failures++ == 0) {
      c.first_failure = v;
      c.first_failure_seq = want;
    }
    expected = want + 1;
    return false;
  }
  ++c.verified;
  r.gaps += want - expected;
  expected = want + 1;
  return true;
}

void run_subscriber(const Options& o, const shmring::Segment& data, Watchdog& wd,
                    SubscriberReport& r) {
  shmring::BroadcastSubscriber sub =
      shmring::BroadcastSubscriber::attach(data, shmring::JoinAt::next);
  if (sub.position() != 0) throw RunError{"joined after the stream had started"};
  std::atomic_ref<std::uint32_t>(r.joined).store(1);
  const bool lossy = o.delivery == shmring::Delivery::lossy;
  std::vector<std::byte> buffer(static_cast<std::size_t>(data.geometry().slot_size));
  std::uint64_t expected = 0;
  while (expected < o.messages) {
    if (!lossy) {
      shmring::ReadClaim c = peek_messages(sub, o.batch, wd, "data");
      for (std::size_t i = 0; i < c.size(); ++i) take_fanout_message(o, c[i], expected, r);
      c.release();
      continue;
    }
    std::size_t size = 0;
    const shmring::Status st = sub.pop(buffer, size, kPoll);
    if (st == shmring::Status::ok) {
      wd.progress();
      take_fanout_message(o, {buffer.data(), size}, expected, r);
    } else if (st == shmring::Status::overrun) {
      wd.progress();  // lapped: counted by the ring; the next pop is the newest
    } else if (st != shmring::Status::timeout) {
      throw RunError{fmt::format("pop on the data ring failed: {}", to_string(st))};
    } else if (auto why = wd.idle("messages in the data ring"); !why.empty()) {
      throw RunError{why};
    }
  }
  r.stream.last_ns = now_ns();
  r.lost = sub.lost();
  r.laps = sub.lapped();
}

// Publishes every message, claimed and written in place: as relaxed atomic
// words in a lossy ring (subscribers may be reading the slots meanwhile).
void run_fanout_producer(const Options& o, const shmring::Segment& data, Watchdog& wd,
                         ProducerReport& r) {
  shmring::BroadcastProducer tx = shmring::BroadcastProducer::attach(data);
  const bool lossy = o.delivery == shmring::Delivery::lossy;
  const auto size = static_cast<std::size_t>(o.size);
  std::vector<std::byte> message(size);
  r.start_ns = now_ns();
  std::uint64_t seq = 0;
  while (seq < o.messages) {
    shmring::WriteClaim c = claim_slots(tx, std::min(o.batch, o.messages - seq), wd, "data");
    for (std::size_t i = 0; i < c.size(); ++i) {
      if (lossy) {
        fill_message(message, seq + i);
        shmring::store_words(c[i].data(), message.data(), size);
      } else {
        fill_message(c[i].first(size), seq + i);
      }
      if (c.set_size(i, size) != shmring::Status::ok) {
        throw RunError{"set_size refused a message that fits its slot"};
      }
    }
    const std::size_t n = c.size();
    c.commit_batch();
    seq += n;
    r.sent = seq;
  }
  r.end_ns = now_ns();
}

int run_fanout(const Options& o) {
  const bool lossy = o.delivery == shmring::Delivery::lossy;
  shmring::CreateOptions ring =
      create_options(shmring::RingKind::broadcast, o.capacity, o.size, shmring::SlotFormat::plain);
  ring.subscribers = static_cast<std::uint32_t>(o.subscribers);
  ring.delivery = o.delivery;
  const shmring::Segment data = create_segment(o.name + "-data", ring, /*replace_stale=*/false);
  fmt::print(
      "shmring demo: broadcast ring ({}), {} slots x {}, batch {}, {} messages to {} "
      "subscriber processes\n",
      shmring::to_string(o.delivery), o.capacity, format_bytes(o.size), o.batch,
      fmt::group_digits(o.messages), o.subscribers);
  fmt::print("  segment  /dev/shm/{} ({})\n", data.name(), format_bytes(data.size()));

  const std::size_t bytes = sizeof(SubscriberReport) * o.subscribers;
  void* shared = ::mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
  if (shared == MAP_FAILED) throw RunError{fmt::format("mmap: {}", std::strerror(errno))};
  auto* reports = static_cast<SubscriberReport*>(shared);
  for (std::uint64_t k = 0; k < o.subscribers; ++k) new (&reports[k]) SubscriberReport();

  const pid_t parent = ::getpid();
  std::vector<pid_t> children;
  std::vector<std::optional<int>> statuses(o.subscribers);
  auto reap = [&](std::size_t k, bool block) {
    int st = 0;
    if (!statuses[k] && ::waitpid(children[k], &st, block ? 0 : WNOHANG) == children[k]) {
      statuses[k] = st;
    }
  };
  std::fflush(nullptr);
  for (std::uint64_t k = 0; k < o.subscribers; ++k) {
    const pid_t child = ::fork();
    if (child < 0) {
      for (const pid_t c : children) ::kill(c, SIGKILL);
      throw RunError{fmt::format("fork: {}", std::strerror(errno))};
    }
    if (child == 0) {
      // A subscriber. It must not outlive the producer, nor unlink anything.
      ::prctl(PR_SET_PDEATHSIG, SIGTERM);
      if (::getppid() != parent) ::_exit(kExitRuntime);
      int rc = kExitOk;
      try {
        Watchdog wd(o.timeout_s, [parent] { return ::getppid() == parent; });
        run_subscriber(o, data, wd, reports[k]);
      } catch (const RunError& e) {
        set_error(reports[k].stream, e.message);
        rc = kExitRuntime;
      } catch (const std::exception& e) {
        set_error(reports[k].stream, e.what());
        rc = kExitRuntime;
      }
      std::fflush(nullptr);
      ::_exit(rc);
    }
    children.push_back(child);
  }
  // On a signal the cleanup kills one child; the others die with the parent
  // (PR_SET_PDEATHSIG).
  g_cleanup.child = children.front();

  // Every subscriber joins before the first message, so each reads them all.
  ProducerReport p;
  const auto join_deadline = Clock::now() + std::chrono::seconds(o.timeout_s);
  auto all_joined = [&] {
    for (std::uint64_t k = 0; k < o.subscribers; ++k) {
      if (std::atomic_ref<std::uint32_t>(reports[k].joined).load() == 0) return false;
    }
    return true;
  };
  auto all_alive = [&] {
    for (std::size_t k = 0; k < children.size(); ++k) reap(k, false);
    return std::none_of(statuses.begin(), statuses.end(), [](auto& s) { return s.has_value(); });
  };
  while (!all_joined() && all_alive() && Clock::now() < join_deadline) {
    std::this_thread::sleep_for(1ms);
  }
  if (!all_joined()) {
    p.error = "not every subscriber joined";
  } else {
    try {
      // Reliable: a subscriber that died would stall the producer (until it is
      // found dead); either way the run has failed.
      Watchdog wd(o.timeout_s, all_alive);
      run_fanout_producer(o, data, wd, p);
    } catch (const RunError& e) {
      p.error = e.message;
    } catch (const std::exception& e) {
      p.error = e.what();
    }
  }
  if (!p.error.empty()) {
    for (std::size_t k = 0; k < children.size(); ++k) {
      reap(k, false);
      if (!statuses[k]) ::kill(children[k], SIGKILL);
    }
  }
  for (std::size_t k = 0; k < children.size(); ++k) {
    while (!statuses[k]) {
      reap(k, true);
      if (!statuses[k] && errno != EINTR) break;
    }
  }
  g_cleanup.child = 0;

  int rc = kExitOk;
  bool verify_failed = false;
  std::uint64_t all_verified = 0;
  for (std::uint64_t k = 0; k < o.subscribers; ++k) {
    const SubscriberReport& r = reports[k];
    const ConsumerReport& s = r.stream;
    const double secs =
        static_cast<double>(std::max<std::int64_t>(s.last_ns - s.first_ns, 1)) / 1e9;
    std::string line = fmt::format("sub {:>2}:   {} verified in {:.3f} s, {:.2f} M msg/s", k,
                                   fmt::group_digits(s.verified), secs,
                                   static_cast<double>(s.verified) / secs / 1e6);
    if (lossy) {
      line += fmt::format(", {} sequence gaps ({} lost in {} laps)", fmt::group_digits(r.gaps),
                          fmt::group_digits(r.lost), r.laps);
    }
    fmt::print("{}\n", line);
    if (s.failures != 0) {
      fmt::print("FAILED:   subscriber {}: {} messages failed verification; the first, #{}: {}\n",
                 k, s.failures, s.first_failure_seq, to_string(s.first_failure));
      verify_failed = true;
    }
    // Every message is accounted for: verified, or (lossy) a counted gap.
    const std::uint64_t accounted = s.verified + (lossy ? r.gaps : 0);
    if (s.error[0] == '\0' && s.failures == 0 &&
        (accounted != o.messages || (lossy && r.gaps != r.lost))) {
      fmt::print(
          "FAILED:   subscriber {}: {} verified + {} gaps of {} messages; the ring "
          "counted {} lost\n",
          k, s.verified, r.gaps, o.messages, r.lost);
      verify_failed = true;
    }
    if (s.error[0] != '\0') {
      fmt::print("error:    subscriber {}: {}\n", k, s.error);
      rc = kExitRuntime;
    }
    if (statuses[k] && WIFSIGNALED(*statuses[k])) {
      fmt::print("error:    subscriber {} killed by signal {} ({})\n", k, WTERMSIG(*statuses[k]),
                 strsignal(WTERMSIG(*statuses[k])));
      rc = kExitRuntime;
    } else if (statuses[k] && WEXITSTATUS(*statuses[k]) != 0 && rc == kExitOk) {
      fmt::print("error:    subscriber {} exited with status {}\n", k, WEXITSTATUS(*statuses[k]));
      rc = kExitRuntime;
    }
    all_verified += s.verified;
  }
  if (p.sent != 0) {
    const double secs = static_cast<double>(std::max<std::int64_t>(p.end_ns - p.start_ns, 1)) / 1e9;
    fmt::print("producer: {} published in {:.3f} s, {:.2f} M msg/s\n", fmt::group_digits(p.sent),
               secs, static_cast<double>(p.sent) / secs / 1e6);
  }
  if (!p.error.empty()) {
    fmt::print("error:    producer: {}\n", p.error);
    rc = kExitRuntime;
  }
  ::munmap(shared, bytes);
  if (verify_failed) return kExitVerifyFailed;
  if (rc != kExitOk) {
    fmt::print("FAILED:   the run stopped early\n");
    return rc;
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

template <shmring::RingKind K>
int run(const Options& o) {
  return o.role == Role::both ? run_both<K>(o) : run_one_role<K>(o);
}

}  // namespace

int main(int argc, char** argv) {
  Options o;
  bool help = false;
  if (const std::string err = parse_options(argc, argv, o, help); !err.empty()) {
    fmt::print(stderr, "shmring-demo: {}\n\n", err);
    print_usage(stderr);
    return kExitUsage;
  }
  if (help) {
    print_usage(stdout);
    return kExitOk;
  }
  g_cleanup.owner = ::getpid();
  CleanupOnExit cleanup;
  for (const int sig : {SIGINT, SIGTERM, SIGHUP, SIGQUIT}) ::signal(sig, on_fatal_signal);
  try {
    if (o.kind == shmring::RingKind::broadcast) return run_fanout(o);
    return o.kind == shmring::RingKind::spsc ? run<shmring::RingKind::spsc>(o)
                                             : run<shmring::RingKind::mpmc>(o);
  } catch (const RunError& e) {
    fmt::print(stderr, "shmring-demo: {}\n", e.message);
  } catch (const shmring::Error& e) {
    fmt::print(stderr, "shmring-demo: {}\n", e.what());
  } catch (const std::exception& e) {
    fmt::print(stderr, "shmring-demo: {}\n", e.what());
  }
  return kExitRuntime;
}
