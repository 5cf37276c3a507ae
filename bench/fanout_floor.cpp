// The fan-out floor: the least a one-producer, N-subscriber ring can do on
// this machine, run through the same harness as shmring's broadcast ring and
// iceoryx (fanout_harness.hpp), so that the per-subscriber rates of all three
// come from one run. No library: a shared region, a spin, the harness's
// checks of every message. Two layouts of the slots, the two a broadcast
// ring can take:
//   slot    each slot is the payload's lines plus one line with the slot's
//           `committed` word (position + 1), which subscribers poll: the
//           layout of shmring's slots (a 64-byte message moves two lines);
//   cursor  the payloads are packed (a 64-byte message is one line) and one
//           line holds the published head, which subscribers read once per
//           batch (the LMAX Disruptor's and Aeron's layout).
// Reliable, as shmring's broadcast benchmark is: every subscriber stores its
// cursor in a line of its own after each receive, and the publisher rescans
// those cursors only when its cached room runs out. So what the floor counts
// is the line traffic of the layout, which no ring on the same layout avoids:
// every message's lines go from the publisher's cache to every subscriber's,
// and a lap later back. If shmring's ratio of 4 to 1 subscribers sits near a
// floor's, the ratio is the machine's, not the ring's.
#include <algorithm>
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include "fanout_harness.hpp"
#include "shmring/layout.hpp"

namespace shmring::bench::peers {

namespace {

constexpr std::size_t kLine = 64;
constexpr std::size_t kBlock = 128;  // a word of its own, out of an adjacent-line pair

enum class FloorLayout { slot, cursor };

template <FloorLayout Layout>
class FloorTransport {
 public:
  static constexpr bool kProcesses = true;

  explicit FloorTransport(const FanoutConfig& c)
      : config_(c),
        payload_(shmring::round_up(c.size, kLine)),
        stride_(Layout == FloorLayout::slot ? payload_ + kLine : payload_),
        region_(bytes()) {}  // a new shared-memory object reads as zeros

  struct Agent {
    explicit Agent(FloorTransport&) {}
  };

  class Publisher {
   public:
    Publisher(FloorTransport& t, Agent&) : t_(t) { prefault(t.region_.data(), t.bytes()); }
    std::size_t publish(MessageTemplate& m, unsigned producer, std::uint64_t first, std::size_t max,
                        Spinner& spinner, const char*& problem) noexcept {
      const std::uint64_t depth = t_.config_.depth;
      for (;;) {
        std::uint64_t room = depth - (head_ - limit_);
        if (room == 0) {
          limit_ = t_.lowest_cursor(head_);
          room = depth - (head_ - limit_);
        }
        if (room != 0) {
          const std::size_t n = static_cast<std::size_t>(std::min<std::uint64_t>(max, room));
          for (std::size_t i = 0; i < n; ++i) {
            const std::uint64_t pos = head_ + i;
            std::byte* slot = t_.slot(pos);
            if (t_.config_.zero_copy) {
              m.write(slot, make_tag(producer, first + i));
            } else {
              std::memcpy(slot, m.stamped(make_tag(producer, first + i)).data(), m.size());
            }
            if constexpr (Layout == FloorLayout::slot) {
              atomic::store_release(t_.committed(pos), pos + 1);
            }
          }
          head_ += n;
          if constexpr (Layout == FloorLayout::cursor) atomic::store_release(t_.head(), head_);
          spinner.progress();
          return n;
        }
        if (!spinner.failed_attempt()) return problem = "stalled waiting for a subscriber", 0;
      }
    }

   private:
    FloorTransport& t_;
    std::uint64_t head_ = 0;
    std::uint64_t limit_ = 0;  // the lowest subscriber cursor last seen
  };

  class Subscriber {
   public:
    Subscriber(FloorTransport& t, Agent&, unsigned index)
        : t_(t), cursor_(t.cursor(index)), buffer_(t.config_.size) {
      prefault(t.region_.data(), t.bytes());
    }
    std::size_t receive(const MessageTemplate& m, std::uint64_t* tags, std::size_t max,
                        Spinner& spinner, const char*& problem) noexcept {
      for (;;) {
        std::size_t n = 0;
        if constexpr (Layout == FloorLayout::slot) {
          while (n < max && atomic::load_acquire(t_.committed(next_ + n)) == next_ + n + 1) ++n;
        } else {
          if (seen_ == next_) seen_ = atomic::load_acquire(t_.head());
          n = static_cast<std::size_t>(std::min<std::uint64_t>(max, seen_ - next_));
        }
        if (n != 0) {
          for (std::size_t i = 0; i < n; ++i) {
            const std::byte* slot = t_.slot(next_ + i);
            bool intact;
            if (t_.config_.zero_copy) {
              intact = m.check_in_place(slot, m.size(), tags[i]);
            } else {
              std::memcpy(buffer_.data(), slot, m.size());
              intact = m.check_copied(buffer_.data(), m.size(), tags[i]);
            }
            if (!intact) return problem = "message damaged", 0;
          }
          next_ += n;
          atomic::store_release(cursor_, next_);
          spinner.progress();
          return n;
        }
        if (!spinner.failed_attempt()) return problem = "stalled waiting for the publisher", 0;
      }
    }

   private:
    FloorTransport& t_;
    std::uint64_t* cursor_;
    std::uint64_t next_ = 0;
    std::uint64_t seen_ = 0;  // cursor layout: the head last read
    std::vector<std::byte> buffer_;
  };

  // The round trip's return channel, subscriber 0 -> publisher: the tag in
  // one word, then a count of replies (one reply is in flight at a time).
  class EchoSender {
   public:
    EchoSender(FloorTransport& t, Agent&) : t_(t) {}
    const char* send(MessageTemplate&, std::uint64_t tag, Spinner& spinner) noexcept {
      atomic::store_relaxed(t_.echo() + 1, tag);
      atomic::store_release(t_.echo(), ++sent_);
      spinner.progress();
      return nullptr;
    }

   private:
    FloorTransport& t_;
    std::uint64_t sent_ = 0;
  };
  class EchoReceiver {
   public:
    EchoReceiver(FloorTransport& t, Agent&) : t_(t) {}
    const char* receive(const MessageTemplate&, std::uint64_t& tag, Spinner& spinner) noexcept {
      while (atomic::load_acquire(t_.echo()) == taken_) {
        if (!spinner.failed_attempt()) return "stalled waiting for the reply";
      }
      spinner.progress();
      ++taken_;
      tag = atomic::load_relaxed(t_.echo() + 1);
      return nullptr;
    }

   private:
    FloorTransport& t_;
    std::uint64_t taken_ = 0;
  };

  static void leave_process() { ::_exit(0); }

 private:
  // The region: the head's block, the echo's, one block per subscriber
  // cursor, then the slots from a page boundary.
  static constexpr std::size_t kEchoAt = kBlock;
  static constexpr std::size_t kCursorsAt = 2 * kBlock;
  static constexpr std::size_t kSlotsAt = (kCursorsAt + kMaxAgents * kBlock + 4095) / 4096 * 4096;

  std::size_t bytes() const noexcept { return kSlotsAt + config_.depth * stride_; }
  std::byte* base() const noexcept { return static_cast<std::byte*>(region_.data()); }
  std::uint64_t* head() const noexcept { return reinterpret_cast<std::uint64_t*>(base()); }
  std::uint64_t* echo() const noexcept {
    return reinterpret_cast<std::uint64_t*>(base() + kEchoAt);
  }
  std::uint64_t* cursor(unsigned i) const noexcept {
    return reinterpret_cast<std::uint64_t*>(base() + kCursorsAt + i * kBlock);
  }
  std::byte* slot(std::uint64_t pos) const noexcept {
    return base() + kSlotsAt + (pos % config_.depth) * stride_;
  }
  std::uint64_t* committed(std::uint64_t pos) const noexcept {
    return reinterpret_cast<std::uint64_t*>(slot(pos) + payload_);
  }
  // Reliable: the lowest subscriber cursor (the head when none is behind).
  std::uint64_t lowest_cursor(std::uint64_t head) const noexcept {
    std::uint64_t lowest = head;
    for (unsigned i = 0; i < config_.subscribers; ++i) {
      lowest = std::min(lowest, atomic::load_acquire(cursor(i)));
    }
    return lowest;
  }

  FanoutConfig config_;
  std::size_t payload_;
  std::size_t stride_;
  SharedRegion region_;
};

}  // namespace

void register_fanout_floor_benchmarks() {
  const std::vector<std::size_t> sizes = {64};
  register_fanout<FloorTransport<FloorLayout::slot>>("floor/slot/copy", "floor/slot/copy", sizes,
                                                     false);
  register_fanout<FloorTransport<FloorLayout::slot>>("floor/slot/batch", "floor/slot/zerocopy",
                                                     sizes, true);
  register_fanout<FloorTransport<FloorLayout::cursor>>("floor/cursor/copy", "floor/cursor/copy",
                                                       sizes, false);
  register_fanout<FloorTransport<FloorLayout::cursor>>("floor/cursor/batch",
                                                       "floor/cursor/zerocopy", sizes, true);
}

}  // namespace shmring::bench::peers
