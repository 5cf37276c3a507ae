// One publisher, N subscribers, every subscriber reading every message:
// shmring's broadcast ring (bench_broadcast.cpp) and iceoryx's publish /
// subscribe (peer_iceoryx.cpp) run through this one harness, so they are
// measured exactly alike, in the same run.
//
//   throughput  the publisher streams `count` messages; every subscriber
//               checks every one (exact sequence, size and content). The
//               time runs from the publisher's first message to the moment
//               the last subscriber has verified its last one.
//               items_per_second is messages per second per subscriber (each
//               one received them all), `deliveries_per_second` N times that.
//   round trip  the publisher sends one message through the fan-out;
//               subscriber 0 checks it and answers with the same tag over a
//               one-to-one return channel; the others check it as well. One
//               message in flight, every round trip timed.
//
// Every agent is a forked process: the publisher on the first CPU of
// SHMRING_BENCH_CPUS, subscriber i on entry 1 + i (modulo the list, so with
// fewer CPUs than agents some share one and their spin loops yield).
//
// A transport is a class T with
//   static constexpr bool kProcesses = true;
//   explicit T(const FanoutConfig&)               in the benchmark process,
//                                                 before any agent starts
//   void all_ready() noexcept                     (optional) every agent is
//                                                 connected: names may go
//   T::Agent(T&)                                  first thing in every agent
//   T::Publisher(T&, Agent&)
//     std::size_t publish(MessageTemplate&, unsigned producer, std::uint64_t first,
//                         std::size_t max, Spinner&, const char*& problem) noexcept
//       sends 1..max messages tagged (producer, first), (producer, first + 1), ...
//   T::Subscriber(T&, Agent&, unsigned index)     returns once it is connected:
//                                                 it gets everything published after
//     std::size_t receive(const MessageTemplate&, std::uint64_t* tags, std::size_t max,
//                         Spinner&, const char*& problem) noexcept
//       receives 1..max messages, checks each one's size and content, and
//       hands back their tags (the harness checks the order)
//   T::EchoSender(T&, Agent&), in subscriber 0 (round trip only)
//     const char* send(MessageTemplate&, std::uint64_t tag, Spinner&) noexcept
//   T::EchoReceiver(T&, Agent&), in the publisher (round trip only)
//     const char* receive(const MessageTemplate&, std::uint64_t& tag, Spinner&) noexcept
//   static void leave_process()
// On failure publish/receive return 0 and set `problem`; send/receive return it.
#pragma once

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <exception>
#include <new>
#include <string>
#include <thread>
#include <vector>

#include "bench_support.hpp"
#include "peer_harness.hpp"

namespace shmring::bench::peers {

struct FanoutConfig {
  std::size_t size = 64;
  std::uint64_t depth = 1024;  // ring capacity, queue capacity
  unsigned subscribers = 1;
  bool echo = false;       // a round trip: subscriber 0 answers
  bool zero_copy = false;  // shmring: claims and peeks, else copies
  std::size_t batch = 1;   // most messages one publish / receive call moves
  std::string id;          // names for this run (peer_id)
};

inline constexpr std::size_t kFanoutMaxBatch = 32;

// shmring's broadcast ring in this harness (bench_broadcast.cpp); iceoryx's
// registers from register_iceoryx_benchmarks().
void register_broadcast_benchmarks();
// The fan-out floor, the same harness without a library (fanout_floor.cpp).
void register_fanout_floor_benchmarks();
inline constexpr unsigned kFanoutMaxSubscribers = kMaxAgents - 2;  // publisher, main

// The subscriber counts measured: 1 and 2 always, 4 and 8 where the list of
// CPUs gives every agent (publisher and subscribers) a core of its own.
inline std::vector<unsigned> fanout_counts() {
  std::vector<unsigned> counts = {1, 2};
  for (unsigned n = 4; n <= 8; n *= 2) {
    if (n + 1 <= settings().cpus.size()) counts.push_back(n);
  }
  return counts;
}

inline int fanout_cpu(unsigned agent) {
  const std::vector<int>& cpus = settings().cpus;
  return cpus[agent % cpus.size()];
}

// Agents that share a core yield in their spin loops.
inline bool fanout_shares_cores(unsigned subscribers) {
  std::vector<int> used;
  for (unsigned a = 0; a <= subscribers; ++a) {
    if (std::find(used.begin(), used.end(), fanout_cpu(a)) != used.end()) return true;
    used.push_back(fanout_cpu(a));
  }
  return false;
}

struct alignas(128) FanoutEnd {
  std::int64_t ns = 0;
  // Failed attempts in the measured part: a subscriber that found nothing,
  // the publisher a full ring. They tell who waits on whom.
  std::uint64_t idle = 0;
};

// Lives in a SharedRegion, next to the Control block.
struct FanoutShared {
  Control control;
  alignas(128) std::atomic<std::uint32_t> connected{0};  // subscribers (and echo) connected
  alignas(128) std::int64_t start_ns = 0;
  FanoutEnd end[kMaxAgents];  // per agent: last message verified / last reply
  LatencyRecorder::Summary latency{};
  LatencyRecorder::Summary one_way{};  // publisher -> subscriber 0 (round trip only)
  std::uint64_t one_way_skewed = 0;    // samples where the reader's tick preceded the writer's
};

// One-way latency of the round trip: subscriber 0 writes the tick at which it
// received ping k into `received[k]` (after FanoutShared in the same region);
// the publisher subtracts the tick at which it started ping k. Both read the
// TSC, which the kernel keeps in step across cores (constant_tsc); a reader
// tick before the writer's would show a skew, and is counted.
inline constexpr std::uint64_t kMaxOneWaySamples = std::uint64_t{1} << 20;

inline constexpr int kPublisherAgent = 0;
inline int subscriber_agent(unsigned i) { return 1 + static_cast<int>(i); }

// The publisher waits for every subscriber (and the echo channel) to be
// connected before it sends anything: a message published before a
// subscriber joined would never reach it.
inline bool await_connected(FanoutShared& shared, std::uint32_t expected, Spinner& spinner) {
  while (shared.connected.load(std::memory_order_acquire) < expected) {
    if (!spinner.failed_attempt()) return false;
    std::this_thread::yield();
  }
  spinner.progress();
  return true;
}

// Receives and checks messages (producer, 0) .. (producer, n - 1).
template <class Rx>
bool receive_sequence(Rx& rx, const MessageTemplate& message, unsigned producer, std::uint64_t n,
                      std::size_t batch, Spinner& spinner, Control& control, int agent,
                      const char* what) {
  std::uint64_t tags[kFanoutMaxBatch];
  std::uint64_t expected = 0;
  while (expected < n) {
    const char* problem = nullptr;
    const std::size_t max = static_cast<std::size_t>(std::min<std::uint64_t>(n - expected, batch));
    const std::size_t got = rx.receive(message, tags, max, spinner, problem);
    for (std::size_t i = 0; problem == nullptr && i < got; ++i) {
      if (tags[i] != make_tag(producer, expected + i)) problem = "sequence gap or reorder";
    }
    if (problem == nullptr && got == 0) problem = "received nothing";
    if (problem != nullptr) {
      control.fail(agent, "subscriber %d, %s message %llu: %s", agent - 1, what,
                   static_cast<unsigned long long>(expected), problem);
      return false;
    }
    expected += got;
  }
  return true;
}

template <class Tx>
bool publish_sequence(Tx& tx, MessageTemplate& message, unsigned producer, std::uint64_t n,
                      std::size_t batch, Spinner& spinner, Control& control, const char* what) {
  std::uint64_t next = 0;
  while (next < n) {
    const char* problem = nullptr;
    const std::size_t max = static_cast<std::size_t>(std::min<std::uint64_t>(n - next, batch));
    const std::size_t sent = tx.publish(message, producer, next, max, spinner, problem);
    if (problem == nullptr && sent == 0) problem = "sent nothing";
    if (problem != nullptr) {
      control.fail(kPublisherAgent, "publisher, %s message %llu: %s", what,
                   static_cast<unsigned long long>(next), problem);
      return false;
    }
    next += sent;
  }
  return true;
}

// Stays until every subscriber has finished: some transports drop what is
// still queued when the publishing end goes.
inline void linger(Control& control, unsigned subscribers, int self) {
  for (unsigned i = 0; i < subscribers; ++i) {
    if (subscriber_agent(i) != self) await_finished(control, subscriber_agent(i));
  }
}

template <class T>
void bm_fanout_throughput(benchmark::State& state, FanoutConfig config) {
  try {
    SharedRegion region(sizeof(FanoutShared));
    auto* shared = new (region.data()) FanoutShared{};
    Control& control = shared->control;
    const std::uint64_t count = static_cast<std::uint64_t>(state.max_iterations);
    const std::uint64_t warmup = warmup_messages(config.size);
    const unsigned n = config.subscribers;
    const bool share = fanout_shares_cores(n);
    config.echo = false;
    config.batch = std::min(config.batch, kFanoutMaxBatch);
    T transport(config);
    Team team(control, T::kProcesses);

    for (unsigned i = 0; i < n; ++i) {
      const int id = subscriber_agent(i);
      spawn_agent<T>(team, id, fanout_cpu(1 + i), [&, i, id] {
        typename T::Agent agent(transport);
        {
          typename T::Subscriber rx(transport, agent, i);
          const MessageTemplate message(config.size);
          Spinner spinner(control, share);
          shared->connected.fetch_add(1, std::memory_order_acq_rel);
          if (!receive_sequence(rx, message, 1, warmup, config.batch, spinner, control, id,
                                "warm-up")) {
            return;
          }
          control.agents[id].state.store(kReady, std::memory_order_release);
          const std::uint64_t idle = spinner.failures();
          if (!receive_sequence(rx, message, 0, count, config.batch, spinner, control, id,
                                "measured")) {
            return;
          }
          shared->end[id].ns = now_ns();
          shared->end[id].idle = spinner.failures() - idle;
          control.agents[id].messages = count;
        }
        control.agents[id].state.store(kFinished, std::memory_order_release);
      });
    }
    spawn_agent<T>(team, kPublisherAgent, fanout_cpu(0), [&] {
      typename T::Agent agent(transport);
      {
        typename T::Publisher tx(transport, agent);
        MessageTemplate message(config.size);
        Spinner spinner(control, share);
        if (!await_connected(*shared, n, spinner)) return;
        if (!publish_sequence(tx, message, 1, warmup, config.batch, spinner, control, "warm-up")) {
          return;
        }
        control.agents[kPublisherAgent].state.store(kReady, std::memory_order_release);
        if (!await_go(control, spinner)) return;
        shared->start_ns = now_ns();
        const std::uint64_t idle = spinner.failures();
        if (!publish_sequence(tx, message, 0, count, config.batch, spinner, control, "measured")) {
          return;
        }
        shared->end[kPublisherAgent].idle = spinner.failures() - idle;
        control.agents[kPublisherAgent].messages = count;
        linger(control, n, kPublisherAgent);
      }
      control.agents[kPublisherAgent].state.store(kFinished, std::memory_order_release);
    });

    if (!run_agents(state, team, control, static_cast<int>(n) + 1, transport)) return;
    std::int64_t end = 0;
    for (unsigned i = 0; i < n; ++i) end = std::max(end, shared->end[subscriber_agent(i)].ns);
    const double seconds = static_cast<double>(end - shared->start_ns) * 1e-9;
    while (state.KeepRunningBatch(static_cast<benchmark::IterationCount>(count))) {
      state.SetIterationTime(seconds);
    }
    // Per subscriber: each one received and verified all `count` messages.
    state.SetItemsProcessed(static_cast<std::int64_t>(count));
    state.SetBytesProcessed(static_cast<std::int64_t>(count * config.size));
    state.counters["deliveries_per_second"] =
        benchmark::Counter(static_cast<double>(count) * n, benchmark::Counter::kIsRate);
    state.counters["subscribers"] = n;
    std::uint64_t sub_idle = 0;
    for (unsigned i = 0; i < n; ++i) sub_idle += shared->end[subscriber_agent(i)].idle;
    const auto per_message = [count](double v) {
      return count == 0 ? 0.0 : v / static_cast<double>(count);
    };
    state.counters["publisher_idle_per_msg"] =
        per_message(static_cast<double>(shared->end[kPublisherAgent].idle));
    state.counters["subscriber_idle_per_msg"] = per_message(static_cast<double>(sub_idle) / n);
    state.SetLabel("depth=" + std::to_string(config.depth) +
                   " batch=" + std::to_string(config.batch) + (share ? " shared-cores" : ""));
  } catch (const std::exception& e) {
    fail(state, e.what());
  }
}

template <class T>
void bm_fanout_round_trip(benchmark::State& state, FanoutConfig config) {
  try {
    const std::uint64_t count = static_cast<std::uint64_t>(state.max_iterations);
    const std::uint64_t total = kWarmupRoundTrips + count;
    const std::uint64_t timed = std::min(count, kMaxOneWaySamples);
    SharedRegion region(sizeof(FanoutShared) + timed * sizeof(std::uint64_t));
    auto* shared = new (region.data()) FanoutShared{};
    auto* received =
        reinterpret_cast<std::uint64_t*>(static_cast<char*>(region.data()) + sizeof(FanoutShared));
    Control& control = shared->control;
    const unsigned n = config.subscribers;
    const bool share = fanout_shares_cores(n);
    const std::uint64_t quantum = settings().tick_quantum;
    config.echo = true;
    config.batch = std::min(config.batch, kFanoutMaxBatch);
    T transport(config);
    Team team(control, T::kProcesses);

    for (unsigned i = 0; i < n; ++i) {
      const int id = subscriber_agent(i);
      spawn_agent<T>(team, id, fanout_cpu(1 + i), [&, i, id] {
        typename T::Agent agent(transport);
        {
          typename T::Subscriber rx(transport, agent, i);
          MessageTemplate message(config.size);
          Spinner spinner(control, share);
          if (i != 0) {
            // A reader that does not answer: it checks every ping.
            shared->connected.fetch_add(1, std::memory_order_acq_rel);
            control.agents[id].state.store(kReady, std::memory_order_release);
            if (!receive_sequence(rx, message, 0, total, config.batch, spinner, control, id,
                                  "ping")) {
              return;
            }
          } else {
            typename T::EchoSender echo(transport, agent);
            shared->connected.fetch_add(1, std::memory_order_acq_rel);
            control.agents[id].state.store(kReady, std::memory_order_release);
            for (std::uint64_t k = 0; k < total; ++k) {
              std::uint64_t tag = 0;
              const char* problem = nullptr;
              const std::size_t got = rx.receive(message, &tag, 1, spinner, problem);
              if (k >= kWarmupRoundTrips && k - kWarmupRoundTrips < timed)
                received[k - kWarmupRoundTrips] = ticks();
              if (problem == nullptr && got != 1) problem = "received nothing";
              if (problem == nullptr && tag != make_tag(0, k)) problem = "out of sequence";
              if (problem == nullptr) problem = echo.send(message, tag, spinner);
              if (problem != nullptr) {
                control.fail(id, "echo, ping %llu: %s", static_cast<unsigned long long>(k),
                             problem);
                return;
              }
            }
            await_finished(control, kPublisherAgent);  // the last reply may still be queued
          }
          control.agents[id].messages = total;
        }
        control.agents[id].state.store(kFinished, std::memory_order_release);
      });
    }
    spawn_agent<T>(team, kPublisherAgent, fanout_cpu(0), [&] {
      typename T::Agent agent(transport);
      {
        typename T::Publisher tx(transport, agent);
        typename T::EchoReceiver back(transport, agent);
        MessageTemplate message(config.size);
        Spinner spinner(control, share);
        if (!await_connected(*shared, n, spinner)) return;
        LatencyRecorder recorder(count);
        LatencyRecorder one_way(timed);
        std::vector<std::uint64_t> sent(timed);
        auto ping = [&](std::uint64_t k) -> const char* {
          const char* problem = nullptr;
          if (tx.publish(message, 0, k, 1, spinner, problem) != 1 && problem == nullptr) {
            problem = "sent nothing";
          }
          std::uint64_t back_tag = 0;
          if (problem == nullptr) problem = back.receive(message, back_tag, spinner);
          if (problem == nullptr && back_tag != make_tag(0, k)) problem = "reply out of sequence";
          return problem;
        };
        for (std::uint64_t k = 0; k < kWarmupRoundTrips; ++k) {
          if (const char* problem = ping(k)) {
            control.fail(kPublisherAgent, "warm-up round trip %llu: %s",
                         static_cast<unsigned long long>(k), problem);
            return;
          }
        }
        control.agents[kPublisherAgent].state.store(kReady, std::memory_order_release);
        if (!await_go(control, spinner)) return;
        const TickCalibration calibration;
        shared->start_ns = now_ns();
        recorder.start();
        for (std::uint64_t k = kWarmupRoundTrips; k < total; ++k) {
          if (k - kWarmupRoundTrips < timed) sent[k - kWarmupRoundTrips] = recorder.lap_start();
          if (const char* problem = ping(k)) {
            control.fail(kPublisherAgent, "round trip %llu: %s", static_cast<unsigned long long>(k),
                         problem);
            return;
          }
          recorder.lap();
        }
        shared->end[kPublisherAgent].ns = now_ns();
        shared->latency = recorder.summarise(calibration.ns_per_tick(), quantum);
        // Every reply has come back, so every `received` tick is written.
        for (std::uint64_t k = 0; k < timed; ++k) {
          const bool skewed = received[k] < sent[k];
          shared->one_way_skewed += skewed;
          one_way.add(skewed ? 0 : received[k] - sent[k]);
        }
        shared->one_way = one_way.summarise(calibration.ns_per_tick(), quantum);
        control.agents[kPublisherAgent].messages = count;
        linger(control, n, subscriber_agent(0));
      }
      control.agents[kPublisherAgent].state.store(kFinished, std::memory_order_release);
    });

    if (!run_agents(state, team, control, static_cast<int>(n) + 1, transport)) return;
    const double seconds =
        static_cast<double>(shared->end[kPublisherAgent].ns - shared->start_ns) * 1e-9;
    while (state.KeepRunningBatch(static_cast<benchmark::IterationCount>(count))) {
      state.SetIterationTime(seconds);
    }
    set_latency_counters(state, shared->latency);
    state.counters["one_way_p50_ns"] = shared->one_way.p50;
    state.counters["one_way_p99_ns"] = shared->one_way.p99;
    state.counters["one_way_min_ns"] = shared->one_way.min;
    state.counters["one_way_skewed"] = static_cast<double>(shared->one_way_skewed);
    state.counters["subscribers"] = n;
    state.SetLabel("depth=" + std::to_string(config.depth) + (share ? " shared-cores" : ""));
  } catch (const std::exception& e) {
    fail(state, e.what());
  }
}

// Registers bcast/<what>/<N>sub/<size> (throughput) for every size and
// rtt/bcast/<what>/<N>sub/64B (round trip), for each subscriber count.
// `rtt_what` names the round trip's variant where it differs (shmring's
// zero-copy round trip next to its batched throughput).
template <class T>
void register_fanout(const std::string& what, const std::string& rtt_what,
                     const std::vector<std::size_t>& sizes, bool zero_copy) {
  if (settings().cpus.size() < 2) return;
  for (const unsigned n : fanout_counts()) {
    if (n > kFanoutMaxSubscribers) continue;
    const std::string sub = std::to_string(n) + "sub";
    for (const std::size_t size : sizes) {
      FanoutConfig c;
      c.size = size;
      c.depth = peer_depth(size);
      c.subscribers = n;
      c.zero_copy = zero_copy;
      c.batch = zero_copy ? static_cast<std::size_t>(std::min<std::uint64_t>(32, c.depth / 4)) : 1;
      const std::string name = "bcast/" + what + "/" + sub + "/" + peer_size_name(size);
      benchmark::RegisterBenchmark(name.c_str(), bm_fanout_throughput<T>, c)->UseManualTime();
    }
    FanoutConfig c;
    c.size = 64;
    c.depth = peer_depth(64);
    c.subscribers = n;
    c.zero_copy = zero_copy;
    c.batch = zero_copy ? kFanoutMaxBatch : 1;
    const std::string name = "rtt/bcast/" + rtt_what + "/" + sub + "/64B";
    benchmark::RegisterBenchmark(name.c_str(), bm_fanout_round_trip<T>, c)->UseManualTime();
  }
}

}  // namespace shmring::bench::peers
