// The peers measured next to shmring: which were built, and what they share
// with the main program (cores, tick step, failure count).
#include <string>

#include "peer_harness.hpp"

namespace shmring::bench::peers {

namespace {
int g_failures = 0;
}  // namespace

Settings& settings() {
  static Settings s;
  return s;
}

void fail(benchmark::State& state, const std::string& why) {
  ++g_failures;
  state.SkipWithError(why.c_str());
}

int failures() { return g_failures; }

// Each SHMRING_BENCH_PEER_* is defined by bench/CMakeLists.txt when that
// peer's library was found at configure time.
void register_peer_benchmarks() {
#ifdef SHMRING_BENCH_PEER_PIPE
  register_pipe_benchmarks();
#endif
#ifdef SHMRING_BENCH_PEER_UNIX_SOCKET
  register_unix_socket_benchmarks();
#endif
#ifdef SHMRING_BENCH_PEER_CONCURRENTQUEUE
  register_concurrentqueue_benchmarks();
#endif
#ifdef SHMRING_BENCH_PEER_BOOST_MQ
  register_boost_mq_benchmarks();
#endif
#ifdef SHMRING_BENCH_PEER_ZEROMQ
  register_zeromq_benchmarks();
#endif
#ifdef SHMRING_BENCH_PEER_ICEORYX
  register_iceoryx_benchmarks();
#endif
}

void stop_peers() {
#ifdef SHMRING_BENCH_PEER_ICEORYX
  stop_iceoryx();
#endif
}

}  // namespace shmring::bench::peers
