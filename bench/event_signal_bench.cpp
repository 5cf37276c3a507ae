// How a publisher should tell a waiter in another process that a ring moved,
// when the waiter sleeps in epoll (shmring/event.hpp). For each candidate
// endpoint it measures, between two processes:
//
//   signal  the publisher's call that makes the waiter's descriptor readable
//           (what every publication costs while somebody waits), median
//   wake    from just before that call to the waiter's return from
//           epoll_wait, median and 99th percentile
//
// Candidates: a FIFO in /dev/shm (what shmring uses; the publisher opens it
// by name, O_RDWR so that a dead reader never raises SIGPIPE), a Unix
// datagram socket bound in /dev/shm (the publisher sends with
// MSG_DONTWAIT|MSG_NOSIGNAL over a connected socket), and an eventfd (what a
// waiter would have to hand over a Unix socket to every publisher; inherited
// here, which costs the same once handed over).
//
// Build: c++ -O2 -std=c++20 bench/event_signal_bench.cpp -o event_signal_bench
// Run:   ./event_signal_bench [rounds, default 20000]
// One round: the waiter blocks in epoll_wait, the publisher spins until it
// sees the waiter is about to (a flag in shared memory), pauses ~20 us so the
// waiter is really asleep, signals, and waits for the waiter's answer.
#include <fcntl.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

namespace {

using Clock = std::chrono::steady_clock;

std::int64_t now_ns() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(Clock::now().time_since_epoch())
      .count();
}

struct Shared {
  std::atomic<std::uint64_t> round{0};   // publisher: round being signalled
  std::atomic<std::uint64_t> asleep{0};  // waiter: about to wait for this round
  std::atomic<std::uint64_t> woken{0};   // waiter: woke for this round
  std::atomic<std::int64_t> sent_ns{0};  // publisher: just before the signal
  std::atomic<std::int64_t> wake_ns{0};  // waiter: back from epoll_wait
};

enum class Kind { fifo, dgram, eventfd };

const char* name(Kind k) {
  return k == Kind::fifo    ? "fifo (O_RDWR, write 1 B)"
         : k == Kind::dgram ? "unix dgram (send 1 B)"
                            : "eventfd (write 8 B)";
}

void die(const char* what) {
  std::perror(what);
  std::exit(1);
}

double median(std::vector<std::int64_t> v) {
  std::sort(v.begin(), v.end());
  return static_cast<double>(v[v.size() / 2]);
}
double pct(std::vector<std::int64_t> v, double p) {
  std::sort(v.begin(), v.end());
  return static_cast<double>(v[static_cast<std::size_t>(p * static_cast<double>(v.size() - 1))]);
}

void run(Kind kind, std::uint64_t rounds) {
  auto* sh = static_cast<Shared*>(
      ::mmap(nullptr, sizeof(Shared), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0));
  if (sh == MAP_FAILED) die("mmap");
  new (sh) Shared;
  const std::string path = "/dev/shm/.event-bench." + std::to_string(::getpid());
  ::unlink(path.c_str());
  int rx = -1;
  int efd = -1;
  if (kind == Kind::fifo) {
    if (::mkfifo(path.c_str(), 0600) != 0) die("mkfifo");
    rx = ::open(path.c_str(), O_RDWR | O_NONBLOCK | O_CLOEXEC | O_NOFOLLOW);
  } else if (kind == Kind::dgram) {
    rx = ::socket(AF_UNIX, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    sockaddr_un a{};
    a.sun_family = AF_UNIX;
    std::snprintf(a.sun_path, sizeof a.sun_path, "%s", path.c_str());
    if (::bind(rx, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) die("bind");
  } else {
    efd = ::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    rx = efd;
  }
  if (rx < 0) die("endpoint");

  const pid_t child = ::fork();
  if (child < 0) die("fork");
  if (child == 0) {  // the waiter
    const int ep = ::epoll_create1(EPOLL_CLOEXEC);
    epoll_event ev{};
    ev.events = EPOLLIN;
    ::epoll_ctl(ep, EPOLL_CTL_ADD, rx, &ev);
    for (std::uint64_t r = 1; r <= rounds; ++r) {
      sh->asleep.store(r, std::memory_order_seq_cst);
      epoll_event out{};
      while (::epoll_wait(ep, &out, 1, -1) != 1) {
      }
      sh->wake_ns.store(now_ns(), std::memory_order_relaxed);
      char buf[64];
      while (::read(rx, buf, sizeof buf) > 0) {  // drain (a datagram per read)
      }
      sh->woken.store(r, std::memory_order_release);
    }
    ::_exit(0);
  }

  // The publisher: opens the endpoint as a publisher of another process would.
  int tx = -1;
  if (kind == Kind::fifo) {
    tx = ::open(path.c_str(), O_RDWR | O_NONBLOCK | O_CLOEXEC | O_NOFOLLOW);
  } else if (kind == Kind::dgram) {
    tx = ::socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    sockaddr_un a{};
    a.sun_family = AF_UNIX;
    std::snprintf(a.sun_path, sizeof a.sun_path, "%s", path.c_str());
    if (::connect(tx, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) die("connect");
  } else {
    tx = efd;
  }
  if (tx < 0) die("publisher endpoint");
  std::vector<std::int64_t> signal;
  std::vector<std::int64_t> wake;
  signal.reserve(rounds);
  wake.reserve(rounds);
  for (std::uint64_t r = 1; r <= rounds; ++r) {
    while (sh->asleep.load(std::memory_order_acquire) != r) {
    }
    const auto settle = Clock::now() + std::chrono::microseconds(20);
    while (Clock::now() < settle) {
    }
    const std::int64_t t0 = now_ns();
    ssize_t n = 0;
    if (kind == Kind::fifo) {
      const char b = 1;
      n = ::write(tx, &b, 1);
    } else if (kind == Kind::dgram) {
      const char b = 1;
      n = ::send(tx, &b, 1, MSG_DONTWAIT | MSG_NOSIGNAL);
    } else {
      const std::uint64_t one = 1;
      n = ::write(tx, &one, sizeof one);
    }
    const std::int64_t t1 = now_ns();
    if (n <= 0) die("signal");
    while (sh->woken.load(std::memory_order_acquire) != r) {
    }
    signal.push_back(t1 - t0);
    wake.push_back(sh->wake_ns.load(std::memory_order_relaxed) - t0);
  }
  ::waitpid(child, nullptr, 0);
  ::close(tx);
  if (rx != tx) ::close(rx);
  ::unlink(path.c_str());
  ::munmap(sh, sizeof(Shared));
  std::printf("%-28s signal %6.2f us (p99 %6.2f)   wake via epoll %6.2f us (p99 %7.2f)\n",
              name(kind), median(signal) / 1e3, pct(signal, 0.99) / 1e3, median(wake) / 1e3,
              pct(wake, 0.99) / 1e3);
}

}  // namespace

int main(int argc, char** argv) {
  const std::uint64_t rounds = argc > 1 ? std::strtoull(argv[1], nullptr, 10) : 20000;
  std::printf("%llu rounds, waiter and publisher in two processes\n",
              static_cast<unsigned long long>(rounds));
  for (const Kind k : {Kind::fifo, Kind::dgram, Kind::eventfd}) run(k, rounds);
  return 0;
}
