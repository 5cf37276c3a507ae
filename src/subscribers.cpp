#include "detail/subscribers.hpp"

#include <cerrno>
#include <cstring>
#include <string>

#include "shmring/atomic.hpp"
#include "shmring/process.hpp"

namespace shmring::detail {

std::optional<std::uint32_t> take_subscriber(const Segment& segment,
                                             std::shared_ptr<Holding>& holding, Failure& f) {
  if (!segment) {
    f = fail(errc::no_segment, "", "cannot take a subscriber block of an empty Segment");
    return std::nullopt;
  }
  const Geometry& g = segment.geometry();
  if (g.kind != RingKind::broadcast) {
    f = fail(errc::kind_mismatch, segment.name(),
             std::string("subscribers need a broadcast ring; this one is ") + to_string(g.kind));
    return std::nullopt;
  }
  if (segment.read_only()) {
    f = fail(errc::permission_denied, segment.name(),
             "the segment is mapped read-only: a subscriber writes its cursor");
    return std::nullopt;
  }
  holding = Holding::prepare(segment, f);
  if (!holding) return std::nullopt;
  const BroadcastView view(segment.base(), g);
  for (std::uint32_t i = 0; i < view.subscribers(); ++i) {
    SubscriberBlock* b = view.subscriber(i);
    // Free, retired, or its holder died: the lock decides, not the state.
    const int err = holding->take(&b->holder, lock_byte::subscriber(i));
    if (err == EAGAIN) continue;
    if (err != 0) {
      f = fail_errno(err, segment.name(),
                     std::string("cannot lock a subscriber block: ") + std::strerror(err));
      holding.reset();
      return std::nullopt;
    }
    atomic::store_release(&b->start_time, holding->start_time());  // for display
    return i;
  }
  holding.reset();
  f = fail(errc::role_taken, segment.name(),
           "all " + std::to_string(view.subscribers()) +
               " subscriber blocks of the broadcast ring are held by live processes");
  return std::nullopt;
}

bool retire_subscriber(const BroadcastView& view, const BroadcastSubscriberCursor& c,
                       std::shared_ptr<Holding>& holding) noexcept {
  // Retired before the lock goes, so that nobody who takes the block next
  // sees it active under its own lock with our cursor.
  const bool wake = view.leave(c);
  holding.reset();
  return wake;
}

bool subscriber_alive(int probe_fd, std::uint32_t index) noexcept {
  return process::lock_held(probe_fd, lock_byte::subscriber(index));
}

std::uint32_t evict_dead_subscribers(const BroadcastView& view, int probe_fd) noexcept {
  if (view.lossy()) return 0;
  std::uint32_t evicted = 0;
  for (std::uint32_t i = 0; i < view.subscribers(); ++i) {
    const SubscriberBlock* b = view.subscriber(i);
    if (atomic::load_acquire(&b->state) != kSubscriberActive) continue;
    // The session is read before the lock is asked about: a subscriber that
    // takes the block after the lock was found free starts a new session,
    // which the eviction below does not name.
    const std::uint32_t session = atomic::load_seq_cst(&b->session);
    if (session == atomic::load_relaxed(&b->evicted)) continue;
    if (subscriber_alive(probe_fd, i)) continue;
    view.evict(i, session);
    ++evicted;
  }
  return evicted;
}

}  // namespace shmring::detail
