// Event-driven waiting (shmring/event.hpp): a waiter's descriptor becomes
// readable when a publisher signals (through the handles' wake path), across
// threads and processes, never signalled for nothing; a publication that
// misses the raised count is caught by the waiter's look; a waiter killed
// while armed is collected; hostile files under a FIFO's name are refused;
// WaitSet over rings and a pipe.
//
// Counts scale with SHMRING_STRESS_SCALE (and shrink under ThreadSanitizer),
// as in test_stress.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <poll.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <bit>
#include <chrono>
#include <cstring>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "shmring/atomic.hpp"
#include "shmring/event.hpp"
#include "shmring/mpmc_ring.hpp"
#include "shmring/mpmc_view.hpp"
#include "shmring/segment.hpp"
#include "shmring/spsc_ring.hpp"
#include "shmring/spsc_view.hpp"
#include "shmring/wait.hpp"
#include "stress_message.hpp"
#include "test_support.hpp"

namespace shmring {
namespace {

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;
using detail::EventSignaller;
using detail::EventWaiter;
using test::bytes_word;
using test::make_ring;
using test::poll_until;
using test::readable;
using test::word_bytes;

// How long a signalled descriptor may take to become readable before the
// test calls the wake-up lost: far beyond any look (50 ms at most) and any
// scheduling delay of a loaded 2-core machine.
constexpr auto kWatchdog = 5s;

ControlArea& control(const Segment& seg) { return *reinterpret_cast<ControlArea*>(seg.base()); }

// Whether the SPSC head has passed `taken` messages: a message is there. Not
// "differs": the consumer takes a slot as soon as its trailer is committed,
// before the producer's head store covers it, so for that moment the head
// is behind the messages taken (a producer descheduled between the two
// stores makes the moment long).
bool head_past(const Segment& seg, std::uint64_t taken) {
  return static_cast<std::int64_t>(atomic::load_seq_cst(&control(seg).producer.position) - taken) >
         0;
}
std::uint32_t data_count(const Segment& seg) {
  return atomic::load_seq_cst(&control(seg).consumer_wait.waiters);
}
std::uint32_t data_armed(const Segment& seg) {
  return atomic::load_seq_cst(&control(seg).data_events.armed);
}

// An SPSC consumer's readiness: the head moved past what it has taken.
EventWaiter::Ready spsc_data_ready(const Segment& seg, const std::uint64_t& taken) {
  return [&seg, &taken] { return head_past(seg, taken); };
}

// ---- signalled on publication -------------------------------------------------

TEST(EventWaiter, ReadableWhenAProducerPublishesAndNeverSignalledForNothing) {
  test::UniqueShm shm;
  const Segment seg = make_ring(shm, RingKind::spsc, 8);
  SpscProducer tx = SpscProducer::attach(seg);
  SpscConsumer rx = SpscConsumer::attach(seg);
  std::uint64_t taken = 0;
  EventWaiter w = EventWaiter::open(seg, WaitFor::data, spsc_data_ready(seg, taken));
  ASSERT_TRUE(w);
  EXPECT_GE(w.fd(), 0);
  EXPECT_EQ(w.fifo_path().rfind("/dev/shm/.shmring-event.", 0), 0u) << w.fifo_path();
  EXPECT_EQ(data_count(seg), 0u);

  // Nothing published: the descriptor only ever shows looks (about 9 of them
  // in 30 ms: 0.1, 0.2, 0.4 ... ms), never a signal.
  ASSERT_FALSE(w.arm());
  EXPECT_EQ(data_count(seg), kEventWaiter) << "arming raises the consumers' descriptor count";
  EXPECT_NE(data_armed(seg) & (1u << w.entry()), 0u);
  int looks = 0;
  const auto quiet_end = Clock::now() + 30ms;
  while (Clock::now() < quiet_end) {
    if (!readable(w.fd(), 5ms)) continue;
    const EventWaiter::Woken why = w.consume();
    EXPECT_FALSE(why.signalled) << "signalled with nothing published";
    EXPECT_TRUE(why.looked);
    ++looks;
    EXPECT_FALSE(w.arm());
  }
  EXPECT_GE(looks, 1);
  EXPECT_LE(looks, 12) << "looks must back off (doubling) like futex sleeps";
  EXPECT_EQ(data_count(seg), kEventWaiter) << "looks keep the count raised: no new window opens";

  // A publication through the handle's wake path signals.
  ASSERT_EQ(tx.try_push(word_bytes(7)), Status::ok);
  ASSERT_TRUE(readable(w.fd(), kWatchdog)) << "the publication was not signalled";
  const EventWaiter::Woken why = w.consume();
  EXPECT_TRUE(why.signalled);
  EXPECT_EQ(data_count(seg), 0u) << "a signalled waiter gives its raise back";
  EXPECT_FALSE(readable(w.fd(), 0ms)) << "consume() empties the descriptor";
  std::array<std::byte, 64> buf{};
  std::size_t size = 0;
  ASSERT_EQ(rx.try_pop(buf, size), Status::ok);
  EXPECT_EQ(bytes_word(buf), 7u);
  ++taken;

  // Something already there: arm() says so and leaves nothing raised.
  ASSERT_EQ(tx.try_push(word_bytes(8)), Status::ok);
  EXPECT_TRUE(w.arm());
  EXPECT_EQ(data_count(seg), 0u);
  EXPECT_EQ(data_armed(seg), 0u);
}

// An event loop whose last try found nothing, and which then got busy
// elsewhere, leaves its descriptor armed: the first publication signals it
// and gives its raise of the count back, so the rest cost the producer one
// load each, and no system call.
TEST(EventWaiter, ArmedAndNeverWaitedOnCostsPublishersNoSystemCall) {
  test::UniqueShm shm;
  const Segment seg = make_ring(shm, RingKind::spsc, 1024);
  SpscProducer tx = SpscProducer::attach(seg);
  SpscConsumer rx = SpscConsumer::attach(seg);
  const int fd = rx.event_fd();
  ASSERT_GE(fd, 0);
  std::array<std::byte, 64> buf{};
  std::size_t size = 0;
  // The descriptor starts readable; tries until would_block arm it.
  ASSERT_EQ(rx.try_pop(buf, size), Status::would_block);
  ASSERT_EQ(data_count(seg), kEventWaiter);
  const std::uint64_t wakes = wait_stats().futex_wakes;
  constexpr std::uint64_t kMessages = 1000;
  for (std::uint64_t i = 0; i < kMessages; ++i) ASSERT_EQ(tx.try_push(word_bytes(i)), Status::ok);
  EXPECT_EQ(wait_stats().futex_wakes - wakes, 0u) << "futex wakes with no futex sleeper";
  EXPECT_EQ(data_armed(seg), 0u) << "the first publication takes the armed bit";
  EXPECT_EQ(data_count(seg), 0u) << "and gives the waiter's raise back for it";
  EXPECT_TRUE(readable(fd, kWatchdog)) << "the publication was not signalled";
  for (std::uint64_t i = 0; i < kMessages; ++i) {
    ASSERT_EQ(rx.try_pop(buf, size), Status::ok);
    ASSERT_EQ(bytes_word(buf), i);
  }

  // A futex sleeper beside the descriptor is still woken.
  std::thread sleeper([&] {
    std::array<std::byte, 64> b{};
    std::size_t n = 0;
    EXPECT_EQ(rx.pop(b, n, kWatchdog), Status::ok);
    EXPECT_EQ(bytes_word(b), 4242u);
  });
  ASSERT_TRUE(
      test::poll_until([&] { return (data_count(seg) & kFutexWaiterMask) != 0; }, kWatchdog));
  ASSERT_EQ(tx.try_push(word_bytes(4242)), Status::ok);
  sleeper.join();
  EXPECT_GE(wait_stats().futex_wakes - wakes, 1u);
}

TEST(EventWaiter, ProducerWaitingForRoomIsSignalledByARelease) {
  test::UniqueShm shm;
  constexpr std::uint64_t kCapacity = 4;
  const Segment seg = make_ring(shm, RingKind::spsc, kCapacity);
  SpscProducer tx = SpscProducer::attach(seg);
  SpscConsumer rx = SpscConsumer::attach(seg);
  std::uint64_t sent = 0;
  EventWaiter w = EventWaiter::open(seg, WaitFor::room, [&] {
    return sent - atomic::load_seq_cst(&control(seg).consumer.position) < kCapacity;
  });
  while (tx.try_push(word_bytes(sent)) == Status::ok) ++sent;
  ASSERT_EQ(sent, kCapacity);
  ASSERT_FALSE(w.arm());
  EXPECT_EQ(atomic::load_seq_cst(&control(seg).producer_wait.waiters), kEventWaiter);
  std::thread consumer([&] {
    std::array<std::byte, 64> buf{};
    std::size_t size = 0;
    EXPECT_EQ(rx.try_pop(buf, size), Status::ok);
  });
  ASSERT_TRUE(readable(w.fd(), kWatchdog));
  consumer.join();
  EXPECT_TRUE(w.consume().signalled);
  EXPECT_TRUE(w.ready());
  EXPECT_EQ(tx.try_push(word_bytes(sent)), Status::ok);
}

// ---- a consumer driven only by a WaitSet ------------------------------------------

// Producers push sequence-numbered messages with irregular gaps; the consumer
// thread never blocks in the ring: it waits in WaitSet::wait and takes what
// is there. Each report must find a message (never for nothing), every
// message arrives in order, and no wait runs into the watchdog.
template <RingKind Kind>
void drive_from_wait_set() {
  using Producer = std::conditional_t<Kind == RingKind::spsc, SpscProducer, MpmcProducer>;
  using Consumer = std::conditional_t<Kind == RingKind::spsc, SpscConsumer, MpmcConsumer>;
  test::UniqueShm shm;
  const Segment seg = make_ring(shm, Kind, 16);
  Producer tx = Producer::attach(seg);
  Consumer rx = Consumer::attach(seg);
  const std::uint64_t total = test::msg::scaled(4000, 4);
  std::uint64_t taken = 0;
  const MpmcView mpmc(seg.base(), seg.geometry());
  EventWaiter w = EventWaiter::open(seg, WaitFor::data, [&]() -> bool {
    if constexpr (Kind == RingKind::spsc) {
      return head_past(seg, taken);
    } else {
      return mpmc.data_ready();
    }
  });
  std::uint64_t reports = 0;
  std::uint64_t empty_reports = 0;
  std::thread consumer([&] {
    WaitSet set;
    set.add(w, 42);
    std::array<std::byte, 64> buf{};
    while (taken < total) {
      std::size_t size = 0;
      const Status s = rx.try_pop(buf, size);
      if (s == Status::ok) {
        ASSERT_EQ(bytes_word(buf), taken) << "out of sequence";
        ++taken;
        continue;
      }
      ASSERT_EQ(s, Status::would_block);
      const auto& ready = set.wait(kWatchdog);
      ASSERT_EQ(ready.size(), 1u) << "message " << taken << " was published but never reported";
      EXPECT_EQ(ready[0].tag, 42u);
      ++reports;
      if (rx.try_pop(buf, size) != Status::ok) {
        ++empty_reports;
        continue;
      }
      ASSERT_EQ(bytes_word(buf), taken) << "out of sequence";
      ++taken;
    }
  });
  std::mt19937 rng(7);
  for (std::uint64_t i = 0; i < total; ++i) {
    while (tx.try_push(word_bytes(i)) != Status::ok) std::this_thread::yield();
    // Gaps from none to a few tens of microseconds, so that the consumer
    // arms at every stage of a publication.
    const unsigned gap = rng() % 8;
    if (gap == 0) std::this_thread::sleep_for(std::chrono::microseconds(rng() % 50));
    if (gap == 1) std::this_thread::yield();
  }
  consumer.join();
  EXPECT_EQ(taken, total);
  EXPECT_EQ(empty_reports, 0u) << "WaitSet reported the ring with nothing in it";
  EXPECT_EQ(data_count(seg), 0u) << "the count must come back down";
  std::printf("%s: %llu messages, %llu reports\n", to_string(Kind),
              static_cast<unsigned long long>(total), static_cast<unsigned long long>(reports));
}

TEST(WaitSetDrives, SpscConsumerEveryMessageInOrder) { drive_from_wait_set<RingKind::spsc>(); }
TEST(WaitSetDrives, MpmcConsumerEveryMessageInOrder) { drive_from_wait_set<RingKind::mpmc>(); }

// ---- across processes ----------------------------------------------------------------

// The waiter is another process (fork, then attach and register there): it
// drives its consumer from the descriptor alone and checks every message.
TEST(EventWaiter, SignalledAcrossProcesses) {
  test::UniqueShm shm;
  const Segment seg = make_ring(shm, RingKind::spsc, 8);
  const std::uint64_t total = test::msg::scaled(1000, 4);
  int ready_pipe[2];
  ASSERT_EQ(::pipe(ready_pipe), 0);
  const pid_t pid = ::fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    ::close(ready_pipe[0]);
    int rc = 0;
    try {
      const Segment mine = Segment::open(shm.name());
      SpscConsumer rx = SpscConsumer::attach(mine);
      std::uint64_t taken = 0;
      EventWaiter w = EventWaiter::open(mine, WaitFor::data, spsc_data_ready(mine, taken));
      const char ok = 1;
      if (::write(ready_pipe[1], &ok, 1) != 1) ::_exit(20);
      std::array<std::byte, 64> buf{};
      while (taken < total) {
        std::size_t size = 0;
        if (rx.try_pop(buf, size) == Status::ok) {
          if (bytes_word(buf) != taken) ::_exit(21);  // out of sequence
          ++taken;
          continue;
        }
        if (w.arm()) continue;
        if (!readable(w.fd(), kWatchdog)) ::_exit(22);  // a wake-up lost
        (void)w.consume();
      }
    } catch (...) {
      rc = 23;
    }
    ::_exit(rc);
  }
  ::close(ready_pipe[1]);
  char ok = 0;
  ASSERT_EQ(::read(ready_pipe[0], &ok, 1), 1);
  ::close(ready_pipe[0]);
  SpscProducer tx = SpscProducer::attach(seg);
  std::mt19937 rng(11);
  for (std::uint64_t i = 0; i < total; ++i) {
    ASSERT_EQ(tx.push(word_bytes(i), kWatchdog), Status::ok);
    if (rng() % 4 == 0) std::this_thread::sleep_for(std::chrono::microseconds(rng() % 100));
  }
  const int status = test::wait_child(pid);
  EXPECT_EQ(status, 0) << "21: out of sequence, 22: a wake-up lost, 23: an exception";
  EXPECT_EQ(data_count(seg), 0u);
}

// ---- lost wake-ups ---------------------------------------------------------------------

// The interleaving the sleeper handshake cannot prevent, forced: the
// publisher's load of the count ran ahead of its position store (modelled by
// a publication that does not signal at all, as if it had seen 0). The
// waiter's look must catch it, within the first look or so.
TEST(EventHandshake, APublicationThatMissedTheCountIsCaughtByTheLook) {
  test::UniqueShm shm;
  const Segment seg = make_ring(shm, RingKind::spsc, 4);
  const SpscView view(seg.base(), seg.geometry());
  SpscProducerCursor txc;
  SpscConsumerCursor rxc;
  EventWaiter w = EventWaiter::open(seg, WaitFor::data, [&] { return view.data_ready(rxc); });
  std::vector<double> delays_ms;
  for (int trial = 0; trial < 20; ++trial) {
    ASSERT_FALSE(w.arm());
    Status status = Status::ok;
    ASSERT_EQ(view.writable(txc, 1, status), 1u);
    view.set_length(txc.head, 0);
    const auto published = Clock::now();
    (void)view.publish(txc, 1);  // and no signal: it "loaded 0"
    ASSERT_TRUE(readable(w.fd(), kWatchdog)) << "trial " << trial << ": the publication was lost";
    delays_ms.push_back(
        std::chrono::duration<double, std::milli>(Clock::now() - published).count());
    const EventWaiter::Woken why = w.consume();
    EXPECT_TRUE(why.looked);
    EXPECT_FALSE(why.signalled);
    ASSERT_TRUE(w.ready());
    w.disarm();
    EXPECT_EQ(data_count(seg), 0u);
    ASSERT_EQ(view.readable(rxc, 1, status), 1u);
    (void)view.release(rxc, 1);
  }
  std::sort(delays_ms.begin(), delays_ms.end());
  std::printf("a missed signal was caught by the look after %.3f ms (median), %.3f ms (max)\n",
              delays_ms[delays_ms.size() / 2], delays_ms.back());
  EXPECT_LT(delays_ms[delays_ms.size() / 2], 20.0);
}

// Arm against publish in every interleaving the scheduler gives: a waiter
// thread arms, waits on its descriptor and takes one message at a time; a
// publisher thread publishes right as the waiter arms and signals where it
// saw the count. Looks are stretched to an hour, so only signals deliver:
// every message must be signalled within the watchdog. The publisher reads
// the count with an RMW after its position store (the futex
// handshake's own window, which looks cover, is the previous test's); what
// is left is this protocol: the count, the bit, the exchange, the re-check.
TEST(EventHandshake, ArmAgainstPublishNeverLosesASignal) {
  test::UniqueShm shm;
  const Segment seg = make_ring(shm, RingKind::spsc, 4);
  const SpscView view(seg.base(), seg.geometry());
  SpscConsumerCursor rxc;
  EventWaiter w = EventWaiter::open(seg, WaitFor::data, [&] { return view.data_ready(rxc); });
  w.set_look_schedule(std::chrono::hours(1), std::chrono::hours(1));
  const std::uint64_t rounds = test::msg::scaled(3000, 4);
  std::atomic<std::uint64_t> go{0};  // the round the waiter is arming for
  std::uint64_t signals = 0;
  std::uint64_t armed_ready = 0;
  std::thread waiter([&] {
    std::mt19937 wrng(5);
    for (std::uint64_t r = 1; r <= rounds; ++r) {
      go.store(r, std::memory_order_release);
      for (unsigned spin = wrng() % 1024; spin != 0; --spin) atomic::cpu_relax();
      Status status = Status::ok;
      while (view.readable(rxc, 1, status) == 0) {
        if (w.arm()) {
          ++armed_ready;
          continue;
        }
        ASSERT_TRUE(readable(w.fd(), kWatchdog))
            << "round " << r << ": a published message was never signalled";
        const EventWaiter::Woken why = w.consume();
        ASSERT_FALSE(why.looked);
        signals += why.signalled ? 1 : 0;
      }
      std::uint64_t v = 0;
      std::memcpy(&v, view.read_slot(rxc.tail).data, 8);
      ASSERT_EQ(v, r - 1) << "out of sequence";
      (void)view.release(rxc, 1);
      w.disarm();
    }
  });
  EventSignaller signaller(seg);
  SpscProducerCursor txc;
  std::mt19937 rng(3);
  for (std::uint64_t r = 1; r <= rounds; ++r) {
    while (go.load(std::memory_order_acquire) != r) {
    }
    // Both sides spin a random while: the publication lands before, in and
    // after the waiter's arm.
    for (unsigned spin = rng() % 64; spin != 0; --spin) atomic::cpu_relax();
    Status status = Status::ok;
    while (view.writable(txc, 1, status) != 1) std::this_thread::yield();
    const std::uint64_t v = r - 1;
    std::memcpy(view.payload(txc.head), &v, 8);
    view.set_length(txc.head, 8);
    // An RMW on the count reads its latest value after the position store
    // (what a fence and a load would do; ThreadSanitizer models RMWs, not
    // fences).
    (void)view.publish(txc, 1);
    const bool wake = atomic::fetch_add(&view.consumer_wait()->waiters, 0u) != 0;
    if (wake) {
      futex::notify_all(&view.producer()->notify);
      (void)signaller.signal(seg.base(), WaitFor::data);
    }
  }
  waiter.join();
  EXPECT_EQ(data_count(seg), 0u);
  EXPECT_EQ(signaller.refused(), 0u) << signaller.last_error();
  std::printf("%llu rounds: %llu signalled, %llu found ready when arming\n",
              static_cast<unsigned long long>(rounds), static_cast<unsigned long long>(signals),
              static_cast<unsigned long long>(armed_ready));
  EXPECT_GT(signals, 0u) << "the interleavings never reached a signal";
}

// ---- death ----------------------------------------------------------------------------

// A child registers, arms and is killed: its raise of the count stays until
// a collector (a publisher's signaller, or the next waiter to register)
// finds the entry's lock gone; then the count, the bit and the FIFO go.
TEST(EventDeath, AWaiterKilledWhileArmedIsCollected) {
  test::UniqueShm shm;
  const Segment seg = make_ring(shm, RingKind::spsc, 8);
  for (const bool by_publisher : {true, false}) {
    int ready_pipe[2];
    ASSERT_EQ(::pipe(ready_pipe), 0);
    const pid_t pid = ::fork();
    ASSERT_GE(pid, 0);
    if (pid == 0) {
      ::close(ready_pipe[0]);
      const Segment mine = Segment::open(shm.name());
      EventWaiter w = EventWaiter::open(mine, WaitFor::data, [] { return false; });
      if (w.arm()) ::_exit(1);
      const char ok = 1;
      if (::write(ready_pipe[1], &ok, 1) != 1) ::_exit(2);
      for (;;) ::pause();
    }
    ::close(ready_pipe[1]);
    char ok = 0;
    ASSERT_EQ(::read(ready_pipe[0], &ok, 1), 1);
    ::close(ready_pipe[0]);
    EXPECT_EQ(data_count(seg), kEventWaiter);
    const std::uint32_t armed = data_armed(seg);
    ASSERT_NE(armed, 0u);
    const std::size_t entry = static_cast<std::size_t>(std::countr_zero(armed));
    std::uint64_t id[2];
    std::memcpy(id, control(seg).data_events.entries[entry].endpoint, sizeof id);
    std::array<std::uint8_t, kEventIdBytes> id_bytes{};
    std::memcpy(id_bytes.data(), id, sizeof id);
    const std::string fifo = detail::event_fifo_path(id_bytes);
    struct stat st {};
    ASSERT_EQ(::lstat(fifo.c_str(), &st), 0);
    EXPECT_TRUE(S_ISFIFO(st.st_mode));

    ASSERT_EQ(::kill(pid, SIGKILL), 0);
    EXPECT_EQ(test::wait_child(pid), -1);
    EXPECT_EQ(data_count(seg), kEventWaiter) << "nothing collects before somebody looks";
    if (by_publisher) {
      // Its signal writes into the dead FIFO (harmless) and collects.
      EventSignaller signaller(seg);
      EXPECT_EQ(signaller.signal(seg.base(), WaitFor::data), 1u);
    } else {
      std::uint64_t none = 0;
      EventWaiter next = EventWaiter::open(seg, WaitFor::data, [&] { return none != 0; });
      EXPECT_EQ(next.entry(), entry) << "the dead waiter's entry is taken over";
    }
    EXPECT_EQ(data_count(seg), 0u) << "the dead waiter's raise was not dropped";
    EXPECT_EQ(data_armed(seg), 0u);
    EXPECT_NE(::lstat(fifo.c_str(), &st), 0) << fifo << " was left behind";
    EXPECT_EQ(control(seg).data_events.entries[entry].raised, 0u);
  }
}

// ---- hostile files ----------------------------------------------------------------------

TEST(EventHostileFiles, ARegularFileOrSymlinkUnderTheFifoNameIsRefused) {
  test::UniqueShm shm;
  const Segment seg = make_ring(shm, RingKind::spsc, 8);
  std::uint64_t taken = 0;
  EventWaiter w = EventWaiter::open(seg, WaitFor::data, spsc_data_ready(seg, taken));
  const std::string path = w.fifo_path();
  const std::string decoy = path + ".decoy";
  ASSERT_EQ(::mkfifo(decoy.c_str(), 0600), 0);  // a FIFO the link points to
  struct Case {
    const char* what;
    const char* expect;
  };
  for (const Case c : {Case{"regular file", "is a regular file, not a FIFO"},
                       Case{"symbolic link", "is a symbolic link"}}) {
    ASSERT_EQ(::unlink(path.c_str()), 0);
    if (std::strcmp(c.what, "regular file") == 0) {
      const int fd = ::open(path.c_str(), O_CREAT | O_EXCL | O_WRONLY | O_CLOEXEC, 0600);
      ASSERT_GE(fd, 0);
      ::close(fd);
    } else {
      ASSERT_EQ(::symlink(decoy.c_str(), path.c_str()), 0);
    }
    // A publisher that has not cached the FIFO yet.
    ASSERT_FALSE(w.arm());
    EventSignaller signaller;
    EXPECT_EQ(signaller.signal(seg.base(), WaitFor::data), 0u) << c.what;
    EXPECT_EQ(signaller.refused(), 1u);
    EXPECT_NE(std::string(signaller.last_error()).find(c.expect), std::string::npos)
        << signaller.last_error();
    EXPECT_NE(std::string(signaller.last_error()).find(path), std::string::npos)
        << "the message names the path";
    // The same check, through the error_code form.
    std::error_code ec;
    EXPECT_LT(detail::open_event_fifo(path, ::geteuid(), ec), 0);
    EXPECT_EQ(ec, make_error_code(errc::bad_endpoint)) << ec.message();
    EXPECT_NE(last_error_message().find(c.expect), std::string::npos) << last_error_message();
    w.disarm();
  }
  // A FIFO of another owner is refused too.
  std::error_code ec;
  EXPECT_LT(detail::open_event_fifo(decoy, ::geteuid() + 1, ec), 0);
  EXPECT_EQ(ec, make_error_code(errc::bad_endpoint));
  EXPECT_NE(last_error_message().find("owned by uid"), std::string::npos) << last_error_message();
  ::unlink(decoy.c_str());
  ::unlink(path.c_str());
}

// ---- WaitSet ----------------------------------------------------------------------------

TEST(WaitSet, SeveralRingsAndAPipeWithTimeouts) {
  test::UniqueShm shm_a("a");
  test::UniqueShm shm_b("b");
  const Segment a = make_ring(shm_a, RingKind::spsc, 8);
  const Segment b = make_ring(shm_b, RingKind::mpmc, 8);
  SpscProducer tx_a = SpscProducer::attach(a);
  SpscConsumer rx_a = SpscConsumer::attach(a);
  MpmcProducer tx_b = MpmcProducer::attach(b);
  MpmcConsumer rx_b = MpmcConsumer::attach(b);
  std::uint64_t taken_a = 0;
  const MpmcView view_b(b.base(), b.geometry());
  EventWaiter wa = EventWaiter::open(a, WaitFor::data, spsc_data_ready(a, taken_a));
  EventWaiter wb = EventWaiter::open(b, WaitFor::data, [&] { return view_b.data_ready(); });
  int p[2];
  ASSERT_EQ(::pipe2(p, O_CLOEXEC | O_NONBLOCK), 0);

  WaitSet set;
  set.add(wa, 1);
  set.add(wb, 2);
  set.add(p[0], 3);
  EXPECT_EQ(set.size(), 3u);

  // Nothing: a timeout, with all of it waited (looks are not reported).
  auto t0 = Clock::now();
  EXPECT_TRUE(set.wait(20ms).empty());
  auto waited = Clock::now() - t0;
  EXPECT_GE(waited, 20ms);
  EXPECT_LT(waited, 2s);
  t0 = Clock::now();
  EXPECT_TRUE(set.wait(0ns).empty());
  EXPECT_LT(Clock::now() - t0, 1s);

  // Each source in turn, from another thread while the set sleeps.
  auto tags = [](const std::vector<WaitSet::Ready>& r) {
    std::vector<std::uint64_t> t;
    for (const auto& x : r) t.push_back(x.tag);
    std::sort(t.begin(), t.end());
    return t;
  };
  std::thread t1([&] {
    std::this_thread::sleep_for(2ms);
    EXPECT_EQ(tx_b.try_push(word_bytes(5)), Status::ok);
  });
  EXPECT_EQ(tags(set.wait(kWatchdog)), std::vector<std::uint64_t>{2});
  t1.join();
  std::array<std::byte, 64> buf{};
  std::size_t size = 0;
  ASSERT_EQ(rx_b.try_pop(buf, size), Status::ok);

  std::thread t2([&] {
    std::this_thread::sleep_for(2ms);
    const char c = 'x';
    EXPECT_EQ(::write(p[1], &c, 1), 1);
  });
  const auto& r2 = set.wait(kWatchdog);
  EXPECT_EQ(tags(r2), std::vector<std::uint64_t>{3});
  ASSERT_FALSE(r2.empty());
  EXPECT_NE(r2[0].events & EPOLLIN, 0u);
  t2.join();
  char c = 0;
  ASSERT_EQ(::read(p[0], &c, 1), 1);

  // Two at once, both reported, each once.
  ASSERT_EQ(tx_a.try_push(word_bytes(1)), Status::ok);
  ASSERT_EQ(tx_b.try_push(word_bytes(2)), Status::ok);
  EXPECT_EQ(tags(set.wait(kWatchdog)), (std::vector<std::uint64_t>{1, 2}));
  ASSERT_EQ(rx_a.try_pop(buf, size), Status::ok);
  ++taken_a;
  ASSERT_EQ(rx_b.try_pop(buf, size), Status::ok);
  EXPECT_TRUE(set.wait(1ms).empty());

  // Removing a waiter disarms it; the counts come down.
  set.remove(1);
  set.remove(2);
  EXPECT_EQ(data_count(a), 0u);
  EXPECT_EQ(data_count(b), 0u);
  EXPECT_FALSE(set.contains(1));
  ::close(p[0]);
  ::close(p[1]);
}

TEST(WaitSet, ClearErrors) {
  WaitSet set;
  int p[2];
  ASSERT_EQ(::pipe2(p, O_CLOEXEC), 0);
  set.add(p[0], 1);
  auto message_of = [](auto&& call) -> std::string {
    try {
      call();
    } catch (const Error& e) {
      return e.what();
    }
    return "no error";
  };
  EXPECT_NE(message_of([&] { set.add(p[1], 1); }).find("tag 1 is already in the set"),
            std::string::npos);
  EXPECT_NE(message_of([&] {
              set.add(p[0], 2);
            }).find("descriptor " + std::to_string(p[0]) + " is already in the set (tag 1)"),
            std::string::npos);
  EXPECT_NE(message_of([&] { set.add(-1, 3); }).find("descriptor -1 (tag 3) is not open"),
            std::string::npos);
  const int file = ::open("/proc/self/exe", O_RDONLY | O_CLOEXEC);
  ASSERT_GE(file, 0);
  EXPECT_NE(message_of([&] { set.add(file, 4); }).find("epoll cannot watch this kind of file"),
            std::string::npos);
  ::close(file);
  EXPECT_NE(message_of([&] { set.remove(9); }).find("no member has tag 9"), std::string::npos);
  EventWaiter empty;
  EXPECT_NE(message_of([&] { set.add(empty, 5); }).find("the event waiter is empty"),
            std::string::npos);
  WaitSet moved = std::move(set);
  EXPECT_EQ(moved.size(), 1u);
  EXPECT_NE(message_of([&] { (void)set.wait(0ns); }).find("moved-from"), std::string::npos);
  ::close(p[0]);
  ::close(p[1]);

  // An event waiter on nothing, or without a predicate.
  std::error_code ec;
  const Segment none;
  EXPECT_FALSE(EventWaiter::open(
      none, WaitFor::data, [] { return true; }, ec));
  EXPECT_EQ(ec, make_error_code(errc::no_segment));
  test::UniqueShm shm;
  const Segment seg = make_ring(shm, RingKind::spsc, 8);
  EXPECT_FALSE(EventWaiter::open(seg, WaitFor::data, nullptr, ec));
  EXPECT_EQ(ec, make_error_code(errc::invalid_argument));
  EXPECT_NE(last_error_message().find("readiness predicate"), std::string::npos);
}

// Every entry of a table taken: the next waiter is refused, naming why.
TEST(EventWaiter, TableFullIsRoleTaken) {
  test::UniqueShm shm;
  const Segment seg = make_ring(shm, RingKind::mpmc, 8);
  std::vector<EventWaiter> waiters;
  for (std::size_t i = 0; i < kEventEntries; ++i) {
    waiters.push_back(EventWaiter::open(seg, WaitFor::room, [] { return false; }));
  }
  std::error_code ec;
  EXPECT_FALSE(EventWaiter::open(
      seg, WaitFor::room, [] { return false; }, ec));
  EXPECT_EQ(ec, make_error_code(errc::role_taken));
  EXPECT_NE(last_error_message().find("all 16 event entries of the waiters for room"),
            std::string::npos)
      << last_error_message();
  waiters.pop_back();
  EXPECT_TRUE(EventWaiter::open(
      seg, WaitFor::room, [] { return false; }, ec))
      << ec.message();
}

}  // namespace
}  // namespace shmring
