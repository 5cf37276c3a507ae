// Forked children that die with their parent, and reaping them: every
// multi-process run (the demo, the benchmarks' agents, the torture tests)
// starts, watches and ends its processes through these.
#pragma once

#include <signal.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstddef>
#include <cstdio>
#include <cstring>
#include <new>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <thread>
#include <utility>
#include <vector>

namespace shmring::harness {

// Exit status of a child that found its parent gone before it started.
inline constexpr int kExitOrphaned = 3;

// Forks a child that runs `body` (returning its exit status) and leaves with
// _exit: no destructors, no atexit handlers, nothing flushed twice. The
// child gets `death_signal` when the parent dies, so none outlives a parent
// that was killed. Returns the child's pid, or -1 (errno set).
template <class Body>
pid_t fork_child(Body&& body, int death_signal = SIGKILL) {
  std::fflush(nullptr);
  const pid_t parent = ::getpid();
  const pid_t pid = ::fork();
  if (pid != 0) return pid;
  ::prctl(PR_SET_PDEATHSIG, death_signal);
  // The parent may have died before prctl(): nobody would signal us.
  if (::getppid() != parent) ::_exit(kExitOrphaned);
  int rc = kExitOrphaned;
  try {
    rc = body();
  } catch (...) {
    rc = kExitOrphaned;
  }
  std::fflush(nullptr);
  ::_exit(rc);
}

// The child's wait status if it has ended (it is then reaped), else nothing.
inline std::optional<int> reap_now(pid_t pid) noexcept {
  int status = 0;
  if (::waitpid(pid, &status, WNOHANG) == pid) return status;
  return std::nullopt;
}

// Waits for the child to end; its wait status (-1 if there is no such child).
inline int reap(pid_t pid) noexcept {
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0) {
    if (errno != EINTR) return -1;
  }
  return status;
}

// Waits up to `limit` for the child to end; if it has not, kills it
// (SIGKILL) and reaps it. Its wait status, and whether it had to be killed.
struct Reaped {
  int status = 0;
  bool killed = false;
};
inline Reaped reap_within(pid_t pid, std::chrono::nanoseconds limit) {
  const auto deadline = std::chrono::steady_clock::now() + limit;
  for (;;) {
    if (const auto status = reap_now(pid)) return {*status, false};
    if (std::chrono::steady_clock::now() >= deadline) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  ::kill(pid, SIGKILL);
  return {reap(pid), true};
}

// Kills the child (SIGKILL) and reaps it: its wait status.
inline int kill_and_reap(pid_t pid) noexcept {
  ::kill(pid, SIGKILL);
  return reap(pid);
}

inline bool exited_ok(int status) noexcept { return WIFEXITED(status) && WEXITSTATUS(status) == 0; }
inline bool killed_by(int status, int sig) noexcept {
  return WIFSIGNALED(status) && WTERMSIG(status) == sig;
}

// "exited with status 3", "killed by signal 9 (Killed)".
inline std::string describe_exit(int status) {
  if (status < 0) return "not reaped (waitpid failed)";
  if (WIFSIGNALED(status)) {
    return "killed by signal " + std::to_string(WTERMSIG(status)) + " (" +
           ::strsignal(WTERMSIG(status)) + ")";
  }
  if (WIFEXITED(status)) return "exited with status " + std::to_string(WEXITSTATUS(status));
  return "ended with wait status " + std::to_string(status);
}

// Forked children (fork_child) watched together while the parent does its
// own part of a run: all_running() tells whether one has ended, reap_all()
// collects every wait status. None outlives the group: the destructor kills
// and reaps those still running (after an exception, say).
class Children {
 public:
  Children() = default;
  Children(const Children&) = delete;
  Children& operator=(const Children&) = delete;
  ~Children() {
    for (std::size_t k = 0; k < pids_.size(); ++k) {
      if (!statuses_[k]) kill_and_reap(pids_[k]);
    }
  }

  // Forks a child running `body` (fork_child); throws std::runtime_error if
  // fork fails.
  template <class Body>
  pid_t spawn(Body&& body, int death_signal = SIGKILL) {
    const pid_t pid = fork_child(std::forward<Body>(body), death_signal);
    if (pid < 0) throw std::runtime_error(std::string("fork: ") + std::strerror(errno));
    pids_.push_back(pid);
    statuses_.emplace_back();
    return pid;
  }

  // False once a child has ended (it is reaped then).
  bool all_running() noexcept {
    bool all = true;
    for (std::size_t k = 0; k < pids_.size(); ++k) {
      if (!statuses_[k]) statuses_[k] = reap_now(pids_[k]);
      all = all && !statuses_[k];
    }
    return all;
  }

  // Waits for every child to end. With a `grace` (after a failure, when a
  // child may wait for a peer that will never come), one still running after
  // it is killed.
  void reap_all(std::optional<std::chrono::nanoseconds> grace = std::nullopt) {
    for (std::size_t k = 0; k < pids_.size(); ++k) {
      if (!statuses_[k])
        statuses_[k] = grace ? reap_within(pids_[k], *grace).status : reap(pids_[k]);
    }
  }

  // In the order spawned: the pid, and the wait status once reaped.
  const std::vector<pid_t>& pids() const noexcept { return pids_; }
  const std::vector<std::optional<int>>& statuses() const noexcept { return statuses_; }

 private:
  std::vector<pid_t> pids_;
  std::vector<std::optional<int>> statuses_;
};

// `count` T in memory shared with the children forked after it (an anonymous
// MAP_SHARED mapping): how they report to the parent. Value-initialised.
template <class T>
class SharedArray {
 public:
  explicit SharedArray(std::size_t count = 1) : count_(count) {
    void* p = ::mmap(nullptr, bytes(), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) throw std::runtime_error(std::string("mmap: ") + std::strerror(errno));
    data_ = static_cast<T*>(p);
    for (std::size_t i = 0; i < count_; ++i) new (&data_[i]) T();
  }
  SharedArray(const SharedArray&) = delete;
  SharedArray& operator=(const SharedArray&) = delete;
  ~SharedArray() {
    for (std::size_t i = 0; i < count_; ++i) data_[i].~T();
    ::munmap(data_, bytes());
  }
  T& operator[](std::size_t i) const noexcept { return data_[i]; }
  T* operator->() const noexcept { return data_; }
  T& operator*() const noexcept { return *data_; }
  std::size_t size() const noexcept { return count_; }

 private:
  std::size_t bytes() const noexcept { return std::max<std::size_t>(1, count_) * sizeof(T); }
  std::size_t count_;
  T* data_ = nullptr;
};

// Text in a fixed buffer (shared memory holds no std::string), cut to fit.
template <std::size_t N>
void set_text(char (&to)[N], std::string_view text) noexcept {
  const std::size_t n = std::min(text.size(), N - 1);
  std::memcpy(to, text.data(), n);
  to[n] = '\0';
}

}  // namespace shmring::harness
