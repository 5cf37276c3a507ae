// Peer: Eclipse iceoryx 2.0 (zero-copy publish/subscribe through shared
// memory managed by the RouDi daemon). The publisher loans a chunk, writes
// the message in place and publishes it; the subscriber takes the chunk,
// verifies it in place and releases it, as shmring's zero-copy API does.
// The subscriber asks the publisher to wait when its queue is full, so no
// message is discarded. Each agent process registers its own runtime.
//
// The same transport also runs in the fan-out harness (fanout_harness.hpp):
// one publisher, N subscribers, each with its own queue, the publisher
// waiting while any of them is full, next to shmring's broadcast ring.
//
// The benchmark starts iox-roudi itself (from SHMRING_BENCH_IOX_ROUDI, the
// path found at configure time, or PATH) before the first iceoryx benchmark,
// with a memory-pool configuration of its own (kRoudiConfig), and stops it at
// the end of the run; RouDi then removes its shared memory.
#include <fcntl.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <string>

#include "fanout_harness.hpp"
#include "iceoryx_hoofs/log/logmanager.hpp"
#include "iceoryx_posh/mepoo/chunk_header.hpp"
#include "iceoryx_posh/popo/untyped_publisher.hpp"
#include "iceoryx_posh/popo/untyped_subscriber.hpp"
#include "iceoryx_posh/runtime/posh_runtime.hpp"
#include "peer_harness.hpp"

#ifndef SHMRING_BENCH_IOX_ROUDI_PATH
#define SHMRING_BENCH_IOX_ROUDI_PATH "iox-roudi"
#endif

namespace shmring::bench::peers {

namespace {

// ---- the RouDi daemon ----------------------------------------------------------

// Not a static object with a destructor: forked agents leave through exit(),
// which would run it in every child.
pid_t g_roudi_pid = -1;
pid_t g_roudi_owner = -1;  // the process that started it
int g_roudi_log = -1;      // memfd with its output, for error messages
std::string g_roudi_error;

// RouDi's memory pools, given on its command line so that neither its
// built-in defaults nor a host's /etc/iceoryx/roudi_config.toml decide what
// fits. Sizes are payloads (RouDi adds the chunk header). A chunk is shared
// by all subscribers of a publisher, so one publisher has at most about queue
// + subscribers + 2 chunks out: 256 + 10 for 64 B and 4 KiB, 64 + 10 for
// 64 KiB, 16 + 10 for 1 MiB (8 subscribers; the round trips use two
// services). About 120 MB of /dev/shm.
constexpr const char* kRoudiConfig = R"([general]
version = 1

[[segment]]

[[segment.mempool]]
size = 128
count = 20000

[[segment.mempool]]
size = 4096
count = 4000

[[segment.mempool]]
size = 65536
count = 400

[[segment.mempool]]
size = 1048576
count = 72
)";

std::string roudi_output() {
  std::string text;
  char buffer[4096];
  off_t at = 0;
  ssize_t n;
  while ((n = ::pread(g_roudi_log, buffer, sizeof buffer, at)) > 0) {
    text.append(buffer, static_cast<std::size_t>(n));
    at += n;
  }
  return text;
}

// Starts RouDi once per run; "" when it is up, else why not.
const std::string& ensure_roudi() {
  if (g_roudi_pid > 0 || !g_roudi_error.empty()) return g_roudi_error;
  const char* env = std::getenv("SHMRING_BENCH_IOX_ROUDI");
  const std::string path = env != nullptr && *env != '\0' ? env : SHMRING_BENCH_IOX_ROUDI_PATH;
  g_roudi_log = ::memfd_create("iox-roudi-output", MFD_CLOEXEC);
  if (g_roudi_log < 0) return g_roudi_error = std::string("memfd_create: ") + std::strerror(errno);
  // The configuration lives in a memfd that RouDi reads through
  // /proc/self/fd: nothing to write to or remove from the file system.
  const int config = ::memfd_create("iox-roudi-config", MFD_CLOEXEC);
  if (config < 0) return g_roudi_error = std::string("memfd_create: ") + std::strerror(errno);
  const std::string_view config_text(kRoudiConfig);
  if (::write(config, config_text.data(), config_text.size()) !=
      static_cast<ssize_t>(config_text.size())) {
    ::close(config);
    return g_roudi_error = std::string("writing RouDi's configuration: ") + std::strerror(errno);
  }
  std::fflush(nullptr);
  const pid_t parent = ::getpid();
  const pid_t pid = ::fork();
  if (pid < 0) return g_roudi_error = std::string("fork: ") + std::strerror(errno);
  if (pid == 0) {
    // RouDi ends (and cleans up) if the benchmark dies; it may use every
    // CPU, not just the benchmark thread's.
    ::prctl(PR_SET_PDEATHSIG, SIGTERM);
    if (::getppid() != parent) ::_exit(126);
    cpu_set_t all;
    CPU_ZERO(&all);
    for (long c = 0; c < ::sysconf(_SC_NPROCESSORS_CONF) && c < CPU_SETSIZE; ++c) CPU_SET(c, &all);
    ::sched_setaffinity(0, sizeof all, &all);
    ::dup2(g_roudi_log, STDOUT_FILENO);
    ::dup2(g_roudi_log, STDERR_FILENO);
    const int kept = ::fcntl(config, F_DUPFD, 10);  // without close-on-exec
    const std::string config_path = "/proc/self/fd/" + std::to_string(kept);
    ::execlp(path.c_str(), path.c_str(), "--log-level", "warning", "--config-file",
             config_path.c_str(), static_cast<char*>(nullptr));
    std::fprintf(stderr, "cannot run %s: %s\n", path.c_str(), std::strerror(errno));
    ::_exit(127);
  }
  ::close(config);
  g_roudi_pid = pid;
  g_roudi_owner = parent;
  const auto deadline = Clock::now() + std::chrono::seconds(20);
  for (;;) {
    if (roudi_output().find("RouDi is ready for clients") != std::string::npos)
      return g_roudi_error;
    int status = 0;
    if (::waitpid(pid, &status, WNOHANG) == pid) {
      g_roudi_pid = -1;
      return g_roudi_error = path + " exited before it was ready: " + roudi_output();
    }
    if (Clock::now() > deadline) {
      stop_iceoryx();
      return g_roudi_error = path + " did not get ready within 20 s: " + roudi_output();
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
}

// ---- the transport ---------------------------------------------------------------

iox::capro::IdString_t id_string(const std::string& s) {
  return iox::capro::IdString_t(iox::cxx::TruncateToCapacity, s.c_str(), s.size());
}

class IceoryxTransport {
 public:
  static constexpr bool kProcesses = true;

  IceoryxTransport(std::size_t size, std::uint64_t depth, int /*channels*/, const std::string& id)
      : size_(size), id_(id) {
    if (const std::string& why = ensure_roudi(); !why.empty()) throw std::runtime_error(why);
    // The depth shmring's ring gets, up to the 256 an iceoryx queue holds
    // (kRoudiConfig has the chunks for it).
    queue_ = std::min<std::uint64_t>(depth, iox::MAX_SUBSCRIBER_QUEUE_CAPACITY);
  }
  // In the fan-out harness: channel 0 is the fan-out, channel 1 the echo.
  explicit IceoryxTransport(const FanoutConfig& c) : IceoryxTransport(c.size, c.depth, 2, c.id) {}

  // One runtime per process, named after it; leave_process() deregisters it.
  struct Agent {
    explicit Agent(IceoryxTransport&) {
      // Applications log every registration at debug level by default.
      iox::log::LogManager::GetLogManager().SetDefaultLogLevel(
          iox::log::LogLevel::kWarn, iox::log::LogLevelOutput::kHideLogLevel);
      const std::string name = "shmring_bench_" + std::to_string(::getpid());
      iox::runtime::PoshRuntime::initRuntime(
          iox::RuntimeName_t(iox::cxx::TruncateToCapacity, name.c_str(), name.size()));
    }
  };

  class Sender {
   public:
    Sender(IceoryxTransport& t, Agent&, int channel)
        : size_(static_cast<std::uint32_t>(t.size_)), publisher_(t.service(channel), options()) {
      // Without a subscriber a publish goes nowhere: wait until it is there.
      const auto deadline = Clock::now() + std::chrono::seconds(10);
      while (!publisher_.hasSubscribers()) {
        if (Clock::now() > deadline) throw std::runtime_error("iceoryx: no subscriber within 10 s");
        std::this_thread::sleep_for(std::chrono::milliseconds(1));
      }
    }
    const char* send(MessageTemplate& m, std::uint64_t tag, Spinner& spinner) noexcept {
      for (;;) {
        auto loan = publisher_.loan(size_, 8);
        if (!loan.has_error()) {
          spinner.progress();
          m.write(static_cast<std::byte*>(loan.value()), tag);
          publisher_.publish(loan.value());
          return nullptr;
        }
        if (loan.get_error() != iox::popo::AllocationError::RUNNING_OUT_OF_CHUNKS) {
          return "loan failed";
        }
        if (!spinner.failed_attempt())
          return spinner.stalled() ? "stalled: no free chunk" : "aborted";
      }
    }

   private:
    static iox::popo::PublisherOptions options() {
      iox::popo::PublisherOptions o;
      o.subscriberTooSlowPolicy = iox::popo::ConsumerTooSlowPolicy::WAIT_FOR_CONSUMER;
      return o;
    }
    std::uint32_t size_;
    iox::popo::UntypedPublisher publisher_;
  };

  class Receiver {
   public:
    Receiver(IceoryxTransport& t, Agent&, int channel)
        : subscriber_(t.service(channel), options(t.queue_)) {}
    const char* receive(const MessageTemplate& m, std::uint64_t& tag, Spinner& spinner) noexcept {
      for (;;) {
        auto taken = subscriber_.take();
        if (!taken.has_error()) {
          spinner.progress();
          const void* payload = taken.value();
          const std::uint32_t got =
              iox::mepoo::ChunkHeader::fromUserPayload(payload)->userPayloadSize();
          const bool intact = m.check_in_place(static_cast<const std::byte*>(payload), got, tag);
          subscriber_.release(payload);
          return intact ? nullptr : "message damaged";
        }
        if (taken.get_error() != iox::popo::ChunkReceiveResult::NO_CHUNK_AVAILABLE) {
          return "take failed";
        }
        if (!spinner.failed_attempt())
          return spinner.stalled() ? "stalled: nothing to take" : "aborted";
      }
    }

    // Waits until RouDi has connected it to the publisher: from then on the
    // publisher delivers to its queue.
    void await_subscribed() {
      const auto deadline = Clock::now() + std::chrono::seconds(10);
      while (subscriber_.getSubscriptionState() != iox::SubscribeState::SUBSCRIBED) {
        if (Clock::now() > deadline) {
          throw std::runtime_error("iceoryx: subscriber not connected within 10 s");
        }
        std::this_thread::sleep_for(std::chrono::milliseconds(1));
      }
    }

   private:
    static iox::popo::SubscriberOptions options(std::uint64_t queue) {
      iox::popo::SubscriberOptions o;
      o.queueCapacity = queue;
      o.queueFullPolicy = iox::popo::QueueFullPolicy::BLOCK_PRODUCER;
      return o;
    }
    iox::popo::UntypedSubscriber subscriber_;
  };

  // The fan-out harness's roles: one message a call, as above.
  class Publisher {
   public:
    Publisher(IceoryxTransport& t, Agent& a) : sender_(t, a, 0) {}
    std::size_t publish(MessageTemplate& m, unsigned producer, std::uint64_t first,
                        std::size_t /*max*/, Spinner& spinner, const char*& problem) noexcept {
      problem = sender_.send(m, make_tag(producer, first), spinner);
      return problem == nullptr ? 1 : 0;
    }

   private:
    Sender sender_;
  };
  class Subscriber {
   public:
    Subscriber(IceoryxTransport& t, Agent& a, unsigned /*index*/) : receiver_(t, a, 0) {
      receiver_.await_subscribed();
    }
    std::size_t receive(const MessageTemplate& m, std::uint64_t* tags, std::size_t /*max*/,
                        Spinner& spinner, const char*& problem) noexcept {
      problem = receiver_.receive(m, tags[0], spinner);
      return problem == nullptr ? 1 : 0;
    }

   private:
    Receiver receiver_;
  };
  // The echo channel: one publisher (subscriber 0), one subscriber (the
  // pinger); the Sender waits for it to be connected.
  struct EchoSender : Sender {
    EchoSender(IceoryxTransport& t, Agent& a) : Sender(t, a, 1) {}
  };
  struct EchoReceiver : Receiver {
    EchoReceiver(IceoryxTransport& t, Agent& a) : Receiver(t, a, 1) {}
  };

  // exit(), not _exit(): the runtime's destructor deregisters from RouDi,
  // which then frees this process's ports at once.
  static void leave_process() { std::exit(0); }

 private:
  iox::capro::ServiceDescription service(int channel) const {
    return {id_string("shmring_bench"), id_string(id_), id_string("ch" + std::to_string(channel))};
  }
  std::size_t size_;
  std::string id_;
  std::uint64_t queue_ = 256;
};

}  // namespace

void register_iceoryx_benchmarks() {
  register_peer<IceoryxTransport>("iceoryx", peer_sizes(std::size_t{1} << 20));
  register_fanout<IceoryxTransport>("iceoryx", "iceoryx", {64, std::size_t{1} << 20}, false);
}

void stop_iceoryx() {
  if (g_roudi_pid <= 0 || ::getpid() != g_roudi_owner) return;
  ::kill(g_roudi_pid, SIGTERM);
  int status = 0;
  const auto deadline = Clock::now() + std::chrono::seconds(10);
  pid_t r = 0;
  while ((r = ::waitpid(g_roudi_pid, &status, WNOHANG)) == 0 && Clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  if (r == 0) {
    ::kill(g_roudi_pid, SIGKILL);
    ::waitpid(g_roudi_pid, &status, 0);
    std::fprintf(stderr, "shmring_bench: iox-roudi did not stop on SIGTERM and was killed\n");
  }
  g_roudi_pid = -1;
  ::close(g_roudi_log);
  g_roudi_log = -1;
}

}  // namespace shmring::bench::peers
