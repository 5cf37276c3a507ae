#include <cuda_runtime_api.h>

#include "gpu_kernels.hpp"
#include "shmring/cuda/broadcast_device.cuh"
#include "shmring/cuda/device.cuh"

namespace shmring::test::gpu {
namespace {

using cuda::DeviceClaim;

__device__ void fill(std::byte* dst, std::uint64_t seq, std::uint32_t producer,
                     std::uint32_t size) {
  MessageHeader h{seq, producer, size};
  cuda::copy_bytes(dst, &h, size < sizeof h ? size : static_cast<std::uint32_t>(sizeof h));
  for (std::uint32_t i = sizeof h; i < size; ++i) {
    dst[i] = static_cast<std::byte>(pattern_byte(seq, producer, i));
  }
}

// 0 if the message is exactly what fill() wrote for (seq, producer, size).
__device__ std::uint64_t check(const std::byte* src, std::uint32_t got_size, std::uint64_t seq,
                               std::uint32_t producer, std::uint32_t size) {
  if (got_size != size) return 1;
  MessageHeader h{};
  cuda::copy_bytes(&h, src, size < sizeof h ? size : static_cast<std::uint32_t>(sizeof h));
  if (size >= sizeof h && (h.seq != seq || h.producer != producer || h.size != size)) return 1;
  for (std::uint32_t i = sizeof h; i < size; ++i) {
    if (static_cast<std::uint8_t>(src[i]) != pattern_byte(seq, producer, i)) return 1;
  }
  return 0;
}

__device__ void note_status(KernelResult* r, Status s) {
  if (s != Status::ok) atomicCAS(&r->status, 0u, static_cast<unsigned>(s));
}

__global__ void produce_kernel(cuda::SpscProducerRef ref, Mode mode, std::uint64_t first,
                               std::uint64_t count, std::uint32_t size, std::uint64_t timeout_ns,
                               KernelResult* r) {
  cuda::SpscDeviceProducer p(ref);
  if (mode == Mode::thread) {
    if (threadIdx.x != 0) return;
    alignas(16) std::byte buf[256];
    for (std::uint64_t i = 0; i < count; ++i) {
      fill(buf, first + i, 0, size);
      const Status s = p.push(buf, size, timeout_ns);
      if (s != Status::ok) return note_status(r, s);
      r->messages++;
    }
    return;
  }
  if (mode == Mode::warp_one) {  // one warp writes each message together
    if (threadIdx.x >= 32) return;
    __shared__ alignas(16) std::byte shared_buf[1024];
    for (std::uint64_t i = 0; i < count; ++i) {
      if (threadIdx.x == 0) fill(shared_buf, first + i, 0, size);
      __syncwarp();
      const Status s = p.warp_push_one(shared_buf, size, timeout_ns);
      if (s != Status::ok) {
        if (threadIdx.x == 0) note_status(r, s);
        return;
      }
      if (threadIdx.x == 0) r->messages++;
    }
    return;
  }
  if (mode == Mode::warp) {  // one warp: lanes push in lane order, one head store per round
    const unsigned lane = threadIdx.x & 31u;
    alignas(16) std::byte buf[256];
    for (std::uint64_t base = 0; base < count; base += 32) {
      const bool has = base + lane < count;
      if (has) fill(buf, first + base + lane, 0, size);
      const Status s = p.warp_push(buf, size, has, timeout_ns);
      if (__any_sync(cuda::kFullWarp, s != Status::ok)) {
        note_status(r, s);
        return;
      }
      if (lane == 0) r->messages += (count - base < 32 ? count - base : 32);
    }
    return;
  }
  // block: claim up to blockDim slots, each thread fills one, one commit
  for (std::uint64_t done = 0; done < count;) {
    const std::uint64_t left = count - done;
    const DeviceClaim c = p.block_claim(
        left < blockDim.x ? static_cast<std::uint32_t>(left) : blockDim.x, timeout_ns);
    if (c.count == 0) {
      if (threadIdx.x == 0) note_status(r, c.status);
      return;
    }
    if (threadIdx.x < c.count) {
      fill(p.payload(c.first + threadIdx.x), first + done + threadIdx.x, 0, size);
      p.set_size(c, threadIdx.x, size);
    }
    p.block_commit(c, c.count);
    done += c.count;
    if (threadIdx.x == 0) r->messages = done;
  }
}

__global__ void consume_kernel(cuda::SpscConsumerRef ref, Mode mode, std::uint64_t first,
                               std::uint64_t first_position, std::uint64_t count,
                               std::uint32_t size, std::uint64_t timeout_ns, KernelResult* r) {
  cuda::SpscDeviceConsumer c(ref);
  if (mode == Mode::grid) {
    cuda::GridReader grid(c, first_position, count, 3);
    for (;;) {
      const DeviceClaim cl = grid.next(timeout_ns);
      if (cl.count == 0) {
        if (threadIdx.x == 0) note_status(r, cl.status);
        return;
      }
      // Position p holds message first + (p - first_position).
      for (std::uint32_t i = threadIdx.x; i < cl.count; i += blockDim.x) {
        const ReadSlot s = grid.slot(cl, i);
        const std::uint64_t seq = first + (cl.first + i - first_position);
        if (check(s.data, s.size, seq, 0, size) != 0) {
          atomicAdd(reinterpret_cast<unsigned long long*>(&r->errors), 1ull);
        }
        atomicAdd(reinterpret_cast<unsigned long long*>(&r->checksum),
                  static_cast<unsigned long long>(seq));
        atomicAdd(reinterpret_cast<unsigned long long*>(&r->messages), 1ull);
      }
      const Status st = grid.release(cl, timeout_ns);
      if (st != Status::ok) {
        if (threadIdx.x == 0) note_status(r, st);
        return;
      }
    }
  }
  if (mode == Mode::warp_pop) {
    if (threadIdx.x >= 32) return;
    __shared__ alignas(16) std::byte shared_buf[1024];
    for (std::uint64_t i = 0; i < count; ++i) {
      std::uint32_t got = 0;
      const Status s = c.warp_pop(shared_buf, sizeof shared_buf, got, timeout_ns);
      if (s != Status::ok) {
        if (threadIdx.x == 0) note_status(r, s);
        return;
      }
      if (threadIdx.x == 0) {
        r->errors += check(shared_buf, got, first + i, 0, size);
        r->checksum += first + i;
        r->messages++;
      }
      __syncwarp();  // lane 0 has checked the buffer before the next pop
    }
    return;
  }
  if (mode == Mode::thread) {
    if (threadIdx.x != 0) return;
    alignas(16) std::byte buf[256];
    for (std::uint64_t i = 0; i < count; ++i) {
      std::uint32_t got = 0;
      const Status s = c.pop(buf, sizeof buf, got, timeout_ns);
      if (s != Status::ok) return note_status(r, s);
      r->errors += check(buf, got, first + i, 0, size);
      r->checksum += first + i;
      r->messages++;
    }
    return;
  }
  for (std::uint64_t done = 0; done < count;) {
    const std::uint64_t left = count - done;
    const std::uint32_t want = left < 256 ? static_cast<std::uint32_t>(left) : 256u;
    const DeviceClaim cl =
        mode == Mode::warp ? c.warp_peek(want, timeout_ns) : c.block_peek(want, timeout_ns);
    if (cl.count == 0) {
      if (threadIdx.x == 0) note_status(r, cl.status);
      return;
    }
    const unsigned threads = mode == Mode::warp ? 32u : blockDim.x;
    const unsigned rank = mode == Mode::warp ? (threadIdx.x & 31u) : threadIdx.x;
    for (std::uint32_t i = rank; i < cl.count; i += threads) {
      const ReadSlot s = c.slot(cl, i);
      const std::uint64_t bad = check(s.data, s.size, first + done + i, 0, size);
      if (bad != 0) atomicAdd(reinterpret_cast<unsigned long long*>(&r->errors), 1ull);
      atomicAdd(reinterpret_cast<unsigned long long*>(&r->checksum),
                static_cast<unsigned long long>(first + done + i));
    }
    if (mode == Mode::warp) {
      c.warp_release(cl, cl.count);
    } else {
      c.block_release(cl, cl.count);
    }
    done += cl.count;
    if (rank == 0) r->messages = done;
  }
}

__global__ void echo_kernel(cuda::SpscConsumerRef in, cuda::SpscProducerRef out,
                            std::uint64_t count, std::uint64_t timeout_ns, KernelResult* r) {
  cuda::SpscDeviceConsumer rx(in);
  cuda::SpscDeviceProducer tx(out);
  alignas(16) std::byte buf[256];
  for (std::uint64_t i = 0; i < count; ++i) {
    std::uint32_t got = 0;
    Status s = rx.pop(buf, sizeof buf, got, timeout_ns);
    if (s == Status::ok) s = tx.push(buf, got, timeout_ns);
    if (s != Status::ok) return note_status(r, s);
    r->messages++;
  }
}

__global__ void warp_echo_kernel(cuda::SpscConsumerRef in, cuda::SpscProducerRef out,
                                 std::uint64_t count, std::uint64_t timeout_ns, KernelResult* r) {
  cuda::SpscDeviceConsumer rx(in);
  cuda::SpscDeviceProducer tx(out);
  __shared__ alignas(16) std::byte buf[256];
  for (std::uint64_t i = 0; i < count; ++i) {
    std::uint32_t got = 0;
    Status s = rx.warp_pop(buf, sizeof buf, got, timeout_ns);
    if (s == Status::ok) s = tx.warp_push_one(buf, got, timeout_ns);
    if (s != Status::ok) {
      if (threadIdx.x == 0) note_status(r, s);
      return;
    }
    if (threadIdx.x == 0) r->messages++;
  }
}

__global__ void pop_once_kernel(cuda::SpscConsumerRef ref, std::uint64_t timeout_ns,
                                KernelResult* r) {
  cuda::SpscDeviceConsumer c(ref);
  alignas(16) std::byte buf[256];
  std::uint32_t got = 0;
  r->status = static_cast<std::uint32_t>(c.pop(buf, sizeof buf, got, timeout_ns));
}

__global__ void push_once_kernel(cuda::SpscProducerRef ref, std::uint32_t size,
                                 std::uint64_t timeout_ns, KernelResult* r) {
  cuda::SpscDeviceProducer p(ref);
  alignas(16) std::byte buf[256];
  fill(buf, 0, 0, size);
  r->status = static_cast<std::uint32_t>(p.push(buf, size, timeout_ns));
}

__global__ void mpmc_produce_kernel(cuda::MpmcProducerRef ref, std::uint64_t per_warp,
                                    std::uint32_t size, std::uint64_t timeout_ns, KernelResult* r) {
  cuda::MpmcDeviceSide side(ref);
  const unsigned lane = threadIdx.x & 31u;
  const unsigned warp = (blockIdx.x * blockDim.x + threadIdx.x) / 32u;
  for (std::uint64_t done = 0; done < per_warp;) {
    const std::uint64_t left = per_warp - done;
    const DeviceClaim c =
        side.warp_claim_write(left < 32 ? static_cast<std::uint32_t>(left) : 32u, timeout_ns);
    if (c.count == 0) {
      if (lane == 0) note_status(r, c.status);
      return;
    }
    if (lane < c.count) {
      fill(side.payload(c.first + lane), done + lane, warp, size);
      side.set_size(c, lane, size);
    }
    side.warp_commit(c);
    done += c.count;
    if (lane == 0) atomicAdd(reinterpret_cast<unsigned long long*>(&r->messages), c.count);
  }
}

__global__ void mpmc_consume_kernel(cuda::MpmcConsumerRef ref, std::uint64_t total,
                                    std::uint32_t producers, std::uint64_t per_producer,
                                    std::uint64_t timeout_ns, std::uint32_t* seen,
                                    unsigned long long* taken, KernelResult* r) {
  cuda::MpmcDeviceSide side(ref);
  const unsigned lane = threadIdx.x & 31u;
  const cuda::Deadline deadline = cuda::Deadline::after(timeout_ns);
  for (;;) {
    // Stop once all `total` messages have been taken by some warp; poll in
    // short claims so a warp finds out soon after the last one is taken.
    unsigned long long before = 0;
    if (lane == 0) before = atomicAdd(taken, 0ull);
    before = __shfl_sync(cuda::kFullWarp, before, 0);
    if (before >= total) return;
    const DeviceClaim c = side.warp_claim_read(32, 1'000'000);
    if (c.count == 0) {
      if (c.status == Status::timeout && !deadline.passed()) continue;
      if (lane == 0) note_status(r, c.status);
      return;
    }
    if (lane < c.count) {
      const ReadSlot s = side.slot(c, lane);
      MessageHeader h{};
      cuda::copy_bytes(&h, s.data, sizeof h);
      if (h.producer < producers && h.seq < per_producer &&
          check(s.data, s.size, h.seq, h.producer, h.size) == 0) {
        atomicAdd(&seen[h.producer * per_producer + h.seq], 1u);
        atomicAdd(reinterpret_cast<unsigned long long*>(&r->checksum), h.seq);
      } else {
        atomicAdd(reinterpret_cast<unsigned long long*>(&r->errors), 1ull);
      }
    }
    side.warp_release(c, c.count);
    if (lane == 0) {
      atomicAdd(taken, static_cast<unsigned long long>(c.count));
      atomicAdd(reinterpret_cast<unsigned long long*>(&r->messages), c.count);
    }
  }
}

__global__ void mpmc_claim_read_once_kernel(cuda::MpmcConsumerRef ref, std::uint32_t max,
                                            std::uint64_t timeout_ns, KernelResult* r) {
  cuda::MpmcDeviceSide side(ref);
  const std::uint64_t t0 = cuda::global_ns();
  const DeviceClaim c = side.warp_claim_read(max, timeout_ns);
  const std::uint64_t t1 = cuda::global_ns();
  side.warp_release(c, c.count);
  if ((threadIdx.x & 31u) == 0) {
    r->elapsed_ns = t1 - t0;
    r->status = static_cast<std::uint32_t>(c.status);
    r->messages = c.count;
  }
}

// ---- broadcast ----

// fill() by a whole block: thread 0 the header, every thread its bytes.
__device__ void group_fill(std::byte* dst, std::uint64_t seq, std::uint32_t size) {
  const MessageHeader h{seq, 0, size};
  if (threadIdx.x == 0) {
    cuda::copy_bytes(dst, &h, size < sizeof h ? size : static_cast<std::uint32_t>(sizeof h));
  }
  for (std::uint32_t i = sizeof h + threadIdx.x; i < size; i += blockDim.x) {
    dst[i] = static_cast<std::byte>(pattern_byte(seq, 0, i));
  }
}

// check() by a whole block: every thread gets the number of wrong bytes (the
// header counts as one) of the message, whose sequence number it returns.
__device__ std::uint64_t group_check(const std::byte* src, std::uint32_t got_size,
                                     std::uint32_t size, std::uint64_t& seq) {
  __shared__ unsigned long long bad;
  __shared__ std::uint64_t shared_seq;
  __syncthreads();
  if (threadIdx.x == 0) {
    MessageHeader h{};
    cuda::copy_bytes(&h, src, sizeof h);
    bad = got_size != size || h.producer != 0 || h.size != size ? 1 : 0;
    shared_seq = h.seq;
  }
  __syncthreads();
  const std::uint64_t s = shared_seq;
  unsigned long long mine = 0;
  for (std::uint32_t i = sizeof(MessageHeader) + threadIdx.x; i < size && i < got_size;
       i += blockDim.x) {
    if (static_cast<std::uint8_t>(src[i]) != pattern_byte(s, 0, i)) ++mine;
  }
  if (mine != 0) atomicAdd(&bad, mine);
  __syncthreads();
  seq = s;
  return bad;
}

__global__ void broadcast_produce_kernel(cuda::BroadcastProducerRef ref, Mode mode,
                                         std::uint64_t first, std::uint64_t count,
                                         std::uint32_t size, std::uint64_t timeout_ns,
                                         KernelResult* r) {
  cuda::BroadcastDeviceProducer p(ref);
  if (mode == Mode::thread) {
    if (threadIdx.x != 0) return;
    alignas(16) std::byte buf[256];
    for (std::uint64_t i = 0; i < count; ++i) {
      fill(buf, first + i, 0, size);
      const Status s = p.push(buf, size, timeout_ns);
      if (s != Status::ok) return note_status(r, s);
      r->messages++;
    }
    return;
  }
  for (std::uint64_t i = 0; i < count; ++i) {
    const DeviceClaim c = p.block_claim(1, timeout_ns);
    if (c.count == 0) {
      if (threadIdx.x == 0) note_status(r, c.status);
      return;
    }
    group_fill(p.payload(c.first), first + i, size);
    if (threadIdx.x == 0) p.set_size(c, 0, size);
    p.block_commit(c, 1);
    if (threadIdx.x == 0) r->messages++;
  }
}

__global__ void broadcast_subscribe_kernel(cuda::BroadcastSubscriberRef ref, Mode mode,
                                           std::uint64_t first, std::uint64_t last_seq,
                                           std::uint32_t size, std::uint64_t timeout_ns,
                                           KernelResult* r) {
  cuda::BroadcastDeviceSubscriber sub(ref);
  const bool lossy = sub.view().lossy();
  std::uint64_t expected = first;  // the next sequence number due (reliable: exactly)
  if (mode == Mode::thread) {
    if (threadIdx.x != 0) return;
    alignas(16) std::byte buf[256];
    for (;;) {
      std::uint32_t got = 0;
      const Status s = sub.pop(buf, sizeof buf, got, timeout_ns);
      if (s == Status::overrun && lossy) {
        r->discarded++;
        continue;
      }
      if (s != Status::ok) return note_status(r, s);
      MessageHeader h{};
      cuda::copy_bytes(&h, buf, sizeof h);
      if (h.seq < expected || (!lossy && h.seq != expected) ||
          check(buf, got, h.seq, 0, size) != 0) {
        r->errors++;
        return;
      }
      r->gaps += h.seq - expected;
      r->checksum += h.seq;
      r->messages++;
      expected = h.seq + 1;
      if (h.seq == last_seq) return;
    }
  }
  for (;;) {
    const DeviceClaim c = sub.block_peek(1, timeout_ns);
    if (c.count == 0) {
      if (c.status == Status::overrun && lossy) {
        if (threadIdx.x == 0) r->discarded++;
        continue;
      }
      if (threadIdx.x == 0) note_status(r, c.status);
      return;
    }
    const ReadSlot s = sub.slot(c, 0);
    std::uint64_t seq = 0;
    const std::uint64_t bad = group_check(s.data, s.size, size, seq);
    if (!sub.block_valid(c)) {  // rewritten while read: what was read is dropped
      if (threadIdx.x == 0) r->discarded++;
      continue;
    }
    sub.block_release(c, 1);
    if (bad != 0 || seq < expected || (!lossy && seq != expected)) {
      if (threadIdx.x == 0) r->errors++;
      return;
    }
    if (threadIdx.x == 0) {
      r->gaps += seq - expected;
      r->checksum += seq;
      r->messages++;
    }
    expected = seq + 1;
    if (seq == last_seq) return;
  }
}

// Runs `launch(device_result)` with a zeroed result in device memory, waits,
// and copies the result to *out. False on any CUDA error.
template <class Launch>
bool run(KernelResult* out, Launch&& launch) {
  KernelResult* d = nullptr;
  if (cudaMalloc(&d, sizeof *d) != cudaSuccess) return false;
  bool ok = cudaMemset(d, 0, sizeof *d) == cudaSuccess;
  if (ok) {
    launch(d);
    ok = cudaGetLastError() == cudaSuccess && cudaDeviceSynchronize() == cudaSuccess &&
         cudaMemcpy(out, d, sizeof *d, cudaMemcpyDeviceToHost) == cudaSuccess;
  }
  cudaFree(d);
  return ok;
}

}  // namespace

bool spsc_produce(const cuda::SpscProducerRef& ref, Mode mode, std::uint64_t first,
                  std::uint64_t count, std::uint32_t size, std::uint64_t timeout_ns,
                  KernelResult* r) {
  return run(r, [&](KernelResult* d) {
    produce_kernel<<<1, mode == Mode::block ? 128 : 32>>>(ref, mode, first, count, size, timeout_ns,
                                                          d);
  });
}
bool spsc_consume(const cuda::SpscConsumerRef& ref, Mode mode, std::uint64_t first,
                  std::uint64_t first_position, std::uint64_t count, std::uint32_t size,
                  std::uint64_t timeout_ns, KernelResult* r) {
  return run(r, [&](KernelResult* d) {
    consume_kernel<<<mode == Mode::grid ? 8 : 1,
                     mode == Mode::block || mode == Mode::grid ? 128 : 32>>>(
        ref, mode, first, first_position, count, size, timeout_ns, d);
  });
}
bool spsc_echo(const cuda::SpscConsumerRef& in, const cuda::SpscProducerRef& out,
               std::uint64_t count, std::uint64_t timeout_ns, KernelResult* r) {
  return run(r, [&](KernelResult* d) { echo_kernel<<<1, 1>>>(in, out, count, timeout_ns, d); });
}
bool spsc_warp_echo(const cuda::SpscConsumerRef& in, const cuda::SpscProducerRef& out,
                    std::uint64_t count, std::uint64_t timeout_ns, KernelResult* r) {
  return run(r,
             [&](KernelResult* d) { warp_echo_kernel<<<1, 32>>>(in, out, count, timeout_ns, d); });
}
bool spsc_pop_once(const cuda::SpscConsumerRef& ref, std::uint64_t timeout_ns, KernelResult* r) {
  return run(r, [&](KernelResult* d) { pop_once_kernel<<<1, 1>>>(ref, timeout_ns, d); });
}
bool spsc_push_once(const cuda::SpscProducerRef& ref, std::uint32_t size, std::uint64_t timeout_ns,
                    KernelResult* r) {
  return run(r, [&](KernelResult* d) { push_once_kernel<<<1, 1>>>(ref, size, timeout_ns, d); });
}
bool mpmc_produce(const cuda::MpmcProducerRef& ref, unsigned warps, std::uint64_t per_warp,
                  std::uint32_t size, std::uint64_t timeout_ns, KernelResult* r) {
  return run(r, [&](KernelResult* d) {
    mpmc_produce_kernel<<<warps, 32>>>(ref, per_warp, size, timeout_ns, d);
  });
}
bool mpmc_consume(const cuda::MpmcConsumerRef& ref, unsigned warps, std::uint64_t total,
                  std::uint32_t producers, std::uint64_t per_producer, std::uint64_t timeout_ns,
                  std::uint32_t* seen, KernelResult* r) {
  unsigned long long* taken = nullptr;
  if (cudaMalloc(&taken, sizeof *taken) != cudaSuccess) return false;
  cudaMemset(taken, 0, sizeof *taken);
  const bool ok = run(r, [&](KernelResult* d) {
    mpmc_consume_kernel<<<warps, 32>>>(ref, total, producers, per_producer, timeout_ns, seen, taken,
                                       d);
  });
  cudaFree(taken);
  return ok;
}

bool mpmc_claim_read_once(const cuda::MpmcConsumerRef& ref, std::uint32_t max,
                          std::uint64_t timeout_ns, KernelResult* r) {
  return run(
      r, [&](KernelResult* d) { mpmc_claim_read_once_kernel<<<1, 32>>>(ref, max, timeout_ns, d); });
}

bool broadcast_produce(const cuda::BroadcastProducerRef& ref, Mode mode, std::uint64_t first,
                       std::uint64_t count, std::uint32_t size, std::uint64_t timeout_ns,
                       KernelResult* r) {
  return run(r, [&](KernelResult* d) {
    broadcast_produce_kernel<<<1, mode == Mode::block ? 256 : 32>>>(ref, mode, first, count, size,
                                                                    timeout_ns, d);
  });
}
bool broadcast_subscribe(const cuda::BroadcastSubscriberRef& ref, Mode mode, std::uint64_t first,
                         std::uint64_t last_seq, std::uint32_t size, std::uint64_t timeout_ns,
                         KernelResult* r) {
  return run(r, [&](KernelResult* d) {
    broadcast_subscribe_kernel<<<1, mode == Mode::block ? 256 : 32>>>(ref, mode, first, last_seq,
                                                                      size, timeout_ns, d);
  });
}

}  // namespace shmring::test::gpu
