// Segments a program makes for one run, and their removal on every way out:
// a return, an exception, a fatal signal (SIGINT, SIGTERM, SIGHUP, SIGQUIT),
// even a `kill -9` of the program when a forked child survives it long
// enough to get its death signal (SIGTERM). A segment left in /dev/shm
// outlives every process and holds its memory until somebody removes it.
#pragma once

#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdio>
#include <stdexcept>
#include <string>
#include <system_error>
#include <thread>

#include "shmring/shmring.hpp"

namespace shmring::harness {

namespace detail {

// What the signal handler reads: fixed buffers, no allocation, since it may
// only call async-signal-safe functions (kill, unlink, signal, raise).
struct SegmentRegistry {
  static constexpr int kMax = 8;
  char paths[kMax][320] = {};  // "/dev/shm/<name>"
  std::atomic<int> count{0};
  pid_t owner = 0;              // the process that removes them
  std::atomic<pid_t> child{0};  // killed first when a signal ends the owner
};
inline SegmentRegistry g_segments;

inline void unlink_registered() noexcept {
  const int n = g_segments.count.exchange(0);
  for (int i = 0; i < n; ++i) ::unlink(g_segments.paths[i]);
}

// The owner removes the segments and takes its child along. A forked child
// removes them only for an owner that died (it gets SIGTERM then, its death
// signal): otherwise the owner, still running, may need them.
inline void on_fatal_signal(int sig) {
  if (::getpid() == g_segments.owner) {
    if (const pid_t child = g_segments.child.load(); child > 0) ::kill(child, SIGKILL);
    unlink_registered();
  } else if (::getppid() != g_segments.owner) {
    unlink_registered();
  }
  ::signal(sig, SIG_DFL);
  ::raise(sig);
}

}  // namespace detail

// Removes the segments create_segment() makes, when it is destroyed and on a
// fatal signal. One per program, made in main() before any segment; only the
// process that made it removes anything (a forked child's copy does not).
class SegmentCleanup {
 public:
  SegmentCleanup() {
    detail::g_segments.owner = ::getpid();
    for (const int sig : {SIGINT, SIGTERM, SIGHUP, SIGQUIT}) ::signal(sig, detail::on_fatal_signal);
  }
  SegmentCleanup(const SegmentCleanup&) = delete;
  SegmentCleanup& operator=(const SegmentCleanup&) = delete;
  ~SegmentCleanup() {
    if (::getpid() == detail::g_segments.owner) detail::unlink_registered();
  }
  // A forked child that a signal ending this process kills first (SIGKILL),
  // so that none works on after its segments are gone; 0 for none.
  static void kill_on_signal(pid_t child) noexcept { detail::g_segments.child.store(child); }
};

// Creates segment `name` and registers it for removal. With `replace_stale`,
// a segment already under the name whose creator has died (a run that was
// killed) is removed first, saying so on stdout; one whose creator still runs
// is refused. Throws shmring::Error, or std::runtime_error naming the segment.
inline Segment create_segment(const std::string& name, const CreateOptions& options,
                              bool replace_stale) {
  std::error_code ec;
  Segment s = Segment::create(name, options, ec);
  if (!s && replace_stale && ec == errc::already_exists) {
    OpenOptions peek;
    peek.read_only = true;
    peek.init_timeout = std::chrono::milliseconds(100);
    std::error_code open_ec;
    const Segment old = Segment::open(name, peek, open_ec);
    // Only a segment read whole, whose creator is gone, is stale: one that
    // cannot be read (another user's, still being made, not a segment) is
    // left alone, never removed on a guess.
    if (!old) {
      throw std::runtime_error("segment '" + name + "' exists and cannot be read to check its " +
                               "creator (" + open_ec.message() + "); choose another --name");
    }
    const auto* h = reinterpret_cast<const SegmentHeader*>(old.base());
    if (process::alive(process::pack({h->creator_pid, h->creator_start_time}))) {
      throw std::runtime_error("segment '" + name + "' belongs to a running process (pid " +
                               std::to_string(h->creator_pid) + "); choose another --name");
    }
    std::printf("removing stale segment /dev/shm/%s\n", name.c_str());
    Segment::unlink(name, ec);
    s = Segment::create(name, options, ec);
  }
  if (!s) throw Error(ec, last_error_message());
  auto& r = detail::g_segments;
  const int i = r.count.load();
  if (i == r.kMax) throw std::runtime_error("more segments than SegmentCleanup can hold");
  std::snprintf(r.paths[i], sizeof r.paths[i], "/dev/shm/%s", s.name().c_str());
  r.count.store(i + 1);
  return s;
}

// Opens segment `name`, waiting up to `timeout` for a process that has not
// created it yet (a peer started at the same time). Throws shmring::Error.
inline Segment open_segment(const std::string& name, const OpenOptions& options,
                            std::chrono::nanoseconds timeout) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  for (;;) {
    std::error_code ec;
    if (Segment s = Segment::open(name, options, ec)) return s;
    if (ec != errc::not_found || std::chrono::steady_clock::now() >= deadline) {
      throw Error(ec, last_error_message());
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
}

}  // namespace shmring::harness
