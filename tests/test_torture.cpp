// kill -9 torture: producer and consumer processes of one ring (SPSC, MPMC,
// broadcast) are killed (SIGKILL) at random points, over and over, and
// restarted; the restarted ones take the roles over from the dead and
// continue from the positions in the segment. At the end every message is
// accounted for. (The broadcast section below says what it checks.)
//
// What "committed" and "delivered" mean here, and what the library promises:
//
//   committed  commit() (commit_batch()) returned in the producer. From then
//              on the message belongs to the ring: a producer killed right
//              after, even before its head store, has it delivered all the
//              same (its successor resumes after it, never over it). A claim
//              not committed when the producer dies is dropped; its position
//              is written again by the successor.
//   released   release() returned in the consumer: the position is handed
//              back and is never delivered again.
//   delivered  a consumer read the message in place. Between reading and
//              releasing, a consumer killed leaves the message to its
//              successor, which reads it again: the ring delivers
//              at-least-once, repeating at most one peek's worth of messages
//              per consumer death. A consumer gets exactly-once processing
//              by keeping its own progress: each message carries its
//              position, and a consumer records the position it has
//              processed up to (one store, after the effect) and skips
//              anything below it on restart. That is what the consumers here
//              do, and what is checked.
//
// Invariants checked for every position from 0 to the producer's final one:
// delivered (read) at least once; processed exactly once, in order, with no
// gap; the content is the one its last committing producer wrote (position,
// incarnation, length and checksum: nothing half-written or torn); a message
// a producer recorded as committed is never replaced by a later producer's;
// repeats only within the unreleased window of a killed consumer; no wait
// overran its deadline by more than the scheduling slack; no process that
// was not killed died or reported an error.
//
// Scale: SHMRING_TORTURE_KILLS kill points (default 200, the CI run; 10000
// on a bigger host), SHMRING_TORTURE_SEED for the random choices (default:
// from the clock, printed so a failure can be replayed).
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cinttypes>
#include <cstdarg>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "broadcast_support.hpp"
#include "harness/message.hpp"
#include "harness/processes.hpp"
#include "shmring/atomic.hpp"
#include "shmring/broadcast_ring.hpp"
#include "shmring/error.hpp"
#include "shmring/mpmc_ring.hpp"
#include "shmring/segment.hpp"
#include "shmring/spsc_ring.hpp"
#include "test_support.hpp"

namespace shmring {
namespace {

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

std::uint64_t env_u64(const char* name, std::uint64_t fallback) {
  const char* v = std::getenv(name);
  if (v == nullptr || *v == '\0') return fallback;
  char* end = nullptr;
  const unsigned long long n = std::strtoull(v, &end, 10);
  if (end == v || *end != '\0') {
    ADD_FAILURE() << name << "=" << v << " is not a non-negative integer";
    return fallback;
  }
  return n;
}

// ---- messages -------------------------------------------------------------

// A message is the harness's, tagged (incarnation of the producer that wrote
// it, position), with a length that is a function of its position.
constexpr std::uint64_t kSlotSize = 200;
constexpr std::uint64_t kCapacity = 64;
constexpr std::size_t kMaxBatch = 16;

std::uint64_t mix(std::uint64_t x) {
  x ^= x >> 33;
  x *= 0xff51afd7ed558ccdull;
  x ^= x >> 33;
  x *= 0xc4ceb9fe1a85ec53ull;
  x ^= x >> 33;
  return x;
}

std::size_t length_for(std::uint64_t position) {
  return harness::kStampBytes + mix(position) % (kSlotSize - harness::kStampBytes + 1);
}

void write_message(std::span<std::byte> slot, std::uint64_t position, std::uint32_t incarnation) {
  harness::fill_message(slot.first(length_for(position)), harness::make_tag(incarnation, position));
}

// The position a message says it has.
std::uint64_t position_of(std::span<const std::byte> m) {
  return harness::tag_sequence(harness::message_tag(m));
}

// Checks a message read at `position`; returns its incarnation, or 0 (and
// describes the problem in `why`) if it is not intact.
std::uint32_t check_message(std::span<const std::byte> m, std::uint64_t position, char* why,
                            std::size_t why_size) {
  const std::uint64_t tag = harness::message_tag(m);
  const auto incarnation = static_cast<std::uint32_t>(harness::tag_sender(tag));
  const harness::Verdict v =
      harness::verify_message(m, length_for(position), harness::make_tag(incarnation, position));
  if (v == harness::Verdict::ok && incarnation != 0) return incarnation;
  std::snprintf(
      why, why_size,
      "position %" PRIu64 ": %zu bytes (expected %zu), message says position %" PRIu64
      ", incarnation %u: %s",
      position, m.size(), length_for(position), harness::tag_sequence(tag), incarnation,
      v == harness::Verdict::ok ? "no producer has incarnation 0" : harness::to_string(v));
  return 0;
}

// ---- the ledger: what the processes record, in memory shared with the parent --

struct Ledger {
  // Consumer side. `processed_upto` is the consumer's own progress: the next
  // position to process; storing it is what "processed" means.
  std::atomic<std::uint64_t> processed_upto{0};
  std::atomic<std::uint64_t> reads{0};    // messages read, repeats included
  std::atomic<std::uint64_t> repeats{0};  // reads of a position already processed
  std::atomic<std::uint64_t> max_repeat_run{0};
  // Producer side.
  std::atomic<std::uint32_t> stop{0};            // parent: finish now
  std::atomic<std::uint64_t> final_position{0};  // producer: its head when it stopped
  std::atomic<std::uint32_t> producer_done{0};
  std::atomic<std::uint64_t> drain_to{~0ull};  // parent: consumer leaves at this position
  // Waits.
  std::atomic<std::uint64_t> waits{0};
  std::atomic<std::uint64_t> max_overrun_ns{0};
  // MPMC: slots producers gave up on purpose (abort, or the unused tail of a
  // claim), as recorded after the commit.
  std::atomic<std::uint64_t> aborted{0};
  // Broadcast: what each subscriber seat's processes did (survivors first).
  struct Seat {
    std::atomic<std::uint64_t> next{0};       // survivor: the next position it processes
    std::atomic<std::uint32_t> joined{0};     // survivor: attached
    std::atomic<std::uint64_t> reads{0};      // messages read and checked
    std::atomic<std::uint64_t> skipped{0};    // lossy: positions passed over
    std::atomic<std::uint64_t> laps{0};       // lossy: laps reported
    std::atomic<std::uint64_t> discarded{0};  // lossy: peeked, then found rewritten
    std::atomic<std::uint64_t> joins{0};      // churner: attaches, first and again
  };
  static constexpr int kMaxSeats = 8;
  Seat seats[kMaxSeats];
  // Failures reported by a process (the first one's text is kept).
  std::atomic<std::uint64_t> errors{0};
  char first_error[512];
  std::atomic<std::uint32_t> error_claimed{0};

  void error(const char* text) {
    if (errors.fetch_add(1) == 0 && error_claimed.exchange(1) == 0) {
      std::snprintf(first_error, sizeof first_error, "%s", text);
    }
  }
  void note_max(std::atomic<std::uint64_t>& m, std::uint64_t v) {
    std::uint64_t cur = m.load();
    while (v > cur && !m.compare_exchange_weak(cur, v)) {
    }
  }
};

// Ledger plus per-position records (`columns` of them, at least the three
// below), in one MAP_SHARED anonymous mapping that forked children inherit.
// Pages are touched only as positions are used.
class SharedLedger {
 public:
  explicit SharedLedger(std::uint64_t positions, int columns = 3)
      : positions_(positions), columns_(std::max(columns, 3)) {
    bytes_ =
        sizeof(Ledger) + static_cast<std::uint64_t>(columns_) * positions * sizeof(std::uint32_t);
    void* p = ::mmap(nullptr, bytes_, PROT_READ | PROT_WRITE,
                     MAP_SHARED | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (p == MAP_FAILED) {
      ADD_FAILURE() << "cannot map the ledger: " << std::strerror(errno);
      return;
    }
    base_ = static_cast<std::byte*>(p);
    new (base_) Ledger();
  }
  ~SharedLedger() {
    if (base_ != nullptr) ::munmap(base_, bytes_);
  }
  SharedLedger(const SharedLedger&) = delete;
  SharedLedger& operator=(const SharedLedger&) = delete;

  explicit operator bool() const { return base_ != nullptr; }
  Ledger& ledger() const { return *reinterpret_cast<Ledger*>(base_); }
  std::uint64_t positions() const { return positions_; }
  // Incarnation of the producer that recorded committing the position (0: none did).
  std::atomic_ref<std::uint32_t> committed_by(std::uint64_t p) const { return at(0, p); }
  // Incarnation found in the message when it was processed.
  std::atomic_ref<std::uint32_t> processed_from(std::uint64_t p) const { return at(1, p); }
  // Times the position was read.
  std::atomic_ref<std::uint32_t> reads(std::uint64_t p) const { return at(2, p); }
  // Column `array` (< columns) for position `p`: the three above, then the
  // test's own.
  std::atomic_ref<std::uint32_t> at(int array, std::uint64_t p) const {
    auto* a = reinterpret_cast<std::uint32_t*>(base_ + sizeof(Ledger)) +
              static_cast<std::uint64_t>(array) * positions_;
    return std::atomic_ref<std::uint32_t>(a[p]);
  }

 private:
  std::uint64_t positions_;
  int columns_;
  std::size_t bytes_ = 0;
  std::byte* base_ = nullptr;
};

constexpr auto kWait = 20ms;
// How far past its deadline a wait may return on a loaded machine before it
// counts as having overrun it.
constexpr auto kSchedulingSlack = 2s;

void note_wait(Ledger& l, Clock::time_point start) {
  l.waits.fetch_add(1, std::memory_order_relaxed);
  const auto took = Clock::now() - start;
  if (took > kWait) {
    const auto over = std::chrono::duration_cast<std::chrono::nanoseconds>(took - kWait);
    l.note_max(l.max_overrun_ns, static_cast<std::uint64_t>(over.count()));
  }
}

// ---- the processes ------------------------------------------------------------

// A producer or consumer process: its role and incarnation, which start the
// texts of the failures it reports, the ledger it reports them to, its
// segment and its random source. A failure is recorded (the parent fails the
// test on it) and ends the process.
struct Process {
  Process(const SharedLedger& ledger, const char* role_name, std::uint32_t inc, std::uint64_t seed)
      : shared(ledger), l(ledger.ledger()), role(role_name), incarnation(inc), rng(seed) {}

  const SharedLedger& shared;
  Ledger& l;
  const char* role;
  std::uint32_t incarnation;
  Segment seg;  // outlives the role attached to it
  std::mt19937_64 rng;
  // MPMC lanes: positions count within a lane, so the ledger takes position
  // p of lane `lane` at p * lanes + lane (a ring of one lane: at p).
  std::uint32_t lanes = 1;
  std::uint32_t lane = 0;

  std::uint64_t index(std::uint64_t position) const { return position * lanes + lane; }

  [[noreturn]] void die(const char* why) const {
    l.error(why);
    ::_exit(1);
  }
  // die() with the text "<role> <incarnation>: " + `format`.
  [[noreturn]] [[gnu::format(printf, 2, 3)]] void fail(const char* format, ...) const {
    char why[512];
    const int n = std::snprintf(why, sizeof why, "%s %u: ", role, incarnation);
    std::va_list args;
    va_start(args, format);
    std::vsnprintf(why + n, sizeof why - static_cast<std::size_t>(n), format, args);
    va_end(args);
    die(why);
  }

  // Opens the segment and attaches the role to it.
  template <class Role>
  Role attach(const std::string& name) {
    std::error_code ec;
    seg = Segment::open(name, OpenOptions{}, ec);
    Role r = seg ? Role::attach(seg, WaitPolicy{}, ec) : Role();
    if (ec) fail("attach failed: %s", last_error_message().c_str());
    lanes = seg.geometry().lane_count();
    return r;
  }

  // Runs `call`, a claim or peek of up to kWait (the operation `what`). A
  // timeout is noted and its empty claim returned: the caller tries again.
  template <class Call>
  auto wait(const char* what, Call&& call) const {
    const auto start = Clock::now();
    auto c = call();
    if (c.empty()) retry_later(what, c.status(), start);
    return c;
  }

  // The one way every wait that came back with nothing goes on, `s` saying
  // why. A timeout is noted. A killed peer is replaced by the next
  // incarnation, so peer_dead (and closed, from an incarnation that
  // finished) mean "not now" here; they return at once, so the caller
  // pauses a moment before trying again instead of spinning. Anything else
  // is a failure.
  void retry_later(const char* what, Status s, Clock::time_point start) const {
    if (s == Status::peer_dead || s == Status::closed) {
      std::this_thread::sleep_for(1ms);
    } else if (s != Status::timeout) {
      fail("%s failed: %s", what, to_string(s));
    }
    note_wait(l, start);
  }

  // A producer at `position`, before it writes: told to stop, it records
  // its head and leaves; with the ledger full (`limit`) it idles a moment
  // and says so (true: nothing to write this time round).
  bool producer_idles(std::uint64_t position, std::uint64_t limit) const {
    if (l.stop.load() != 0) {
      l.final_position.store(position);
      l.producer_done.store(1);
      ::_exit(0);
    }
    if (position < limit) return false;
    std::this_thread::sleep_for(1ms);
    return true;
  }

  // Writes the first `keep` messages of `c` and commits them (MPMC gives the
  // rest of the claim up), then records them as committed. `words`: through
  // store_words(), as the slots of a lossy broadcast ring are written (its
  // subscribers may be reading them meanwhile).
  void commit(WriteClaim& c, std::size_t keep, bool words = false) const {
    for (std::size_t i = 0; i < keep; ++i) {
      const std::uint64_t p = index(c.position(i));
      if (words) {
        std::byte message[kSlotSize];
        write_message(message, p, incarnation);
        store_words(c[i].data(), message, length_for(p));
      } else {
        write_message(c[i], p, incarnation);
      }
      (void)c.set_size(i, length_for(p));
    }
    const std::uint64_t first = c.position(0);
    c.commit_batch(keep);
    // Recorded after the commit: a kill in between leaves a committed
    // message unrecorded, never the reverse.
    for (std::size_t i = 0; i < keep; ++i) shared.committed_by(index(first + i)).store(incarnation);
  }

  // The position of message `i` of `c`, counted as read; one beyond the
  // ledger is a failure.
  std::uint64_t read_position(const ReadClaim& c, std::size_t i) const {
    const std::uint64_t p = index(c.position(i));
    if (p >= shared.positions()) fail("position %" PRIu64 " beyond the ledger", p);
    l.reads.fetch_add(1, std::memory_order_relaxed);
    return p;
  }

  // The incarnation that wrote `m`, read at `p`; a message not intact is a
  // failure.
  std::uint32_t check(std::span<const std::byte> m, std::uint64_t p) const {
    char why[512];
    const std::uint32_t from = check_message(m, p, why, sizeof why);
    if (from == 0) die(why);
    return from;
  }
};

[[noreturn]] void producer_process(const std::string& name, const SharedLedger& shared,
                                   std::uint32_t incarnation, std::uint64_t seed) {
  Process me(shared, "producer", incarnation, seed);
  SpscProducer tx = me.attach<SpscProducer>(name);
  // Leave room for a batch below the ledger's end.
  const std::uint64_t limit = shared.positions() - kMaxBatch;
  for (;;) {
    if (me.producer_idles(tx.position(), limit)) continue;
    const std::size_t want = 1 + me.rng() % kMaxBatch;
    WriteClaim c = me.wait("claim", [&] { return tx.claim(want, kWait); });
    if (!c.empty()) me.commit(c, c.size());
  }
}

[[noreturn]] void consumer_process(const std::string& name, const SharedLedger& shared,
                                   std::uint32_t incarnation, std::uint64_t seed) {
  Process me(shared, "consumer", incarnation, seed);
  Ledger& l = me.l;
  SpscConsumer rx = me.attach<SpscConsumer>(name);
  std::uint64_t repeat_run = 0;
  for (;;) {
    const std::uint64_t done = l.processed_upto.load();
    if (done >= l.drain_to.load()) ::_exit(0);
    ReadClaim c = me.wait("peek", [&] { return rx.peek(1 + me.rng() % kMaxBatch, kWait); });
    if (c.empty()) continue;
    for (std::size_t i = 0; i < c.size(); ++i) {
      const std::uint64_t p = me.read_position(c, i);
      shared.reads(p).fetch_add(1, std::memory_order_relaxed);
      const std::uint32_t from = me.check(c[i], p);
      const std::uint64_t next = l.processed_upto.load();
      if (p < next) {  // processed before a predecessor died unreleased
        l.repeats.fetch_add(1, std::memory_order_relaxed);
        l.note_max(l.max_repeat_run, ++repeat_run);
        continue;
      }
      if (p > next) {
        me.fail("read position %" PRIu64 " while %" PRIu64 " was never processed (a message lost)",
                p, next);
      }
      repeat_run = 0;
      shared.processed_from(p).store(from);
      l.processed_upto.store(p + 1);  // processed: exactly once
    }
    c.release();
  }
}

// ---- the parent -------------------------------------------------------------------

struct Child {
  pid_t pid = -1;
  std::uint32_t incarnation = 0;
};

// Starts `body` (which never returns) in a child that dies with the test.
template <class Body>
Child spawn(std::uint32_t incarnation, Body&& body) {
  return Child{harness::fork_child([&] {
                 body();
                 return 0;
               }),
               incarnation};
}

// Kills and reaps `c`; false (and a test failure) if it had died on its own.
bool kill_and_reap(const Child& c, const char* role) {
  const int status = harness::kill_and_reap(c.pid);
  if (harness::killed_by(status, SIGKILL)) return true;
  ADD_FAILURE() << role << " " << c.incarnation << " died on its own before its kill ("
                << harness::describe_exit(status) << ")";
  return false;
}

// Waits up to `limit` for `c` to exit; its exit status, or -1 (it is then
// killed) if it did not.
int wait_exit(const Child& c, std::chrono::seconds limit) {
  const harness::Reaped r = harness::reap_within(c.pid, limit);
  return !r.killed && WIFEXITED(r.status) ? WEXITSTATUS(r.status) : -1;
}

using ProcessMain = void (*)(const std::string& name, const SharedLedger& shared,
                             std::uint32_t incarnation, std::uint64_t seed);

// The seed of a torture run (SHMRING_TORTURE_SEED, default from the clock),
// printed with the scale before anything runs, so that a failure can be
// replayed. `label` starts the line ("torture spsc: ...").
std::uint64_t announce_seed(const char* label, std::uint64_t kill_points) {
  const std::uint64_t seed = env_u64(
      "SHMRING_TORTURE_SEED", static_cast<std::uint64_t>(Clock::now().time_since_epoch().count()));
  std::printf("torture %s: %" PRIu64 " kill points, seed %" PRIu64
              " (SHMRING_TORTURE_SEED replays it)\n",
              label, kill_points, seed);
  return seed;
}

// Enough positions for the producers never to run out between kills.
std::uint64_t ledger_positions(std::uint64_t kill_points) {
  return std::min<std::uint64_t>(std::max<std::uint64_t>(kill_points, 50) * 40'000,
                                 std::uint64_t{1} << 28);
}

// The parent's side of a torture test, the same for SPSC and MPMC: the scale
// and the seed, the ledger, the ring, and the kill rounds. The test picks
// whom a round kills, then finishes and checks the ledger.
class Torture {
 public:
  // `label` names the ring in the line announce_seed() prints.
  Torture(const char* label, RingKind kind, ProcessMain producer, ProcessMain consumer)
      : Torture(label, ring_options(kind), producer, consumer) {}
  // A ring made with `options`; `columns` per-position records in the ledger.
  Torture(const char* label, const CreateOptions& options, ProcessMain producer,
          ProcessMain consumer, int columns = 3)
      : kills(env_u64("SHMRING_TORTURE_KILLS", 200)),
        seed(announce_seed(label, kills)),
        shared(ledger_positions(kills), columns),
        rng(seed),
        producer_(producer),
        consumer_(consumer) {
    seg = Segment::create(shm.name(), options);
    name = shm.name();
  }

  static CreateOptions ring_options(RingKind kind) {
    CreateOptions o;
    o.kind = kind;
    o.capacity = kCapacity;
    o.slot_size = kSlotSize;
    return o;
  }

  Ledger& ledger() const { return shared.ledger(); }

  // Starts the next incarnation of a producer or a consumer, with a seed of
  // its own.
  Child start(bool producer) {
    const ProcessMain process = producer ? producer_ : consumer_;
    return start_process(
        [&, process](std::uint32_t inc, std::uint64_t s) { process(name, shared, inc, s); });
  }
  // The same for any process: `main(incarnation, seed)`, which never returns.
  template <class Main>
  Child start_process(Main&& main) {
    const std::uint32_t inc = next_incarnation_++;
    // Messages carry the incarnation in their tag's sender bits.
    if (inc > harness::kMaxSender) ADD_FAILURE() << "more incarnations than a tag holds";
    const std::uint64_t s = rng();
    return spawn(inc, [&main, inc, s] { main(inc, s); });
  }

  // Runs kill rounds until `kills` kill points (each SIGKILL is one) are done or
  // a process has reported an error. A round waits a random while (so the
  // kill lands anywhere from during attach to deep into the loop), then
  // `round` kills whom it picks with kill_and_restart(); false ends the
  // rounds. Returns the seconds they took.
  template <class Round>
  double kill_rounds(Round&& round) {
    const auto t0 = Clock::now();
    while (producer_kills + consumer_kills < kills && ledger().errors.load() == 0) {
      ++rounds;
      std::this_thread::sleep_for(std::chrono::microseconds(rng() % 3000));
      if (!round()) break;
    }
    return std::chrono::duration<double>(Clock::now() - t0).count();
  }

  // Kills `c`, counts the kill and starts a successor in its place. False
  // (and a test failure) if `c` had died on its own; the successor is
  // started all the same, so the finish has a live process to wait for.
  bool kill_and_restart(Child& c, bool producer) {
    const bool ok = kill_and_reap(c, producer ? "producer" : "consumer");
    ++(producer ? producer_kills : consumer_kills);
    c = start(producer);
    return ok;
  }

  // Calls `is_bad(by, from, reads)` for every position below `total`, with
  // the producer that recorded committing it (0: none), the one it was
  // processed from (0: none) and the times it was read. A position it finds
  // bad fails the test; only the first five are described, `from_what`
  // wording the second (so that a broken run stays readable). Returns how
  // many were bad.
  template <class IsBad>
  std::uint64_t check_positions(std::uint64_t total, const char* from_what, IsBad&& is_bad) const {
    return check_positions(total, from_what, is_bad, [](std::uint64_t) { return true; });
  }
  // The same over the positions of [0, total) that `claimed(p)` says were.
  template <class IsBad, class Claimed>
  std::uint64_t check_positions(std::uint64_t total, const char* from_what, IsBad&& is_bad,
                                Claimed&& claimed) const {
    std::uint64_t bad = 0;
    for (std::uint64_t p = 0; p < total; ++p) {
      if (!claimed(p)) continue;
      const std::uint32_t by = shared.committed_by(p).load();
      const std::uint32_t from = shared.processed_from(p).load();
      const std::uint32_t reads = shared.reads(p).load();
      if (is_bad(by, from, reads) && ++bad <= 5) {
        ADD_FAILURE() << "position " << p << ": read " << reads << " time(s), " << from_what
                      << " producer " << from << ", committed by producer " << by;
      }
    }
    return bad;
  }

  // No wait overran its deadline by more than the scheduling slack.
  void check_waits() const {
    EXPECT_LT(std::chrono::nanoseconds(ledger().max_overrun_ns.load()), kSchedulingSlack)
        << "a wait returned long after its deadline";
  }

  const std::uint64_t kills;
  const std::uint64_t seed;
  SharedLedger shared;
  test::UniqueShm shm;
  Segment seg;
  std::string name;
  std::mt19937_64 rng;  // the parent's choices; each process is seeded from it
  std::uint64_t producer_kills = 0;
  std::uint64_t consumer_kills = 0;
  std::uint64_t rounds = 0;

 private:
  ProcessMain producer_;
  ProcessMain consumer_;
  std::uint32_t next_incarnation_ = 1;
};

TEST(TortureSpsc, KillMinus9AtRandomPoints) {
  Torture t("spsc", RingKind::spsc, producer_process, consumer_process);
  ASSERT_TRUE(t.shared);
  Ledger& l = t.ledger();
  Child producer = t.start(true);
  Child consumer = t.start(false);

  // A round kills one process or both.
  const double kill_secs = t.kill_rounds([&] {
    // 0-2: the producer, 3-5: the consumer, 6-7: both.
    const unsigned who = static_cast<unsigned>(t.rng() % 8);
    if ((who <= 2 || who >= 6) && !t.kill_and_restart(producer, true)) return false;
    if (who >= 3 && !t.kill_and_restart(consumer, false)) return false;
    return true;
  });
  const std::uint64_t producer_kills = t.producer_kills;
  const std::uint64_t consumer_kills = t.consumer_kills;

  // Finish: the producer stops where it is, the consumer drains up to there.
  l.stop.store(1);
  EXPECT_EQ(wait_exit(producer, 60s), 0) << "the last producer did not finish";
  ASSERT_EQ(l.producer_done.load(), 1u);
  const std::uint64_t total = l.final_position.load();
  l.drain_to.store(total);
  EXPECT_EQ(wait_exit(consumer, 60s), 0) << "the last consumer did not drain the ring";
  ASSERT_EQ(l.errors.load(), 0u) << l.first_error;

  // Every position: read, processed exactly once from the content its
  // committing producer wrote.
  EXPECT_EQ(l.processed_upto.load(), total);
  std::uint64_t unrecorded = 0;
  const std::uint64_t bad = t.check_positions(
      total, "processed from", [&](std::uint32_t by, std::uint32_t from, std::uint32_t reads) {
        if (by == 0) ++unrecorded;
        return reads == 0 || from == 0 || (by != 0 && by != from);
      });
  EXPECT_EQ(bad, 0u);
  // Only a producer killed between its commit and its record leaves
  // commits unrecorded: at most one batch per producer kill.
  EXPECT_LE(unrecorded, producer_kills * kMaxBatch);
  // Repeats only of the unreleased peek of a killed consumer.
  EXPECT_LE(l.repeats.load(), consumer_kills * kMaxBatch);
  EXPECT_LE(l.max_repeat_run.load(), kMaxBatch);
  // Reads beyond those: a consumer killed between reading a message and
  // accounting for it, at most one per consumer kill.
  EXPECT_GE(l.reads.load(), total + l.repeats.load());
  EXPECT_LE(l.reads.load() - total - l.repeats.load(), consumer_kills);
  t.check_waits();

  std::printf("torture spsc: %" PRIu64 " kill points in %" PRIu64 " rounds (%" PRIu64
              " producers, %" PRIu64 " consumers killed) in %.1f s; %" PRIu64
              " messages committed and processed exactly once (%" PRIu64
              " committed but unrecorded by a killed producer), %" PRIu64 " reads (%" PRIu64
              " repeats after consumer deaths), %" PRIu64
              " timed waits (max overrun %.2f ms), 0 lost, 0 corrupt\n",
              producer_kills + consumer_kills, t.rounds, producer_kills, consumer_kills, kill_secs,
              total, unrecorded, l.reads.load(), l.repeats.load(), l.waits.load(),
              static_cast<double>(l.max_overrun_ns.load()) / 1e6);
  Segment::unlink(t.name);
}

// ---- MPMC --------------------------------------------------------------------
//
// Two producer and two consumer processes, killed at random. MPMC positions
// go to whichever consumer claims them, so there is no redelivery: a message
// a consumer dies holding is lost (its slot is recovered, released), and the
// promise is at-most-once for those, exactly-once for the rest. Checked: no
// position read twice; everything read is intact and is what its committing
// producer wrote; committed messages lost only to consumer deaths (at most
// one peek each); claims of dead producers recovered (skipped, counted), so
// the ring never wedges: at the end the consumers drain it to the last
// position.

constexpr int kMpmcProducers = 2;
constexpr int kMpmcConsumers = 2;

[[noreturn]] void mpmc_producer_process(const std::string& name, const SharedLedger& shared,
                                        std::uint32_t incarnation, std::uint64_t seed) {
  Process me(shared, "producer", incarnation, seed);
  Ledger& l = me.l;
  MpmcProducer tx = me.attach<MpmcProducer>(name);
  me.lane = tx.lane();
  const MpmcView view(me.seg.base(), me.seg.geometry(), me.lane);
  const std::uint64_t limit = shared.positions() - 2 * kCapacity * me.lanes;
  for (;;) {
    if (l.stop.load() != 0) ::_exit(0);
    if (me.index(atomic::load_relaxed(&view.producer()->position)) >= limit) {
      std::this_thread::sleep_for(1ms);
      continue;
    }
    const std::size_t want = 1 + me.rng() % kMaxBatch;
    WriteClaim c = me.wait("claim", [&] { return tx.claim(want, kWait); });
    if (c.empty()) continue;
    // Now and then give part of a claim up: those slots are skipped.
    const std::size_t keep = me.rng() % 16 == 0 ? me.rng() % c.size() : c.size();
    const std::size_t n = c.size();
    me.commit(c, keep);
    l.aborted.fetch_add(n - keep);
  }
}

[[noreturn]] void mpmc_consumer_process(const std::string& name, const SharedLedger& shared,
                                        std::uint32_t incarnation, std::uint64_t seed) {
  Process me(shared, "consumer", incarnation, seed);
  Ledger& l = me.l;
  MpmcConsumer rx = me.attach<MpmcConsumer>(name);
  for (;;) {
    if (rx.position() >= l.drain_to.load()) ::_exit(0);
    ReadClaim c = me.wait("peek", [&] { return rx.peek(1 + me.rng() % kMaxBatch, kWait); });
    if (c.empty()) continue;
    me.lane = rx.lane();  // the claim's lane
    for (std::size_t i = 0; i < c.size(); ++i) {
      const std::uint64_t p = me.read_position(c, i);
      const std::uint32_t from = me.check(c[i], p);
      if (shared.reads(p).fetch_add(1) != 0) me.fail("position %" PRIu64 " read twice", p);
      shared.processed_from(p).store(from);
    }
    c.release();
  }
}

// A side's counters, summed over the lanes of the ring.
std::uint64_t sum_over_lanes(const Segment& seg, bool producer, std::uint64_t SideBlock::*word) {
  std::uint64_t total = 0;
  for (std::uint32_t l = 0; l < seg.geometry().lane_count(); ++l) {
    const MpmcView v(seg.base(), seg.geometry(), l);
    total += atomic::load_seq_cst(&((producer ? *v.producer() : *v.consumer()).*word));
  }
  return total;
}

// `owned_lanes`: a ring of that many lanes, one per producer
// (kMpmcProducers), or 0 for one lane the producers share.
void mpmc_torture(std::uint32_t owned_lanes) {
  CreateOptions options = Torture::ring_options(RingKind::mpmc);
  options.lanes = owned_lanes;
  const std::uint32_t lanes = owned_lanes == 0 ? 1 : owned_lanes;
  const char* label = owned_lanes == 0 ? "mpmc" : "mpmc lanes";
  Torture t(label, options, mpmc_producer_process, mpmc_consumer_process);
  ASSERT_TRUE(t.shared);
  Ledger& l = t.ledger();
  Child producers[kMpmcProducers];
  Child consumers[kMpmcConsumers];
  for (auto& c : producers) c = t.start(true);
  for (auto& c : consumers) c = t.start(false);

  // A round kills one process.
  const double kill_secs = t.kill_rounds([&] {
    const unsigned who = static_cast<unsigned>(t.rng() % (kMpmcProducers + kMpmcConsumers));
    return who < kMpmcProducers ? t.kill_and_restart(producers[who], true)
                                : t.kill_and_restart(consumers[who - kMpmcProducers], false);
  });
  const std::uint64_t producer_kills = t.producer_kills;
  const std::uint64_t consumer_kills = t.consumer_kills;

  // Finish: stop the producers; a producer attached here recovers what dead
  // ones left claimed (in every lane), and the consumers drain to the last
  // position.
  l.stop.store(1);
  for (auto& c : producers) EXPECT_EQ(wait_exit(c, 60s), 0) << "a producer did not finish";
  const std::uint64_t total = sum_over_lanes(t.seg, true, &SideBlock::position);
  const auto dequeued = [&] { return sum_over_lanes(t.seg, false, &SideBlock::position); };
  l.drain_to.store(total);
  {
    auto rescuer = MpmcProducer::attach(t.seg);
    const auto until = Clock::now() + 60s;
    while (dequeued() < total && Clock::now() < until) {
      (void)rescuer.recover();
      std::this_thread::sleep_for(1ms);
    }
  }
  for (auto& c : consumers) EXPECT_EQ(wait_exit(c, 60s), 0) << "a consumer did not drain the ring";
  ASSERT_EQ(l.errors.load(), 0u) << l.first_error;
  ASSERT_EQ(dequeued(), total) << "the ring wedged";

  // The ledger's positions: lane k's position p at p * lanes + k, for the
  // positions each lane's counter passed.
  std::vector<std::uint64_t> enqueued(lanes);
  std::uint64_t span = 0;
  for (std::uint32_t k = 0; k < lanes; ++k) {
    enqueued[k] =
        atomic::load_seq_cst(&MpmcView(t.seg.base(), t.seg.geometry(), k).producer()->position);
    span = std::max(span, enqueued[k] * lanes);
  }
  std::uint64_t read = 0;
  std::uint64_t lost = 0;
  std::uint64_t never_committed = 0;
  std::uint64_t cut_short = 0;
  const std::uint64_t bad = t.check_positions(
      span, "from",
      [&](std::uint32_t by, std::uint32_t from, std::uint32_t reads) {
        // Read, but the reader was killed before it noted from whom: only one
        // position per consumer kill can be caught in that window.
        if (reads == 1 && from == 0) {
          ++cut_short;
          return false;
        }
        if (reads == 1) ++read;
        if (reads == 0 && by != 0) ++lost;
        if (reads == 0 && by == 0) ++never_committed;
        return reads > 1 || (reads == 1 && by != 0 && by != from);
      },
      [&](std::uint64_t p) { return p / lanes < enqueued[p % lanes]; });
  EXPECT_EQ(bad, 0u);
  // Committed messages are lost only with a consumer killed holding them.
  EXPECT_LE(lost, consumer_kills * kMaxBatch);
  EXPECT_LE(cut_short, consumer_kills);
  const std::uint64_t abandoned_writes = sum_over_lanes(t.seg, true, &SideBlock::abandoned);
  const std::uint64_t abandoned_reads = sum_over_lanes(t.seg, false, &SideBlock::abandoned);
  EXPECT_LE(abandoned_writes, producer_kills * kMaxBatch);
  // Positions never committed are the aborted ones and the recovered claims
  // of killed producers (plus aborts a killed producer had not counted yet).
  EXPECT_GE(never_committed, abandoned_writes);
  EXPECT_LE(never_committed, l.aborted.load() + abandoned_writes + producer_kills * kMaxBatch);
  t.check_waits();

  std::printf("torture %s: %" PRIu64 " kill points (%" PRIu64 " producers, %" PRIu64
              " consumers killed) in %.1f s; %" PRIu64 " positions: %" PRIu64
              " messages read exactly once, %" PRIu64
              " committed but lost with a killed "
              "consumer (%" PRIu64 " of them read as it was killed), %" PRIu64
              " never committed (%" PRIu64 " aborted, %" PRIu64
              " claims of killed producers recovered as skipped); %" PRIu64
              " slots of killed consumers recovered; 0 read twice, 0 corrupt, no wedge\n",
              label, producer_kills + consumer_kills, producer_kills, consumer_kills, kill_secs,
              total, read, lost + cut_short, cut_short, never_committed, l.aborted.load(),
              abandoned_writes, abandoned_reads);
  Segment::unlink(t.name);
}

TEST(TortureMpmc, KillMinus9AtRandomPoints) { mpmc_torture(0); }

// A lane per producer: a killed producer's lane goes to its next
// incarnation, and dead claims are recovered lane by lane.
TEST(TortureMpmc, LanesKillMinus9AtRandomPoints) { mpmc_torture(kMpmcProducers); }

// ---- broadcast ----------------------------------------------------------------
//
// One producer, killed at random and taken over by its next incarnation,
// which continues from the published head, past whatever its predecessor
// committed. kSurvivors subscribers are never killed and read from position
// 0. kChurners subscriber seats run processes that are killed at random and
// replaced by new ones joining at a random point (oldest, newest or next);
// each also leaves on its own now and then (retiring its block) and joins
// again. The churners read slowly, so a reliable producer is often waiting
// for one of them when it is killed: the dead subscriber must not hold it
// (the producer evicts the block of a holder that died). At the end every
// churner is killed while the producer runs, and the producer must then go
// several laps further with only the survivors reading.
//
// Reliable: every survivor processes every position below the final head
// exactly once, in order (each message's position is the next one
// expected), intact (checksum), and from the producer that recorded
// committing it; both survivors read the same message at each position;
// every churner reads a gapless, intact run from wherever it joined.
// Lossy: nothing read is torn (checksum and position); positions read only
// grow; every subscriber's cursor moved by exactly its reads plus lost()
// plus the peeks it found rewritten and discarded: each gap is counted.
// Both: the head never stands still for kStall while nothing is killed.

constexpr int kSurvivors = 2;
constexpr int kChurners = 2;
constexpr int kSeats = kSurvivors + kChurners;
static_assert(kSeats <= Ledger::kMaxSeats);
// No progress for this long, with a producer and the survivors alive: wedged.
constexpr auto kStall = 10s;

// The ledger column where survivor `k` records the producer incarnation of
// the message it processed at each position.
int survivor_column(int k) { return 3 + k; }

[[noreturn]] void broadcast_producer_process(const std::string& name, const SharedLedger& shared,
                                             std::uint32_t incarnation, std::uint64_t seed) {
  Process me(shared, "producer", incarnation, seed);
  BroadcastProducer tx = me.attach<BroadcastProducer>(name);
  const bool lossy = tx.delivery() == Delivery::lossy;
  const std::uint64_t limit = shared.positions() - kMaxBatch;
  std::byte message[kSlotSize];
  for (;;) {
    if (me.producer_idles(tx.position(), limit)) continue;
    // A lossy producer never waits: a pause now and then lets the
    // subscribers catch up, so that they read in order as well as lapped.
    if (lossy && me.rng() % 256 == 0) {
      std::this_thread::sleep_for(std::chrono::microseconds(me.rng() % 500));
    }
    if (me.rng() % 2 == 0) {  // the copy path
      const std::uint64_t p = tx.position();
      write_message(message, p, incarnation);
      const auto start = Clock::now();
      const Status st = tx.push({message, length_for(p)}, kWait);
      if (st == Status::ok) {
        shared.committed_by(p).store(incarnation);  // after the commit, as in commit()
      } else {
        me.retry_later("push", st, start);
      }
      continue;
    }
    const std::size_t want = 1 + me.rng() % kMaxBatch;
    WriteClaim c = me.wait("claim", [&] { return tx.claim(want, kWait); });
    if (!c.empty()) me.commit(c, c.size(), /*words=*/lossy);
  }
}

// A subscriber process's reading: every message checked, and every move of
// its cursor accounted for.
class Reader {
 public:
  // `column`: where a survivor records what it processed (-1: a churner).
  Reader(Process& me, int seat, int column) : me_(me), seat_(me.l.seats[seat]), column_(column) {}

  BroadcastSubscriber& sub() { return sub_; }
  std::uint64_t reads() const { return reads_; }

  void join(const std::string& name, JoinAt at) {
    std::error_code ec;
    if (!me_.seg) me_.seg = Segment::open(name, OpenOptions{}, ec);
    sub_ = me_.seg ? BroadcastSubscriber::attach(me_.seg, at, WaitPolicy{}, ec)
                   : BroadcastSubscriber();
    if (ec) me_.fail("attach failed: %s", last_error_message().c_str());
    lossy_ = sub_.delivery() == Delivery::lossy;
    joined_at_ = expected_ = sub_.position();
    reads_ = discarded_ = 0;
    seat_.joins.fetch_add(1, std::memory_order_relaxed);
  }

  // One read, through the copy, the zero-copy or the drain path, each
  // waiting up to kWait.
  void read_some() {
    const auto start = Clock::now();
    switch (me_.rng() % 3) {
      case 0: {
        std::byte buf[kSlotSize];
        std::size_t size = 0;
        const Status st = sub_.pop(buf, size, kWait);
        if (st == Status::ok) {
          take({buf, size}, sub_.position() - 1);         // released: the cursor is past it
        } else if (!(lossy_ && st == Status::overrun)) {  // a lap: counted, read on
          me_.retry_later("pop", st, start);
        }
        break;
      }
      case 1: {
        ReadClaim c = sub_.peek(1 + me_.rng() % kMaxBatch, kWait);
        if (c.empty()) {
          if (!(lossy_ && c.status() == Status::overrun))
            me_.retry_later("peek", c.status(), start);
          break;
        }
        take_claim(c);
        break;
      }
      default: {
        const std::size_t n = sub_.drain(
            [&](std::span<const std::byte> m) {
              take(m, position_of(m));  // the position it names, checked to be the next
            },
            1 + me_.rng() % kMaxBatch, kWait);
        // drain() says only how many it handed over: empty before its
        // deadline, it found the producer dead or closed.
        if (n == 0) {
          me_.retry_later(
              "drain", Clock::now() - start < kWait ? Status::peer_dead : Status::timeout, start);
        }
      }
    }
    check_accounts();
  }

  // The cursor moved by exactly the messages read, those lost to laps and
  // the peeks discarded as rewritten: no gap goes uncounted, and a reliable
  // subscriber loses none.
  void check_accounts() const {
    const std::uint64_t moved = sub_.position() - joined_at_;
    if (moved != reads_ + sub_.lost() + discarded_) {
      me_.fail("cursor moved %" PRIu64 " positions from %" PRIu64 ", but %" PRIu64 " read, %" PRIu64
               " lost, %" PRIu64 " discarded",
               moved, joined_at_, reads_, sub_.lost(), discarded_);
    }
    if (!lossy_ && (sub_.lost() != 0 || sub_.lapped() != 0)) {
      me_.fail("a reliable subscriber lost %" PRIu64 " messages", sub_.lost());
    }
  }

  void leave() {
    seat_.laps.fetch_add(sub_.lapped(), std::memory_order_relaxed);
    sub_.detach();
  }

 private:
  // The messages of a peek. Lossy: copied out as words first, then kept
  // only if the claim is still valid (else discarded, as the producer
  // rewrote them while they were read).
  void take_claim(ReadClaim& c) {
    if (!lossy_) {
      for (std::size_t i = 0; i < c.size(); ++i) take(c[i], c.position(i));
      c.release();
      return;
    }
    std::byte copies[kMaxBatch][kSlotSize];
    std::size_t sizes[kMaxBatch];
    for (std::size_t i = 0; i < c.size(); ++i) {
      sizes[i] = std::min<std::size_t>(c[i].size(), kSlotSize);
      load_words(copies[i], c[i].data(), sizes[i]);
    }
    if (c.valid()) {
      for (std::size_t i = 0; i < c.size(); ++i) take({copies[i], sizes[i]}, c.position(i));
    } else {
      discarded_ += c.size();
      seat_.discarded.fetch_add(c.size(), std::memory_order_relaxed);
    }
    c.release();
  }

  // A message read at `p`: the next position (reliable) or a later one
  // (lossy, after a lap), intact, written by a producer.
  void take(std::span<const std::byte> m, std::uint64_t p) {
    if (p < expected_ || (!lossy_ && p != expected_)) {
      me_.fail("read position %" PRIu64 " where %" PRIu64 " was next", p, expected_);
    }
    if (p >= me_.shared.positions()) me_.fail("position %" PRIu64 " beyond the ledger", p);
    const std::uint32_t from = me_.check(m, p);
    seat_.skipped.fetch_add(p - expected_, std::memory_order_relaxed);
    expected_ = p + 1;
    ++reads_;
    seat_.reads.fetch_add(1, std::memory_order_relaxed);
    if (column_ >= 0) {
      me_.shared.at(column_, p).store(from);
      seat_.next.store(expected_);
    }
  }

  Process& me_;
  Ledger::Seat& seat_;
  int column_;
  BroadcastSubscriber sub_;
  bool lossy_ = false;
  std::uint64_t joined_at_ = 0;
  std::uint64_t expected_ = 0;
  std::uint64_t reads_ = 0;
  std::uint64_t discarded_ = 0;
};

// A survivor: joins before anything is published and reads until its
// cursor reaches drain_to.
[[noreturn]] void broadcast_survivor_process(const std::string& name, const SharedLedger& shared,
                                             std::uint32_t incarnation, std::uint64_t seed,
                                             int seat) {
  Process me(shared, "survivor", incarnation, seed);
  Ledger& l = me.l;
  Reader r(me, seat, survivor_column(seat));
  r.join(name, JoinAt::oldest);
  if (r.sub().position() != 0) me.fail("joined at %" PRIu64 ", not 0", r.sub().position());
  l.seats[seat].joined.store(1);
  const bool lossy = r.sub().delivery() == Delivery::lossy;
  for (;;) {
    if (r.sub().position() >= l.drain_to.load()) {
      r.leave();
      ::_exit(0);
    }
    // Lossy: falls behind now and then, and is lapped.
    if (lossy && me.rng() % 512 == 0) {
      std::this_thread::sleep_for(std::chrono::microseconds(me.rng() % 3000));
    }
    r.read_some();
  }
}

// A churner: joins at a random point, reads slowly (the subscriber a
// reliable producer waits for), leaves after a random number of messages
// and joins again; finishes when the producer is told to stop.
[[noreturn]] void broadcast_churner_process(const std::string& name, const SharedLedger& shared,
                                            std::uint32_t incarnation, std::uint64_t seed,
                                            int seat) {
  Process me(shared, "churner", incarnation, seed);
  Ledger& l = me.l;
  Reader r(me, seat, -1);
  for (;;) {
    r.join(name, static_cast<JoinAt>(me.rng() % 3));
    const std::uint64_t quota = me.rng() % 3000;
    while (r.reads() < quota) {
      if (l.stop.load() != 0) {
        r.leave();
        ::_exit(0);
      }
      if (me.rng() % 4 == 0) {
        std::this_thread::sleep_for(std::chrono::microseconds(me.rng() % 300));
      }
      r.read_some();
    }
    r.leave();  // retires the block, then joins again
  }
}

void broadcast_torture(const char* label, Delivery delivery) {
  Torture t(label, test::broadcast(kSeats, delivery, kCapacity, kSlotSize),
            broadcast_producer_process, nullptr, 3 + kSurvivors);
  ASSERT_TRUE(t.shared);
  Ledger& l = t.ledger();
  const BroadcastView view(t.seg.base(), t.seg.geometry());
  auto start_subscriber = [&](int seat) {
    return t.start_process([&, seat](std::uint32_t inc, std::uint64_t s) {
      if (seat < kSurvivors) broadcast_survivor_process(t.name, t.shared, inc, s, seat);
      broadcast_churner_process(t.name, t.shared, inc, s, seat);
    });
  };
  Child subscribers[kSeats];
  for (int k = 0; k < kSurvivors; ++k) subscribers[k] = start_subscriber(k);
  // The survivors read from position 0: they join before anything is published.
  ASSERT_TRUE(test::poll_until(
      [&] {
        int joined = 0;
        for (int k = 0; k < kSurvivors; ++k) joined += l.seats[k].joined.load() != 0 ? 1 : 0;
        return joined == kSurvivors || l.errors.load() != 0;
      },
      60s));
  ASSERT_EQ(l.errors.load(), 0u) << l.first_error;
  for (int k = kSurvivors; k < kSeats; ++k) subscribers[k] = start_subscriber(k);
  Child producer = t.start(true);

  auto head = [&] { return atomic::load_seq_cst(&view.producer()->position); };
  const std::uint64_t full = t.shared.positions() - 2 * kMaxBatch;
  std::uint64_t last_head = 0;
  auto last_move = Clock::now();
  std::uint64_t kills_while_waiting = 0;  // churners killed while the producer slept
  const double kill_secs = t.kill_rounds([&] {
    // Rounds come every few milliseconds, and a stuck producer is soon
    // killed and replaced, so this finds only a wedge that outlives its
    // producers; the finish below finds one that a producer waits in.
    if (head() != last_head || head() >= full) {
      last_head = head();
      last_move = Clock::now();
    } else if (Clock::now() - last_move > kStall) {
      ADD_FAILURE() << "the ring wedged at " << last_head;
      return false;
    }
    // 0-1: the producer, 2-3: a churner.
    const unsigned who = static_cast<unsigned>(t.rng() % 4);
    if (who < 2) return t.kill_and_restart(producer, true);
    const int seat = kSurvivors + static_cast<int>(t.rng() % kChurners);
    if (atomic::load_seq_cst(&view.producer_wait()->waiters) != 0) ++kills_while_waiting;
    const bool ok = kill_and_reap(subscribers[seat], "churner");
    ++t.consumer_kills;
    subscribers[seat] = start_subscriber(seat);
    return ok;
  });

  // Every churner killed, not replaced, while the producer runs: their
  // blocks stay active at old cursors, and a reliable producer gets past
  // them (more than a lap) only by finding their holders dead.
  for (int k = kSurvivors; k < kSeats; ++k) {
    if (atomic::load_seq_cst(&view.producer_wait()->waiters) != 0) ++kills_while_waiting;
    EXPECT_TRUE(kill_and_reap(subscribers[k], "churner"));
    ++t.consumer_kills;
  }
  const std::uint64_t head_at_last_kill = head();
  const std::uint64_t target = std::min(head_at_last_kill + 4 * kCapacity, full);
  EXPECT_TRUE(test::poll_until([&] { return head() >= target || l.errors.load() != 0; }, kStall))
      << "the producer did not get past the blocks of killed subscribers: head " << head()
      << ", from " << head_at_last_kill;
  const std::uint64_t producer_kills = t.producer_kills;
  const std::uint64_t subscriber_kills = t.consumer_kills;

  // Finish: the producer stops where it is, the survivors read up to there.
  l.stop.store(1);
  EXPECT_EQ(wait_exit(producer, 60s), 0) << "the last producer did not finish";
  ASSERT_EQ(l.producer_done.load(), 1u);
  const std::uint64_t total = l.final_position.load();
  l.drain_to.store(total);
  for (int k = 0; k < kSurvivors; ++k) {
    EXPECT_EQ(wait_exit(subscribers[k], 60s), 0) << "survivor " << k << " did not read to the end";
  }
  ASSERT_EQ(l.errors.load(), 0u) << l.first_error;

  const bool lossy = delivery == Delivery::lossy;
  std::uint64_t unrecorded = 0;
  std::uint64_t bad = 0;
  std::uint64_t unread[kSurvivors] = {};
  for (std::uint64_t p = 0; p < total; ++p) {
    const std::uint32_t by = t.shared.committed_by(p).load();
    if (by == 0) ++unrecorded;
    std::uint32_t from[kSurvivors];
    bool ok = true;
    for (int k = 0; k < kSurvivors; ++k) {
      from[k] = t.shared.at(survivor_column(k), p).load();
      if (from[k] == 0) ++unread[k];
      // Reliable: read by every survivor. Either: what its committing
      // producer wrote, and the same message for all who read it.
      ok = ok && (lossy || from[k] != 0) && (from[k] == 0 || by == 0 || from[k] == by) &&
           (from[k] == 0 || from[0] == 0 || from[k] == from[0]);
    }
    if (!ok && ++bad <= 5) {
      ADD_FAILURE() << "position " << p << ": committed by producer " << by
                    << ", survivors read it from " << from[0] << " and " << from[1];
    }
  }
  EXPECT_EQ(bad, 0u);
  // Only a producer killed between its commit and its record leaves
  // commits unrecorded: at most one batch per producer kill.
  EXPECT_LE(unrecorded, producer_kills * kMaxBatch);
  std::uint64_t churner_reads = 0;
  std::uint64_t churner_joins = 0;
  for (int k = 0; k < kSeats; ++k) {
    const Ledger::Seat& seat = l.seats[k];
    if (k < kSurvivors) {
      // Gaps between its reads, and after its last one (lost to a lap or
      // discarded at the very end).
      EXPECT_EQ(seat.skipped.load() + (total - seat.next.load()), unread[k])
          << "survivor " << k << ": its gaps and its unread positions differ";
      if (!lossy) {
        EXPECT_EQ(seat.next.load(), total) << "survivor " << k;
      }
    } else {
      churner_reads += seat.reads.load();
      churner_joins += seat.joins.load();
    }
  }
  EXPECT_GT(churner_reads, 0u) << "the churners never read";
  t.check_waits();

  std::printf("torture %s: %" PRIu64 " kill points in %" PRIu64 " rounds (%" PRIu64
              " producers, %" PRIu64 " subscribers killed, %" PRIu64
              " of them while the producer waited) in %.1f s; %" PRIu64 " messages (%" PRIu64
              " committed but unrecorded by a killed producer); survivors read %" PRIu64
              " and %" PRIu64 " (%" PRIu64 " and %" PRIu64 " lost to %" PRIu64 " and %" PRIu64
              " laps, %" PRIu64 " and %" PRIu64 " discarded peeks); churners joined %" PRIu64
              " times and read %" PRIu64 "; %" PRIu64
              " timed waits (max overrun %.2f ms); "
              "0 torn, 0 out of order, no wedge\n",
              label, producer_kills + subscriber_kills, t.rounds, producer_kills, subscriber_kills,
              kills_while_waiting, kill_secs, total, unrecorded, l.seats[0].reads.load(),
              l.seats[1].reads.load(), unread[0], unread[1], l.seats[0].laps.load(),
              l.seats[1].laps.load(), l.seats[0].discarded.load(), l.seats[1].discarded.load(),
              churner_joins, churner_reads, l.waits.load(),
              static_cast<double>(l.max_overrun_ns.load()) / 1e6);
  Segment::unlink(t.name);
}

TEST(TortureBroadcast, ReliableKillMinus9AtRandomPoints) {
  broadcast_torture("broadcast reliable", Delivery::reliable);
}

TEST(TortureBroadcast, LossyKillMinus9AtRandomPoints) {
  broadcast_torture("broadcast lossy", Delivery::lossy);
}

}  // namespace
}  // namespace shmring
