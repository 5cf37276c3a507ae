// shmring_bridge_bench: ring-bridge over UCX on loopback, next to what a
// user would compare it with, all in one run:
//   - ucx_perftest on the same transport (tag_bw, tag_lat): the ceiling;
//   - ZeroMQ over TCP (PUSH/PULL, REQ/REP): what a user would pick instead.
// Throughput of 64 B and 1 MiB messages and the round trip of each, the
// repetitions interleaved, median and min-max reported. Every message a
// transport carries is checked (its sequence stamp at both ends), so nobody
// wins by dropping data.
//
//   shmring_bridge_bench --bridge build/tools/ring-bridge [--repetitions 5]
//       [--tls tcp] [--json FILE] [--quick]
//
// Each bridge is a separate ring-bridge process; the producer, consumer and
// echo agents are threads of this program. UCX_TLS (default tcp, so the
// messages cross sockets as between hosts) applies to the bridges and to
// ucx_perftest alike.
#include <fcntl.h>
#include <fmt/core.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <map>
#include <optional>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "shmring/shmring.hpp"

#ifdef SHMRING_BENCH_HAVE_ZMQ
#include <zmq.h>
#endif

namespace {

using Clock = std::chrono::steady_clock;
using namespace std::chrono_literals;

struct Options {
  std::string bridge;
  std::string perftest = "ucx_perftest";
  std::string tls = "tcp";
  std::string json;
  int repetitions = 5;
  std::size_t large_batch = 8;    // 1 MiB messages per network message
  std::string only;               // run only the measurements whose key contains this
  std::string idle_spin = "200";  // the bridges' --idle-spin, us
  bool quick = false;
};

[[noreturn]] void die(const std::string& what) {
  fmt::print(stderr, "shmring_bridge_bench: {}\n", what);
  std::exit(1);
}

// ---- child processes ---------------------------------------------------------

struct Child {
  pid_t pid = -1;
  std::string output;  // file with its stdout+stderr
  ~Child() { stop(); }
  void stop() {
    if (pid <= 0) return;
    ::kill(pid, SIGTERM);
    for (int i = 0; i < 500; ++i) {
      if (::waitpid(pid, nullptr, WNOHANG) == pid) {
        pid = -1;
        break;
      }
      std::this_thread::sleep_for(10ms);
    }
    if (pid > 0) {
      ::kill(pid, SIGKILL);
      ::waitpid(pid, nullptr, 0);
      pid = -1;
    }
    if (!output.empty()) ::unlink(output.c_str());
  }
  int wait(std::chrono::seconds timeout) {
    const auto deadline = Clock::now() + timeout;
    while (Clock::now() < deadline) {
      int status = 0;
      if (::waitpid(pid, &status, WNOHANG) == pid) {
        pid = -1;
        return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
      }
      std::this_thread::sleep_for(5ms);
    }
    return -2;
  }
  std::string read() const {
    std::ifstream in(output);
    std::stringstream s;
    s << in.rdbuf();
    return s.str();
  }
};

int counter = 0;

std::unique_ptr<Child> spawn(const std::vector<std::string>& args, const std::string& tls) {
  auto c = std::make_unique<Child>();
  c->output = fmt::format("/tmp/shmring_bridge_bench_{}_{}.log", ::getpid(), counter++);
  c->pid = ::fork();
  if (c->pid == 0) {
    const int fd = ::open(c->output.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
    ::dup2(fd, 1);
    ::dup2(fd, 2);
    ::setenv("UCX_TLS", tls.c_str(), 1);
    ::setenv("UCX_WARN_UNUSED_ENV_VARS", "n", 1);
    std::vector<char*> argv;
    for (const auto& a : args) argv.push_back(const_cast<char*>(a.c_str()));
    argv.push_back(nullptr);
    ::execvp(argv[0], argv.data());
    ::_exit(127);
  }
  return c;
}

std::string name(const std::string& what) {
  return fmt::format("shmring_bridge_bench_{}_{}", ::getpid(), what);
}

void remove_ring(const std::string& ring) {
  std::error_code ec;
  shmring::Segment::unlink(ring, ec);
  ::unlink(("/dev/shm/" + ring + ".bridge-state").c_str());
}

// One bridge pair carrying ring `from` into ring `to` (created by the receiver).
struct BridgePair {
  std::unique_ptr<Child> recv, send;
  std::string to;
  BridgePair(const Options& o, const std::string& from, const std::string& to_ring,
             std::size_t batch)
      : to(to_ring) {
    const std::string port_file = fmt::format("/tmp/{}.port", to_ring);
    ::unlink(port_file.c_str());
    recv = spawn({o.bridge, "recv", "--listen", "127.0.0.1:0", "--ring", to_ring, "--port-file",
                  port_file, "--idle-spin", o.idle_spin},
                 o.tls);
    std::string port;
    const auto deadline = Clock::now() + 20s;
    while (port.empty()) {
      std::ifstream in(port_file);
      std::getline(in, port);
      if (Clock::now() > deadline) die("ring-bridge recv did not start: " + recv->read());
      if (port.empty()) std::this_thread::sleep_for(5ms);
    }
    ::unlink(port_file.c_str());
    send = spawn({o.bridge, "send", "--ring", from, "--to", "127.0.0.1:" + port, "--batch",
                  std::to_string(batch), "--idle-spin", o.idle_spin},
                 o.tls);
  }
  ~BridgePair() {
    send->stop();
    recv->stop();
    remove_ring(to);
  }
};

shmring::Segment open_when_there(const std::string& ring) {
  const auto deadline = Clock::now() + 20s;
  for (;;) {
    std::error_code ec;
    shmring::Segment s = shmring::Segment::open(ring, {}, ec);
    if (!ec) return s;
    if (Clock::now() > deadline) die("ring " + ring + " never appeared");
    std::this_thread::sleep_for(2ms);
  }
}

// ---- messages: a sequence stamp in the first and the last 8 bytes -------------

void stamp(std::span<std::byte> m, std::uint64_t seq) {
  std::memcpy(m.data(), &seq, 8);
  std::memcpy(m.data() + m.size() - 8, &seq, 8);
}
bool stamped(std::span<const std::byte> m, std::size_t size, std::uint64_t seq) {
  if (m.size() != size) return false;
  std::uint64_t a = 0, b = 0;
  std::memcpy(&a, m.data(), 8);
  std::memcpy(&b, m.data() + m.size() - 8, 8);
  return a == seq && b == seq;
}

// ---- shmring through the bridge ---------------------------------------------

struct Throughput {
  double msgs_per_s = 0;
  double bytes_per_s = 0;
};

Throughput bridge_throughput(const Options& o, std::size_t size, std::uint64_t count) {
  const std::string src = name("src"), dst = name("dst");
  remove_ring(src);
  shmring::CreateOptions co;
  co.capacity = size <= 4096 ? 8192 : 64;
  co.slot_size = size;
  shmring::Segment seg = shmring::Segment::create(src, co);
  const std::size_t batch = size <= 4096 ? 256 : o.large_batch;
  auto pair = std::make_unique<BridgePair>(o, src, dst, batch);
  std::atomic<bool> bad{false};
  std::atomic<bool> connected{false};
  std::atomic<std::uint64_t> got{0};
  std::jthread consumer([&] {
    // The receiver creates the far ring when the sender's Hello arrives:
    // from then on the connection stands, and the clock may start.
    shmring::Segment d = open_when_there(dst);
    shmring::SpscConsumer rx = shmring::SpscConsumer::attach(d);
    connected = true;
    std::uint64_t seq = 0;
    auto last = Clock::now();
    while (seq < count) {
      shmring::ReadClaim c = rx.peek(256, 10ms);
      if (c.empty()) {
        if (Clock::now() - last > 30s) {
          bad = true;
          return;
        }
        continue;
      }
      for (std::size_t i = 0; i < c.size(); ++i, ++seq) {
        if (!stamped(c[i], size, seq)) bad = true;
      }
      c.release();
      got = seq;
      last = Clock::now();
    }
  });
  shmring::SpscProducer tx = shmring::SpscProducer::attach(seg);
  // The body is written once per slot; each message writes its stamps.
  for (std::uint64_t p = 0; p < co.capacity; ++p) {
    shmring::WriteClaim w = tx.try_claim(1);
    std::memset(w[0].data(), 0x5a, size);
    w.abort();
  }
  while (!connected) std::this_thread::sleep_for(1ms);
  const auto start = Clock::now();
  std::uint64_t seq = 0;
  while (seq < count && !bad) {
    shmring::WriteClaim w = tx.claim(std::min<std::uint64_t>(batch, count - seq), 10ms);
    for (std::size_t i = 0; i < w.size(); ++i, ++seq) {
      stamp(w[i].first(size), seq);
      (void)w.set_size(i, size);
    }
    w.commit_batch();
    if (Clock::now() - start > 120s) die("bridge throughput run did not finish");
  }
  consumer.join();
  const double seconds = std::chrono::duration<double>(Clock::now() - start).count();
  if (bad) die(fmt::format("bridge: a {}-byte message was lost, reordered or corrupted", size));
  pair.reset();
  seg = shmring::Segment();
  remove_ring(src);
  return {static_cast<double>(count) / seconds, static_cast<double>(count * size) / seconds};
}

// Round trips: ping ring -> bridge -> echo thread -> bridge -> pong ring.
std::vector<double> bridge_round_trips(const Options& o, std::size_t size, std::uint64_t trips) {
  const std::string a = name("ping_a"), b = name("ping_b"), c = name("pong_c"), d = name("pong_d");
  for (const auto& r : {a, c}) remove_ring(r);
  shmring::CreateOptions co;
  co.capacity = 16;
  co.slot_size = size;
  shmring::Segment sa = shmring::Segment::create(a, co);
  shmring::Segment sc = shmring::Segment::create(c, co);
  auto there = std::make_unique<BridgePair>(o, a, b, 1);
  auto back = std::make_unique<BridgePair>(o, c, d, 1);
  std::atomic<bool> done{false};
  std::jthread echo([&] {
    shmring::Segment sb = open_when_there(b);
    shmring::SpscConsumer rx = shmring::SpscConsumer::attach(sb);
    shmring::SpscProducer tx = shmring::SpscProducer::attach(sc);
    while (!done) {
      shmring::ReadClaim in = rx.peek(1, 10ms);
      if (in.empty()) continue;
      shmring::WriteClaim out = tx.claim(1, 1s);
      if (out.empty()) continue;
      std::memcpy(out[0].data(), in[0].data(), in[0].size());
      (void)out.commit(in[0].size());
      in.release();
    }
  });
  shmring::SpscProducer ping = shmring::SpscProducer::attach(sa);
  shmring::Segment sd = open_when_there(d);
  shmring::SpscConsumer pong = shmring::SpscConsumer::attach(sd);
  std::vector<double> us;
  std::vector<std::byte> buffer(size, std::byte{0x5a});
  for (std::uint64_t seq = 1; seq <= trips + trips / 10; ++seq) {
    stamp(buffer, seq);
    const auto t0 = Clock::now();
    if (ping.push(buffer, 10s) != shmring::Status::ok) die("round trip: ping ring stuck");
    shmring::ReadClaim r = pong.peek(1, 10s);
    if (r.empty()) die("round trip: no pong within 10 s");
    const auto t1 = Clock::now();
    if (!stamped(r[0], size, seq)) die("round trip: wrong pong");
    r.release();
    if (seq > trips / 10) us.push_back(std::chrono::duration<double, std::micro>(t1 - t0).count());
  }
  done = true;
  echo.join();
  there.reset();
  back.reset();
  sa = shmring::Segment();
  sc = shmring::Segment();
  remove_ring(a);
  remove_ring(c);
  return us;
}

// ---- ucx_perftest on the same transport: the ceiling ---------------------------

// The "Final:" line of a ucx_perftest client: iterations, latency 50%ile,
// average and overall (us, one way for *_lat tests), bandwidth average and
// overall (MB/s), message rate average and overall (msg/s).
std::optional<std::vector<double>> perftest(const Options& o, const std::string& test,
                                            std::size_t size, std::uint64_t iterations) {
  static int port = 20000 + ::getpid() % 20000;
  const std::string p = std::to_string(++port);
  auto server = spawn({o.perftest, "-p", p}, o.tls);
  std::string final_line;
  const auto deadline = Clock::now() + 60s;
  while (final_line.empty() && Clock::now() < deadline) {
    auto client = spawn({o.perftest, "127.0.0.1", "-p", p, "-t", test, "-s", std::to_string(size),
                         "-n", std::to_string(iterations)},
                        o.tls);
    const int rc = client->wait(60s);
    std::istringstream out(client->read());
    for (std::string line; std::getline(out, line);) {
      if (line.rfind("Final:", 0) == 0) final_line = line;
    }
    if (final_line.empty()) {
      if (rc == -2) break;
      std::this_thread::sleep_for(100ms);  // the server was not listening yet
    }
  }
  server->stop();
  if (final_line.empty()) return std::nullopt;
  std::istringstream in(final_line.substr(6));
  std::vector<double> v;
  for (double x; in >> x;) v.push_back(x);
  if (v.size() < 8) return std::nullopt;
  return v;
}

// ---- ZeroMQ over TCP: what a user would pick instead ---------------------------

#ifdef SHMRING_BENCH_HAVE_ZMQ
// The far end runs in a forked process, as the bridge's does.
Throughput zmq_throughput(std::size_t size, std::uint64_t count) {
  static int port = 40000 + ::getpid() % 20000;
  const std::string endpoint = "tcp://127.0.0.1:" + std::to_string(++port);
  int ready[2];
  if (::pipe(ready) != 0) die("pipe");
  const pid_t child = ::fork();
  if (child == 0) {
    void* ctx = zmq_ctx_new();
    void* pull = zmq_socket(ctx, ZMQ_PULL);
    if (zmq_bind(pull, endpoint.c_str()) != 0) ::_exit(2);
    char c = 1;
    (void)!::write(ready[1], &c, 1);
    std::vector<std::byte> buffer(size);
    for (std::uint64_t seq = 0; seq < count; ++seq) {
      const int n = zmq_recv(pull, buffer.data(), size, 0);
      if (n != static_cast<int>(size) || !stamped(buffer, size, seq)) ::_exit(3);
    }
    (void)!::write(ready[1], &c, 1);
    zmq_close(pull);
    zmq_ctx_term(ctx);
    ::_exit(0);
  }
  char c = 0;
  if (::read(ready[0], &c, 1) != 1) die("zmq receiver did not start");
  void* ctx = zmq_ctx_new();
  void* push = zmq_socket(ctx, ZMQ_PUSH);
  zmq_connect(push, endpoint.c_str());
  std::vector<std::byte> buffer(size, std::byte{0x5a});
  const auto start = Clock::now();
  for (std::uint64_t seq = 0; seq < count; ++seq) {
    stamp(buffer, seq);
    zmq_send(push, buffer.data(), size, 0);
  }
  const bool ok = ::read(ready[0], &c, 1) == 1;
  const double seconds = std::chrono::duration<double>(Clock::now() - start).count();
  int status = 0;
  ::waitpid(child, &status, 0);
  zmq_close(push);
  zmq_ctx_term(ctx);
  ::close(ready[0]);
  ::close(ready[1]);
  if (!ok || !WIFEXITED(status) || WEXITSTATUS(status) != 0) {
    die(fmt::format("zeromq: a {}-byte message was lost or corrupted", size));
  }
  return {static_cast<double>(count) / seconds, static_cast<double>(count * size) / seconds};
}

std::vector<double> zmq_round_trips(std::size_t size, std::uint64_t trips) {
  static int port = 50000 + ::getpid() % 10000;
  const std::string endpoint = "tcp://127.0.0.1:" + std::to_string(++port);
  int ready[2];
  if (::pipe(ready) != 0) die("pipe");
  const std::uint64_t total = trips + trips / 10;
  const pid_t child = ::fork();
  if (child == 0) {
    void* ctx = zmq_ctx_new();
    void* rep = zmq_socket(ctx, ZMQ_REP);
    if (zmq_bind(rep, endpoint.c_str()) != 0) ::_exit(2);
    char c = 1;
    (void)!::write(ready[1], &c, 1);
    std::vector<std::byte> buffer(size);
    for (std::uint64_t i = 0; i < total; ++i) {
      const int n = zmq_recv(rep, buffer.data(), size, 0);
      zmq_send(rep, buffer.data(), static_cast<std::size_t>(n), 0);
    }
    zmq_close(rep);
    zmq_ctx_term(ctx);
    ::_exit(0);
  }
  char c = 0;
  if (::read(ready[0], &c, 1) != 1) die("zmq echo did not start");
  void* ctx = zmq_ctx_new();
  void* req = zmq_socket(ctx, ZMQ_REQ);
  zmq_connect(req, endpoint.c_str());
  std::vector<std::byte> out(size, std::byte{0x5a}), in(size);
  std::vector<double> us;
  for (std::uint64_t seq = 1; seq <= total; ++seq) {
    stamp(out, seq);
    const auto t0 = Clock::now();
    zmq_send(req, out.data(), size, 0);
    const int n = zmq_recv(req, in.data(), size, 0);
    const auto t1 = Clock::now();
    if (n != static_cast<int>(size) || !stamped(in, size, seq)) die("zeromq: wrong reply");
    if (seq > trips / 10) us.push_back(std::chrono::duration<double, std::micro>(t1 - t0).count());
  }
  ::waitpid(child, nullptr, 0);
  zmq_close(req);
  zmq_ctx_term(ctx);
  ::close(ready[0]);
  ::close(ready[1]);
  return us;
}
#endif

// ---- statistics and report ---------------------------------------------------

double percentile(std::vector<double> v, double p) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  const double rank = p * static_cast<double>(v.size() - 1);
  const auto lo = static_cast<std::size_t>(rank);
  const std::size_t hi = std::min(lo + 1, v.size() - 1);
  return v[lo] + (v[hi] - v[lo]) * (rank - static_cast<double>(lo));
}

struct Series {
  std::vector<double> values;
  double median() const { return percentile(values, 0.5); }
  double min() const {
    return values.empty() ? 0 : *std::min_element(values.begin(), values.end());
  }
  double max() const {
    return values.empty() ? 0 : *std::max_element(values.begin(), values.end());
  }
  std::string text(int precision) const {
    if (values.empty()) return "-";
    return fmt::format("{:.{}f} ({:.{}f}-{:.{}f})", median(), precision, min(), precision, max(),
                       precision);
  }
};

}  // namespace

int main(int argc, char** argv) {
  Options o;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    auto value = [&]() -> std::string {
      if (i + 1 >= argc) die("missing value after " + a);
      return argv[++i];
    };
    if (a == "--bridge") {
      o.bridge = value();
    } else if (a == "--perftest") {
      o.perftest = value();
    } else if (a == "--tls") {
      o.tls = value();
    } else if (a == "--json") {
      o.json = value();
    } else if (a == "--repetitions") {
      o.repetitions = std::max(1, std::atoi(value().c_str()));
    } else if (a == "--large-batch") {
      o.large_batch = static_cast<std::size_t>(std::max(1, std::atoi(value().c_str())));
    } else if (a == "--bridge-spin") {
      o.idle_spin = value();
    } else if (a == "--only") {
      o.only = value();
    } else if (a == "--quick") {
      o.quick = true;
    } else {
      fmt::print(stderr,
                 "usage: shmring_bridge_bench --bridge PATH [--repetitions N] [--tls tcp] "
                 "[--perftest ucx_perftest] [--large-batch N] [--bridge-spin US] [--only KEY] "
                 "[--json FILE] [--quick]\n");
      return a == "--help" ? 0 : 2;
    }
  }
  if (o.bridge.empty()) die("--bridge PATH (the ring-bridge binary) is required");
  ::signal(SIGPIPE, SIG_IGN);

  const std::uint64_t small_count = o.quick ? 20'000 : 1'000'000;
  const std::uint64_t large_count = o.quick ? 50 : 1'000;
  const std::uint64_t trips = o.quick ? 200 : 5'000;
  const std::uint64_t large_trips = o.quick ? 20 : 200;
  constexpr std::size_t kSmall = 64, kLarge = 1 << 20;

  std::map<std::string, Series> r;
  // Runs `measure` into r[key] unless --only excludes it.
  const auto take = [&](const std::string& key, auto&& measure) {
    if (!o.only.empty() && key.find(o.only) == std::string::npos) return;
    if (std::optional<double> v = measure()) r[key].values.push_back(*v);
  };
  for (int rep = 0; rep < o.repetitions; ++rep) {
    fmt::print(stderr, "repetition {}/{}\n", rep + 1, o.repetitions);
    take("bridge_64_msgs",
         [&] { return std::optional(bridge_throughput(o, kSmall, small_count).msgs_per_s); });
    take("bridge_1m_gbs", [&] {
      return std::optional(bridge_throughput(o, kLarge, large_count).bytes_per_s / 1e9);
    });
    take("bridge_64_rtt",
         [&] { return std::optional(percentile(bridge_round_trips(o, kSmall, trips), 0.5)); });
    take("bridge_1m_rtt", [&] {
      return std::optional(percentile(bridge_round_trips(o, kLarge, large_trips), 0.5));
    });
    const auto field = [](std::optional<std::vector<double>> v, std::size_t i,
                          double scale) -> std::optional<double> {
      if (!v) return std::nullopt;
      return (*v)[i] * scale;
    };
    take("ucx_64_msgs", [&] { return field(perftest(o, "tag_bw", kSmall, small_count), 7, 1); });
    // MB/s there are of 2^20 bytes.
    take("ucx_1m_gbs",
         [&] { return field(perftest(o, "tag_bw", kLarge, large_count), 5, 1.048576e6 / 1e9); });
    take("ucx_64_rtt", [&] { return field(perftest(o, "tag_lat", kSmall, trips), 1, 2); });
    take("ucx_1m_rtt", [&] { return field(perftest(o, "tag_lat", kLarge, large_trips), 1, 2); });
#ifdef SHMRING_BENCH_HAVE_ZMQ
    take("zmq_64_msgs",
         [&] { return std::optional(zmq_throughput(kSmall, small_count).msgs_per_s); });
    take("zmq_1m_gbs",
         [&] { return std::optional(zmq_throughput(kLarge, large_count).bytes_per_s / 1e9); });
    take("zmq_64_rtt",
         [&] { return std::optional(percentile(zmq_round_trips(kSmall, trips), 0.5)); });
    take("zmq_1m_rtt",
         [&] { return std::optional(percentile(zmq_round_trips(kLarge, large_trips), 0.5)); });
#endif
  }

  auto ratio = [&](const std::string& a, const std::string& b) -> std::string {
    if (r[a].values.empty() || r[b].values.empty() || r[b].median() == 0) return "-";
    return fmt::format("{:.2f}", r[a].median() / r[b].median());
  };
  fmt::print(
      "| what | ring-bridge | ucx_perftest (ceiling) | bridge / ceiling | ZeroMQ tcp | "
      "bridge / ZeroMQ |\n| --- | ---: | ---: | ---: | ---: | ---: |\n");
  const struct {
    const char* label;
    const char* key;
    int precision;
  } rows[] = {{"64 B throughput, M msg/s", "64_msgs", 3},
              {"1 MiB throughput, GB/s", "1m_gbs", 2},
              {"64 B round trip p50, us", "64_rtt", 1},
              {"1 MiB round trip p50, us", "1m_rtt", 0}};
  for (const auto& row : rows) {
    const std::string k = row.key;
    Series bridge = r["bridge_" + k], ucx = r["ucx_" + k], zmq = r["zmq_" + k];
    if (k == "64_msgs") {
      for (Series* s : {&bridge, &ucx, &zmq}) {
        for (double& v : s->values) v /= 1e6;
      }
    }
    fmt::print("| {} | {} | {} | {} | {} | {} |\n", row.label, bridge.text(row.precision),
               ucx.text(row.precision), ratio("bridge_" + k, "ucx_" + k), zmq.text(row.precision),
               ratio("bridge_" + k, "zmq_" + k));
  }
  fmt::print(
      "\nmedian (min-max) of {} interleaved repetitions; UCX_TLS={}; bridges spin {} us "
      "before blocking; round trips are median of {} (64 B) / {} (1 MiB) after warm-up; "
      "ucx_perftest's latency is one way, doubled here\n",
      o.repetitions, o.tls, o.idle_spin, trips, large_trips);
  if (!o.json.empty()) {
    std::ofstream out(o.json);
    out << "{";
    bool first = true;
    for (const auto& [k, s] : r) {
      out << (first ? "" : ",") << "\n  \"" << k << "\": [";
      for (std::size_t i = 0; i < s.values.size(); ++i) out << (i ? ", " : "") << s.values[i];
      out << "]";
      first = false;
    }
    out << "\n}\n";
  }
  return 0;
}
