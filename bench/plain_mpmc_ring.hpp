// The baseline MPMC ring: Vyukov's bounded queue in shared memory, the
// plainest many-to-many ring that is still done right, measured in the same
// run as shmring's MPMC ring (bench_rings.cpp, plain_mpmc/...) so that its
// figures read against what the algorithm class gets on this machine, with
// none of shmring's claim records, recovery, sleepers or validation.
//
//   - an enqueue and a dequeue counter, each on its own 128-byte block, each
//     advanced with a CAS by the side that owns it;
//   - each cell a turn word, a length and the payload: the turn is position
//     when the cell is free for position's message, position + 1 when it
//     holds it; a consumer hands the cell on with position + capacity.
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

struct PlainMpmcControl {
  alignas(128) std::atomic<std::uint64_t> enqueue{0};  // read-modify-written by producers
  alignas(128) std::atomic<std::uint64_t> dequeue{0};  // read-modify-written by consumers
};

class PlainMpmcRing {
 public:
  PlainMpmcRing(std::uint64_t capacity, std::size_t slot_size)
      : capacity_(capacity),
        slot_size_(slot_size),
        stride_(round_up(kPayload + slot_size, 64)),
        region_(bytes()) {
    new (region_.data()) PlainMpmcControl{};
    for (std::uint64_t i = 0; i < capacity; ++i) new (turn(i)) std::atomic<std::uint64_t>(i);
    prefault(region_.data(), bytes());
  }

  class Producer {
   public:
    explicit Producer(PlainMpmcRing& r) noexcept : r_(r) {}
    Status try_push(std::span<const std::byte> message) noexcept {
      if (message.size() > r_.slot_size_) return Status::too_large;
      std::atomic<std::uint64_t>& counter = r_.control()->enqueue;
      std::uint64_t pos = counter.load(std::memory_order_relaxed);
      for (;;) {
        // SYNC POINT (acquire, pairs with try_pop's release): the consumer
        // of the cell's last lap is done with it.
        const std::uint64_t t = r_.turn(pos)->load(std::memory_order_acquire);
        const auto lag = static_cast<std::int64_t>(t - pos);
        if (lag < 0) return Status::would_block;  // a lap behind: full
        if (lag > 0) {
          pos = counter.load(std::memory_order_relaxed);  // taken: look again
        } else if (counter.compare_exchange_weak(pos, pos + 1, std::memory_order_relaxed)) {
          break;
        }
      }
      std::byte* cell = r_.cell(pos);
      const auto size = static_cast<std::uint32_t>(message.size());
      std::memcpy(cell + sizeof(std::uint64_t), &size, sizeof size);
      if (size != 0) std::memcpy(cell + kPayload, message.data(), size);
      // SYNC POINT (release, pairs with try_pop's acquire): length and payload.
      r_.turn(pos)->store(pos + 1, std::memory_order_release);
      return Status::ok;
    }

   private:
    PlainMpmcRing& r_;
  };

  class Consumer {
   public:
    explicit Consumer(PlainMpmcRing& r) noexcept : r_(r) {}
    Status try_pop(std::span<std::byte> buffer, std::size_t& size) noexcept {
      std::atomic<std::uint64_t>& counter = r_.control()->dequeue;
      std::uint64_t pos = counter.load(std::memory_order_relaxed);
      for (;;) {
        // SYNC POINT (acquire, pairs with try_push's release): the message.
        const std::uint64_t t = r_.turn(pos)->load(std::memory_order_acquire);
        const auto lag = static_cast<std::int64_t>(t - (pos + 1));
        if (lag < 0) return Status::would_block;  // not written yet: empty
        if (lag > 0) {
          pos = counter.load(std::memory_order_relaxed);
        } else if (counter.compare_exchange_weak(pos, pos + 1, std::memory_order_relaxed)) {
          break;
        }
      }
      const std::byte* cell = r_.cell(pos);
      std::uint32_t length = 0;
      std::memcpy(&length, cell + sizeof(std::uint64_t), sizeof length);
      size = length;
      // A message too large for the buffer is dropped: the callers size it.
      if (length <= buffer.size() && length != 0)
        std::memcpy(buffer.data(), cell + kPayload, length);
      // SYNC POINT (release, pairs with try_push's acquire): the cell is free
      // for the message one lap on.
      r_.turn(pos)->store(pos + r_.capacity_, std::memory_order_release);
      return length <= buffer.size() ? Status::ok : Status::too_large;
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
  static constexpr std::size_t kPayload = sizeof(std::uint64_t) + sizeof(std::uint32_t);

  std::size_t bytes() const noexcept { return sizeof(PlainMpmcControl) + capacity_ * stride_; }
  PlainMpmcControl* control() const noexcept {
    return static_cast<PlainMpmcControl*>(region_.data());
  }
  std::byte* cell(std::uint64_t pos) const noexcept {
    return static_cast<std::byte*>(region_.data()) + sizeof(PlainMpmcControl) +
           (pos & (capacity_ - 1)) * stride_;
  }
  std::atomic<std::uint64_t>* turn(std::uint64_t pos) const noexcept {
    return std::launder(reinterpret_cast<std::atomic<std::uint64_t>*>(cell(pos)));
  }

  std::uint64_t capacity_;  // a power of two
  std::size_t slot_size_;
  std::size_t stride_;
  SharedRegion region_;
};

}  // namespace shmring::bench
