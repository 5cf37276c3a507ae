#include "shmring/spsc_ring.hpp"

#include <string>

#include "detail/attach.hpp"
#include "detail/blocking.hpp"
#include "detail/fail.hpp"
#include "shmring/event.hpp"

namespace shmring {
namespace {

using detail::as_timeout;
using detail::Failure;
using detail::not_would_block;

}  // namespace

// ---- producer --------------------------------------------------------------

SpscProducer SpscProducer::attach(const Segment& segment, const WaitPolicy& policy) {
  return detail::or_throw([&](Failure& f) { return do_attach(segment, policy, f); });
}

SpscProducer SpscProducer::attach(const Segment& segment, const WaitPolicy& policy,
                                  std::error_code& ec) {
  return detail::or_report(ec, [&](Failure& f) { return do_attach(segment, policy, f); });
}

SpscProducer SpscProducer::do_attach(const Segment& segment, const WaitPolicy& policy, Failure& f) {
  SpscProducer p;
  const detail::SpscAttachment a = detail::attach_spsc(segment, /*producer=*/true, f);
  if (f) return p;
  p.view_ = SpscView(segment.base(), segment.geometry());
  p.cursor_ = a.producer;
  p.policy_ = policy;
  p.wait_state_ = detail::WaitState::for_this_thread();
  p.generation_ = process::generation();
  p.lifetime_ = a.role;
  return p;
}

// The role goes with the last reference to it (detail::Holding).
SpscProducer::~SpscProducer() = default;

void SpscProducer::wake_consumer() noexcept {
  futex::notify_all(&view_.producer()->notify);
  (void)detail::signal_waiters(view_.base(), WaitFor::data);
}

Status SpscProducer::push(std::span<const std::byte> message,
                          std::chrono::nanoseconds timeout) noexcept {
  if (message.size() > view_.slot_size()) return Status::too_large;
  return as_timeout(detail::block_until(
      [&] { return try_push(message); }, not_would_block,
      [&] { return view_.space_ready(cursor_); }, &view_.producer_wait()->waiters,
      &view_.consumer()->notify, &view_.consumer()->gpu_attached, policy_, wait_state_, timeout));
}

WriteClaim SpscProducer::claim(std::size_t max, std::chrono::nanoseconds timeout) noexcept {
  if (max == 0) return try_claim(0);  // nothing asked for: no wait
  WriteClaim c = detail::block_until(
      [&] { return try_claim(max); },
      [](const WriteClaim& w) { return not_would_block(w.status()); },
      [&] { return view_.space_ready(cursor_); }, &view_.producer_wait()->waiters,
      &view_.consumer()->notify, &view_.consumer()->gpu_attached, policy_, wait_state_, timeout);
  if (c.status_ == Status::would_block) c.status_ = Status::timeout;
  return c;
}

// ---- consumer --------------------------------------------------------------

SpscConsumer SpscConsumer::attach(const Segment& segment, const WaitPolicy& policy) {
  return detail::or_throw([&](Failure& f) { return do_attach(segment, policy, f); });
}

SpscConsumer SpscConsumer::attach(const Segment& segment, const WaitPolicy& policy,
                                  std::error_code& ec) {
  return detail::or_report(ec, [&](Failure& f) { return do_attach(segment, policy, f); });
}

SpscConsumer SpscConsumer::do_attach(const Segment& segment, const WaitPolicy& policy, Failure& f) {
  SpscConsumer c;
  const detail::SpscAttachment a = detail::attach_spsc(segment, /*producer=*/false, f);
  if (f) return c;
  c.view_ = SpscView(segment.base(), segment.geometry());
  c.cursor_ = a.consumer;
  c.policy_ = policy;
  c.wait_state_ = detail::WaitState::for_this_thread();
  c.generation_ = process::generation();
  c.lifetime_ = a.role;
  return c;
}

SpscConsumer::~SpscConsumer() = default;

void SpscConsumer::wake_producer() noexcept {
  futex::notify_all(&view_.consumer()->notify);
  (void)detail::signal_waiters(view_.base(), WaitFor::room);
}

Status SpscConsumer::pop(std::span<std::byte> buffer, std::size_t& size,
                         std::chrono::nanoseconds timeout) noexcept {
  return as_timeout(detail::block_until(
      [&] { return try_pop(buffer, size); }, not_would_block,
      [&] { return view_.data_ready(cursor_); }, &view_.consumer_wait()->waiters,
      &view_.producer()->notify, &view_.producer()->gpu_attached, policy_, wait_state_, timeout));
}

ReadClaim SpscConsumer::peek(std::size_t max, std::chrono::nanoseconds timeout) noexcept {
  if (max == 0) return try_peek(0);  // nothing asked for: no wait
  ReadClaim c = detail::block_until(
      [&] { return try_peek(max); }, [](const ReadClaim& r) { return not_would_block(r.status()); },
      [&] { return view_.data_ready(cursor_); }, &view_.consumer_wait()->waiters,
      &view_.producer()->notify, &view_.producer()->gpu_attached, policy_, wait_state_, timeout);
  if (c.status_ == Status::would_block) c.status_ = Status::timeout;
  return c;
}

}  // namespace shmring
