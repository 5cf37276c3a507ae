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
// What is about shmring is here; the checked messages, the forked processes,
// the watchdog, the segments' cleanup and the number formatting are the test
// harness's (harness/), shared with the benchmarks and the tests.
// Exit status: 0 every message verified, 1 a message failed verification,
// 2 bad command line, 3 a runtime failure (segment, peer died, stall).
#include <fmt/core.h>
#include <fmt/format.h>
#include <sched.h>
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
#include <stdexcept>
#include <string>
#include <thread>
#include <type_traits>
#include <vector>

#include "harness/cpus.hpp"
#include "harness/message.hpp"
#include "harness/processes.hpp"
#include "harness/report.hpp"
#include "harness/segments.hpp"
#include "harness/watchdog.hpp"
#include "shmring/shmring.hpp"

namespace {

using namespace shmring;
using namespace std::chrono_literals;
using harness::await;
using harness::Verdict;

constexpr int kExitOk = 0, kExitVerifyFailed = 1, kExitUsage = 2, kExitRuntime = 3;
// Every blocking call waits at most this long before its loop asks the
// watchdog whether the peer is still there; --timeout bounds the time
// without progress.
constexpr auto kPoll = 100ms;
constexpr std::uint64_t kLatencyCapacity = 16;  // slots of the ping and pong rings

enum class Role { both, producer, consumer };

struct Options {
  std::uint64_t messages = 2'000'000, size = 64, capacity = 1024, batch = 16;
  std::uint64_t round_trips = 100'000, timeout_s = 10;
  RingKind kind = RingKind::spsc;
  SlotFormat format = SlotFormat::plain;
  Role role = Role::both;
  std::string name;  // segment name prefix
  bool pin = true;
  std::vector<int> cpus;          // producer, consumer
  std::uint64_t subscribers = 2;  // fan-out (--kind broadcast)
  Delivery delivery = Delivery::reliable;
};

// ---- the command line -------------------------------------------------------

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

// The rules between options (CLI11 checks each option's own range); "" when
// they are usable. `fanout_given`: --subscribers or --delivery was given.
std::string check_options(Options& o, bool fanout_given) {
  if (o.messages == 0) return "--messages must be at least 1";
  if (o.timeout_s == 0) return "--timeout must be at least 1 second";
  if (o.capacity == 0 || (o.capacity & (o.capacity - 1)) != 0) {
    return fmt::format("--capacity {} is not a power of two", o.capacity);
  }
  if (o.batch == 0 || o.batch > o.capacity) {
    return fmt::format("--batch must be between 1 and the capacity ({})", o.capacity);
  }
  if (o.format == SlotFormat::low_latency && o.kind != RingKind::spsc) {
    return fmt::format(
        "--slot-format low_latency needs --kind spsc, not {}: low-latency slots have no "
        "`committed` word, so only one producer and one consumer can share them",
        to_string(o.kind));
  }
  if (o.format == SlotFormat::low_latency && o.size > kMaxLowLatencySlotSize) {
    return fmt::format("--size must be at most {} bytes with --slot-format low_latency",
                       kMaxLowLatencySlotSize);
  }
  if (o.kind == RingKind::broadcast && o.role != Role::both) {
    return "--kind broadcast runs every process itself: it takes no --role";
  }
  if (o.kind != RingKind::broadcast && fanout_given) {
    return "--subscribers and --delivery are for --kind broadcast (the fan-out mode)";
  }
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
  app.add_option("--messages", o.messages, "messages to stream")->capture_default_str();
  app.add_option("--size", o.size, "message size, >= 16: sequence + checksum + body")
      ->capture_default_str()
      ->check(CLI::Range(std::uint64_t{harness::kStampBytes}, kMaxSlotSize));
  app.add_option("--capacity", o.capacity, "slots in the ring, a power of two")
      ->capture_default_str();
  add_choice(
      app, "--kind", o.kind,
      "spsc, mpmc or broadcast; broadcast is the fan-out mode: one producer, "
      "--subscribers processes that each read every message (no ping/pong phase)",
      {{"spsc", RingKind::spsc}, {"mpmc", RingKind::mpmc}, {"broadcast", RingKind::broadcast}});
  auto* subscribers = app.add_option("--subscribers", o.subscribers,
                                     "broadcast: subscriber processes, 1-64 (default 2)")
                          ->check(CLI::Range(std::uint64_t{1}, std::uint64_t{kMaxSubscribers}));
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
  app.add_option("--cpus", o.cpus, "P,C: pin the producer to CPU P and the consumer to CPU C")
      ->delimiter(',')
      ->expected(2);
  app.add_flag("!--no-pin", o.pin, "do not pin (by default: two different CPUs if there are 2+)");
  app.add_option("--timeout", o.timeout_s, "give up after S seconds without progress")
      ->capture_default_str();
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e) == 0 ? kExitOk : kExitUsage;
  }
  const std::string err = check_options(o, subscribers->count() + delivery->count() != 0);
  if (err.empty()) return std::nullopt;
  fmt::print(stderr, "shmring-demo: {}\nRun with --help for more information.\n", err);
  return kExitUsage;
}

// ---- what each process found --------------------------------------------------

std::int64_t now_ns() {
  return std::chrono::steady_clock::now().time_since_epoch() / std::chrono::nanoseconds(1);
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

// ---- the rings ------------------------------------------------------------------

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
      if (c.set_size(i, size) != Status::ok) throw std::logic_error("set_size refused a message");
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

// One message out on the ping or pong ring: message `seq`, or a copy of
// `copy_of` (claimed and written in place on plain slots, pushed on
// low-latency ones).
template <class P>
void send_one(P& tx, const Options& o, harness::Watchdog& wd, const char* ring,
              std::span<const std::byte> copy_of, std::uint64_t seq) {
  std::array<std::byte, kMaxLowLatencySlotSize> buffer;
  const std::size_t size = copy_of.empty() ? o.size : copy_of.size();
  if (o.format == SlotFormat::low_latency) {
    if (copy_of.empty()) harness::fill_message({buffer.data(), size}, seq);
    const std::span<const std::byte> m = copy_of.empty() ? std::span(buffer).first(size) : copy_of;
    await(wd, "push", ring, [&] { return tx.push(m, kPoll); });
    return;
  }
  WriteClaim w = await(wd, "claim", ring, [&] { return tx.claim(1, kPoll); });
  if (copy_of.empty()) {
    harness::fill_message(w[0].first(size), seq);
  } else {
    std::memcpy(w[0].data(), copy_of.data(), size);
  }
  if (w.commit(size) != Status::ok) throw std::logic_error("commit refused a message");
}
// One message in, passed to `use` (peeked in place, or popped).
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

template <RingKind K>
using Producer = std::conditional_t<K == RingKind::spsc, SpscProducer, MpmcProducer>;
template <RingKind K>
using Consumer = std::conditional_t<K == RingKind::spsc, SpscConsumer, MpmcConsumer>;

// <name>-data, and (not fan-out) <name>-ping and <name>-pong.
struct Segments {
  Segment data, ping, pong;
};

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
    const auto t0 = now_ns();
    send_one(ping, o, wd, "ping", {}, i);
    Verdict v{};
    receive_one(pong, o, wd, "pong", [&](auto m) { v = harness::verify_message(m, o.size, i); });
    const auto t1 = now_ns();
    ++(v == Verdict::ok ? r.pongs_verified : r.pong_failures);
    if (v == Verdict::ok && i >= warmup(o)) r.round_trip_ns.push_back(t1 - t0);
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

// ---- segments and CPUs ------------------------------------------------------------

// The producer's side makes the segments; with --role, a leftover of a run
// that died is replaced. They are removed when the program ends, however.
Segments create_segments(const Options& o, bool replace_stale) {
  CreateOptions c;
  c.kind = o.kind;
  c.format = o.format;
  c.capacity = o.capacity;
  c.slot_size = o.size;
  c.delivery = o.delivery;
  c.subscribers = o.kind == RingKind::broadcast ? static_cast<std::uint32_t>(o.subscribers) : 0;
  Segments s;
  s.data = harness::create_segment(o.name + "-data", c, replace_stale);
  if (o.kind == RingKind::broadcast) return s;
  c.capacity = kLatencyCapacity;
  s.ping = harness::create_segment(o.name + "-ping", c, replace_stale);
  s.pong = harness::create_segment(o.name + "-pong", c, replace_stale);
  return s;
}

// --role consumer: opens what the producer made, waiting for it up to
// --timeout. open() checks the ring's kind; the messages' size and slot
// format are the options', so both sides must have been given the same.
Segments open_segments(const Options& o) {
  OpenOptions oo;
  oo.kind = o.kind;
  auto open = [&](const char* suffix) {
    Segment s = harness::open_segment(o.name + suffix, oo, std::chrono::seconds(o.timeout_s));
    if (s.geometry().slot_size != o.size || s.geometry().format != o.format) {
      throw std::runtime_error(fmt::format(
          "segment '{}' holds {} slots of {} bytes, the options say {} slots of {}; give both "
          "sides the same options",
          s.name(), to_string(s.geometry().format), s.geometry().slot_size, to_string(o.format),
          o.size));
    }
    return s;
  };
  return {open("-data"), open("-ping"), open("-pong")};
}

// The CPUs for the producer and the consumer, or none (and why, in `note`).
std::vector<int> choose_cpus(const Options& o, std::string& note) {
  const std::vector<int> allowed = harness::allowed_cpus();
  if (!o.pin) {
    note = "not pinned (--no-pin)";
  } else if (!o.cpus.empty()) {
    return o.cpus;
  } else if (allowed.size() < 2) {
    note = "not pinned: one CPU available, producer and consumer share it";
  } else {
    return {allowed[0], allowed[1]};
  }
  return {};
}

// A refusal to pin is reported, not fatal.
void pin_or_warn(int cpu) {
  if (!harness::pin_to_cpu(cpu)) {
    fmt::print(stderr, "warning: cannot pin pid {} to CPU {}: {}\n", ::getpid(), cpu,
               std::strerror(errno));
  }
}

// ---- the report -------------------------------------------------------------------

void print_header(const Options& o, const Segments& s, const std::string& cpu_note) {
  const std::string slots =
      fmt::format("{} slots x {}, batch {}, {} messages", o.capacity, harness::format_bytes(o.size),
                  o.batch, fmt::group_digits(o.messages));
  const std::string segment = fmt::format("  segment  /dev/shm/{} ({})", s.data.name(),
                                          harness::format_bytes(s.data.size()));
  if (o.kind == RingKind::broadcast) {
    fmt::print("shmring demo: broadcast ring ({}), {} to {} subscriber processes\n{}\n",
               to_string(o.delivery), slots, o.subscribers, segment);
    return;
  }
  fmt::print("shmring demo: {} ring{}, {}\n", to_string(o.kind),
             o.format == SlotFormat::low_latency ? " (low-latency slots, copy calls)" : "", slots);
  fmt::print("{}, ping/pong rings /dev/shm/{}-ping|-pong\n", segment, o.name);
  if (!cpu_note.empty()) fmt::print("  cpus     {}\n", cpu_note);
}

double seconds(std::int64_t ns) { return static_cast<double>(std::max<std::int64_t>(ns, 1)) / 1e9; }

// A process's error (its report's text) and, for a forked one, how it ended.
// True if there was either.
bool print_errors(const std::string& who, const char* error, std::optional<int> status) {
  if (error[0] != '\0') fmt::print("error:    {}: {}\n", who, error);
  if (status && !harness::exited_ok(*status) && (error[0] == '\0' || WIFSIGNALED(*status))) {
    fmt::print("error:    {} {}\n", who, harness::describe_exit(*status));
  }
  return error[0] != '\0' || (status && !harness::exited_ok(*status));
}

// Prints what every process found; returns the exit status. `subs`: the
// consumer, or every subscriber (fan-out), none with --role producer;
// `statuses`: how the forked ones ended; `p`: none with --role consumer.
// Every message is accounted for: verified by each consumer, or (lossy) a
// sequence gap that the ring counted as lost. A message that failed
// verification outranks a run that stopped early.
int report(const Options& o, std::span<const ConsumerReport> subs,
           std::span<const std::optional<int>> statuses, ProducerReport* p) {
  const bool fanout = o.kind == RingKind::broadcast, lossy = o.delivery == Delivery::lossy;
  bool verify_failed = false, stopped = false;
  std::uint64_t verified = 0, pings = 0;
  for (std::size_t k = 0; k < subs.size(); ++k) {
    const ConsumerReport& s = subs[k];
    const std::string who = fanout ? fmt::format("subscriber {}", k) : "consumer";
    const double secs = seconds(s.last_ns - s.first_ns),
                 rate = static_cast<double>(s.verified) / secs;
    if (fanout) {
      fmt::print("sub {:>2}:   {} verified in {:.3f} s, {:.2f} M msg/s{}\n", k,
                 fmt::group_digits(s.verified), secs, rate / 1e6,
                 lossy ? fmt::format(", {} sequence gaps ({} lost in {} laps)",
                                     fmt::group_digits(s.gaps), fmt::group_digits(s.lost), s.laps)
                       : "");
    } else if (s.received != 0 && s.last_ns > s.first_ns) {
      fmt::print("stream:   {} messages of {} received and verified in {:.3f} s\n",
                 fmt::group_digits(s.verified), harness::format_bytes(o.size), secs);
      fmt::print("          {} msg/s   {:.3f} GB/s\n", harness::format_rate(rate),
                 rate * static_cast<double>(o.size) / 1e9);
    }
    if (s.failures != 0) {
      fmt::print("FAILED:   {}: {} of {} messages failed verification; the first, #{}: {}\n", who,
                 fmt::group_digits(s.failures), fmt::group_digits(s.received), s.first_failure_seq,
                 to_string(s.first_failure));
    }
    if (s.ping_failures != 0)
      fmt::print("FAILED:   {} pings failed verification\n", s.ping_failures);
    const bool error = print_errors(who, s.error, k < statuses.size() ? statuses[k] : std::nullopt);
    const bool unaccounted =
        s.verified + (lossy ? s.gaps : 0) != o.messages || (lossy && s.gaps != s.lost);
    if (!error && s.failures == 0 && unaccounted) {
      fmt::print("FAILED:   {}: {} verified + {} gaps of {} messages; the ring counted {} lost\n",
                 who, s.verified, s.gaps, o.messages, s.lost);
    }
    verify_failed =
        verify_failed || s.failures != 0 || s.ping_failures != 0 || (!error && unaccounted);
    stopped = stopped || error;
    verified += s.verified;
    pings += s.pings_verified;
  }
  if (p != nullptr) {
    if (p->sent != 0 && (fanout || subs.empty())) {
      const double secs = seconds(p->end_ns - p->start_ns);
      fmt::print("producer: {} {} in {:.3f} s, {:.2f} M msg/s\n", fmt::group_digits(p->sent),
                 fanout ? "published" : "sent", secs, static_cast<double>(p->sent) / secs / 1e6);
    }
    if (const auto rtt = p->round_trip_ns.size(); rtt != 0) {
      fmt::print("latency:  {} round trips of {} (ping ring -> consumer -> pong ring), verified\n",
                 fmt::group_digits(rtt), harness::format_bytes(o.size));
      fmt::print("          {}\n", harness::latency_summary(p->round_trip_ns));
    }
    if (p->pong_failures != 0)
      fmt::print("FAILED:   {} pongs failed verification\n", p->pong_failures);
    verify_failed = verify_failed || p->pong_failures != 0;
    stopped = print_errors("producer", p->error.c_str(), std::nullopt) || stopped;
  }
  if (verify_failed) return kExitVerifyFailed;
  if (stopped) {
    fmt::print("FAILED:   the run stopped early{}\n",
               subs.size() != 1
                   ? ""
                   : fmt::format("; {} of {} messages were received and verified",
                                 fmt::group_digits(verified), fmt::group_digits(o.messages)));
    return kExitRuntime;
  }
  if (fanout && lossy) {
    fmt::print(
        "result:   OK, {} subscribers: every message read was whole, {} verified, every "
        "gap counted\n",
        o.subscribers, fmt::group_digits(verified));
  } else if (fanout) {
    fmt::print("result:   OK, all {} messages verified by each of {} subscribers\n",
               fmt::group_digits(o.messages), o.subscribers);
  } else {
    std::string latency;  // what the ping/pong phase verified
    if (pings != 0) latency = fmt::format(", {} pings", fmt::group_digits(pings));
    if (p != nullptr && p->pongs_verified != 0) {
      latency += fmt::format("{} {} pongs", pings != 0 ? " and" : ",",
                             fmt::group_digits(p->pongs_verified));
    }
    fmt::print("result:   OK, all {} messages{}{}{}\n", fmt::group_digits(o.messages),
               subs.empty() ? " sent" : "", latency,
               latency.empty() && subs.empty() ? "" : " verified");
  }
  return kExitOk;
}

// ---- the processes ----------------------------------------------------------------

// Forks the consumer (or, fan-out, every subscriber) and produces here, each
// pinned where the options say; the consumers report through shared memory.
template <RingKind K>
int run_forked(const Options& o) {
  constexpr bool fanout = K == RingKind::broadcast;
  std::string cpu_note;
  const std::vector<int> cpus = fanout ? std::vector<int>{} : choose_cpus(o, cpu_note);
  if (!cpus.empty())
    cpu_note = fmt::format("producer on CPU {}, consumer on CPU {}", cpus[0], cpus[1]);
  const Segments segments = create_segments(o, /*replace_stale=*/false);
  print_header(o, segments, cpu_note);
  const std::size_t n = fanout ? static_cast<std::size_t>(o.subscribers) : 1;
  harness::SharedArray<ConsumerReport> reports(n);
  std::vector<pid_t> children;
  std::vector<std::optional<int>> statuses(n);
  const pid_t parent = ::getpid();
  for (std::size_t k = 0; k < n; ++k) {
    // A consumer must not outlive the producer (SIGTERM: it then removes the
    // segments the producer could not).
    const pid_t child = harness::fork_child(
        [&, k] {
          if (!cpus.empty()) pin_or_warn(cpus[1]);
          try {
            harness::Watchdog wd(std::chrono::seconds(o.timeout_s),
                                 [&] { return ::getppid() == parent; });
            if constexpr (fanout) {
              // Joined at the first message: the producer waits for every subscriber.
              auto sub = BroadcastSubscriber::attach(segments.data, JoinAt::next);
              if (sub.position() != 0) throw std::runtime_error("joined after the stream started");
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
      throw std::runtime_error(fmt::format("fork: {}", std::strerror(errno)));
    }
    children.push_back(child);
  }
  // On a signal the cleanup kills one child; the others die with this process.
  harness::SegmentCleanup::kill_on_signal(children.front());
  auto all_alive = [&] {
    for (std::size_t k = 0; k < n; ++k) {
      if (!statuses[k]) statuses[k] = harness::reap_now(children[k]);
    }
    return std::none_of(statuses.begin(), statuses.end(), [](auto& s) { return s.has_value(); });
  };
  if (!cpus.empty()) pin_or_warn(cpus[0]);
  ProducerReport p;
  try {
    harness::Watchdog wd(std::chrono::seconds(o.timeout_s), all_alive);
    for (std::size_t k = 0; fanout && k < n; ++k) {
      while (std::atomic_ref<std::uint32_t>(reports[k].joined).load() == 0) {
        if (!wd.idle("every subscriber to join").empty())
          throw std::runtime_error("not every subscriber joined");
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
    // After a failure, a consumer still draining gets a moment, then is stopped.
    if (!statuses[k]) {
      statuses[k] = p.error.empty() ? harness::reap(children[k])
                                    : harness::reap_within(children[k], 200ms).status;
    }
  }
  harness::SegmentCleanup::kill_on_signal(0);
  return report(o, {&reports[0], n}, statuses, &p);
}

// --role producer / consumer: one side in this process.
template <RingKind K>
int run_one_role(const Options& o) {
  std::string cpu_note;
  const std::vector<int> cpus = choose_cpus(o, cpu_note);
  const bool producer = o.role == Role::producer;
  if (!cpus.empty()) {
    pin_or_warn(cpus[producer ? 0 : 1]);
    cpu_note = fmt::format("{} on CPU {}", producer ? "producer" : "consumer", ::sched_getcpu());
  }
  harness::Watchdog wd(std::chrono::seconds(o.timeout_s));
  if (!producer) {
    const Segments s = open_segments(o);
    print_header(o, s, cpu_note);
    ConsumerReport c;
    run_consumer<K>(o, s, wd, c);
    return report(o, {&c, 1}, {}, nullptr);
  }
  const Segments s = create_segments(o, /*replace_stale=*/true);
  print_header(o, s, cpu_note);
  fmt::print("waiting for: shmring-demo --role consumer --name {} (same options)\n", o.name);
  std::fflush(stdout);
  ProducerReport p;
  run_producer<K>(o, s, wd, p);
  return report(o, {}, {}, &p);
}

}  // namespace

int main(int argc, char** argv) {
  Options o;
  if (const auto done = parse_options(argc, argv, o)) return *done;
  // Removes the segments this process makes on every way out, signals included.
  const harness::SegmentCleanup cleanup;
  try {
    switch (o.kind) {
      case RingKind::spsc:
        return o.role == Role::both ? run_forked<RingKind::spsc>(o)
                                    : run_one_role<RingKind::spsc>(o);
      case RingKind::mpmc:
        return o.role == Role::both ? run_forked<RingKind::mpmc>(o)
                                    : run_one_role<RingKind::mpmc>(o);
      default:
        return run_forked<RingKind::broadcast>(o);
    }
  } catch (const std::exception& e) {
    fmt::print(stderr, "shmring-demo: {}\n", e.what());
  }
  return kExitRuntime;
}
