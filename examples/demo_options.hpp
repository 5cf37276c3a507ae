// The command line of shmring-demo (examples/demo_pipeline.cpp): its
// options, the rules between them, its exit statuses and the CPUs it pins
// to. Nothing here is about using shmring beyond the names of its ring
// kinds, slot formats and the limits on their geometry.
#pragma once

#include <fmt/core.h>
#include <fmt/format.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <cerrno>
#include <cstdint>
#include <cstring>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "harness/cpus.hpp"
#include "harness/message.hpp"
#include "shmring/shmring.hpp"

namespace demo {

using namespace shmring;

constexpr int kExitOk = 0, kExitVerifyFailed = 1, kExitUsage = 2, kExitRuntime = 3;

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
inline std::string check_options(Options& o, bool fanout_given) {
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
inline std::optional<int> parse_options(int argc, char** argv, Options& o) {
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

// The CPUs for the producer and the consumer, or none (and why, in `note`).
inline std::vector<int> choose_cpus(const Options& o, std::string& note) {
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
inline void pin_or_warn(int cpu) {
  if (!harness::pin_to_cpu(cpu)) {
    fmt::print(stderr, "warning: cannot pin pid {} to CPU {}: {}\n", ::getpid(), cpu,
               std::strerror(errno));
  }
}

}  // namespace demo
