#include "shmring/mpmc_ring.hpp"

#include <unistd.h>

#include <string>

#include "detail/attach.hpp"
#include "detail/blocking.hpp"
#include "detail/claims.hpp"
#include "detail/fail.hpp"
#include "detail/holding.hpp"
#include "shmring/event.hpp"

namespace shmring {
namespace {

using detail::Failure;

using detail::as_timeout;
using detail::not_would_block;

}  // namespace

// ---- producer --------------------------------------------------------------

MpmcProducer MpmcProducer::attach(const Segment& segment, const WaitPolicy& policy) {
  return detail::or_throw([&](Failure& f) { return do_attach(segment, policy, f); });
}

MpmcProducer MpmcProducer::attach(const Segment& segment, const WaitPolicy& policy,
                                  std::error_code& ec) {
  return detail::or_report(ec, [&](Failure& f) { return do_attach(segment, policy, f); });
}

MpmcProducer MpmcProducer::do_attach(const Segment& segment, const WaitPolicy& policy, Failure& f) {
  MpmcProducer p;
  if ((f = detail::check_attachable(segment, RingKind::mpmc, "MPMC producer"))) return p;
  MpmcView view(segment.base(), segment.geometry());
  // Count ourselves in before looking for GPU agents; a GPU attach does the
  // reverse, so of two racing attaches at least one sees the other.
  atomic::fetch_add(&view.producer()->attached, std::uint32_t{1});
  if ((f = detail::check_cpu_may_join(segment, *view.producer(), "MPMC producer"))) {
    atomic::fetch_sub(&view.producer()->attached, std::uint32_t{1});
    return p;
  }
  std::shared_ptr<detail::Holding> holding;
  p.record_ = detail::take_claim_record(segment, /*producer=*/true, holding, f);
  if (f) {
    atomic::fetch_sub(&view.producer()->attached, std::uint32_t{1});
    return p;
  }
  p.view_ = view;
  p.policy_ = policy;
  p.wait_state_ = detail::WaitState::for_this_thread();
  p.lifetime_ = std::move(holding);
  p.generation_ = process::generation();
  // A producer that takes over from dead ones finishes what they left.
  (void)p.recover();
  return p;
}

// The claim record goes back with the last reference to it (lifetime_).
MpmcProducer::~MpmcProducer() {
  if (lifetime_ && attached_here()) {
    detail::idle_claim_record(record_);
    atomic::fetch_sub(&view_.producer()->attached, std::uint32_t{1});
  }
}

detail::RecoveryStep MpmcProducer::recover_step() noexcept {
  if (!lifetime_ || !attached_here()) return {};
  auto& holding = *static_cast<detail::Holding*>(lifetime_.get());
  const detail::RecoveryStep step = detail::recover_producer_claims(view_, holding, recover_from_);
  if (step.recovered != 0) wake_consumers();  // they were waiting at the recovered slots
  return step;
}

// A blocking call's stalled(): one recovery step; true to be called again,
// after a look at the deadline (block_until).
bool MpmcProducer::recovery_goes_on() noexcept {
  const detail::RecoveryStep step = recover_step();
  return step.recovered != 0 || step.more;
}

void MpmcProducer::wake_consumers() noexcept {
  futex::notify_all(&view_.producer()->notify);
  (void)detail::signal_waiters(view_.base(), WaitFor::data);
}

Status MpmcProducer::push(std::span<const std::byte> message,
                          std::chrono::nanoseconds timeout) noexcept {
  if (message.size() > view_.slot_size()) return Status::too_large;
  go_on_recovering();
  return as_timeout(detail::block_until(
      [&] { return try_push(message); }, not_would_block, [&] { return view_.space_ready(); },
      &view_.producer_wait()->waiters, &view_.consumer()->notify, &view_.consumer()->gpu_attached,
      policy_, wait_state_, timeout, [this] { return recovery_goes_on(); }));
}

WriteClaim MpmcProducer::claim(std::size_t max, std::chrono::nanoseconds timeout) noexcept {
  if (max == 0) return try_claim(0);  // nothing asked for: no wait
  go_on_recovering();
  WriteClaim c =
      detail::block_until([&] { return try_claim(max); },
                          [](const WriteClaim& w) { return not_would_block(w.status()); },
                          [&] { return view_.space_ready(); }, &view_.producer_wait()->waiters,
                          &view_.consumer()->notify, &view_.consumer()->gpu_attached, policy_,
                          wait_state_, timeout, [this] { return recovery_goes_on(); });
  if (c.status_ == Status::would_block) c.status_ = Status::timeout;
  return c;
}

// ---- consumer --------------------------------------------------------------

MpmcConsumer MpmcConsumer::attach(const Segment& segment, const WaitPolicy& policy) {
  return detail::or_throw([&](Failure& f) { return do_attach(segment, policy, f); });
}

MpmcConsumer MpmcConsumer::attach(const Segment& segment, const WaitPolicy& policy,
                                  std::error_code& ec) {
  return detail::or_report(ec, [&](Failure& f) { return do_attach(segment, policy, f); });
}

MpmcConsumer MpmcConsumer::do_attach(const Segment& segment, const WaitPolicy& policy, Failure& f) {
  MpmcConsumer c;
  if ((f = detail::check_attachable(segment, RingKind::mpmc, "MPMC consumer"))) return c;
  MpmcView view(segment.base(), segment.geometry());
  // Count ourselves in before looking for GPU agents; a GPU attach does the
  // reverse, so of two racing attaches at least one sees the other.
  atomic::fetch_add(&view.consumer()->attached, std::uint32_t{1});
  if ((f = detail::check_cpu_may_join(segment, *view.consumer(), "MPMC consumer"))) {
    atomic::fetch_sub(&view.consumer()->attached, std::uint32_t{1});
    return c;
  }
  std::shared_ptr<detail::Holding> holding;
  c.record_ = detail::take_claim_record(segment, /*producer=*/false, holding, f);
  if (f) {
    atomic::fetch_sub(&view.consumer()->attached, std::uint32_t{1});
    return c;
  }
  c.view_ = view;
  c.policy_ = policy;
  c.wait_state_ = detail::WaitState::for_this_thread();
  c.lifetime_ = std::move(holding);
  c.generation_ = process::generation();
  (void)c.recover();
  return c;
}

detail::RecoveryStep MpmcConsumer::recover_step() noexcept {
  if (!lifetime_ || !attached_here()) return {};
  auto& holding = *static_cast<detail::Holding*>(lifetime_.get());
  const detail::RecoveryStep step = detail::recover_consumer_claims(view_, holding, recover_from_);
  if (step.recovered != 0) wake_producers();  // they were waiting for the recovered slots
  return step;
}

MpmcConsumer::~MpmcConsumer() {
  if (!lifetime_ || !attached_here()) return;
  // A message kept for a larger buffer is given up rather than left claimed
  // (a claimed slot would stall every producer a lap later).
  if (!held_.empty()) release(held_);
  detail::idle_claim_record(record_);
  atomic::fetch_sub(&view_.consumer()->attached, std::uint32_t{1});
}

bool MpmcConsumer::recovery_goes_on() noexcept {
  const detail::RecoveryStep step = recover_step();
  return step.recovered != 0 || step.more;
}

void MpmcConsumer::wake_producers() noexcept {
  futex::notify_all(&view_.consumer()->notify);
  (void)detail::signal_waiters(view_.base(), WaitFor::room);
}

Status MpmcConsumer::pop(std::span<std::byte> buffer, std::size_t& size,
                         std::chrono::nanoseconds timeout) noexcept {
  go_on_recovering();
  return as_timeout(detail::block_until(
      [&] { return try_pop(buffer, size); }, not_would_block, [&] { return view_.data_ready(); },
      &view_.consumer_wait()->waiters, &view_.producer()->notify, &view_.producer()->gpu_attached,
      policy_, wait_state_, timeout, [this] { return recovery_goes_on(); }));
}

ReadClaim MpmcConsumer::peek(std::size_t max, std::chrono::nanoseconds timeout) noexcept {
  if (max == 0) return try_peek(0);  // nothing asked for: no wait
  go_on_recovering();
  ReadClaim c = detail::block_until(
      [&] { return try_peek(max); }, [](const ReadClaim& r) { return not_would_block(r.status()); },
      [&] { return view_.data_ready(); }, &view_.consumer_wait()->waiters,
      &view_.producer()->notify, &view_.producer()->gpu_attached, policy_, wait_state_, timeout,
      [this] { return recovery_goes_on(); });
  if (c.status_ == Status::would_block) c.status_ = Status::timeout;
  return c;
}

}  // namespace shmring
