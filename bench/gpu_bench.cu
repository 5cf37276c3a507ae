// shmring_gpu_bench: CPU <-> GPU rings measured against the machine's own
// ceilings, in one run, every message verified.
//
//   ceilings     kernel 16-byte stores into / loads from a registered /dev/shm
//                segment (whole grid, and one block: an SPSC GPU side is one
//                block), cudaMemcpy H2D / D2H from / to it, and a one-flag
//                CPU <-> kernel ping-pong.
//   GPU -> CPU   one block produces (block_claim, fill, block_commit) into an
//                SPSC ring; a CPU process consumes it (try_peek / release).
//   CPU -> GPU   a CPU process produces (try_claim / commit_batch); one block
//                consumes (block_peek, read, block_release).
//   round trip   CPU push -> kernel pop + push -> CPU pop, over two rings.
//
// The CPU agent is a process forked before the first CUDA call; it uses only
// the CPU API. Message i of a ring carries i (its position) in its first 8
// bytes, its size in the next 8 and ~i in its last 8, and a fixed pattern in
// between. Consumers check the stamps of every message; the GPU consumer
// checks every byte, the CPU consumer every byte of one message in
// `--deep-bytes` worth (it cannot read at the GPU's rate from one core).
//
// Usage: shmring_gpu_bench [--json FILE] [--sizes 64,4K,64K,1M] [--volume 4G]
//          [--reps 3] [--rtt-rounds 10000] [--cpus HOST,AGENT] ... (--help)
// Prints a markdown report on stdout (progress on stderr). Exit status: 0 all
// messages verified, 1 a verification or a run failed, 2 bad usage, 77 no
// CUDA device.
//
// The parts, in bench/gpu/: options (the command line), common (host
// helpers), agents (the forked CPU processes), messages (what every message
// holds, built and checked on host and device), kernels (with
// kernel_interface, what they share with the host), measurements (ceilings,
// throughput, round trips) and report (markdown and JSON). This file picks
// the cores and runs the measurements in order.

#include <cuda_runtime_api.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cinttypes>
#include <cstdint>
#include <cstdio>
#include <ctime>
#include <exception>
#include <fstream>
#include <sstream>
#include <string>
#include <string_view>
#include <vector>

#include "gpu/agents.hpp"
#include "gpu/common.hpp"
#include "gpu/measurements.hpp"
#include "gpu/options.hpp"
#include "gpu/report.hpp"

namespace {

using namespace gpu_bench;

constexpr int kExitSkip = 77;

// "0-3,8,10-11" -> {0, 1, 2, 3, 8, 10, 11}
std::vector<int> parse_cpu_list(std::string_view s) {
  std::vector<int> cpus;
  while (!s.empty()) {
    const std::size_t comma = s.find(',');
    const std::string_view item = s.substr(0, comma);
    const std::size_t dash = item.find('-');
    const int a = std::stoi(std::string(item.substr(0, dash)));
    const int b =
        dash == std::string_view::npos ? a : std::stoi(std::string(item.substr(dash + 1)));
    for (int c = a; c <= b; ++c) cpus.push_back(c);
    s = comma == std::string_view::npos ? std::string_view{} : s.substr(comma + 1);
  }
  return cpus;
}

// The CPUs for this process and the agent: --cpus, else the 2nd and 3rd of
// the allowed cores local to the GPU (the 1st often takes interrupts).
void choose_cpus(Context& ctx) {
  if (ctx.opt.cpu_host >= 0) {
    ctx.cpu_host = ctx.opt.cpu_host;
    ctx.cpu_agent = ctx.opt.cpu_agent;
    ctx.cpu_choice = "--cpus";
    return;
  }
  const std::vector<int> allowed = allowed_cpus();
  std::vector<int> local;
  std::string pci = ctx.dev.pci;
  for (auto& ch : pci) ch = static_cast<char>(std::tolower(static_cast<unsigned char>(ch)));
  try {
    for (const int c :
         parse_cpu_list(read_first_line("/sys/bus/pci/devices/" + pci + "/local_cpulist"))) {
      if (std::find(allowed.begin(), allowed.end(), c) != allowed.end()) local.push_back(c);
    }
  } catch (const std::exception&) {
    local.clear();
  }
  const std::vector<int>& pool = local.size() >= 3 ? local : allowed;
  ctx.cpu_choice = local.size() >= 3 ? "GPU-local cores" : "allowed cores (GPU locality unknown)";
  if (pool.size() >= 3) {
    ctx.cpu_host = pool[1];
    ctx.cpu_agent = pool[2];
  } else {
    ctx.cpu_host = pool[0];
    ctx.cpu_agent = pool[pool.size() - 1];
  }
  // Broadcast subscribers beyond the first: the next cores of the pool, then
  // of every allowed core, shared round-robin if there are too few.
  std::vector<int> rest;
  for (const std::vector<int>* from : {&pool, &allowed}) {
    for (const int c : *from) {
      if (c != ctx.cpu_host && c != ctx.cpu_agent &&
          std::find(rest.begin(), rest.end(), c) == rest.end()) {
        rest.push_back(c);
      }
    }
  }
  if (rest.empty()) rest.push_back(ctx.cpu_agent);
  for (std::size_t i = 0; ctx.subscribers != nullptr && i < ctx.subscribers->size(); ++i) {
    ctx.subscriber_cpus.push_back(rest[i % rest.size()]);
  }
}

int run(int argc, char** argv) {
  Context ctx;
  ctx.opt = parse_options(argc, argv);
  const Options& o = ctx.opt;
  // Fork first: the agent must never inherit a CUDA context.
  Agent agent = Agent::start();
  ctx.agent = &agent;
  struct StopAgent {
    Agent& a;
    ~StopAgent() { a.stop(); }
  } stop_agent{agent};
  std::vector<Agent> subscribers;
  struct StopAgents {
    std::vector<Agent>& v;
    ~StopAgents() {
      for (Agent& a : v) a.stop();
    }
  } stop_subscribers{subscribers};
  if (o.broadcast) {
    std::uint64_t most = 1;
    for (const std::uint64_t k : o.subscribers) most = std::max(most, k);
    for (std::uint64_t i = 1; i < most; ++i) subscribers.push_back(Agent::start());
  }
  ctx.subscribers = &subscribers;

  if (sc::device_count() <= o.device) {
    std::fprintf(stderr, "no CUDA device: %s\n",
                 sc::device_count() == 0 ? "the CUDA driver reports none (or is not installed)"
                                         : "--device is out of range");
    return kExitSkip;
  }
  ctx.dev.id = o.device;
  cuda_ok(cudaSetDevice(o.device), "cudaSetDevice");
  cuda_ok(cudaGetDeviceProperties(&ctx.dev.prop, o.device), "cudaGetDeviceProperties");
  ctx.dev.caps = sc::query(o.device);
  cudaDriverGetVersion(&ctx.dev.driver);
  cudaRuntimeGetVersion(&ctx.dev.runtime);
  char pci[64] = {};
  cudaDeviceGetPCIBusId(pci, sizeof pci, o.device);
  ctx.dev.pci = pci;
  {  // "NVRM version: NVIDIA UNIX [Open] Kernel Module [for x86_64]  580.159.04  ..."
    std::istringstream words(read_first_line("/proc/driver/nvidia/version"));
    ctx.dev.nvidia_driver = "unknown";
    for (std::string w; words >> w;) {
      if (w.find('.') != std::string::npos &&
          w.find_first_not_of("0123456789.") == std::string::npos) {
        ctx.dev.nvidia_driver = w;
        break;
      }
    }
  }

  cuda_ok(cudaMalloc(&ctx.result, sizeof(KernelResult)), "cudaMalloc");
  cuda_ok(cudaMalloc(&ctx.scratch, 64), "cudaMalloc");
  choose_cpus(ctx);
  pin_to(ctx.cpu_host);

  char host[256] = {};
  gethostname(host, sizeof host - 1);
  char started[64] = {};
  const std::time_t now = std::time(nullptr);
  std::strftime(started, sizeof started, "%Y-%m-%dT%H:%M:%SZ", std::gmtime(&now));
  progress("%s, CPUs %d (this process) and %d (agent), %s", ctx.dev.prop.name, ctx.cpu_host,
           ctx.cpu_agent, ctx.cpu_choice.c_str());

  Ceilings ceil;
  if (o.ceilings) {
    try {
      ceil = measure_ceilings(ctx);
    } catch (const std::exception& e) {
      ceil.failures.push_back(e.what());
      progress("ceilings FAILED: %s", e.what());
    }
  }
  std::vector<Throughput> tp;
  auto add = [&](Throughput t) {
    finish(t);
    const bool g2c = t.direction == "gpu_to_cpu";
    t.ceiling_gbps = g2c ? ceil.store_gbps : ceil.load_gbps;
    const double one_block = g2c ? ceil.store_1block_gbps : ceil.load_1block_gbps;
    t.ratio = t.ceiling_gbps > 0 ? t.gbps / t.ceiling_gbps : 0;
    t.ratio_1block = one_block > 0 ? t.gbps / one_block : 0;
    const bool broadcast = t.method.rfind("broadcast", 0) == 0;
    if (!t.library) {
      // reference rows carry no target
    } else if (broadcast && t.method.find("-> 4 ") != std::string::npos) {
      t.target = ">= 70% of the store ceiling";
      t.met = t.failure.empty() && t.errors == 0 && t.ratio >= 0.7;
    } else if (broadcast) {
      // the other subscriber counts: for the scaling, no target
    } else if (g2c && t.size == 64) {
      t.target = ">= 100 M msg/s";
      t.met = t.failure.empty() && t.errors == 0 && t.msg_per_s >= 100e6;
    } else if (g2c && t.size >= 64 * KiB) {
      t.target = ">= 80% of the store ceiling";
      t.met = t.failure.empty() && t.errors == 0 && t.ratio >= 0.8;
    } else if (!g2c && t.method.rfind("GridReader", 0) == 0 && t.cpu_writes != "every byte" &&
               t.size >= 64 * KiB) {
      const double want = t.size >= MiB ? 0.9 : 0.8;
      t.target = ">= " + std::to_string(static_cast<int>(want * 100)) + "% of the load ceiling";
      t.met = t.failure.empty() && t.errors == 0 && t.ratio >= want;
    }
    progress("%s %s %s (%s): %s%.2f M msg/s, %.2f GB/s, %" PRIu64 " errors",
             g2c ? "GPU->CPU" : "CPU->GPU", human_bytes(t.size).c_str(), t.method.c_str(),
             t.cpu_writes.c_str(), t.failure.empty() ? "" : ("FAILED: " + t.failure + "; ").c_str(),
             t.msg_per_s / 1e6, t.gbps, t.errors);
    tp.push_back(std::move(t));
  };
  if (o.gpu_to_cpu) {
    for (const std::uint64_t size : o.sizes) {
      // The rows of a size, their repetitions interleaved (one run of each
      // in turn), so that a slow phase of the host falls on all of them.
      std::vector<ProducerKind> kinds{ProducerKind::library};
      if (o.reference && size > kFlatFillMax) kinds.push_back(ProducerKind::staged_copy);
      if (o.reference && size == 64) kinds.push_back(ProducerKind::minimal);
      std::vector<Throughput> rows(kinds.size());
      const unsigned reps = ctx.opt.reps;
      ctx.opt.reps = 1;
      for (unsigned rep = 0; rep < reps; ++rep) {
        for (std::size_t k = 0; k < kinds.size(); ++k) {
          Throughput one = measure_gpu_to_cpu(ctx, size, kinds[k]);
          if (rep == 0) {
            rows[k] = std::move(one);
            continue;
          }
          Throughput& t = rows[k];
          t.seconds.insert(t.seconds.end(), one.seconds.begin(), one.seconds.end());
          t.errors += one.errors;
          t.deep_checked += one.deep_checked;
          if (t.failure.empty()) t.failure = one.failure;
        }
      }
      ctx.opt.reps = reps;
      for (Throughput& t : rows) add(std::move(t));
    }
  }
  if (o.cpu_to_gpu) {
    for (const std::uint64_t size : o.sizes) {
      add(measure_cpu_to_gpu(ctx, size, false));
      if (o.grid_blocks > 1) add(measure_cpu_to_gpu(ctx, size, false, o.grid_blocks));
      if (o.full_write && size != 64) add(measure_cpu_to_gpu(ctx, size, true));
    }
  }
  if (o.broadcast) {
    for (const std::uint64_t k : o.subscribers) add(measure_broadcast(ctx, o.broadcast_size, k));
  }
  std::vector<RoundTrip> rtt;
  if (o.round_trip) {
    for (const std::uint64_t size : {std::uint64_t{8}, std::uint64_t{64}}) {
      for (const EchoKind kind :
           {EchoKind::low_latency_warp_one, EchoKind::low_latency_warp, EchoKind::warp_one,
            EchoKind::pop_push, EchoKind::low_latency_thread, EchoKind::peek_push,
            EchoKind::minimal}) {
        if (kind == EchoKind::minimal && !o.reference) continue;
        RoundTrip r = measure_round_trip(ctx, size, kind);
        r.ratio = ceil.flag_median_ns > 0 ? r.median_ns / ceil.flag_median_ns : 0;
        // The targets: the whole warp on both rings, for each slot format.
        double want = 0;
        if (kind == EchoKind::low_latency_warp_one) want = size <= 8 ? 1.2 : 1.3;
        if (kind == EchoKind::warp_one) want = 2.0;
        if (want > 0) {
          char buf[48];
          std::snprintf(buf, sizeof buf, "<= %.1fx the flag ping-pong", want);
          r.target = buf;
          r.met = r.failure.empty() && r.errors == 0 && ceil.flag_median_ns > 0 && r.ratio <= want;
        }
        progress("round trip %s %s: %s median %.2f us, p99 %.2f us (%.2fx flag)", r.variant.c_str(),
                 human_bytes(size).c_str(),
                 r.failure.empty() ? "" : ("FAILED: " + r.failure + ";").c_str(), r.median_ns / 1e3,
                 r.p99_ns / 1e3, r.ratio);
        rtt.push_back(std::move(r));
      }
    }
    // A CPU thread that sleeps while the kernel answers: the cost of being
    // woken by a peer that cannot call futex (bounded looks instead).
    for (const CpuWait wait : {CpuWait::blocking, CpuWait::epoll}) {
      RoundTrip r = measure_round_trip(ctx, 64, EchoKind::pop_push, wait);
      r.ratio = ceil.flag_median_ns > 0 ? r.median_ns / ceil.flag_median_ns : 0;
      progress("round trip %s 64 B: %s median %.2f us, p99 %.2f us", r.variant.c_str(),
               r.failure.empty() ? "" : ("FAILED: " + r.failure + ";").c_str(), r.median_ns / 1e3,
               r.p99_ns / 1e3);
      rtt.push_back(std::move(r));
    }
  }

  const Report report{ctx, ceil, tp, rtt, host, started};
  report.markdown(stdout);
  std::fflush(stdout);
  if (!o.json.empty()) {
    std::ofstream f(o.json);
    report.json(f);
    if (!f) {
      std::fprintf(stderr, "could not write %s\n", o.json.c_str());
      return 1;
    }
  }
  return report.all_verified() ? 0 : 1;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    return run(argc, argv);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "shmring_gpu_bench: %s\n", e.what());
    return 1;
  }
}
