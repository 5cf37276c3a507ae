#include "shmring/process.hpp"

#include <pthread.h>
#include <signal.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>

#include "detail/holder_lock.hpp"

namespace shmring::process {

namespace detail {
std::atomic<std::uint32_t> fork_generation{0};
}

namespace {

// In a forked child, before fork() returns there: a new generation (handles
// inherited from the parent now refuse to work) and the parent's role locks
// let go of (see holder_lock.hpp).
void in_forked_child() noexcept {
  detail::fork_generation.fetch_add(1, std::memory_order_relaxed);
  shmring::detail::drop_inherited_locks();
  shmring::detail::unlock_registry_after_fork();
}

[[maybe_unused]] const int fork_handler_installed =
    ::pthread_atfork(shmring::detail::lock_registry_for_fork,
                     shmring::detail::unlock_registry_after_fork, in_forked_child);

enum class StatState { missing, exited, running };

struct Stat {
  StatState state = StatState::missing;
  std::uint64_t start_time = 0;
};

// Reads /proc/<pid>/stat. "exited" is a zombie (or dead) entry: the process
// has ended and only waits for its parent to reap it.
Stat read_stat(std::uint32_t pid) noexcept {
  if (pid == 0) return {};
  char path[64];
  std::snprintf(path, sizeof path, "/proc/%u/stat", pid);
  std::FILE* f = std::fopen(path, "re");
  if (f == nullptr) return {};
  char buf[1024];
  const std::size_t n = std::fread(buf, 1, sizeof buf - 1, f);
  std::fclose(f);
  buf[n] = '\0';
  // The command name (field 2) is in parentheses and may hold spaces or ')'
  // itself: the fields after it start after the last ')'.
  const char* p = std::strrchr(buf, ')');
  if (p == nullptr) return {};
  ++p;
  char state = 0;
  unsigned long long start = 0;
  // After ") ": field 3 is the state, field 22 the start time.
  if (std::sscanf(p,
                  " %c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %*u %*u %*d %*d %*d %*d %*d "
                  "%*d %llu",
                  &state, &start) != 2) {
    return {};
  }
  return Stat{state == 'Z' || state == 'X' ? StatState::exited : StatState::running, start};
}

}  // namespace

std::optional<std::uint64_t> start_time(std::uint32_t pid) noexcept {
  const Stat st = read_stat(pid);
  if (st.state != StatState::running) return std::nullopt;
  return st.start_time;
}

std::optional<Identity> self() noexcept {
  Identity id;
  id.pid = static_cast<std::uint32_t>(::getpid());
  const std::optional<std::uint64_t> start = start_time(id.pid);
  if (!start) return std::nullopt;
  id.start_time = *start;
  return id;
}

bool alive(std::uint64_t packed) noexcept {
  const std::uint32_t pid = pid_of(packed);
  // 0 is nobody; a pid that is negative as pid_t (only a scribbled record
  // holds one) would make kill() below ask about a process group.
  if (pid == 0 || pid > 0x7fffffffu) return false;
  const Stat st = read_stat(pid);
  switch (st.state) {
    case StatState::exited:
      return false;
    case StatState::missing:
      // No readable /proc entry: fall back to kill(0), which cannot tell a
      // reused pid but never calls a live process dead.
      return ::kill(static_cast<pid_t>(pid), 0) == 0 || errno == EPERM;
    case StatState::running:
      break;
  }
  return (st.start_time & 0xffffffffull) == (packed >> 32);
}

}  // namespace shmring::process
