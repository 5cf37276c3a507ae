// The CPU agents: processes forked before the first CUDA call (so that none
// inherits a CUDA context), each running one job at a time (consume,
// subscribe or produce) through the CPU API, told what to do through a
// shared control block.
#pragma once

#include <signal.h>
#include <sys/mman.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cstdint>
#include <cstdio>
#include <new>
#include <stdexcept>

#include "common.hpp"

namespace gpu_bench {

enum class JobKind : std::uint32_t { consume = 1, produce = 2, quit = 3, subscribe = 4 };

struct AgentJob {
  JobKind kind = JobKind::quit;
  int cpu = -1;
  char segment[128] = {};
  std::uint64_t messages = 0;
  std::uint64_t size = 0;
  std::uint64_t batch = 0;       // try_peek / try_claim maximum
  std::uint64_t deep_every = 0;  // consumer: full body check every n-th message (0: never)
  std::uint32_t write_full = 0;  // producer: every byte, or the stamps only
  std::uint32_t check = 1;       // consumer: 0 reads nothing (diagnosis only)
  std::uint32_t prefetch = 0;    // consumer: payload prefetch distance, slots
  double timeout_s = 10;
};

struct AgentResult {
  std::uint64_t messages = 0;
  std::uint64_t errors = 0;
  std::uint64_t deep_checked = 0;
  std::int64_t t_start = 0;  // producer: first claim; consumer: first message seen
  std::int64_t t_end = 0;    // last message committed / released
  std::uint32_t ok = 0;
  char failure[256] = {};
};

struct AgentControl {
  std::atomic<std::uint32_t> posted{0};    // host: job number written
  std::atomic<std::uint32_t> attached{0};  // agent: attached for job n
  std::atomic<std::uint32_t> go{0};        // host: producer may start job n
  std::atomic<std::uint32_t> finished{0};  // agent: result of job n written
  std::atomic<std::uint32_t> abandon{0};   // host: give up job n (its GPU side failed)
  AgentJob job;
  AgentResult result;
};

// The agent process: runs the jobs posted to `ctl` until the quit job or
// until `parent` is gone.
[[noreturn]] void agent_main(AgentControl* ctl, pid_t parent);

class Agent {
 public:
  // Forks the agent; call before any CUDA call.
  static Agent start() {
    void* mem = mmap(nullptr, sizeof(AgentControl), PROT_READ | PROT_WRITE,
                     MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (mem == MAP_FAILED) throw std::runtime_error("mmap of the agent control block failed");
    auto* ctl = new (mem) AgentControl();
    const pid_t parent = ::getpid();
    std::fflush(nullptr);
    const pid_t pid = fork();
    if (pid < 0) throw std::runtime_error("fork failed");
    if (pid == 0) agent_main(ctl, parent);
    Agent a;
    a.ctl_ = ctl;
    a.pid_ = pid;
    return a;
  }

  // Posts a job, after abandoning one still running (its GPU side failed).
  std::uint32_t post(const AgentJob& job) {
    if (pending_ != 0) {
      ctl_->abandon.store(pending_, std::memory_order_relaxed);
      wait_finished(pending_, ctl_->job.timeout_s + 30);
    }
    ctl_->job = job;
    const std::uint32_t n = ++next_;
    pending_ = job.kind == JobKind::quit ? 0 : n;
    ctl_->posted.store(n, std::memory_order_release);
    return n;
  }
  // Waits until the agent attached for job n (or gave up on it).
  void wait_attached(std::uint32_t n, double timeout_s) {
    const std::int64_t until = now_ns() + static_cast<std::int64_t>(timeout_s * 1e9);
    while (ctl_->attached.load(std::memory_order_acquire) != n) {
      if (ctl_->finished.load(std::memory_order_acquire) == n) {
        throw std::runtime_error(ctl_->result.failure);
      }
      check_alive();
      if (now_ns() > until) throw std::runtime_error("CPU agent did not attach");
      usleep(20);
    }
  }
  void go(std::uint32_t n) { ctl_->go.store(n, std::memory_order_release); }
  AgentResult wait_finished(std::uint32_t n, double timeout_s) {
    const std::int64_t until = now_ns() + static_cast<std::int64_t>(timeout_s * 1e9);
    while (ctl_->finished.load(std::memory_order_acquire) != n) {
      check_alive();
      if (now_ns() > until) throw std::runtime_error("CPU agent did not finish");
      usleep(20);
    }
    pending_ = 0;
    return ctl_->result;
  }
  void stop() {
    if (pid_ <= 0) return;
    if (pending_ != 0) ctl_->abandon.store(pending_, std::memory_order_relaxed);
    pending_ = 0;  // the agent reads the quit job once that one is done
    AgentJob quit;
    quit.kind = JobKind::quit;
    post(quit);
    int status = 0;
    waitpid(pid_, &status, 0);
    pid_ = -1;
  }

 private:
  void check_alive() {
    int status = 0;
    if (waitpid(pid_, &status, WNOHANG) == pid_) {
      pid_ = -1;
      throw std::runtime_error("CPU agent process died");
    }
  }
  AgentControl* ctl_ = nullptr;
  pid_t pid_ = -1;
  std::uint32_t next_ = 0;
  std::uint32_t pending_ = 0;  // posted, result not read yet
};

}  // namespace gpu_bench
