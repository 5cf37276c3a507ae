// ring-bridge end to end: two "hosts" on one machine, joined over UCX's TCP
// transport on loopback (UCX_TLS=tcp, so the messages cross sockets as they
// would between machines; one test uses two network namespaces). A producer
// process fills the source ring, `ring-bridge send` and `ring-bridge recv`
// run as processes of their own, and a consumer process checks every message
// of the destination ring: order, size, contents, exactly once, also across
// killed and restarted bridges.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <random>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "bridge/ucx.hpp"
#include "bridge/wire.hpp"
#include "shmring/bridge.hpp"
#include "shmring/shmring.hpp"
#include "stress_message.hpp"
#include "test_support.hpp"

#ifndef RING_BRIDGE
#error "RING_BRIDGE must name the ring-bridge binary"
#endif

namespace shmring::test {
namespace {

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

constexpr std::uint64_t kSlot = 256;

// ---- messages ---------------------------------------------------------------
// seq (8 bytes), size (4 bytes), then bytes derived from seq: any lost,
// duplicated, reordered, truncated or corrupted message fails the check.
std::size_t message_size(std::uint64_t seq, std::uint64_t slot = kSlot) {
  return 12 + (seq * 7919) % (slot - 12 + 1);
}

void fill_message(std::uint64_t seq, std::span<std::byte> out, std::uint64_t slot) {
  const std::size_t size = message_size(seq, slot);
  const auto size32 = static_cast<std::uint32_t>(size);
  std::memcpy(out.data(), &seq, 8);
  std::memcpy(out.data() + 8, &size32, 4);
  for (std::size_t j = 12; j < size; ++j) out[j] = static_cast<std::byte>((seq * 131 + j) & 0xff);
}

// Empty when `m` is message `seq`, else what is wrong with it.
std::string check_message(std::uint64_t seq, std::span<const std::byte> m, std::uint64_t slot) {
  if (m.size() != message_size(seq, slot)) {
    return "message " + std::to_string(seq) + ": " + std::to_string(m.size()) +
           " bytes, expected " + std::to_string(message_size(seq, slot));
  }
  std::uint64_t got = 0;
  std::memcpy(&got, m.data(), 8);
  if (got != seq) return "expected message " + std::to_string(seq) + ", got " + std::to_string(got);
  for (std::size_t j = 12; j < m.size(); ++j) {
    if (m[j] != static_cast<std::byte>((seq * 131 + j) & 0xff)) {
      return "message " + std::to_string(seq) + ": byte " + std::to_string(j) + " corrupted";
    }
  }
  return {};
}

std::uint64_t scaled_count(std::uint64_t base) { return msg::scaled(base, 4); }

// ---- processes --------------------------------------------------------------

std::uint16_t free_port() {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof a;
  ::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a);
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len);
  ::close(fd);
  return ntohs(a.sin_port);
}

std::string read_file(const std::string& path) {
  std::ifstream in(path);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

// One ring-bridge process, its stderr kept in a file. The destructor stops
// it (SIGTERM, then SIGKILL) so no test leaves one behind.
class BridgeProcess {
 public:
  // `netns`: run inside that network namespace (ip netns exec).
  explicit BridgeProcess(std::vector<std::string> args, const std::string& netns = {}) {
    log_ = "/tmp/" + unique_name("bridge_" + std::to_string(counter_++)) + ".log";
    pid_ = ::fork();
    if (pid_ == 0) {
      const int fd = ::open(log_.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
      if (fd >= 0) {
        ::dup2(fd, 2);
        ::dup2(fd, 1);
      }
      // TCP on loopback stands in for the network between two hosts.
      ::setenv("UCX_TLS", "tcp", 1);
      ::setenv("UCX_WARN_UNUSED_ENV_VARS", "n", 1);
      std::vector<std::string> prefix;
      if (!netns.empty()) prefix = {"ip", "netns", "exec", netns};
      std::vector<char*> argv;
      for (auto& a : prefix) argv.push_back(a.data());
      argv.push_back(const_cast<char*>(RING_BRIDGE));
      for (auto& a : args) argv.push_back(a.data());
      argv.push_back(nullptr);
      ::execvp(argv[0], argv.data());
      ::_exit(127);
    }
  }
  ~BridgeProcess() {
    if (pid_ > 0 && !exited_) {
      ::kill(pid_, SIGTERM);
      if (wait_exit(5s) == kStillRunning) {
        ::kill(pid_, SIGKILL);
        wait_exit(5s);
      }
    }
    ::unlink(log_.c_str());
  }
  BridgeProcess(const BridgeProcess&) = delete;
  BridgeProcess& operator=(const BridgeProcess&) = delete;

  static constexpr int kStillRunning = -1000;
  static constexpr int kKilled = -1;

  // Exit status, kKilled for a signal, kStillRunning after `timeout`.
  int wait_exit(std::chrono::milliseconds timeout) {
    if (exited_) return status_;
    const auto deadline = Clock::now() + timeout;
    do {
      int status = 0;
      const pid_t r = ::waitpid(pid_, &status, WNOHANG);
      if (r == pid_) {
        exited_ = true;
        status_ = WIFEXITED(status) ? WEXITSTATUS(status) : kKilled;
        return status_;
      }
      std::this_thread::sleep_for(5ms);
    } while (Clock::now() < deadline);
    return kStillRunning;
  }
  void kill9() {
    ::kill(pid_, SIGKILL);
    wait_exit(5s);
  }
  int stop() {
    ::kill(pid_, SIGTERM);
    return wait_exit(10s);
  }
  bool running() { return wait_exit(0ms) == kStillRunning; }
  std::string log() const { return read_file(log_); }

 private:
  static inline int counter_ = 0;
  pid_t pid_ = -1;
  bool exited_ = false;
  int status_ = 0;
  std::string log_;
};

std::unique_ptr<BridgeProcess> start_receiver(std::uint16_t port, const std::string& ring,
                                              std::vector<std::string> extra = {},
                                              const std::string& address = "127.0.0.1",
                                              const std::string& netns = {}) {
  std::vector<std::string> args{"recv", "--listen", address + ":" + std::to_string(port), "--ring",
                                ring};
  args.insert(args.end(), extra.begin(), extra.end());
  return std::make_unique<BridgeProcess>(std::move(args), netns);
}

std::unique_ptr<BridgeProcess> start_sender(std::uint16_t port, const std::string& ring,
                                            std::vector<std::string> extra = {},
                                            const std::string& address = "127.0.0.1",
                                            const std::string& netns = {}) {
  std::vector<std::string> args{"send", "--ring", ring, "--to",
                                address + ":" + std::to_string(port)};
  args.insert(args.end(), extra.begin(), extra.end());
  return std::make_unique<BridgeProcess>(std::move(args), netns);
}

// Two "hosts": network namespaces joined by a veth pair, made by the test
// (needs CAP_NET_ADMIN; without it the test that uses them is skipped).
class TwoHosts {
 public:
  TwoHosts() {
    const std::string id = std::to_string(::getpid() % 100000);
    a_ = "shmring-a-" + id;
    b_ = "shmring-b-" + id;
    veth_a_ = "shra" + id;
    veth_b_ = "shrb" + id;
    const std::string net = "10.213." + std::to_string(::getpid() % 250) + ".";
    address_a_ = net + "1";
    address_b_ = net + "2";
    ready_ = run("ip netns add " + a_) && run("ip netns add " + b_) &&
             run("ip link add " + veth_a_ + " type veth peer name " + veth_b_) &&
             run("ip link set " + veth_a_ + " netns " + a_) &&
             run("ip link set " + veth_b_ + " netns " + b_) &&
             run("ip -n " + a_ + " addr add " + address_a_ + "/24 dev " + veth_a_) &&
             run("ip -n " + b_ + " addr add " + address_b_ + "/24 dev " + veth_b_) &&
             run("ip -n " + a_ + " link set lo up") && run("ip -n " + b_ + " link set lo up") &&
             link(true);
  }
  ~TwoHosts() {
    run("ip netns del " + a_);
    run("ip netns del " + b_);
  }
  bool ready() const { return ready_; }
  // Takes host A's end of the cable out, or puts it back.
  bool link(bool up) {
    return run("ip -n " + a_ + " link set " + veth_a_ + (up ? " up" : " down")) &&
           (!up || run("ip -n " + b_ + " link set " + veth_b_ + " up"));
  }
  const std::string& a() const { return a_; }
  const std::string& b() const { return b_; }
  const std::string& address_b() const { return address_b_; }

 private:
  static bool run(const std::string& command) {
    return std::system((command + " >/dev/null 2>&1").c_str()) == 0;
  }
  std::string a_, b_, veth_a_, veth_b_, address_a_, address_b_;
  bool ready_ = false;
};

// ---- the two ends -----------------------------------------------------------

Segment make_ring(const std::string& name, std::uint64_t capacity, std::uint64_t slot = kSlot) {
  CreateOptions o;
  o.capacity = capacity;
  o.slot_size = slot;
  return Segment::create(name, o);
}

// The two ends are processes of their own (forked), as a producer and a
// consumer on two hosts would be; what the test reads of them lives in a
// shared anonymous mapping.
struct EndState {
  std::atomic<std::uint64_t> pushed{0};
  std::atomic<std::uint64_t> received{0};
  std::atomic<bool> failed{false};
  std::atomic<bool> paused{false};
  char problem[512] = {};
};

class EndProcess {
 public:
  EndProcess()
      : state_(new (::mmap(nullptr, sizeof(EndState), PROT_READ | PROT_WRITE,
                           MAP_SHARED | MAP_ANONYMOUS, -1, 0)) EndState()) {}
  ~EndProcess() {
    if (pid_ > 0) {
      ::kill(pid_, SIGKILL);
      ::waitpid(pid_, nullptr, 0);
    }
    ::munmap(state_, sizeof(EndState));
  }
  EndProcess(const EndProcess&) = delete;
  EndProcess& operator=(const EndProcess&) = delete;

  // Waits for the process to finish its work.
  void join() {
    if (pid_ <= 0) return;
    int status = 0;
    ::waitpid(pid_, &status, 0);
    pid_ = -1;
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) state_->failed = true;
  }

 protected:
  template <class Body>
  void start(Body body) {
    pid_ = ::fork();
    if (pid_ == 0) {
      body(*state_);
      ::_exit(0);
    }
  }
  EndState* state_;

 private:
  pid_t pid_ = -1;
};

// Pushes messages [0, count) with a deadline per message; records how far it got.
class Producer : public EndProcess {
 public:
  std::atomic<std::uint64_t>& pushed = state_->pushed;
  std::atomic<bool>& failed = state_->failed;

  Producer(const Segment& segment, std::uint64_t count) {
    start([&segment, count](EndState& st) {
      SpscProducer tx = SpscProducer::attach(segment);
      const std::uint64_t slot = tx.slot_size();
      std::vector<std::byte> buffer(slot);
      for (std::uint64_t seq = 0; seq < count; ++seq) {
        fill_message(seq, buffer, slot);
        const auto deadline = Clock::now() + 60s;
        Status s;
        // peer_dead: the sender reading this ring was killed; the test starts
        // another, so wait for it as for room.
        while ((s = tx.push(std::span(buffer).first(message_size(seq, slot)), 50ms)) ==
                   Status::timeout ||
               s == Status::peer_dead) {
          if (Clock::now() > deadline) {
            st.failed = true;
            return;
          }
          if (s == Status::peer_dead) std::this_thread::sleep_for(1ms);
        }
        if (s != Status::ok) {
          st.failed = true;
          return;
        }
        st.pushed = seq + 1;
      }
    });
  }
};

// Opens the destination ring (the receiver creates it) and checks messages
// [0, count) in order; stops at the first problem or after `timeout` without
// progress.
class Consumer : public EndProcess {
 public:
  std::atomic<std::uint64_t>& received = state_->received;
  std::atomic<bool>& paused = state_->paused;
  std::string problem;  // set by join()

  Consumer(const std::string& ring, std::uint64_t count, std::chrono::seconds timeout = 60s,
           std::uint64_t slot = kSlot, bool start_paused = false) {
    // Set before the fork, so that not one message is read before the test
    // lets the consumer go.
    paused = start_paused;
    start([&ring, count, timeout, slot](EndState& st) {
      const auto fail = [&st](const std::string& what) {
        std::strncpy(st.problem, what.c_str(), sizeof st.problem - 1);
      };
      Segment segment;
      const auto open_deadline = Clock::now() + timeout;
      for (;;) {
        std::error_code ec;
        segment = Segment::open(ring, OpenOptions{}, ec);
        if (!ec) break;
        if (Clock::now() > open_deadline) {
          fail("destination ring never appeared: " + ec.message());
          return;
        }
        std::this_thread::sleep_for(10ms);
      }
      SpscConsumer rx = SpscConsumer::attach(segment);
      auto last_progress = Clock::now();
      std::uint64_t got = 0;
      while (got < count) {
        if (st.paused) {
          std::this_thread::sleep_for(1ms);
          last_progress = Clock::now();
          continue;
        }
        ReadClaim c = rx.peek(64, 20ms);
        if (c.empty()) {
          if (Clock::now() - last_progress > timeout) {
            fail("no message for " + std::to_string(timeout.count()) + " s after " +
                 std::to_string(got));
            return;
          }
          continue;
        }
        for (std::size_t i = 0; i < c.size(); ++i) {
          if (std::string p = check_message(got, c[i], slot); !p.empty()) {
            fail(p);
            return;
          }
          st.received = ++got;
        }
        c.release();
        last_progress = Clock::now();
      }
      // Exactly once: nothing may follow the last message.
      if (ReadClaim extra = rx.peek(1, 300ms); !extra.empty()) {
        fail("a message after the last one (a duplicate?)");
      }
    });
  }
  void join() {
    EndProcess::join();
    problem = state_->problem;
    if (problem.empty() && state_->failed) problem = "the consumer process did not exit cleanly";
  }
};

// Waits for both ends, then checks that every message arrived once, in order
// and intact; `logs` explains a failure.
void expect_every_message(Producer& producer, Consumer& consumer, std::uint64_t count,
                          const std::string& logs) {
  producer.join();
  consumer.join();
  EXPECT_FALSE(producer.failed);
  EXPECT_EQ(consumer.problem, "") << logs;
  EXPECT_EQ(consumer.received, count);
}

template <class Pred>
bool wait_until(Pred pred, std::chrono::milliseconds timeout) {
  const auto deadline = Clock::now() + timeout;
  while (!pred()) {
    if (Clock::now() > deadline) return false;
    std::this_thread::sleep_for(5ms);
  }
  return true;
}

// The names a bridge test uses, all removed at the end.
struct Names {
  UniqueShm src{"src"};
  UniqueShm dst{"dst"};
  ShmGuard state{dst.name() + ".bridge-state"};
};

bool listening(BridgeProcess& recv) {
  return wait_until([&] { return recv.log().find("listening on") != std::string::npos; }, 20s);
}

// A stream end to end: the source ring, a receiver and a sender process,
// the far consumer and the producer (forked in that order, before any
// bridge thread of this process).
struct StreamOptions {
  std::uint64_t count = 0;
  std::uint64_t capacity = 512;
  std::uint64_t slot = kSlot;
  std::vector<std::string> recv_args = {};
  std::vector<std::string> send_args = {};
  std::string address = "127.0.0.1";  // where the receiver listens
  std::string recv_netns = {};
  std::string send_netns = {};
  bool consumer_paused = false;  // the far consumer reads nothing until unpaused
};

class Stream {
 public:
  explicit Stream(const StreamOptions& o)
      : options(o),
        count(o.count),
        src(make_ring(n.src.name(), o.capacity, o.slot)),
        recv(new_receiver()),
        send(new_sender()),
        consumer(n.dst.name(), o.count, 60s, o.slot, o.consumer_paused),
        producer(src, o.count) {}

  const StreamOptions options;  // first: the members below are made from it
  Names n;
  const std::uint64_t count;
  Segment src;
  const std::uint16_t port = free_port();
  std::unique_ptr<BridgeProcess> recv;
  std::unique_ptr<BridgeProcess> send;
  Consumer consumer;
  Producer producer;

  std::string logs() const { return send->log() + recv->log(); }
  // Waits until the far consumer has checked `at` messages.
  testing::AssertionResult reaches(std::uint64_t at) {
    if (wait_until([&] { return consumer.received >= at; }, 60s))
      return testing::AssertionSuccess();
    return testing::AssertionFailure() << "stalled at " << consumer.received << "\n" << logs();
  }
  // SIGKILL to one bridge process, then another in its place.
  void kill_and_restart_receiver() {
    recv->kill9();
    recv = new_receiver();
  }
  void kill_and_restart_sender() {
    send->kill9();
    send = new_sender();
  }
  void expect_every_message() { test::expect_every_message(producer, consumer, count, logs()); }

 private:
  std::unique_ptr<BridgeProcess> new_receiver() {
    return start_receiver(port, n.dst.name(), options.recv_args, options.address,
                          options.recv_netns);
  }
  std::unique_ptr<BridgeProcess> new_sender() {
    return start_sender(port, n.src.name(), options.send_args, options.address, options.send_netns);
  }
};

// A file of /tmp that the test removes, whatever it is by then.
struct TmpPath {
  std::string path = "/tmp/" + unique_name("file_" + std::to_string(counter++));
  ~TmpPath() { ::unlink(path.c_str()); }
  static inline int counter = 0;
};

// A key file as a user would make one: 32 random bytes, private.
struct KeyFile : TmpPath {
  explicit KeyFile(mode_t mode = 0600) {
    std::random_device random;
    std::string key;
    for (int i = 0; i < 32; ++i) key += static_cast<char>(random());
    std::ofstream(path) << key;
    ::chmod(path.c_str(), mode);
  }
};

// ---- tests ------------------------------------------------------------------

TEST(Bridge, StreamsEveryMessageInOrderExactlyOnce) {
  Stream s({.count = scaled_count(200'000), .capacity = 1024});
  s.expect_every_message();
  EXPECT_EQ(s.send->stop(), 0) << s.send->log();
  EXPECT_EQ(s.recv->stop(), 0) << s.recv->log();
  // The receiver created the destination with the source's geometry.
  const Segment dst = Segment::open(s.n.dst.name());
  EXPECT_EQ(dst.geometry().capacity, 1024u);
  EXPECT_EQ(dst.geometry().slot_size, kSlot);
}

TEST(Bridge, ReceiverKilledMidStreamLosesAndDuplicatesNothing) {
  Stream s({.count = scaled_count(150'000)});
  for (const std::uint64_t at : {s.count / 4, s.count / 2}) {
    ASSERT_TRUE(s.reaches(at));
    s.kill_and_restart_receiver();
  }
  s.expect_every_message();
  // The sender noticed each loss and reconnected.
  EXPECT_NE(s.send->log().find("lost"), std::string::npos) << s.send->log();
  EXPECT_EQ(s.send->stop(), 0) << s.send->log();
}

// Slots of 64 KiB and more: each payload travels as a message of its own,
// from the sender's slot straight into a claimed slot of the far ring.
TEST(Bridge, LargeMessagesGoSlotToSlotAndSurviveAReceiverKill) {
  Stream s({.count = scaled_count(3'000), .capacity = 16, .slot = 96 * 1024});
  ASSERT_TRUE(s.reaches(s.count / 2));
  s.kill_and_restart_receiver();
  s.expect_every_message();
  EXPECT_EQ(s.send->stop(), 0) << s.send->log();
}

TEST(Bridge, SenderKilledMidStreamLosesAndDuplicatesNothing) {
  Stream s({.count = scaled_count(150'000)});
  for (const std::uint64_t at : {s.count / 4, s.count / 2}) {
    ASSERT_TRUE(s.reaches(at));
    // The new sender takes the dead one's consumer role over and resumes
    // where the receiver's ring is.
    s.kill_and_restart_sender();
  }
  s.expect_every_message();
}

TEST(Bridge, ConnectionCutAndRestoredLosesAndDuplicatesNothing) {
  TwoHosts hosts;
  if (!hosts.ready()) GTEST_SKIP() << "cannot make network namespaces here (needs CAP_NET_ADMIN)";
  KeyFile key;
  Stream s({.count = scaled_count(100'000),
            .recv_args = {"--key-file", key.path},
            .send_args = {"--peer-timeout", "1000", "--key-file", key.path},
            .address = hosts.address_b(),
            .recv_netns = hosts.b(),
            .send_netns = hosts.a()});
  ASSERT_TRUE(s.reaches(s.count / 3));
  // The cable goes: no reset reaches either side, so the sender must notice
  // the silence itself, then keep trying until the cable is back.
  ASSERT_TRUE(hosts.link(false));
  ASSERT_TRUE(wait_until([&] { return s.send->log().find("lost") != std::string::npos; }, 30s))
      << s.send->log();
  const std::uint64_t during = s.consumer.received;
  ASSERT_TRUE(hosts.link(true));
  s.expect_every_message();
  EXPECT_LT(during, s.count);
  EXPECT_EQ(s.send->stop(), 0) << s.send->log();
  EXPECT_EQ(s.recv->stop(), 0) << s.recv->log();
}

TEST(Bridge, SlowFarConsumerHoldsTheProducerBack) {
  // A short peer timeout: the receiver, blocked on its full ring, must keep
  // saying it lives, or the sender would take the stall for a cut.
  Stream s({.count = scaled_count(20'000),
            .capacity = 64,
            .send_args = {"--peer-timeout", "500"},
            .consumer_paused = true});
  // With the far consumer stopped, both rings fill and the producer stops:
  // at most the two rings' worth of messages is in flight, none dropped.
  ASSERT_TRUE(wait_until([&] { return s.producer.pushed >= 128; }, 30s)) << s.send->log();
  std::uint64_t before = 0;
  ASSERT_TRUE(wait_until(
      [&] {
        const std::uint64_t now = s.producer.pushed;
        const bool still = now == before;
        before = now;
        if (!still) std::this_thread::sleep_for(200ms);
        return still;
      },
      30s));
  // Held up for three peer timeouts.
  std::this_thread::sleep_for(1500ms);
  EXPECT_LE(s.producer.pushed.load(), 64u + 64u + 1u);
  EXPECT_EQ(s.consumer.received, 0u);
  EXPECT_EQ(s.send->log().find("lost"), std::string::npos) << s.send->log();
  s.consumer.paused = false;
  s.expect_every_message();
  EXPECT_EQ(s.send->log().find("lost"), std::string::npos) << s.send->log();
}

TEST(Bridge, RingOfAnotherGeometryIsRefusedWithAReason) {
  Names n;
  Segment src = make_ring(n.src.name(), 64, 512);
  Segment dst = make_ring(n.dst.name(), 64, 128);  // slots too small for the sender's
  const std::uint16_t port = free_port();
  auto recv = start_receiver(port, n.dst.name());
  auto send = start_sender(port, n.src.name());
  EXPECT_EQ(send->wait_exit(30s), 1) << send->log();
  EXPECT_NE(send->log().find("refused"), std::string::npos) << send->log();
  EXPECT_NE(send->log().find("would not fit"), std::string::npos) << send->log();
  // The receiver refuses that stream and goes on listening.
  EXPECT_TRUE(recv->running()) << recv->log();
  EXPECT_EQ(recv->stop(), 0) << recv->log();
}

TEST(Bridge, NoReceiverIsReportedAfterTheAttemptsAllowed) {
  Names n;
  Segment src = make_ring(n.src.name(), 64);
  const std::uint16_t port = free_port();  // nobody listens there
  auto send = start_sender(port, n.src.name(), {"--attempts", "2", "--connect-timeout", "300"});
  EXPECT_EQ(send->wait_exit(30s), 3) << send->log();
  EXPECT_NE(send->log().find("no ring-bridge receiver"), std::string::npos) << send->log();
}

TEST(Bridge, PeerSpeakingAnotherProtocolVersionIsRefused) {
  Names n;
  const std::uint16_t port = free_port();
  auto recv = start_receiver(port, n.dst.name());
  ::setenv("UCX_TLS", "tcp", 1);
  namespace wire = bridge::wire;
  bridge::detail::Worker worker;
  std::unique_ptr<bridge::detail::Endpoint> ep;
  const auto await = [&](bridge::detail::Completion& c) {
    const auto attempt = Clock::now() + 2s;
    while (c.pending && !ep->failed() && Clock::now() < attempt) worker.progress();
    if (c.pending) worker.cancel(c);
    worker.settle(c);
    return c.status == UCS_OK;
  };
  wire::Welcome welcome{};
  bool answered = false;
  const std::uint64_t epoch = 12345;
  // The receiver may still be starting: retry the connection for a while.
  const auto deadline = Clock::now() + 20s;
  while (!answered && Clock::now() < deadline) {
    ep = bridge::detail::Endpoint::connect(worker, "127.0.0.1", port);
    wire::Challenge challenge{};
    bridge::detail::Completion challenged;
    worker.recv(&challenge, sizeof challenge, wire::tag(wire::Kind::challenge, 0), wire::kKindMask,
                challenged);
    if (await(challenged)) {
      wire::Hello hello{};
      hello.magic = wire::kMagic;
      hello.protocol_version = 99;
      hello.epoch = epoch;
      std::memcpy(hello.nonce, challenge.nonce, sizeof hello.nonce);
      bridge::detail::Completion answer, sent;
      worker.recv(&welcome, sizeof welcome, wire::tag(wire::Kind::welcome, epoch), wire::kFullMask,
                  answer);
      worker.send(ep->handle(), &hello, sizeof hello, wire::tag(wire::Kind::hello, epoch), sent);
      answered = await(answer);
      if (sent.pending) ep.reset();
      worker.settle(sent);
    }
    ep.reset();
    if (!answered) std::this_thread::sleep_for(100ms);
  }
  ASSERT_TRUE(answered) << recv->log();
  EXPECT_EQ(welcome.result, wire::Result::bad_protocol);
  EXPECT_NE(std::string(welcome.reason).find("protocol 99"), std::string::npos) << welcome.reason;
  EXPECT_TRUE(recv->running()) << recv->log();
  EXPECT_EQ(recv->stop(), 0) << recv->log();
  EXPECT_FALSE(shm_exists(n.dst.name()));  // refused before any ring was made
}

// Bytes that are not UCX at all (a port scanner, an HTTP client) must not
// hurt the receiver: it goes on serving a real sender afterwards.
TEST(Bridge, ReceiverSurvivesAPeerThatIsNotUcx) {
  Names n;
  const std::uint64_t count = scaled_count(5'000);
  Segment src = make_ring(n.src.name(), 64);
  const std::uint16_t port = free_port();
  auto recv = start_receiver(port, n.dst.name());
  bool sent = false;
  const auto deadline = Clock::now() + 20s;
  while (!sent && Clock::now() < deadline) {
    const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_port = htons(port);
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0) {
      const std::string junk = "GET / HTTP/1.0\r\n\r\n" + std::string(4096, '\xff');
      sent = ::send(fd, junk.data(), junk.size(), MSG_NOSIGNAL) > 0;
    }
    ::close(fd);
    if (!sent) std::this_thread::sleep_for(20ms);
  }
  ASSERT_TRUE(sent);
  auto send = start_sender(port, n.src.name());
  Consumer consumer(n.dst.name(), count);
  Producer producer(src, count);
  expect_every_message(producer, consumer, count, send->log() + recv->log());
  EXPECT_EQ(recv->stop(), 0) << recv->log();
}

// /dev/shm is writable by every user: what lies at the state file's name
// may be planted there, a FIFO to hang the receiver in open(), or a file of
// another user's to feed it a stream position.
TEST(Bridge, StateFileThatIsNotOurOwnRegularFileStopsTheReceiver) {
  Names n;
  ASSERT_EQ(::mkfifo(n.state.path().c_str(), 0666), 0);
  auto recv = start_receiver(free_port(), n.dst.name());
  EXPECT_EQ(recv->wait_exit(20s), 1) << recv->log();
  EXPECT_NE(recv->log().find(n.state.path() + ": is a FIFO, not a regular file"), std::string::npos)
      << recv->log();

  ASSERT_EQ(::unlink(n.state.path().c_str()), 0);
  const int fd = ::open(n.state.path().c_str(), O_WRONLY | O_CREAT | O_EXCL, 0644);
  ASSERT_GE(fd, 0);
  ASSERT_EQ(::fchown(fd, 65534, 65534), 0);
  ::close(fd);
  recv = start_receiver(free_port(), n.dst.name());
  EXPECT_EQ(recv->wait_exit(20s), 1) << recv->log();
  EXPECT_NE(recv->log().find(n.state.path() + ": belongs to uid 65534"), std::string::npos)
      << recv->log();
}

TEST(Bridge, StateFifoPlantedWhileRunningRefusesTheSenderAndNeverHangs) {
  Names n;
  Segment src = make_ring(n.src.name(), 64);
  const std::uint16_t port = free_port();
  auto recv = start_receiver(port, n.dst.name());
  ASSERT_TRUE(listening(*recv)) << recv->log();
  ASSERT_EQ(::mkfifo(n.state.path().c_str(), 0666), 0);
  auto send = start_sender(port, n.src.name(), {"--attempts", "2", "--connect-timeout", "3000"});
  EXPECT_EQ(send->wait_exit(30s), 1) << send->log() << recv->log();
  EXPECT_NE(send->log().find("refused"), std::string::npos) << send->log();
  EXPECT_NE(send->log().find(n.state.path() + ": is a FIFO"), std::string::npos) << send->log();
  EXPECT_EQ(recv->stop(), 0) << recv->log();
}

std::string listened_port(BridgeProcess& recv) {
  const std::string log = recv.log();
  const std::string mark = "listening on 127.0.0.1:";
  const auto at = log.find(mark);
  if (at == std::string::npos) return {};
  return log.substr(at + mark.size(), log.find(' ', at + mark.size()) - at - mark.size());
}

// --port-file usually names a file in /tmp, where another user may plant a
// link at the name the receiver would write first.
TEST(Bridge, PortFileIsWrittenWithoutFollowingAPlantedLink) {
  Names n;
  TmpPath port_file, victim;
  std::ofstream(victim.path) << "precious\n";
  const std::string planted = port_file.path + ".tmp";
  ASSERT_EQ(::symlink(victim.path.c_str(), planted.c_str()), 0);
  auto recv = start_receiver(0, n.dst.name(), {"--port-file", port_file.path});
  ASSERT_TRUE(wait_until([&] { return !read_file(port_file.path).empty(); }, 20s)) << recv->log();
  EXPECT_EQ(read_file(port_file.path), listened_port(*recv) + "\n") << recv->log();
  EXPECT_EQ(read_file(victim.path), "precious\n");
  struct stat st {};
  ASSERT_EQ(::lstat(port_file.path.c_str(), &st), 0);
  EXPECT_TRUE(S_ISREG(st.st_mode));
  EXPECT_EQ(recv->stop(), 0) << recv->log();
  ::unlink(planted.c_str());
}

TEST(Bridge, PortFileThatCannotBeWrittenFailsTheReceiver) {
  Names n;
  const std::string nowhere = "/nonexistent-" + unique_name() + "/port";
  auto recv = start_receiver(0, n.dst.name(), {"--port-file", nowhere});
  EXPECT_EQ(recv->wait_exit(20s), 1) << recv->log();
  EXPECT_NE(recv->log().find("port file /nonexistent-"), std::string::npos) << recv->log();
  EXPECT_NE(recv->log().find("No such file or directory"), std::string::npos) << recv->log();

  // A full file system: the file is created, its contents cannot be written.
  TmpPath dir;
  ASSERT_EQ(::mkdir(dir.path.c_str(), 0700), 0);
  if (std::system(("mount -t tmpfs -o size=4k tmpfs " + dir.path + " 2>/dev/null").c_str()) != 0) {
    ::rmdir(dir.path.c_str());
    GTEST_SKIP() << "cannot mount a tmpfs here (needs CAP_SYS_ADMIN)";
  }
  std::ofstream(dir.path + "/fill") << std::string(4096, 'x');
  recv = start_receiver(0, n.dst.name(), {"--port-file", dir.path + "/port"});
  EXPECT_EQ(recv->wait_exit(20s), 1) << recv->log();
  EXPECT_NE(recv->log().find("cannot write: No space left on device"), std::string::npos)
      << recv->log();
  EXPECT_EQ(read_file(dir.path + "/port"), "");
  std::system(("umount " + dir.path).c_str());
  ::rmdir(dir.path.c_str());
}

// Rings are read and written, never executed: a mode with other bits would
// only fail once a sender came and the ring were created.
TEST(Bridge, ModeBeyondReadAndWriteIsRefusedAtStartup) {
  Names n;
  auto recv = start_receiver(0, n.dst.name(), {"--mode", "0700"});
  EXPECT_EQ(recv->wait_exit(20s), 1) << recv->log();
  EXPECT_NE(recv->log().find("mode 0700"), std::string::npos) << recv->log();
  EXPECT_NE(recv->log().find("within 0666"), std::string::npos) << recv->log();
}

// The address of the listening TCP socket on `port`, as /proc/net/tcp
// writes it (hex, network byte order), or empty.
std::string listening_address(std::uint16_t port) {
  std::ifstream in("/proc/net/tcp");
  std::string line;
  char wanted[8];
  std::snprintf(wanted, sizeof wanted, ":%04X", port);
  while (std::getline(in, line)) {
    std::istringstream fields(line);
    std::string slot, local, remote, state;
    fields >> slot >> local >> remote >> state;
    if (state == "0A" && local.size() > 5 && local.substr(local.size() - 5) == wanted) {
      return local.substr(0, local.size() - 5);
    }
  }
  return {};
}

TEST(Bridge, ReceiverListensOnLoopbackUnlessToldOtherwise) {
  Names n;
  auto recv = std::make_unique<BridgeProcess>(
      std::vector<std::string>{"recv", "--listen", "0", "--ring", n.dst.name()});
  ASSERT_TRUE(listening(*recv)) << recv->log();
  const std::string port = listened_port(*recv);
  ASSERT_FALSE(port.empty()) << recv->log();
  EXPECT_EQ(listening_address(static_cast<std::uint16_t>(std::stoi(port))), "0100007F")
      << recv->log();

  // Any other address would let every host that reaches it write into the
  // ring: only with a key.
  recv = start_receiver(0, n.dst.name(), {}, "0.0.0.0");
  EXPECT_EQ(recv->wait_exit(20s), 1) << recv->log();
  EXPECT_NE(recv->log().find("0.0.0.0:"), std::string::npos) << recv->log();
  EXPECT_NE(recv->log().find("is not a loopback address"), std::string::npos) << recv->log();
  EXPECT_NE(recv->log().find("--key-file"), std::string::npos) << recv->log();
  KeyFile key;
  recv = start_receiver(0, n.dst.name(), {"--key-file", key.path}, "0.0.0.0");
  ASSERT_TRUE(listening(*recv)) << recv->log();
  EXPECT_NE(recv->log().find("senders must prove the key"), std::string::npos) << recv->log();
  EXPECT_EQ(recv->stop(), 0) << recv->log();
}

TEST(Bridge, KeyFileMustBeOursAndPrivate) {
  Names n;
  Segment src = make_ring(n.src.name(), 64);
  const auto refused = [&](const std::string& path, const std::string& why) {
    auto recv = start_receiver(0, n.dst.name(), {"--key-file", path});
    EXPECT_EQ(recv->wait_exit(20s), 1) << recv->log();
    EXPECT_NE(recv->log().find("key file " + path + ": " + why), std::string::npos) << recv->log();
    auto send = start_sender(free_port(), n.src.name(), {"--key-file", path});
    EXPECT_EQ(send->wait_exit(20s), 1) << send->log();
    EXPECT_NE(send->log().find("key file " + path + ": " + why), std::string::npos) << send->log();
  };
  KeyFile readable(0644);
  refused(readable.path, "may be accessed by group or others (mode 0644)");
  KeyFile foreign;
  ASSERT_EQ(::chown(foreign.path.c_str(), 65534, 65534), 0);
  refused(foreign.path, "belongs to uid 65534");
  TmpPath link;
  KeyFile good;
  ASSERT_EQ(::symlink(good.path.c_str(), link.path.c_str()), 0);
  refused(link.path, "is a symbolic link");
  KeyFile short_key;
  std::ofstream(short_key.path, std::ios::trunc) << "secret";
  refused(short_key.path, "6 bytes; a key needs at least 16");
  refused(short_key.path + ".missing", "does not exist");
}

// A stream runs from `ring` through a receiver started with `recv_args`
// while each intruder (a sender of a ring of its own, given its extra
// arguments) tries its luck: each must be refused and say `why`, and the
// stream must deliver every message, none of the intruders' among them.
struct Intruder {
  std::string why;
  std::vector<std::string> args;
  std::uint64_t capacity;
  std::uint64_t slot;
};

void expect_refused_while_streaming(const std::vector<std::string>& recv_args,
                                    const std::vector<std::string>& send_args,
                                    const std::vector<Intruder>& intruders) {
  Stream s({.count = scaled_count(60'000), .recv_args = recv_args, .send_args = send_args});
  ASSERT_TRUE(s.reaches(s.count / 10));
  for (const Intruder& intruder : intruders) {
    UniqueShm ring("intruder");
    Segment segment = make_ring(ring.name(), intruder.capacity, intruder.slot);
    SpscProducer tx = SpscProducer::attach(segment);
    const std::string text = "not part of the stream";
    for (int i = 0; i < 8; ++i) ASSERT_EQ(tx.try_push(std::as_bytes(std::span(text))), Status::ok);
    auto other = start_sender(s.port, ring.name(), intruder.args);
    EXPECT_EQ(other->wait_exit(30s), 1) << other->log() << s.recv->log();
    EXPECT_NE(other->log().find("refused ring '" + ring.name() + "'"), std::string::npos)
        << other->log();
    EXPECT_NE(other->log().find(intruder.why), std::string::npos) << other->log();
  }
  s.expect_every_message();
  EXPECT_EQ(s.send->log().find("lost"), std::string::npos) << s.send->log();
  EXPECT_EQ(s.send->stop(), 0) << s.send->log();
  EXPECT_EQ(s.recv->stop(), 0) << s.recv->log();
}

TEST(Bridge, SenderWithoutTheKeyIsRefusedWhileTheStreamGoesOn) {
  KeyFile key;
  expect_refused_while_streaming(
      {"--key-file", key.path}, {"--key-file", key.path},
      {{"has no key; this receiver accepts only senders that hold its key", {}, 64, kSlot}});
}

TEST(Bridge, SenderWithAnotherKeyIsRefusedWhileTheStreamGoesOn) {
  KeyFile key, other_key;
  expect_refused_while_streaming({"--key-file", key.path}, {"--key-file", key.path},
                                 {{"failed authentication: its key is not this receiver's",
                                   {"--key-file", other_key.path},
                                   64,
                                   kSlot}});
}

TEST(Bridge, SecondSenderIsRefusedWhileTheFirstStreams) {
  expect_refused_while_streaming({}, {}, {{"one sender per stream", {}, 64, kSlot}});
}

TEST(Bridge, SenderAskingForTooLargeARingIsRefusedWhileTheStreamGoesOn) {
  expect_refused_while_streaming(
      {"--max-capacity", "2048", "--max-slot-size", "512KiB", "--max-segment-bytes", "4MiB"}, {},
      {{"4096 slots; this receiver accepts at most 2048 (--max-capacity)", {}, 4096, kSlot},
       {"slots of 1048576 bytes; this receiver accepts at most 524288 (--max-slot-size)",
        {},
        16,
        1 << 20},
       {"this receiver accepts at most 4194304 (--max-segment-bytes)", {}, 64, 128 << 10}});
}

TEST(Bridge, RunsInProcessAsALibraryCall) {
  Names n;
  const std::uint64_t count = scaled_count(50'000);
  Segment src = make_ring(n.src.name(), 256);
  // The ends are forked before this process starts the bridge threads.
  Consumer consumer(n.dst.name(), count);
  Producer producer(src, count);
  ::setenv("UCX_TLS", "tcp", 1);
  std::atomic<std::uint16_t> port{0};
  bridge::ReceiverOptions ro;
  ro.ring = n.dst.name();
  ro.bind_address = "127.0.0.1";
  ro.on_listening = [&](std::uint16_t p) { port = p; };
  bridge::BridgeStats received{};
  std::jthread receiver([&](std::stop_token stop) { received = bridge::run_receiver(ro, stop); });
  ASSERT_TRUE(wait_until([&] { return port != 0; }, 20s));
  bridge::SenderOptions so;
  so.ring = n.src.name();
  so.host = "127.0.0.1";
  so.port = port;
  so.max_batch = 32;
  bridge::BridgeStats sent{};
  std::jthread sender([&](std::stop_token stop) { sent = bridge::run_sender(so, stop); });
  expect_every_message(producer, consumer, count, "");
  // The sender releases each source slot once the far ring has committed it.
  const auto released = [&] {
    return std::atomic_ref<std::uint64_t>(control_of(src.base())->consumer.position).load();
  };
  ASSERT_TRUE(wait_until([&] { return released() == count; }, 10s)) << released();
  sender.request_stop();
  sender.join();
  receiver.request_stop();
  receiver.join();
  EXPECT_EQ(sent.messages, count);
  EXPECT_EQ(received.messages, count);
  EXPECT_EQ(sent.connections, 1u);
  EXPECT_EQ(received.connections, 1u);
  EXPECT_GT(sent.batches, 0u);
  EXPECT_LE(sent.batches, count);
}

}  // namespace
}  // namespace shmring::test
