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

// A core for the role `a` took, in this process.
template <class Core>
std::unique_ptr<Core> make_core(const Segment& segment, const WaitPolicy& policy,
                                std::shared_ptr<detail::Holding> role) {
  auto core = std::make_unique<Core>();
  core->view = SpscView(segment.base(), segment.geometry());
  detail::init_core(*core, policy, std::move(role));
  return core;
}

}  // namespace

// Sleepers on the futex, and waiters in epoll (event.hpp).
void detail::SpscProducerCore::wake_consumer() noexcept {
  futex::notify_all(&view.producer()->notify);
  (void)signal_waiters(view.base(), WaitFor::data);
}

void detail::SpscConsumerCore::wake_producer() noexcept {
  futex::notify_all(&view.consumer()->notify);
  (void)signal_waiters(view.base(), WaitFor::room);
}

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
  detail::SpscAttachment a = detail::attach_spsc(segment, /*producer=*/true, f);
  if (f) return p;
  auto core = make_core<detail::SpscProducerCore>(segment, policy, std::move(a.role));
  core->cursor = a.producer;
  p.core_ = core.release();
  return p;
}

Status SpscProducer::push(std::span<const std::byte> message,
                          std::chrono::nanoseconds timeout) noexcept {
  if (const Status s = exclusive_refusal(); s != Status::ok) return s;
  if (message.size() > core_->view.slot_size()) return Status::too_large;
  detail::SpscProducerCore& c = *core_;
  return as_timeout(detail::block_until(
      detail::room_side(c.view), c.policy, c.wait_state, timeout, [&] { return try_push(message); },
      not_would_block, [&] { return c.view.space_ready(c.cursor); }));
}

WriteClaim SpscProducer::claim(std::size_t max, std::chrono::nanoseconds timeout) noexcept {
  if (max == 0 || exclusive_refusal() != Status::ok) return try_claim(max);  // no wait
  detail::SpscProducerCore& c = *core_;
  WriteClaim claim = detail::block_until(
      detail::room_side(c.view), c.policy, c.wait_state, timeout, [&] { return try_claim(max); },
      detail::claim_done<WriteClaim>, [&] { return c.view.space_ready(c.cursor); });
  if (claim.status_ == Status::would_block) claim.status_ = Status::timeout;
  return claim;
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
  detail::SpscAttachment a = detail::attach_spsc(segment, /*producer=*/false, f);
  if (f) return c;
  auto core = make_core<detail::SpscConsumerCore>(segment, policy, std::move(a.role));
  core->cursor = a.consumer;
  c.core_ = core.release();
  return c;
}

Status SpscConsumer::pop(std::span<std::byte> buffer, std::size_t& size,
                         std::chrono::nanoseconds timeout) noexcept {
  if (const Status s = exclusive_refusal(); s != Status::ok) return s;
  detail::SpscConsumerCore& c = *core_;
  return as_timeout(detail::block_until(
      detail::data_side(c.view), c.policy, c.wait_state, timeout,
      [&] { return try_pop(buffer, size); }, not_would_block,
      [&] { return c.view.data_ready(c.cursor); }));
}

ReadClaim SpscConsumer::peek(std::size_t max, std::chrono::nanoseconds timeout) noexcept {
  if (max == 0 || exclusive_refusal() != Status::ok) return try_peek(max);  // no wait
  detail::SpscConsumerCore& c = *core_;
  ReadClaim claim = detail::block_until(
      detail::data_side(c.view), c.policy, c.wait_state, timeout, [&] { return try_peek(max); },
      detail::claim_done<ReadClaim>, [&] { return c.view.data_ready(c.cursor); });
  if (claim.status_ == Status::would_block) claim.status_ = Status::timeout;
  return claim;
}

bool SpscConsumer::wait_for_data(std::chrono::nanoseconds timeout) noexcept {
  if (exclusive_refusal() != Status::ok) return false;
  detail::SpscConsumerCore& c = *core_;
  auto ready = [&] { return c.view.data_ready(c.cursor); };
  return detail::block_until(
      detail::data_side(c.view), c.policy, c.wait_state, timeout, ready, [](bool r) { return r; },
      ready);
}

}  // namespace shmring
