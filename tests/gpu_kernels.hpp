// Kernels for the GPU suite (test_gpu.cpp), behind host launchers so the
// suite itself is plain C++ compiled with the tests' compiler.
#pragma once

#include <cstdint>

#include "shmring/config.hpp"
#include "shmring/cuda/gpu_ring.hpp"
#include "shmring/status.hpp"

namespace shmring::test::gpu {

// Messages carry their sequence number and producer id, then a pattern
// derived from both, so a consumer can check every byte.
struct MessageHeader {
  std::uint64_t seq;
  std::uint32_t producer;
  std::uint32_t size;
};
static_assert(sizeof(MessageHeader) == 16);

SHMRING_HD constexpr std::uint8_t pattern_byte(std::uint64_t seq, std::uint32_t producer,
                                               std::uint32_t i) {
  return static_cast<std::uint8_t>(seq * 131u + producer * 7u + i);
}

// How a kernel group drives the ring. warp_pop: a warp pops one message at a
// time with warp_pop() (consumers only); warp_one: a warp pushes one message
// at a time with warp_push_one() (producers only); grid: 8 blocks read
// batches of 3 slots with a GridReader (consumers only).
enum class Mode { thread, warp, block, warp_pop, warp_one, grid };

// What a kernel reports back. Kernels count in device memory (GPU atomics
// on host memory are not guaranteed atomic over PCIe); the launcher copies
// the result out.
struct KernelResult {
  std::uint64_t messages = 0;    // delivered (consumer) or pushed (producer)
  std::uint64_t errors = 0;      // wrong sequence, size or byte
  std::uint64_t checksum = 0;    // sum of the sequence numbers seen
  std::uint32_t status = 0;      // the first non-ok Status, as an integer
  std::uint64_t elapsed_ns = 0;  // one call's time on the GPU's global timer, where measured
  std::uint64_t gaps = 0;        // lossy subscribers: messages skipped (sequence gaps)
  std::uint64_t discarded = 0;   // lossy subscribers: reads found rewritten and dropped
};

// Each launcher waits for its kernel; false if CUDA reported an error.
bool spsc_produce(const cuda::SpscProducerRef& ref, Mode mode, std::uint64_t first_seq,
                  std::uint64_t count, std::uint32_t size, std::uint64_t timeout_ns,
                  KernelResult* result);
// Messages first_seq, first_seq + 1, ... from the ring's position
// first_position (the ring's position before the launch: a grid needs it).
bool spsc_consume(const cuda::SpscConsumerRef& ref, Mode mode, std::uint64_t first_seq,
                  std::uint64_t first_position, std::uint64_t count, std::uint32_t size,
                  std::uint64_t timeout_ns, KernelResult* result);
// Pops `count` messages and pushes each back unchanged: one thread, or one
// warp popping with warp_pop() and pushing with warp_push_one().
bool spsc_echo(const cuda::SpscConsumerRef& in, const cuda::SpscProducerRef& out,
               std::uint64_t count, std::uint64_t timeout_ns, KernelResult* result);
bool spsc_warp_echo(const cuda::SpscConsumerRef& in, const cuda::SpscProducerRef& out,
                    std::uint64_t count, std::uint64_t timeout_ns, KernelResult* result);
// One pop / push attempt with a timeout; the Status lands in result->status.
bool spsc_pop_once(const cuda::SpscConsumerRef& ref, std::uint64_t timeout_ns,
                   KernelResult* result);
bool spsc_push_once(const cuda::SpscProducerRef& ref, std::uint32_t size, std::uint64_t timeout_ns,
                    KernelResult* result);

// `warps` warps each push `per_warp` messages (producer id = warp index,
// sequence 0..per_warp-1) through warp claims.
bool mpmc_produce(const cuda::MpmcProducerRef& ref, unsigned warps, std::uint64_t per_warp,
                  std::uint32_t size, std::uint64_t timeout_ns, KernelResult* result);
// `warps` warps consume `total` messages between them; seen[p * per_producer
// + seq] counts deliveries (device memory, `producers * per_producer` words).
bool mpmc_consume(const cuda::MpmcConsumerRef& ref, unsigned warps, std::uint64_t total,
                  std::uint32_t producers, std::uint64_t per_producer, std::uint64_t timeout_ns,
                  std::uint32_t* seen_device, KernelResult* result);

// One warp calls warp_claim_read(max, timeout) once: its status, its count
// (in messages) and how long the call took (elapsed_ns); a claim it gets is
// released.
bool mpmc_claim_read_once(const cuda::MpmcConsumerRef& ref, std::uint32_t max,
                          std::uint64_t timeout_ns, KernelResult* result);

// Broadcast. A producer kernel publishes messages first..first+count-1
// (producer id 0): Mode::thread, one thread pushing copies (size <= 256);
// Mode::block, one block filling each slot in place (any size).
bool broadcast_produce(const cuda::BroadcastProducerRef& ref, Mode mode, std::uint64_t first,
                       std::uint64_t count, std::uint32_t size, std::uint64_t timeout_ns,
                       KernelResult* result);
// A subscriber kernel reads until it has seen message last_seq, checking
// every byte of what it reads. Reliable: exactly first..last_seq in order
// (else errors). Lossy: strictly increasing sequence numbers, every message
// intact; gaps counts the skipped ones, discarded the reads found rewritten.
// Mode::thread pops copies (size <= 256); Mode::block peeks in place.
bool broadcast_subscribe(const cuda::BroadcastSubscriberRef& ref, Mode mode, std::uint64_t first,
                         std::uint64_t last_seq, std::uint32_t size, std::uint64_t timeout_ns,
                         KernelResult* result);

}  // namespace shmring::test::gpu
