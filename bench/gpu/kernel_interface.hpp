// What the host and the kernels share: the result block a kernel writes, and
// the slot size up to which the producer kernels fill slots flat.
#pragma once

#include <cstdint>

namespace gpu_bench {

struct KernelResult {
  unsigned long long messages;
  unsigned long long errors;
  unsigned long long sum;
  unsigned int status;  // the first Status other than ok, as a number
  unsigned int pad;
};

// Slots of <= `kFlatFillMax` bytes: the block fills all claimed slots at once
// (kernels.cuh); larger ones are copied one at a time from a frame in device
// memory, and the benchmark adds a staged-copy reference row for them.
constexpr std::uint32_t kFlatFillMax = 4096;

}  // namespace gpu_bench
