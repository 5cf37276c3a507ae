// The broadcast role handles (broadcast_ring.hpp): every subscriber, in a
// thread or another process, gets every message of a reliable ring in order;
// a killed subscriber does not hold a blocked producer up; a producer is
// taken over after SIGKILL; join points; lossy laps reported once and never a
// torn message through the copy or the zero-copy path; conflated reads;
// claims misused; moved and detached handles.
//
// Every message carries its sequence number and a checksum of its payload
// (stress_message.hpp). Counts scale with SHMRING_STRESS_SCALE and shrink
// under ThreadSanitizer; waits poll a condition until a deadline.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

#include "broadcast_support.hpp"
#include "shmring/broadcast_ring.hpp"
#include "shmring/error.hpp"
#include "shmring/segment.hpp"
#include "stress_message.hpp"
#include "test_support.hpp"

namespace shmring {
namespace {

using namespace test::broadcast_suite;

// The message with sequence number `seq`.
struct Message {
  explicit Message(std::uint64_t seq) : bytes(kSlot) {
    bytes.resize(msg::write(bytes, 0, seq, kMaxPayload));
  }
  std::span<const std::byte> span() const { return bytes; }
  std::vector<std::byte> bytes;
};

// The sequence number of a received message; fails the test (and returns
// UINT64_MAX) if it is not whole.
std::uint64_t seq_of(std::span<const std::byte> m, std::uint64_t total) {
  msg::Header h{};
  const msg::Verdict v = msg::check(m, 1, total, kMaxPayload, h);
  EXPECT_EQ(v, msg::Verdict::ok) << msg::to_string(v);
  return v == msg::Verdict::ok ? h.seq : UINT64_MAX;
}

// Pops (try_pop) messages `first` .. `end - 1` of a stream of `total`, in
// order.
void expect_messages(BroadcastSubscriber& sub, std::uint64_t first, std::uint64_t end,
                     std::uint64_t total) {
  std::vector<std::byte> buf(kSlot);
  std::size_t size = 0;
  for (std::uint64_t i = first; i < end; ++i) {
    ASSERT_EQ(sub.try_pop(buf, size), Status::ok) << "message " << i;
    EXPECT_EQ(seq_of({buf.data(), size}, total), i);
  }
}

// Publishes messages 0 .. count - 1, then closes the stream: the producer
// says so and refuses the next push.
void publish_and_close(BroadcastProducer& p, std::uint64_t count) {
  for (std::uint64_t i = 0; i < count; ++i) ASSERT_EQ(p.try_push(Message(i).span()), Status::ok);
  ASSERT_EQ(p.close(), Status::ok);
  EXPECT_TRUE(p.closed());
  EXPECT_EQ(p.try_push(Message(count).span()), Status::closed);
}

template <class Condition>
bool eventually(Condition&& done) {
  const auto deadline = Clock::now() + kDeadline;
  while (!done()) {
    if (Clock::now() > deadline) return false;
    std::this_thread::yield();
  }
  return true;
}

std::uint32_t active_subscribers(const BroadcastView& v) {
  std::uint32_t n = 0;
  for (std::uint32_t i = 0; i < v.subscribers(); ++i) {
    if (atomic::load_acquire(&v.subscriber(i)->state) == kSubscriberActive) ++n;
  }
  return n;
}

// Reads `total` messages through all three reading paths in turn (copy,
// peek, drain) and checks that they come whole and in order; returns how
// many came in order.
std::uint64_t read_all(BroadcastSubscriber& sub, std::uint64_t total) {
  std::vector<std::byte> buf(kSlot);
  std::uint64_t next = 0;
  while (next < total) {
    std::uint64_t before = next;
    switch (next % 3) {
      case 0: {
        std::size_t size = 0;
        const Status s = sub.pop(buf, size, kDeadline);
        if (s != Status::ok) return next;
        if (seq_of({buf.data(), size}, total) == next) ++next;
        break;
      }
      case 1: {
        ReadClaim c = sub.peek(4, kDeadline);
        for (std::size_t i = 0; i < c.size(); ++i) {
          if (seq_of(c[i], total) == next) ++next;
        }
        break;
      }
      default:
        sub.drain([&](std::span<const std::byte> m) { next += seq_of(m, total) == next; }, 5,
                  kDeadline);
    }
    if (next == before) return next;  // out of order, torn, or nothing came
  }
  return next;
}

// Publishes messages 0..total-1 through the copy, batch and claim paths.
void produce_all(BroadcastProducer& p, std::uint64_t total) {
  std::uint64_t seq = 0;
  while (seq < total) {
    if (seq % 4 == 1 && seq + 3 <= total) {
      const Message a(seq), b(seq + 1), c(seq + 2);
      const std::span<const std::byte> batch[] = {a.span(), b.span(), c.span()};
      const std::size_t done = p.try_push_many(batch);
      seq += done;
      if (done == 0) {  // full: wait for room for one
        ASSERT_EQ(p.push(a.span(), kDeadline), Status::ok);
        ++seq;
      }
    } else if (seq % 4 == 2) {
      WriteClaim c = p.claim(1, kDeadline);
      ASSERT_EQ(c.status(), Status::ok);
      const Message m(seq);
      std::memcpy(c[0].data(), m.bytes.data(), m.bytes.size());
      ASSERT_EQ(c.commit(m.bytes.size()), Status::ok);
      ++seq;
    } else {
      ASSERT_EQ(p.push(Message(seq).span(), kDeadline), Status::ok);
      ++seq;
    }
  }
}

TEST(BroadcastHandles, EverySubscriberThreadGetsEveryMessageInOrder) {
  constexpr std::uint32_t kSubscribers = 3;
  Ring ring(broadcast(kSubscribers, Delivery::reliable, 8));
  const std::uint64_t total = msg::scaled(20000);
  BroadcastProducer p = BroadcastProducer::attach(ring.segment);
  std::vector<BroadcastSubscriber> subs;
  for (std::uint32_t i = 0; i < kSubscribers; ++i) {
    subs.push_back(BroadcastSubscriber::attach(ring.segment));
  }
  std::vector<std::uint64_t> got(kSubscribers, 0);
  std::vector<std::thread> threads;
  for (std::uint32_t i = 0; i < kSubscribers; ++i) {
    threads.emplace_back([&, i] { got[i] = read_all(subs[i], total); });
  }
  produce_all(p, total);
  for (auto& t : threads) t.join();
  for (std::uint32_t i = 0; i < kSubscribers; ++i) {
    EXPECT_EQ(got[i], total) << "subscriber " << i;
    EXPECT_EQ(subs[i].position(), total);
  }
  EXPECT_EQ(p.position(), total);
}

TEST(BroadcastHandles, EverySubscriberProcessGetsEveryMessageInOrder) {
  constexpr int kChildren = 2;
  Ring ring(broadcast(kChildren, Delivery::reliable, 8));
  const std::uint64_t total = msg::scaled(20000);
  std::vector<pid_t> children;
  for (int i = 0; i < kChildren; ++i) {
    const pid_t pid = ::fork();
    ASSERT_GE(pid, 0);
    if (pid == 0) {
      Segment s = Segment::open(ring.shm.name());
      BroadcastSubscriber sub = BroadcastSubscriber::attach(s);
      ::_exit(read_all(sub, total) == total ? 0 : 1);
    }
    children.push_back(pid);
  }
  // They join at `next`: nothing may be published before both are in.
  ASSERT_TRUE(eventually([&] { return active_subscribers(ring.view()) == kChildren; }));
  BroadcastProducer p = BroadcastProducer::attach(ring.segment);
  produce_all(p, total);
  for (const pid_t pid : children) EXPECT_EQ(test::wait_child(pid), 0);
}

// A child that takes a subscriber block, joins, says so through `ready` and
// then reads nothing until it is killed.
pid_t stalled_subscriber(const std::string& name, int ready) {
  const pid_t pid = ::fork();
  if (pid != 0) return pid;
  Segment s = Segment::open(name);
  BroadcastSubscriber sub = BroadcastSubscriber::attach(s);
  const char c = 1;
  if (::write(ready, &c, 1) != 1) ::_exit(3);
  for (;;) ::pause();
}

TEST(BroadcastHandles, ASubscriberKilledWhileTheProducerWaitsForItLetsItGoOn) {
  constexpr std::uint64_t kCapacity = 8;
  Ring ring(broadcast(2, Delivery::reliable, kCapacity));
  BroadcastSubscriber reader = BroadcastSubscriber::attach(ring.segment);
  int fds[2];
  ASSERT_EQ(::pipe(fds), 0);
  const pid_t child = stalled_subscriber(ring.shm.name(), fds[1]);
  char c = 0;
  ASSERT_EQ(::read(fds[0], &c, 1), 1);
  ::close(fds[0]);
  ::close(fds[1]);

  BroadcastProducer p = BroadcastProducer::attach(ring.segment);
  for (std::uint64_t i = 0; i < kCapacity; ++i)
    ASSERT_EQ(p.try_push(Message(i).span()), Status::ok);
  EXPECT_EQ(p.try_push(Message(kCapacity).span()), Status::would_block);
  // The live reader keeps up; only the stalled child holds the producer.
  ASSERT_NO_FATAL_FAILURE(expect_messages(reader, 0, kCapacity, kCapacity + 1));
  Status pushed = Status::would_block;
  std::atomic<bool> returned{false};
  std::thread producer([&] {
    pushed = p.push(Message(kCapacity).span(), kDeadline);
    returned = true;
  });
  // Asleep on the futex, waiting for the child: then the child dies.
  const BroadcastView v = ring.view();
  ASSERT_TRUE(eventually([&] { return atomic::load_seq_cst(&v.producer_wait()->waiters) != 0; }));
  EXPECT_FALSE(returned.load());
  ::kill(child, SIGKILL);
  EXPECT_EQ(test::wait_child(child), -1);
  const auto start = Clock::now();
  producer.join();
  EXPECT_EQ(pushed, Status::ok);
  EXPECT_LT(Clock::now() - start, 10s);  // not the deadline
  std::vector<std::byte> buf(kSlot);
  std::size_t size = 0;
  ASSERT_EQ(reader.pop(buf, size, kDeadline), Status::ok);
  EXPECT_EQ(seq_of({buf.data(), size}, kCapacity + 1), kCapacity);
}

// A producer process that publishes messages 0..count-1 and then waits to
// be killed; returns once they are published (-1 if it could not start).
pid_t producer_child(const std::string& name, std::uint64_t count) {
  int fds[2];
  if (::pipe(fds) != 0) return -1;
  const pid_t child = ::fork();
  if (child == 0) {
    Segment s = Segment::open(name);
    BroadcastProducer p = BroadcastProducer::attach(s);
    for (std::uint64_t i = 0; i < count; ++i) {
      if (p.try_push(Message(i).span()) != Status::ok) ::_exit(2);
    }
    const char c = 1;
    if (::write(fds[1], &c, 1) != 1) ::_exit(3);
    for (;;) ::pause();
  }
  char c = 0;
  const bool published = child > 0 && ::read(fds[0], &c, 1) == 1;
  ::close(fds[0]);
  ::close(fds[1]);
  return published ? child : -1;
}

TEST(BroadcastHandles, AProducerKilledIsTakenOverWhereItStopped) {
  Ring ring(broadcast(1, Delivery::reliable, 16));
  BroadcastSubscriber sub = BroadcastSubscriber::attach(ring.segment);
  constexpr std::uint64_t kFirst = 5, kTotal = 12;
  const pid_t child = producer_child(ring.shm.name(), kFirst);
  ASSERT_GT(child, 0);
  std::error_code ec;
  BroadcastProducer refused = BroadcastProducer::attach(ring.segment, {}, ec);
  EXPECT_EQ(ec, errc::role_taken) << ec.message();
  EXPECT_FALSE(refused);
  ::kill(child, SIGKILL);
  EXPECT_EQ(test::wait_child(child), -1);

  BroadcastProducer p = BroadcastProducer::attach(ring.segment);
  EXPECT_EQ(p.position(), kFirst);
  for (std::uint64_t i = kFirst; i < kTotal; ++i)
    ASSERT_EQ(p.try_push(Message(i).span()), Status::ok);
  // The subscriber never re-attached: it reads on across the takeover.
  ASSERT_NO_FATAL_FAILURE(expect_messages(sub, 0, kTotal, kTotal));
  std::vector<std::byte> buf(kSlot);
  std::size_t size = 0;
  EXPECT_EQ(sub.try_pop(buf, size), Status::would_block);
}

// End of stream: every subscriber reads what was published, then gets
// Status::closed (a blocking pop at once); the closed producer pushes nothing;
// a producer that attaches again reopens the stream.
TEST(BroadcastHandles, SubscribersDrainThenSeeTheStreamClosed) {
  Ring ring(broadcast(2, Delivery::reliable, 16));
  BroadcastSubscriber a = BroadcastSubscriber::attach(ring.segment);
  BroadcastSubscriber b = BroadcastSubscriber::attach(ring.segment);
  constexpr std::uint64_t kTotal = 5;
  {
    BroadcastProducer p = BroadcastProducer::attach(ring.segment);
    ASSERT_NO_FATAL_FAILURE(publish_and_close(p, kTotal));
  }
  {
    // A reader that keeps the messages (peeked, put back) asks where the
    // stream ends.
    ReadClaim kept = a.try_peek(kTotal);
    ASSERT_EQ(kept.size(), kTotal);
    EXPECT_EQ(a.ended_at(kept.position(0)), Status::would_block);
    EXPECT_EQ(a.ended_at(kept.position(0) + kTotal), Status::closed);
    EXPECT_EQ(a.wait_past(kept.position(0) + kTotal - 1, 10s), Status::ok);
    const auto start = Clock::now();
    EXPECT_EQ(a.wait_past(kept.position(0) + kTotal, 30s), Status::closed);
    EXPECT_LT(Clock::now() - start, 10s) << "waited on a closed stream";
    ASSERT_EQ(kept.put_back(), Status::ok);
  }
  std::vector<std::byte> buf(kSlot);
  std::size_t size = 0;
  for (BroadcastSubscriber* s : {&a, &b}) {
    ASSERT_NO_FATAL_FAILURE(expect_messages(*s, 0, kTotal, kTotal));
    EXPECT_EQ(s->try_pop(buf, size), Status::closed);
    const auto start = Clock::now();
    EXPECT_EQ(s->pop(buf, size, 30s), Status::closed);
    EXPECT_EQ(s->peek(1, 30s).status(), Status::closed);
    EXPECT_LT(Clock::now() - start, 10s) << "a blocking call waited on a closed stream";
  }
  BroadcastProducer again = BroadcastProducer::attach(ring.segment);
  EXPECT_EQ(a.try_pop(buf, size), Status::would_block) << "a new producer reopens the stream";
  ASSERT_EQ(again.try_push(Message(kTotal).span()), Status::ok);
  ASSERT_EQ(a.try_pop(buf, size), Status::ok);
  EXPECT_EQ(seq_of({buf.data(), size}, kTotal + 1), kTotal);
  // Close on exit: dropping the handle ends the stream.
  again = BroadcastProducer();
  EXPECT_EQ(a.try_pop(buf, size), Status::closed);
}

// wait_past(): a reader that keeps the messages it peeked (put back) sleeps
// until one past them is published, while another thread releases the kept
// ones; a deadline with nothing new is a timeout.
TEST(BroadcastHandles, WaitPastSleepsUntilAMessageBeyondTheKeptOnes) {
  Ring ring(broadcast(1, Delivery::reliable, 4));
  BroadcastSubscriber sub = BroadcastSubscriber::attach(ring.segment);
  BroadcastProducer p = BroadcastProducer::attach(ring.segment);
  ASSERT_EQ(p.try_push(Message(0).span()), Status::ok);
  ReadClaim kept = sub.try_peek(4);
  ASSERT_EQ(kept.size(), 1u);
  EXPECT_EQ(sub.wait_past(1, 1ms), Status::timeout);
  std::thread publisher([&] {
    // The ring has room for three more; the fourth needs the kept one.
    for (std::uint64_t i = 1; i < 5; ++i) {
      if (p.push(Message(i).span(), kDeadline) != Status::ok) ADD_FAILURE() << "push " << i;
    }
  });
  EXPECT_EQ(sub.wait_past(1, kDeadline), Status::ok);
  ASSERT_TRUE(eventually([&] { return sub.wait_past(3, 0s) == Status::ok; }));
  EXPECT_EQ(kept.release(), Status::ok);  // lets the fifth in
  EXPECT_EQ(sub.wait_past(4, kDeadline), Status::ok);
  publisher.join();
  ASSERT_NO_FATAL_FAILURE(expect_messages(sub, 1, 5, 5));
}

// wait_past() learns from call to call whether spinning pays, as the other
// blocking calls do: a reader that waits once per message (shmringsrc, for
// each frame downstream still holds) must not spin through the whole spin
// phase every time. Messages come well after a spin phase of 2 ms, so no
// spin catches one: 48 waits that each spun would use 96 ms of CPU; once the
// average says spins do not pay (about 11 waits), only one wait in 16 spins.
TEST(BroadcastHandles, WaitPastStopsSpinningWhereSpinsDoNotPay) {
  WaitPolicy policy;
  policy.spin_time = 2ms;
  policy.spin_iterations = ~std::uint32_t{0};  // the time bounds the spin
  policy.yield_iterations = 0;
  constexpr std::uint64_t kWaits = 48;
  Ring ring(broadcast(1, Delivery::reliable, 64));
  BroadcastSubscriber sub = BroadcastSubscriber::attach(ring.segment, JoinAt::next, policy);
  BroadcastProducer p = BroadcastProducer::attach(ring.segment);
  std::atomic<std::uint64_t> waiting{0};  // waits begun
  std::thread publisher([&] {
    for (std::uint64_t i = 0; i < kWaits; ++i) {
      // Once the reader is in wait i, later than its spin phase ends.
      if (!test::poll_until([&] { return waiting.load() > i; }, kDeadline)) return;
      std::this_thread::sleep_for(policy.spin_time * 3);
      if (p.try_push(Message(i).span()) != Status::ok) ADD_FAILURE() << "push " << i;
    }
  });
  const auto cpu0 = test::thread_cpu_time();
  for (std::uint64_t i = 0; i < kWaits; ++i) {
    waiting.store(i + 1);
    ASSERT_EQ(sub.wait_past(i, kDeadline), Status::ok) << "wait " << i;
  }
  const auto cpu = test::thread_cpu_time() - cpu0;
  publisher.join();
  EXPECT_LT(cpu, policy.spin_time * kWaits / 2)
      << "wait_past used " << std::chrono::duration<double, std::milli>(cpu).count()
      << " ms of CPU for " << kWaits << " waits: it spins on every call";
  ASSERT_NO_FATAL_FAILURE(expect_messages(sub, 0, kWaits, kWaits));
}

// A producer killed without closing: a subscriber sleeping in pop reads what
// it published, then gets Status::peer_dead (not a hang, not closed), for
// both deliveries; a subscriber that never slept finds out on its next wait.
TEST(BroadcastHandles, AProducerKilledIsPeerDeadAfterItsMessages) {
  for (const Delivery delivery : {Delivery::reliable, Delivery::lossy}) {
    Ring ring(broadcast(1, delivery, 16), delivery == Delivery::lossy ? "lossy" : "reliable");
    BroadcastSubscriber sub = BroadcastSubscriber::attach(ring.segment);
    constexpr std::uint64_t kFirst = 3;
    const pid_t child = producer_child(ring.shm.name(), kFirst);
    ASSERT_GT(child, 0);
    std::vector<std::byte> buf(kSlot);
    std::size_t size = 0;
    for (std::uint64_t i = 0; i < kFirst; ++i) {
      ASSERT_EQ(sub.pop(buf, size, kDeadline), Status::ok);
      EXPECT_EQ(seq_of({buf.data(), size}, kFirst), i);
    }
    EXPECT_EQ(sub.try_pop(buf, size), Status::would_block) << "alive: nothing yet";
    EXPECT_EQ(sub.ended_at(kFirst), Status::would_block) << "alive";
    std::atomic<bool> started{false};
    Status got = Status::ok;
    std::thread waiter([&] {
      started = true;
      got = sub.pop(buf, size, kDeadline);
    });
    ASSERT_TRUE(eventually([&] { return started.load(); }));
    ::kill(child, SIGKILL);
    EXPECT_EQ(test::wait_child(child), -1);
    const auto start = Clock::now();
    waiter.join();
    EXPECT_EQ(got, Status::peer_dead) << to_string(got);
    EXPECT_LT(Clock::now() - start, 10s);
    EXPECT_EQ(sub.pop(buf, size, 1s), Status::peer_dead);
    EXPECT_EQ(sub.ended_at(kFirst), Status::peer_dead);
    EXPECT_EQ(sub.wait_past(kFirst, kDeadline), Status::peer_dead);
    EXPECT_EQ(sub.ended_at(kFirst - 1), Status::would_block) << "a message left after it";
  }
}

// The first message a subscriber joining at `at` reads.
std::uint64_t first_read(const Segment& seg, JoinAt at, std::uint64_t total) {
  BroadcastSubscriber s = BroadcastSubscriber::attach(seg, at);
  std::vector<std::byte> buf(kSlot);
  std::size_t size = 0;
  const Status st = s.try_pop(buf, size);
  if (st != Status::ok) return st == Status::would_block ? total : UINT64_MAX;
  return seq_of({buf.data(), size}, total);
}

TEST(BroadcastHandles, LateJoinersStartAtOldestNewestOrNext) {
  {
    // Reliable: a subscriber that was there keeps the whole backlog.
    Ring ring(broadcast(4, Delivery::reliable, 8));
    BroadcastSubscriber early = BroadcastSubscriber::attach(ring.segment);
    BroadcastProducer p = BroadcastProducer::attach(ring.segment);
    for (std::uint64_t i = 0; i < 5; ++i) ASSERT_EQ(p.try_push(Message(i).span()), Status::ok);
    EXPECT_EQ(first_read(ring.segment, JoinAt::oldest, 5), 0u);
    EXPECT_EQ(first_read(ring.segment, JoinAt::newest, 5), 4u);
    EXPECT_EQ(first_read(ring.segment, JoinAt::next, 5), 5u);  // nothing yet
  }
  {
    // Lossy: the oldest is a lap back from the head.
    Ring ring(broadcast(2, Delivery::lossy, 8), "lossy");
    BroadcastProducer p = BroadcastProducer::attach(ring.segment);
    for (std::uint64_t i = 0; i < 20; ++i) ASSERT_EQ(p.try_push(Message(i).span()), Status::ok);
    EXPECT_EQ(first_read(ring.segment, JoinAt::oldest, 20), 12u);
    EXPECT_EQ(first_read(ring.segment, JoinAt::newest, 20), 19u);
    EXPECT_EQ(first_read(ring.segment, JoinAt::next, 20), 20u);
  }
}

TEST(BroadcastHandles, ALappedSubscriberGetsOverrunOnceThenTheNewest) {
  Ring ring(broadcast(1, Delivery::lossy, 8));
  BroadcastSubscriber sub = BroadcastSubscriber::attach(ring.segment);
  BroadcastProducer p = BroadcastProducer::attach(ring.segment);
  for (std::uint64_t i = 0; i < 11; ++i) ASSERT_EQ(p.try_push(Message(i).span()), Status::ok);
  std::vector<std::byte> buf(kSlot);
  std::size_t size = 0;
  EXPECT_EQ(sub.try_pop(buf, size), Status::overrun);
  EXPECT_EQ(sub.lapped(), 1u);
  EXPECT_EQ(sub.lost(), 10u);  // 0..9 missed; 10 is the newest
  ASSERT_EQ(sub.try_pop(buf, size), Status::ok);
  EXPECT_EQ(seq_of({buf.data(), size}, 11), 10u);
  EXPECT_EQ(sub.try_pop(buf, size), Status::would_block);
  // The zero-copy path reports a lap the same way, once.
  for (std::uint64_t i = 11; i < 30; ++i) ASSERT_EQ(p.try_push(Message(i).span()), Status::ok);
  ReadClaim lapped = sub.try_peek(4);
  EXPECT_EQ(lapped.status(), Status::overrun);
  EXPECT_EQ(sub.lapped(), 2u);
  EXPECT_EQ(sub.lost(), 10u + 18u);
  ReadClaim c = sub.try_peek(4);
  ASSERT_EQ(c.size(), 1u);
  EXPECT_TRUE(c.valid());
  EXPECT_EQ(seq_of(c[0], 30), 29u);
  // Overwritten under the claim: valid() says so.
  for (std::uint64_t i = 30; i < 38; ++i) ASSERT_EQ(p.try_push(Message(i).span()), Status::ok);
  EXPECT_FALSE(c.valid());
}

// A lossy producer's claim takes its slots from the readers at once; given
// up unpublished, the message a subscriber had not read there is lost, and
// the subscriber learns so at once rather than spinning until its deadline.
TEST(BroadcastHandles, ALossyClaimGivenUpCountsAsALap) {
  Ring ring(broadcast(1, Delivery::lossy, 4));
  BroadcastSubscriber sub = BroadcastSubscriber::attach(ring.segment);
  BroadcastProducer p = BroadcastProducer::attach(ring.segment);
  for (std::uint64_t i = 0; i < 4; ++i) ASSERT_EQ(p.try_push(Message(i).span()), Status::ok);
  p.try_claim(1).abort();  // position 4: the slot of message 0
  std::vector<std::byte> buf(kSlot);
  std::size_t size = 0;
  const auto start = Clock::now();
  EXPECT_EQ(sub.pop(buf, size, kDeadline), Status::overrun);
  EXPECT_LT(Clock::now() - start, 10s);
  EXPECT_EQ(sub.lapped(), 1u);
  EXPECT_EQ(sub.lost(), 3u);  // 0..2; 3 is the newest
  ASSERT_EQ(sub.try_pop(buf, size), Status::ok);
  EXPECT_EQ(seq_of({buf.data(), size}, 4), 3u);
  // The zero-copy path the same way.
  for (std::uint64_t i = 4; i < 7; ++i) ASSERT_EQ(p.try_push(Message(i).span()), Status::ok);
  p.try_claim(2).abort();  // positions 7, 8: the slots of message 3 (read) and 4 (not yet)
  EXPECT_EQ(sub.peek(1, kDeadline).status(), Status::overrun);
  ReadClaim c = sub.try_peek();
  ASSERT_EQ(c.size(), 1u);
  EXPECT_EQ(seq_of(c[0], 7), 6u);
}

// Lossy, under a producer that never waits: whatever a subscriber accepts is
// whole (checksums) and in order, through the copy path and through peeks
// checked with valid().
// What a lossy reader accepted: whole messages, each later than the last.
struct Accepted {
  explicit Accepted(std::uint64_t n) : total(n) {}
  bool done() const { return count != 0 && last + 1 == total; }
  void take(std::span<const std::byte> m) {
    const std::uint64_t seq = seq_of(m, total);
    ASSERT_NE(seq, UINT64_MAX);
    if (count != 0) {
      ASSERT_GT(seq, last);
    }
    last = seq;
    ++count;
  }
  std::uint64_t total;
  std::uint64_t last = 0;
  std::uint64_t count = 0;
};

TEST(BroadcastHandles, LossySubscribersNeverAcceptATornMessage) {
  Ring ring(broadcast(2, Delivery::lossy, 4));
  const std::uint64_t total = msg::scaled(100000);
  BroadcastSubscriber copier = BroadcastSubscriber::attach(ring.segment, JoinAt::oldest);
  BroadcastSubscriber peeker = BroadcastSubscriber::attach(ring.segment, JoinAt::oldest);
  BroadcastProducer p = BroadcastProducer::attach(ring.segment);
  Accepted copied(total), peeked(total);
  std::uint64_t discarded = 0, copy_laps = 0, peek_laps = 0;
  std::thread copy_thread([&] {
    std::vector<std::byte> buf(kSlot);
    while (!copied.done() && !::testing::Test::HasFatalFailure()) {
      std::size_t size = 0;
      const Status s = copier.pop(buf, size, kDeadline);
      if (s == Status::overrun) {
        ++copy_laps;
        continue;
      }
      ASSERT_EQ(s, Status::ok);
      copied.take({buf.data(), size});
    }
  });
  std::thread peek_thread([&] {
    std::vector<std::byte> buf(kSlot);
    while (!peeked.done() && !::testing::Test::HasFatalFailure()) {
      ReadClaim c = peeker.peek(1, kDeadline);
      if (c.status() == Status::overrun) {
        ++peek_laps;
        continue;
      }
      ASSERT_EQ(c.status(), Status::ok);
      // Relaxed atomic words: the producer may be rewriting the slot.
      const std::span<const std::byte> m = c[0];
      load_words(buf.data(), m.data(), m.size());
      if (!c.valid()) {
        ++discarded;  // rewritten while read: what was read is not used
        continue;
      }
      peeked.take({buf.data(), m.size()});
    }
  });
  // Now and then the producer lets the readers run, so that they read much
  // of the stream (and are caught mid-copy) rather than only being lapped.
  for (std::uint64_t i = 0; i < total; ++i) {
    ASSERT_EQ(p.try_push(Message(i).span()), Status::ok);
    if (i % 8 == 0) std::this_thread::yield();
  }
  copy_thread.join();
  peek_thread.join();
  // Both saw the last message; what they did not receive was lost to a lap
  // (or, when peeking, discarded).
  EXPECT_TRUE(copied.done());
  EXPECT_TRUE(peeked.done());
  EXPECT_EQ(copier.lapped(), copy_laps);
  EXPECT_EQ(peeker.lapped(), peek_laps);
  EXPECT_LE(copied.count + copier.lost(), total);
  EXPECT_LE(peeked.count + discarded + peeker.lost(), total);
  RecordProperty("copied", std::to_string(copied.count));
  RecordProperty("peeked", std::to_string(peeked.count));
  RecordProperty("discarded", std::to_string(discarded));
  RecordProperty("laps", std::to_string(copy_laps + peek_laps));
}

TEST(BroadcastHandles, NewestHandsTheNewestMessageAndReleasesTheRest) {
  Ring ring(broadcast(1, Delivery::reliable, 4));
  BroadcastSubscriber sub = BroadcastSubscriber::attach(ring.segment);
  BroadcastProducer p = BroadcastProducer::attach(ring.segment);
  std::vector<std::byte> buf(kSlot);
  std::size_t size = 0;
  EXPECT_EQ(sub.try_newest(buf, size), Status::would_block);
  for (std::uint64_t i = 0; i < 4; ++i) ASSERT_EQ(p.try_push(Message(i).span()), Status::ok);
  // Full: a blocked producer is let go by the conflated read, which releases
  // every message up to the newest.
  Status pushed = Status::would_block;
  std::thread producer([&] { pushed = p.push(Message(4).span(), kDeadline); });
  const BroadcastView v = ring.view();
  ASSERT_TRUE(eventually([&] { return atomic::load_seq_cst(&v.producer_wait()->waiters) != 0; }));
  ASSERT_EQ(sub.try_newest(buf, size), Status::ok);
  EXPECT_EQ(seq_of({buf.data(), size}, 5), 3u);
  producer.join();
  EXPECT_EQ(pushed, Status::ok);
  ASSERT_EQ(sub.newest(buf, size, kDeadline), Status::ok);
  EXPECT_EQ(seq_of({buf.data(), size}, 5), 4u);
  EXPECT_EQ(sub.try_newest(buf, size), Status::would_block);
  EXPECT_EQ(sub.lost(), 0u);  // asked for: not lost

  Ring lossy(broadcast(1, Delivery::lossy, 8), "lossy");
  BroadcastSubscriber ls = BroadcastSubscriber::attach(lossy.segment);
  BroadcastProducer lp = BroadcastProducer::attach(lossy.segment);
  for (std::uint64_t i = 0; i < 20; ++i) ASSERT_EQ(lp.try_push(Message(i).span()), Status::ok);
  ASSERT_EQ(ls.try_newest(buf, size), Status::ok);
  EXPECT_EQ(seq_of({buf.data(), size}, 20), 19u);
  EXPECT_EQ(ls.lapped(), 0u);
  EXPECT_EQ(ls.lost(), 0u);
}

TEST(BroadcastHandles, OneClaimAtATimeAndDroppedClaimsFinishThemselves) {
  Ring ring(broadcast(1, Delivery::reliable, 8));
  BroadcastSubscriber sub = BroadcastSubscriber::attach(ring.segment);
  BroadcastProducer p = BroadcastProducer::attach(ring.segment);
  std::vector<std::byte> buf(kSlot);
  std::size_t size = 0;
  const Message m0(0), m1(1);
  {
    WriteClaim c = p.try_claim(2);
    ASSERT_EQ(c.size(), 2u);
    EXPECT_EQ(p.try_push(m0.span()), Status::busy);
    EXPECT_EQ(p.push(m0.span(), 1ms), Status::busy);
    EXPECT_EQ(p.try_claim().status(), Status::busy);
    const std::span<const std::byte> one[] = {m1.span()};
    EXPECT_EQ(p.try_push_many(one), 0u);
    std::memcpy(c[0].data(), m0.bytes.data(), m0.bytes.size());
  }  // dropped: aborted, nothing published
  EXPECT_EQ(p.position(), 0u);
  EXPECT_EQ(sub.try_pop(buf, size), Status::would_block);
  WriteClaim c = p.try_claim();
  std::memcpy(c[0].data(), m0.bytes.data(), m0.bytes.size());
  ASSERT_EQ(c.commit(m0.bytes.size()), Status::ok);
  EXPECT_EQ(c.commit(1), Status::finished);
  ASSERT_EQ(p.try_push(m1.span()), Status::ok);
  {
    ReadClaim r = sub.try_peek();
    ASSERT_EQ(r.size(), 1u);
    EXPECT_TRUE(r.valid());  // reliable: always
    EXPECT_EQ(sub.try_pop(buf, size), Status::busy);
    EXPECT_EQ(sub.try_newest(buf, size), Status::busy);
    EXPECT_EQ(sub.try_peek().status(), Status::busy);
    ASSERT_EQ(r.put_back(), Status::ok);  // unread: the next read starts with it
  }
  {
    ReadClaim r = sub.try_peek();
    EXPECT_EQ(seq_of(r[0], 2), 0u);
  }  // dropped: released
  ASSERT_EQ(sub.try_pop(buf, size), Status::ok);
  EXPECT_EQ(seq_of({buf.data(), size}, 2), 1u);
  // A claim outlives its handle and keeps the role until it is finished.
  WriteClaim late = p.try_claim();
  p.detach();
  std::error_code ec;
  (void)BroadcastProducer::attach(ring.segment, {}, ec);
  EXPECT_EQ(ec, errc::role_taken);
  const Message m2(2);
  std::memcpy(late[0].data(), m2.bytes.data(), m2.bytes.size());
  ASSERT_EQ(late.commit(m2.bytes.size()), Status::ok);
  ASSERT_EQ(sub.try_pop(buf, size), Status::ok);
  EXPECT_EQ(seq_of({buf.data(), size}, 3), 2u);
  BroadcastProducer again = BroadcastProducer::attach(ring.segment);
  EXPECT_EQ(again.position(), 3u);
}

TEST(BroadcastHandles, MovedAndDetachedHandlesAndBadAttaches) {
  Ring ring(broadcast(2, Delivery::reliable, 4));
  BroadcastProducer p = BroadcastProducer::attach(ring.segment);
  BroadcastSubscriber a = BroadcastSubscriber::attach(ring.segment);
  BroadcastSubscriber b = BroadcastSubscriber::attach(ring.segment);
  std::error_code ec;
  (void)BroadcastSubscriber::attach(ring.segment, JoinAt::next, {}, ec);
  EXPECT_EQ(ec, errc::role_taken);
  EXPECT_NE(last_error_message().find("all 2 subscriber blocks"), std::string::npos)
      << last_error_message();
  (void)BroadcastSubscriber::attach(ring.segment, static_cast<JoinAt>(7), {}, ec);
  EXPECT_EQ(ec, errc::invalid_argument);
  EXPECT_NE(last_error_message().find("JoinAt(7)"), std::string::npos) << last_error_message();

  BroadcastSubscriber moved = std::move(a);
  std::vector<std::byte> buf(kSlot);
  std::size_t size = 0;
  EXPECT_FALSE(a);  // NOLINT(bugprone-use-after-move): what a moved-from handle says
  EXPECT_EQ(a.try_pop(buf, size), Status::detached);
  EXPECT_EQ(a.try_peek().status(), Status::detached);
  for (std::uint64_t i = 0; i < 4; ++i) ASSERT_EQ(p.try_push(Message(i).span()), Status::ok);
  EXPECT_EQ(p.try_push(Message(4).span()), Status::would_block);
  ASSERT_EQ(moved.try_pop(buf, size), Status::ok);
  ASSERT_EQ(b.try_pop(buf, size), Status::ok);
  ASSERT_EQ(p.try_push(Message(4).span()), Status::ok);
  // b stops reading and leaves: the producer no longer waits for it.
  EXPECT_EQ(p.try_push(Message(5).span()), Status::would_block);
  b.detach();
  EXPECT_EQ(b.try_pop(buf, size), Status::detached);
  for (std::uint64_t i = 0; i < 3; ++i) ASSERT_EQ(moved.try_pop(buf, size), Status::ok);
  EXPECT_EQ(p.try_push(Message(5).span()), Status::ok);
  // Its block is free again.
  BroadcastSubscriber c = BroadcastSubscriber::attach(ring.segment, JoinAt::oldest);
  ASSERT_EQ(c.try_pop(buf, size), Status::ok);

  BroadcastProducer q = std::move(p);
  EXPECT_EQ(p.try_push(Message(6).span()), Status::detached);  // NOLINT(bugprone-use-after-move)
  EXPECT_EQ(q.position(), 6u);

  test::UniqueShm spsc_name("spsc");
  CreateOptions o;
  o.capacity = 4;
  o.slot_size = kSlot;
  Segment spsc = Segment::create(spsc_name.name(), o);
  (void)BroadcastSubscriber::attach(spsc, JoinAt::next, {}, ec);
  EXPECT_EQ(ec, errc::kind_mismatch);
  (void)BroadcastProducer::attach(spsc, {}, ec);
  EXPECT_EQ(ec, errc::kind_mismatch);
}

TEST(BroadcastHandles, AForkedChildsCopyDoesNothingToTheRing) {
  Ring ring(broadcast(1, Delivery::reliable, 4));
  BroadcastProducer p = BroadcastProducer::attach(ring.segment);
  BroadcastSubscriber sub = BroadcastSubscriber::attach(ring.segment);
  ASSERT_EQ(p.try_push(Message(0).span()), Status::ok);
  const int rc = test::run_in_child([&] {
    std::vector<std::byte> buf(kSlot);
    std::size_t size = 0;
    if (p.try_push(Message(1).span()) != Status::wrong_process) return 1;
    if (sub.try_pop(buf, size) != Status::wrong_process) return 2;
    sub.detach();  // the parent's block stays its parent's
    return 0;
  });
  EXPECT_EQ(rc, 0);
  EXPECT_EQ(active_subscribers(ring.view()), 1u);
  std::vector<std::byte> buf(kSlot);
  std::size_t size = 0;
  ASSERT_EQ(sub.try_pop(buf, size), Status::ok);
  EXPECT_EQ(seq_of({buf.data(), size}, 1), 0u);
}

// ---- end of stream and event descriptors ---------------------------------------

// The close in both deliveries: every subscriber reads what was published
// before it, then gets closed (at once, also from a blocking call); the
// producer's later pushes and claims are refused; a producer that attaches
// reopens the stream; one told not to close on exit leaves it open.
TEST(BroadcastHandles, BothDeliveriesCloseAndCloseOnExitCanBeTurnedOff) {
  for (const Delivery delivery : {Delivery::reliable, Delivery::lossy}) {
    Ring ring(broadcast(2, delivery, 16));
    BroadcastSubscriber a = BroadcastSubscriber::attach(ring.segment);
    BroadcastSubscriber b = BroadcastSubscriber::attach(ring.segment);
    constexpr std::uint64_t kTotal = 5;
    {
      BroadcastProducer p = BroadcastProducer::attach(ring.segment);
      ASSERT_NO_FATAL_FAILURE(publish_and_close(p, kTotal));
      EXPECT_EQ(p.try_claim().status(), Status::closed);
    }
    std::vector<std::byte> buf(kSlot);
    std::size_t size = 0;
    for (BroadcastSubscriber* s : {&a, &b}) {
      ASSERT_NO_FATAL_FAILURE(expect_messages(*s, 0, kTotal, kTotal));
      EXPECT_EQ(s->try_pop(buf, size), Status::closed);
      const auto t0 = Clock::now();
      EXPECT_EQ(s->pop(buf, size, kDeadline), Status::closed);
      EXPECT_LT(Clock::now() - t0, 5s);  // at once, not at the deadline
    }
    {
      // A new producer reopens the stream; dropping it closes it again.
      BroadcastProducer p = BroadcastProducer::attach(ring.segment);
      EXPECT_EQ(a.try_pop(buf, size), Status::would_block);
      ASSERT_EQ(p.try_push(Message(0).span()), Status::ok);
    }
    ASSERT_EQ(a.try_pop(buf, size), Status::ok);
    EXPECT_EQ(a.try_pop(buf, size), Status::closed);
    {
      BroadcastProducer p = BroadcastProducer::attach(ring.segment);
      p.set_close_on_exit(false);
    }
    EXPECT_EQ(b.try_pop(buf, size), Status::ok);  // the one message of the second producer
    EXPECT_EQ(b.try_pop(buf, size), Status::would_block);
  }
}

// A subscriber's descriptor becomes readable when a message comes and when
// the stream ends; a reliable producer's when a subscriber makes room.
// (Readable for nothing is allowed, event.hpp: only readiness is asserted.)
TEST(BroadcastHandles, EventDescriptorsFollowDataRoomAndTheEnd) {
  Ring ring(broadcast(1, Delivery::reliable, 4));
  BroadcastSubscriber sub = BroadcastSubscriber::attach(ring.segment);
  BroadcastProducer p = BroadcastProducer::attach(ring.segment);
  std::vector<std::byte> buf(kSlot);
  std::size_t size = 0;
  const int sub_fd = sub.event_fd();
  ASSERT_EQ(sub.try_pop(buf, size), Status::would_block);  // armed
  std::thread publisher([&] { EXPECT_EQ(p.try_push(Message(0).span()), Status::ok); });
  publisher.join();
  EXPECT_TRUE(test::readable(sub_fd, 2000ms));
  ASSERT_EQ(sub.try_pop(buf, size), Status::ok);
  EXPECT_EQ(sub.try_pop(buf, size), Status::would_block);  // armed again

  // Fill the ring: the producer's descriptor waits for room.
  for (std::uint64_t i = 1; i <= 4; ++i) ASSERT_EQ(p.try_push(Message(i).span()), Status::ok);
  const int p_fd = p.event_fd();
  ASSERT_EQ(p.try_push(Message(5).span()), Status::would_block);  // armed
  std::thread reader([&] { EXPECT_EQ(sub.try_pop(buf, size), Status::ok); });
  reader.join();
  EXPECT_TRUE(test::readable(p_fd, 2000ms));
  EXPECT_EQ(p.try_push(Message(5).span()), Status::ok);

  // Drain, arm, then the end of the stream makes it readable.
  std::size_t drained = 0;
  while (sub.try_pop(buf, size) == Status::ok) ++drained;
  EXPECT_EQ(drained, 4u);
  ASSERT_EQ(p.close(), Status::ok);
  EXPECT_TRUE(test::readable(sub_fd, 2000ms));
  EXPECT_EQ(sub.try_pop(buf, size), Status::closed);
}

}  // namespace
}  // namespace shmring
