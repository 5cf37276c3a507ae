#include <sched.h>
#include <sys/epoll.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cinttypes>
#include <cstring>
#include <cuda/atomic>
#include <exception>
#include <stdexcept>
#include <thread>

#include "kernels.cuh"
#include "measurements.hpp"
#include "messages.cuh"
#include "shmring/cuda/gpu_ring.hpp"
#include "shmring/cuda/registration.hpp"

namespace gpu_bench {

namespace {

double median(std::vector<double> v) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

struct Percentiles {
  double median = 0, p99 = 0, min = 0, mean = 0;
};
Percentiles percentiles(std::vector<std::int64_t> v) {
  Percentiles p;
  if (v.empty()) return p;
  std::sort(v.begin(), v.end());
  p.median = static_cast<double>(v[v.size() / 2]);
  p.p99 = static_cast<double>(v[std::min(v.size() - 1, v.size() * 99 / 100)]);
  p.min = static_cast<double>(v.front());
  double s = 0;
  for (const auto x : v) s += static_cast<double>(x);
  p.mean = s / static_cast<double>(v.size());
  return p;
}

// Times a kernel launch with events; returns seconds.
template <class Launch>
double timed(Launch&& launch) {
  cudaEvent_t a, b;
  cuda_ok(cudaEventCreate(&a), "cudaEventCreate");
  cuda_ok(cudaEventCreate(&b), "cudaEventCreate");
  cuda_ok(cudaEventRecord(a), "cudaEventRecord");
  launch();
  cuda_ok(cudaGetLastError(), "kernel launch");
  cuda_ok(cudaEventRecord(b), "cudaEventRecord");
  cuda_ok(cudaEventSynchronize(b), "kernel");
  float ms = 0;
  cuda_ok(cudaEventElapsedTime(&ms, a, b), "cudaEventElapsedTime");
  cudaEventDestroy(a);
  cudaEventDestroy(b);
  return ms / 1e3;
}

}  // namespace

namespace {

// One way to run the flag ping-pong. The study runs each in turn, several
// times interleaved, because the same two agents exchanging one word read
// 1.6x apart in the median depending on how they were set up.
struct FlagSetup {
  std::string name;
  bool pinned = false;      // the CPU side on ctx.cpu_host, else free on every allowed core
  bool pause = false;       // a pause instruction between the CPU's looks
  unsigned threads = 1;     // block size of the kernel launch
  bool big_region = false;  // the flag at the start of the ceiling region, else in its own page
  bool two_lines = false;   // the reply on a line of its own
  bool candidate = true;    // may be the ceiling (not a study of the slot format's cost)
  FlagKernel kernel;        // how the kernel polls (kernels.cuh)
};

std::vector<FlagSetup> flag_setups() {
  std::vector<FlagSetup> v;
  FlagSetup tight;  // the minimal ping-pong: nothing between the two loads
  tight.name = "tight: own page, 1 thread, CPU spins without pause, unpinned";
  v.push_back(tight);
  FlagSetup x = tight;
  x.name = "tight, CPU pinned to a GPU-local core";
  x.pinned = true;
  v.push_back(x);
  x = tight;
  x.name = "tight + pause in the CPU loop";
  x.pause = true;
  v.push_back(x);
  x = tight;
  x.name = "tight + 32-thread launch";
  x.threads = 32;
  v.push_back(x);
  x = tight;
  x.name = "tight + flag in the 256 MiB region";
  x.big_region = true;
  v.push_back(x);
  x = tight;
  x.name = "tight + kernel clock look every 256 polls";
  x.kernel.check_mask = 255;
  v.push_back(x);
  x = tight;
  x.name = "tight, reply on its own line";
  x.two_lines = true;
  v.push_back(x);
  x = tight;
  x.name = "the former ceiling: pinned, pause, 32 threads, region, clock/256";
  x.pinned = x.pause = x.big_region = true;
  x.threads = 32;
  x.kernel.check_mask = 255;
  v.push_back(x);
  x = tight;
  x.name = "tight, relaxed polls and one acquire fence";
  x.kernel.relaxed = true;
  v.push_back(x);
  for (const std::uint32_t d : {250u, 500u, 750u, 1000u, 1500u}) {
    x = tight;
    x.name = "tight, kernel polls again " + std::to_string(d) + " ns after its answer";
    x.kernel.reply_delay_ns = d;
    v.push_back(x);
    x.name += ", relaxed polls";
    x.kernel.relaxed = true;
    v.push_back(x);
  }
  // The plain slot format's structure (kernels.cuh): not ceilings, but the
  // floor its round trip cannot go under, each part measured on its own.
  x = tight;
  x.candidate = false;
  x.kernel.read_payload = true;
  x.name = "plain-slot structure: tight + a dependent read of a second line";
  v.push_back(x);
  x.kernel.read_payload = false;
  x.kernel.write_payload = true;
  x.name = "plain-slot structure: tight + a store to a second line before the answer";
  v.push_back(x);
  x.kernel.read_payload = true;
  x.name = "plain-slot structure: both";
  v.push_back(x);
  for (const unsigned k : {2u, 4u}) {
    x = tight;
    x.name = "tight, " + std::to_string(k) + " kernel warps polling";
    x.kernel.pollers = k;
    x.threads = 32 * k;
    v.push_back(x);
    x.name += ", relaxed, staggered";
    x.kernel.relaxed = true;
    x.kernel.stagger_ns = 1200 / k;
    v.push_back(x);
  }
  return v;
}

// Round-trip samples (ns) of one run of `setup`; throws on a failure.
std::vector<std::int64_t> flag_run(Context& ctx, const FlagSetup& setup, std::uint64_t* host,
                                   std::uint64_t* dev, std::uint64_t warmup, std::uint64_t rounds) {
  std::uint64_t* reply_host = setup.two_lines ? host + 8 : host;
  std::uint64_t* reply_dev = setup.two_lines ? dev + 8 : dev;
  sr::atomic::store_release(host, std::uint64_t{0});
  sr::atomic::store_release(reply_host, std::uint64_t{0});
  sr::atomic::store_release(host + kPayloadWord, std::uint64_t{0});
  sr::atomic::store_release(reply_host + kPayloadWord + 8, std::uint64_t{0});
  ctx.reset_result();
  const std::uint64_t total = warmup + rounds;
  flag_echo_kernel<<<1, setup.threads>>>(dev, reply_dev, total, setup.kernel, ctx.timeout_ns(),
                                         ctx.result);
  cuda_ok(cudaGetLastError(), "flag kernel launch");
  std::vector<std::int64_t> samples;
  samples.reserve(rounds);
  std::string failure;
  // A thread of its own, so that "unpinned" is not this pinned thread.
  std::thread cpu([&] {
    if (setup.pinned) {
      pin_to(ctx.cpu_host);
    } else {
      cpu_set_t set;
      CPU_ZERO(&set);
      for (const int c : allowed_cpus()) CPU_SET(c, &set);
      sched_setaffinity(0, sizeof set, &set);
    }
    const auto limit = static_cast<std::int64_t>(ctx.opt.timeout_s * 1e9);
    for (std::uint64_t i = 1; i <= total; ++i) {
      const std::int64_t a = now_ns();
      if (setup.kernel.read_payload) sr::atomic::store_relaxed(host + kPayloadWord, i);
      sr::atomic::store_release(host, 2 * i - 1);
      std::uint32_t looks = 0;
      bool late = false;
      while (sr::atomic::load_acquire(reply_host) != 2 * i) {
        if (setup.pause) sr::atomic::cpu_relax();
        if ((++looks & 0xffffu) == 0 && now_ns() - a > limit) {
          late = true;
          break;
        }
      }
      const std::int64_t b = now_ns();
      if (late) {
        failure = "no answer from the kernel";
        break;
      }
      if (setup.kernel.write_payload &&
          sr::atomic::load_relaxed(reply_host + kPayloadWord + 8) != 2 * i - 1) {
        failure = "the answer's payload word arrived after its flag";
        break;
      }
      if (i > warmup) samples.push_back(b - a);
    }
  });
  cpu.join();
  cuda_ok(cudaDeviceSynchronize(), "flag kernel");
  const KernelResult kr = ctx.read_result();
  if (failure.empty() && kr.status != 0)
    failure = std::string("kernel: ") + sr::to_string(static_cast<sr::Status>(kr.status));
  if (!failure.empty()) throw std::runtime_error("flag ping-pong (" + setup.name + "): " + failure);
  return samples;
}

// Every setup `reps` times, interleaved; the ceiling is the variant with one
// poller whose median of run medians is lowest (several pollers are reported
// but are not what a ring consumer does: one thread or warp polls a slot).
void flag_study(Context& ctx, Ceilings& c, std::uint64_t* region_host, std::uint64_t* region_dev) {
  const Options& o = ctx.opt;
  const std::string name = segment_name("flag");
  sr::CreateOptions co;
  co.capacity = 1;
  co.slot_size = 4096;
  const sr::Segment seg = sr::Segment::create(name, co);
  Unlink unlink{name};
  const sc::Registration reg = sc::Registration::register_segment(seg, ctx.dev.id);
  const std::uint64_t offset = seg.geometry().slots_offset;
  auto* page_host = reinterpret_cast<std::uint64_t*>(seg.base() + offset);
  auto* page_dev = reinterpret_cast<std::uint64_t*>(reg.device_pointer() + offset);

  const std::vector<FlagSetup> setups = flag_setups();
  std::vector<std::vector<double>> medians(setups.size());
  std::vector<std::vector<std::int64_t>> all(setups.size());
  const unsigned reps = std::max(1u, o.flag_reps);
  const std::uint64_t per_run = std::max<std::uint64_t>(1, o.rtt_rounds / reps);
  try {
    for (unsigned rep = 0; rep < reps; ++rep) {
      for (std::size_t k = 0; k < setups.size(); ++k) {
        const FlagSetup& s = setups[k];
        std::vector<std::int64_t> v =
            flag_run(ctx, s, s.big_region ? region_host : page_host,
                     s.big_region ? region_dev : page_dev, o.rtt_warmup / reps + 10, per_run);
        medians[k].push_back(percentiles(v).median);
        all[k].insert(all[k].end(), v.begin(), v.end());
      }
    }
  } catch (const std::exception& e) {
    c.failures.push_back(e.what());
    return;
  }
  std::size_t best = 0;
  for (std::size_t k = 0; k < setups.size(); ++k) {
    FlagVariant fv;
    fv.name = setups[k].name;
    fv.pollers = setups[k].kernel.pollers;
    fv.pinned = setups[k].pinned;
    const Percentiles p = percentiles(all[k]);
    fv.median_ns = median(medians[k]);
    fv.run_min_ns = *std::min_element(medians[k].begin(), medians[k].end());
    fv.run_max_ns = *std::max_element(medians[k].begin(), medians[k].end());
    fv.p99_ns = p.p99;
    fv.min_ns = p.min;
    fv.rounds = all[k].size();
    c.flag_variants.push_back(fv);
    fv.candidate = setups[k].candidate;
    if (setups[k].candidate && setups[k].kernel.pollers == 1 &&
        fv.median_ns < c.flag_variants[best].median_ns)
      best = k;
    if (setups[k].kernel.read_payload && setups[k].kernel.write_payload)
      c.plain_structure_median_ns = fv.median_ns;
    progress("ceilings: flag ping-pong, %s: median %.2f us (runs %.2f-%.2f), p99 %.2f, min %.2f",
             fv.name.c_str(), fv.median_ns / 1e3, fv.run_min_ns / 1e3, fv.run_max_ns / 1e3,
             fv.p99_ns / 1e3, fv.min_ns / 1e3);
  }
  const FlagVariant& b = c.flag_variants[best];
  c.flag_ceiling = b.name;
  c.flag_median_ns = b.median_ns;
  c.flag_p99_ns = b.p99_ns;
  c.flag_min_ns = b.min_ns;
  c.flag_rounds = b.rounds;
  progress("ceilings: flag ping-pong ceiling (%s) median %.2f us, p99 %.2f us", b.name.c_str(),
           b.median_ns / 1e3, b.p99_ns / 1e3);
}

}  // namespace

Ceilings measure_ceilings(Context& ctx) {
  Ceilings c;
  const Options& o = ctx.opt;
  const std::uint64_t bytes = o.ceiling_bytes / 16 * 16;
  const std::uint64_t vectors = bytes / 16;
  const std::uint64_t one_block_vectors = std::min(o.one_block_ceiling_bytes, bytes) / 16;
  const std::string name = segment_name("ceiling");
  sr::CreateOptions co;
  co.capacity = pow2_floor(std::max<std::uint64_t>(1, bytes / MiB));
  if (co.capacity * MiB < bytes) co.capacity *= 2;
  co.slot_size = MiB;  // the slot area, one stretch of co.capacity MiB and a bit, is the region
  const sr::Segment seg = sr::Segment::create(name, co);
  Unlink unlink{name};
  const std::uint64_t offset = seg.geometry().slots_offset;
  const std::int64_t t0 = now_ns();
  const sc::Registration reg = sc::Registration::register_segment(seg, ctx.dev.id);
  c.register_ms = static_cast<double>(now_ns() - t0) / 1e6;
  auto* host = reinterpret_cast<std::uint64_t*>(seg.base() + offset);
  auto* dev = reinterpret_cast<ulonglong2*>(reg.device_pointer() + offset);
  const int blocks = ctx.dev.prop.multiProcessorCount * 4;
  const int threads = 512;
  progress("ceilings: %s registered in %.0f ms", human_bytes(bytes).c_str(), c.register_ms);

  auto verify_stores = [&](std::uint64_t n_vectors, std::uint64_t salt) {
    std::uint64_t bad = 0;
    for (std::uint64_t w = 0; w < 2 * n_vectors; ++w) bad += host[w] != (w ^ salt);
    return bad;
  };
  // GB/s of `bytes`: the median of ceiling_reps timed runs after a warm-up.
  auto median_gbps = [&](std::uint64_t n_bytes, auto&& run) {
    std::vector<double> v;
    for (unsigned rep = 0; rep < o.ceiling_reps + 1; ++rep) {
      const double s = run(rep);
      if (rep != 0) v.push_back(static_cast<double>(n_bytes) / s / 1e9);
    }
    return median(v);
  };
  // Stores, whole grid and one block.
  std::vector<double> gbps;
  std::uint64_t salt = 0;
  c.store_gbps = median_gbps(bytes, [&](unsigned rep) {
    salt = 0x1234567800000000ull + rep;
    return timed([&] { store_kernel<<<blocks, threads>>>(dev, vectors, salt); });
  });
  c.errors += verify_stores(vectors, salt);
  for (unsigned rep = 0; rep < 2; ++rep) {
    salt = 0xABCDEF0000000000ull + rep;
    const double s =
        timed([&] { store_kernel<<<1, o.gpu_threads>>>(dev, one_block_vectors, salt); });
    gbps.push_back(static_cast<double>(one_block_vectors * 16) / s / 1e9);
  }
  c.errors += verify_stores(one_block_vectors, salt);
  c.store_1block_gbps = *std::max_element(gbps.begin(), gbps.end());
  if (o.diagnose) {  // one block, the region shifted off its 128-byte lines
    for (const unsigned shift : {1u, 4u}) {
      double best = 0;
      for (unsigned rep = 0; rep < 2; ++rep) {
        const double s = timed([&] {
          store_kernel<<<1, o.gpu_threads>>>(dev + shift, one_block_vectors - shift, salt);
        });
        best = std::max(best, static_cast<double>((one_block_vectors - shift) * 16) / s / 1e9);
      }
      c.diagnosis.push_back({"kernel stores, one block, region starting " +
                                 std::to_string(16 * shift) + " bytes into a 128-byte line",
                             best});
    }
  }
  progress("ceilings: kernel stores %.1f GB/s (one block %.1f GB/s)", c.store_gbps,
           c.store_1block_gbps);

  // Loads: the CPU writes a pattern and its sum; the kernel sums it back.
  unsigned long long expect = 0, expect_1block = 0;
  for (std::uint64_t w = 0; w < 2 * vectors; ++w) {
    host[w] = pattern_word(w);
    expect += host[w];
    if (w + 1 == 2 * one_block_vectors) expect_1block = expect;
  }
  // One timed run of a kernel that sums into ctx.scratch, its sum checked.
  auto timed_sum = [&](auto&& launch, unsigned long long want) {
    cuda_ok(cudaMemset(ctx.scratch, 0, 8), "cudaMemset");
    const double s = timed(launch);
    unsigned long long got = 0;
    cuda_ok(cudaMemcpy(&got, ctx.scratch, 8, cudaMemcpyDeviceToHost), "cudaMemcpy");
    c.errors += got != want;
    return s;
  };
  c.load_gbps = median_gbps(bytes, [&](unsigned) {
    return timed_sum([&] { load_sum_kernel<8><<<blocks, threads>>>(dev, vectors, ctx.scratch); },
                     expect);
  });
  // One block: the best of two runs.
  auto one_block = [&](auto kernel, unsigned block_threads) {
    double best = 0;
    for (unsigned rep = 0; rep < 2; ++rep) {
      const double s =
          timed_sum([&] { kernel<<<1, block_threads>>>(dev, one_block_vectors, ctx.scratch); },
                    expect_1block);
      best = std::max(best, static_cast<double>(one_block_vectors * 16) / s / 1e9);
    }
    return best;
  };
  c.load_1block_gbps = one_block(load_sum_kernel<8>, o.gpu_threads);
  if (o.diagnose) {
    c.diagnosis.push_back({"kernel loads, one block, 4 in flight x 1024 threads",
                           one_block(load_sum_kernel<4>, 1024)});
    c.diagnosis.push_back({"kernel loads, one block, 8 in flight x 1024 threads",
                           one_block(load_sum_kernel<8>, 1024)});
    c.diagnosis.push_back({"kernel loads, one block, 16 in flight x 512 threads",
                           one_block(load_sum_kernel<16>, 512)});
    for (const auto& [what, v] : c.diagnosis) progress("ceilings: %s: %.1f GB/s", what.c_str(), v);
  }
  progress("ceilings: kernel loads %.1f GB/s (one block %.1f GB/s)", c.load_gbps,
           c.load_1block_gbps);

  // cudaMemcpy: H2D of the pattern (checked by a device sum), D2H back into
  // the cleared region (checked by the CPU).
  void* dbuf = nullptr;
  cuda_ok(cudaMalloc(&dbuf, bytes), "cudaMalloc");
  c.h2d_gbps = median_gbps(bytes, [&](unsigned) {
    return timed([&] {
      cuda_ok(cudaMemcpyAsync(dbuf, host, bytes, cudaMemcpyHostToDevice), "cudaMemcpy H2D");
    });
  });
  (void)timed_sum(
      [&] {
        load_sum_kernel<8>
            <<<blocks, threads>>>(static_cast<const ulonglong2*>(dbuf), vectors, ctx.scratch);
      },
      expect);
  std::memset(host, 0, bytes);
  c.d2h_gbps = median_gbps(bytes, [&](unsigned) {
    return timed([&] {
      cuda_ok(cudaMemcpyAsync(host, dbuf, bytes, cudaMemcpyDeviceToHost), "cudaMemcpy D2H");
    });
  });
  unsigned long long back = 0;
  for (std::uint64_t w = 0; w < 2 * vectors; ++w) back += host[w];
  c.errors += back != expect;
  cudaFree(dbuf);
  progress("ceilings: cudaMemcpy H2D %.1f GB/s, D2H %.1f GB/s", c.h2d_gbps, c.d2h_gbps);

  flag_study(ctx, c, host, reinterpret_cast<std::uint64_t*>(dev));
  if (c.errors != 0)
    c.failures.push_back(std::to_string(c.errors) + " ceiling verification errors");
  c.measured = true;
  return c;
}

namespace {

struct RingShape {
  std::uint64_t capacity, gpu_batch, gpu_peek, cpu_batch, cpu_peek;
};

RingShape ring_shape(const Options& o, std::uint64_t size) {
  sr::Geometry g;
  sr::compute_geometry(sr::RingKind::spsc, 1, size, g);
  RingShape s;
  s.capacity = clamp_u64(pow2_floor(std::max<std::uint64_t>(1, o.ring_bytes / g.slot_stride)), 4,
                         std::max<std::uint64_t>(4, o.max_capacity));
  s.gpu_batch = clamp_u64(o.gpu_claim_bytes / size, 1, std::min(o.max_gpu_claim, s.capacity / 4));
  s.gpu_peek = clamp_u64(o.gpu_peek_bytes / size, 1, std::min(o.max_gpu_peek, s.capacity / 2));
  s.cpu_batch = clamp_u64(o.cpu_batch_bytes / size, 1, s.capacity / 4);
  s.cpu_peek = clamp_u64(o.cpu_batch_bytes / size, 1, s.capacity / 4);
  return s;
}

// host_frame(size), copied once to device memory, where GPU producers
// copy their messages from.
struct DeviceFrame {
  unsigned char* device = nullptr;
  explicit DeviceFrame(std::uint64_t size) {
    const std::vector<unsigned char> frame = host_frame(size);
    cuda_ok(cudaMalloc(&device, size), "cudaMalloc frame");
    cuda_ok(cudaMemcpy(device, frame.data(), size, cudaMemcpyHostToDevice), "cudaMemcpy frame");
  }
  DeviceFrame(const DeviceFrame&) = delete;
  DeviceFrame& operator=(const DeviceFrame&) = delete;
  ~DeviceFrame() { cudaFree(device); }
};

// The ring of a throughput run, as the run's shape says.
sr::Segment ring_segment(const std::string& name, const RingShape& shape, std::uint64_t size,
                         std::uint32_t subscribers = 0) {
  sr::CreateOptions co;
  if (subscribers != 0) {
    co.kind = sr::RingKind::broadcast;
    co.subscribers = subscribers;
  }
  co.capacity = shape.capacity;
  co.slot_size = size;
  return sr::Segment::create(name, co);
}

// A CPU agent's job on ring `name`: every message of the run, checked as
// the options say.
AgentJob ring_job(const Context& ctx, JobKind kind, int cpu, const std::string& name,
                  std::uint64_t messages, std::uint64_t size, std::uint64_t batch) {
  const Options& o = ctx.opt;
  AgentJob job;
  job.kind = kind;
  job.cpu = cpu;
  std::snprintf(job.segment, sizeof job.segment, "%s", name.c_str());
  job.messages = messages;
  job.size = size;
  job.batch = batch;
  job.deep_every = std::max<std::uint64_t>(1, o.deep_bytes / size);
  job.check = o.cpu_check ? 1 : 0;
  job.prefetch = static_cast<std::uint32_t>(o.cpu_prefetch);
  job.timeout_s = o.timeout_s;
  return job;
}

// What went wrong in a run, from the kernel's result and the CPU agents':
// the first problem, or "" when every side moved all `messages`.
std::string run_failure(const char* gpu_side, const KernelResult& kr,
                        const std::vector<AgentResult>& agents, std::uint64_t messages) {
  if (kr.status != 0) {
    return std::string(gpu_side) + ": " + sr::to_string(static_cast<sr::Status>(kr.status));
  }
  for (const AgentResult& ar : agents) {
    if (!ar.ok) return ar.failure;
  }
  bool all = kr.messages == messages;
  for (const AgentResult& ar : agents) all = all && ar.messages == messages;
  return all ? std::string() : std::string("message count mismatch");
}

const char* producer_label(ProducerKind kind, std::uint64_t size) {
  switch (kind) {
    case ProducerKind::library:
      return size <= kFlatFillMax ? "block_claim, fill, block_commit"
                                  : "block_claim, group_copy, block_commit";
    case ProducerKind::staged_copy:
      return "block_claim, staged copy (local), block_commit";
    case ProducerKind::minimal:
      return "minimal: parallel lengths, one fence per thread";
  }
  return "?";
}

}  // namespace

Throughput measure_gpu_to_cpu(Context& ctx, std::uint64_t size, ProducerKind kind) {
  const Options& o = ctx.opt;
  const RingShape shape = ring_shape(o, size);
  Throughput t;
  t.direction = "gpu_to_cpu";
  t.method = producer_label(kind, size);
  t.library = kind == ProducerKind::library;
  if (!o.cpu_check) {
    t.cpu_writes = "- (CPU checks nothing: diagnosis)";
    t.library = false;
  }
  t.cpu_writes = "-";
  t.size = size;
  t.capacity = shape.capacity;
  t.gpu_batch = shape.gpu_batch;
  t.cpu_batch = shape.cpu_peek;
  t.messages = std::max<std::uint64_t>(1, o.volume / size);

  const DeviceFrame frame(size);
  const unsigned char* dframe = frame.device;
  for (unsigned rep = 0; rep < o.reps && t.failure.empty(); ++rep) {
    try {
      const std::string name = segment_name("g2c");
      const sr::Segment seg = ring_segment(name, shape, size);
      Unlink unlink{name};
      const std::uint32_t n = ctx.agent->post(
          ring_job(ctx, JobKind::consume, ctx.cpu_agent, name, t.messages, size, shape.cpu_peek));
      ctx.agent->wait_attached(n, o.timeout_s);
      const sc::Registration reg = sc::Registration::register_segment(seg, ctx.dev.id);
      const sc::GpuSpscProducer tx = sc::GpuSpscProducer::attach(seg, reg);
      ctx.reset_result();
      const std::int64_t t_go = now_ns();
      const auto s32 = static_cast<std::uint32_t>(size);
      const auto b32 = static_cast<std::uint32_t>(shape.gpu_batch);
      const unsigned threads = o.gpu_threads;
      const std::uint64_t tmo = ctx.timeout_ns();
      switch (kind) {
        case ProducerKind::library:
          produce_kernel<false>
              <<<1, threads>>>(tx.ref(), t.messages, s32, b32, dframe, tmo, ctx.result);
          break;
        case ProducerKind::staged_copy:
          produce_kernel<true>
              <<<1, threads>>>(tx.ref(), t.messages, s32, b32, dframe, tmo, ctx.result);
          break;
        case ProducerKind::minimal:
          produce_minimal_kernel<<<1, threads>>>(tx.ref(), t.messages, s32, b32, tmo, ctx.result);
          break;
      }
      cuda_ok(cudaGetLastError(), "producer launch");
      cuda_ok(cudaDeviceSynchronize(), "producer kernel");
      const KernelResult kr = ctx.read_result();
      const AgentResult ar = ctx.agent->wait_finished(n, o.timeout_s + 60);
      t.failure = run_failure("GPU producer", kr, {ar}, t.messages);
      t.errors += ar.errors;
      t.deep_checked += ar.deep_checked;
      if (t.failure.empty()) t.seconds.push_back(static_cast<double>(ar.t_end - t_go) / 1e9);
    } catch (const std::exception& e) {
      t.failure = e.what();
    }
  }
  return t;
}

// A GPU producer (the library's block path) publishing to k CPU subscriber
// processes of a reliable broadcast ring, each checking every message as the
// GPU -> CPU consumer does. Time: from the launch until the last subscriber
// has checked the last message; GB/s: what the producer published.
Throughput measure_broadcast(Context& ctx, std::uint64_t size, std::uint64_t k) {
  const Options& o = ctx.opt;
  const RingShape shape = ring_shape(o, size);
  Throughput t;
  t.direction = "gpu_to_cpu";
  t.method = "broadcast, block_claim, group_copy, block_commit -> " + std::to_string(k) +
             (k == 1 ? " subscriber" : " subscribers");
  t.cpu_writes = "-";
  t.size = size;
  t.capacity = shape.capacity;
  t.gpu_batch = shape.gpu_batch;
  t.cpu_batch = shape.cpu_peek;
  t.messages = std::max<std::uint64_t>(1, o.volume / size / 4);
  std::vector<Agent*> agents{ctx.agent};
  for (std::uint64_t i = 1; i < k && i - 1 < ctx.subscribers->size(); ++i) {
    agents.push_back(&(*ctx.subscribers)[i - 1]);
  }
  if (agents.size() != k) {
    t.failure = "not enough subscriber agents";
    return t;
  }
  const DeviceFrame frame(size);
  const unsigned char* dframe = frame.device;
  for (unsigned rep = 0; rep < o.reps && t.failure.empty(); ++rep) {
    try {
      const std::string name = segment_name("bcast");
      const sr::Segment seg = ring_segment(name, shape, size, static_cast<std::uint32_t>(k));
      Unlink unlink{name};
      std::vector<std::uint32_t> jobs;
      for (std::size_t i = 0; i < agents.size(); ++i) {
        const int cpu = i == 0 ? ctx.cpu_agent : ctx.subscriber_cpus[i - 1];
        jobs.push_back(agents[i]->post(
            ring_job(ctx, JobKind::subscribe, cpu, name, t.messages, size, shape.cpu_peek)));
      }
      for (std::size_t i = 0; i < agents.size(); ++i)
        agents[i]->wait_attached(jobs[i], o.timeout_s);
      const sc::Registration reg = sc::Registration::register_segment(seg, ctx.dev.id);
      const sc::GpuBroadcastProducer tx = sc::GpuBroadcastProducer::attach(seg, reg);
      ctx.reset_result();
      const std::int64_t t_go = now_ns();
      produce_kernel<false, sc::BroadcastDeviceProducer><<<1, o.gpu_threads>>>(
          tx.ref(), t.messages, static_cast<std::uint32_t>(size),
          static_cast<std::uint32_t>(shape.gpu_batch), dframe, ctx.timeout_ns(), ctx.result);
      cuda_ok(cudaGetLastError(), "producer launch");
      cuda_ok(cudaDeviceSynchronize(), "producer kernel");
      const KernelResult kr = ctx.read_result();
      std::int64_t t_end = 0;
      std::vector<AgentResult> results;
      for (std::size_t i = 0; i < agents.size(); ++i) {
        const AgentResult& ar =
            results.emplace_back(agents[i]->wait_finished(jobs[i], o.timeout_s + 60));
        t.errors += ar.errors;
        t.deep_checked += ar.deep_checked;
        t_end = std::max(t_end, ar.t_end);
      }
      t.failure = run_failure("GPU producer", kr, results, t.messages);
      if (t.failure.empty()) t.seconds.push_back(static_cast<double>(t_end - t_go) / 1e9);
    } catch (const std::exception& e) {
      t.failure = e.what();
    }
  }
  return t;
}

Throughput measure_cpu_to_gpu(Context& ctx, std::uint64_t size, bool write_full, unsigned blocks) {
  const Options& o = ctx.opt;
  const RingShape shape = ring_shape(o, size);
  Throughput t;
  t.direction = "cpu_to_gpu";
  t.method = blocks > 1
                 ? "GridReader, " + std::to_string(blocks) + " blocks: next, read all, release"
                 : "block_peek, read all, block_release";
  t.cpu_writes = size == 64 || write_full ? "every byte" : "stamps (24 B)";
  t.size = size;
  t.capacity = shape.capacity;
  // A grid: room for two batches per block, so every block has one to read
  // while the producer fills the next.
  const std::uint64_t grid_batch =
      std::max<std::uint64_t>(1, std::min(shape.gpu_peek, shape.capacity / (2 * blocks)));
  t.gpu_batch = blocks > 1 ? grid_batch : shape.gpu_peek;
  t.cpu_batch = shape.cpu_batch;
  t.messages = std::max<std::uint64_t>(1, o.volume / size);
  const std::vector<unsigned char> frame = host_frame(size);
  for (unsigned rep = 0; rep < o.reps && t.failure.empty(); ++rep) {
    try {
      const std::string name = segment_name("c2g");
      const sr::Segment seg = ring_segment(name, shape, size);
      Unlink unlink{name};
      // Every slot starts with the pattern, so a producer that writes only
      // the stamps still hands over complete messages.
      const sr::RingView view(seg.base(), seg.geometry());
      for (std::uint64_t s = 0; s < shape.capacity; ++s)
        std::memcpy(view.payload(s), frame.data(), size);
      AgentJob job =
          ring_job(ctx, JobKind::produce, ctx.cpu_agent, name, t.messages, size, shape.cpu_batch);
      job.write_full = write_full ? 1 : 0;
      const std::uint32_t n = ctx.agent->post(job);
      ctx.agent->wait_attached(n, o.timeout_s);
      const sc::Registration reg = sc::Registration::register_segment(seg, ctx.dev.id);
      const sc::GpuSpscConsumer rx = sc::GpuSpscConsumer::attach(seg, reg);
      ctx.reset_result();
      if (blocks > 1) {
        consume_grid_kernel<<<blocks, o.gpu_threads>>>(
            rx.ref(), rx.position(), t.messages, static_cast<std::uint32_t>(size),
            static_cast<std::uint32_t>(grid_batch), ctx.timeout_ns(), ctx.result);
      } else {
        consume_kernel<<<1, o.gpu_threads>>>(rx.ref(), t.messages, static_cast<std::uint32_t>(size),
                                             static_cast<std::uint32_t>(shape.gpu_peek),
                                             ctx.timeout_ns(), ctx.result);
      }
      cuda_ok(cudaGetLastError(), "consumer launch");
      ctx.agent->go(n);
      cuda_ok(cudaDeviceSynchronize(), "consumer kernel");
      const std::int64_t t_done = now_ns();
      const KernelResult kr = ctx.read_result();
      const AgentResult ar = ctx.agent->wait_finished(n, o.timeout_s + 60);
      t.failure = run_failure("GPU consumer", kr, {ar}, t.messages);
      t.errors += kr.errors;
      t.deep_checked += kr.messages;
      if (t.failure.empty()) t.seconds.push_back(static_cast<double>(t_done - ar.t_start) / 1e9);
    } catch (const std::exception& e) {
      t.failure = e.what();
    }
  }
  return t;
}

const char* echo_label(EchoKind kind) {
  switch (kind) {
    case EchoKind::pop_push:
      return "pop() + push(), thread 0";
    case EchoKind::low_latency_warp:
      return "low-latency slots: warp_pop() + push()";
    case EchoKind::low_latency_thread:
      return "low-latency slots: pop() + push(), thread 0";
    case EchoKind::peek_push:
      return "warp_peek(1) + push() + warp_release()";
    case EchoKind::minimal:
      return "minimal: tight poll, no sleeper-count loads";
    case EchoKind::warp_one:
      return "warp_pop() + warp_push_one()";
    case EchoKind::low_latency_warp_one:
      return "low-latency slots: warp_pop() + warp_push_one()";
  }
  return "?";
}

RoundTrip measure_round_trip(Context& ctx, std::uint64_t size, EchoKind kind, CpuWait wait) {
  const Options& o = ctx.opt;
  RoundTrip rt;
  const bool low_latency = kind == EchoKind::low_latency_warp ||
                           kind == EchoKind::low_latency_thread ||
                           kind == EchoKind::low_latency_warp_one;
  const bool warp_one = kind == EchoKind::warp_one || kind == EchoKind::low_latency_warp_one;
  rt.variant = echo_label(kind);
  if (wait == CpuWait::blocking) rt.variant += "; CPU waits in pop() without spinning";
  if (wait == CpuWait::epoll) rt.variant += "; CPU waits in epoll on event_fd()";
  rt.size = size;
  try {
    const std::string ping_name = segment_name("ping");
    const std::string pong_name = segment_name("pong");
    sr::CreateOptions co;
    co.capacity = 64;
    co.slot_size = size;
    if (low_latency) co.format = sr::SlotFormat::low_latency;
    const sr::Segment ping = sr::Segment::create(ping_name, co);
    Unlink u1{ping_name};
    const sr::Segment pong = sr::Segment::create(pong_name, co);
    Unlink u2{pong_name};
    sr::SpscProducer tx = sr::SpscProducer::attach(ping);
    sr::WaitPolicy no_spin;
    no_spin.spin_iterations = 0;
    no_spin.yield_iterations = 0;
    no_spin.spin_time = std::chrono::nanoseconds(0);
    sr::SpscConsumer rx =
        sr::SpscConsumer::attach(pong, wait == CpuWait::spin ? sr::WaitPolicy{} : no_spin);
    int epfd = -1;
    if (wait == CpuWait::epoll) {
      epfd = epoll_create1(EPOLL_CLOEXEC);
      epoll_event ev{};
      ev.events = EPOLLIN;
      if (epfd < 0 || epoll_ctl(epfd, EPOLL_CTL_ADD, rx.event_fd(), &ev) != 0) {
        throw std::runtime_error("epoll setup failed");
      }
    }
    struct CloseFd {
      int fd;
      ~CloseFd() {
        if (fd >= 0) close(fd);
      }
    } close_epfd{epfd};
    const sc::Registration reg_ping = sc::Registration::register_segment(ping, ctx.dev.id);
    const sc::Registration reg_pong = sc::Registration::register_segment(pong, ctx.dev.id);
    const sc::GpuSpscConsumer gin = sc::GpuSpscConsumer::attach(ping, reg_ping);
    const sc::GpuSpscProducer gout = sc::GpuSpscProducer::attach(pong, reg_pong);
    const std::uint64_t rounds = o.rtt_warmup + o.rtt_rounds;
    ctx.reset_result();
    const auto s32 = static_cast<std::uint32_t>(size);
    if (warp_one) {
      echo_warp_kernel<true>
          <<<1, 32>>>(gin.ref(), gout.ref(), rounds, s32, ctx.timeout_ns(), ctx.result);
    } else if (kind == EchoKind::low_latency_warp) {
      echo_warp_kernel<false>
          <<<1, 32>>>(gin.ref(), gout.ref(), rounds, s32, ctx.timeout_ns(), ctx.result);
    } else if (kind == EchoKind::pop_push || kind == EchoKind::low_latency_thread) {
      echo_pop_push_kernel<<<1, 32>>>(gin.ref(), gout.ref(), rounds, s32, ctx.timeout_ns(),
                                      ctx.result);
    } else if (kind == EchoKind::peek_push) {
      echo_peek_push_kernel<<<1, 32>>>(gin.ref(), gout.ref(), rounds, s32, ctx.timeout_ns(),
                                       ctx.result);
    } else {
      echo_minimal_kernel<<<1, 32>>>(gin.ref(), gout.ref(), rounds, s32, ctx.timeout_ns(),
                                     ctx.result);
    }
    cuda_ok(cudaGetLastError(), "echo launch");
    alignas(64) std::byte msg[64] = {};
    alignas(64) std::byte reply[64] = {};
    std::vector<std::int64_t> samples;
    samples.reserve(o.rtt_rounds);
    IdleClock idle{o.timeout_s};
    for (std::uint64_t i = 0; i < rounds && rt.failure.empty(); ++i) {
      store_word(msg, i);
      if (size >= 16) {
        store_word(msg + 8, size);
        store_word(msg + size - 8, ~i);
      }
      const std::int64_t a = now_ns();
      sr::Status s;
      while ((s = tx.try_push({msg, size})) == sr::Status::would_block && idle.wait()) {
      }
      std::size_t got = 0;
      if (s == sr::Status::ok && wait == CpuWait::blocking) {
        s = rx.pop(reply, got,
                   std::chrono::nanoseconds(static_cast<std::int64_t>(o.timeout_s * 1e9)));
        if (s == sr::Status::timeout) s = sr::Status::would_block;
      } else if (s == sr::Status::ok && wait == CpuWait::epoll) {
        // The protocol: try until would_block (which arms the descriptor),
        // then wait for it to become readable.
        while ((s = rx.try_pop(reply, got)) == sr::Status::would_block) {
          epoll_event ev{};
          if (epoll_wait(epfd, &ev, 1, static_cast<int>(o.timeout_s * 1000)) <= 0) break;
        }
      } else if (s == sr::Status::ok) {
        while ((s = rx.try_pop(reply, got)) == sr::Status::would_block && idle.wait()) {
        }
      }
      const std::int64_t b = now_ns();
      if (s != sr::Status::ok) {
        rt.failure = std::string("CPU side: ") +
                     (s == sr::Status::would_block ? "no reply" : sr::to_string(s));
        break;
      }
      idle.progress();
      rt.errors +=
          got != size || load_word(reply) != i || (size >= 16 && load_word(reply + size - 8) != ~i);
      if (i >= o.rtt_warmup) samples.push_back(b - a);
    }
    cuda_ok(cudaDeviceSynchronize(), "echo kernel");
    const KernelResult kr = ctx.read_result();
    if (kr.status != 0 && rt.failure.empty()) {
      rt.failure = "GPU echo: " + std::string(sr::to_string(static_cast<sr::Status>(kr.status)));
    }
    rt.errors += kr.errors;
    const Percentiles p = percentiles(samples);
    rt.rounds = samples.size();
    rt.median_ns = p.median;
    rt.p99_ns = p.p99;
    rt.min_ns = p.min;
    rt.mean_ns = p.mean;
  } catch (const std::exception& e) {
    rt.failure = e.what();
  }
  return rt;
}

void finish(Throughput& t) {
  if (t.seconds.empty()) return;
  const double s = median(t.seconds);
  t.msg_per_s = static_cast<double>(t.messages) / s;
  t.gbps = static_cast<double>(t.messages * t.size) / s / 1e9;
}

}  // namespace gpu_bench
