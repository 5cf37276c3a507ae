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
#include "plain_lanes_ring.hpp"
#include "plain_mpmc_ring.hpp"
#include "plain_ring.hpp"
#include "shmring/shmring.hpp"
#include "throughput_harness.hpp"

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

// ---- throughput -----------------------------------------------------------------

// A shmring ring for throughput_harness.hpp: the segment is created here;
// agents attach to it (forked ones open it by name) and map every page
// before the measurement.
template <RingKind Kind>
class ShmringRing {
 public:
  using Producer = typename RingTypes<Kind>::Producer;
  using Consumer = typename RingTypes<Kind>::Consumer;

  // MPMC: `lanes` owned lanes of `capacity` slots each (0: one shared lane),
  // consumers reading `read_ahead` messages a claim.
  ShmringRing(std::size_t size, std::uint64_t capacity, std::uint32_t lanes = 0,
              std::size_t read_ahead = 1)
      : name_(unique_name(std::string(to_string(Kind)) + "_" + size_name(size))),
        segment_(Segment::create(name_.name(), options(size, capacity, lanes))),
        read_ahead_(read_ahead) {}

  template <class Body>
  void producer_side(unsigned /*index*/, bool own_mapping, Body&& body) {
    const AgentSegment seg(segment_, name_.name(), Kind, own_mapping);
    auto tx = Producer::attach(seg.get());
    prefault(seg.get().base(), seg.get().size());
    body(tx);
  }
  template <class Body>
  void consumer_side(bool own_mapping, Body&& body) {
    const AgentSegment seg(segment_, name_.name(), Kind, own_mapping);
    auto rx = Consumer::attach(seg.get());
    if constexpr (Kind == RingKind::mpmc) rx.set_read_ahead(read_ahead_);
    prefault(seg.get().base(), seg.get().size());
    body(rx);
  }
  void all_mapped() noexcept { name_.remove(); }

 private:
  static CreateOptions options(std::size_t size, std::uint64_t capacity, std::uint32_t lanes) {
    CreateOptions o;
    o.kind = Kind;
    o.capacity = capacity * (lanes == 0 ? 1 : lanes);
    o.slot_size = size;
    o.lanes = lanes;
    return o;
  }
  NameGuard name_;
  Segment segment_;
  std::size_t read_ahead_;
};

template <RingKind Kind>
void bm_throughput(benchmark::State& state, ThroughputShape c) {
  try {
    ShmringRing<Kind> ring(c.size, c.capacity, c.lanes, c.read_ahead);
    if (const std::string why = run_throughput(state, c, ring, g_cpus); !why.empty()) {
      fail_benchmark(state, why);
    }
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

// The floors: two processes pass a count back and forth, in one
// 128-byte-aligned line, in two, or in two with a 64-byte message before each
// word (bench_support.hpp, "the cache-line floor"), each waiting for the
// other's store with the same spin loop the ring benchmarks use. One
// iteration is one round trip.
enum class FloorShape { one_line, two_lines, messages, split_messages, touched_messages };

void bm_floor(benchmark::State& state, FloorShape shape) {
  try {
    SharedRegion region(sizeof(Control));
    Control* control = new (region.data()) Control{};
    SharedRegion line_region(4096);  // page-aligned, so each word starts a 128-byte block
    using Layout = FloorMessage::Layout;
    const Layout layout = shape == FloorShape::split_messages     ? Layout::split
                          : shape == FloorShape::touched_messages ? Layout::touched
                                                                  : Layout::before_word;
    const bool messages = shape == FloorShape::messages || layout != Layout::before_word;
    // Messages: each word in the second line of its block, its message in the
    // first. Split messages: each word starts its block (FloorMessage).
    const std::size_t first = messages && layout != Layout::split ? FloorMessage::kSize : 0;
    auto* ping =
        reinterpret_cast<std::uint64_t*>(static_cast<std::byte*>(line_region.data()) + first);
    // Two lines: pong half a page away, out of the pair of lines an
    // adjacent-line prefetcher fetches together.
    auto* pong = shape == FloorShape::one_line ? ping : ping + 2048 / sizeof(std::uint64_t);
    *ping = 0;
    *pong = 0;

    Team team(*control, /*separate_processes=*/true);
    team.spawn(0, g_cpus[1], [&] {
      Spinner spinner(*control, share_cores(g_cpus, 2));
      control->agents[0].state.store(kReady, std::memory_order_release);
      FloorMessage m(layout);
      if (!floor_echo(*control, 0, ping, pong, spinner, messages ? &m : nullptr)) return;
      control->agents[0].state.store(kFinished, std::memory_order_release);
    });
    Spinner spinner(*control, share_cores(g_cpus, 2), [&] { return team.children_alive(); });
    if (!team.wait_all(kReady, 20s)) {
      const std::string why = team.first_error();
      team.stop();
      fail_benchmark(state, why.empty() ? "peer did not get ready" : why);
      return;
    }

    LatencyRecorder recorder(static_cast<std::uint64_t>(state.max_iterations));
    const TickCalibration calibration;
    FloorMessage m(layout);
    std::uint64_t v = 0;
    bool ok = true;
    recorder.start();
    for (auto _ : state) {
      if (!ok) continue;
      ok = floor_round_trip(ping, pong, v, spinner, messages ? &m : nullptr);
      recorder.lap();
    }
    const double ns_per_tick = calibration.ns_per_tick();
    atomic::store_release(ping, kStopTag);
    const bool finished = ok && team.wait_all(kFinished, 10s);
    const std::string problem = team.stop();
    std::string why = team.first_error();
    if (why.empty() && !problem.empty()) why = problem;
    if (why.empty() && !ok) why = messages ? "no reply, or a damaged one" : "no reply";
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
        Spinner spinner(*control, share_cores(g_cpus, 2));
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
      Spinner spinner(*control, share_cores(g_cpus, 2), [&] { return team.children_alive(); });
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
    const bool share = share_cores(g_cpus, 2);

    Team team(*control, /*separate_processes=*/true);
    team.spawn(0, consumer_cpu(g_cpus, 0), [&] {
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

// The baseline rings in the same harness as shmring's MPMC ring, built from
// `args`: plain_mpmc/<placement>/<P>x<P>/copy/64B (plain_mpmc_ring.hpp) and
// plain_lanes/... (plain_lanes_ring.hpp, a lane per producer).
template <class Ring, class... Args>
void run_baseline(benchmark::State& state, const ThroughputShape& c, Args... args) {
  try {
    Ring ring(args...);
    if (const std::string why = run_throughput(state, c, ring, g_cpus); !why.empty()) {
      fail_benchmark(state, why);
    }
  } catch (const std::exception& e) {
    fail_benchmark(state, e.what());
  }
}
void bm_plain_mpmc_throughput(benchmark::State& state, ThroughputShape c) {
  run_baseline<PlainMpmcRing>(state, c, c.capacity, c.size);
}
void bm_plain_lanes_throughput(benchmark::State& state, ThroughputShape c) {
  run_baseline<PlainLanesRing>(state, c, c.producers, c.capacity, c.size);
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

// mpmc_lanes/...: an MPMC ring of a lane per producer (`lanes`, owned),
// each of the slots a ring of one shared lane has, as the lanes baseline's.
// .../copy_ahead<N>/...: consumers that read ahead N messages a claim.
constexpr std::size_t kReadAhead = 16;
void register_throughput(RingKind kind, bool processes, Api api, std::size_t size,
                         unsigned producers, unsigned consumers, std::uint32_t lanes = 0,
                         std::size_t read_ahead = 1) {
  const ThroughputShape c{processes, api,       size,  capacity_for(size),
                          producers, consumers, lanes, read_ahead};
  std::string name = std::string(to_string(kind)) + (lanes != 0 ? "_lanes" : "") + "/" +
                     (processes ? "process" : "thread") + "/";
  if (kind == RingKind::mpmc) {
    name += std::to_string(producers) + "x" + std::to_string(consumers) + "/";
  }
  name += std::string(api_name(api));
  if (read_ahead != 1) name += "_ahead" + std::to_string(read_ahead);
  name += "/" + size_name(size);
  benchmark::internal::Benchmark* b =
      kind == RingKind::spsc
          ? benchmark::RegisterBenchmark(name.c_str(), bm_throughput<RingKind::spsc>, c)
          : benchmark::RegisterBenchmark(name.c_str(), bm_throughput<RingKind::mpmc>, c);
  b->UseManualTime();
}

void register_all() {
  // Latency, with its floor first.
  benchmark::RegisterBenchmark("floor/cacheline_pingpong/process", bm_floor, FloorShape::one_line)
      ->UseRealTime();
  benchmark::RegisterBenchmark("floor/two_lines/process", bm_floor, FloorShape::two_lines)
      ->UseRealTime();
  benchmark::RegisterBenchmark("floor/messages_64B/process", bm_floor, FloorShape::messages)
      ->UseRealTime();
  benchmark::RegisterBenchmark("floor/split_messages_64B/process", bm_floor,
                               FloorShape::split_messages)
      ->UseRealTime();
  benchmark::RegisterBenchmark("floor/touched_messages_64B/process", bm_floor,
                               FloorShape::touched_messages)
      ->UseRealTime();
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
  const std::vector<unsigned> counts = pair_counts(g_cpus);
  const std::size_t mpmc_sizes[] = {8, 64, 4096, 64 << 10};
  for (const unsigned pairs : counts) {
    for (const std::size_t size : mpmc_sizes) {
      for (const bool processes : {false, true}) {
        for (const Api api : {Api::copy, Api::batch}) {
          register_throughput(RingKind::mpmc, processes, api, size, pairs, pairs);
        }
      }
    }
  }
  // The baselines beside them, at 64 B: the plain MPMC ring, and the lanes
  // from 2 producers on (with one they are the plain MPMC ring less the
  // producers' CAS).
  struct Baseline {
    const char* prefix;
    void (*bm)(benchmark::State&, ThroughputShape);
    unsigned min_pairs;
  };
  for (const Baseline& b : {Baseline{"plain_mpmc/", bm_plain_mpmc_throughput, 1},
                            Baseline{"plain_lanes/", bm_plain_lanes_throughput, 2}}) {
    for (const unsigned pairs : counts) {
      if (pairs < b.min_pairs) continue;
      for (const bool processes : {false, true}) {
        const ThroughputShape c{processes, Api::copy, 64, capacity_for(64), pairs, pairs};
        const std::string name = b.prefix + std::string(processes ? "process" : "thread") + "/" +
                                 std::to_string(pairs) + "x" + std::to_string(pairs) + "/copy/64B";
        benchmark::RegisterBenchmark(name.c_str(), b.bm, c)->UseManualTime();
      }
    }
  }
  // shmring's MPMC ring in lanes, beside the lanes baseline: a lane per
  // producer (1x1: one producer feeding the consumers, against SPSC).
  for (const unsigned pairs : counts) {
    for (const bool processes : {false, true}) {
      for (const Api api : {Api::copy, Api::batch}) {
        register_throughput(RingKind::mpmc, processes, api, 64, pairs, pairs, pairs);
      }
      // Consumers reading ahead 16 messages a claim, in one shared lane and
      // in lanes, one message a call.
      for (const std::uint32_t lanes : {0u, pairs}) {
        register_throughput(RingKind::mpmc, processes, Api::copy, 64, pairs, pairs, lanes,
                            kReadAhead);
      }
    }
  }
  // The rest of the producer x consumer grid, at 64 B: every pair of the
  // counts above (1x2 and 2x1 even on two cores, to see contention on one
  // side alone; up to 8x8 with 16 cores).
  for (const unsigned producers : counts) {
    for (const unsigned consumers : counts) {
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
  peers::register_fanout_floor_benchmarks();
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
