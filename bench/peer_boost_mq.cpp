// Peer: Boost.Interprocess message_queue, one named queue per direction in
// /dev/shm (a process-shared mutex and condition variables around a ring of
// fixed-size buffers; each message is copied in and out). Sends and receives
// try first, then block with a deadline, as send()/receive() would.
#include <boost/date_time/posix_time/posix_time_types.hpp>
#include <boost/interprocess/ipc/message_queue.hpp>
#include <memory>
#include <optional>

#include "peer_harness.hpp"

namespace shmring::bench::peers {

namespace {

namespace bip = boost::interprocess;

boost::posix_time::ptime deadline() {
  return boost::posix_time::microsec_clock::universal_time() +
         boost::posix_time::seconds(Spinner::kStallLimit.count());
}

class BoostMqTransport {
 public:
  static constexpr bool kProcesses = true;

  BoostMqTransport(std::size_t size, std::uint64_t depth, int channels, const std::string& id)
      : size_(size) {
    for (int c = 0; c < channels; ++c) {
      names_.push_back(id + "_bmq" + std::to_string(c));
      bip::message_queue::remove(names_.back().c_str());
      // Created here, opened by name in each agent; the names go at the end.
      bip::message_queue(bip::create_only, names_.back().c_str(), depth, size);
    }
  }
  BoostMqTransport(const BoostMqTransport&) = delete;
  BoostMqTransport& operator=(const BoostMqTransport&) = delete;
  ~BoostMqTransport() {
    for (const std::string& name : names_) bip::message_queue::remove(name.c_str());
  }

  struct Agent {
    explicit Agent(BoostMqTransport&) {}
  };

  class Sender {
   public:
    Sender(BoostMqTransport& t, Agent&, int channel)
        : queue_(bip::open_only, t.names_[static_cast<std::size_t>(channel)].c_str()) {}
    const char* send(MessageTemplate& m, std::uint64_t tag, Spinner&) noexcept {
      try {
        const std::span<const std::byte> bytes = m.stamped(tag);
        if (queue_.try_send(bytes.data(), bytes.size(), 0)) return nullptr;
        return queue_.timed_send(bytes.data(), bytes.size(), 0, deadline()) ? nullptr
                                                                            : "stalled: queue full";
      } catch (const std::exception&) {
        return "message_queue send threw";
      }
    }

   private:
    bip::message_queue queue_;
  };

  class Receiver {
   public:
    Receiver(BoostMqTransport& t, Agent&, int channel)
        : queue_(bip::open_only, t.names_[static_cast<std::size_t>(channel)].c_str()),
          buffer_(t.size_) {}
    const char* receive(const MessageTemplate& m, std::uint64_t& tag, Spinner&) noexcept {
      try {
        bip::message_queue::size_type got = 0;
        unsigned priority = 0;
        if (!queue_.try_receive(buffer_.data(), buffer_.size(), got, priority) &&
            !queue_.timed_receive(buffer_.data(), buffer_.size(), got, priority, deadline())) {
          return "stalled: queue empty";
        }
        return m.check_copied(buffer_.data(), got, tag) ? nullptr : "message damaged";
      } catch (const std::exception&) {
        return "message_queue receive threw";
      }
    }

   private:
    bip::message_queue queue_;
    std::vector<std::byte> buffer_;
  };

  static void leave_process() { ::_exit(0); }

 private:
  std::size_t size_;
  std::vector<std::string> names_;
};

}  // namespace

void register_boost_mq_benchmarks() {
  register_peer<BoostMqTransport>("boost_mq", peer_sizes(std::size_t{1} << 20));
}

}  // namespace shmring::bench::peers
