// The baseline MPMC ring: Vyukov's bounded queue in shared memory, the
// plainest many-to-many ring that is still done right, measured in the same
// run as shmring's MPMC ring (bench_rings.cpp, plain_mpmc/...) so that its
// figures read against what the algorithm class gets on this machine, with
// none of shmring's claim records, recovery, sleepers or validation.
//
//   - an enqueue and a dequeue counter, each on its own 128-byte block, each
//     advanced with a CAS by the side that owns it;
//   - one queue of cells (PlainCells): a turn word, a length and the payload
//     each.
//
// The interface is the copy API of shmring's handles, so the throughput
// harness (throughput_harness.hpp) drives it as it drives shmring's rings;
// the region comes from a SharedRegion made before the agents fork.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <new>
#include <span>

#include "bench_support.hpp"
#include "shmring/layout.hpp"
#include "shmring/status.hpp"

namespace shmring::bench {

// The cells of one bounded queue in Vyukov's manner: each a turn word, a
// length and the payload. The turn is position when the cell is free for
// position's message, position + 1 when it holds it, position + capacity
// once read. The plain MPMC ring is one such queue; the lanes baseline
// (plain_lanes_ring.hpp) one per producer.
class PlainCells {
 public:
  static constexpr std::size_t kPayload = sizeof(std::uint64_t) + sizeof(std::uint32_t);
  static std::size_t stride(std::size_t slot_size) noexcept {
    return round_up(kPayload + slot_size, 64);
  }
  static std::size_t bytes(std::uint64_t capacity, std::size_t slot_size) noexcept {
    return capacity * stride(slot_size);
  }

  PlainCells(std::byte* base, std::uint64_t capacity, std::size_t slot_size) noexcept
      : base_(base), capacity_(capacity), stride_(stride(slot_size)) {}
  void init() const noexcept {
    for (std::uint64_t i = 0; i < capacity_; ++i) new (turn(i)) std::atomic<std::uint64_t>(i);
  }

  // The turn of `pos`'s cell against a producer's claim of `pos`: < 0 a lap
  // behind (full), 0 free (the consumer of its last lap is done with it),
  // > 0 taken by another producer.
  std::int64_t write_lag(std::uint64_t pos) const noexcept {
    // SYNC POINT (acquire, pairs with pop()'s release).
    return static_cast<std::int64_t>(turn(pos)->load(std::memory_order_acquire) - pos);
  }
  // Fills the cell of `pos` (claimed, free) and hands it to the consumers.
  void write(std::uint64_t pos, std::span<const std::byte> message) const noexcept {
    std::byte* c = cell(pos);
    const auto size = static_cast<std::uint32_t>(message.size());
    std::memcpy(c + sizeof(std::uint64_t), &size, sizeof size);
    if (size != 0) std::memcpy(c + kPayload, message.data(), size);
    // SYNC POINT (release, pairs with pop()'s acquire): length and payload.
    turn(pos)->store(pos + 1, std::memory_order_release);
  }

  // Claims the next full cell on the consumers' `counter` and copies its
  // message out: ok, would_block (empty) or too_large (the message is
  // dropped: the callers size the buffer).
  Status pop(std::atomic<std::uint64_t>& counter, std::span<std::byte> buffer,
             std::size_t& size) const noexcept {
    std::uint64_t pos = counter.load(std::memory_order_relaxed);
    for (;;) {
      // SYNC POINT (acquire, pairs with write()'s release): the message.
      const std::uint64_t t = turn(pos)->load(std::memory_order_acquire);
      const auto lag = static_cast<std::int64_t>(t - (pos + 1));
      if (lag < 0) return Status::would_block;  // not written yet: empty
      if (lag > 0) {
        pos = counter.load(std::memory_order_relaxed);  // taken: look again
      } else if (counter.compare_exchange_weak(pos, pos + 1, std::memory_order_relaxed)) {
        break;
      }
    }
    const std::byte* c = cell(pos);
    std::uint32_t length = 0;
    std::memcpy(&length, c + sizeof(std::uint64_t), sizeof length);
    size = length;
    if (length <= buffer.size() && length != 0) std::memcpy(buffer.data(), c + kPayload, length);
    // SYNC POINT (release, pairs with write_lag()): the cell is free for the
    // message one lap on.
    turn(pos)->store(pos + capacity_, std::memory_order_release);
    return length <= buffer.size() ? Status::ok : Status::too_large;
  }

 private:
  std::byte* cell(std::uint64_t pos) const noexcept {
    return base_ + (pos & (capacity_ - 1)) * stride_;
  }
  std::atomic<std::uint64_t>* turn(std::uint64_t pos) const noexcept {
    return std::launder(reinterpret_cast<std::atomic<std::uint64_t>*>(cell(pos)));
  }

  std::byte* base_;
  std::uint64_t capacity_;  // a power of two
  std::size_t stride_;
};

struct PlainMpmcControl {
  alignas(128) std::atomic<std::uint64_t> enqueue{0};  // read-modify-written by producers
  alignas(128) std::atomic<std::uint64_t> dequeue{0};  // read-modify-written by consumers
};

class PlainMpmcRing {
 public:
  PlainMpmcRing(std::uint64_t capacity, std::size_t slot_size)
      : slot_size_(slot_size),
        region_(sizeof(PlainMpmcControl) + PlainCells::bytes(capacity, slot_size)),
        cells_(static_cast<std::byte*>(region_.data()) + sizeof(PlainMpmcControl), capacity,
               slot_size) {
    new (region_.data()) PlainMpmcControl{};
    cells_.init();
    prefault(region_.data(), region_.size());
  }

  class Producer {
   public:
    explicit Producer(PlainMpmcRing& r) noexcept : r_(r) {}
    Status try_push(std::span<const std::byte> message) noexcept {
      if (message.size() > r_.slot_size_) return Status::too_large;
      std::atomic<std::uint64_t>& counter = r_.control()->enqueue;
      std::uint64_t pos = counter.load(std::memory_order_relaxed);
      for (;;) {
        const std::int64_t lag = r_.cells_.write_lag(pos);
        if (lag < 0) return Status::would_block;  // a lap behind: full
        if (lag > 0) {
          pos = counter.load(std::memory_order_relaxed);  // taken: look again
        } else if (counter.compare_exchange_weak(pos, pos + 1, std::memory_order_relaxed)) {
          break;
        }
      }
      r_.cells_.write(pos, message);
      return Status::ok;
    }

   private:
    PlainMpmcRing& r_;
  };

  class Consumer {
   public:
    explicit Consumer(PlainMpmcRing& r) noexcept : r_(r) {}
    Status try_pop(std::span<std::byte> buffer, std::size_t& size) noexcept {
      return r_.cells_.pop(r_.control()->dequeue, buffer, size);
    }

   private:
    PlainMpmcRing& r_;
  };

  template <class Body>
  void producer_side(unsigned /*index*/, bool /*own_mapping*/, Body&& body) {
    Producer tx(*this);
    body(tx);
  }
  template <class Body>
  void consumer_side(bool /*own_mapping*/, Body&& body) {
    Consumer rx(*this);
    body(rx);
  }
  void all_mapped() noexcept {}

 private:
  PlainMpmcControl* control() const noexcept {
    return static_cast<PlainMpmcControl*>(region_.data());
  }

  std::size_t slot_size_;
  SharedRegion region_;
  PlainCells cells_;
};

}  // namespace shmring::bench
