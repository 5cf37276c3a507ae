// The same two measurements for every peer transport (pipe, Unix socket,
// ZeroMQ, Boost.Interprocess, iceoryx, moodycamel), so that shmring's
// figures sit next to theirs from the same run on the same cores:
//
//   throughput  one sender on the first benchmark CPU streams N messages to
//               one receiver on the second, one message per call, the
//               receiver checking each (exact sequence and content);
//   round trip  a pinger sends a message, an echo checks it and sends one
//               with the same tag back, the pinger checks that; every round
//               trip is timed.
//
// A transport is a class T with
//   static constexpr bool kProcesses;            agents are forked (else threads)
//   T(std::size_t size, std::uint64_t depth, int channels, std::string id)
//                                                in the benchmark process, before
//                                                any agent starts (names, fds)
//   T::Agent(T&)                                 first thing in every agent (a
//                                                runtime, a context), destroyed last
//   T::Sender(T&, Agent&, int channel)
//     const char* send(MessageTemplate&, std::uint64_t tag, Spinner&) noexcept
//   T::Receiver(T&, Agent&, int channel)
//     const char* receive(const MessageTemplate&, std::uint64_t& tag, Spinner&) noexcept
//   static void leave_process()                  how a forked agent ends (_exit
//                                                unless the library must tidy up)
// send/receive return nullptr, or what went wrong. A receiver verifies the
// message it hands back exactly as shmring's consumers do.
#pragma once

#include <benchmark/benchmark.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <exception>
#include <initializer_list>
#include <new>
#include <string>
#include <thread>
#include <vector>

#include "bench_support.hpp"

namespace shmring::bench::peers {

// What the main program decided: the cores (SHMRING_BENCH_CPUS) and the
// tick step. Set before any peer benchmark is registered.
struct Settings {
  std::vector<int> cpus{0, 1};
  std::uint64_t tick_quantum = 1;
};
Settings& settings();

// Marks the benchmark failed and counts it for the exit status.
void fail(benchmark::State& state, const std::string& why);
int failures();

// "shmring_bench_<pid>_<n>_<what>", also for peers' own names (queues,
// sockets), so run.sh finds anything left behind.
inline std::string peer_id(const char* what) { return unique_name(what); }

// Registration, one function per peer source file; peers.cpp calls those
// that were built. stop_peers() ends what a peer started for the run (RouDi).
void register_peer_benchmarks();
void stop_peers();
void register_pipe_benchmarks();
void register_unix_socket_benchmarks();
void register_zeromq_benchmarks();
void register_boost_mq_benchmarks();
void register_iceoryx_benchmarks();
void register_concurrentqueue_benchmarks();
void stop_iceoryx();

// Sizes a peer is measured at: the shmring suite's, up to `largest`.
inline std::vector<std::size_t> peer_sizes(std::size_t largest) {
  std::vector<std::size_t> sizes;
  for (const std::size_t s : {std::size_t{8}, std::size_t{64}, std::size_t{4096},
                              std::size_t{64} << 10, std::size_t{1} << 20}) {
    if (s <= largest) sizes.push_back(s);
  }
  return sizes;
}

// The queue depth shmring's own rings get for this size (bench_rings.cpp).
inline std::uint64_t peer_depth(std::size_t size) {
  if (size <= 4096) return 1024;
  if (size <= 65536) return 64;
  return 16;
}

inline std::string peer_size_name(std::size_t bytes) {
  if (bytes >= (1u << 20) && bytes % (1u << 20) == 0) return std::to_string(bytes >> 20) + "MiB";
  if (bytes >= 1024 && bytes % 1024 == 0) return std::to_string(bytes >> 10) + "KiB";
  return std::to_string(bytes) + "B";
}

inline std::int64_t now_ns() noexcept {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(Clock::now().time_since_epoch())
      .count();
}

// Lives in a SharedRegion; agents write their timestamps and the latency
// summary here, so the benchmark thread only starts, waits and reports.
struct PeerShared {
  Control control;
  alignas(128) std::int64_t start_ns = 0;  // sender/pinger: before the first message
  alignas(128) std::int64_t end_ns = 0;    // receiver: last message verified; pinger: last reply
  LatencyRecorder::Summary latency{};
};

inline constexpr int kSenderAgent = 0;    // pinger in a round trip; on the first CPU
inline constexpr int kReceiverAgent = 1;  // echo in a round trip; on the second CPU

// Messages (throughput) and round trips sent before the measurement, tagged
// as producer 1 and verified like the rest: the first messages through a
// transport pay for connections, page faults on fresh buffers and cold
// caches, which shmring's benchmarks also keep out (prefault).
inline std::uint64_t warmup_messages(std::size_t size) { return 2 * peer_depth(size); }
inline constexpr std::uint64_t kWarmupRoundTrips = 64;

// Waits for agents 0 .. agents - 1 to reach `state`, sleeping (the
// benchmark thread shares the first CPU with an agent and must not compete
// with it). False on a failure, an abort, a child gone early or the time
// limit.
inline bool await_agents(const Team& team, const Control& control, int agents, AgentState state,
                         std::chrono::seconds limit) {
  const auto deadline = Clock::now() + limit;
  for (;;) {
    bool all = true;
    for (int id = 0; id < agents; ++id) {
      const std::uint32_t s = control.agents[id].state.load(std::memory_order_acquire);
      if (s == kFailed) return false;
      if (s < state) all = false;
    }
    if (all) return true;
    if (control.aborted() || !team.children_alive() || Clock::now() > deadline) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
}

inline std::string team_failure(Team& team, bool finished, const char* otherwise) {
  const std::string problem = team.stop();
  std::string why = team.first_error();
  if (why.empty()) why = problem;
  if (why.empty() && !finished) why = otherwise;
  return why;
}

// The benchmark thread's part of a measurement with agents 0 .. agents - 1:
// once every one is ready (and the transport told so, if it asks), starts
// them and waits for them to finish. False, with the benchmark failed, if
// they did not.
template <class T>
bool run_agents(benchmark::State& state, Team& team, Control& control, int agents, T& transport) {
  if (!await_agents(team, control, agents, kReady, std::chrono::seconds(30))) {
    fail(state, team_failure(team, false, "agents did not get ready"));
    return false;
  }
  if constexpr (requires { transport.all_ready(); }) transport.all_ready();
  control.go.store(1, std::memory_order_release);
  const bool finished = await_agents(team, control, agents, kFinished, std::chrono::seconds(120));
  const std::string why = team_failure(team, finished, "agents did not finish (stalled or died)");
  if (!why.empty()) fail(state, why);
  return why.empty();
}

// An agent's wait for the start of the measurement.
inline bool await_go(const Control& control, Spinner& spinner) {
  while (control.go.load(std::memory_order_acquire) == 0) {
    if (!spinner.failed_attempt()) return false;
  }
  spinner.progress();
  return true;
}

// An agent that stays until agent `other` has finished: some transports drop
// what is still queued when the sending end goes.
inline void await_finished(const Control& control, int other) {
  while (control.agents[other].state.load(std::memory_order_acquire) < kFinished &&
         !control.aborted()) {
    std::this_thread::sleep_for(std::chrono::microseconds(100));
  }
}

inline void set_latency_counters(benchmark::State& state, const LatencyRecorder::Summary& s) {
  state.counters["p50_ns"] = s.p50;
  state.counters["p90_ns"] = s.p90;
  state.counters["p99_ns"] = s.p99;
  state.counters["p999_ns"] = s.p999;
  state.counters["min_ns"] = s.min;
}

// Runs `body` as agent `id` on `cpu`; a forked agent then leaves the way its
// transport needs.
template <class T, class Body>
void spawn_agent(Team& team, int id, int cpu, Body body) {
  team.spawn(id, cpu, [&team, body = std::move(body)]() mutable {
    body();
    if (team.processes()) T::leave_process();
  });
}

// A spinner for agents: they yield when they share a core with each other.
inline bool agents_share_core() { return settings().cpus[0] == settings().cpus[1]; }

template <class T>
void bm_peer_throughput(benchmark::State& state, std::size_t size) {
  try {
    SharedRegion region(sizeof(PeerShared));
    auto* shared = new (region.data()) PeerShared{};
    Control& control = shared->control;
    const std::uint64_t count = static_cast<std::uint64_t>(state.max_iterations);
    const std::uint64_t warmup = warmup_messages(size);
    T transport(size, peer_depth(size), 1, peer_id("peer"));
    const std::vector<int>& cpus = settings().cpus;
    Team team(control, T::kProcesses);

    spawn_agent<T>(team, kReceiverAgent, cpus[1], [&] {
      typename T::Agent agent(transport);
      {
        typename T::Receiver rx(transport, agent, 0);
        const MessageTemplate message(size);
        Spinner spinner(control, agents_share_core());
        auto receive = [&](unsigned producer, std::uint64_t n) {
          for (std::uint64_t expected = 0; expected < n; ++expected) {
            std::uint64_t tag = 0;
            const char* problem = rx.receive(message, tag, spinner);
            if (problem == nullptr && tag != make_tag(producer, expected)) {
              problem = "sequence gap or reorder";
            }
            if (problem != nullptr) {
              control.fail(kReceiverAgent, "receiver, %s message %llu: %s",
                           producer == 0 ? "measured" : "warm-up",
                           static_cast<unsigned long long>(expected), problem);
              return false;
            }
          }
          return true;
        };
        if (!receive(1, warmup)) return;
        control.agents[kReceiverAgent].state.store(kReady, std::memory_order_release);
        if (!receive(0, count)) return;
        shared->end_ns = now_ns();
        control.agents[kReceiverAgent].messages = count;
      }
      control.agents[kReceiverAgent].state.store(kFinished, std::memory_order_release);
    });
    spawn_agent<T>(team, kSenderAgent, cpus[0], [&] {
      typename T::Agent agent(transport);
      {
        typename T::Sender tx(transport, agent, 0);
        MessageTemplate message(size);
        Spinner spinner(control, agents_share_core());
        for (std::uint64_t i = 0; i < warmup; ++i) {
          if (const char* problem = tx.send(message, make_tag(1, i), spinner)) {
            control.fail(kSenderAgent, "sender, warm-up message %llu: %s",
                         static_cast<unsigned long long>(i), problem);
            return;
          }
        }
        control.agents[kSenderAgent].state.store(kReady, std::memory_order_release);
        if (!await_go(control, spinner)) return;
        shared->start_ns = now_ns();
        for (std::uint64_t i = 0; i < count; ++i) {
          if (const char* problem = tx.send(message, make_tag(0, i), spinner)) {
            control.fail(kSenderAgent, "sender, message %llu: %s",
                         static_cast<unsigned long long>(i), problem);
            return;
          }
        }
        control.agents[kSenderAgent].messages = count;
        await_finished(control, kReceiverAgent);
      }
      control.agents[kSenderAgent].state.store(kFinished, std::memory_order_release);
    });

    if (!run_agents(state, team, control, 2, transport)) return;
    const double seconds = static_cast<double>(shared->end_ns - shared->start_ns) * 1e-9;
    while (state.KeepRunningBatch(static_cast<benchmark::IterationCount>(count))) {
      state.SetIterationTime(seconds);
    }
    state.SetItemsProcessed(static_cast<std::int64_t>(count));
    state.SetBytesProcessed(static_cast<std::int64_t>(count * size));
    state.SetLabel("depth=" + std::to_string(peer_depth(size)));
  } catch (const std::exception& e) {
    fail(state, e.what());
  }
}

template <class T>
void bm_peer_round_trip(benchmark::State& state, std::size_t size) {
  try {
    SharedRegion region(sizeof(PeerShared));
    auto* shared = new (region.data()) PeerShared{};
    Control& control = shared->control;
    const std::uint64_t count = static_cast<std::uint64_t>(state.max_iterations);
    // Channel 0 carries pings, channel 1 the replies.
    T transport(size, peer_depth(size), 2, peer_id("peer"));
    const std::vector<int>& cpus = settings().cpus;
    const std::uint64_t quantum = settings().tick_quantum;
    Team team(control, T::kProcesses);

    spawn_agent<T>(team, kReceiverAgent, cpus[1], [&] {
      typename T::Agent agent(transport);
      {
        typename T::Receiver in(transport, agent, 0);
        typename T::Sender out(transport, agent, 1);
        MessageTemplate message(size);
        Spinner spinner(control, agents_share_core());
        auto echo = [&](unsigned producer, std::uint64_t n) {
          for (std::uint64_t expected = 0; expected < n; ++expected) {
            std::uint64_t tag = 0;
            const char* problem = in.receive(message, tag, spinner);
            if (problem == nullptr && tag != make_tag(producer, expected))
              problem = "out of sequence";
            if (problem == nullptr) problem = out.send(message, tag, spinner);
            if (problem != nullptr) {
              control.fail(kReceiverAgent, "echo, %s message %llu: %s",
                           producer == 0 ? "measured" : "warm-up",
                           static_cast<unsigned long long>(expected), problem);
              return false;
            }
          }
          return true;
        };
        if (!echo(1, kWarmupRoundTrips)) return;
        control.agents[kReceiverAgent].state.store(kReady, std::memory_order_release);
        if (!echo(0, count)) return;
        control.agents[kReceiverAgent].messages = count;
        await_finished(control, kSenderAgent);  // the last reply may still be queued
      }
      control.agents[kReceiverAgent].state.store(kFinished, std::memory_order_release);
    });
    spawn_agent<T>(team, kSenderAgent, cpus[0], [&] {
      typename T::Agent agent(transport);
      {
        typename T::Sender out(transport, agent, 0);
        typename T::Receiver in(transport, agent, 1);
        MessageTemplate message(size);
        Spinner spinner(control, agents_share_core());
        LatencyRecorder recorder(count);
        for (std::uint64_t i = 0; i < kWarmupRoundTrips; ++i) {
          const std::uint64_t tag = make_tag(1, i);
          std::uint64_t back = 0;
          const char* problem = out.send(message, tag, spinner);
          if (problem == nullptr) problem = in.receive(message, back, spinner);
          if (problem == nullptr && back != tag) problem = "reply out of sequence";
          if (problem != nullptr) {
            control.fail(kSenderAgent, "warm-up round trip %llu: %s",
                         static_cast<unsigned long long>(i), problem);
            return;
          }
        }
        control.agents[kSenderAgent].state.store(kReady, std::memory_order_release);
        if (!await_go(control, spinner)) return;
        const TickCalibration calibration;
        shared->start_ns = now_ns();
        recorder.start();
        for (std::uint64_t i = 0; i < count; ++i) {
          const std::uint64_t tag = make_tag(0, i);
          std::uint64_t back = 0;
          const char* problem = out.send(message, tag, spinner);
          if (problem == nullptr) problem = in.receive(message, back, spinner);
          if (problem == nullptr && back != tag) problem = "reply out of sequence";
          if (problem != nullptr) {
            control.fail(kSenderAgent, "round trip %llu: %s", static_cast<unsigned long long>(i),
                         problem);
            return;
          }
          recorder.lap();
        }
        shared->end_ns = now_ns();
        shared->latency = recorder.summarise(calibration.ns_per_tick(), quantum);
        control.agents[kSenderAgent].messages = count;
      }
      control.agents[kSenderAgent].state.store(kFinished, std::memory_order_release);
    });

    if (!run_agents(state, team, control, 2, transport)) return;
    const double seconds = static_cast<double>(shared->end_ns - shared->start_ns) * 1e-9;
    while (state.KeepRunningBatch(static_cast<benchmark::IterationCount>(count))) {
      state.SetIterationTime(seconds);
    }
    set_latency_counters(state, shared->latency);
  } catch (const std::exception& e) {
    fail(state, e.what());
  }
}

template <class T>
std::string peer_placement() {
  return T::kProcesses ? "process" : "thread";
}

// rtt/<peer>/<placement>/64B
template <class T>
void register_peer_round_trip(const char* peer) {
  const std::string name = std::string("rtt/") + peer + "/" + peer_placement<T>() + "/64B";
  benchmark::RegisterBenchmark(name.c_str(), bm_peer_round_trip<T>, std::size_t{64})
      ->UseManualTime();
}

// peer/<peer>/<placement>/<size>
template <class T>
void register_peer_throughput(const char* peer, std::size_t size) {
  const std::string name =
      std::string("peer/") + peer + "/" + peer_placement<T>() + "/" + peer_size_name(size);
  benchmark::RegisterBenchmark(name.c_str(), bm_peer_throughput<T>, size)->UseManualTime();
}

template <class T>
void register_peer(const char* peer, const std::vector<std::size_t>& sizes) {
  register_peer_round_trip<T>(peer);
  for (const std::size_t size : sizes) register_peer_throughput<T>(peer, size);
}

}  // namespace shmring::bench::peers
