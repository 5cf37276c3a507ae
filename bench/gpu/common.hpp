// What every part of shmring_gpu_bench uses: the namespace aliases, byte
// units, and small host helpers (clocks, cores, CUDA errors, segment names).
#pragma once

#include <cuda_runtime_api.h>

#include <atomic>
#include <cstdint>
#include <string>
#include <system_error>
#include <vector>

#include "shmring/cuda/capabilities.hpp"
#include "shmring/shmring.hpp"

namespace gpu_bench {

namespace sr = shmring;
namespace sc = shmring::cuda;

constexpr std::uint64_t KiB = 1024, MiB = KiB * KiB, GiB = MiB * KiB;

// CLOCK_MONOTONIC, nanoseconds.
std::int64_t now_ns();
// Pins the calling thread to `cpu` (-1: leaves it be).
void pin_to(int cpu);
// The cores this process may run on.
std::vector<int> allowed_cpus();
std::string read_first_line(const std::string& path);
std::string cpu_model();
// Throws naming `what` unless `e` is cudaSuccess.
void cuda_ok(cudaError_t e, const char* what);
std::string human_bytes(std::uint64_t b);
std::uint64_t pow2_floor(std::uint64_t v);
std::uint64_t clamp_u64(std::uint64_t v, std::uint64_t lo, std::uint64_t hi);

// Removes a segment name when the scope ends; mappings stay valid.
struct Unlink {
  std::string name;
  ~Unlink() {
    std::error_code ec;
    sr::Segment::unlink(name, ec);
  }
};

// Spins on a condition; gives up `timeout_s` after the last progress, or
// when the host abandons job `job`.
struct IdleClock {
  double timeout_s;
  const std::atomic<std::uint32_t>* abandon = nullptr;
  std::uint32_t job = 0;
  std::int64_t idle_since = 0;
  std::uint32_t spins = 0;
  // true while it is still worth waiting
  bool wait() {
    sr::atomic::cpu_relax();
    if ((++spins & 1023u) != 0) return true;
    if (abandon != nullptr && abandon->load(std::memory_order_relaxed) == job) return false;
    const std::int64_t now = now_ns();
    if (idle_since == 0) idle_since = now;
    return static_cast<double>(now - idle_since) < timeout_s * 1e9;
  }
  void progress() { idle_since = 0; }
};

// A segment name unique to this process and call.
std::string segment_name(const char* what);

// One line on stderr.
void progress(const char* fmt, ...) __attribute__((format(printf, 1, 2)));

}  // namespace gpu_bench
