// Role handles for an MPMC ring: any number of MpmcProducer and MpmcConsumer
// handles, in any number of processes, at once.
//
// Each push or claim takes positions with one CAS on the shared enqueue
// counter, each pop or peek with one CAS on the dequeue counter; every slot is
// published by the one producer that claimed it and released by the one
// consumer that claimed it. A claimed slot cannot be handed back to the
// counter, so abort() commits it marked "skipped" and consumers pass over it.
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
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <memory>
#include <span>
#include <system_error>

#include "shmring/claim.hpp"
#include "shmring/mpmc_view.hpp"
#include "shmring/process.hpp"
#include "shmring/segment.hpp"
#include "shmring/status.hpp"
#include "shmring/wait.hpp"

namespace shmring {
namespace detail {
struct Failure;
}

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
}  // namespace detail

class MpmcProducer {
 public:
  MpmcProducer() noexcept = default;
  MpmcProducer(MpmcProducer&& other) noexcept { swap(other); }
  MpmcProducer& operator=(MpmcProducer&& other) noexcept {
    MpmcProducer(std::move(other)).swap(*this);
    return *this;
  }
  ~MpmcProducer();

  static MpmcProducer attach(const Segment& segment, const WaitPolicy& policy = {});
  static MpmcProducer attach(const Segment& segment, const WaitPolicy& policy, std::error_code& ec);

  explicit operator bool() const noexcept { return lifetime_ != nullptr; }
  std::uint64_t capacity() const noexcept { return view_.capacity(); }
  std::uint64_t slot_size() const noexcept { return view_.slot_size(); }

  [[nodiscard]] Status try_push(std::span<const std::byte> message) noexcept {
    if (!attached_here()) return Status::wrong_process;
    if (message.size() > view_.slot_size()) return Status::too_large;
    Status status = Status::ok;
    const MpmcRange r = view_.claim_write_from(before_claim(), 1, status);
    if (r.count != 0) {
      copy_message(view_.payload(r.first), message.data(), message.size());
      view_.set_length(r.first, static_cast<std::uint32_t>(message.size()));
      publish(r, 0);
    }
    after_claims();
    if (r.count == 0) return status == Status::ok ? Status::would_block : status;
    return Status::ok;
  }
  [[nodiscard]] Status push(std::span<const std::byte> message,
                            std::chrono::nanoseconds timeout) noexcept;

  // Lends up to `max` consecutive free slots. Unlike SPSC, a producer may
  // hold several claims at once; each must be committed or aborted.
  [[nodiscard]] WriteClaim try_claim(std::size_t max = 1) noexcept {
    if (!attached_here()) return WriteClaim(view_, 0, 0, Status::wrong_process);
    Status status = Status::ok;
    const MpmcRange r = view_.claim_write_from(before_claim(), max, status);
    if (r.count != 0) {
      ++outstanding_;
    } else {
      after_claims();
    }
    return WriteClaim(view_, r.first, r.count,
                      r.count != 0           ? Status::ok
                      : status == Status::ok ? Status::would_block
                                             : status);
  }
  [[nodiscard]] WriteClaim claim(std::size_t max, std::chrono::nanoseconds timeout) noexcept;

  // Publishes slot 0 with `bytes` of payload; the rest of the claim is
  // skipped. too_large, and the claim kept, if `bytes` does not fit.
  [[nodiscard]] Status commit(WriteClaim& claim, std::size_t bytes) noexcept {
    if (!attached_here()) return Status::wrong_process;
    if (claim.empty()) return Status::would_block;
    if (const Status s = claim.set_size(0, bytes); s != Status::ok) return s;
    commit_batch(claim, 1);
    return Status::ok;
  }
  // Publishes the first `count` slots (sizes set with set_size); the rest of
  // the claim is skipped.
  void commit_batch(WriteClaim& claim, std::size_t count) noexcept {
    if (claim.count_ == 0 || !attached_here()) return;
    if (count > claim.count_) count = static_cast<std::size_t>(claim.count_);
    if (count != 0) publish(MpmcRange{claim.first_, count}, 0);
    if (claim.count_ > count) {
      publish(MpmcRange{claim.first_ + count, claim.count_ - count}, kSlotSkipped);
    }
    claim = WriteClaim();
    if (outstanding_ != 0) --outstanding_;
    after_claims();
  }
  void commit_batch(WriteClaim& claim) noexcept { commit_batch(claim, claim.size()); }
  void abort(WriteClaim& claim) noexcept { commit_batch(claim, 0); }

  // Commits, as skipped, the positions that producers which died claimed and
  // never committed, if the consumers wait at one. Returns how many. One call
  // looks at no more than kMpmcRecoverStep positions; the next goes on from
  // where it stopped (blocking calls that wait do this by themselves).
  std::uint64_t recover() noexcept { return recover_step().recovered; }
  // Positions of the producer side recovered so far, by any process.
  std::uint64_t abandoned() const noexcept {
    return atomic::load_relaxed(&view_.producer()->abandoned);
  }

 private:
  static MpmcProducer do_attach(const Segment& segment, const WaitPolicy& policy,
                                detail::Failure& f);
  detail::RecoveryStep recover_step() noexcept;
  bool recovery_goes_on() noexcept;
  // A pass that a deadline cut short goes on by a step in each blocking
  // call, whether or not the call has to wait: the peers waiting behind the
  // dead claims may wait on nothing else.
  void go_on_recovering() noexcept {
    if (recover_from_ != kClaimIdle) (void)recover_step();
  }
  // The claim record: from where this handle may hold claims. A relaxed store
  // suffices before the claim: the claiming CAS releases it, so a recoverer
  // that sees the counter moved sees the record. Back to idle with release,
  // after the commits, which a recoverer that sees idle then sees too (an
  // idle handle must not cover the claims of the dead, so a push writes its
  // record twice; the line is this handle's own, so both stores stay in its
  // cache). Returns the counter value it read, where the claim starts: the
  // contended counter is read once per claim.
  std::uint64_t before_claim() noexcept {
    const std::uint64_t counter = atomic::load_relaxed(&view_.producer()->position);
    if (outstanding_ == 0 && record_ != nullptr) atomic::store_relaxed(&record_->low, counter);
    return counter;
  }
  void after_claims() noexcept {
    if (outstanding_ == 0 && record_ != nullptr) atomic::store_release(&record_->low, kClaimIdle);
  }
  void publish(MpmcRange r, std::uint32_t flags) noexcept {
    if (view_.commit(r, flags)) wake_consumers();
  }
  void wake_consumers() noexcept;
  void swap(MpmcProducer& o) noexcept {
    std::swap(view_, o.view_);
    std::swap(policy_, o.policy_);
    std::swap(wait_state_, o.wait_state_);
    std::swap(generation_, o.generation_);
    std::swap(record_, o.record_);
    std::swap(outstanding_, o.outstanding_);
    std::swap(recover_from_, o.recover_from_);
    lifetime_.swap(o.lifetime_);
  }
  bool attached_here() const noexcept { return generation_ == process::generation(); }

  MpmcView view_;
  WaitPolicy policy_;
  detail::WaitState wait_state_;  // what the wait loop learnt about spinning here
  std::uint32_t generation_ = 0;  // process::generation() at attach
  ClaimRecord* record_ = nullptr;
  std::uint64_t outstanding_ = 0;            // claims taken and not yet committed
  std::uint64_t recover_from_ = kClaimIdle;  // where our last recovery step stopped
  std::shared_ptr<void> lifetime_;  // the claim record held (detail::Holding), and the mapping
};

class MpmcConsumer {
 public:
  MpmcConsumer() noexcept = default;
  MpmcConsumer(MpmcConsumer&& other) noexcept { swap(other); }
  MpmcConsumer& operator=(MpmcConsumer&& other) noexcept {
    MpmcConsumer(std::move(other)).swap(*this);
    return *this;
  }
  ~MpmcConsumer();

  static MpmcConsumer attach(const Segment& segment, const WaitPolicy& policy = {});
  static MpmcConsumer attach(const Segment& segment, const WaitPolicy& policy, std::error_code& ec);

  explicit operator bool() const noexcept { return lifetime_ != nullptr; }
  std::uint64_t capacity() const noexcept { return view_.capacity(); }
  std::uint64_t slot_size() const noexcept { return view_.slot_size(); }
  // Messages dropped because their producer wrote an impossible length.
  std::uint64_t corrupt_dropped() const noexcept { return corrupt_dropped_; }

  // Copies the next message into `buffer`. If the buffer is too small:
  // too_large, `size` = the message's size, and this handle keeps the message
  // for its next pop (a claimed MPMC slot cannot go back to the others).
  [[nodiscard]] Status try_pop(std::span<std::byte> buffer, std::size_t& size) noexcept {
    if (!attached_here()) return Status::wrong_process;
    ReadClaim c = held_.empty() ? try_peek(1) : held_;
    if (c.empty()) return c.status();
    const std::span<const std::byte> m = c[0];
    size = m.size();
    if (m.size() > buffer.size()) {
      held_ = c;
      return Status::too_large;
    }
    copy_message(buffer.data(), m.data(), m.size());
    held_ = ReadClaim();
    release(c);
    return Status::ok;
  }
  [[nodiscard]] Status pop(std::span<std::byte> buffer, std::size_t& size,
                           std::chrono::nanoseconds timeout) noexcept;

  // Lends up to `max` consecutive messages in place, until release(). A
  // consumer may hold several claims at once.
  [[nodiscard]] ReadClaim try_peek(std::size_t max = 1) noexcept {
    if (!attached_here()) return ReadClaim(view_, 0, 0, Status::wrong_process);
    const std::uint64_t counter = before_claim();
    // Sleeping producers are woken once, after the skipped slots passed over
    // (each release of one would otherwise cost a system call).
    bool wake = false;
    ReadClaim c = next_claim(counter, max, wake);
    if (wake) wake_producers();
    return c;
  }
  [[nodiscard]] ReadClaim peek(std::size_t max, std::chrono::nanoseconds timeout) noexcept;

  // Hands the first `count` messages back to the producers.
  void release(ReadClaim& claim, std::size_t count) noexcept {
    if (count > claim.count_) count = static_cast<std::size_t>(claim.count_);
    if (count == 0 || !attached_here()) return;
    release_range(MpmcRange{claim.first_, count});
    claim.first_ += count;
    claim.count_ -= count;
    if (claim.count_ == 0) {
      if (outstanding_ != 0) --outstanding_;
      after_claims();
    }
  }
  void release(ReadClaim& claim) noexcept { release(claim, claim.size()); }

  // Releases the positions that consumers which died claimed and never
  // released (their messages are lost), if the producers wait at one.
  // Returns how many. Bounded and resumed as the producer's.
  std::uint64_t recover() noexcept { return recover_step().recovered; }
  // Positions of the consumer side recovered so far, by any process.
  std::uint64_t abandoned() const noexcept {
    return atomic::load_relaxed(&view_.consumer()->abandoned);
  }

 private:
  static MpmcConsumer do_attach(const Segment& segment, const WaitPolicy& policy,
                                detail::Failure& f);
  detail::RecoveryStep recover_step() noexcept;
  bool recovery_goes_on() noexcept;
  // A pass that a deadline cut short goes on by a step in each blocking
  // call, whether or not the call has to wait: the peers waiting behind the
  // dead claims may wait on nothing else.
  void go_on_recovering() noexcept {
    if (recover_from_ != kClaimIdle) (void)recover_step();
  }
  // As for the producer.
  std::uint64_t before_claim() noexcept {
    const std::uint64_t counter = atomic::load_relaxed(&view_.consumer()->position);
    if (outstanding_ == 0 && record_ != nullptr) atomic::store_relaxed(&record_->low, counter);
    return counter;
  }
  void after_claims() noexcept {
    if (outstanding_ == 0 && record_ != nullptr) atomic::store_release(&record_->low, kClaimIdle);
  }
  void release_range(MpmcRange r) noexcept {
    if (view_.release(r)) wake_producers();
  }
  // `counter`: the dequeue counter as before_claim() read it.
  ReadClaim next_claim(std::uint64_t counter, std::size_t max, bool& wake) noexcept {
    // An aborted or recovered claim is passed over; at most kMpmcSkipStep of
    // them a call, so that a lap of them (a scribbled counter's recovered
    // lap) costs each call a bounded time. would_block then, with progress
    // made: the next call goes on.
    for (std::uint64_t skipped = 0; skipped < kMpmcSkipStep; ++skipped) {
      Status status = Status::ok;
      const MpmcRange r = skipped == 0 ? view_.claim_read_from(counter, max, status)
                                       : view_.claim_read(max, status);
      if (r.count == 0) {
        after_claims();
        return ReadClaim(view_, 0, 0, status == Status::ok ? Status::would_block : status);
      }
      if (view_.skipped(r.first)) {
        wake = view_.release(r) || wake;
        continue;
      }
      for (std::uint64_t i = 0; i < r.count; ++i) {
        if (!view_.length_ok(view_.committed_length(r.first + i))) {
          // Unreadable: drop the whole run rather than hand out a clamped
          // message. It is counted, and the ring keeps moving.
          wake = view_.release(r) || wake;
          corrupt_dropped_ += r.count;
          after_claims();
          return ReadClaim(view_, 0, 0, Status::corrupt);
        }
      }
      ++outstanding_;
      return ReadClaim(view_, r.first, r.count, Status::ok);
    }
    after_claims();
    return ReadClaim(view_, 0, 0, Status::would_block);
  }
  void wake_producers() noexcept;
  void swap(MpmcConsumer& o) noexcept {
    std::swap(view_, o.view_);
    std::swap(policy_, o.policy_);
    std::swap(wait_state_, o.wait_state_);
    std::swap(held_, o.held_);
    std::swap(corrupt_dropped_, o.corrupt_dropped_);
    std::swap(generation_, o.generation_);
    std::swap(record_, o.record_);
    std::swap(outstanding_, o.outstanding_);
    std::swap(recover_from_, o.recover_from_);
    lifetime_.swap(o.lifetime_);
  }
  bool attached_here() const noexcept { return generation_ == process::generation(); }

  MpmcView view_;
  WaitPolicy policy_;
  detail::WaitState wait_state_;  // what the wait loop learnt about spinning here
  ReadClaim held_;                // a message too large for the last pop's buffer
  std::uint64_t corrupt_dropped_ = 0;
  std::uint32_t generation_ = 0;  // process::generation() at attach
  ClaimRecord* record_ = nullptr;
  std::uint64_t outstanding_ = 0;            // claims lent and not yet fully released
  std::uint64_t recover_from_ = kClaimIdle;  // where our last recovery step stopped
  std::shared_ptr<void> lifetime_;  // the claim record held (detail::Holding), and the mapping
};

}  // namespace shmring
