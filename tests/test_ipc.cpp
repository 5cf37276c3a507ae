// Cross-process stress: producers and consumers are fork()ed processes that
// open the ring by name. Consumers check every message on arrival and count
// it in a separate verification mapping (anonymous, shared, made before the
// fork); the parent then requires every message exactly once. Every wait in
// a child has a deadline (the blocking API with timeouts), and the parent
// kills the children and fails if they overrun theirs.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <random>
#include <span>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "shmring/shmring.hpp"
#include "stress_message.hpp"
#include "test_support.hpp"

namespace shmring {
namespace {

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;
namespace msg = test::msg;
using test::make_ring;

constexpr auto kBlockingTimeout = 5s;  // a child's single wait
constexpr auto kChildrenDeadline = msg::kThreadSanitizer ? 300s : 120s;

// Every ring here has slots of kSlot bytes, and every message fits one.
constexpr std::uint64_t kSlot = 128;
constexpr std::size_t kMaxPayload = kSlot - msg::kHeaderSize;

// Exit codes of the children.
enum Exit : int {
  kOk = 0,
  kBadMessage = 1,  // a message failed its checks
  kWaitFailed = 2,  // a blocking call returned something other than ok
  kException = 3,   // open or attach threw
};

// What one child reports to the parent.
struct ChildResult {
  std::uint64_t messages;
  std::uint64_t errors;
  char first_error[240];
};

// The verification mapping: per-child results, then one seen-count byte per
// message. Anonymous and MAP_SHARED, so it survives fork() and needs no name.
class Verification {
 public:
  static constexpr int kMaxChildren = 16;

  explicit Verification(std::uint64_t messages) : messages_(messages) {
    size_ = sizeof(Area) + messages;
    void* p = ::mmap(nullptr, size_, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) throw std::runtime_error("mmap of the verification area failed");
    area_ = static_cast<Area*>(p);
  }
  ~Verification() { ::munmap(area_, size_); }
  Verification(const Verification&) = delete;
  Verification& operator=(const Verification&) = delete;

  ChildResult& result(int child) { return area_->results[child]; }
  std::uint32_t* producers_done() { return &area_->producers_done; }
  std::uint64_t* delivered() { return &area_->delivered; }

  // Counts one delivery of message `index`; false if it was delivered before.
  bool mark(std::uint64_t index) {
    std::uint8_t* seen = reinterpret_cast<std::uint8_t*>(area_ + 1);
    return std::atomic_ref<std::uint8_t>(seen[index]).fetch_add(1) == 0;
  }
  std::uint8_t seen(std::uint64_t index) const {
    const std::uint8_t* seen = reinterpret_cast<const std::uint8_t*>(area_ + 1);
    return seen[index];
  }
  std::uint64_t messages() const noexcept { return messages_; }

 private:
  struct Area {
    ChildResult results[kMaxChildren];
    std::uint32_t producers_done;
    std::uint32_t pad;
    std::uint64_t delivered;
  };
  Area* area_ = nullptr;
  std::size_t size_ = 0;
  std::uint64_t messages_ = 0;
};

// Records a child's first error in its result slot.
void note(ChildResult& r, const std::string& what) {
  if (r.errors++ == 0) {
    std::snprintf(r.first_error, sizeof r.first_error, "%s", what.c_str());
  }
}

// Forked children and the watchdog that bounds them.
class Children {
 public:
  Children() = default;
  Children(const Children&) = delete;
  Children& operator=(const Children&) = delete;
  ~Children() { kill_all(); }

  // Runs body() -> exit code in a new process, which leaves with _exit.
  template <class Body>
  void spawn(Body&& body) {
    std::fflush(nullptr);  // nothing buffered is written twice
    const pid_t pid = ::fork();
    if (pid < 0) {
      ADD_FAILURE() << "fork failed: " << std::strerror(errno);
      return;
    }
    if (pid == 0) {
      int rc = kException;
      try {
        rc = body();
      } catch (const std::exception& e) {
        std::fprintf(stderr, "child %d: %s\n", static_cast<int>(::getpid()), e.what());
      } catch (...) {
      }
      ::_exit(rc);
    }
    pids_.push_back(pid);
    codes_.push_back(-2);
  }

  // Waits for every child until `deadline`; then kills the rest. Returns
  // false if any had to be killed.
  bool wait_all(std::chrono::seconds limit) {
    const auto deadline = Clock::now() + limit;
    std::size_t left = pids_.size();
    while (left != 0) {
      bool reaped = false;
      for (std::size_t i = 0; i < pids_.size(); ++i) {
        if (pids_[i] <= 0) continue;
        int status = 0;
        const pid_t r = ::waitpid(pids_[i], &status, WNOHANG);
        if (r == pids_[i]) {
          codes_[i] = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
          pids_[i] = 0;
          --left;
          reaped = true;
        }
      }
      if (left == 0) break;
      if (Clock::now() >= deadline) {
        kill_all();
        return false;
      }
      if (!reaped) std::this_thread::sleep_for(2ms);
    }
    return true;
  }

  const std::vector<int>& exit_codes() const { return codes_; }

 private:
  void kill_all() {
    for (std::size_t i = 0; i < pids_.size(); ++i) {
      if (pids_[i] <= 0) continue;
      ::kill(pids_[i], SIGKILL);
      int status = 0;
      ::waitpid(pids_[i], &status, 0);
      codes_[i] = -1;
      pids_[i] = 0;
    }
  }
  std::vector<pid_t> pids_;
  std::vector<int> codes_;
};

Segment open_ring(const std::string& name, RingKind kind) {
  OpenOptions o;
  o.kind = kind;
  return Segment::open(name, o);
}

std::string describe(const msg::Header& h) {
  return "(producer " + std::to_string(h.producer) + ", seq " + std::to_string(h.seq) + ")";
}

// One consumer's checks: integrity, order per producer, exactly once.
class Checker {
 public:
  Checker(Verification& v, ChildResult& r, std::uint32_t producers, std::uint64_t per_producer,
          std::size_t max_payload)
      : v_(v),
        r_(r),
        producers_(producers),
        per_producer_(per_producer),
        max_payload_(max_payload),
        last_(producers, kNone) {}

  bool accept(std::span<const std::byte> m) {
    msg::Header h{};
    const msg::Verdict verdict = msg::check(m, producers_, per_producer_, max_payload_, h);
    if (verdict != msg::Verdict::ok) {
      note(r_, "message of " + std::to_string(m.size()) + " bytes: " + msg::to_string(verdict));
      return false;
    }
    if (last_[h.producer] != kNone && h.seq <= last_[h.producer]) {
      note(r_, describe(h) + " arrived after seq " + std::to_string(last_[h.producer]));
      return false;
    }
    last_[h.producer] = h.seq;
    if (!v_.mark(h.producer * per_producer_ + h.seq)) {
      note(r_, describe(h) + " delivered twice");
      return false;
    }
    ++r_.messages;
    return true;
  }
  // SPSC: the one producer's messages must come with no gap.
  bool expect_next(std::span<const std::byte> m, std::uint64_t expected) {
    const msg::Header h = msg::header_of(m);
    if (m.size() >= msg::kHeaderSize && h.seq != expected) {
      note(r_, "expected seq " + std::to_string(expected) + ", got " + std::to_string(h.seq));
      return false;
    }
    return accept(m);
  }

 private:
  static constexpr std::uint64_t kNone = ~std::uint64_t{0};
  Verification& v_;
  ChildResult& r_;
  std::uint32_t producers_;
  std::uint64_t per_producer_;
  std::size_t max_payload_;
  std::vector<std::uint64_t> last_;
};

// What every test here sets up: a fresh ring under a unique name, the
// verification mapping for `messages` messages, and the children. The clock
// of the throughput line starts when it is made.
class IpcRun {
 public:
  IpcRun(RingKind kind, std::uint64_t capacity, std::uint64_t messages)
      : kind_(kind), seg_(make_ring(shm_.name(), kind, capacity, kSlot)), v_(messages) {}

  // Runs body(handle, result) -> exit code as child `child` (its result
  // slot), in a new process that opens the ring by name and attaches a
  // `Handle` to it; open or attach throwing ends the child with kException.
  template <class Handle, class Body>
  void spawn(int child, Body&& body) {
    children_.spawn([&] {
      ChildResult& r = v_.result(child);
      Segment s = open_ring(shm_.name(), kind_);
      Handle handle = Handle::attach(s);
      return body(handle, r);
    });
  }

  // Parent side: children all exited 0, reported no error, and every message
  // was delivered exactly once.
  void verify(int child_count, const char* what) {
    const bool in_time = children_.wait_all(kChildrenDeadline);
    const double s = std::chrono::duration<double>(Clock::now() - start_).count();
    std::printf("[ ipc      ] %s: %llu messages in %.3f s (%.2f M msg/s)\n", what,
                static_cast<unsigned long long>(v_.messages()), s,
                static_cast<double>(v_.messages()) / s / 1e6);
    EXPECT_TRUE(in_time) << "children overran the " << kChildrenDeadline.count()
                         << " s deadline and were killed";
    for (int i = 0; i < child_count; ++i) {
      const ChildResult& r = v_.result(i);
      EXPECT_EQ(children_.exit_codes()[static_cast<std::size_t>(i)], 0) << "child " << i;
      EXPECT_EQ(r.errors, 0u) << "child " << i << ": " << r.first_error;
    }
    std::uint64_t missing = 0, duplicated = 0;
    std::string first;
    for (std::uint64_t i = 0; i < v_.messages(); ++i) {
      const unsigned n = v_.seen(i);
      if (n == 1) continue;
      (n == 0 ? missing : duplicated) += 1;
      if (first.empty())
        first = "message " + std::to_string(i) + " seen " + std::to_string(n) + " times";
    }
    EXPECT_EQ(missing, 0u) << first;
    EXPECT_EQ(duplicated, 0u) << first;
  }

  const Segment& segment() const noexcept { return seg_; }
  Verification& verification() noexcept { return v_; }

 private:
  test::UniqueShm shm_;
  RingKind kind_;
  Segment seg_;
  Verification v_;
  Children children_;
  Clock::time_point start_ = Clock::now();
};

// A producer child's batches: claims of 1 to max_batch slots, filled in order
// with messages 0 .. total - 1 of `producer`. shorten(count) says how many of
// a claim's `count` slots to use; the commit drops (SPSC) or skips (MPMC) the
// rest, and 0 aborts the claim. Returns the child's exit code.
template <class Producer, class Shorten>
int produce_batches(Producer& tx, ChildResult& r, std::uint32_t producer, std::uint64_t total,
                    std::size_t max_batch, std::mt19937_64& rng, Shorten&& shorten) {
  std::uint64_t seq = 0;
  while (seq < total) {
    WriteClaim claim = tx.claim(1 + rng() % max_batch, kBlockingTimeout);
    if (claim.empty()) {
      note(r, std::string("claim: ") + to_string(claim.status()));
      return kWaitFailed;
    }
    const std::size_t count = std::min<std::size_t>(shorten(claim.size()), total - seq);
    for (std::size_t i = 0; i < count; ++i) {
      const std::size_t n = msg::write(claim[i], producer, seq + i, kMaxPayload);
      if (claim.set_size(i, n) != Status::ok) {
        note(r, "set_size refused");
        return kBadMessage;
      }
    }
    if (count == 0) {
      claim.abort();
    } else {
      claim.commit_batch(count);
    }
    seq += count;
    r.messages = seq;
  }
  return kOk;
}

// ===========================================================================
// SPSC: one producer process, one consumer process
// ===========================================================================

TEST(IpcSpsc, CopyApiProducerProcessToConsumerProcess) {
  const std::uint64_t total = msg::scaled(6'000'000, 6);
  IpcRun run(RingKind::spsc, 1024, total);
  Verification& v = run.verification();

  run.spawn<SpscProducer>(0, [&](SpscProducer& tx, ChildResult& r) {
    std::array<std::byte, kSlot> buf{};
    for (std::uint64_t seq = 0; seq < total; ++seq) {
      const std::size_t n = msg::write(buf, 0, seq, kMaxPayload);
      if (const Status st = tx.push({buf.data(), n}, kBlockingTimeout); st != Status::ok) {
        note(r, "push of seq " + std::to_string(seq) + ": " + to_string(st));
        return kWaitFailed;
      }
      ++r.messages;
    }
    return kOk;
  });
  run.spawn<SpscConsumer>(1, [&](SpscConsumer& rx, ChildResult& r) {
    Checker check(v, r, 1, total, kMaxPayload);
    std::array<std::byte, kSlot> buf{};
    for (std::uint64_t seq = 0; seq < total; ++seq) {
      std::size_t size = 0;
      if (const Status st = rx.pop(buf, size, kBlockingTimeout); st != Status::ok) {
        note(r, "pop of seq " + std::to_string(seq) + ": " + to_string(st));
        return kWaitFailed;
      }
      if (!check.expect_next({buf.data(), size}, seq)) return kBadMessage;
    }
    // The producer may have gone already: its end closed the stream.
    std::size_t size = 0;
    if (const Status st = rx.try_pop(buf, size);
        st != Status::would_block && st != Status::closed) {
      note(r, "a message beyond the last one");
      return kBadMessage;
    }
    return kOk;
  });
  run.verify(2, "spsc copy, 1 producer process -> 1 consumer process");
  EXPECT_EQ(v.result(0).messages, total);
  EXPECT_EQ(v.result(1).messages, total);
}

TEST(IpcSpsc, BatchClaimPeekAcrossProcesses) {
  constexpr std::uint64_t kCapacity = 256;
  constexpr std::size_t kMaxBatch = 64;
  const std::uint64_t total = msg::scaled(6'000'000, 6);
  IpcRun run(RingKind::spsc, kCapacity, total);
  Verification& v = run.verification();

  run.spawn<SpscProducer>(0, [&](SpscProducer& tx, ChildResult& r) {
    std::mt19937_64 rng(11);
    return produce_batches(tx, r, 0, total, kMaxBatch, rng, [&](std::size_t count) {
      if (count > 1 && rng() % 4 == 0) count = 1 + rng() % (count - 1);  // drop a tail
      return count;
    });
  });
  run.spawn<SpscConsumer>(1, [&](SpscConsumer& rx, ChildResult& r) {
    Checker check(v, r, 1, total, kMaxPayload);
    std::mt19937_64 rng(12);
    std::uint64_t seq = 0;
    while (seq < total) {
      ReadClaim claim = rx.peek(1 + rng() % kMaxBatch, kBlockingTimeout);
      if (claim.empty()) {
        note(r, "peek at seq " + std::to_string(seq) + ": " + to_string(claim.status()));
        return kWaitFailed;
      }
      for (std::size_t i = 0; i < claim.size(); ++i) {
        if (!check.expect_next(claim[i], seq++)) return kBadMessage;
      }
      claim.release();
    }
    return kOk;
  });
  run.verify(2, "spsc batch, 1 producer process -> 1 consumer process");
  EXPECT_EQ(v.result(0).messages, total);
  EXPECT_EQ(v.result(1).messages, total);
}

// ===========================================================================
// MPMC: three producer processes, three consumer processes
// ===========================================================================

constexpr std::uint32_t kProducers = 3;
constexpr int kConsumers = 3;

// Consumers stop on a "stop" message: a valid message of producer
// kProducers, which the last producer to finish sends once per consumer.
bool is_stop(std::span<const std::byte> m) {
  msg::Header h{};
  return msg::check(m, kProducers + 1, kConsumers, kMaxPayload, h) == msg::Verdict::ok &&
         h.producer == kProducers;
}

// The messages the consumer children took, all together.
std::uint64_t consumed(Verification& v) {
  std::uint64_t n = 0;
  for (int c = 0; c < kConsumers; ++c) n += v.result(static_cast<int>(kProducers) + c).messages;
  return n;
}

TEST(IpcMpmc, CopyApiThreeByThreeProcesses) {
  const std::uint64_t per_producer = msg::scaled(1'000'000, 6);
  IpcRun run(RingKind::mpmc, 1024, kProducers * per_producer);
  Verification& v = run.verification();

  for (std::uint32_t p = 0; p < kProducers; ++p) {
    run.spawn<MpmcProducer>(static_cast<int>(p), [&, p](MpmcProducer& tx, ChildResult& r) {
      std::array<std::byte, kSlot> buf{};
      for (std::uint64_t seq = 0; seq < per_producer; ++seq) {
        const std::size_t n = msg::write(buf, p, seq, kMaxPayload);
        if (const Status st = tx.push({buf.data(), n}, kBlockingTimeout); st != Status::ok) {
          note(r, "push: " + std::string(to_string(st)));
          return kWaitFailed;
        }
        ++r.messages;
      }
      // The last producer out stops the consumers: its stops come after
      // every message of every producer.
      if (atomic::fetch_add(v.producers_done(), std::uint32_t{1}) + 1 == kProducers) {
        for (int c = 0; c < kConsumers; ++c) {
          const std::size_t n =
              msg::write(buf, kProducers, static_cast<std::uint64_t>(c), kMaxPayload);
          if (tx.push({buf.data(), n}, kBlockingTimeout) != Status::ok) {
            note(r, "push of a stop message timed out");
            return kWaitFailed;
          }
        }
      }
      return kOk;
    });
  }
  for (int c = 0; c < kConsumers; ++c) {
    run.spawn<MpmcConsumer>(
        static_cast<int>(kProducers) + c, [&](MpmcConsumer& rx, ChildResult& r) {
          Checker check(v, r, kProducers, per_producer, kMaxPayload);
          std::array<std::byte, kSlot> buf{};
          for (;;) {
            std::size_t size = 0;
            if (const Status st = rx.pop(buf, size, kBlockingTimeout); st != Status::ok) {
              note(r, "pop after " + std::to_string(r.messages) + " messages: " + to_string(st));
              return kWaitFailed;
            }
            if (is_stop({buf.data(), size})) return kOk;
            if (!check.accept({buf.data(), size})) return kBadMessage;
          }
        });
  }
  run.verify(kProducers + kConsumers, "mpmc copy, 3 producer x 3 consumer processes");
  EXPECT_EQ(consumed(v), kProducers * per_producer);
}

TEST(IpcMpmc, BatchClaimPeekThreeByThreeProcesses) {
  constexpr std::uint64_t kCapacity = 256;
  constexpr std::size_t kMaxBatch = 16;
  const std::uint64_t per_producer = msg::scaled(1'000'000, 6);
  const std::uint64_t total = kProducers * per_producer;
  IpcRun run(RingKind::mpmc, kCapacity, total);
  Verification& v = run.verification();

  for (std::uint32_t p = 0; p < kProducers; ++p) {
    run.spawn<MpmcProducer>(static_cast<int>(p), [&, p](MpmcProducer& tx, ChildResult& r) {
      std::mt19937_64 rng(300 + p);
      return produce_batches(tx, r, p, per_producer, kMaxBatch, rng, [&](std::size_t count) {
        if (rng() % 16 == 0)
          count = 0;  // abort: every slot skipped
        else if (count > 1 && rng() % 4 == 0)
          count = 1 + rng() % (count - 1);  // skip a tail
        return count;
      });
    });
  }
  for (int c = 0; c < kConsumers; ++c) {
    run.spawn<MpmcConsumer>(
        static_cast<int>(kProducers) + c, [&, c](MpmcConsumer& rx, ChildResult& r) {
          Checker check(v, r, kProducers, per_producer, kMaxPayload);
          std::mt19937_64 rng(400 + c);
          // Stops when all messages are delivered; short timed peeks re-check
          // that, and a consumer that sees nothing for kBlockingTimeout fails.
          auto idle_since = Clock::now();
          while (atomic::load_acquire(v.delivered()) < total) {
            ReadClaim claim = rx.peek(1 + rng() % kMaxBatch, 20ms);
            if (claim.empty()) {
              // closed: the last producer left, and the others' peeks hold
              // what is still undelivered.
              if (claim.status() != Status::timeout && claim.status() != Status::closed) {
                note(r, std::string("peek: ") + to_string(claim.status()));
                return kWaitFailed;
              }
              if (Clock::now() - idle_since > kBlockingTimeout) {
                note(r, "no message for 5 s with " +
                            std::to_string(total - atomic::load_acquire(v.delivered())) +
                            " still undelivered");
                return kWaitFailed;
              }
              continue;
            }
            idle_since = Clock::now();
            for (std::size_t i = 0; i < claim.size(); ++i) {
              if (!check.accept(claim[i])) return kBadMessage;
            }
            const std::uint64_t n = claim.size();
            claim.release();
            atomic::fetch_add(v.delivered(), n);
          }
          return kOk;
        });
  }
  run.verify(kProducers + kConsumers, "mpmc batch, 3 producer x 3 consumer processes");
  EXPECT_EQ(consumed(v), total);
  MpmcConsumer rx = MpmcConsumer::attach(run.segment());
  EXPECT_TRUE(rx.try_peek(kMaxBatch).empty()) << "a skipped slot or extra message was left";
}

}  // namespace
}  // namespace shmring
