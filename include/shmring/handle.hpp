// What every role handle is: a move-only owner of its role's state.
//
// The state of a handle (its view of the ring, its position, how it waits,
// the role it holds) lives in a core on the heap, and the handle is a pointer
// to it. Claims point to the same core, so a claim stays valid when its
// handle is moved, and a claim that outlives its handle keeps the core (and
// with it the role and the mapping) until it is finished: the last of the
// handle and its claims to go frees the core. A handle and its claims belong
// to one thread at a time, as the handle always did; the count of live claims
// is therefore a plain integer.
//
// Events and end of stream (docs/events.md). Every handle can hand out a
// descriptor (event_fd()) that is readable while a try_ call may make
// progress or has news (end of stream, a dead peer): the core owns the
// waiter, made when first asked for, and a try_ call that finds nothing
// (would_block) arms it again, so that "readable" means "call try_ until it
// says would_block" and an event loop needs nothing else. The core also owns
// the signaller that wakes the other side's descriptors, used only where the
// futex wake already runs.
#pragma once

#include <cstdint>
#include <memory>
#include <system_error>
#include <utility>

#include "shmring/atomic.hpp"
#include "shmring/error.hpp"
#include "shmring/event.hpp"
#include "shmring/layout.hpp"
#include "shmring/process.hpp"
#include "shmring/segment.hpp"
#include "shmring/status.hpp"
#include "shmring/wait.hpp"

namespace shmring::detail {

struct Failure;

// The state every role shares.
struct HandleCore {
  HandleCore() = default;
  HandleCore(const HandleCore&) = delete;
  HandleCore& operator=(const HandleCore&) = delete;
  virtual ~HandleCore() = default;

  bool attached_here() const noexcept { return generation == process::generation(); }

  // How a claim of this handle is finished (claim.hpp): a producer publishes
  // the first `publish` of the `count` slots from `first` and gives up the
  // rest (MPMC: commits them as skipped); a consumer hands `count` messages
  // from `first` back. Called in the process that attached the handle only.
  virtual void finish_write(std::uint64_t first, std::uint64_t count,
                            std::uint64_t publish) noexcept {
    (void)first, (void)count, (void)publish;
  }
  virtual void finish_read(std::uint64_t first, std::uint64_t count) noexcept {
    (void)first, (void)count;
  }
  // A consumer keeps `count` messages from `first` unread, to hand out again
  // first (ReadClaim::put_back). SPSC: nothing to do, its tail has not moved
  // past them. False if it cannot keep them.
  virtual bool keep_unread(std::uint64_t first, std::uint64_t count) noexcept {
    (void)first, (void)count;
    return true;
  }
  // After the last claim of the handle is finished, if `tracks_claims`: a
  // flag rather than a virtual call for every handle, as it runs once per
  // message and only MPMC handles need it.
  virtual void claims_done() noexcept {}
  bool tracks_claims = false;
  // Whether what a reader read in place from `position` on is still the
  // message there (ReadClaim::valid). Only a lossy broadcast ring rewrites
  // slots under its readers.
  virtual bool still_valid(std::uint64_t position) const noexcept {
    (void)position;
    return true;
  }

  // What this role waits for: data (consumers) or room (producers).
  virtual WaitFor waits_for() const noexcept { return WaitFor::data; }
  // May a try_ call make progress now (seq_cst loads, as the views' ready
  // checks)? The progress half of the descriptor's readiness.
  virtual bool progress_ready() const noexcept { return true; }
  // What a try_ call that found nothing reports: Status::closed or
  // Status::peer_dead once the stream ended, else would_block. `probe`:
  // also look for a dead peer (lock probes: system calls, so only where a
  // wait is due). A dead peer found is remembered for the next call.
  virtual Status end_status(bool probe) noexcept {
    (void)probe;
    return Status::would_block;
  }

  // A try_ call of a handle with a descriptor found nothing, and its user
  // waits on the descriptor next: what a blocking call does before it
  // sleeps. MPMC: one bounded recovery step (a side stuck behind the claims
  // of dead handles gets going again; without it, a handle driven only by
  // its descriptor never recovers them).
  virtual void before_wait() noexcept {}

  // A try_ call found nothing: the end of the stream if it ended, else
  // would_block, with the descriptor (if made) armed again, or made readable
  // when the ring moved meanwhile. Out of line (handle.cpp): not the path of
  // a message.
  Status nothing_now() noexcept;
  // The readiness predicate of the descriptor: progress, or an ended stream.
  bool event_ready() noexcept {
    return progress_ready() || end_status(true) != Status::would_block;
  }
  // The waiter, opened (and made readable, so that the first try arms it)
  // when first asked for.
  // Throws shmring::Error as EventWaiter::open.
  EventWaiter& open_events();

  Segment segment;              // the mapping, for the waiter opened later and the signaller
  EventSignaller signaller;     // wakes the other side's descriptors
  EventWaiter events;           // ours, once event_fd() was asked for
  std::uint32_t quiet = 0;      // in a blocking call: its tries do not arm the descriptor
  bool peer_dead_seen = false;  // end_status(true) found the peer dead
  // Producers: close() was called (later pushes say Status::closed), and
  // whether the handle's end closes the stream.
  bool closed_here = false;
  bool close_on_exit = true;

  WaitPolicy policy;
  WaitState wait_state;                  // what the wait loop learnt about spinning here
  std::uint32_t generation = 0;          // process::generation() at attach
  std::uint32_t live_claims = 0;         // claims lent and not yet finished
  bool handle_gone = false;              // the handle went first: the last claim frees the core
  std::shared_ptr<const void> lifetime;  // the role held, and through it the mapping
};

// While a blocking call runs, its tries leave the descriptor alone (the call
// waits on the futex; arming at every spin would cost system calls).
class QuietTries {
 public:
  explicit QuietTries(HandleCore& core) noexcept : core_(core) { ++core_.quiet; }
  ~QuietTries() { --core_.quiet; }
  QuietTries(const QuietTries&) = delete;
  QuietTries& operator=(const QuietTries&) = delete;

 private:
  HandleCore& core_;
};

// The end of a producer's stream (docs/events.md), for the cores of every
// ring: the handle's later pushes say Status::closed, and the stream word
// says closed. The caller then wakes the consumers, whether or not they sleep.
inline void close_stream(HandleCore& core, std::uint32_t* stream) noexcept {
  core.closed_here = true;
  // SYNC POINT (seq_cst store, after every publication of this handle): a
  // consumer that reads kStreamClosed then re-reads the head (or the turn
  // of its next slot) sees every message. Against an arming waiter (a
  // seq_cst RMW, then its re-check reads this word) it is the sleeper
  // handshake: the waiter sees the word, or the wake-up that follows finds
  // its bit.
  atomic::store_seq_cst(stream, kStreamClosed);
}
// Whether the end of a producer's handle closes its stream: it asked to,
// has not yet, and is the live handle of the process that attached it.
inline bool closes_at_exit(const HandleCore& core) noexcept {
  return core.close_on_exit && !core.closed_here && core.lifetime && core.attached_here();
}

// A fresh core's shared state: attached in this process now, waiting as
// `policy` says, holding `lifetime` (the role, and through it the mapping),
// and ready to open and signal descriptors on `segment`.
inline void init_core(HandleCore& core, const Segment& segment, const WaitPolicy& policy,
                      std::shared_ptr<const void> lifetime) {
  core.policy = policy;
  core.wait_state = WaitState::for_this_thread();
  core.generation = process::generation();
  core.lifetime = std::move(lifetime);
  core.segment = segment.share();
  core.signaller = EventSignaller(segment);
}

// Why a call of a handle without a usable core did nothing.
inline Status unusable(const HandleCore* core) noexcept {
  return core == nullptr ? Status::detached : Status::wrong_process;
}
inline bool usable(const HandleCore* core) noexcept {
  return core != nullptr && core->attached_here();
}

// A claim is lent: the core stays until it is finished.
inline void lend(HandleCore& core) noexcept { ++core.live_claims; }
// A claim is finished: the core goes if its handle went before.
inline void give_back(HandleCore& core) noexcept {
  if (--core.live_claims != 0) return;
  if (core.tracks_claims && core.attached_here()) core.claims_done();
  if (core.handle_gone) delete &core;
}

// The attach calls of a handle type H, written once for every ring: the
// throwing form (shmring::Error) and the error_code form, around
// H::do_attach(segment, options..., policy, failure), the steps of H's own
// (this class is its friend). `Options`: what H asks for between the segment
// and the policy (a broadcast subscriber's JoinAt). Defined in
// src/detail/attach.hpp and instantiated in each handle's source file.
template <class H, class... Options>
class AttachForms {
 public:
  static H attach(const Segment& segment, Options... options, const WaitPolicy& policy = {});
  static H attach(const Segment& segment, Options... options, const WaitPolicy& policy,
                  std::error_code& ec);
};

// The one base of the role handles: ownership of the core, moves, and what
// every handle answers the same way.
template <class Core>
class Handle {
 public:
  explicit operator bool() const noexcept { return core_ != nullptr; }
  std::uint64_t capacity() const noexcept { return core_ ? core_->view.capacity() : 0; }
  std::uint64_t slot_size() const noexcept { return core_ ? core_->view.slot_size() : 0; }
  // SlotFormat::low_latency: copy calls only.
  bool low_latency() const noexcept { return core_ && core_->view.low_latency(); }
  WaitPolicy wait_policy() const noexcept { return core_ ? core_->policy : WaitPolicy{}; }
  // How later blocking calls wait (WaitPolicy); what the handle learnt about
  // spinning is kept.
  void set_wait_policy(const WaitPolicy& policy) noexcept {
    if (core_) core_->policy = policy;
  }
  // Gives the role up now, as destroying the handle does (a claim still live
  // keeps it until the claim is finished). Later calls return
  // Status::detached.
  void detach() noexcept { drop(); }

  // A descriptor for poll/epoll/select or an event loop, readable while a
  // try_ call of this handle may make progress (data for a consumer, room
  // for a producer) or would report the end of the stream (Status::closed,
  // Status::peer_dead). The protocol: wait until it is readable, then call
  // try_ forms until one returns would_block; that call arms the descriptor
  // again (or leaves it readable if the ring moved meanwhile), so wait
  // again. It may also be readable for nothing (a periodic "look",
  // event.hpp): the try says would_block and re-arms. Made when first asked
  // for (a FIFO in /dev/shm and an entry of the segment's event table,
  // kEventEntries per kind of waiter), closed with the handle; the handle
  // keeps it, do not close it. Throws shmring::Error: errc::invalid_argument
  // for an empty handle, errc::wrong_process in a forked child, else as
  // EventWaiter::open (errc::role_taken when the table is full).
  int event_fd() { return event_waiter().fd(); }
  // The waiter behind event_fd(), for WaitSet::add(handle, tag).
  EventWaiter& event_waiter() {
    if (core_ == nullptr) {
      throw Error(make_error_code(errc::invalid_argument), "event_fd: the handle holds no ring");
    }
    if (!core_->attached_here()) {
      throw Error(make_error_code(errc::invalid_argument),
                  "event_fd: the handle was attached by another process (a forked child's "
                  "copy); attach a handle of its own");
    }
    return core_->open_events();
  }
  // Whether event_fd() was asked for.
  bool has_event_fd() const noexcept { return core_ && core_->events; }

 protected:
  Handle() noexcept = default;
  explicit Handle(std::unique_ptr<Core> core) noexcept : core_(core.release()) {}
  Handle(Handle&& other) noexcept : core_(std::exchange(other.core_, nullptr)) {}
  Handle& operator=(Handle&& other) noexcept {
    if (this != &other) {
      drop();
      core_ = std::exchange(other.core_, nullptr);
    }
    return *this;
  }
  ~Handle() { drop(); }

  // Why a call that takes slots cannot run now, for handles that hold one
  // claim at a time because their ring is read (or written) in order: busy
  // while that claim is live.
  Status exclusive_refusal() const noexcept {
    if (!usable(core_)) return unusable(core_);
    return core_->live_claims != 0 ? Status::busy : Status::ok;
  }

  Core* core_ = nullptr;

 private:
  void drop() noexcept {
    if (core_ == nullptr) return;
    if (core_->live_claims == 0) {
      delete core_;
    } else {
      core_->handle_gone = true;
    }
    core_ = nullptr;
  }
};

}  // namespace shmring::detail
