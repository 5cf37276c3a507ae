// Threaded stress: producers and consumers hammer one ring and every message
// is checked on arrival (SPSC: sequence number, length, checksum and every
// byte; MPMC: producer id, sequence number, length, checksum) and accounted
// for at the end (SPSC: strict order; MPMC: exactly once, and in order per
// producer as seen by each consumer). The SPSC runs that use copy calls only
// run over plain and low-latency slots (SlotFormat::low_latency) alike.
//
// Counts scale with SHMRING_STRESS_SCALE; under ThreadSanitizer they shrink
// so the suite stays fast. A thread that makes no progress for kStall, or a
// run that overruns kRunBudget, fails the test instead of hanging it.
#include <gtest/gtest.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstring>
#include <mutex>
#include <random>
#include <span>
#include <string>
#include <thread>
#include <vector>

#include "harness/watchdog.hpp"
#include "shmring/shmring.hpp"
#include "stress_message.hpp"
#include "test_support.hpp"

namespace shmring {
namespace {

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;
namespace msg = test::msg;
using test::make_ring;
using test::poll_until;

constexpr auto kStall = msg::kThreadSanitizer ? 60s : 20s;
constexpr auto kBlockingTimeout = 10s;
// A whole run must end within this (times SHMRING_STRESS_SCALE): wake-ups
// that are lost but rescued by a sleeper's periodic re-check make progress,
// only very slowly.
constexpr auto kRunBudget = msg::kThreadSanitizer ? 120s : 60s;

// Failures reported by worker threads; the first one stops every thread.
class Failures {
 public:
  Failures()
      : deadline_(Clock::now() + kRunBudget * static_cast<std::int64_t>(msg::stress_scale())) {}
  // Whether the run must stop: a failure, or past its time budget (which is
  // then recorded as the failure).
  bool stop_now() {
    if (stopped()) return true;
    if (Clock::now() < deadline_) return false;
    add("the run overran its " + std::to_string(kRunBudget.count()) +
        " s budget (lost wake-ups rescued only by periodic re-checks?)");
    return true;
  }
  void add(std::string what) {
    std::lock_guard lock(mutex_);
    if (list_.size() < 16) list_.push_back(std::move(what));
    stop_.store(true, std::memory_order_relaxed);
  }
  bool stopped() const noexcept { return stop_.load(std::memory_order_relaxed); }
  std::string report() const {
    std::lock_guard lock(mutex_);
    std::string all;
    for (const auto& s : list_) all += s + "\n";
    return all;
  }
  bool any() const {
    std::lock_guard lock(mutex_);
    return !list_.empty();
  }

 private:
  mutable std::mutex mutex_;
  std::vector<std::string> list_;
  std::atomic<bool> stop_{false};
  Clock::time_point deadline_;
};

// Backoff for try_ loops (the harness's Spinner): wait() returns false when
// the run must end, a failure elsewhere or no progress here for kStall (then
// a failure itself).
class Spinner {
 public:
  Spinner(Failures& failures, std::string who)
      : failures_(failures),
        who_(std::move(who)),
        // Yields often: fewer cores than threads, the peer must run.
        spin_(
            kStall, [&failures] { return !failures.stop_now(); }, 16, 1024) {}
  void progress() noexcept { spin_.progress(); }
  bool wait() {
    if (spin_.failed_attempt()) return true;
    if (spin_.stalled()) {
      failures_.add(
          who_ + ": no progress for " +
          std::to_string(std::chrono::duration_cast<std::chrono::seconds>(kStall).count()) +
          " s (lost message or lost wake-up?)");
    }
    return false;
  }

 private:
  Failures& failures_;
  std::string who_;
  harness::Spinner spin_;
};

ControlArea* control(const Segment& s) { return reinterpret_cast<ControlArea*>(s.base()); }
std::uint32_t consumer_waiters(const Segment& s) {
  return atomic::load_seq_cst(&control(s)->consumer_wait.waiters);
}
std::uint32_t producer_waiters(const Segment& s) {
  return atomic::load_seq_cst(&control(s)->producer_wait.waiters);
}
// Bumped by each side every time it wakes sleepers of the other side.
std::uint32_t producer_notify(const Segment& s) {
  return atomic::load_seq_cst(&control(s)->producer.notify);
}
std::uint32_t consumer_notify(const Segment& s) {
  return atomic::load_seq_cst(&control(s)->consumer.notify);
}

std::string describe(const msg::Header& h) {
  return "(producer " + std::to_string(h.producer) + ", seq " + std::to_string(h.seq) + ")";
}

// ---- SPSC messages and checking: one producer, so the sequence is the position
//
// An SPSC message may have any length from 0 to the slot size, so no header
// fits every one: message `seq` has msg::payload_length(0, seq, slot) bytes
// (1 in 16 empty, 1 in 16 a full slot). From 16 bytes on it is the harness's
// message tagged seq (seq, checksum, body); a shorter one is the first bytes
// of the 16-byte one, so from 8 bytes on it begins with seq. The consumer
// knows the seq to expect and checks length, seq, checksum and then every
// byte. Plain and low-latency slots carry the same messages.

std::size_t spsc_write(std::span<std::byte> out, std::uint64_t seq, std::size_t slot) {
  const std::size_t n = msg::payload_length(0, seq, slot);
  std::array<std::byte, msg::kHeaderSize> stamp;
  harness::fill_message(n >= stamp.size() ? out.first(n) : std::span<std::byte>(stamp), seq);
  if (n < stamp.size()) std::memcpy(out.data(), stamp.data(), n);
  return n;
}

class SpscChecker {
 public:
  SpscChecker(Failures& f, std::size_t slot) : failures_(f), slot_(slot), expected_(slot) {}

  bool accept(std::span<const std::byte> m) {
    const std::uint64_t seq = next_;
    const std::size_t n = spsc_write(expected_, seq, slot_);
    const auto fail = [&](const std::string& what) {
      failures_.add("message #" + std::to_string(seq) + " of " + std::to_string(m.size()) +
                    " bytes: " + what);
      return false;
    };
    if (m.size() != n) return fail("expected " + std::to_string(n) + " bytes");
    if (n >= 8) {
      std::uint64_t got = 0;
      std::memcpy(&got, m.data(), 8);
      if (got != seq) {
        return fail("carries seq " + std::to_string(got) +
                    (got < seq ? " (duplicate or stale)" : " (messages lost)"));
      }
    }
    if (n >= msg::kHeaderSize &&
        harness::verify_message(m, n, seq) == harness::Verdict::bad_checksum) {
      return fail("checksum mismatch (torn, stale or overwritten body)");
    }
    if (n != 0 && std::memcmp(m.data(), expected_.data(), n) != 0) {
      return fail("bytes differ from the message's");
    }
    ++next_;
    return true;
  }
  std::uint64_t received() const noexcept { return next_; }

 private:
  Failures& failures_;
  std::size_t slot_;
  std::vector<std::byte> expected_;
  std::uint64_t next_ = 0;
};

// ---- MPMC checking: a seen-count per message, order per (consumer, producer)

class Ledger {
 public:
  Ledger(std::uint32_t producers, std::uint64_t per_producer, std::size_t max_payload)
      : producers_(producers),
        per_producer_(per_producer),
        max_payload_(max_payload),
        seen_(producers * per_producer) {}

  std::uint32_t producers() const noexcept { return producers_; }
  std::uint64_t per_producer() const noexcept { return per_producer_; }
  std::uint64_t total() const noexcept { return producers_ * per_producer_; }
  std::uint64_t delivered() const noexcept { return delivered_.load(); }

  // One consumer's view: the last sequence it saw from each producer.
  class Consumer {
   public:
    Consumer(Ledger& ledger, Failures& f, int id)
        : ledger_(ledger), failures_(f), id_(id), last_(ledger.producers_, kNone) {}
    bool accept(std::span<const std::byte> m) {
      msg::Header h{};
      const msg::Verdict v =
          msg::check(m, ledger_.producers_, ledger_.per_producer_, ledger_.max_payload_, h);
      if (v != msg::Verdict::ok) {
        failures_.add("consumer " + std::to_string(id_) + ": message of " +
                      std::to_string(m.size()) + " bytes: " + msg::to_string(v));
        return false;
      }
      if (last_[h.producer] != kNone && h.seq <= last_[h.producer]) {
        failures_.add("consumer " + std::to_string(id_) + ": " + describe(h) + " after seq " +
                      std::to_string(last_[h.producer]) + " of the same producer");
        return false;
      }
      last_[h.producer] = h.seq;
      const std::uint64_t index = h.producer * ledger_.per_producer_ + h.seq;
      if (ledger_.seen_[index].fetch_add(1, std::memory_order_relaxed) != 0) {
        failures_.add("consumer " + std::to_string(id_) + ": " + describe(h) + " delivered twice");
        return false;
      }
      ledger_.delivered_.fetch_add(1, std::memory_order_relaxed);
      ++count_;
      return true;
    }
    std::uint64_t count() const noexcept { return count_; }

    // A wait of a consumer that found nothing (Spinner::wait). Consumers
    // are promised no share of the messages: one that gets none while the
    // others deliver is not stuck, and on an oversubscribed machine (eight
    // threads on two slowed vCPUs) such a stretch outlasted kStall. Any
    // consumer's delivery counts as progress, so only a ring on which no
    // consumer delivers anything for kStall fails the run.
    bool wait(Spinner& spin) {
      if (const std::uint64_t now = ledger_.delivered(); now != seen_) {
        seen_ = now;
        spin.progress();
      }
      return spin.wait();
    }

   private:
    static constexpr std::uint64_t kNone = ~std::uint64_t{0};
    Ledger& ledger_;
    Failures& failures_;
    int id_;
    std::vector<std::uint64_t> last_;
    std::uint64_t count_ = 0;
    std::uint64_t seen_ = 0;  // ledger_.delivered() at the last wait
  };

  // After every thread joined: each message seen exactly once, but for
  // `lost` messages never seen (those a ring counted as abandoned).
  void verify(std::uint64_t lost = 0) const {
    std::uint64_t missing = 0, duplicated = 0;
    std::string first;
    for (std::uint64_t i = 0; i < seen_.size(); ++i) {
      const unsigned n = seen_[i].load();
      if (n == 1) continue;
      (n == 0 ? missing : duplicated) += 1;
      if (first.empty()) {
        first = "(producer " + std::to_string(i / per_producer_) + ", seq " +
                std::to_string(i % per_producer_) + ") seen " + std::to_string(n) + " times";
      }
    }
    EXPECT_EQ(missing, lost) << "first bad message: " << first;
    EXPECT_EQ(duplicated, 0u) << "first bad message: " << first;
    EXPECT_EQ(delivered() + lost, total());
  }

 private:
  std::uint32_t producers_;
  std::uint64_t per_producer_;
  std::size_t max_payload_;
  std::vector<std::atomic<std::uint8_t>> seen_;
  std::atomic<std::uint64_t> delivered_{0};
};

void join_all(std::vector<std::thread>& threads) {
  for (auto& t : threads) t.join();
  threads.clear();
}

void report_rate(const char* what, std::uint64_t n, Clock::time_point start) {
  const double s = std::chrono::duration<double>(Clock::now() - start).count();
  std::printf("[ stress   ] %s: %llu messages in %.3f s (%.2f M msg/s)\n", what,
              static_cast<unsigned long long>(n), s, static_cast<double>(n) / s / 1e6);
}

// ===========================================================================
// SPSC, plain and low-latency slots (SlotFormat::low_latency: copy calls only)
// ===========================================================================

constexpr std::uint64_t kSlot = 128;
constexpr std::size_t kMaxPayload = kSlot - msg::kHeaderSize;  // MPMC messages
constexpr std::uint64_t kBigSlot = 4096;  // the largest a low-latency slot may be
constexpr std::size_t kSmallBuffer = 1024;

const char* format_name(SlotFormat format) {
  return format == SlotFormat::plain ? "plain" : "low-latency";
}

// Pops with a small buffer first; on too_large the message must stay and
// come whole with a buffer of the announced size (at most big.size()).
template <class Consumer>
Status pop_two_step(Consumer& rx, std::vector<std::byte>& small, std::vector<std::byte>& big,
                    std::span<const std::byte>& out, Failures& failures, std::uint64_t& too_large) {
  std::size_t size = 0;
  Status s = rx.try_pop(small, size);
  if (s == Status::ok) {
    out = {small.data(), size};
    return s;
  }
  if (s != Status::too_large) return s;
  ++too_large;
  if (size <= small.size() || size > big.size()) {
    failures.add("too_large announced " + std::to_string(size) + " bytes");
    return Status::corrupt;
  }
  const std::size_t announced = size;
  s = rx.try_pop({big.data(), announced}, size);
  if (s != Status::ok || size != announced) {
    failures.add(std::string("the kept message did not come back: ") + to_string(s) + ", " +
                 std::to_string(size) + " bytes of " + std::to_string(announced));
    return Status::corrupt;
  }
  out = {big.data(), size};
  return s;
}

struct SpscCopyRun {
  SlotFormat format = SlotFormat::plain;
  std::uint64_t capacity = 256;
  std::uint64_t slot = kSlot;
  std::uint64_t total = 0;
  bool batches = false;        // try_push_many in batches of 1..8, not try_push
  bool two_step_pops = false;  // pops into kSmallBuffer bytes first (pop_two_step)
  bool reattach = false;       // the producer re-attaches every 0..599 messages
};

// Copy calls with spinning, one producer thread, one consumer thread. Every
// 1000 messages the producer also offers one a byte over the slot, which must
// be refused. With two-step pops a too_large pop must keep the message whole
// while the producer writes on. A re-attaching producer gives its role up
// and attaches again: each attach is a new incarnation that resumes at the
// published head (or the consumer's tail), and no message may be lost,
// repeated or mixed with its predecessor's words.
void spsc_copy_run(const SpscCopyRun& run) {
  const std::uint64_t total = run.total, slot = run.slot;
  test::UniqueShm shm(std::to_string(run.capacity) + "_" + std::to_string(slot));
  Segment seg = make_ring(shm, RingKind::spsc, run.capacity, slot, run.format);
  SpscProducer tx = SpscProducer::attach(seg);
  SpscConsumer rx = SpscConsumer::attach(seg);
  Failures failures;
  SpscChecker checker(failures, slot);
  const std::uint32_t first_incarnation = control(seg)->producer.incarnation;
  std::uint64_t full_slot = 0, empty = 0, too_large_pops = 0, attaches = 0;

  const auto start = Clock::now();
  std::thread producer([&] {
    Spinner spin(failures, "producer");
    std::mt19937_64 rng(3);
    constexpr std::size_t kMaxBatch = 8;
    std::vector<std::vector<std::byte>> bufs(kMaxBatch, std::vector<std::byte>(slot + 1));
    std::span<const std::byte> batch[kMaxBatch];
    std::uint64_t seq = 0, until_reattach = rng() % 600;
    while (seq < total) {
      if (run.reattach && until_reattach-- == 0) {
        tx.set_close_on_exit(false);  // a hand-over, not the end of the stream
        tx = SpscProducer();
        std::error_code ec;
        tx = SpscProducer::attach(seg, {}, ec);
        if (ec) return failures.add("attach: " + ec.message() + ": " + last_error_message());
        ++attaches;
        if (tx.position() != seq) {
          return failures.add("attach " + std::to_string(attaches) + " resumed at " +
                              std::to_string(tx.position()) + ", expected " + std::to_string(seq));
        }
        until_reattach = rng() % 600;
      }
      if (seq % 1000 == 0 && tx.try_push(bufs[0]) != Status::too_large) {
        return failures.add("a message one byte over the slot was not refused");
      }
      std::size_t count = run.batches ? 1 + rng() % kMaxBatch : 1;
      count = std::min<std::uint64_t>(count, total - seq);
      for (std::size_t i = 0; i < count; ++i) {
        const std::size_t n = spsc_write(bufs[i], seq + i, slot);
        full_slot += n == slot;
        empty += n == 0;
        batch[i] = {bufs[i].data(), n};
      }
      std::size_t sent = 0;
      while (sent < count) {
        std::size_t went = 0;
        if (run.batches) {
          went = tx.try_push_many({batch + sent, count - sent});
        } else {
          const Status s = tx.try_push(batch[sent]);
          if (s != Status::ok && s != Status::would_block) {
            return failures.add(std::string("try_push: ") + to_string(s));
          }
          went = s == Status::ok ? 1 : 0;
        }
        if (went == 0) {
          if (!spin.wait()) return;
          continue;
        }
        sent += went;
        spin.progress();
      }
      seq += count;
      if (tx.position() != seq) {
        return failures.add("head " + std::to_string(tx.position()) + " after " +
                            std::to_string(seq) + " messages");
      }
    }
  });
  std::thread consumer([&] {
    Spinner spin(failures, "consumer");
    // A buffer of the slot size never meets too_large.
    std::vector<std::byte> small(run.two_step_pops ? kSmallBuffer : slot), big(slot);
    while (checker.received() < total) {
      std::span<const std::byte> m;
      const Status s = pop_two_step(rx, small, big, m, failures, too_large_pops);
      if (s == Status::ok) {
        if (!checker.accept(m)) return;
        spin.progress();
        continue;
      }
      if (s != Status::would_block) return failures.add(std::string("try_pop: ") + to_string(s));
      if (!spin.wait()) return;
    }
  });
  producer.join();
  consumer.join();
  report_rate(("spsc copy 1x1, " + std::string(format_name(run.format)) + ", capacity " +
               std::to_string(run.capacity) + ", slot " + std::to_string(slot) +
               (run.batches ? ", batches" : "") + (run.two_step_pops ? ", two-step pops" : "") +
               (run.reattach ? ", producer re-attaching" : ""))
                  .c_str(),
              total, start);

  ASSERT_FALSE(failures.any()) << failures.report();
  EXPECT_EQ(checker.received(), total);
  EXPECT_EQ(tx.position(), total);
  EXPECT_EQ(rx.position(), total);
  EXPECT_GT(full_slot, 0u);
  EXPECT_GT(empty, 0u);
  if (run.two_step_pops) {
    EXPECT_GT(too_large_pops, total / 4);
  }
  if (run.reattach) {
    EXPECT_GT(attaches, 100u);
    EXPECT_EQ(control(seg)->producer.incarnation, first_incarnation + attaches);
  }
  std::size_t size = 0;
  std::vector<std::byte> buf(slot);
  EXPECT_EQ(rx.try_pop(buf, size), Status::would_block) << "a message beyond the last one";
}

TEST(StressSpsc, CopyApiOneToOne) { spsc_copy_run({.total = msg::scaled(8'000'000, 8)}); }

// One and two slots: every push waits for the pop before it, the slot
// index wraps on every message.
TEST(StressSpsc, CopyApiTinyRings) {
  for (const std::uint64_t capacity : {1, 2}) {
    SCOPED_TRACE("capacity " + std::to_string(capacity));
    spsc_copy_run({.capacity = capacity, .total = msg::scaled(500'000, 8)});
  }
}

TEST(StressSpsc, PushManyBatches) {
  spsc_copy_run({.capacity = 64, .slot = 32, .total = msg::scaled(2'000'000, 8), .batches = true});
}

// The producer re-attaches every few hundred messages: each attach resumes
// at the published head.
TEST(StressSpsc, ProducerReattachesMidStream) {
  spsc_copy_run({.capacity = 8, .slot = 40, .total = msg::scaled(400'000, 8), .reattach = true});
}

TEST(StressSpsc, BatchClaimPeekWrapsSmallRing) {
  test::UniqueShm shm;
  constexpr std::uint64_t kCapacity = 64;
  constexpr std::size_t kMaxBatch = 24;  // > capacity / 3: claims and peeks straddle the wrap
  const std::uint64_t total = msg::scaled(8'000'000, 8);
  Segment seg = make_ring(shm, RingKind::spsc, kCapacity, kSlot);
  SpscProducer tx = SpscProducer::attach(seg);
  SpscConsumer rx = SpscConsumer::attach(seg);
  Failures failures;
  SpscChecker checker(failures, kSlot);
  std::atomic<std::uint64_t> aborted{0}, partial{0}, wrapped{0};

  const auto start = Clock::now();
  std::thread producer([&] {
    Spinner spin(failures, "producer");
    std::mt19937_64 rng(1);
    std::uint64_t seq = 0;
    while (seq < total) {
      WriteClaim claim = tx.try_claim(1 + rng() % kMaxBatch);
      if (claim.empty()) {
        if (claim.status() != Status::would_block) {
          return failures.add(std::string("try_claim: ") + to_string(claim.status()));
        }
        if (!spin.wait()) return;
        continue;
      }
      spin.progress();
      if (claim.position(0) != seq) {
        return failures.add("claim starts at " + std::to_string(claim.position(0)) + ", expected " +
                            std::to_string(seq));
      }
      if (rng() % 64 == 0) {  // give the slots back unpublished
        if (claim.set_size(0, kSlot + 1) != Status::too_large) {
          return failures.add("set_size beyond the slot was accepted");
        }
        claim.abort();
        aborted.fetch_add(1, std::memory_order_relaxed);
        continue;
      }
      std::size_t count = claim.size();
      if (count > 1 && rng() % 4 == 0) {
        count = 1 + rng() % (count - 1);  // publish a prefix, drop the rest
        partial.fetch_add(1, std::memory_order_relaxed);
      }
      count = std::min<std::size_t>(count, total - seq);
      if ((claim.position(0) & (kCapacity - 1)) + count > kCapacity) {
        wrapped.fetch_add(1, std::memory_order_relaxed);
      }
      for (std::size_t i = 0; i < count; ++i) {
        const std::size_t n = spsc_write(claim[i], seq + i, kSlot);
        if (claim.set_size(i, n) != Status::ok) return failures.add("set_size refused");
      }
      claim.commit_batch(count);
      if (!claim.empty()) return failures.add("claim not empty after commit_batch");
      seq += count;
      if (tx.position() != seq) {
        return failures.add("head " + std::to_string(tx.position()) + " after publishing " +
                            std::to_string(seq));
      }
    }
  });
  std::thread consumer([&] {
    Spinner spin(failures, "consumer");
    std::mt19937_64 rng(2);
    while (checker.received() < total) {
      ReadClaim claim = rx.try_peek(1 + rng() % kMaxBatch);
      if (claim.empty()) {
        if (claim.status() != Status::would_block) {
          return failures.add(std::string("try_peek: ") + to_string(claim.status()));
        }
        if (!spin.wait()) return;
        continue;
      }
      spin.progress();
      for (std::size_t i = 0; i < claim.size(); ++i) {
        if (claim.position(i) != checker.received()) {
          return failures.add("peeked position " + std::to_string(claim.position(i)) +
                              ", expected " + std::to_string(checker.received()));
        }
        if (!checker.accept(claim[i])) return;
      }
      if (claim.size() > 1 && rng() % 3 == 0) {  // release in two steps
        const std::size_t first = 1 + rng() % (claim.size() - 1);
        const std::size_t rest = claim.size() - first;
        const std::uint64_t next = claim.position(first);
        claim.release(first);
        if (claim.size() != rest || claim.position(0) != next || rx.position() != next) {
          return failures.add("partial release left the claim inconsistent");
        }
      }
      claim.release();
      if (!claim.empty() || rx.position() != checker.received()) {
        return failures.add("tail " + std::to_string(rx.position()) + " after reading " +
                            std::to_string(checker.received()));
      }
    }
  });
  producer.join();
  consumer.join();
  report_rate("spsc batch 1x1", total, start);
  std::printf(
      "[ stress   ] aborted claims %llu, partial commits %llu, claims across the wrap %llu\n",
      static_cast<unsigned long long>(aborted.load()),
      static_cast<unsigned long long>(partial.load()),
      static_cast<unsigned long long>(wrapped.load()));

  ASSERT_FALSE(failures.any()) << failures.report();
  EXPECT_EQ(checker.received(), total);
  // How many claims straddled the end of the slot array depends on timing,
  // so it is reported above, not asserted; SpscClaim.BatchAcrossTheWrap
  // (test_spsc) covers the straddling claim deterministically.
  EXPECT_TRUE(rx.try_peek(1).empty());
}

// push/pop with timeouts on a 4-slot ring with no spinning, so both sides
// sleep constantly; on plain slots every other call is a claim/peek instead.
// Every 1024 messages each side also waits until the other is asleep (its
// waiters word is non-zero) before going on, which forces both wake paths;
// the notify words then prove they were taken.
void spsc_blocking_run(SlotFormat format, std::uint64_t total) {
  test::UniqueShm shm;
  constexpr std::uint64_t kCapacity = 4;
  const bool claims = format == SlotFormat::plain;  // low-latency slots: copy calls only
  Segment seg = make_ring(shm, RingKind::spsc, kCapacity, kSlot, format);
  const WaitPolicy no_spin{0, 0};
  SpscProducer tx = SpscProducer::attach(seg, no_spin);
  SpscConsumer rx = SpscConsumer::attach(seg, no_spin);
  Failures failures;
  SpscChecker checker(failures, kSlot);
  std::uint64_t producer_handshakes = 0, consumer_handshakes = 0;

  const auto start = Clock::now();
  std::thread producer([&] {
    std::array<std::byte, kSlot> buf{};
    std::uint64_t next_handshake = 1024;
    std::uint64_t seq = 0;
    while (seq < total && !failures.stop_now()) {
      if (seq >= next_handshake) {
        next_handshake += 1024;
        // The consumer drains the ring and must then sleep.
        if (!poll_until([&] { return consumer_waiters(seg) != 0 || failures.stopped(); }, kStall)) {
          return failures.add("consumer never went to sleep on an empty ring");
        }
        ++producer_handshakes;
      }
      if (!claims || seq % 2 == 0) {
        const std::size_t n = spsc_write(buf, seq, kSlot);
        const Status s = tx.push({buf.data(), n}, kBlockingTimeout);
        if (s != Status::ok) return failures.add(std::string("push: ") + to_string(s));
        ++seq;
      } else {
        WriteClaim claim = tx.claim(1 + seq % 3, kBlockingTimeout);
        if (claim.empty()) return failures.add(std::string("claim: ") + to_string(claim.status()));
        const std::size_t count = std::min<std::size_t>(claim.size(), total - seq);
        for (std::size_t i = 0; i < count; ++i) {
          const std::size_t n = spsc_write(claim[i], seq + i, kSlot);
          if (claim.set_size(i, n) != Status::ok) return failures.add("set_size refused");
        }
        claim.commit_batch(count);
        seq += count;
      }
    }
  });
  std::thread consumer([&] {
    std::array<std::byte, kSlot> buf{};
    std::uint64_t next_handshake = 512;
    while (checker.received() < total && !failures.stop_now()) {
      const std::uint64_t got = checker.received();
      // Only while the producer still has more than a ringful to send, so it
      // must block on the full ring.
      if (got >= next_handshake && got + kCapacity + 8 < total) {
        next_handshake += 1024;
        if (!poll_until([&] { return producer_waiters(seg) != 0 || failures.stopped(); }, kStall)) {
          return failures.add("producer never went to sleep on a full ring");
        }
        ++consumer_handshakes;
      }
      if (!claims || got % 2 == 0) {
        std::size_t size = 0;
        const Status s = rx.pop(buf, size, kBlockingTimeout);
        if (s != Status::ok) return failures.add(std::string("pop: ") + to_string(s));
        if (!checker.accept({buf.data(), size})) return;
      } else {
        ReadClaim claim = rx.peek(1 + got % 3, kBlockingTimeout);
        if (claim.empty()) return failures.add(std::string("peek: ") + to_string(claim.status()));
        for (std::size_t i = 0; i < claim.size(); ++i) {
          if (!checker.accept(claim[i])) return;
        }
        claim.release();
      }
    }
  });
  producer.join();
  consumer.join();
  report_rate(("spsc blocking 1x1, " + std::string(format_name(format))).c_str(), total, start);
  const std::uint32_t woke_consumer = producer_notify(seg);
  const std::uint32_t woke_producer = consumer_notify(seg);
  std::printf(
      "[ stress   ] handshakes: producer %llu, consumer %llu; wakes: of the consumer %u, "
      "of the producer %u\n",
      static_cast<unsigned long long>(producer_handshakes),
      static_cast<unsigned long long>(consumer_handshakes), woke_consumer, woke_producer);

  ASSERT_FALSE(failures.any()) << failures.report();
  EXPECT_EQ(checker.received(), total);
  EXPECT_GT(producer_handshakes, 0u);
  EXPECT_GT(consumer_handshakes, 0u);
  // Each handshake leaves a sleeper that only the other side's wake can
  // release before its 10 s timeout (the test would have failed otherwise);
  // a handful may coincide with a sleeper's periodic re-check.
  EXPECT_GE(woke_consumer, producer_handshakes / 2);
  EXPECT_GE(woke_producer, consumer_handshakes / 2);
  EXPECT_EQ(consumer_waiters(seg), 0u);
  EXPECT_EQ(producer_waiters(seg), 0u);
}

TEST(StressSpsc, BlockingFormsBothSidesSleep) {
  spsc_blocking_run(SlotFormat::plain, msg::scaled(300'000, 3));
}

// ===========================================================================
// MPMC
// ===========================================================================

constexpr std::uint32_t kProducers = 4;
constexpr int kConsumers = 4;

struct MpmcCopyRun {
  std::uint32_t producers = kProducers;
  int consumers = kConsumers;
  std::uint64_t capacity = 256;
  std::uint64_t slot = kSlot;
  std::uint64_t per_producer = 0;
  bool two_step_pops = false;  // pops into kSmallBuffer bytes first (pop_two_step)
  std::uint32_t lanes = 0;     // owned lanes, or 0 for one shared
  std::size_t read_ahead = 1;  // MpmcConsumer::set_read_ahead
};

// try_push / try_pop with spinning, run.producers x run.consumers threads;
// messages of any length up to the slot (msg::write). Every 1000 messages
// each producer also offers one a byte over the slot, which must be refused.
// With two-step pops a too_large pop must keep the message whole while the
// others go on. At the end the ring is empty and closed.
void mpmc_copy_run(const MpmcCopyRun& run) {
  const std::uint64_t slot = run.slot;
  const std::size_t max_payload = slot - msg::kHeaderSize;
  test::UniqueShm shm(std::to_string(run.capacity) + "_" + std::to_string(slot));
  Segment seg = make_ring(shm, RingKind::mpmc, run.capacity, slot, SlotFormat::plain, run.lanes);
  Failures failures;
  Ledger ledger(run.producers, run.per_producer, max_payload);
  std::atomic<std::uint64_t> too_large_pops{0};

  const auto start = Clock::now();
  std::vector<std::thread> threads;
  for (std::uint32_t p = 0; p < run.producers; ++p) {
    threads.emplace_back([&, p] {
      MpmcProducer tx = MpmcProducer::attach(seg);
      Spinner spin(failures, "producer " + std::to_string(p));
      std::vector<std::byte> buf(slot + 1);
      for (std::uint64_t seq = 0; seq < run.per_producer; ++seq) {
        if (seq % 1000 == 0 && tx.try_push(buf) != Status::too_large) {
          return failures.add("a message one byte over the slot was not refused");
        }
        const std::size_t n = msg::write(buf, p, seq, max_payload);
        for (;;) {
          const Status s = tx.try_push({buf.data(), n});
          if (s == Status::ok) break;
          if (s != Status::would_block)
            return failures.add(std::string("try_push: ") + to_string(s));
          if (!spin.wait()) return;
        }
        spin.progress();
      }
    });
  }
  for (int c = 0; c < run.consumers; ++c) {
    threads.emplace_back([&, c] {
      MpmcConsumer rx = MpmcConsumer::attach(seg);
      rx.set_read_ahead(run.read_ahead);
      Ledger::Consumer check(ledger, failures, c);
      Spinner spin(failures, "consumer " + std::to_string(c));
      // A buffer of the slot size never meets too_large.
      std::vector<std::byte> small(run.two_step_pops ? kSmallBuffer : slot), big(slot);
      std::uint64_t too_large = 0;
      while (ledger.delivered() < ledger.total()) {
        std::span<const std::byte> m;
        const Status s = pop_two_step(rx, small, big, m, failures, too_large);
        if (s == Status::ok) {
          if (!check.accept(m)) break;
          spin.progress();
          continue;
        }
        // closed: the last producer left and nothing is left for this
        // consumer (another may still be finishing the last messages).
        if (s == Status::closed) break;
        if (s != Status::would_block) {
          failures.add(std::string("try_pop: ") + to_string(s));
          break;
        }
        if (!check.wait(spin)) break;
      }
      too_large_pops.fetch_add(too_large);
    });
  }
  join_all(threads);
  report_rate(("mpmc copy " + std::to_string(run.producers) + "x" + std::to_string(run.consumers) +
               ", capacity " + std::to_string(run.capacity) + ", slot " + std::to_string(slot) +
               ", lanes " + std::to_string(run.lanes) + ", read-ahead " +
               std::to_string(run.read_ahead) + (run.two_step_pops ? ", two-step pops" : ""))
                  .c_str(),
              ledger.total(), start);

  ASSERT_FALSE(failures.any()) << failures.report();
  ledger.verify();
  if (run.two_step_pops) {
    EXPECT_GT(too_large_pops.load(), ledger.total() / 4);
  }
  MpmcConsumer rx = MpmcConsumer::attach(seg);
  std::vector<std::byte> buf(slot);
  std::size_t size = 0;
  EXPECT_EQ(rx.try_pop(buf, size), Status::closed)
      << "nothing beyond the last message, and the last producer ended the stream";
}

TEST(StressMpmc, CopyApiFourByFour) { mpmc_copy_run({.per_producer = msg::scaled(2'000'000, 8)}); }

// A lane per producer, and twice as many lanes as producers (consumers
// pass over empty lanes): consumers go from lane to lane, each producer's
// messages in its order.
TEST(StressMpmc, CopyApiFourByFourInLanes) {
  for (const std::uint32_t lanes : {4u, 8u}) {
    mpmc_copy_run({.capacity = 256, .per_producer = msg::scaled(1'000'000, 8), .lanes = lanes});
  }
}

// Consumers that read ahead up to 8 messages a claim, in one shared lane and
// in four lanes, with two-step pops (a kept message and messages read ahead
// are handed out in order).
TEST(StressMpmc, CopyApiFourByFourReadAhead) {
  for (const std::uint32_t lanes : {0u, 4u}) {
    for (const bool two_step : {false, true}) {
      mpmc_copy_run({.capacity = 64,
                     .slot = two_step ? kBigSlot : kSlot,
                     .per_producer = msg::scaled(two_step ? 100'000 : 500'000, 8),
                     .two_step_pops = two_step,
                     .lanes = lanes,
                     .read_ahead = 8});
    }
  }
}

// Consumers with read-ahead that come and go (each leaves holding what it
// read ahead) while a full ring keeps a recoverer busy: what a leaving
// consumer holds goes back to the ring, or is released and counted as
// abandoned when another consumer claimed past it. Never both, and never
// taken for a dead consumer's claim by the recoverer (which judges positions
// under the lock that hand-backs take): every message is delivered once or
// counted lost, and each consumer sees each producer's messages in order.
void mpmc_read_ahead_churn(std::uint32_t lanes) {
  test::UniqueShm shm;
  constexpr std::uint32_t kChurnProducers = 2;
  constexpr int kChurnConsumers = 3;
  const std::uint64_t per_producer = msg::scaled(200'000, 8);
  Segment seg = make_ring(shm, RingKind::mpmc, 16, kSlot, SlotFormat::plain, lanes);
  Failures failures;
  Ledger ledger(kChurnProducers, per_producer, kMaxPayload);
  MpmcConsumer observer = MpmcConsumer::attach(seg);
  auto finished = [&] { return ledger.delivered() + observer.abandoned() >= ledger.total(); };
  std::atomic<std::uint64_t> visits{0}, recovered{0};

  std::vector<std::thread> threads;
  for (std::uint32_t p = 0; p < kChurnProducers; ++p) {
    threads.emplace_back([&, p] {
      MpmcProducer tx = MpmcProducer::attach(seg);
      Spinner spin(failures, "producer " + std::to_string(p));
      std::vector<std::byte> buf(kSlot);
      for (std::uint64_t seq = 0; seq < per_producer; ++seq) {
        const std::size_t n = msg::write(buf, p, seq, kMaxPayload);
        while (tx.try_push({buf.data(), n}) != Status::ok) {
          if (!spin.wait()) return;
        }
        spin.progress();
      }
    });
  }
  for (int c = 0; c < kChurnConsumers; ++c) {
    threads.emplace_back([&, c] {
      Ledger::Consumer check(ledger, failures, c);
      Spinner spin(failures, "consumer " + std::to_string(c));
      std::mt19937 rng(static_cast<unsigned>(c + 1));
      std::vector<std::byte> buf(kSlot);
      while (!finished() && !failures.stopped()) {
        MpmcConsumer rx = MpmcConsumer::attach(seg);
        rx.set_read_ahead(1 + rng() % 8);
        visits.fetch_add(1, std::memory_order_relaxed);
        for (auto want = static_cast<std::uint32_t>(rng() % 24); want != 0 && !finished();) {
          std::size_t size = 0;
          const Status s = rx.try_pop(buf, size);
          if (s == Status::ok) {
            if (!check.accept({buf.data(), size})) return;
            spin.progress();
            --want;
          } else if (s != Status::would_block) {
            return failures.add(std::string("try_pop: ") + to_string(s));
          } else if (!check.wait(spin)) {
            return;
          }
        }
      }
    });
  }
  threads.emplace_back([&] {
    MpmcConsumer rx = MpmcConsumer::attach(seg);
    while (!finished() && !failures.stopped()) {
      recovered.fetch_add(rx.recover(), std::memory_order_relaxed);
      std::this_thread::yield();
    }
  });
  join_all(threads);
  const std::uint64_t lost = observer.abandoned();
  std::printf(
      "[ stress   ] lanes %u: %llu consumer visits, %llu messages lost with a leaving "
      "consumer, %llu recovered\n",
      lanes, static_cast<unsigned long long>(visits.load()), static_cast<unsigned long long>(lost),
      static_cast<unsigned long long>(recovered.load()));
  ASSERT_FALSE(failures.any()) << failures.report();
  EXPECT_EQ(recovered.load(), 0u) << "no consumer died: nothing was a dead claim";
  ledger.verify(lost);
  EXPECT_LT(lost, ledger.total()) << "most of what leaving consumers held went back";
}

TEST(StressMpmc, ReadAheadConsumersComeAndGo) { mpmc_read_ahead_churn(0); }
TEST(StressMpmc, ReadAheadConsumersComeAndGoInLanes) { mpmc_read_ahead_churn(2); }

// One and two slots shared by eight threads: every slot changes hands on
// every lap, so turn words are reused as fast as they can be.
TEST(StressMpmc, CopyApiTinyRings) {
  for (const std::uint64_t capacity : {1, 2}) {
    SCOPED_TRACE("capacity " + std::to_string(capacity));
    mpmc_copy_run({.capacity = capacity, .per_producer = msg::scaled(100'000, 8)});
  }
}

// Claims of up to 8 slots on a 64-slot ring: partial commits (the rest is
// skipped), aborts, two claims held at once and committed out of order;
// peeks released in two steps, two peeks held at once.
void mpmc_batch_run(std::uint32_t lanes) {
  test::UniqueShm shm;
  constexpr std::uint64_t kCapacity = 64;
  constexpr std::size_t kMaxBatch = 8;
  const std::uint64_t per_producer = msg::scaled(lanes == 0 ? 1'500'000 : 1'500'000 / lanes, 8);
  Segment seg = make_ring(shm, RingKind::mpmc, kCapacity, kSlot, SlotFormat::plain, lanes);
  Failures failures;
  Ledger ledger(kProducers, per_producer, kMaxPayload);
  std::atomic<std::uint64_t> skipped_slots{0}, out_of_order{0}, double_peeks{0};

  const auto start = Clock::now();
  std::vector<std::thread> threads;
  for (std::uint32_t p = 0; p < kProducers; ++p) {
    threads.emplace_back([&, p] {
      MpmcProducer tx = MpmcProducer::attach(seg);
      Spinner spin(failures, "producer " + std::to_string(p));
      std::mt19937_64 rng(100 + p);
      std::uint64_t seq = 0;
      // Fills the first `count` slots of a claim with the next messages.
      auto fill = [&](WriteClaim& claim, std::size_t count) {
        for (std::size_t i = 0; i < count; ++i) {
          const std::size_t n = msg::write(claim[i], p, seq++, kMaxPayload);
          if (claim.set_size(i, n) != Status::ok) {
            failures.add("set_size refused");
            return false;
          }
        }
        return true;
      };
      auto pick = [&](const WriteClaim& claim) {
        std::size_t count = claim.size();
        if (rng() % 16 == 0)
          count = 0;  // abort
        else if (count > 1 && rng() % 4 == 0)
          count = 1 + rng() % (count - 1);  // prefix
        count = std::min<std::size_t>(count, per_producer - seq);
        skipped_slots.fetch_add(claim.size() - count, std::memory_order_relaxed);
        return count;
      };
      while (seq < per_producer) {
        WriteClaim a = tx.try_claim(1 + rng() % kMaxBatch);
        if (a.empty()) {
          if (a.status() != Status::would_block) {
            return failures.add(std::string("try_claim: ") + to_string(a.status()));
          }
          if (!spin.wait()) return;
          continue;
        }
        spin.progress();
        const std::size_t count_a = pick(a);
        if (!fill(a, count_a)) return;
        if (rng() % 4 == 0 && seq < per_producer) {
          WriteClaim b = tx.try_claim(1 + rng() % kMaxBatch);
          if (!b.empty()) {
            if (b.position(0) <= a.position(a.size() - 1)) {
              return failures.add("a later claim starts below an earlier one");
            }
            const std::size_t count_b = pick(b);
            if (!fill(b, count_b)) return;
            b.commit_batch(count_b);  // the later claim first
            out_of_order.fetch_add(1, std::memory_order_relaxed);
          }
        }
        if (count_a == 0) {
          a.abort();
        } else {
          a.commit_batch(count_a);
        }
      }
    });
  }
  for (int c = 0; c < kConsumers; ++c) {
    threads.emplace_back([&, c] {
      MpmcConsumer rx = MpmcConsumer::attach(seg);
      Ledger::Consumer check(ledger, failures, c);
      Spinner spin(failures, "consumer " + std::to_string(c));
      std::mt19937_64 rng(200 + c);
      auto take = [&](ReadClaim& claim) {
        for (std::size_t i = 0; i < claim.size(); ++i) {
          if (i > 0 && claim.position(i) != claim.position(0) + i) {
            failures.add("peeked positions are not consecutive");
            return false;
          }
          if (!check.accept(claim[i])) return false;
        }
        return true;
      };
      while (ledger.delivered() < ledger.total()) {
        ReadClaim a = rx.try_peek(1 + rng() % kMaxBatch);
        if (a.empty()) {
          if (a.status() == Status::closed) return;  // as in the copy run
          if (a.status() != Status::would_block) {
            return failures.add(std::string("try_peek: ") + to_string(a.status()));
          }
          if (!check.wait(spin)) return;
          continue;
        }
        spin.progress();
        if (!take(a)) return;
        if (rng() % 4 == 0) {  // hold a second claim, release it first
          ReadClaim b = rx.try_peek(1 + rng() % kMaxBatch);
          if (!b.empty()) {
            double_peeks.fetch_add(1, std::memory_order_relaxed);
            if (b.position(0) <= a.position(a.size() - 1)) {
              return failures.add("a later peek starts at or below an earlier one");
            }
            if (!take(b)) return;
            b.release();
          }
        }
        if (a.size() > 1 && rng() % 3 == 0) {
          const std::size_t first = 1 + rng() % (a.size() - 1);
          const std::size_t rest = a.size() - first;
          a.release(first);
          if (a.size() != rest) return failures.add("partial release kept the wrong count");
        }
        a.release();
        if (!a.empty()) return failures.add("claim not empty after release");
      }
    });
  }
  join_all(threads);
  report_rate("mpmc batch 4x4", ledger.total(), start);
  std::printf("[ stress   ] skipped slots %llu, out-of-order commits %llu, double peeks %llu\n",
              static_cast<unsigned long long>(skipped_slots.load()),
              static_cast<unsigned long long>(out_of_order.load()),
              static_cast<unsigned long long>(double_peeks.load()));

  ASSERT_FALSE(failures.any()) << failures.report();
  ledger.verify();
  EXPECT_GT(skipped_slots.load(), 0u);
  MpmcConsumer rx = MpmcConsumer::attach(seg);
  EXPECT_TRUE(rx.try_peek(kMaxBatch).empty()) << "a skipped slot or extra message was left";
}

TEST(StressMpmc, BatchClaimPeekFourByFour) { mpmc_batch_run(0); }
// Held claims keep a consumer on their lane; skipped slots in every lane.
TEST(StressMpmc, BatchClaimPeekFourByFourInLanes) { mpmc_batch_run(4); }

// push/pop and claim/peek with timeouts on an 8-slot ring with no spinning.
// Producers start first and must all fall asleep on the full ring before
// the consumers start; at the end the consumers, all asleep, are stopped by
// one "stop" message at a time, each of which must wake a sleeper.
void mpmc_blocking_run(std::uint32_t lanes) {
  test::UniqueShm shm;
  constexpr std::uint64_t kCapacity = 8;
  const std::uint64_t per_producer = msg::scaled(lanes == 0 ? 250'000 : 250'000 / lanes, 4);
  Segment seg = make_ring(shm, RingKind::mpmc, kCapacity, kSlot, SlotFormat::plain, lanes);
  const WaitPolicy no_spin{0, 0};
  Failures failures;
  Ledger ledger(kProducers, per_producer, kMaxPayload);
  std::atomic<int> stops_taken{0};
  int stops_that_woke = 0;

  const auto start = Clock::now();
  std::vector<std::thread> producers, consumers;
  for (std::uint32_t p = 0; p < kProducers; ++p) {
    producers.emplace_back([&, p] {
      MpmcProducer tx = MpmcProducer::attach(seg, no_spin);
      tx.set_close_on_exit(false);  // the stop messages come from another producer
      std::array<std::byte, kSlot> buf{};
      std::uint64_t seq = 0;
      while (seq < per_producer && !failures.stop_now()) {
        if (p % 2 == 0) {
          const std::size_t n = msg::write(buf, p, seq, kMaxPayload);
          const Status s = tx.push({buf.data(), n}, kBlockingTimeout);
          if (s != Status::ok) return failures.add(std::string("push: ") + to_string(s));
          ++seq;
        } else {
          WriteClaim claim = tx.claim(1 + seq % 3, kBlockingTimeout);
          if (claim.empty())
            return failures.add(std::string("claim: ") + to_string(claim.status()));
          const std::size_t count = std::min<std::size_t>(claim.size(), per_producer - seq);
          for (std::size_t i = 0; i < count; ++i) {
            const std::size_t n = msg::write(claim[i], p, seq + i, kMaxPayload);
            if (claim.set_size(i, n) != Status::ok) return failures.add("set_size refused");
          }
          claim.commit_batch(count);
          seq += count;
        }
      }
    });
  }
  ASSERT_TRUE(
      poll_until([&] { return producer_waiters(seg) == kProducers || failures.stopped(); }, kStall))
      << "producers did not all sleep on the full ring: " << producer_waiters(seg);
  ASSERT_FALSE(failures.any()) << failures.report();

  for (int c = 0; c < kConsumers; ++c) {
    consumers.emplace_back([&, c] {
      MpmcConsumer rx = MpmcConsumer::attach(seg, no_spin);
      Ledger::Consumer check(ledger, failures, c);
      std::array<std::byte, kSlot> buf{};
      // A stop message is a valid message of producer kProducers.
      auto is_stop = [](std::span<const std::byte> m) {
        msg::Header h{};
        return msg::check(m, kProducers + 1, kConsumers, kMaxPayload, h) == msg::Verdict::ok &&
               h.producer == kProducers;
      };
      for (std::uint64_t k = 0; !failures.stop_now(); ++k) {
        if (k % 2 == 0) {
          std::size_t size = 0;
          const Status s = rx.pop(buf, size, kBlockingTimeout);
          if (s != Status::ok) return failures.add(std::string("pop: ") + to_string(s));
          if (is_stop({buf.data(), size})) {
            stops_taken.fetch_add(1);
            return;
          }
          if (!check.accept({buf.data(), size})) return;
        } else {
          ReadClaim claim = rx.peek(1 + k % 3, kBlockingTimeout);
          if (claim.empty()) return failures.add(std::string("peek: ") + to_string(claim.status()));
          bool stop = false;
          for (std::size_t i = 0; i < claim.size(); ++i) {
            if (is_stop(claim[i])) {
              if (i + 1 != claim.size() || stop) {
                return failures.add("a stop message shared a peek with another message");
              }
              stop = true;
            } else if (!check.accept(claim[i])) {
              return;
            }
          }
          claim.release();
          if (stop) {
            stops_taken.fetch_add(1);
            return;
          }
        }
      }
    });
  }
  join_all(producers);
  {
    MpmcProducer tx = MpmcProducer::attach(seg, no_spin);
    std::array<std::byte, kSlot> buf{};
    for (int i = 0; i < kConsumers && !failures.stopped(); ++i) {
      const std::uint32_t remaining = static_cast<std::uint32_t>(kConsumers - i);
      EXPECT_TRUE(poll_until(
          [&] { return consumer_waiters(seg) == remaining || failures.stopped(); }, kStall))
          << remaining << " consumers should be asleep on the empty ring, " << consumer_waiters(seg)
          << " are";
      const std::uint32_t notify_before = producer_notify(seg);
      const std::size_t n = msg::write(buf, kProducers, static_cast<std::uint64_t>(i), kMaxPayload);
      EXPECT_EQ(tx.push({buf.data(), n}, kBlockingTimeout), Status::ok);
      if (producer_notify(seg) != notify_before) ++stops_that_woke;
      EXPECT_TRUE(
          poll_until([&] { return stops_taken.load() == i + 1 || failures.stopped(); }, kStall))
          << "stop message " << i << " was not taken";
    }
  }
  join_all(consumers);
  report_rate("mpmc blocking 4x4", ledger.total(), start);
  std::printf("[ stress   ] wakes: of consumers %u, of producers %u\n", producer_notify(seg),
              consumer_notify(seg));

  ASSERT_FALSE(failures.any()) << failures.report();
  ledger.verify();
  EXPECT_EQ(stops_taken.load(), kConsumers);
  // Each stop message went to a ring with sleeping consumers, so its push
  // had to wake them (bar the rare push that met every sleeper in its
  // periodic re-check).
  EXPECT_GE(stops_that_woke, 1);
  EXPECT_GT(consumer_notify(seg), 0u) << "the sleeping producers were never woken";
  EXPECT_EQ(consumer_waiters(seg), 0u);
  EXPECT_EQ(producer_waiters(seg), 0u);
}

TEST(StressMpmc, BlockingFormsFourByFour) { mpmc_blocking_run(0); }
// A lane of two slots per producer: each sleeps for its own lane's room,
// and consumers sleep once for all four lanes.
TEST(StressMpmc, BlockingFormsFourByFourInLanes) { mpmc_blocking_run(4); }

// ===========================================================================
// Mixed sizes: 0 to slot-size payloads, buffers that are sometimes too small
// ===========================================================================

// 4096-byte slots popped into a 1024-byte buffer first (pop_two_step).
TEST(StressMixed, SizesFromEmptyToFullSlotSpsc) {
  spsc_copy_run(
      {.capacity = 16, .slot = kBigSlot, .total = msg::scaled(500'000, 4), .two_step_pops = true});
}

// The same over MPMC: 2 x 2 threads, each pop into a 1024-byte buffer first.
TEST(StressMixed, SizesFromEmptyToFullSlotMpmc) {
  mpmc_copy_run({.producers = 2,
                 .consumers = 2,
                 .capacity = 32,
                 .slot = kBigSlot,
                 .per_producer = msg::scaled(250'000, 4),
                 .two_step_pops = true});
}

// ===========================================================================
// SPSC, low-latency slots: the SPSC runs above over SlotFormat::low_latency
// ===========================================================================

constexpr auto kLowLatency = SlotFormat::low_latency;

TEST(StressLowLatency, CopyApiOneToOne) {
  spsc_copy_run({.format = kLowLatency, .total = msg::scaled(4'000'000, 8)});
}

// One and two slots: every message begins a lap of its slot. Slot sizes on
// both sides of the reader's first round (56 bytes).
TEST(StressLowLatency, CopyApiTinyRings) {
  for (const std::uint64_t capacity : {1, 2}) {
    for (const std::uint64_t slot : {56, 61}) {
      SCOPED_TRACE("capacity " + std::to_string(capacity) + ", slot " + std::to_string(slot));
      spsc_copy_run({.format = kLowLatency,
                     .capacity = capacity,
                     .slot = slot,
                     .total = msg::scaled(300'000, 8)});
    }
  }
}

TEST(StressLowLatency, PushManyBatches) {
  spsc_copy_run({.format = kLowLatency,
                 .capacity = 64,
                 .slot = 32,
                 .total = msg::scaled(2'000'000, 8),
                 .batches = true});
}

// 4096-byte slots (the largest), popped into a 1024-byte buffer first.
TEST(StressLowLatency, SizesUpTo4096WithTwoStepPops) {
  spsc_copy_run({.format = kLowLatency,
                 .capacity = 16,
                 .slot = kBigSlot,
                 .total = msg::scaled(300'000, 4),
                 .two_step_pops = true});
}

// The producer gives its role up and attaches again every few hundred
// messages while the consumer reads on: a new incarnation each time, whose
// flags must never let its words pass for one message with its predecessor's.
TEST(StressLowLatency, ProducerReattachesMidStream) {
  spsc_copy_run({.format = kLowLatency,
                 .capacity = 8,
                 .slot = 40,
                 .total = msg::scaled(400'000, 8),
                 .reattach = true});
}

TEST(StressLowLatency, BlockingFormsBothSidesSleep) {
  spsc_blocking_run(kLowLatency, msg::scaled(200'000, 3));
}

}  // namespace
}  // namespace shmring
