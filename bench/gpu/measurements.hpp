// The measurements: the machine's ceilings, ring throughput each way and to
// broadcast subscribers, and round trips; each returns its results, every
// message verified, failures recorded rather than thrown.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "agents.hpp"
#include "common.hpp"
#include "kernel_interface.hpp"
#include "options.hpp"

namespace gpu_bench {

struct Device {
  int id = 0;
  cudaDeviceProp prop{};
  sc::DeviceCapabilities caps;
  int driver = 0, runtime = 0;  // CUDA versions (driver API, runtime)
  std::string nvidia_driver;    // the kernel module's version
  std::string pci;
};

// One setup of the flag ping-pong study: the median of its runs' medians,
// the lowest and highest run median, and p99 and min over every round.
struct FlagVariant {
  std::string name;
  unsigned pollers = 1;
  bool pinned = false;
  bool candidate = true;  // may be the ceiling; else a study of a slot format's cost
  double median_ns = 0, run_min_ns = 0, run_max_ns = 0, p99_ns = 0, min_ns = 0;
  std::uint64_t rounds = 0;
};

struct Ceilings {
  bool measured = false;
  double store_gbps = 0, load_gbps = 0;  // whole grid, median
  double store_1block_gbps = 0, load_1block_gbps = 0;
  double h2d_gbps = 0, d2h_gbps = 0;
  double register_ms = 0;
  std::vector<std::pair<std::string, double>> diagnosis;  // --diagnose: what, GB/s
  // The flag ping-pong ceiling: the tightest one-poller variant of the study.
  std::vector<FlagVariant> flag_variants;
  std::string flag_ceiling;
  double flag_median_ns = 0, flag_p99_ns = 0, flag_min_ns = 0;
  std::uint64_t flag_rounds = 0;
  // The flag ping-pong with a plain slot's second read and fenced payload
  // store: the floor of a plain-slot round trip (0 when not measured).
  double plain_structure_median_ns = 0;
  std::uint64_t errors = 0;
  std::vector<std::string> failures;
};

struct Throughput {
  std::string direction;  // gpu_to_cpu / cpu_to_gpu
  std::string method;
  std::string cpu_writes;
  bool library = true;  // only the library's own forms, no local helper
  std::uint64_t size = 0, capacity = 0, gpu_batch = 0, cpu_batch = 0, messages = 0;
  std::vector<double> seconds;
  double msg_per_s = 0, gbps = 0;
  double ceiling_gbps = 0, ratio = 0, ratio_1block = 0;
  std::uint64_t errors = 0, deep_checked = 0;
  std::string failure;
  std::string target;  // "" when none
  bool met = false;
};

struct RoundTrip {
  std::string variant;
  std::uint64_t size = 0, rounds = 0;
  double median_ns = 0, p99_ns = 0, min_ns = 0, mean_ns = 0;
  double ratio = 0;  // median / flag median
  std::uint64_t errors = 0;
  std::string failure;
  std::string target;
  bool met = false;
};

struct Context {
  Options opt;
  Device dev;
  Agent* agent = nullptr;
  std::vector<Agent>* subscribers = nullptr;  // broadcast: agents beyond the first
  std::vector<int> subscriber_cpus;           // their cores
  int cpu_host = -1, cpu_agent = -1;
  std::string cpu_choice;
  KernelResult* result = nullptr;  // device memory
  unsigned long long* scratch = nullptr;

  std::uint64_t timeout_ns() const { return static_cast<std::uint64_t>(opt.timeout_s * 1e9); }

  void reset_result() { cuda_ok(cudaMemset(result, 0, sizeof(KernelResult)), "cudaMemset"); }
  KernelResult read_result() {
    KernelResult r{};
    cuda_ok(cudaMemcpy(&r, result, sizeof r, cudaMemcpyDeviceToHost), "cudaMemcpy result");
    return r;
  }
};

Ceilings measure_ceilings(Context& ctx);

enum class ProducerKind { library, staged_copy, minimal };
Throughput measure_gpu_to_cpu(Context& ctx, std::uint64_t size, ProducerKind kind);
Throughput measure_broadcast(Context& ctx, std::uint64_t size, std::uint64_t k);
// `blocks` > 1: a grid of that many blocks reads the ring (GridReader).
Throughput measure_cpu_to_gpu(Context& ctx, std::uint64_t size, bool write_full,
                              unsigned blocks = 1);

// pop_push and low_latency_thread run the same kernel, low_latency_thread
// and low_latency_warp over rings of low-latency slots (low_latency.hpp).
// warp_one and low_latency_warp_one: the whole warp on both rings,
// warp_pop() + warp_push_one(), over plain and low-latency slots.
enum class EchoKind {
  pop_push,
  low_latency_warp,
  low_latency_thread,
  peek_push,
  minimal,
  warp_one,
  low_latency_warp_one
};

// How the CPU side waits for the kernel's reply: spinning on try_pop, in a
// blocking pop that does not spin (it sleeps at once: a GPU peer cannot wake
// it, so it looks again every kGpuPeerSleep), or in epoll on the handle's
// descriptor (which a GPU peer cannot signal either: it becomes readable by
// the periodic look, as often).
enum class CpuWait { spin, blocking, epoll };

RoundTrip measure_round_trip(Context& ctx, std::uint64_t size, EchoKind kind,
                             CpuWait wait = CpuWait::spin);

// The rates of a throughput row from its runs (the median).
void finish(Throughput& t);

}  // namespace gpu_bench
