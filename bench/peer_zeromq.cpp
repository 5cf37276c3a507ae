// Peer: ZeroMQ over ipc://, a PUSH/PULL pair per direction. zmq_send copies
// the message into ZeroMQ's queue, its I/O thread moves it through a Unix
// socket, zmq_recv copies it out. Blocking calls with a 20 s timeout.
#include <unistd.h>
#include <zmq.h>

#include "peer_harness.hpp"

namespace shmring::bench::peers {

namespace {

constexpr int kTimeoutMs = static_cast<int>(Spinner::kStallLimit.count() * 1000);

class ZeroMqTransport {
 public:
  static constexpr bool kProcesses = true;

  ZeroMqTransport(std::size_t size, std::uint64_t depth, int channels, const std::string& id)
      : size_(size), depth_(static_cast<int>(depth)) {
    for (int c = 0; c < channels; ++c) paths_.push_back("/tmp/" + id + "_zmq" + std::to_string(c));
  }
  ZeroMqTransport(const ZeroMqTransport&) = delete;
  ZeroMqTransport& operator=(const ZeroMqTransport&) = delete;
  // The binding side removes its socket file when it closes; this catches a
  // run that ended early.
  ~ZeroMqTransport() {
    for (const std::string& path : paths_) ::unlink(path.c_str());
  }

  // A context per process: ZeroMQ contexts do not survive fork().
  class Agent {
   public:
    explicit Agent(ZeroMqTransport&) : context_(zmq_ctx_new()) {
      if (context_ == nullptr) throw std::runtime_error("zmq_ctx_new failed");
    }
    Agent(const Agent&) = delete;
    Agent& operator=(const Agent&) = delete;
    ~Agent() { zmq_ctx_term(context_); }
    void* context() const noexcept { return context_; }

   private:
    void* context_;
  };

  class Socket {
   public:
    Socket(ZeroMqTransport& t, Agent& agent, int type)
        : socket_(zmq_socket(agent.context(), type)) {
      if (socket_ == nullptr)
        throw std::runtime_error(std::string("zmq_socket: ") + zmq_strerror(errno));
      const int linger = kTimeoutMs;
      option(ZMQ_LINGER, linger);
      option(ZMQ_SNDTIMEO, kTimeoutMs);
      option(ZMQ_RCVTIMEO, kTimeoutMs);
      option(ZMQ_SNDHWM, t.depth_);
      option(ZMQ_RCVHWM, t.depth_);
    }
    Socket(const Socket&) = delete;
    Socket& operator=(const Socket&) = delete;
    ~Socket() { zmq_close(socket_); }
    void* get() const noexcept { return socket_; }

   private:
    void option(int name, int value) {
      if (zmq_setsockopt(socket_, name, &value, sizeof value) != 0) {
        throw std::runtime_error(std::string("zmq_setsockopt: ") + zmq_strerror(errno));
      }
    }
    void* socket_;
  };

  class Sender {
   public:
    Sender(ZeroMqTransport& t, Agent& agent, int channel) : socket_(t, agent, ZMQ_PUSH) {
      const std::string endpoint = "ipc://" + t.paths_[static_cast<std::size_t>(channel)];
      // Queue only on a finished connection, and retry connecting quickly
      // (the receiver may bind later): then POLLOUT means connected, and the
      // wait for it stays out of the measurement.
      const int immediate = 1, reconnect_ms = 1;
      zmq_setsockopt(socket_.get(), ZMQ_IMMEDIATE, &immediate, sizeof immediate);
      zmq_setsockopt(socket_.get(), ZMQ_RECONNECT_IVL, &reconnect_ms, sizeof reconnect_ms);
      if (zmq_connect(socket_.get(), endpoint.c_str()) != 0) {
        throw std::runtime_error("zmq_connect " + endpoint + ": " + zmq_strerror(errno));
      }
      zmq_pollitem_t item{socket_.get(), 0, ZMQ_POLLOUT, 0};
      if (zmq_poll(&item, 1, 10'000) != 1) {
        throw std::runtime_error("zmq: not connected to " + endpoint + " within 10 s");
      }
    }
    const char* send(MessageTemplate& m, std::uint64_t tag, Spinner&) noexcept {
      const std::span<const std::byte> bytes = m.stamped(tag);
      for (;;) {
        if (zmq_send(socket_.get(), bytes.data(), bytes.size(), 0) >= 0) return nullptr;
        if (errno != EINTR)
          return errno == EAGAIN ? "stalled: zmq_send timed out" : "zmq_send failed";
      }
    }

   private:
    Socket socket_;
  };

  class Receiver {
   public:
    Receiver(ZeroMqTransport& t, Agent& agent, int channel)
        : socket_(t, agent, ZMQ_PULL), buffer_(t.size_) {
      const std::string endpoint = "ipc://" + t.paths_[static_cast<std::size_t>(channel)];
      if (zmq_bind(socket_.get(), endpoint.c_str()) != 0) {
        throw std::runtime_error("zmq_bind " + endpoint + ": " + zmq_strerror(errno));
      }
    }
    const char* receive(const MessageTemplate& m, std::uint64_t& tag, Spinner&) noexcept {
      for (;;) {
        const int got = zmq_recv(socket_.get(), buffer_.data(), buffer_.size(), 0);
        if (got >= 0) {
          // A longer message would have been truncated to the buffer: got is its real size.
          return m.check_copied(buffer_.data(), static_cast<std::size_t>(got), tag)
                     ? nullptr
                     : "message damaged";
        }
        if (errno != EINTR)
          return errno == EAGAIN ? "stalled: zmq_recv timed out" : "zmq_recv failed";
      }
    }

   private:
    Socket socket_;
    std::vector<std::byte> buffer_;
  };

  static void leave_process() { ::_exit(0); }

 private:
  std::size_t size_;
  int depth_;
  std::vector<std::string> paths_;
};

}  // namespace

void register_zeromq_benchmarks() {
  register_peer<ZeroMqTransport>("zeromq", peer_sizes(std::size_t{1} << 20));
}

}  // namespace shmring::bench::peers
