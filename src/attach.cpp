#include "detail/attach.hpp"

#include <unistd.h>

#include <optional>
#include <string>

#include "detail/subscribers.hpp"
#include "shmring/atomic.hpp"
#include "shmring/process.hpp"

namespace shmring::detail {

Failure check_attachable(const Segment& segment, RingKind kind, std::string_view role) {
  if (!segment) {
    return fail(errc::no_segment, "",
                "cannot attach the " + std::string(role) + " to an empty Segment");
  }
  if (segment.geometry().kind != kind) {
    return fail(errc::kind_mismatch, segment.name(),
                "the " + std::string(role) + " cannot attach to an " +
                    to_string(segment.geometry().kind) + " ring");
  }
  if (segment.read_only()) {
    return fail(
        errc::permission_denied, segment.name(),
        "the segment is mapped read-only; the " + std::string(role) + " needs write access");
  }
  return {};
}

SpscAttachment attach_spsc(const Segment& segment, bool producer, Failure& f) {
  SpscAttachment a;
  const char* role = producer ? "SPSC producer" : "SPSC consumer";
  if ((f = check_attachable(segment, RingKind::spsc, role))) return a;
  const SpscView view(segment.base(), segment.geometry());
  a.role = claim_role(segment, producer, f);
  if (f) return a;
  // The role is exclusive, so nobody of our side can be asleep now; a holder
  // killed in its sleep left its count behind, which would cost every
  // publication of the other side a futex call from now on.
  atomic::store_seq_cst(&(producer ? view.producer_wait() : view.consumer_wait())->waiters,
                        std::uint32_t{0});
  const std::uint64_t head = atomic::load_acquire(&view.producer()->position);
  const std::uint64_t tail = atomic::load_acquire(&view.consumer()->position);
  // At most one lap apart. The tail may be ahead of the published head: the
  // consumer reads slots as soon as their trailers are committed, before the
  // producer's head store covers them (a producer between the two, or one
  // that died there).
  if (head - tail > view.capacity() && tail - head > view.capacity()) {
    a.role.reset();
    f = fail(errc::corrupt_header, segment.name(),
             "positions are impossible: head " + std::to_string(head) + ", tail " +
                 std::to_string(tail) + ", capacity " + std::to_string(view.capacity()));
    return a;
  }
  if (producer) {
    // A predecessor that died between its slot commits and its head store
    // left committed slots beyond the head (some perhaps read already);
    // resume after them.
    const std::uint64_t resume =
        view.resume_head(static_cast<std::int64_t>(tail - head) > 0 ? tail : head, tail);
    if (resume != head) atomic::store_seq_cst(&view.producer()->position, resume);
    // A new incarnation: words this producer writes at a position its
    // predecessor left half-written never pass for one message with them.
    const std::uint32_t incarnation = atomic::load_relaxed(&view.producer()->incarnation) + 1;
    atomic::store_relaxed(&view.producer()->incarnation, incarnation);
    a.producer = SpscProducerCursor{resume, tail, incarnation & 0xFF};
  } else {
    a.consumer = SpscConsumerCursor{tail};
  }
  return a;
}

BroadcastProducerAttachment attach_broadcast_producer(const Segment& segment, std::string_view role,
                                                      Failure& f) {
  BroadcastProducerAttachment a;
  if ((f = check_attachable(segment, RingKind::broadcast, role))) return a;
  a.role = claim_role(segment, /*producer=*/true, f);
  if (f) return a;
  const BroadcastView v(segment.base(), segment.geometry());
  // The role is exclusive, so no producer sleeps now; a predecessor killed in
  // its sleep left its count behind, which would cost every release a futex
  // call from now on.
  atomic::store_seq_cst(&v.producer_wait()->waiters, std::uint32_t{0});
  a.cursor = v.resume();
  if (a.cursor.head != atomic::load_acquire(&v.producer()->position)) {
    atomic::store_seq_cst(&v.producer()->position, a.cursor.head);
  }
  // A producer that attaches reopens the stream a predecessor closed.
  atomic::store_seq_cst(&v.producer()->stream, kStreamOpen);
  return a;
}

BroadcastSubscription attach_broadcast_subscriber(const Segment& segment, JoinAt at,
                                                  std::string_view role, Failure& f) {
  BroadcastSubscription s;
  if (at != JoinAt::oldest && at != JoinAt::newest && at != JoinAt::next) {
    f = fail(errc::invalid_argument, segment.name(),
             "a subscriber joins at JoinAt::oldest, newest or next, not JoinAt(" +
                 std::to_string(static_cast<int>(at)) + ")");
    return s;
  }
  if ((f = check_attachable(segment, RingKind::broadcast, role))) return s;
  const std::optional<std::uint32_t> index = take_subscriber(segment, s.block, f);
  if (!index) return s;
  s.cursor = BroadcastView(segment.base(), segment.geometry()).join(*index, at);
  return s;
}

Failure check_cpu_may_join(const Segment& segment, const SideBlock& side, std::string_view role) {
  const std::uint32_t gpus = atomic::load_seq_cst(&side.gpu_attached);
  const std::uint32_t flags = atomic::load_acquire(&side.gpu_flags);
  if (gpus != 0 && (flags & kGpuSharedCounter) == 0) {
    return fail(errc::mixed_agents, segment.name(),
                "a CPU " + std::string(role) + " cannot join: " + std::to_string(gpus) +
                    " GPU agent group(s) hold this side and claim positions in device memory "
                    "(their device lacks host-native atomics)");
  }
  return {};
}

}  // namespace shmring::detail
