// A baseline for many producers: one lane per producer, the layout of
// moodycamel::ConcurrentQueue (a queue per producer) in shared memory, with
// no claim records, recovery, sleepers or validation. Measured in the same
// run as shmring's MPMC ring and the plain MPMC ring (bench_rings.cpp,
// plain_lanes/...), it shows what a ring whose producers never share a
// counter gets on this machine: the plain MPMC ring's producers all CAS one
// enqueue counter, and with 4 producers that counter is the limit.
//
//   - lane i takes producer i's messages only: its producer keeps the
//     position in its own memory and never read-modify-writes anything;
//   - each lane is one queue of cells (PlainCells, plain_mpmc_ring.hpp) with
//     a dequeue counter that consumers advance with a CAS;
//   - a consumer tries its home lane (handed out in turn) first, then the
//     others, so no lane is left unread.
// Each producer's messages come out in its order; there is no order between
// producers, as with ConcurrentQueue.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <new>
#include <span>
#include <vector>

#include "bench_support.hpp"
#include "plain_mpmc_ring.hpp"
#include "shmring/status.hpp"

namespace shmring::bench {

struct PlainLanesControl {
  alignas(128) std::atomic<std::uint32_t> next_home{0};  // consumers' home lanes, in turn
};

// One per lane, before its cells.
struct PlainLaneControl {
  alignas(128) std::atomic<std::uint64_t> dequeue{0};  // read-modify-written by consumers
};

class PlainLanesRing {
 public:
  // `lanes` lanes of `capacity` cells (a power of two); producer i writes
  // lane i, so at most `lanes` producers.
  PlainLanesRing(unsigned lanes, std::uint64_t capacity, std::size_t slot_size)
      : slot_size_(slot_size),
        lane_bytes_(sizeof(PlainLaneControl) + PlainCells::bytes(capacity, slot_size)),
        region_(sizeof(PlainLanesControl) + lanes * lane_bytes_) {
    new (region_.data()) PlainLanesControl{};
    for (unsigned l = 0; l < lanes; ++l) {
      new (lane(l)) PlainLaneControl{};
      cells_.emplace_back(reinterpret_cast<std::byte*>(lane(l)) + sizeof(PlainLaneControl),
                          capacity, slot_size);
      cells_.back().init();
    }
    prefault(region_.data(), region_.size());
  }

  class Producer {
   public:
    Producer(PlainLanesRing& r, unsigned lane) noexcept : r_(r), cells_(r.cells_[lane]) {}
    Status try_push(std::span<const std::byte> message) noexcept {
      if (message.size() > r_.slot_size_) return Status::too_large;
      // The lane's only producer: the cell is free, or a lap behind (full).
      if (cells_.write_lag(pos_) != 0) return Status::would_block;
      cells_.write(pos_++, message);
      return Status::ok;
    }

   private:
    PlainLanesRing& r_;
    const PlainCells& cells_;
    std::uint64_t pos_ = 0;  // the lane's only producer: no shared counter
  };

  class Consumer {
   public:
    Consumer(PlainLanesRing& r, unsigned home) noexcept : r_(r), home_(home) {}
    Status try_pop(std::span<std::byte> buffer, std::size_t& size) noexcept {
      // The home lane first, then each other one once: empty only when all
      // are. Starting at home every time keeps the consumers spread over
      // the lanes; one that stayed where it last found a message would
      // gather with the others on one lane and its counter.
      const auto lanes = static_cast<unsigned>(r_.cells_.size());
      for (unsigned tried = 0, l = home_; tried < lanes; ++tried, l = l + 1 == lanes ? 0 : l + 1) {
        const Status s = r_.cells_[l].pop(r_.lane(l)->dequeue, buffer, size);
        if (s != Status::would_block) return s;
      }
      return Status::would_block;
    }

   private:
    PlainLanesRing& r_;
    unsigned home_;
  };

  template <class Body>
  void producer_side(unsigned index, bool /*own_mapping*/, Body&& body) {
    Producer tx(*this, index % static_cast<unsigned>(cells_.size()));
    body(tx);
  }
  template <class Body>
  void consumer_side(bool /*own_mapping*/, Body&& body) {
    const std::uint32_t home = control()->next_home.fetch_add(1, std::memory_order_relaxed);
    Consumer rx(*this, home % static_cast<unsigned>(cells_.size()));
    body(rx);
  }
  void all_mapped() noexcept {}

 private:
  PlainLanesControl* control() const noexcept {
    return static_cast<PlainLanesControl*>(region_.data());
  }
  PlainLaneControl* lane(unsigned l) const noexcept {
    return std::launder(reinterpret_cast<PlainLaneControl*>(
        static_cast<std::byte*>(region_.data()) + sizeof(PlainLanesControl) + l * lane_bytes_));
  }

  std::size_t slot_size_;
  std::size_t lane_bytes_;
  SharedRegion region_;
  std::vector<PlainCells> cells_;  // lane i's cells, addresses in this process's mapping
};

}  // namespace shmring::bench
