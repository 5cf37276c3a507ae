// The kernels: the ceilings (grid-stride stores and loads, the flag
// ping-pong), the GPU producers and consumers of the throughput rows (the
// library's block forms and hand-written references), and the echo kernels of
// the round trips. Included by measurements.cu, which launches them.
#pragma once

#include <cstdint>

#include "common.hpp"
#include "kernel_interface.hpp"
#include "messages.cuh"
#include "shmring/cuda/broadcast_device.cuh"
#include "shmring/cuda/device.cuh"

namespace gpu_bench {

__device__ void note_status(KernelResult* r, sr::Status s) {
  if (s != sr::Status::ok) atomicCAS(&r->status, 0u, static_cast<unsigned>(s));
}

__device__ inline unsigned long long block_sum(unsigned long long v) {
  for (int o = 16; o > 0; o /= 2) v += __shfl_down_sync(sc::kFullWarp, v, o);
  return v;
}

// -- ceilings: grid-stride 16-byte stores and loads -------------------------

__global__ void store_kernel(ulonglong2* dst, std::uint64_t vectors, std::uint64_t salt) {
  const std::uint64_t stride = std::uint64_t{gridDim.x} * blockDim.x;
  for (std::uint64_t v = std::uint64_t{blockIdx.x} * blockDim.x + threadIdx.x; v < vectors;
       v += stride) {
    dst[v] = ulonglong2{(2 * v) ^ salt, (2 * v + 1) ^ salt};
  }
}

// kInFlight loads per thread before their use: over PCIe a load is a round
// trip, so bandwidth is bytes in flight / latency.
template <int kInFlight = 8>
__global__ void load_sum_kernel(const ulonglong2* src, std::uint64_t vectors,
                                unsigned long long* out) {
  const std::uint64_t stride = std::uint64_t{gridDim.x} * blockDim.x;
  unsigned long long s = 0;
  for (std::uint64_t base = std::uint64_t{blockIdx.x} * blockDim.x + threadIdx.x; base < vectors;
       base += kInFlight * stride) {
    ulonglong2 v[kInFlight];
#pragma unroll
    for (int j = 0; j < kInFlight; ++j) {
      const std::uint64_t i = base + j * stride;
      v[j] = i < vectors ? src[i] : ulonglong2{0, 0};
    }
#pragma unroll
    for (int j = 0; j < kInFlight; ++j) s += v[j].x + v[j].y;
  }
  s = block_sum(s);
  if ((threadIdx.x & 31u) == 0) atomicAdd(out, s);
}

// The flag ping-pong of the ceiling: the CPU stores 2i - 1 into `request`,
// the kernel answers 2i into `reply` (the same word, or a word on a line of
// its own). Lane 0 of `k.pollers` warps poll; with several, the first to see
// a round claims it in shared memory and it alone answers. `k.relaxed`: the
// polls are relaxed loads and one acquire fence follows the one that saw the
// round. `k.reply_delay_ns`: after answering, the poller waits this long
// before it polls again (a poll sent at once reaches the host before the CPU
// can have seen the answer, and the next one leaves only a PCIe round trip
// later). `k.stagger_ns`: poller w starts w times this late. A poller looks
// at the clock once per `k.check_mask + 1` polls, to give up after
// `timeout_ns`.
//
// Two additions give the plain-slot format's structure without the ring:
// `k.read_payload`: after seeing the round, the kernel loads a word the CPU
// wrote on another line before the flag (`request[kPayloadWord]`) and answers
// only if it is the round's (a second dependent PCIe read, as a plain pop
// reads the payload after `committed`). `k.write_payload`: before its answer
// the kernel stores a word on another line of the reply page, which the
// answer's release store must order first (a plain push's payload before its
// `committed`).
constexpr std::size_t kPayloadWord = 32;  // 256 bytes into the page
struct FlagKernel {
  unsigned pollers = 1;
  std::uint32_t check_mask = 65535;
  bool relaxed = false;
  bool read_payload = false;
  bool write_payload = false;
  std::uint32_t reply_delay_ns = 0;
  std::uint32_t stagger_ns = 0;
};

__device__ inline void spin_ns(std::uint64_t ns) {
  if (ns == 0) return;
  const std::uint64_t start = sc::global_ns();
  while (sc::global_ns() - start < ns) {
  }
}

__global__ void flag_echo_kernel(const std::uint64_t* request, std::uint64_t* reply,
                                 std::uint64_t rounds, FlagKernel k, std::uint64_t timeout_ns,
                                 KernelResult* r) {
  __shared__ unsigned long long answered;
  if (threadIdx.x == 0) answered = 0;
  __syncthreads();
  if ((threadIdx.x & 31u) != 0 || threadIdx.x / 32 >= k.pollers) return;
  spin_ns(std::uint64_t{k.stagger_ns} * (threadIdx.x / 32));
  std::uint64_t next = 1;
  std::uint64_t start = sc::global_ns();
  std::uint32_t polls = 0;
  for (;;) {
    if (k.pollers > 1) next = *static_cast<volatile unsigned long long*>(&answered) + 1;
    if (next > rounds) break;
    const std::uint64_t want = 2 * next - 1;
    const std::uint64_t seen =
        k.relaxed ? sr::atomic::load_relaxed(request) : sr::atomic::load_acquire(request);
    if (seen == want) {
      if (k.relaxed) sr::atomic::fence_acquire();
      if (k.read_payload && sr::atomic::load_relaxed(request + kPayloadWord) != next) {
        note_status(r, sr::Status::corrupt);
        return;
      }
      if (k.pollers == 1 || atomicCAS(&answered, next - 1, next) == next - 1) {
        if (k.write_payload) sr::atomic::store_relaxed(reply + kPayloadWord + 8, want);
        sr::atomic::store_release(reply, want + 1);
        if (k.pollers == 1) ++next;
        spin_ns(k.reply_delay_ns);
      }
      start = sc::global_ns();
      continue;
    }
    if ((++polls & k.check_mask) == 0 && sc::global_ns() - start > timeout_ns) {
      note_status(r, sr::Status::timeout);
      return;
    }
  }
  if (threadIdx.x == 0) r->messages = rounds;
}

// -- GPU producer -----------------------------------------------------------

__device__ inline std::uint32_t log2_u32(std::uint32_t v) { return 31u - __clz(v); }

// Slots of <= `kFlatFillMax` bytes: the block fills all claimed slots at once,
// 16 bytes per thread per step (four threads write one 64-byte slot).
// Larger slots: the whole block copies one slot at a time from a frame in
// device memory (group_copy) and thread 0 writes the stamps.

__device__ inline void fill_flat(const sr::RingView& view, std::uint64_t first, std::uint32_t count,
                                 std::uint32_t size, unsigned rank, unsigned threads) {
  const std::uint32_t vps = size / 16;
  const std::uint32_t shift = log2_u32(vps);
  const std::uint32_t total = count * vps;
  for (std::uint32_t i = rank; i < total; i += threads) {
    const std::uint32_t slot = i >> shift;
    const std::uint32_t v = i & (vps - 1);
    const std::uint64_t pos = first + slot;
    *reinterpret_cast<ulonglong2*>(view.payload(pos) + 16ull * v) =
        message_vector(pos, size, v, vps);
  }
}

__device__ inline void fill_copy(const sr::RingView& view, std::uint64_t first, std::uint32_t count,
                                 std::uint32_t size, const unsigned char* frame, unsigned rank,
                                 unsigned threads) {
  const std::uint32_t vps = size / 16;
  for (std::uint32_t i = 0; i < count; ++i) {
    const std::uint64_t pos = first + i;
    std::byte* dst = view.payload(pos);
    // The whole slot, so every warp store covers whole 32-byte sectors; then
    // the stamps over the first and last 16 bytes.
    sc::group_copy(dst, frame, size, rank, threads);
    __syncthreads();
    if (rank == 0) {
      *reinterpret_cast<ulonglong2*>(dst) = message_vector(pos, size, 0, vps);
      *reinterpret_cast<ulonglong2*>(dst + size - 16) = message_vector(pos, size, vps - 1, vps);
    }
  }
}

// group_copy with eight 16-byte loads in flight per thread before the
// stores (the compiler may not reorder group_copy's loads past its stores,
// as source and destination could overlap): a local helper, not a library call.
__device__ inline void fill_staged(const sr::RingView& view, std::uint64_t first,
                                   std::uint32_t count, std::uint32_t size,
                                   const unsigned char* frame, unsigned rank, unsigned threads) {
  const std::uint32_t vps = size / 16;
  const auto* src = reinterpret_cast<const ulonglong2*>(frame);
  for (std::uint32_t k = 0; k < count; ++k) {
    const std::uint64_t pos = first + k;
    auto* dst = reinterpret_cast<ulonglong2*>(view.payload(pos));
    for (std::uint32_t base = rank; base < vps; base += 8 * threads) {
      ulonglong2 v[8];
#pragma unroll
      for (int j = 0; j < 8; ++j) {
        const std::uint32_t i = base + j * threads;
        if (i < vps)
          v[j] = i == 0 || i == vps - 1 ? message_vector(pos, size, i, vps) : __ldg(src + i);
      }
#pragma unroll
      for (int j = 0; j < 8; ++j) {
        const std::uint32_t i = base + j * threads;
        if (i < vps) dst[i] = v[j];
      }
    }
  }
}

// The library path: block_claim, fill, block_commit. kStaged: the large-slot
// copy is fill_staged instead of group_copy.
// Producer: SpscDeviceProducer, or BroadcastDeviceProducer (the same calls).
template <bool kStaged, class Producer = sc::SpscDeviceProducer, class Ref>
__global__ void __launch_bounds__(1024)
    produce_kernel(Ref ref, std::uint64_t messages, std::uint32_t size, std::uint32_t batch,
                   const unsigned char* frame, std::uint64_t timeout_ns, KernelResult* r) {
  const Producer tx(ref);
  const unsigned rank = threadIdx.x, threads = blockDim.x;
  std::uint64_t done = 0;
  while (done < messages) {
    const std::uint64_t left = messages - done;
    const sc::DeviceClaim c =
        tx.block_claim(left < batch ? static_cast<std::uint32_t>(left) : batch, timeout_ns);
    if (c.count == 0) {
      if (rank == 0) note_status(r, c.status);
      break;
    }
    if (size <= kFlatFillMax)
      fill_flat(tx.view(), c.first, c.count, size, rank, threads);
    else if (kStaged)
      fill_staged(tx.view(), c.first, c.count, size, frame, rank, threads);
    else
      fill_copy(tx.view(), c.first, c.count, size, frame, rank, threads);
    tx.block_commit(c, c.count);  // slot_size == size: the claim's lengths stand
    done += c.count;
  }
  if (rank == 0) r->messages = done;
}

// Minimal hand-written producer over the same words (not a library call),
// the reference the library's block forms are measured against: the block
// sets the claimed slots' lengths in parallel, and each thread makes one
// system-scope release fence before its relaxed `committed` stores, as
// block_claim and block_commit do.
__global__ void __launch_bounds__(1024)
    produce_minimal_kernel(sc::SpscProducerRef ref, std::uint64_t messages, std::uint32_t size,
                           std::uint32_t batch, std::uint64_t timeout_ns, KernelResult* r) {
  const sr::SpscView view(ref.base, ref.geometry);
  __shared__ std::uint64_t s_first;
  __shared__ std::uint32_t s_count;
  __shared__ unsigned s_status;
  const unsigned rank = threadIdx.x, threads = blockDim.x;
  std::uint64_t done = 0;
  while (done < messages) {
    if (rank == 0) {
      const std::uint64_t left = messages - done;
      const std::uint64_t want = left < batch ? left : batch;
      const sc::Deadline deadline = sc::Deadline::after(timeout_ns);
      sc::Backoff backoff;
      sr::Status st = sr::Status::ok;
      std::uint64_t n = 0;
      for (;;) {
        st = sr::Status::ok;
        n = view.writable(*ref.cursor, want, st);
        if (n != 0 || st == sr::Status::corrupt) break;
        if (deadline.passed()) {
          st = sr::Status::timeout;
          break;
        }
        backoff.pause();
      }
      s_first = ref.cursor->head;
      s_count = static_cast<std::uint32_t>(n);
      s_status = static_cast<unsigned>(st);
    }
    __syncthreads();
    const std::uint64_t first = s_first;
    const std::uint32_t count = s_count;
    if (count == 0) {
      if (rank == 0) note_status(r, static_cast<sr::Status>(s_status));
      break;
    }
    for (std::uint32_t i = rank; i < count; i += threads) view.set_length(first + i, size);
    fill_flat(view, first, count, size, rank, threads);
    __syncthreads();
    // SYNC POINT (release, system scope, pairs with the consumer's acquire of
    // `committed`): one fence covers the block's payload and length writes,
    // ordered before it by the barrier.
    ::cuda::atomic_thread_fence(::cuda::std::memory_order_release, ::cuda::thread_scope_system);
    for (std::uint32_t i = rank; i < count; i += threads) {
      sr::atomic::store_relaxed(&view.trailer(first + i)->committed, first + i + 1);
    }
    __syncthreads();
    if (rank == 0) {
      ref.cursor->head = first + count;
      sr::atomic::store_release(&view.producer()->position, first + count);
    }
    done += count;
  }
  if (rank == 0) r->messages = done;
}

// -- GPU consumers: read and check every byte ---------------------------------

// The group (rank of threads) checks every 16 bytes of slots first ..
// first + count - 1 against message_vector, eight loads in flight per thread.
__device__ inline void check_slots(const sr::RingView& view, std::uint64_t first,
                                   std::uint32_t count, std::uint32_t size, unsigned rank,
                                   unsigned threads, unsigned long long& errors,
                                   unsigned long long& sum) {
  const std::uint32_t vps = size / 16;
  const std::uint32_t shift = log2_u32(vps);
  const std::uint32_t total = count * vps;
  for (std::uint32_t base = rank; base < total; base += 8 * threads) {
    ulonglong2 v[8];
#pragma unroll
    for (int j = 0; j < 8; ++j) {
      const std::uint32_t i = base + j * threads;
      if (i < total) {
        v[j] = *reinterpret_cast<const ulonglong2*>(view.payload(first + (i >> shift)) +
                                                    16ull * (i & (vps - 1)));
      }
    }
#pragma unroll
    for (int j = 0; j < 8; ++j) {
      const std::uint32_t i = base + j * threads;
      if (i < total) {
        const ulonglong2 want = message_vector(first + (i >> shift), size, i & (vps - 1), vps);
        errors += (v[j].x != want.x) | (v[j].y != want.y);
        sum += v[j].x ^ v[j].y;
      }
    }
  }
  for (std::uint32_t i = rank; i < count; i += threads) {
    errors += view.committed_length(first + i) != size;
  }
}

__device__ inline void report_checks(KernelResult* r, unsigned long long errors,
                                     unsigned long long sum) {
  errors = block_sum(errors);
  sum = block_sum(sum);
  if ((threadIdx.x & 31u) == 0) {
    atomicAdd(&r->errors, errors);
    atomicAdd(&r->sum, sum);
  }
}

// One block: block_peek, check, block_release.
__global__ void __launch_bounds__(1024)
    consume_kernel(sc::SpscConsumerRef ref, std::uint64_t messages, std::uint32_t size,
                   std::uint32_t batch, std::uint64_t timeout_ns, KernelResult* r) {
  const sc::SpscDeviceConsumer rx(ref);
  const unsigned rank = threadIdx.x, threads = blockDim.x;
  unsigned long long errors = 0, sum = 0;
  std::uint64_t done = 0;
  while (done < messages) {
    const std::uint64_t left = messages - done;
    const sc::DeviceClaim c =
        rx.block_peek(left < batch ? static_cast<std::uint32_t>(left) : batch, timeout_ns);
    if (c.count == 0) {
      if (rank == 0) note_status(r, c.status);
      break;
    }
    check_slots(rx.view(), c.first, c.count, size, rank, threads, errors, sum);
    rx.block_release(c, c.count);
    done += c.count;
  }
  report_checks(r, errors, sum);
  if (rank == 0) r->messages = done;
}

// Every block of the grid: GridReader batches from `from`, check, release.
__global__ void __launch_bounds__(1024)
    consume_grid_kernel(sc::SpscConsumerRef ref, std::uint64_t from, std::uint64_t messages,
                        std::uint32_t size, std::uint32_t batch, std::uint64_t timeout_ns,
                        KernelResult* r) {
  sc::GridReader grid(sc::SpscDeviceConsumer(ref), from, messages, batch);
  const unsigned rank = threadIdx.x, threads = blockDim.x;
  unsigned long long errors = 0, sum = 0, done = 0;
  for (;;) {
    const sc::DeviceClaim c = grid.next(timeout_ns);
    if (c.count == 0) {
      if (rank == 0) note_status(r, c.status);
      break;
    }
    check_slots(grid.view(), c.first, c.count, size, rank, threads, errors, sum);
    const sr::Status st = grid.release(c, timeout_ns);
    if (st != sr::Status::ok) {
      if (rank == 0) note_status(r, st);
      break;
    }
    done += c.count;
  }
  report_checks(r, errors, sum);
  if (rank == 0) atomicAdd(&r->messages, done);
}

// -- round trips --------------------------------------------------------------

__device__ inline unsigned long long ping_errors(const unsigned char* p, std::uint32_t got,
                                                 std::uint32_t size, std::uint64_t seq) {
  std::uint64_t first;
  memcpy(&first, p, 8);
  unsigned long long bad = (got != size) | (first != seq);
  if (size >= 16) {
    std::uint64_t last;
    memcpy(&last, p + size - 8, 8);
    bad |= last != ~seq;
  }
  return bad;
}

// Thread 0: pop() the ping, push() it back.
__global__ void echo_pop_push_kernel(sc::SpscConsumerRef in, sc::SpscProducerRef out,
                                     std::uint64_t rounds, std::uint32_t size,
                                     std::uint64_t timeout_ns, KernelResult* r) {
  if (threadIdx.x != 0) return;
  const sc::SpscDeviceConsumer rx(in);
  const sc::SpscDeviceProducer tx(out);
  alignas(16) unsigned char buf[64];
  for (std::uint64_t i = 0; i < rounds; ++i) {
    std::uint32_t got = 0;
    sr::Status s = rx.pop(buf, sizeof buf, got, timeout_ns);
    if (s != sr::Status::ok) return note_status(r, s);
    r->errors += ping_errors(buf, got, size, i);
    s = tx.push(buf, got, timeout_ns);
    if (s != sr::Status::ok) return note_status(r, s);
  }
  r->messages = rounds;
}

// One warp: warp_pop() the ping (each lane loads its share of the words at
// once), then push it back: with the whole warp (kWarpPush: warp_push_one(),
// every lane storing 16 bytes), or from lane 0 (push(): one thread's stores
// do not wait on PCIe, but leave 16 bytes at a time).
template <bool kWarpPush>
__global__ void echo_warp_kernel(sc::SpscConsumerRef in, sc::SpscProducerRef out,
                                 std::uint64_t rounds, std::uint32_t size, std::uint64_t timeout_ns,
                                 KernelResult* r) {
  if (threadIdx.x >= 32) return;
  const sc::SpscDeviceConsumer rx(in);
  const sc::SpscDeviceProducer tx(out);
  __shared__ alignas(16) unsigned char buf[64];
  for (std::uint64_t i = 0; i < rounds; ++i) {
    std::uint32_t got = 0;
    sr::Status s = rx.warp_pop(buf, sizeof buf, got, timeout_ns);
    if (s == sr::Status::ok) {
      if constexpr (kWarpPush) {
        s = tx.warp_push_one(buf, got, timeout_ns);
      } else {
        if (threadIdx.x == 0) s = tx.push(buf, got, timeout_ns);
        s = static_cast<sr::Status>(__shfl_sync(sc::kFullWarp, static_cast<int>(s), 0));
      }
    }
    if (s != sr::Status::ok) {
      if (threadIdx.x == 0) note_status(r, s);
      return;
    }
    if (threadIdx.x == 0) r->errors += ping_errors(buf, got, size, i);
    __syncwarp();  // lane 0 has checked buf before the next pop writes it
  }
  if (threadIdx.x == 0) r->messages = rounds;
}

// One warp: warp_peek(1), lane 0 push()es the reply from the slot, then
// warp_release: the release is off the reply's path.
__global__ void echo_peek_push_kernel(sc::SpscConsumerRef in, sc::SpscProducerRef out,
                                      std::uint64_t rounds, std::uint32_t size,
                                      std::uint64_t timeout_ns, KernelResult* r) {
  if (threadIdx.x >= 32) return;
  const sc::SpscDeviceConsumer rx(in);
  const sc::SpscDeviceProducer tx(out);
  for (std::uint64_t i = 0; i < rounds; ++i) {
    const sc::DeviceClaim c = rx.warp_peek(1, timeout_ns);
    if (c.count == 0) {
      if (threadIdx.x == 0) note_status(r, c.status);
      return;
    }
    sr::Status s = sr::Status::ok;
    if (threadIdx.x == 0) {
      const sr::ReadSlot m = rx.slot(c, 0);
      s = tx.push(m.data, m.size, timeout_ns);
      r->errors += ping_errors(reinterpret_cast<const unsigned char*>(m.data), m.size, size, i);
    }
    s = static_cast<sr::Status>(__shfl_sync(sc::kFullWarp, static_cast<int>(s), 0));
    if (s != sr::Status::ok) {
      if (threadIdx.x == 0) note_status(r, s);
      return;
    }
    rx.warp_release(c, 1);
  }
  if (threadIdx.x == 0) r->messages = rounds;
}

// Minimal hand-written echo over the same words (not a library call): a
// tight poll of `committed`; the length and the payload (slots of <= 64
// bytes, read whole) loaded together, one round trip; the reply published
// before the ping's slot is released; no loads of the CPU sleeper counts (a
// GPU cannot wake a sleeper anyway).
__global__ void echo_minimal_kernel(sc::SpscConsumerRef in, sc::SpscProducerRef out,
                                    std::uint64_t rounds, std::uint32_t size,
                                    std::uint64_t timeout_ns, KernelResult* r) {
  if (threadIdx.x != 0) return;
  const sr::SpscView rx(in.base, in.geometry);
  const sr::SpscView tx(out.base, out.geometry);
  // Whole 16-byte vectors: a slot of 8 bytes still has 16 before its trailer.
  const auto vectors = static_cast<std::uint32_t>((rx.slot_size() + 15) / 16);
  if (vectors > 4 || tx.slot_size() < rx.slot_size()) return note_status(r, sr::Status::too_large);
  std::uint64_t tail = in.cursor->tail;
  sr::SpscProducerCursor cursor = *out.cursor;
  for (std::uint64_t i = 0; i < rounds; ++i) {
    const std::uint64_t start = sc::global_ns();
    std::uint32_t polls = 0;
    // SYNC POINT (acquire, pairs with the CPU producer's release of `committed`)
    while (sr::atomic::load_acquire(&rx.trailer(tail)->committed) != tail + 1) {
      if ((++polls & 255u) == 0 && sc::global_ns() - start > timeout_ns) {
        return note_status(r, sr::Status::timeout);
      }
    }
    const std::uint32_t length = rx.committed_length(tail);
    ulonglong2 v[4];
    const auto* src = reinterpret_cast<const ulonglong2*>(rx.payload(tail));
#pragma unroll
    for (std::uint32_t k = 0; k < 4; ++k) {
      if (k < vectors) v[k] = src[k];
    }
    if (!rx.length_ok(length)) return note_status(r, sr::Status::corrupt);
    sr::Status st = sr::Status::ok;
    while (tx.writable(cursor, 1, st) == 0) {
      if (st == sr::Status::corrupt || sc::global_ns() - start > timeout_ns) {
        return note_status(r, st == sr::Status::ok ? sr::Status::timeout : st);
      }
    }
    auto* dst = reinterpret_cast<ulonglong2*>(tx.payload(cursor.head));
#pragma unroll
    for (std::uint32_t k = 0; k < 4; ++k) {
      if (k < vectors) dst[k] = v[k];
    }
    tx.set_length(cursor.head, length);
    // SYNC POINT (release, pairs with the CPU consumer's acquire of `committed`)
    sr::atomic::store_release(&tx.trailer(cursor.head)->committed, cursor.head + 1);
    ++cursor.head;
    ++tail;
    sr::atomic::store_release(&tx.producer()->position, cursor.head);
    // SYNC POINT (release, pairs with the CPU producer's acquire of the tail)
    sr::atomic::store_release(&rx.consumer()->position, tail);
    r->errors += ping_errors(reinterpret_cast<const unsigned char*>(v), length, size, i);
  }
  in.cursor->tail = tail;
  *out.cursor = cursor;
  r->messages = rounds;
}

}  // namespace gpu_bench
