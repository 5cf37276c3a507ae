// Results of the hot-path calls (push, pop, claim, peek). Cold paths (create,
// open, attach) report std::error_code instead; see error.hpp.
#pragma once

#include <cstdint>

#include "shmring/config.hpp"

namespace shmring {

enum class Status : std::uint8_t {
  ok = 0,
  would_block,  // try_ form: ring full (producer) or empty (consumer); nothing changed
  timeout,      // blocking form: the deadline passed; nothing changed
  too_large,    // the message does not fit the slot, or the caller's buffer is too small
  corrupt,      // the peer side wrote impossible values; the ring is stalled, never overrun
  unsupported,  // the call does not apply to this ring (zero-copy on low-latency slots)
  // The handle was attached by another process: a forked child's copy of its
  // parent's handle, which would write over the parent's messages. Nothing
  // changed; attach a handle of its own in the child.
  wrong_process,
  // SPSC: this handle has a claim (or peek) not yet finished, and the ring's
  // order allows no other call that takes slots until it is. Nothing changed.
  busy,
  // The claim holds no slots: it was committed, aborted or released already.
  finished,
  // The handle holds no ring: default-constructed or moved from.
  detached,
  // Lossy broadcast: the producer lapped this subscriber, so the message at
  // its cursor is gone (or was overwritten while it was read: discard what
  // was read). It skips to the newest message and goes on; nothing is torn.
  overrun,
  // End of stream: a producer closed the ring (close(), or its handle went
  // with close-on-exit) and this consumer has read every message published
  // before. A producer gets it from its own pushes after its close(). Blocking
  // calls return it at once; nothing changed.
  closed,
  // The peer side died without closing: a consumer has read every message
  // the dead producer published (SPSC: the producer role's holder died; MPMC:
  // producers had attached and none lives), or a producer waits for room that
  // no consumer will make (the consumer role's holder, or every consumer,
  // died). Seen by blocking calls before they sleep and by handles with an
  // event descriptor; a peer that attaches again ends it. Nothing changed.
  peer_dead,
};

SHMRING_HD constexpr const char* to_string(Status s) noexcept {
  switch (s) {
    case Status::ok:
      return "ok";
    case Status::would_block:
      return "would_block";
    case Status::timeout:
      return "timeout";
    case Status::too_large:
      return "too_large";
    case Status::corrupt:
      return "corrupt";
    case Status::unsupported:
      return "unsupported";
    case Status::wrong_process:
      return "wrong_process";
    case Status::busy:
      return "busy";
    case Status::finished:
      return "finished";
    case Status::detached:
      return "detached";
    case Status::overrun:
      return "overrun";
    case Status::closed:
      return "closed";
    case Status::peer_dead:
      return "peer_dead";
  }
  return "unknown";
}

}  // namespace shmring
