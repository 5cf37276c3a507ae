#include "detail/owner.hpp"

#include <string>

#include "shmring/atomic.hpp"
#include "shmring/process.hpp"

namespace shmring::detail {

std::uint64_t claim_role(OwnerRecord& record, std::string_view segment, std::string_view role,
                         Failure& f) {
  const process::Identity self = process::self();
  const std::uint64_t mine = process::pack(self);
  // Bounded: each failed CAS means another process changed the record, and
  // only a handful can be racing for one role.
  for (int attempt = 0; attempt < 64; ++attempt) {
    std::uint64_t current = atomic::load_acquire(&record.identity);
    if (current != 0 && process::alive(current)) {
      f = fail(errc::role_taken, segment,
               std::string(role) + " role is held by live process " +
                   std::to_string(process::pid_of(current)));
      return 0;
    }
    // Free, or its holder died: take it (one CAS on the packed identity).
    if (atomic::compare_exchange(&record.identity, current, mine)) {
      atomic::store_release(&record.start_time, self.start_time);
      return mine;
    }
  }
  f = fail(errc::role_taken, segment, std::string(role) + " role is contended by other processes");
  return 0;
}

void release_role(OwnerRecord& record, std::uint64_t identity) noexcept {
  if (identity == 0) return;
  atomic::compare_exchange(&record.identity, identity, std::uint64_t{0});
}

}  // namespace shmring::detail
