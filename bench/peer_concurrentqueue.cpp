// Peer, in-process reference: moodycamel::ConcurrentQueue between threads,
// one element per message (a byte array of the message size, moved in and
// out), with producer and consumer tokens, its fastest path. One sender and
// one receiver through peer_harness.hpp; P producers and P consumers through
// throughput_harness.hpp, placed, timed and checked like shmring's MPMC rows.
#include <concurrentqueue.h>

#include <array>
#include <cstring>
#include <memory>
#include <span>
#include <stdexcept>
#include <string>
#include <vector>

#include "peer_harness.hpp"
#include "throughput_harness.hpp"

namespace shmring::bench::peers {

namespace {

template <std::size_t N>
class ConcurrentQueueTransport {
 public:
  static constexpr bool kProcesses = false;
  using Element = std::array<std::byte, N>;
  using Queue = moodycamel::ConcurrentQueue<Element>;

  ConcurrentQueueTransport(std::size_t size, std::uint64_t depth, int channels,
                           const std::string&) {
    if (size != N) throw std::invalid_argument("ConcurrentQueueTransport: size differs from N");
    for (int c = 0; c < channels; ++c) queues_.push_back(std::make_unique<Queue>(depth));
  }

  struct Agent {
    explicit Agent(ConcurrentQueueTransport&) {}
  };

  class Sender {
   public:
    Sender(ConcurrentQueueTransport& t, Agent&, int channel)
        : queue_(*t.queues_[static_cast<std::size_t>(channel)]), token_(queue_) {}
    // try_enqueue never allocates: a full queue is waited on, like a full ring.
    const char* send(MessageTemplate& m, std::uint64_t tag, Spinner& spinner) noexcept {
      std::memcpy(element_.data(), m.stamped(tag).data(), N);
      while (!queue_.try_enqueue(token_, element_)) {
        if (!spinner.failed_attempt()) return spinner.stalled() ? "stalled: queue full" : "aborted";
      }
      spinner.progress();
      return nullptr;
    }

   private:
    Queue& queue_;
    moodycamel::ProducerToken token_;
    Element element_{};
  };

  class Receiver {
   public:
    Receiver(ConcurrentQueueTransport& t, Agent&, int channel)
        : queue_(*t.queues_[static_cast<std::size_t>(channel)]), token_(queue_) {}
    const char* receive(const MessageTemplate& m, std::uint64_t& tag, Spinner& spinner) noexcept {
      while (!queue_.try_dequeue(token_, element_)) {
        if (!spinner.failed_attempt())
          return spinner.stalled() ? "stalled: queue empty" : "aborted";
      }
      spinner.progress();
      return m.check_copied(element_.data(), N, tag) ? nullptr : "message damaged";
    }

   private:
    Queue& queue_;
    moodycamel::ConsumerToken token_;
    Element element_{};
  };

  static void leave_process() {}

 private:
  std::vector<std::unique_ptr<Queue>> queues_;
};

// One queue shared by every producer and consumer thread, for
// throughput_harness.hpp. The copy API only: a message is copied into an
// element that try_enqueue copies in, and try_dequeue assigns the element
// straight into the consumer's buffer, one copy each way as with the 1x1 peer.
//
// try_enqueue never allocates: it takes blocks of 32 elements from the
// queue's preallocated pool, and a token's producer keeps every block it
// took and reuses only those. Left to itself, the first producer to run
// takes the whole pool and the others never enqueue anything (a stall). So
// the pool is shared out before the run: each producer token, made here, in
// turn fills and empties its share of blocks, depth / P + one block, about
// shmring's capacity over all producers.
template <std::size_t N>
class ConcurrentQueueRing {
 public:
  using Element = std::array<std::byte, N>;
  using Queue = moodycamel::ConcurrentQueue<Element>;
  static constexpr std::size_t kBlock = Queue::BLOCK_SIZE;

  ConcurrentQueueRing(std::uint64_t depth, unsigned producers)
      : blocks_each_(static_cast<std::size_t>(depth) / (kBlock * producers) + 1),
        queue_(blocks_each_ * producers * kBlock) {
    for (unsigned p = 0; p < producers; ++p) {
      tokens_.push_back(std::make_unique<moodycamel::ProducerToken>(queue_));
      const Element element{};
      for (std::size_t i = 0; i < blocks_each_ * kBlock; ++i) {
        if (!queue_.try_enqueue(*tokens_.back(), element)) {
          throw std::runtime_error("ConcurrentQueueRing: producer " + std::to_string(p) +
                                   " got fewer than " + std::to_string(blocks_each_) +
                                   " blocks of the pool");
        }
      }
      Element out{};
      for (std::size_t i = 0; i < blocks_each_ * kBlock; ++i) {
        if (!queue_.try_dequeue_from_producer(*tokens_.back(), out)) {
          throw std::runtime_error("ConcurrentQueueRing: producer " + std::to_string(p) +
                                   "'s first elements did not come back");
        }
      }
    }
  }

  class Producer {
   public:
    Producer(Queue& q, moodycamel::ProducerToken& token) : queue_(q), token_(token) {}
    Status try_push(std::span<const std::byte> message) noexcept {
      if (message.size() != N) return Status::too_large;
      std::memcpy(element_.data(), message.data(), N);
      return queue_.try_enqueue(token_, element_) ? Status::ok : Status::would_block;
    }

   private:
    Queue& queue_;
    moodycamel::ProducerToken& token_;
    Element element_{};
  };

  class Consumer {
   public:
    explicit Consumer(Queue& q) : queue_(q), token_(q) {}
    Status try_pop(std::span<std::byte> buffer, std::size_t& size) noexcept {
      if (buffer.size() < N) return Status::too_large;
      Into into{buffer.data()};
      if (!queue_.try_dequeue(token_, into)) return Status::would_block;
      size = N;
      return Status::ok;
    }

   private:
    // What try_dequeue assigns the element to: the caller's buffer.
    struct Into {
      std::byte* to;
      Into& operator=(Element&& e) noexcept {
        std::memcpy(to, e.data(), N);
        return *this;
      }
    };
    Queue& queue_;
    moodycamel::ConsumerToken token_;
  };

  template <class Body>
  void producer_side(unsigned index, bool own_mapping, Body&& body) {
    no_processes(own_mapping);
    if (index >= tokens_.size()) {
      throw std::invalid_argument("ConcurrentQueueRing: producer " + std::to_string(index) +
                                  " of " + std::to_string(tokens_.size()));
    }
    Producer tx(queue_, *tokens_[index]);
    body(tx);
  }
  template <class Body>
  void consumer_side(bool own_mapping, Body&& body) {
    no_processes(own_mapping);
    Consumer rx(queue_);
    body(rx);
  }
  void all_mapped() noexcept {}
  // Elements the pool holds, all producers together.
  std::uint64_t capacity() const noexcept { return blocks_each_ * tokens_.size() * kBlock; }

 private:
  static void no_processes(bool own_mapping) {
    if (own_mapping) {
      throw std::invalid_argument("ConcurrentQueueRing: the queue lives in one process's heap");
    }
  }
  std::size_t blocks_each_;
  Queue queue_;
  // Destroyed before the queue, as the queue requires.
  std::vector<std::unique_ptr<moodycamel::ProducerToken>> tokens_;
};

// peer/concurrentqueue/thread/<P>x<P>/64B: as mpmc/thread/<P>x<P>/copy/64B,
// about the same depth (the ring's capacity), same cores, same measurement.
void bm_concurrentqueue_mpmc(benchmark::State& state, unsigned pairs) {
  try {
    ConcurrentQueueRing<64> ring(peer_depth(64), pairs);
    const ThroughputShape shape{false, Api::copy, 64, ring.capacity(), pairs, pairs};
    if (const std::string why = run_throughput(state, shape, ring, settings().cpus); !why.empty()) {
      fail(state, why);
    }
  } catch (const std::exception& e) {
    fail(state, e.what());
  }
}

}  // namespace

void register_concurrentqueue_benchmarks() {
  // Elements are whole messages, so only the sizes a queue of values is
  // used for; rtt/ runs at 64 B.
  register_peer_round_trip<ConcurrentQueueTransport<64>>("concurrentqueue");
  register_peer_throughput<ConcurrentQueueTransport<8>>("concurrentqueue", 8);
  register_peer_throughput<ConcurrentQueueTransport<64>>("concurrentqueue", 64);
  register_peer_throughput<ConcurrentQueueTransport<4096>>("concurrentqueue", 4096);
  // Many to many, the pair counts of shmring's MPMC grid from 2x2 up.
  for (const unsigned pairs : pair_counts(settings().cpus)) {
    if (pairs < 2) continue;
    const std::string name = "peer/concurrentqueue/thread/" + std::to_string(pairs) + "x" +
                             std::to_string(pairs) + "/64B";
    benchmark::RegisterBenchmark(name.c_str(), bm_concurrentqueue_mpmc, pairs)->UseManualTime();
  }
}

}  // namespace shmring::bench::peers
