// Claiming and giving up an exclusive role (the SPSC producer or consumer)
// through the OwnerRecord in the segment.
#pragma once

#include <cstdint>
#include <string_view>

#include "detail/fail.hpp"
#include "shmring/layout.hpp"

namespace shmring::detail {

// Records the calling process as the holder of `role` ("producer" or
// "consumer"); a dead holder is replaced. Returns the identity stored, or 0
// with `f` set (errc::role_taken naming the live holder).
std::uint64_t claim_role(OwnerRecord& record, std::string_view segment, std::string_view role,
                         Failure& f);

// Clears the record if it still holds `identity`.
void release_role(OwnerRecord& record, std::uint64_t identity) noexcept;

}  // namespace shmring::detail
