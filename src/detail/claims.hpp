// MPMC claim tables (layout.hpp, ClaimTable): which process may still hold
// claimed positions of a side, and the recovery of positions claimed by
// processes that died before committing (producers) or releasing
// (consumers) them.
#pragma once

#include <cstdint>
#include <memory>
#include <string_view>

#include "detail/fail.hpp"
#include "detail/holding.hpp"
#include "shmring/layout.hpp"
#include "shmring/mpmc_ring.hpp"
#include "shmring/mpmc_view.hpp"

namespace shmring::detail {

// Takes a free record of the `producer` (or consumer) side's table of the
// lane `view` addresses (or one whose holder died) for the calling process,
// held through `holding`, which gives it back when the last reference goes.
// nullptr, with `f` set, when every record is held by a live holder.
ClaimRecord* take_claim_record(const Segment& segment, const MpmcView& view, bool producer,
                               std::shared_ptr<Holding>& holding, Failure& f);

// Marks a record idle before it is given back (only in the process that
// took it).
void idle_claim_record(ClaimRecord* record) noexcept;

// Recovers the positions of one side of the lane `view` addresses claimed by
// dead processes: producers
// commit them as skipped (consumers pass over them, nothing half-written is
// ever read), consumers release them (their messages are lost). Does nothing
// while GPU agents, which keep no records, take part in the ring.
//
// One call is one bounded step: it looks at no more than kMpmcRecoverStep
// positions, so that a lap of dead claims (a scribbled counter claims a whole
// lap at once) cannot hold a blocking call past its deadline. A pass starts
// where the side that waits is stuck (the consumers' next position for
// producer claims, the producers' next slot a lap back for consumer claims)
// only when it is stuck; `resume` is the caller's own note of where its last
// step stopped, kClaimIdle when no pass of its is under way, so the next step
// goes on from there. It is only a hint: every position is judged afresh
// under the side's recovery lock, and a note outside the claimed range is
// dropped. `holding` is the calling handle's: it tells live holders from
// dead ones and takes the side's recovery lock.
RecoveryStep recover_producer_claims(const MpmcView& view, Holding& holding,
                                     std::uint64_t& resume) noexcept;
RecoveryStep recover_consumer_claims(const MpmcView& view, Holding& holding,
                                     std::uint64_t& resume) noexcept;

// Gives the consumers' claimed run `r` back to the lane `view` addresses,
// unread (a consumer's read-ahead, when it goes): moves the dequeue counter
// from the end of `r` back to its start, under the consumer side's recovery
// lock, so that a recoverer never takes positions handed back for dead
// claims. False if another consumer has claimed past `r` since (or the lock
// stayed taken): the run cannot go back then.
bool hand_back_read_claims(const MpmcView& view, Holding& holding, MpmcRange r) noexcept;

}  // namespace shmring::detail
