#include "shmring/spsc_ring.hpp"

#include <unistd.h>

#include <string>

#include "detail/blocking.hpp"
#include "detail/fail.hpp"
#include "detail/owner.hpp"
#include "shmring/process.hpp"

namespace shmring {
namespace {

using detail::Failure;
using detail::fail;

bool not_would_block(Status s) { return s != Status::would_block; }
Status as_timeout(Status s) { return s == Status::would_block ? Status::timeout : s; }

Failure check_attachable(const Segment& segment, std::string_view role) {
  if (!segment) return fail(errc::no_segment, "", std::string("cannot attach the ") + std::string(role) + " to an empty Segment");
  if (segment.geometry().kind != RingKind::spsc) {
    return fail(errc::kind_mismatch, segment.name(),
                std::string("an SPSC ") + std::string(role) + " cannot attach to an " +
                    to_string(segment.geometry().kind) + " ring");
  }
  if (segment.read_only()) {
    return fail(errc::permission_denied, segment.name(),
                std::string("the segment is mapped read-only; the ") + std::string(role) +
                    " needs write access");
  }
  return {};
}

// The positions every role checks on attach: at most one lap apart. The tail
// may be ahead of the published head: the consumer reads slots as soon as
// their trailers are committed, before the producer's head store covers them
// (a producer between the two, or one that died there).
Failure check_positions(const SpscView& view, const Segment& segment, std::uint64_t head,
                        std::uint64_t tail) {
  if (head - tail > view.capacity() && tail - head > view.capacity()) {
    return fail(errc::corrupt_header, segment.name(),
                "positions are impossible: head " + std::to_string(head) + ", tail " +
                    std::to_string(tail) + ", capacity " + std::to_string(view.capacity()));
  }
  return {};
}

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
    if ((f = check_attachable(segment, "producer"))) return p;
    SpscView view(segment.base(), segment.geometry());
    const std::uint64_t identity =
        detail::claim_role(view.producer()->owner, segment.name(), "producer", f);
    if (f) return p;
    const std::uint64_t head = atomic::load_acquire(&view.producer()->position);
    const std::uint64_t tail = atomic::load_acquire(&view.consumer()->position);
    if ((f = check_positions(view, segment, head, tail))) {
      detail::release_role(view.producer()->owner, identity);
      return p;
    }
    // A predecessor that died between its slot commits and its head store
    // left committed slots beyond the head (some perhaps read already); resume
    // after them.
    const std::uint64_t resume =
        view.resume_head(static_cast<std::int64_t>(tail - head) > 0 ? tail : head, tail);
    if (resume != head) atomic::store_seq_cst(&view.producer()->position, resume);
    p.view_ = view;
    p.cursor_ = SpscProducerCursor{resume, tail};
    p.policy_ = policy;
    p.identity_ = identity;
    p.lifetime_ = segment.lifetime();
    return p;
}

// A forked child holds a copy of its parent's handle: only the process that
// attached gives the role up.
static bool attached_here(std::uint64_t identity) {
  return process::pid_of(identity) == static_cast<std::uint32_t>(::getpid());
}

SpscProducer::~SpscProducer() {
  if (lifetime_ && attached_here(identity_)) {
    detail::release_role(view_.producer()->owner, identity_);
  }
}

void SpscProducer::wake_consumer() noexcept { futex::notify_all(&view_.producer()->notify); }

Status SpscProducer::push(std::span<const std::byte> message,
                          std::chrono::nanoseconds timeout) noexcept {
  if (message.size() > view_.slot_size()) return Status::too_large;
  return as_timeout(detail::block_until([&] { return try_push(message); }, not_would_block,
                                        [&] { return view_.space_ready(cursor_); },
                                        &view_.producer_wait()->waiters,
                                        &view_.consumer()->notify, policy_, timeout));
}

WriteClaim SpscProducer::claim(std::size_t max, std::chrono::nanoseconds timeout) noexcept {
  WriteClaim c = detail::block_until(
      [&] { return try_claim(max); }, [](const WriteClaim& w) { return not_would_block(w.status()); },
      [&] { return view_.space_ready(cursor_); }, &view_.producer_wait()->waiters,
      &view_.consumer()->notify, policy_, timeout);
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
    if ((f = check_attachable(segment, "consumer"))) return c;
    SpscView view(segment.base(), segment.geometry());
    const std::uint64_t identity =
        detail::claim_role(view.consumer()->owner, segment.name(), "consumer", f);
    if (f) return c;
    const std::uint64_t tail = atomic::load_acquire(&view.consumer()->position);
    const std::uint64_t head = atomic::load_acquire(&view.producer()->position);
    if ((f = check_positions(view, segment, head, tail))) {
      detail::release_role(view.consumer()->owner, identity);
      return c;
    }
    c.view_ = view;
    c.cursor_ = SpscConsumerCursor{tail};
    c.policy_ = policy;
    c.identity_ = identity;
    c.lifetime_ = segment.lifetime();
    return c;
}

SpscConsumer::~SpscConsumer() {
  if (lifetime_ && attached_here(identity_)) {
    detail::release_role(view_.consumer()->owner, identity_);
  }
}

void SpscConsumer::wake_producer() noexcept { futex::notify_all(&view_.consumer()->notify); }

Status SpscConsumer::pop(std::span<std::byte> buffer, std::size_t& size,
                         std::chrono::nanoseconds timeout) noexcept {
  return as_timeout(detail::block_until([&] { return try_pop(buffer, size); }, not_would_block,
                                        [&] { return view_.data_ready(cursor_); },
                                        &view_.consumer_wait()->waiters,
                                        &view_.producer()->notify, policy_, timeout));
}

ReadClaim SpscConsumer::peek(std::size_t max, std::chrono::nanoseconds timeout) noexcept {
  ReadClaim c = detail::block_until(
      [&] { return try_peek(max); }, [](const ReadClaim& r) { return not_would_block(r.status()); },
      [&] { return view_.data_ready(cursor_); }, &view_.consumer_wait()->waiters,
      &view_.producer()->notify, policy_, timeout);
  if (c.status_ == Status::would_block) c.status_ = Status::timeout;
  return c;
}

}  // namespace shmring
