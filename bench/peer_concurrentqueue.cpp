// Peer, in-process reference: moodycamel::ConcurrentQueue between two
// threads, one element per message (a byte array of the message size, moved
// in and out), with producer and consumer tokens, its fastest path.
#include <concurrentqueue.h>

#include <array>
#include <cstring>
#include <memory>

#include "peer_harness.hpp"

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

}  // namespace

void register_concurrentqueue_benchmarks() {
  // Elements are whole messages, so only the sizes a queue of values is
  // used for; rtt/ runs at 64 B.
  register_peer_round_trip<ConcurrentQueueTransport<64>>("concurrentqueue");
  register_peer_throughput<ConcurrentQueueTransport<8>>("concurrentqueue", 8);
  register_peer_throughput<ConcurrentQueueTransport<64>>("concurrentqueue", 64);
  register_peer_throughput<ConcurrentQueueTransport<4096>>("concurrentqueue", 4096);
}

}  // namespace shmring::bench::peers
