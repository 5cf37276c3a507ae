// What the producers of the rings that are written in order (SPSC,
// broadcast) share: one writer, a head it alone moves, one claim at a time.
// Their cores have `view` (writable(cursor, want, status), slot_size(),
// low_latency()), `cursor` (head), write(position, message), publish(count)
// and close() (the end of the stream, docs/events.md); the handles add the
// blocking forms, which wait each in their own way.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>

#include "shmring/claim.hpp"
#include "shmring/handle.hpp"
#include "shmring/status.hpp"

namespace shmring::detail {

// Why an in-order handle got none of what it asked for: what the view said,
// or that there is nothing yet (which also re-arms its descriptor, and says
// closed or peer_dead once the stream ended: HandleCore::nothing_now).
inline Status none_because(HandleCore& core, Status status) noexcept {
  return status == Status::ok ? core.nothing_now() : status;
}

template <class Core>
class InOrderProducer : public Handle<Core> {
 public:
  // Why a call that takes slots does nothing now (ok if it may): a claim of
  // this handle is live, or this handle closed the stream.
  Status producer_refusal() const noexcept {
    if (const Status s = this->exclusive_refusal(); s != Status::ok) return s;
    return this->core_->closed_here ? Status::closed : Status::ok;
  }

  // Ends the stream (docs/events.md): the consumers read what was
  // published, then get Status::closed; this handle's later pushes and
  // claims get it too. The handle keeps the role. A producer that attaches
  // later reopens the stream. Returns ok, or why nothing happened (detached,
  // wrong_process, busy while a claim is live).
  Status close() noexcept {
    if (this->core_ != nullptr && this->core_->closed_here) return Status::ok;
    if (const Status s = this->exclusive_refusal(); s != Status::ok) return s;
    this->core_->close();
    return Status::ok;
  }
  bool closed() const noexcept { return this->core_ && this->core_->closed_here; }
  // Whether the end of this handle (destruction, or assigning over it)
  // closes the stream as close() does; true by default. false leaves the
  // stream open for a producer that attaches later.
  void set_close_on_exit(bool close) noexcept {
    if (this->core_) this->core_->close_on_exit = close;
  }
  bool close_on_exit() const noexcept { return this->core_ && this->core_->close_on_exit; }

  // Messages published through this ring so far (the head position).
  std::uint64_t position() const noexcept { return this->core_ ? this->core_->cursor.head : 0; }

  // Copies one message into the ring.
  [[nodiscard]] Status try_push(std::span<const std::byte> message) noexcept {
    if (const Status s = producer_refusal(); s != Status::ok) return s;
    Core& c = *this->core_;
    if (message.size() > c.view.slot_size()) return Status::too_large;
    Status status = Status::ok;
    if (c.view.writable(c.cursor, 1, status) == 0) {
      return none_because(c, status);
    }
    c.write(c.cursor.head, message);
    c.publish(1);
    return Status::ok;
  }

  // Copies up to messages.size() messages with one publication; returns how
  // many went in (stops at the first that is too large, or when full).
  std::size_t try_push_many(std::span<const std::span<const std::byte>> messages) noexcept {
    if (producer_refusal() != Status::ok) return 0;
    Core& c = *this->core_;
    // Asking the view for no more than will go in: a lossy broadcast ring
    // takes every slot asked for from its readers.
    std::size_t fit = 0;
    while (fit < messages.size() && messages[fit].size() <= c.view.slot_size()) ++fit;
    Status status = Status::ok;
    const std::uint64_t n = c.view.writable(c.cursor, fit, status);
    if (n == 0 && status == Status::ok && fit != 0) (void)c.nothing_now();  // re-arms
    for (std::uint64_t i = 0; i < n; ++i) c.write(c.cursor.head + i, messages[i]);
    if (n != 0) c.publish(n);
    return static_cast<std::size_t>(n);
  }

  // Lends up to `max` free slots to write in place (claim.hpp); unsupported
  // on low-latency slots.
  [[nodiscard]] WriteClaim try_claim(std::size_t max = 1) noexcept {
    if (const Status s = producer_refusal(); s != Status::ok) return WriteClaim(s);
    Core& c = *this->core_;
    if (c.view.low_latency()) return WriteClaim(Status::unsupported);
    Status status = Status::ok;
    const std::uint64_t n = c.view.writable(c.cursor, max, status);
    if (n == 0) return WriteClaim(none_because(c, status));
    return WriteClaim(c, c.view, c.cursor.head, n);
  }

 protected:
  InOrderProducer() noexcept = default;
};

}  // namespace shmring::detail
