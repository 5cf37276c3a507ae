// Attaching a handle to a side of a ring: the checks and role bookkeeping
// that CPU handles (spsc_ring.cpp, mpmc_ring.cpp) and GPU handles
// (cuda/gpu_ring.cpp) share.
#pragma once

#include <cstdint>
#include <memory>
#include <string_view>

#include "detail/fail.hpp"
#include "detail/holding.hpp"
#include "shmring/broadcast_view.hpp"
#include "shmring/handle.hpp"
#include "shmring/layout.hpp"
#include "shmring/process.hpp"
#include "shmring/segment.hpp"
#include "shmring/spsc_view.hpp"

namespace shmring::detail {

// A segment is there, holds a ring of `kind`, and is mapped writable.
// `role` names the handle in the message ("SPSC producer").
Failure check_attachable(const Segment& segment, RingKind kind, std::string_view role);

// The SPSC side a process takes: the role it now holds (given back when the
// last reference goes) and the positions it resumes from.
struct SpscAttachment {
  std::shared_ptr<Holding> role;
  SpscProducerCursor producer;  // for the producer side
  SpscConsumerCursor consumer;  // for the consumer side
};

// Claims the SPSC `producer` (or consumer) role and validates the positions;
// a producer resumes after slots a dead predecessor committed.
SpscAttachment attach_spsc(const Segment& segment, bool producer, Failure& f);

// The broadcast producer role, and where a producer resumes: after any
// slots a dead predecessor committed but never covered with a head store
// (subscribers may have read them; the head is moved past them).
struct BroadcastProducerAttachment {
  std::shared_ptr<Holding> role;
  BroadcastProducerCursor cursor;
};
BroadcastProducerAttachment attach_broadcast_producer(const Segment& segment, std::string_view role,
                                                      Failure& f);

// A subscriber block of a broadcast ring taken (held through `block`, whose
// lock proves the holder lives) and joined at `at`.
struct BroadcastSubscription {
  std::shared_ptr<Holding> block;
  BroadcastSubscriberCursor cursor;
};
BroadcastSubscription attach_broadcast_subscriber(const Segment& segment, JoinAt at,
                                                  std::string_view role, Failure& f);

// A CPU handle may not join an MPMC side whose GPU agents coordinate in
// device memory (their claims would not be atomic with ours).
Failure check_cpu_may_join(const Segment& segment, const SideBlock& side, std::string_view role);

// Whether a handle attached in fork generation `generation` is used in the
// process that attached it (process.hpp, generation()).
inline bool attached_here(std::uint32_t generation) noexcept {
  return generation == process::generation();
}

// The attach calls of every handle type (handle.hpp, AttachForms).
template <class H, class... Options>
H AttachForms<H, Options...>::attach(const Segment& segment, Options... options,
                                     const WaitPolicy& policy) {
  return or_throw([&](Failure& f) { return H::do_attach(segment, options..., policy, f); });
}

template <class H, class... Options>
H AttachForms<H, Options...>::attach(const Segment& segment, Options... options,
                                     const WaitPolicy& policy, std::error_code& ec) {
  return or_report(ec, [&](Failure& f) { return H::do_attach(segment, options..., policy, f); });
}

}  // namespace shmring::detail
