// Peer: an anonymous pipe per direction (the kernel copies each message in
// and out; blocking reads and writes).
#include <unistd.h>

#include "peer_stream.hpp"

namespace shmring::bench::peers {

namespace {
struct PipePair {
  static constexpr const char* kWhat = "pipe2";
  static bool make(int fds[2]) { return ::pipe2(fds, O_CLOEXEC) == 0; }
};
}  // namespace

void register_pipe_benchmarks() {
  register_peer<StreamTransport<PipePair>>("pipe", peer_sizes(std::size_t{1} << 20));
}

}  // namespace shmring::bench::peers
