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
// This file is what is about shmring: making, opening and attaching to
// rings, and moving messages through them. The command line is in
// demo_options.hpp, the report in demo_report.hpp; the checked messages, the
// forked processes, the watchdog and the segments' cleanup are the test
// harness's (harness/), shared with the benchmarks and the tests.
// Exit status: 0 every message verified, 1 a message failed verification,
// 2 bad command line, 3 a runtime failure (segment, peer died, stall).
#include <fmt/core.h>
#include <fmt/format.h>
#include <sched.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstring>
#include <span>
#include <stdexcept>
#include <string>
#include <thread>
#include <type_traits>
#include <vector>

#include "demo_options.hpp"
#include "demo_report.hpp"
#include "harness/message.hpp"
#include "harness/processes.hpp"
#include "harness/segments.hpp"
#include "harness/watchdog.hpp"
#include "shmring/shmring.hpp"

namespace {

using namespace shmring;
using namespace demo;
using namespace std::chrono_literals;
using harness::await;

// Every blocking call waits at most this long before its loop asks the
// watchdog whether the peer is still there; --timeout bounds the time
// without progress.
constexpr auto kPoll = 100ms;
constexpr std::uint64_t kLatencyCapacity = 16;  // slots of the ping and pong rings

// ---- the rings --------------------------------------------------------------

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

// ---- segments ---------------------------------------------------------------

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

// ---- the processes ----------------------------------------------------------

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
  print_header(o, segments.data, cpu_note);
  const std::size_t n = fanout ? static_cast<std::size_t>(o.subscribers) : 1;
  harness::SharedArray<ConsumerReport> reports(n);
  harness::Children children;
  const pid_t parent = ::getpid();
  for (std::size_t k = 0; k < n; ++k) {
    // A consumer must not outlive the producer (SIGTERM: it then removes the
    // segments the producer could not).
    children.spawn(
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
  }
  // On a signal the cleanup kills one child; the others die with this process.
  harness::SegmentCleanup::kill_on_signal(children.pids().front());
  if (!cpus.empty()) pin_or_warn(cpus[0]);
  ProducerReport p;
  try {
    harness::Watchdog wd(std::chrono::seconds(o.timeout_s), [&] { return children.all_running(); });
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
  // After a failure, a consumer still draining gets a moment, then is stopped.
  children.reap_all(p.error.empty() ? std::nullopt : std::optional(200ms));
  harness::SegmentCleanup::kill_on_signal(0);
  return report(o, {&reports[0], n}, children.statuses(), &p);
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
    print_header(o, s.data, cpu_note);
    ConsumerReport c;
    run_consumer<K>(o, s, wd, c);
    return report(o, {&c, 1}, {}, nullptr);
  }
  const Segments s = create_segments(o, /*replace_stale=*/true);
  print_header(o, s.data, cpu_note);
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
    if (o.kind == RingKind::broadcast) return run_forked<RingKind::broadcast>(o);
    if (o.kind == RingKind::mpmc) {
      return o.role == Role::both ? run_forked<RingKind::mpmc>(o) : run_one_role<RingKind::mpmc>(o);
    }
    return o.role == Role::both ? run_forked<RingKind::spsc>(o) : run_one_role<RingKind::spsc>(o);
  } catch (const std::exception& e) {
    fmt::print(stderr, "shmring-demo: {}\n", e.what());
  }
  return kExitRuntime;
}
