#include "detail/holding.hpp"

#include <cerrno>
#include <cstring>
#include <string>
#include <utility>

#include "shmring/atomic.hpp"
#include "shmring/process.hpp"
#include "shmring/spsc_view.hpp"

namespace shmring::detail {

Holding::Holding(std::shared_ptr<const void> mapping, int probe_fd, HolderLock lock,
                 std::uint64_t identity, std::uint64_t start_time) noexcept
    : mapping_(std::move(mapping)),
      probe_fd_(probe_fd),
      lock_(std::move(lock)),
      identity_(identity),
      start_time_(start_time),
      generation_(process::generation()) {}

std::shared_ptr<Holding> Holding::prepare(const Segment& segment, Failure& f) {
  process::Identity self;
  if ((f = identify_self(segment.name(), "this process as a holder", self))) return nullptr;
  HolderLock lock = HolderLock::open(segment.fd(), segment.name(), f);
  if (f) return nullptr;
  return std::make_shared<Holding>(segment.lifetime(), segment.fd(), std::move(lock),
                                   process::pack(self), self.start_time);
}

int Holding::take(std::uint64_t* word, std::uint64_t byte) noexcept {
  if (const int err = lock_.try_lock(byte); err != 0) return err;
  // The lock makes us the one holder; whoever the word still names is gone.
  word_ = word;
  atomic::store_seq_cst(word_, identity_);
  return 0;
}

Holding::~Holding() {
  if (word_ != nullptr && generation_ == process::generation()) {
    atomic::compare_exchange(word_, identity_, std::uint64_t{0});
  }
  // lock_ closes after this: nobody takes the record before it is cleared.
}

std::shared_ptr<Holding> take_owner(const Segment& segment, OwnerRecord& record, std::uint64_t byte,
                                    std::string_view what, Failure& f) {
  std::shared_ptr<Holding> h = Holding::prepare(segment, f);
  if (!h) return nullptr;
  const int err = h->take(&record.identity, byte);
  if (err == EAGAIN) return nullptr;
  if (err != 0) {
    f = fail_errno(err, segment.name(),
                   "cannot lock " + std::string(what) + ": " + std::strerror(err));
    return nullptr;
  }
  atomic::store_release(&record.start_time, h->start_time());
  return h;
}

std::shared_ptr<Holding> claim_role(const Segment& segment, bool producer, Failure& f) {
  const SpscView view(segment.base(), segment.geometry());
  OwnerRecord& record = (producer ? view.producer() : view.consumer())->owner;
  const char* role = producer ? "producer" : "consumer";
  std::shared_ptr<Holding> h = take_owner(segment, record, lock_byte::owner(producer),
                                          std::string("the ") + role + " role's record", f);
  if (!h && !f) {
    // Named as it recorded itself: the pid is its own namespace's.
    f = fail(errc::role_taken, segment.name(),
             std::string(role) + " role is held by live process " +
                 std::to_string(process::pid_of(atomic::load_acquire(&record.identity))));
  }
  return h;
}

}  // namespace shmring::detail
