// The tools' stop signals (tools/stop_signals.hpp): a stop signal ends a wait
// whenever it came, and one that comes after the last wait neither kills the
// tool at its end nor stays blocked after it.
#include <gtest/gtest.h>
#include <pthread.h>
#include <signal.h>
#include <unistd.h>

#include <chrono>
#include <thread>

#include "stop_signals.hpp"
#include "test_support.hpp"

namespace {

using shmring::tools::StopSignals;
using namespace std::chrono_literals;

bool blocked(int sig) {
  sigset_t now;
  pthread_sigmask(SIG_BLOCK, nullptr, &now);
  return sigismember(&now, sig) == 1;
}

TEST(StopSignals, ASignalThatCameWhileBusyEndsTheNextWait) {
  StopSignals stop{SIGUSR1};
  ASSERT_EQ(::raise(SIGUSR1), 0);  // pending: nobody was waiting
  EXPECT_TRUE(stop.wait_for(60s));
  EXPECT_FALSE(stop.wait_for(0s)) << "one signal ended two waits";
}

TEST(StopSignals, AWaitWithoutASignalEndsAtItsDeadline) {
  StopSignals stop{SIGUSR1};
  const auto before = std::chrono::steady_clock::now();
  EXPECT_FALSE(stop.wait_for(30ms));
  EXPECT_GE(std::chrono::steady_clock::now() - before, 30ms);
}

TEST(StopSignals, ASignalToTheProcessReachesAWaitingThread) {
  // The ring-bridge shape: blocked first, then a thread started that waits,
  // while the signal is sent to the process as a whole (kill, as a shell does).
  StopSignals stop{SIGUSR2};
  bool got = false;
  std::thread waiter([&] { got = stop.wait_for(60s); });
  ASSERT_EQ(::kill(::getpid(), SIGUSR2), 0);
  waiter.join();
  EXPECT_TRUE(got);
}

TEST(StopSignals, APendingStopAtTheEndIsTakenNotDelivered) {
  // In a child: SIGINT's default action would end it with a signal death.
  const int rc = shmring::test::run_in_child([] {
    {
      StopSignals stop{SIGINT};
      if (::raise(SIGINT) != 0) return 2;
    }
    return blocked(SIGINT) ? 3 : 0;  // the mask is as it was before
  });
  EXPECT_NE(rc, -1) << "the pending SIGINT killed the process at the end";
  EXPECT_NE(rc, 3) << "SIGINT left blocked";
  EXPECT_EQ(rc, 0);
}

TEST(StopSignals, AnEarlierBlockSurvives) {
  sigset_t usr1;
  sigemptyset(&usr1);
  sigaddset(&usr1, SIGUSR1);
  pthread_sigmask(SIG_BLOCK, &usr1, nullptr);
  { StopSignals stop{SIGUSR1}; }
  EXPECT_TRUE(blocked(SIGUSR1)) << "the tool's own block of SIGUSR1 was undone";
  pthread_sigmask(SIG_UNBLOCK, &usr1, nullptr);
}

}  // namespace
