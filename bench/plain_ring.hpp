// The baseline ring: the plainest shared-memory SPSC ring that is still
// done right, measured in the same run as shmring so that shmring's figures
// read as ratios against what a hundred lines of code get on this machine.
//
//   - head (producer) and tail (consumer) on their own 128-byte blocks,
//     published with release stores and read with acquire loads;
//   - each side keeps a cached copy of the other's index and re-reads the
//     shared one only when the cache says full (producer) or empty (consumer);
//   - fixed slots (a length word, then the payload), no trailer, no sleeper
//     handshake, no validation: the callers spin.
//
// The interface is the copy API of shmring's handles (try_push / try_pop
// returning a Status), so the same Sender, receive_all and round-trip code
// drive it.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <new>
#include <span>

#include "shmring/status.hpp"

namespace shmring::bench {

struct PlainRingControl {
  alignas(128) std::atomic<std::uint64_t> head{0};  // written by the producer
  alignas(128) std::atomic<std::uint64_t> tail{0};  // written by the consumer
};

// Bytes a ring of `capacity` slots of `slot_size` bytes needs.
inline std::size_t plain_ring_stride(std::size_t slot_size) noexcept {
  return (slot_size + sizeof(std::uint32_t) + 63) & ~std::size_t{63};
}
inline std::size_t plain_ring_bytes(std::uint64_t capacity, std::size_t slot_size) noexcept {
  return sizeof(PlainRingControl) + capacity * plain_ring_stride(slot_size);
}

// A view over the ring's memory (from a SharedRegion, so forked children
// share it); `capacity` a power of two.
class PlainRing {
 public:
  PlainRing(void* memory, std::uint64_t capacity, std::size_t slot_size) noexcept
      : control_(static_cast<PlainRingControl*>(memory)),
        slots_(static_cast<std::byte*>(memory) + sizeof(PlainRingControl)),
        mask_(capacity - 1),
        capacity_(capacity),
        slot_size_(slot_size),
        stride_(plain_ring_stride(slot_size)) {}

  static void initialise(void* memory) noexcept { new (memory) PlainRingControl{}; }

 protected:
  std::byte* slot(std::uint64_t position) const noexcept {
    return slots_ + (position & mask_) * stride_;
  }
  PlainRingControl* control_;
  std::byte* slots_;
  std::uint64_t mask_;
  std::uint64_t capacity_;
  std::size_t slot_size_;
  std::size_t stride_;
};

class PlainProducer : PlainRing {
 public:
  using PlainRing::PlainRing;

  Status try_push(std::span<const std::byte> message) noexcept {
    if (message.size() > slot_size_) return Status::too_large;
    if (head_ - cached_tail_ == capacity_) {
      // SYNC POINT (acquire, pairs with try_pop's tail store): the consumer
      // is done with every slot below the tail.
      cached_tail_ = control_->tail.load(std::memory_order_acquire);
      if (head_ - cached_tail_ == capacity_) return Status::would_block;
    }
    std::byte* s = slot(head_);
    const auto size = static_cast<std::uint32_t>(message.size());
    std::memcpy(s, &size, sizeof size);
    if (size != 0) std::memcpy(s + sizeof size, message.data(), size);
    // SYNC POINT (release, pairs with try_pop's head load): length and
    // payload of the slot visible to the consumer.
    control_->head.store(++head_, std::memory_order_release);
    return Status::ok;
  }

 private:
  std::uint64_t head_ = 0;
  std::uint64_t cached_tail_ = 0;
};

class PlainConsumer : PlainRing {
 public:
  using PlainRing::PlainRing;

  Status try_pop(std::span<std::byte> buffer, std::size_t& size) noexcept {
    if (tail_ == cached_head_) {
      // SYNC POINT (acquire, pairs with try_push's head store): the slots
      // below the head are written.
      cached_head_ = control_->head.load(std::memory_order_acquire);
      if (tail_ == cached_head_) return Status::would_block;
    }
    const std::byte* s = slot(tail_);
    std::uint32_t length = 0;
    std::memcpy(&length, s, sizeof length);
    size = length;
    if (length > buffer.size()) return Status::too_large;
    if (length != 0) std::memcpy(buffer.data(), s + sizeof length, length);
    // SYNC POINT (release, pairs with try_push's tail load): the slot may be
    // rewritten.
    control_->tail.store(++tail_, std::memory_order_release);
    return Status::ok;
  }

 private:
  std::uint64_t tail_ = 0;
  std::uint64_t cached_head_ = 0;
};

}  // namespace shmring::bench
