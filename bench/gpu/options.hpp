// The command line of shmring_gpu_bench (--help lists it).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "common.hpp"

namespace gpu_bench {

struct Options {
  std::string json;
  std::vector<std::uint64_t> sizes{64, 4 * KiB, 64 * KiB, MiB};
  std::uint64_t volume = 4 * GiB;        // payload bytes per throughput run
  std::uint64_t ring_bytes = 128 * MiB;  // slot area per ring (capacity rounded down to 2^k)
  std::uint64_t max_capacity = 16384;    // slots (a 64 B ring of 2 MiB stays in the CPU's cache)
  std::uint64_t gpu_claim_bytes = 16 * MiB;  // GPU producer: bytes per block_claim
  std::uint64_t gpu_peek_bytes = 16 * MiB;   // GPU consumer: bytes per block_peek
  std::uint64_t cpu_batch_bytes = 64 * KiB;  // CPU side: bytes per commit_batch / try_peek
  std::uint64_t max_gpu_claim = 4096;        // slots per block_claim
  std::uint64_t max_gpu_peek = 8192;         // slots per block_peek
  std::uint64_t deep_bytes = 16 * MiB;  // CPU consumer: one full-content check per this many bytes
  std::uint64_t cpu_prefetch = 16;      // CPU consumer: prefetch the payload this many slots ahead
  std::uint64_t ceiling_bytes = 256 * MiB;
  std::uint64_t one_block_ceiling_bytes = 64 * MiB;
  unsigned reps = 3;
  unsigned ceiling_reps = 5;
  std::uint64_t rtt_rounds = 10000;
  std::uint64_t rtt_warmup = 1000;
  unsigned flag_reps = 5;  // interleaved runs of each flag ping-pong setup
  unsigned gpu_threads = 1024;
  unsigned grid_blocks = 8;  // CPU -> GPU: blocks of the GridReader rows
  int device = 0;
  int cpu_host = -1;  // -1: chosen from the GPU's local CPUs
  int cpu_agent = -1;
  double timeout_s = 10;
  bool ceilings = true, gpu_to_cpu = true, cpu_to_gpu = true, round_trip = true;
  bool broadcast = true;
  std::vector<std::uint64_t> subscribers{1, 2, 4};  // broadcast: subscriber processes per row
  std::uint64_t broadcast_size = 64 * KiB;
  bool reference = true;   // also run the minimal hand-written variants
  bool full_write = true;  // CPU -> GPU: also rows where the CPU writes every byte
  bool diagnose = false;   // also the variants that tell costs apart
  bool cpu_check = true;   // GPU -> CPU: the CPU consumer checks messages (off: diagnosis only)
};

// Parses and checks the command line; prints the usage and exits (status 2)
// on a bad one, (status 0) on --help.
Options parse_options(int argc, char** argv);

}  // namespace gpu_bench
