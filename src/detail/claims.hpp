// MPMC claim tables (layout.hpp, ClaimTable): which process may still hold
// claimed positions of a side, and the recovery of positions claimed by
// processes that died before committing (producers) or releasing
// (consumers) them.
#pragma once

#include <cstdint>
#include <string_view>

#include "detail/fail.hpp"
#include "shmring/layout.hpp"
#include "shmring/mpmc_view.hpp"

namespace shmring::detail {

// Takes a free record of `table` (or one whose holder died) for the calling
// process; nullptr, with `f` set, when every record is held by a live one.
ClaimRecord* take_claim_record(ClaimTable& table, std::string_view segment, std::string_view side,
                               std::uint64_t& identity, Failure& f);

// Gives a record back (only in the process that took it).
void give_back_claim_record(ClaimRecord* record, std::uint64_t identity) noexcept;

// Recovers the positions of one side claimed by dead processes: producers
// commit them as skipped (consumers pass over them, nothing half-written is
// ever read), consumers release them (their messages are lost). Returns how
// many positions were recovered. Does nothing while GPU agents, which keep
// no records, take part in the ring.
std::uint64_t recover_producer_claims(const MpmcView& view) noexcept;
std::uint64_t recover_consumer_claims(const MpmcView& view) noexcept;

}  // namespace shmring::detail
