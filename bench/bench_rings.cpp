// Throughput and round-trip latency of shmring's SPSC and MPMC rings, next to
// the floors measured in the same run: a raw cache-line ping-pong between the
// two cores (latency) and a single-core memcpy (bandwidth).
//
// Every agent is pinned: the benchmark thread (producer 0, or the pinging
// side) to the first CPU of SHMRING_BENCH_CPUS (default "0,1"), its peer to
// the second. Cross-process cases fork their peers once per benchmark run;
// consumers verify every message (order, completeness and content), so no
// configuration can win by dropping data. See bench/README.md.
#include <benchmark/benchmark.h>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <memory>
#include <new>
#include <span>
#include <string>
#include <type_traits>
#include <vector>

#include "bench_support.hpp"
#include "fanout_harness.hpp"
#include "peer_harness.hpp"
#include "plain_ring.hpp"
#include "shmring/shmring.hpp"

namespace {

using namespace shmring;
using namespace shmring::bench;
using namespace std::chrono_literals;

std::vector<int> g_cpus;
std::uint64_t g_tick_quantum = 1;
int g_failures = 0;

void fail_benchmark(benchmark::State& state, const std::string& why) {
  ++g_failures;
  state.SkipWithError(why.c_str());
}

int producer_cpu(unsigned i) { return g_cpus[(2 * i) % g_cpus.size()]; }
int consumer_cpu(unsigned i) { return g_cpus[(2 * i + 1) % g_cpus.size()]; }

// Agents that share a core must yield in their spin loops, or each wait
// lasts a scheduler time slice.
bool share_cores(unsigned agents) {
  std::vector<int> used;
  for (unsigned i = 0; i < agents; ++i) {
    const int cpu = i % 2 == 0 ? producer_cpu(i / 2) : consumer_cpu(i / 2);
    if (std::find(used.begin(), used.end(), cpu) != used.end()) return true;
    used.push_back(cpu);
  }
  return false;
}

std::string size_name(std::size_t bytes) {
  if (bytes >= (1u << 20) && bytes % (1u << 20) == 0) return std::to_string(bytes >> 20) + "MiB";
  if (bytes >= 1024 && bytes % 1024 == 0) return std::to_string(bytes >> 10) + "KiB";
  return std::to_string(bytes) + "B";
}

template <RingKind Kind>
struct RingTypes;
template <>
struct RingTypes<RingKind::spsc> {
  using Producer = SpscProducer;
  using Consumer = SpscConsumer;
};
template <>
struct RingTypes<RingKind::mpmc> {
  using Producer = MpmcProducer;
  using Consumer = MpmcConsumer;
};

// The segment to use inside an agent: the benchmark's own in a thread, one
// opened by name in a child process (as an unrelated process would).
class AgentSegment {
 public:
  AgentSegment(const Segment& shared, const std::string& name, RingKind kind, bool own) {
    if (own) {
      OpenOptions o;
      o.kind = kind;
      own_ = Segment::open(name, o);
    }
    segment_ = own ? &own_ : &shared;
  }
  const Segment& get() const noexcept { return *segment_; }

 private:
  Segment own_;
  const Segment* segment_ = nullptr;
};

// ---- the copy API and the zero-copy batch API ----------------------------------

// copy: try_push / try_pop, one message a call. zerocopy: one claim and
// commit (one peek and release) a message. batch: claims and peeks of up to
// 32 slots, one publication each.
enum class Api { copy, zerocopy, batch };

const char* api_name(Api api) {
  return api == Api::copy ? "copy" : api == Api::zerocopy ? "zerocopy" : "batch";
}

// Sends a producer's messages, one try_push each (copy) or through claims of
// up to `batch` slots published with one commit_batch (batch).
template <class Producer>
class Sender {
 public:
  Sender(Producer& tx, Api api, std::size_t batch, std::size_t size, unsigned index,
         Control& control, int agent, Spinner& spinner)
      : tx_(tx),
        api_(api),
        batch_(batch),
        message_(size),
        index_(index),
        control_(control),
        agent_(agent),
        spinner_(spinner) {}

  // Sends `count` more messages; false when the run has to stop.
  bool send(std::uint64_t count) noexcept {
    while (count != 0) {
      if (api_ == Api::copy) {
        const Status s = tx_.try_push(message_.stamped(make_tag(index_, next_)));
        if (s == Status::ok) {
          ++next_;
          --count;
          spinner_.progress();
          continue;
        }
        if (s != Status::would_block) return broken("try_push", s);
      } else if constexpr (requires { tx_.try_claim(std::size_t{1}); }) {
        WriteClaim claim =
            tx_.try_claim(static_cast<std::size_t>(std::min<std::uint64_t>(count, batch_)));
        if (!claim.empty()) {
          for (std::size_t i = 0; i < claim.size(); ++i) {
            message_.write(claim[i].data(), make_tag(index_, next_ + i));
            if (claim.set_size(i, message_.size()) != Status::ok)
              return broken("set_size", Status::too_large);
          }
          next_ += claim.size();
          count -= claim.size();
          claim.commit_batch();
          spinner_.progress();
          continue;
        }
        if (claim.status() != Status::would_block) return broken("try_claim", claim.status());
      }
      if (!spinner_.failed_attempt()) {
        if (spinner_.stalled())
          control_.fail(agent_, "producer %u stalled: ring stayed full", index_);
        return false;
      }
    }
    return true;
  }
  std::uint64_t sent() const noexcept { return next_; }

 private:
  bool broken(const char* what, Status s) noexcept {
    control_.fail(agent_, "producer %u: %s returned %s", index_, what, to_string(s));
    return false;
  }

  Producer& tx_;
  Api api_;
  std::uint64_t batch_;
  MessageTemplate message_;
  unsigned index_;
  Control& control_;
  int agent_;
  Spinner& spinner_;
  std::uint64_t next_ = 0;
};

// Reads and verifies messages until every producer is done and the ring is
// empty; records the count and tallies in the agent's record.
template <class Consumer>
void receive_all(Consumer& rx, Api api, std::size_t batch, std::size_t size, unsigned producers,
                 bool exact, Control& control, int agent, Spinner& spinner) {
  const MessageTemplate message(size);
  SequenceChecker checker(producers, exact);
  std::vector<std::byte> buffer(size);
  std::uint64_t received = 0;
  bool producers_finished = false;
  auto verify = [&](bool ok, std::uint64_t tag) {
    if (!ok) {
      control.fail(agent, "consumer: message %llu has a wrong size or content",
                   static_cast<unsigned long long>(received));
      return false;
    }
    if (const char* why = checker.accept(tag)) {
      control.fail(agent, "consumer: message %llu (tag %#llx): %s",
                   static_cast<unsigned long long>(received), static_cast<unsigned long long>(tag),
                   why);
      return false;
    }
    ++received;
    return true;
  };
  for (;;) {
    Status status = Status::would_block;
    if (api == Api::copy) {
      std::size_t got = 0;
      status = rx.try_pop(buffer, got);
      if (status == Status::ok) {
        std::uint64_t tag = 0;
        const bool intact = message.check_copied(buffer.data(), got, tag);
        if (!verify(intact, tag)) return;
        spinner.progress();
        continue;
      }
    } else if constexpr (requires { rx.try_peek(batch); }) {
      ReadClaim claim = rx.try_peek(batch);
      if (!claim.empty()) {
        for (std::size_t i = 0; i < claim.size(); ++i) {
          const std::span<const std::byte> m = claim[i];
          std::uint64_t tag = 0;
          const bool intact = message.check_in_place(m.data(), m.size(), tag);
          if (!verify(intact, tag)) return;
        }
        claim.release();
        spinner.progress();
        continue;
      }
      status = claim.status();
    }
    if (status != Status::would_block) {
      control.fail(agent, "consumer: %s returned %s", api == Api::copy ? "try_pop" : "try_peek",
                   to_string(status));
      return;
    }
    // Empty. Once every producer has said it is done (after its last
    // commit), one more empty look means nothing is left for us.
    if (producers_finished) break;
    producers_finished = control.producers_done.load(std::memory_order_acquire) == producers;
    if (producers_finished) continue;
    if (!spinner.failed_attempt()) {
      if (spinner.stalled()) control.fail(agent, "consumer stalled: ring stayed empty");
      return;
    }
  }
  AgentRecord& record = control.agents[agent];
  record.messages = received;
  for (unsigned p = 0; p < producers; ++p) record.tally[p] = checker.tally()[p];
  record.state.store(kFinished, std::memory_order_release);
}

// ---- throughput -----------------------------------------------------------------

struct ThroughputCase {
  RingKind kind;
  bool processes;
  Api api;
  std::size_t size;
  std::uint64_t capacity;
  unsigned producers;
  unsigned consumers;
};

// Producer 0 runs in the benchmark thread; the other producers and all
// consumers are agents. Iterations count messages (all producers together);
// the time runs from the start signal until the last consumer has verified
// the last message, so nothing still in the ring counts as done.
template <RingKind Kind>
void bm_throughput(benchmark::State& state, ThroughputCase c) {
  using Types = RingTypes<Kind>;
  try {
    SharedRegion region(sizeof(Control));
    Control* control = new (region.data()) Control{};
    NameGuard name(unique_name(std::string(to_string(Kind)) + "_" + size_name(c.size)));
    CreateOptions options;
    options.kind = Kind;
    options.capacity = c.capacity;
    options.slot_size = c.size;
    const Segment segment = Segment::create(name.name(), options);

    const unsigned producers = c.producers;
    const unsigned consumers = c.consumers;
    const std::size_t batch =
        c.api == Api::batch ? static_cast<std::size_t>(std::min<std::uint64_t>(32, c.capacity / 4))
                            : 1;
    const std::uint64_t step = std::uint64_t{producers} * batch;
    const std::uint64_t rounds =
        (static_cast<std::uint64_t>(state.max_iterations) + step - 1) / step;
    const std::uint64_t per_producer = rounds * batch;
    const bool share = share_cores(2 * std::max(producers, consumers));

    Team team(*control, c.processes);
    int next_agent = 0;
    for (unsigned i = 0; i < consumers; ++i) {
      const int id = next_agent++;
      team.spawn(id, consumer_cpu(i), [&, id] {
        const AgentSegment seg(segment, name.name(), Kind, team.processes());
        auto rx = Types::Consumer::attach(seg.get());
        prefault(seg.get().base(), seg.get().size());
        Spinner spinner(*control, share);
        control->agents[id].state.store(kReady, std::memory_order_release);
        receive_all(rx, c.api, batch, c.size, producers, consumers == 1, *control, id, spinner);
      });
    }
    for (unsigned p = 1; p < producers; ++p) {
      const int id = next_agent++;
      team.spawn(id, producer_cpu(p), [&, id, p] {
        const AgentSegment seg(segment, name.name(), Kind, team.processes());
        auto tx = Types::Producer::attach(seg.get());
        prefault(seg.get().base(), seg.get().size());
        Spinner spinner(*control, share);
        Sender<typename Types::Producer> sender(tx, c.api, batch, c.size, p, *control, id, spinner);
        control->agents[id].state.store(kReady, std::memory_order_release);
        while (control->go.load(std::memory_order_acquire) == 0) {
          if (!spinner.failed_attempt()) return;
        }
        spinner.progress();
        if (!sender.send(per_producer)) return;
        control->agents[id].messages = sender.sent();
        control->producers_done.fetch_add(1, std::memory_order_release);
        control->agents[id].state.store(kFinished, std::memory_order_release);
      });
    }

    auto tx = Types::Producer::attach(segment);
    prefault(segment.base(), segment.size());
    Spinner spinner(*control, share, [&] { return team.children_alive(); });
    Sender<typename Types::Producer> sender(tx, c.api, batch, c.size, 0, *control, kMainAgent,
                                            spinner);
    if (!team.wait_all(kReady, 20s)) {
      const std::string why = team.first_error();
      team.stop();
      fail_benchmark(state, why.empty() ? "agents did not get ready" : why);
      return;
    }
    name.remove();  // everyone has it mapped

    const auto t0 = Clock::now();
    control->go.store(1, std::memory_order_release);
    std::uint64_t rounds_done = 0;
    bool ok = true;
    while (state.KeepRunningBatch(static_cast<benchmark::IterationCount>(step))) {
      if (ok && rounds_done < rounds) {
        ok = sender.send(batch);
        ++rounds_done;
      }
    }
    while (ok && rounds_done < rounds) {  // only if the library ran fewer batches than it said
      ok = sender.send(batch);
      ++rounds_done;
    }
    control->producers_done.fetch_add(1, std::memory_order_release);
    const bool finished = ok && team.wait_all(kFinished, 20s);
    const auto t1 = Clock::now();
    const std::string process_problem = team.stop();

    std::string why = team.first_error();
    if (why.empty() && control->agents[kMainAgent].state.load() == kFailed) {
      why = control->agents[kMainAgent].error;
    }
    if (why.empty() && !process_problem.empty()) why = process_problem;
    if (why.empty() && !finished) why = "agents did not finish (a peer died or stalled)";
    if (why.empty()) {
      // Every producer's messages arrived exactly once, over all consumers.
      const std::uint64_t expected_sum = per_producer * (per_producer - 1) / 2;
      for (unsigned p = 0; p < producers && why.empty(); ++p) {
        Tally total;
        for (unsigned i = 0; i < consumers; ++i) {
          total.count += control->agents[i].tally[p].count;
          total.sum += control->agents[i].tally[p].sum;
        }
        if (total.count != per_producer) {
          why = "producer " + std::to_string(p) + ": consumers saw " + std::to_string(total.count) +
                " of its " + std::to_string(per_producer) + " messages";
        } else if (total.sum != expected_sum) {
          why = "producer " + std::to_string(p) +
                ": the sequence numbers consumers saw do not add up";
        }
      }
    }
    if (!why.empty()) {
      fail_benchmark(state, why);
      return;
    }
    const std::uint64_t total = per_producer * producers;
    state.SetIterationTime(std::chrono::duration<double>(t1 - t0).count());
    state.SetItemsProcessed(static_cast<std::int64_t>(total));
    state.SetBytesProcessed(static_cast<std::int64_t>(total * c.size));
    state.SetLabel("cap=" + std::to_string(c.capacity) + " batch=" + std::to_string(batch));
  } catch (const std::exception& e) {
    fail_benchmark(state, e.what());
  }
}

// ---- latency ---------------------------------------------------------------------

void report_latency(benchmark::State& state, LatencyRecorder& recorder, double ns_per_tick) {
  const LatencyRecorder::Summary s = recorder.summarise(ns_per_tick, g_tick_quantum);
  state.counters["p50_ns"] = s.p50;
  state.counters["p90_ns"] = s.p90;
  state.counters["p99_ns"] = s.p99;
  state.counters["p999_ns"] = s.p999;
  state.counters["min_ns"] = s.min;
}

// The floor: two processes pass one 128-byte-aligned line back and forth,
// each waiting for the other's store with the same spin loop the ring
// benchmarks use. One iteration is one round trip.
void bm_floor(benchmark::State& state) {
  try {
    SharedRegion region(sizeof(Control));
    Control* control = new (region.data()) Control{};
    SharedRegion line_region(4096);  // page-aligned, so the word starts a 128-byte block
    auto* line = static_cast<std::uint64_t*>(line_region.data());
    *line = 0;

    Team team(*control, /*separate_processes=*/true);
    team.spawn(0, g_cpus[1], [&] {
      Spinner spinner(*control, share_cores(2));
      control->agents[0].state.store(kReady, std::memory_order_release);
      if (!floor_echo(*control, 0, line, spinner)) return;
      control->agents[0].state.store(kFinished, std::memory_order_release);
    });
    Spinner spinner(*control, share_cores(2), [&] { return team.children_alive(); });
    if (!team.wait_all(kReady, 20s)) {
      const std::string why = team.first_error();
      team.stop();
      fail_benchmark(state, why.empty() ? "peer did not get ready" : why);
      return;
    }

    LatencyRecorder recorder(static_cast<std::uint64_t>(state.max_iterations));
    const TickCalibration calibration;
    std::uint64_t v = 0;
    bool ok = true;
    recorder.start();
    for (auto _ : state) {
      if (!ok) continue;
      ok = floor_round_trip(line, v, spinner);
      recorder.lap();
    }
    const double ns_per_tick = calibration.ns_per_tick();
    atomic::store_release(line, kStopTag);
    const bool finished = ok && team.wait_all(kFinished, 10s);
    const std::string problem = team.stop();
    std::string why = team.first_error();
    if (why.empty() && !problem.empty()) why = problem;
    if (why.empty() && !finished) why = "peer did not finish";
    if (!why.empty()) {
      fail_benchmark(state, why);
      return;
    }
    report_latency(state, recorder, ns_per_tick);
  } catch (const std::exception& e) {
    fail_benchmark(state, e.what());
  }
}

// Round trip through two rings: we send a message into `ping`; the echo
// process receives and checks it, then sends a message with the same tag
// back through `pong`; we receive and check that. copy: try_push / try_pop;
// zero-copy: try_claim / commit and try_peek / release, the message written
// and verified in its slot; blocking: push / pop, which wait in shmring's own
// wait loop (spin, yield, futex) instead of the benchmark's spinner.
enum class RoundTripApi { copy, zero_copy, blocking };

// One end of a round trip, over shmring's handles or the plain baseline ring.
// send() and receive() return what went wrong, or nullptr.
template <class Out, class In>
class RoundTripEnd {
 public:
  static constexpr bool kShmring = std::is_same_v<Out, SpscProducer>;

  RoundTripEnd(Out& out, In& in, RoundTripApi api, std::size_t size, Spinner& spinner)
      : out_(out), in_(in), api_(api), message_(size), buffer_(size), spinner_(spinner) {}

  const char* send(std::uint64_t tag) noexcept {
    if constexpr (kShmring) {
      if (api_ == RoundTripApi::blocking) {
        Status s;
        while ((s = out_.push(message_.stamped(tag), kBlockingSlice)) == Status::timeout) {
          if (!spinner_.failed_attempt()) return gave_up();
        }
        spinner_.progress();
        return s == Status::ok ? nullptr : to_string(s);
      }
      if (api_ == RoundTripApi::zero_copy) {
        WriteClaim claim = out_.try_claim(1);
        while (claim.empty()) {
          if (claim.status() != Status::would_block) return to_string(claim.status());
          if (!spinner_.failed_attempt()) return gave_up();
          claim = out_.try_claim(1);
        }
        spinner_.progress();
        message_.write(claim[0].data(), tag);
        const Status s = claim.commit(message_.size());
        return s == Status::ok ? nullptr : to_string(s);
      }
    }
    Status s;
    while ((s = out_.try_push(message_.stamped(tag))) == Status::would_block) {
      if (!spinner_.failed_attempt()) return gave_up();
    }
    spinner_.progress();
    return s == Status::ok ? nullptr : to_string(s);
  }

  const char* receive(std::uint64_t& tag) noexcept {
    if constexpr (kShmring) {
      if (api_ == RoundTripApi::zero_copy) {
        ReadClaim claim = in_.try_peek(1);
        while (claim.empty()) {
          if (claim.status() != Status::would_block) return to_string(claim.status());
          if (!spinner_.failed_attempt()) return gave_up();
          claim = in_.try_peek(1);
        }
        spinner_.progress();
        const std::span<const std::byte> m = claim[0];
        const bool intact = message_.check_in_place(m.data(), m.size(), tag);
        claim.release();
        return intact ? nullptr : "message damaged";
      }
    }
    Status s;
    std::size_t got = 0;
    for (;;) {
      if constexpr (kShmring) {
        if (api_ == RoundTripApi::blocking) {
          s = in_.pop(buffer_, got, kBlockingSlice);
          if (s == Status::timeout) s = Status::would_block;
        } else {
          s = in_.try_pop(buffer_, got);
        }
      } else {
        s = in_.try_pop(buffer_, got);
      }
      if (s != Status::would_block) break;
      if (!spinner_.failed_attempt()) return gave_up();
    }
    spinner_.progress();
    if (s != Status::ok) return to_string(s);
    return message_.check_copied(buffer_.data(), got, tag) ? nullptr : "message damaged";
  }

 private:
  // A blocking call waits this long before the benchmark looks at its peer's
  // health (an abort, a dead peer, a stall).
  static constexpr std::chrono::milliseconds kBlockingSlice{100};

  const char* gave_up() const noexcept {
    return spinner_.stalled() ? "stalled waiting for the peer" : "aborted";
  }

  Out& out_;
  In& in_;
  RoundTripApi api_;
  MessageTemplate message_;
  std::vector<std::byte> buffer_;
  Spinner& spinner_;
};

// The two rings of a round trip. Shmring: two SPSC segments, opened by name
// in the echo process. Plain: two baseline rings in shared regions the echo
// process inherits.
class ShmringRings {
 public:
  using Out = SpscProducer;
  using In = SpscConsumer;
  ShmringRings(std::size_t size, std::uint64_t capacity, SlotFormat format = SlotFormat::plain)
      : ping_name_(unique_name("ping")), pong_name_(unique_name("pong")) {
    CreateOptions options;
    options.kind = RingKind::spsc;
    options.capacity = capacity;
    options.slot_size = size;
    options.format = format;
    ping_ = Segment::create(ping_name_.name(), options);
    pong_ = Segment::create(pong_name_.name(), options);
  }
  // In the echo process: its ends (in: ping, out: pong) and what keeps them.
  template <class Body>
  void echo_side(Body&& body) {
    const AgentSegment in_segment(ping_, ping_name_.name(), RingKind::spsc, true);
    const AgentSegment out_segment(pong_, pong_name_.name(), RingKind::spsc, true);
    auto in = SpscConsumer::attach(in_segment.get());
    auto out = SpscProducer::attach(out_segment.get());
    prefault(in_segment.get().base(), in_segment.get().size());
    prefault(out_segment.get().base(), out_segment.get().size());
    body(out, in);
  }
  template <class Body>
  void main_side(Body&& body) {
    auto out = SpscProducer::attach(ping_);
    auto in = SpscConsumer::attach(pong_);
    prefault(ping_.base(), ping_.size());
    prefault(pong_.base(), pong_.size());
    body(out, in);
  }
  void all_mapped() noexcept {
    ping_name_.remove();
    pong_name_.remove();
  }

 private:
  NameGuard ping_name_;
  NameGuard pong_name_;
  Segment ping_;
  Segment pong_;
};

// The same over low-latency slots (flagged 8-byte words, low_latency.hpp):
// copy calls only.
class LowLatencyRings : public ShmringRings {
 public:
  LowLatencyRings(std::size_t size, std::uint64_t capacity)
      : ShmringRings(size, capacity, SlotFormat::low_latency) {}
};

class PlainRings {
 public:
  using Out = PlainProducer;
  using In = PlainConsumer;
  PlainRings(std::size_t size, std::uint64_t capacity)
      : size_(size),
        capacity_(capacity),
        ping_(plain_ring_bytes(capacity, size)),
        pong_(plain_ring_bytes(capacity, size)) {
    PlainRing::initialise(ping_.data());
    PlainRing::initialise(pong_.data());
    prefault(ping_.data(), plain_ring_bytes(capacity, size));
    prefault(pong_.data(), plain_ring_bytes(capacity, size));
  }
  template <class Body>
  void echo_side(Body&& body) {
    PlainConsumer in(ping_.data(), capacity_, size_);
    PlainProducer out(pong_.data(), capacity_, size_);
    body(out, in);
  }
  template <class Body>
  void main_side(Body&& body) {
    PlainProducer out(ping_.data(), capacity_, size_);
    PlainConsumer in(pong_.data(), capacity_, size_);
    body(out, in);
  }
  void all_mapped() noexcept {}

 private:
  std::size_t size_;
  std::uint64_t capacity_;
  SharedRegion ping_;
  SharedRegion pong_;
};

template <class Rings>
void bm_round_trip(benchmark::State& state, RoundTripApi api, std::size_t size,
                   std::uint64_t capacity) {
  using End = RoundTripEnd<typename Rings::Out, typename Rings::In>;
  try {
    SharedRegion region(sizeof(Control));
    Control* control = new (region.data()) Control{};
    Rings rings(size, capacity);

    Team team(*control, /*separate_processes=*/true);
    team.spawn(0, g_cpus[1], [&] {
      rings.echo_side([&](typename Rings::Out& out, typename Rings::In& in) {
        Spinner spinner(*control, share_cores(2));
        End echo(out, in, api, size, spinner);
        control->agents[0].state.store(kReady, std::memory_order_release);
        for (std::uint64_t expected = 0;; ++expected) {
          std::uint64_t tag = 0;
          const char* problem = echo.receive(tag);
          if (problem == nullptr && tag == kStopTag) break;
          if (problem == nullptr && tag != make_tag(0, expected)) problem = "out of sequence";
          if (problem == nullptr) problem = echo.send(tag);
          if (problem != nullptr) {
            control->fail(0, "echo, message %llu: %s", static_cast<unsigned long long>(expected),
                          problem);
            return;
          }
        }
        control->agents[0].state.store(kFinished, std::memory_order_release);
      });
    });

    rings.main_side([&](typename Rings::Out& out, typename Rings::In& in) {
      Spinner spinner(*control, share_cores(2), [&] { return team.children_alive(); });
      End end(out, in, api, size, spinner);
      if (!team.wait_all(kReady, 20s)) {
        const std::string why = team.first_error();
        team.stop();
        fail_benchmark(state, why.empty() ? "echo process did not get ready" : why);
        return;
      }
      rings.all_mapped();

      LatencyRecorder recorder(static_cast<std::uint64_t>(state.max_iterations));
      const TickCalibration calibration;
      std::uint64_t sequence = 0;
      std::string why;
      recorder.start();
      for (auto _ : state) {
        if (!why.empty()) continue;
        const std::uint64_t tag = make_tag(0, sequence);
        std::uint64_t back = 0;
        const char* problem = end.send(tag);
        if (problem == nullptr) problem = end.receive(back);
        if (problem == nullptr && back != tag) problem = "reply out of sequence";
        if (problem != nullptr) {
          why = "round trip " + std::to_string(sequence) + ": " + problem;
          continue;
        }
        ++sequence;
        recorder.lap();
      }
      const double ns_per_tick = calibration.ns_per_tick();
      if (why.empty()) {
        if (const char* problem = end.send(kStopTag)) why = std::string("stop message: ") + problem;
      }
      const bool finished = why.empty() && team.wait_all(kFinished, 10s);
      const std::string problem = team.stop();
      if (const std::string agent_error = team.first_error(); !agent_error.empty()) {
        why = agent_error;
      }
      if (!why.empty() && !problem.empty()) why += " (" + problem + ")";
      if (why.empty() && !problem.empty()) why = problem;
      if (why.empty() && !finished) why = "echo process did not finish";
      if (!why.empty()) {
        fail_benchmark(state, why);
        return;
      }
      report_latency(state, recorder, ns_per_tick);
      state.SetLabel("cap=" + std::to_string(capacity));
    });
  } catch (const std::exception& e) {
    fail_benchmark(state, e.what());
  }
}

// ---- the plain baseline ring: throughput ----------------------------------------

// One producer (the benchmark thread) and one consumer process over the plain
// ring, one message at a time through the same Sender and receive_all as
// shmring's copy API, every message verified.
void bm_plain_throughput(benchmark::State& state, std::size_t size, std::uint64_t capacity) {
  try {
    SharedRegion region(sizeof(Control));
    Control* control = new (region.data()) Control{};
    SharedRegion ring(plain_ring_bytes(capacity, size));
    PlainRing::initialise(ring.data());
    prefault(ring.data(), plain_ring_bytes(capacity, size));
    const std::uint64_t total = static_cast<std::uint64_t>(state.max_iterations);
    const bool share = share_cores(2);

    Team team(*control, /*separate_processes=*/true);
    team.spawn(0, consumer_cpu(0), [&] {
      PlainConsumer rx(ring.data(), capacity, size);
      Spinner spinner(*control, share);
      control->agents[0].state.store(kReady, std::memory_order_release);
      receive_all(rx, Api::copy, 1, size, 1, true, *control, 0, spinner);
    });
    PlainProducer tx(ring.data(), capacity, size);
    Spinner spinner(*control, share, [&] { return team.children_alive(); });
    Sender<PlainProducer> sender(tx, Api::copy, 1, size, 0, *control, kMainAgent, spinner);
    if (!team.wait_all(kReady, 20s)) {
      const std::string why = team.first_error();
      team.stop();
      fail_benchmark(state, why.empty() ? "consumer did not get ready" : why);
      return;
    }
    const auto t0 = Clock::now();
    std::uint64_t sent = 0;
    bool ok = true;
    while (state.KeepRunningBatch(1)) {
      if (ok && sent < total) ok = sender.send(1), ++sent;
    }
    while (ok && sent < total) ok = sender.send(1), ++sent;
    control->producers_done.fetch_add(1, std::memory_order_release);
    const bool finished = ok && team.wait_all(kFinished, 20s);
    const auto t1 = Clock::now();
    const std::string process_problem = team.stop();
    std::string why = team.first_error();
    if (why.empty() && !process_problem.empty()) why = process_problem;
    if (why.empty() && !finished) why = "consumer did not finish";
    if (why.empty() && control->agents[0].tally[0].count != sent) {
      why = "consumer saw " + std::to_string(control->agents[0].tally[0].count) + " of " +
            std::to_string(sent) + " messages";
    }
    if (!why.empty()) {
      fail_benchmark(state, why);
      return;
    }
    state.SetIterationTime(std::chrono::duration<double>(t1 - t0).count());
    state.SetItemsProcessed(static_cast<std::int64_t>(sent));
    state.SetBytesProcessed(static_cast<std::int64_t>(sent * size));
    state.SetLabel("cap=" + std::to_string(capacity) + " batch=1");
  } catch (const std::exception& e) {
    fail_benchmark(state, e.what());
  }
}

// ---- bandwidth floor ----------------------------------------------------------------

// One core copying `size` bytes from one buffer to another, round and round
// (64 KiB stays in L2, 1 MiB pair does too on a 2 MiB L2 but not on smaller
// ones). The first word changes every iteration and the result is checked.
void bm_memcpy(benchmark::State& state, std::size_t size) {
  struct Free {
    void operator()(std::byte* p) const noexcept { std::free(p); }
  };
  std::unique_ptr<std::byte, Free> src(static_cast<std::byte*>(std::aligned_alloc(64, size)));
  std::unique_ptr<std::byte, Free> dst(static_cast<std::byte*>(std::aligned_alloc(64, size)));
  if (!src || !dst) {
    fail_benchmark(state, "out of memory");
    return;
  }
  const MessageTemplate pattern(size);
  pattern.write(src.get(), 0);
  std::memset(dst.get(), 0, size);
  std::uint64_t i = 0;
  for (auto _ : state) {
    store_word(src.get(), i++);
    std::memcpy(dst.get(), src.get(), size);
    benchmark::DoNotOptimize(dst.get());
    benchmark::ClobberMemory();
  }
  if (i != 0 &&
      (load_word(dst.get()) != i - 1 || std::memcmp(dst.get() + 8, src.get() + 8, size - 8) != 0)) {
    fail_benchmark(state, "memcpy result differs from its source");
    return;
  }
  state.SetItemsProcessed(static_cast<std::int64_t>(state.iterations()));
  state.SetBytesProcessed(static_cast<std::int64_t>(state.iterations()) *
                          static_cast<std::int64_t>(size));
}

// ---- registration --------------------------------------------------------------------

std::uint64_t capacity_for(std::size_t size) {
  if (size <= 4096) return 1024;
  if (size <= 65536) return 64;
  return 16;
}

void register_throughput(RingKind kind, bool processes, Api api, std::size_t size,
                         unsigned producers, unsigned consumers) {
  ThroughputCase c{kind, processes, api, size, capacity_for(size), producers, consumers};
  std::string name = std::string(to_string(kind)) + "/" + (processes ? "process" : "thread") + "/";
  if (kind == RingKind::mpmc) {
    name += std::to_string(producers) + "x" + std::to_string(consumers) + "/";
  }
  name += std::string(api_name(api)) + "/" + size_name(size);
  benchmark::internal::Benchmark* b =
      kind == RingKind::spsc
          ? benchmark::RegisterBenchmark(name.c_str(), bm_throughput<RingKind::spsc>, c)
          : benchmark::RegisterBenchmark(name.c_str(), bm_throughput<RingKind::mpmc>, c);
  b->UseManualTime();
}

void register_all() {
  // Latency, with its floor first.
  benchmark::RegisterBenchmark("floor/cacheline_pingpong/process", bm_floor)->UseRealTime();
  // The plain baseline ring next to it (plain_ring.hpp).
  benchmark::RegisterBenchmark("rtt/plain/process/copy/64B", bm_round_trip<PlainRings>,
                               RoundTripApi::copy, std::size_t{64}, std::uint64_t{1024})
      ->UseRealTime();
  for (const std::size_t size : {std::size_t{64}, std::size_t{8}}) {
    benchmark::RegisterBenchmark(("rtt/spsc/process/copy/" + size_name(size)).c_str(),
                                 bm_round_trip<ShmringRings>, RoundTripApi::copy, size,
                                 std::uint64_t{1024})
        ->UseRealTime();
    benchmark::RegisterBenchmark(("rtt/spsc/process/zerocopy/" + size_name(size)).c_str(),
                                 bm_round_trip<ShmringRings>, RoundTripApi::zero_copy, size,
                                 std::uint64_t{1024})
        ->UseRealTime();
    benchmark::RegisterBenchmark(("rtt/spsc/process/lowlatency/" + size_name(size)).c_str(),
                                 bm_round_trip<LowLatencyRings>, RoundTripApi::copy, size,
                                 std::uint64_t{1024})
        ->UseRealTime();
  }
  // push / pop: shmring's own wait loop, which is what two processes on one
  // core (SHMRING_BENCH_CPUS=0,0) depend on.
  benchmark::RegisterBenchmark("rtt/spsc/process/blocking/64B", bm_round_trip<ShmringRings>,
                               RoundTripApi::blocking, std::size_t{64}, std::uint64_t{1024})
      ->UseRealTime();
  // Bandwidth floor.
  for (const std::size_t size : {std::size_t{64} << 10, std::size_t{1} << 20}) {
    benchmark::RegisterBenchmark(("memcpy/" + size_name(size)).c_str(), bm_memcpy, size);
  }
  for (const std::size_t size : {std::size_t{8}, std::size_t{64}}) {
    benchmark::RegisterBenchmark(("plain/process/copy/" + size_name(size)).c_str(),
                                 bm_plain_throughput, size, std::uint64_t{1024})
        ->UseManualTime();
  }
  const std::size_t spsc_sizes[] = {8, 64, 4096, 64 << 10, 1 << 20};
  for (const std::size_t size : spsc_sizes) {
    for (const bool processes : {false, true}) {
      for (const Api api : {Api::copy, Api::zerocopy, Api::batch}) {
        // One message a claim: for small messages, where the call is the cost.
        if (api != Api::zerocopy || size <= 64) {
          register_throughput(RingKind::spsc, processes, api, size, 1, 1);
        }
      }
    }
  }
  std::vector<unsigned> pair_counts = {1, 2};
  for (unsigned pairs = 4; 2 * pairs <= g_cpus.size() && pairs <= kMaxProducers; pairs *= 2) {
    pair_counts.push_back(pairs);
  }
  const std::size_t mpmc_sizes[] = {8, 64, 4096, 64 << 10};
  for (const unsigned pairs : pair_counts) {
    for (const std::size_t size : mpmc_sizes) {
      for (const bool processes : {false, true}) {
        for (const Api api : {Api::copy, Api::batch}) {
          register_throughput(RingKind::mpmc, processes, api, size, pairs, pairs);
        }
      }
    }
  }
  // The rest of the producer x consumer grid, at 64 B: every pair of the
  // counts above (1x2 and 2x1 even on two cores, to see contention on one
  // side alone; up to 8x8 with 16 cores).
  for (const unsigned producers : pair_counts) {
    for (const unsigned consumers : pair_counts) {
      if (producers == consumers) continue;
      for (const bool processes : {false, true}) {
        for (const Api api : {Api::copy, Api::batch}) {
          register_throughput(RingKind::mpmc, processes, api, 64, producers, consumers);
        }
      }
    }
  }
}

}  // namespace

int main(int argc, char** argv) {
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  try {
    g_cpus = bench_cpus_from_env();
  } catch (const std::exception& e) {
    std::fprintf(stderr, "shmring_bench: %s\n", e.what());
    return 2;
  }
  if (!pin_to_cpu(g_cpus[0])) {
    std::fprintf(stderr, "shmring_bench: cannot pin to CPU %d (SHMRING_BENCH_CPUS=%s): %s\n",
                 g_cpus[0], cpu_list_string(g_cpus).c_str(), std::strerror(errno));
    return 2;
  }
  g_tick_quantum = tick_quantum();
  benchmark::AddCustomContext("shmring_cpus", cpu_list_string(g_cpus));
  benchmark::AddCustomContext("shmring_tick_quantum", std::to_string(g_tick_quantum));
  if (g_cpus[0] == g_cpus[1]) {
    std::fprintf(stderr,
                 "shmring_bench: only CPU %d to run on; peers share it and the figures "
                 "mean nothing\n",
                 g_cpus[0]);
  }
  register_all();
  peers::settings() = peers::Settings{g_cpus, g_tick_quantum};
  peers::register_broadcast_benchmarks();
  peers::register_peer_benchmarks();
  benchmark::RunSpecifiedBenchmarks();
  peers::stop_peers();
  benchmark::Shutdown();
  g_failures += peers::failures();
  if (const auto left = remove_leftover_segments(); !left.empty()) {
    for (const std::string& name : left) {
      std::fprintf(stderr, "shmring_bench: segment /dev/shm/%s was left behind\n", name.c_str());
    }
    ++g_failures;
  }
  return g_failures == 0 ? 0 : 1;
}
