// Byte-stream peers, a pipe and a Unix domain socket: one kernel object per
// channel made before the agents fork, fixed-size messages written and read
// whole with plain blocking write()/read(), as a program using them would.
#pragma once

#include <unistd.h>

#include <cerrno>
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "peer_harness.hpp"

namespace shmring::bench::peers {

// MakePair(int fds[2]) -> bool: fds[0] is read, fds[1] written.
template <class MakePair>
class StreamTransport {
 public:
  static constexpr bool kProcesses = true;

  StreamTransport(std::size_t size, std::uint64_t /*depth*/, int channels, const std::string&)
      : size_(size) {
    for (int c = 0; c < channels; ++c) {
      int fds[2];
      if (!MakePair::make(fds)) {
        close_all();
        throw std::runtime_error(std::string(MakePair::kWhat) + ": " + std::strerror(errno));
      }
      fds_.push_back(fds[0]);
      fds_.push_back(fds[1]);
    }
  }
  StreamTransport(const StreamTransport&) = delete;
  StreamTransport& operator=(const StreamTransport&) = delete;
  ~StreamTransport() { close_all(); }

  struct Agent {
    explicit Agent(StreamTransport&) {}
  };

  class Sender {
   public:
    Sender(StreamTransport& t, Agent&, int channel) : fd_(t.fds_[2 * channel + 1]) {}
    const char* send(MessageTemplate& m, std::uint64_t tag, Spinner&) noexcept {
      const std::span<const std::byte> bytes = m.stamped(tag);
      std::size_t done = 0;
      while (done < bytes.size()) {
        const ssize_t n = ::write(fd_, bytes.data() + done, bytes.size() - done);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) return "write failed";
        done += static_cast<std::size_t>(n);
      }
      return nullptr;
    }

   private:
    int fd_;
  };

  class Receiver {
   public:
    Receiver(StreamTransport& t, Agent&, int channel)
        : fd_(t.fds_[2 * channel]), buffer_(t.size_) {}
    const char* receive(const MessageTemplate& m, std::uint64_t& tag, Spinner&) noexcept {
      std::size_t done = 0;
      while (done < buffer_.size()) {
        const ssize_t n = ::read(fd_, buffer_.data() + done, buffer_.size() - done);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) return "read failed";
        if (n == 0) return "end of stream before a whole message";
        done += static_cast<std::size_t>(n);
      }
      return m.check_copied(buffer_.data(), done, tag) ? nullptr : "message damaged";
    }

   private:
    int fd_;
    std::vector<std::byte> buffer_;
  };

  static void leave_process() { ::_exit(0); }

 private:
  void close_all() noexcept {
    for (const int fd : fds_) ::close(fd);
    fds_.clear();
  }
  std::size_t size_;
  std::vector<int> fds_;  // per channel: read end, write end
};

}  // namespace shmring::bench::peers
