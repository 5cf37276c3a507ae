// Role handles for an MPMC ring: any number of MpmcProducer and MpmcConsumer
// handles, in any number of processes, at once.
//
// Each push or claim takes positions with one CAS on the shared enqueue
// counter, each pop or peek with one CAS on the dequeue counter; every slot is
// published by the one producer that claimed it and released by the one
// consumer that claimed it. A claimed slot cannot be handed back to the
// counter, so an aborted (or dropped) claim commits it marked "skipped" and
// consumers pass over it. Unlike SPSC, a handle may hold several claims at
// once, and its copy calls work while they are live. A consumer may read
// ahead (set_read_ahead): one CAS claims several messages, handed out one a
// call; what a consumer keeps goes back to the ring when it goes, if no
// consumer claimed past it (claims.hpp, hand_back_read_claims).
//
// A process killed while it holds claims would stall the ring at them. Each
// CPU handle therefore keeps a record in the segment's claim table of its side
// (layout.hpp, ClaimRecord) saying from which position on it may hold claims;
// a claimed position that is neither finished nor covered by a live record
// was claimed by a dead process, and recover() (run by every blocking call
// that has to sleep, and by attach) finishes it: a producer's as a skipped
// slot, a consumer's as released. A handle belongs to the process that
// attached it: in a forked child every call returns Status::wrong_process
// (attach the child's own handles instead).
//
// Deadlines. A run of skipped or dead positions can be as long as the ring (a
// peer that writes the enqueue counter a lap ahead makes a whole lap of dead
// claims), so no call walks one in a go: recovery looks at no more than
// kMpmcRecoverStep positions a step and a try_peek / try_pop passes over no
// more than kMpmcSkipStep skipped slots (then returns would_block, having
// made progress: calling again goes on). A blocking call looks at its deadline
// after every try and every step, so it returns by its deadline plus the work
// of about one step and two tries (tens of microseconds on current x86; see
// the README) however long the run. A blocking call that has to wait runs a
// recovery pass to its end if its deadline allows; what its deadline cut
// short goes on by a step in each later blocking call of the handle (and in
// recover()), or in the pass of any handle of the side that has to wait.
//
// Lanes. With one shared enqueue counter (CreateOptions::lanes = 0, the
// default), every push of every producer is a CAS on one line, and with a
// few producers on as many cores that line's trips between them are the
// ring's rate. A ring created with lanes = N (1 to 16) is N rings of
// capacity / N slots in one segment, each with its own counters and claim
// tables (layout.hpp, LaneArea), as moodycamel::ConcurrentQueue keeps a
// queue per producer:
//   - a producer owns one lane, taken when it attaches (the first whose
//     owner lock is free), and claims in it with a store to the lane's
//     counter rather than a CAS (MpmcView::claim_write_owned): the ring takes
//     as many producers at once as it has lanes, and refuses one more
//     (errc::role_taken). A lane whose producer left or died goes to the
//     next producer that attaches;
//   - a consumer holds a claim record in every lane and tries its home lane
//     (handed out in turn) first, then each other one, so no lane is left
//     unread and consumers spread over the lanes. While it holds claims or a
//     kept message, its further claims come from the same lane;
//   - each producer's messages come out in its order; there is no order
//     between producers of different lanes;
//   - consumers sleep once for every lane (the sleeper counts and futex
//     words are the ring's), producers for their own lane's room;
//   - a handle recovers the dead claims of its side in every lane.
// GPU agents take part in rings of one shared lane only. With lanes = 1, one
// producer feeds any number of consumers at nearly the cost of an SPSC
// ring.
#pragma once

#include <algorithm>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <memory>
#include <span>
#include <system_error>
#include <vector>

#include "shmring/claim.hpp"
#include "shmring/handle.hpp"
#include "shmring/mpmc_view.hpp"
#include "shmring/process.hpp"
#include "shmring/segment.hpp"
#include "shmring/status.hpp"
#include "shmring/wait.hpp"

namespace shmring {
namespace detail {
struct Failure;
class Holding;
}  // namespace detail

// The most positions one recovery step looks at (recover(), or one step of a
// blocking call that has to wait).
inline constexpr std::uint64_t kMpmcRecoverStep = 4096;
// The most skipped slots one try_peek / try_pop passes over.
inline constexpr std::uint64_t kMpmcSkipStep = 4096;

namespace detail {
// What one recovery step did (claims.hpp).
struct RecoveryStep {
  std::uint64_t recovered = 0;  // positions recovered by this step
  bool more = false;            // the pass stopped at the step bound: call again
};

// One lane as a handle of one side sees it: the lane's view, the handle's
// claim record in the lane's table (consumers hold one in every lane,
// producers in their own only), the holder it recovers the lane's dead
// claims through, and where its last recovery step in the lane stopped.
struct MpmcLane {
  MpmcView view;
  ClaimRecord* record = nullptr;
  Holding* holding = nullptr;
  std::uint64_t recover_from = kClaimIdle;
};

// What the handles of both MPMC sides hold: the lanes, and of the lane it
// claims in now its view and claim record (layout.hpp, ClaimRecord), which
// say from where the handle may hold claims; and the recovery of what dead
// handles of the side left claimed.
struct MpmcSideCore : HandleCore {
  MpmcView view;  // the lane claimed in now: lanes[at].view
  bool producer = false;
  ClaimRecord* record = nullptr;  // lanes[at].record
  std::vector<MpmcLane> lanes;    // every lane of the ring
  std::uint32_t at = 0;           // the lane claimed in now
  std::uint32_t home = 0;         // producer: its lane; consumer: the lane tried first
  // Producer of a ring of owned lanes: it owns its lane, and stores the
  // counter rather than CAS it (MpmcView::claim_write_owned).
  bool owns_lane = false;
  // Whether the slots ahead are taken (the producer's and the consumer's
  // prefetch hints below): where they pay on this CPU (mpmc_hints_pay()).
  bool hints = true;
  MpmcRange held;  // consumer: claimed messages kept for the next read

  MpmcSideCore() noexcept { tracks_claims = true; }
  ~MpmcSideCore() override;

  // Claims go to lane `l` from now on (only while idle: a live claim points
  // at `view`).
  void use_lane(std::uint32_t l) noexcept {
    if (l == at) return;
    at = l;
    view = lanes[l].view;
    record = lanes[l].record;
  }
  SideBlock& side() const noexcept { return producer ? *view.producer() : *view.consumer(); }
  // The claim record: from where this handle may hold claims. A relaxed store
  // suffices before the claim: the claiming CAS releases it, so a recoverer
  // that sees the counter moved sees the record. Back to idle with release,
  // after the commits, which a recoverer that sees idle then sees too (an
  // idle handle must not cover the claims of the dead, so a push writes its
  // record twice; the line is this handle's own, so both stores stay in its
  // cache). Returns the counter value it read, where the claim starts: the
  // contended counter is read once per claim.
  std::uint64_t before_claim() noexcept {
    const std::uint64_t counter = atomic::load_relaxed(&side().position);
    if (idle() && record != nullptr) atomic::store_relaxed(&record->low, counter);
    return counter;
  }
  void after_claims() noexcept {
    if (idle() && record != nullptr) atomic::store_release(&record->low, kClaimIdle);
  }
  bool idle() const noexcept { return live_claims == 0 && held.count == 0; }
  void claims_done() noexcept override { after_claims(); }

  // Wakes the other side's sleepers.
  void wake_peers(bool everyone = false) noexcept;

  WaitFor waits_for() const noexcept override { return producer ? WaitFor::room : WaitFor::data; }
  // Producers: room in their lane; consumers: data in any.
  bool progress_ready() const noexcept override {
    if (producer) return view.space_ready();
    for (const MpmcLane& l : lanes) {
      if (l.view.data_ready()) return true;
    }
    return false;
  }
  Status end_status(bool probe) noexcept override;
  // Producers: ends the stream for every consumer (mpmc_ring.cpp).
  void close() noexcept;
  // One bounded step of recovery in each lane (claims.cpp); wakes the other
  // side if it recovered something.
  RecoveryStep recover_step() noexcept;
  // A blocking call's stalled(): one recovery step; true to be called again,
  // after a look at the deadline (block_until).
  bool recovery_goes_on() noexcept {
    const RecoveryStep step = recover_step();
    return step.recovered != 0 || step.more;
  }
  // A pass that a deadline cut short goes on by a step in each blocking
  // call, whether or not the call has to wait: the peers waiting behind the
  // dead claims may wait on nothing else.
  void go_on_recovering() noexcept {
    for (const MpmcLane& l : lanes) {
      if (l.recover_from != kClaimIdle) {
        (void)recover_step();
        return;
      }
    }
  }
  void before_wait() noexcept override { (void)recover_step(); }
  // A side's counters summed over the lanes (position(), abandoned()).
  template <class Word>
  std::uint64_t sum(Word word) const noexcept {
    std::uint64_t total = 0;
    for (const MpmcLane& l : lanes) {
      total += atomic::load_relaxed(&word(producer ? *l.view.producer() : *l.view.consumer()));
    }
    return total;
  }
};

struct MpmcProducerCore final : MpmcSideCore {
  // Claims up to `max` slots from the enqueue counter as before_claim() read
  // it, then takes a slot ahead exclusive (RingView::prefetch_slot_for_write).
  // Each claim is a locked CAS, which waits until the stores before it (the
  // last push's payload and trailer) have their lines; a line the consumers
  // took meanwhile costs that wait a trip to their core. Taken two claims
  // ahead, the lines are here when the push that writes them comes, and so
  // is the `released` word its claim reads. Not the slot right after the
  // claim: a consumer that has caught up polls that one next.
  MpmcRange claim(std::uint64_t max, Status& status) noexcept {
    const std::uint64_t counter = before_claim();
    if (owns_lane && refilling(counter)) return {};
    const MpmcRange r = owns_lane ? view.claim_write_owned(counter, max, status)
                                  : view.claim_write_from(counter, max, status);
    if (r.count != 0 && hints) view.prefetch_slot_for_write(r.first + r.count + 1);
    if (r.count == 0 && owns_lane && status == Status::ok) start_refill(counter);
    return r;
  }

  // The one producer of a lane that found it full waits for a gap, not for
  // one slot. Its claim reads the `released` word of the slot the consumers
  // free next, in the trailer line they read that slot's `committed` from
  // and then write `released` to: polled by the producer, that line crosses
  // between the cores on every message, and the consumer's store to it
  // stalls its next claim (a locked CAS) for the trip. At one producer and
  // one consumer on the 16-core host that held a lane to the plain Vyukov
  // ring's rate. So it polls the slot kRefillGap positions ahead instead,
  // which the consumers reach later, and claims again once that one is free
  // (or after kRefillPolls polls: a consumer that stops short of the gap
  // must not keep free slots from the producer for long). Measured there,
  // one message a call: 2.0-3.1x as many messages at 1x1, 2.1-2.4x at 4x4
  // (bench/results/h100-host/lanes-refill-ab.md). A producer of the shared
  // lane gained nothing clear from the same wait (its own CAS already
  // keeps it behind the consumers), so it does not wait.
  static constexpr std::uint64_t kRefillGap = 32;
  static constexpr std::uint32_t kRefillPolls = 256;
  std::uint64_t refill_at = 0;  // the position whose slot it polls; 0: not refilling
  std::uint32_t refill_polls = 0;
  void start_refill(std::uint64_t counter) noexcept {
    const std::uint64_t gap = std::min(kRefillGap, view.capacity() / 4);
    if (gap < 2) return;
    refill_at = counter + gap;
    refill_polls = 0;
  }
  // Whether it still waits (the counter it read is where it will claim).
  bool refilling(std::uint64_t counter) noexcept {
    if (refill_at == 0) return false;
    if (refill_at > counter && !view.writable_at(refill_at) && ++refill_polls < kRefillPolls) {
      return true;
    }
    refill_at = 0;
    return false;
  }
  void publish(MpmcRange r, std::uint32_t flags) noexcept {
    if (view.commit(r, flags)) wake_peers();
  }
  void finish_write(std::uint64_t first, std::uint64_t count,
                    std::uint64_t publish_count) noexcept override {
    if (publish_count != 0) publish(MpmcRange{first, publish_count}, 0);
    if (count > publish_count) {
      publish(MpmcRange{first + publish_count, count - publish_count}, kSlotSkipped);
    }
  }
};

struct MpmcConsumerCore final : MpmcSideCore {
  // Trailers of a claimed run taken exclusive before its release (next_run).
  static constexpr std::uint64_t kPrefetchReleases = 8;
  std::uint64_t corrupt_dropped = 0;
  // Read-ahead (MpmcConsumer::set_read_ahead): a claim takes up to this many
  // readable messages and keeps the ones the call did not ask for in `held`,
  // so that one locked CAS on the dequeue counter serves several calls.
  std::uint64_t read_ahead = 1;
  ~MpmcConsumerCore() override;

  void release(MpmcRange r) noexcept {
    if (view.release(r)) wake_peers();
  }
  void finish_read(std::uint64_t first, std::uint64_t count) noexcept override {
    release(MpmcRange{first, count});
  }
  // Kept messages are handed out first, as one run of positions.
  bool keep_unread(std::uint64_t first, std::uint64_t count) noexcept override {
    if (held.count == 0) {
      held = MpmcRange{first, count};
    } else if (first + count == held.first) {
      held = MpmcRange{first, count + held.count};
    } else if (held.first + held.count == first) {
      held.count += count;
    } else {
      return false;
    }
    return true;
  }
  // The next run of up to `max` readable messages: first what was kept, then
  // from the dequeue counter of the lane claimed in (while claims are live),
  // or of the home lane, then of each other one. Empty with `status` set if
  // none.
  MpmcRange take(std::uint64_t max, Status& status) noexcept {
    if (held.count != 0) {
      const MpmcRange r{held.first, held.count < max ? held.count : max};
      held.first += r.count;
      held.count -= r.count;
      return r;
    }
    const std::uint64_t want = std::max(max, read_ahead);
    const auto n = static_cast<std::uint32_t>(lanes.size());
    if (n == 1 || !idle()) return keep_ahead(take_here(want, status), max);
    // Starting at home every time keeps the consumers spread over the lanes;
    // one that stayed where it last found a message would gather with the
    // others on one lane and its counter.
    for (std::uint32_t tried = 0, l = home;; l = l + 1 == n ? 0 : l + 1) {
      use_lane(l);
      const MpmcRange r = take_here(want, status);
      if (r.count != 0 || status != Status::would_block || ++tried == n) {
        return keep_ahead(r, max);
      }
    }
  }

 private:
  // The first `max` of a claimed run; the rest is read ahead, kept for the
  // next calls (`held` is empty whenever a claim is made).
  MpmcRange keep_ahead(MpmcRange r, std::uint64_t max) noexcept {
    if (r.count <= max) return r;
    held = MpmcRange{r.first + max, r.count - max};
    return MpmcRange{r.first, max};
  }

  // take() from the lane claimed in.
  MpmcRange take_here(std::uint64_t max, Status& status) noexcept {
    const std::uint64_t counter = before_claim();
    // The payload travels while the claim waits for the trailer and the CAS.
    if (hints) view.prefetch_payload(counter);
    // Sleeping producers are woken once, after the skipped slots passed over
    // (each release of one would otherwise cost a system call).
    bool wake = false;
    const MpmcRange r = next_run(counter, max, status, wake);
    if (wake) wake_peers();
    return r;
  }

  // The locked claim orders the loads before it: the CPU cannot run ahead
  // into the next message while it waits, as an SPSC consumer does, so each
  // message would cost the consumer a trip for its slot's lines. They are
  // taken here, for the claim two ahead of this one (`r` the claim just
  // made): its trailer exclusive (the next-but-one claim reads it, and its
  // release writes it) and the first lines of its payload. Not the slot
  // right after `r`: a consumer that has caught up polls that one next,
  // while a producer writes it. A run of more than one message also takes
  // its own trailers exclusive before the release writes them. Not on slots
  // of one line (RingView::prefetch_slot_for_write says why). Hints: they
  // order nothing, and a consumer that finds the slot not yet committed
  // only lost a line it had to fetch again.
  void prefetch_ahead(MpmcRange r) const noexcept {
    if (!hints || view.payload_lines() == 0) return;
    const std::uint64_t next = r.first + r.count + 1;
    atomic::prefetch_write(view.trailer(next));
    view.prefetch_payload(next);
    if (r.count == 1) return;  // taken by an earlier claim, when the claims follow each other
    for (std::uint64_t i = 0; i < r.count && i < kPrefetchReleases; ++i) {
      atomic::prefetch_write(view.trailer(r.first + i));
    }
  }

  // `counter`: the dequeue counter as before_claim() read it.
  MpmcRange next_run(std::uint64_t counter, std::uint64_t max, Status& status,
                     bool& wake) noexcept {
    // An aborted or recovered claim is passed over; at most kMpmcSkipStep of
    // them a call, so that a lap of them (a scribbled counter's recovered
    // lap) costs each call a bounded time. would_block then, with progress
    // made: the next call goes on.
    for (std::uint64_t skipped = 0; skipped < kMpmcSkipStep; ++skipped) {
      Status s = Status::ok;
      const MpmcRange r =
          skipped == 0 ? view.claim_read_from(counter, max, s) : view.claim_read(max, s);
      if (r.count == 0) {
        after_claims();
        status = s == Status::ok ? Status::would_block : s;
        return r;
      }
      if (view.skipped(r.first)) {
        wake = view.release(r) || wake;
        continue;
      }
      for (std::uint64_t i = 0; i < r.count; ++i) {
        if (!view.length_ok(view.committed_length(r.first + i))) {
          // Unreadable: drop the whole run rather than hand out a clamped
          // message. It is counted, and the ring keeps moving.
          wake = view.release(r) || wake;
          corrupt_dropped += r.count;
          after_claims();
          status = Status::corrupt;
          return {};
        }
      }
      prefetch_ahead(r);
      return r;
    }
    after_claims();
    status = Status::would_block;
    return {};
  }
};

}  // namespace detail

class MpmcProducer : public detail::Handle<detail::MpmcProducerCore>,
                     public detail::AttachForms<MpmcProducer> {
 public:
  MpmcProducer() noexcept = default;

  // attach(segment, policy = {}) and attach(segment, policy, ec): counted
  // in, with a claim record of its own (handle.hpp, AttachForms).

  // Positions claimed so far by all producers of the ring (the enqueue
  // counters of its lanes, summed).
  std::uint64_t position() const noexcept {
    return core_ ? core_->sum([](SideBlock& b) -> std::uint64_t& { return b.position; }) : 0;
  }
  // The lane this producer writes (0 in a ring of one lane).
  std::uint32_t lane() const noexcept { return core_ ? core_->home : 0; }

  // Ends the stream for every consumer (docs/events.md): they read what was
  // published, then get Status::closed. Close once the other producers are
  // done: what they push afterwards is still delivered to consumers that
  // call again, but one that saw closed may have stopped. This handle's
  // later pushes and claims get Status::closed. A producer that attaches
  // later reopens the stream.
  Status close() noexcept {
    if (!detail::usable(core_)) return detail::unusable(core_);
    if (!core_->closed_here) core_->close();
    return Status::ok;
  }
  bool closed() const noexcept { return core_ && core_->closed_here; }
  // Whether the end of this handle closes the stream when no other producer
  // of the ring is alive (the last one out closes); true by default.
  void set_close_on_exit(bool close) noexcept {
    if (core_) core_->close_on_exit = close;
  }
  bool close_on_exit() const noexcept { return core_ && core_->close_on_exit; }

  [[nodiscard]] Status try_push(std::span<const std::byte> message) noexcept {
    if (!detail::usable(core_)) return detail::unusable(core_);
    detail::MpmcProducerCore& c = *core_;
    if (c.closed_here) return Status::closed;
    if (message.size() > c.view.slot_size()) return Status::too_large;
    Status status = Status::ok;
    const MpmcRange r = c.claim(1, status);
    if (r.count != 0) {
      copy_message(c.view.payload(r.first), message.data(), message.size());
      c.view.set_length(r.first, static_cast<std::uint32_t>(message.size()));
      c.publish(r, 0);
    }
    c.after_claims();
    if (r.count == 0) return status == Status::ok ? c.nothing_now() : status;
    return Status::ok;
  }
  [[nodiscard]] Status push(std::span<const std::byte> message,
                            std::chrono::nanoseconds timeout) noexcept;

  // Copies up to messages.size() messages into consecutive slots with one
  // claim and one publication; returns how many went in (stops at the first
  // that is too large, or when full).
  std::size_t try_push_many(std::span<const std::span<const std::byte>> messages) noexcept {
    if (!detail::usable(core_) || core_->closed_here) return 0;
    detail::MpmcProducerCore& c = *core_;
    std::size_t fit = 0;
    while (fit < messages.size() && messages[fit].size() <= c.view.slot_size()) ++fit;
    if (fit == 0) return 0;
    Status status = Status::ok;
    const MpmcRange r = c.claim(fit, status);
    for (std::uint64_t i = 0; i < r.count; ++i) {
      copy_message(c.view.payload(r.first + i), messages[i].data(), messages[i].size());
      c.view.set_length(r.first + i, static_cast<std::uint32_t>(messages[i].size()));
    }
    if (r.count != 0) c.publish(r, 0);
    c.after_claims();
    if (r.count == 0 && status == Status::ok) (void)c.nothing_now();
    return static_cast<std::size_t>(r.count);
  }

  // Lends up to `max` consecutive free slots (claim.hpp).
  [[nodiscard]] WriteClaim try_claim(std::size_t max = 1) noexcept {
    if (!detail::usable(core_)) return WriteClaim(detail::unusable(core_));
    detail::MpmcProducerCore& c = *core_;
    if (c.closed_here) return WriteClaim(Status::closed);
    Status status = Status::ok;
    const MpmcRange r = c.claim(max, status);
    if (r.count == 0) {
      c.after_claims();
      return WriteClaim(status == Status::ok ? c.nothing_now() : status);
    }
    return WriteClaim(c, c.view, r.first, r.count);
  }
  [[nodiscard]] WriteClaim claim(std::size_t max, std::chrono::nanoseconds timeout) noexcept;

  // Commits, as skipped, the positions that producers which died claimed and
  // never committed, if the consumers wait at one. Returns how many. One call
  // looks at no more than kMpmcRecoverStep positions; the next goes on from
  // where it stopped (blocking calls that wait do this by themselves).
  std::uint64_t recover() noexcept { return core_ ? core_->recover_step().recovered : 0; }
  // Positions of the producer side recovered so far, by any process.
  std::uint64_t abandoned() const noexcept {
    return core_ ? core_->sum([](SideBlock& b) -> std::uint64_t& { return b.abandoned; }) : 0;
  }

 private:
  friend class detail::AttachForms<MpmcProducer>;
  static MpmcProducer do_attach(const Segment& segment, const WaitPolicy& policy,
                                detail::Failure& f);
};

class MpmcConsumer : public detail::Handle<detail::MpmcConsumerCore>,
                     public detail::AttachForms<MpmcConsumer> {
 public:
  MpmcConsumer() noexcept = default;

  // attach(segment, policy = {}) and attach(segment, policy, ec): counted
  // in, with a claim record of its own (handle.hpp, AttachForms).

  // Positions claimed so far by all consumers of the ring (the dequeue
  // counters of its lanes, summed).
  std::uint64_t position() const noexcept {
    return core_ ? core_->sum([](SideBlock& b) -> std::uint64_t& { return b.position; }) : 0;
  }
  // The lane its claims come from now: while it holds a claim, that claim's
  // (0 in a ring of one lane).
  std::uint32_t lane() const noexcept { return core_ ? core_->at : 0; }
  // Messages dropped because their producer wrote an impossible length.
  std::uint64_t corrupt_dropped() const noexcept { return core_ ? core_->corrupt_dropped : 0; }

  // Read-ahead: each claim on the dequeue counter takes up to `n` readable
  // messages at once (those there are: it never waits for more) and hands
  // them out one call at a time, so that n messages cost one locked CAS
  // rather than n. The default, 1, takes what each call asks for. Like a
  // broker's prefetch count it trades fairness for speed: messages this
  // handle has read ahead are its own, and other consumers read the ones
  // after them. When the handle goes, what it still holds goes back to the
  // ring if no consumer has claimed past it since; otherwise those messages
  // are lost, and counted in abandoned(). Clamped to [1, a lane's capacity].
  void set_read_ahead(std::size_t n) noexcept {
    if (!core_) return;
    const std::uint64_t cap = core_->view.capacity();
    core_->read_ahead = std::clamp<std::uint64_t>(n, 1, cap);
  }
  std::size_t read_ahead() const noexcept {
    return core_ ? static_cast<std::size_t>(core_->read_ahead) : 0;
  }
  // Messages this handle has claimed and not handed out yet: read ahead, or
  // kept for a buffer too small (the ring's counters count them as read).
  std::size_t kept() const noexcept {
    return core_ ? static_cast<std::size_t>(core_->held.count) : 0;
  }

  // Copies the next message into `buffer`. If the buffer is too small:
  // too_large, `size` = the message's size, and this handle keeps the message
  // for its next read (a claimed MPMC slot cannot go back to the others).
  [[nodiscard]] Status try_pop(std::span<std::byte> buffer, std::size_t& size) noexcept {
    if (!detail::usable(core_)) return detail::unusable(core_);
    detail::MpmcConsumerCore& c = *core_;
    Status status = Status::ok;
    const MpmcRange r = c.take(1, status);
    if (r.count == 0) return status == Status::would_block ? c.nothing_now() : status;
    const ReadSlot m = c.view.read_slot(r.first);
    size = m.size;
    if (m.size > buffer.size()) {
      (void)c.keep_unread(r.first, 1);  // from the front of what is kept, or all of it
      return Status::too_large;
    }
    copy_message(buffer.data(), m.data, m.size);
    c.release(r);
    c.after_claims();
    return Status::ok;
  }
  [[nodiscard]] Status pop(std::span<std::byte> buffer, std::size_t& size,
                           std::chrono::nanoseconds timeout) noexcept;

  // Lends up to `max` consecutive messages in place (claim.hpp).
  [[nodiscard]] ReadClaim try_peek(std::size_t max = 1) noexcept {
    if (!detail::usable(core_)) return ReadClaim(detail::unusable(core_));
    if (max == 0) return ReadClaim(Status::would_block);
    detail::MpmcConsumerCore& c = *core_;
    Status status = Status::ok;
    const MpmcRange r = c.take(max, status);
    if (r.count == 0) return ReadClaim(status == Status::would_block ? c.nothing_now() : status);
    return ReadClaim(c, c.view, r.first, r.count);
  }
  [[nodiscard]] ReadClaim peek(std::size_t max, std::chrono::nanoseconds timeout) noexcept;

  // As SpscConsumer::drain().
  template <class Handler>
  std::size_t drain(Handler&& handler, std::size_t max = SIZE_MAX) {
    return detail::drain(try_peek(max), handler);
  }
  template <class Handler>
  std::size_t drain(Handler&& handler, std::size_t max, std::chrono::nanoseconds timeout) {
    return detail::drain(peek(max, timeout), handler);
  }

  // Releases the positions that consumers which died claimed and never
  // released (their messages are lost), if the producers wait at one.
  // Returns how many. Bounded and resumed as the producer's.
  std::uint64_t recover() noexcept { return core_ ? core_->recover_step().recovered : 0; }
  // Positions of the consumer side recovered so far, by any process.
  std::uint64_t abandoned() const noexcept {
    return core_ ? core_->sum([](SideBlock& b) -> std::uint64_t& { return b.abandoned; }) : 0;
  }

 private:
  friend class detail::AttachForms<MpmcConsumer>;
  static MpmcConsumer do_attach(const Segment& segment, const WaitPolicy& policy,
                                detail::Failure& f);
};

}  // namespace shmring
