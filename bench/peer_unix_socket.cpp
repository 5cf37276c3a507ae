// Peer: a Unix domain stream socket pair per direction (blocking send and
// receive through the kernel's socket buffers).
#include <sys/socket.h>

#include "peer_stream.hpp"

namespace shmring::bench::peers {

namespace {
struct UnixSocketPair {
  static constexpr const char* kWhat = "socketpair(AF_UNIX, SOCK_STREAM)";
  static bool make(int fds[2]) {
    return ::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds) == 0;
  }
};
}  // namespace

void register_unix_socket_benchmarks() {
  register_peer<StreamTransport<UnixSocketPair>>("unix_socket", peer_sizes(std::size_t{1} << 20));
}

}  // namespace shmring::bench::peers
