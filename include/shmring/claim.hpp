// Zero-copy access: slots lent to a producer (WriteClaim) or a consumer
// (ReadClaim), in place, until the claim is finished.
//
// A claim is a move-only object that belongs to the handle that lent it and
// finishes itself: a WriteClaim is committed (commit, commit_batch) or
// aborted, a ReadClaim released; one dropped unfinished is aborted (an MPMC
// producer's slots committed as skipped, which consumers pass over) or
// released (its messages count as read). A finished claim holds no slots
// and its calls return Status::finished. A claim keeps its handle's state
// alive (handle.hpp), so it may outlive or follow a moved handle; a handle
// and its claims belong to one thread at a time. In a forked child a copy of
// a claim does nothing to the ring (Status::wrong_process).
//
// A claim is a run of consecutive positions; slot i of the claim is position
// first + i, which may wrap around the end of the slot array.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <utility>

#include "shmring/handle.hpp"
#include "shmring/ring_view.hpp"
#include "shmring/status.hpp"

namespace shmring {

class SpscProducer;
class SpscConsumer;
class MpmcProducer;
class MpmcConsumer;
class BroadcastProducer;
class BroadcastSubscriber;
class ReadClaim;
namespace detail {
template <class Handler>
std::size_t drain(ReadClaim claim, Handler& handler);
template <class Core>
class InOrderProducer;
}  // namespace detail

namespace detail {

// What the two claims share: the slots lent, and the core they go back to.
class Claim {
 public:
  std::size_t size() const noexcept { return static_cast<std::size_t>(count_); }
  bool empty() const noexcept { return count_ == 0; }
  explicit operator bool() const noexcept { return count_ != 0; }
  // ok while it holds slots; otherwise why not: would_block, timeout, busy,
  // corrupt, unsupported, wrong_process or detached for a claim that got none,
  // finished for one that was finished.
  Status status() const noexcept { return status_; }
  std::uint64_t position(std::size_t i) const noexcept { return first_ + i; }

 protected:
  Claim() noexcept = default;
  explicit Claim(Status status) noexcept : status_(status) {}
  Claim(HandleCore& core, const RingView& view, std::uint64_t first, std::uint64_t count) noexcept
      : core_(&core), view_(&view), first_(first), count_(count), status_(Status::ok) {
    lend(core);
  }
  Claim(Claim&& other) noexcept
      : core_(std::exchange(other.core_, nullptr)),
        view_(other.view_),
        first_(other.first_),
        count_(std::exchange(other.count_, 0)),
        status_(std::exchange(other.status_, Status::finished)) {}
  ~Claim() = default;
  void take(Claim&& other) noexcept {
    core_ = std::exchange(other.core_, nullptr);
    view_ = other.view_;
    first_ = other.first_;
    count_ = std::exchange(other.count_, 0);
    status_ = std::exchange(other.status_, Status::finished);
  }
  // Why nothing can be finished now (ok if something can).
  Status refusal() const noexcept {
    if (count_ == 0) return status_ == Status::ok ? Status::finished : status_;
    return core_->attached_here() ? Status::ok : Status::wrong_process;
  }
  // The claim holds nothing more: back to its core.
  void done() noexcept {
    count_ = 0;
    status_ = Status::finished;
    if (HandleCore* core = std::exchange(core_, nullptr)) give_back(*core);
  }

  HandleCore* core_ = nullptr;
  // The core's view: the core outlives the claim. A pointer, not a copy: a
  // claim is made and moved for every message.
  const RingView* view_ = nullptr;
  std::uint64_t first_ = 0;
  std::uint64_t count_ = 0;
  Status status_ = Status::would_block;

  friend class shmring::SpscProducer;
  friend class shmring::SpscConsumer;
  friend class shmring::MpmcProducer;
  friend class shmring::MpmcConsumer;
  friend class shmring::BroadcastProducer;
  friend class shmring::BroadcastSubscriber;
  friend struct CallEnd;  // a blocking claim's end (src/detail/blocking.hpp)
};

}  // namespace detail

class WriteClaim : public detail::Claim {
 public:
  WriteClaim() noexcept = default;
  WriteClaim(WriteClaim&& other) noexcept = default;
  WriteClaim& operator=(WriteClaim&& other) noexcept {
    if (this != &other) {
      abort();
      sized_ = other.sized_;
      take(std::move(other));
    }
    return *this;
  }
  ~WriteClaim() { abort(); }

  // The whole writable payload of slot i (slot_size bytes, 64-byte aligned).
  std::span<std::byte> operator[](std::size_t i) const noexcept {
    return {view_->payload(first_ + i), static_cast<std::size_t>(view_->slot_size())};
  }

  // How many bytes of slot i a commit_batch() publishes (the full slot until
  // set). too_large, and nothing recorded, if `bytes` exceeds the slot.
  [[nodiscard]] Status set_size(std::size_t i, std::size_t bytes) noexcept {
    if (i >= count_) return count_ == 0 ? Status::finished : Status::too_large;
    if (bytes > view_->slot_size()) return Status::too_large;
    view_->set_length(first_ + i, static_cast<std::uint32_t>(bytes));
    if (i < kTracked) sized_ |= std::uint64_t{1} << i;
    return Status::ok;
  }

  // Publishes slot 0 with `bytes` of payload and gives up the rest of the
  // claim. too_large, and the claim kept, if `bytes` does not fit.
  [[nodiscard]] Status commit(std::size_t bytes) noexcept {
    // The one-message path, written out: it runs once per message.
    if (count_ == 0 || !core_->attached_here()) return refusal();
    if (bytes > view_->slot_size()) return Status::too_large;
    view_->set_length(first_, static_cast<std::uint32_t>(bytes));
    core_->finish_write(first_, count_, 1);
    done();
    return Status::ok;
  }
  // Publishes the first `count` slots (all of them by default), their sizes
  // as set with set_size, with one publication; gives up the rest.
  Status commit_batch(std::size_t count) noexcept {
    if (const Status s = refusal(); s != Status::ok) return s;
    if (count > count_) count = static_cast<std::size_t>(count_);
    // Slots whose size was never set publish the whole slot.
    for (std::size_t i = 0; i < count && i < kTracked; ++i) {
      if ((sized_ >> i & 1) == 0) {
        view_->set_length(first_ + i, static_cast<std::uint32_t>(view_->slot_size()));
      }
    }
    core_->finish_write(first_, count_, count);
    done();
    return Status::ok;
  }
  Status commit_batch() noexcept { return commit_batch(size()); }
  // Gives the slots up unpublished.
  void abort() noexcept {
    if (count_ != 0 && core_->attached_here()) core_->finish_write(first_, count_, 0);
    if (core_ != nullptr) done();
  }

 private:
  friend class SpscProducer;
  friend class MpmcProducer;
  friend class BroadcastProducer;
  template <class Core>
  friend class detail::InOrderProducer;
  explicit WriteClaim(Status status) noexcept : Claim(status) {}
  // A fresh claim: every slot's size is the whole slot until set. The first
  // kTracked slots record that in `sized_` and get their length at commit:
  // the length shares the trailer line that consumers poll, and writing it
  // before the payload would pull that line over from them one extra time.
  // Slots beyond (large batches only) get it now.
  WriteClaim(detail::HandleCore& core, const RingView& view, std::uint64_t first,
             std::uint64_t count) noexcept
      : Claim(core, view, first, count) {
    for (std::uint64_t i = kTracked; i < count; ++i) {
      view.set_length(first + i, static_cast<std::uint32_t>(view.slot_size()));
    }
  }
  static constexpr std::size_t kTracked = 64;
  std::uint64_t sized_ = 0;  // bit i: slot i's size was set
};

class ReadClaim : public detail::Claim {
 public:
  ReadClaim() noexcept = default;
  ReadClaim(ReadClaim&& other) noexcept = default;
  ReadClaim& operator=(ReadClaim&& other) noexcept {
    if (this != &other) {
      release();
      take(std::move(other));
    }
    return *this;
  }
  ~ReadClaim() { release(); }

  // The message in slot i, in place.
  std::span<const std::byte> operator[](std::size_t i) const noexcept {
    const ReadSlot s = view_->read_slot(first_ + i);
    return {s.data, s.size};
  }

  // Whether what was read in place is still the claim's messages. Always
  // true but on a lossy broadcast ring, whose producer may rewrite a slot
  // while it is read: there, ask after reading (with load_words()) and
  // discard what was read if false (broadcast_ring.hpp). False for a claim
  // that holds nothing.
  bool valid() const noexcept {
    if (count_ == 0 || !core_->attached_here()) return false;
    // The producer rewrites slots in position order, so a later slot of the
    // claim is rewritten only after the first: the first one answers for all.
    return core_->still_valid(first_);
  }

  // Hands the first `count` messages back with one store; the claim keeps
  // the rest.
  Status release(std::size_t count) noexcept {
    if (const Status s = refusal(); s != Status::ok) return s;
    if (count > count_) count = static_cast<std::size_t>(count_);
    if (count == 0) return Status::ok;
    core_->finish_read(first_, count);
    first_ += count;
    count_ -= count;
    if (count_ == 0) done();
    return Status::ok;
  }
  // Hands the messages back unread: the handle's next read starts with them
  // (SPSC: the tail does not move; MPMC: the handle keeps them, as claimed
  // positions cannot go back to the others). MPMC: busy, and the claim kept,
  // if the handle already keeps messages that these do not adjoin.
  Status put_back() noexcept {
    if (const Status s = refusal(); s != Status::ok) return s;
    if (!core_->keep_unread(first_, count_)) return Status::busy;
    done();
    return Status::ok;
  }
  // Hands every message of the claim back.
  Status release() noexcept {
    if (count_ == 0) return refusal();
    if (!core_->attached_here()) {
      done();  // a forked child's copy: the ring is not ours to touch
      return Status::wrong_process;
    }
    core_->finish_read(first_, count_);
    done();
    return Status::ok;
  }

 private:
  friend class SpscConsumer;
  friend class MpmcConsumer;
  friend class BroadcastSubscriber;
  explicit ReadClaim(Status status) noexcept : Claim(status) {}
  ReadClaim(detail::HandleCore& core, const RingView& view, std::uint64_t first,
            std::uint64_t count) noexcept
      : Claim(core, view, first, count) {}
};

namespace detail {

// drain(): each message of the claim to `handler`, then one release for all.
// If the handler throws, the messages up to the one that threw are released
// and the rest stay unread for the next call.
template <class Handler>
std::size_t drain(ReadClaim claim, Handler& handler) {
  const std::size_t n = claim.size();
  std::size_t i = 0;
  try {
    for (; i < n; ++i) handler(claim[i]);
  } catch (...) {
    (void)claim.release(i + 1);
    (void)claim.put_back();  // these came from the front: they can always be kept
    throw;
  }
  (void)claim.release();
  return n;
}

}  // namespace detail

}  // namespace shmring
