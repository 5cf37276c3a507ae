// Who holds a role, across processes, pid namespaces, descriptor exhaustion
// and fork(): roles are held by locks on bytes of the segment file
// (layout.hpp, lock_byte), and a handle works only in the process that
// attached it.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <sched.h>
#include <sys/mount.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <functional>
#include <string>
#include <vector>

#include "shmring/error.hpp"
#include "shmring/mpmc_ring.hpp"
#include "shmring/process.hpp"
#include "shmring/spsc_ring.hpp"
#include "test_support.hpp"

namespace shmring::test {
namespace {

using namespace std::chrono_literals;

Segment make(const std::string& name, RingKind kind, std::uint64_t capacity = 8) {
  CreateOptions o;
  o.kind = kind;
  o.capacity = capacity;
  o.slot_size = 64;
  return Segment::create(name, o);
}

std::span<const std::byte> bytes_of(const std::uint64_t& v) {
  return std::as_bytes(std::span(&v, 1));
}

// A process that runs `hold` (true when it got what it holds), reports it,
// and keeps holding until told to go or until this object is destroyed.
// With `new_pid_namespace` it runs as pid 1 of a pid namespace of its own,
// with its own /proc, as in a container that shares /dev/shm with the host.
class HeldElsewhere {
 public:
  enum class Result { holding, refused, no_namespace };

  HeldElsewhere(std::function<bool()> hold, bool new_pid_namespace = false) {
    if (::pipe(report_) != 0 || ::pipe(go_) != 0) return;
    pid_ = ::fork();
    if (pid_ != 0) {
      ::close(report_[1]);
      ::close(go_[0]);
      char r = 0;
      result_ = ::read(report_[0], &r, 1) == 1 && r == 'y' ? Result::holding
                : r == 'u'                                 ? Result::no_namespace
                                                           : Result::refused;
      return;
    }
    ::close(report_[0]);
    ::close(go_[1]);
    if (new_pid_namespace) {
      if (::unshare(CLONE_NEWPID | CLONE_NEWNS) != 0) tell_and_exit('u');
      const pid_t inner = ::fork();
      if (inner < 0) tell_and_exit('u');
      if (inner != 0) {  // the outer child only waits for pid 1 of the namespace
        ::_exit(wait_child(inner));
      }
      // pid 1 now; a /proc of this namespace, as containers have.
      if (::mount(nullptr, "/", nullptr, MS_REC | MS_PRIVATE, nullptr) != 0 ||
          ::mount("proc", "/proc", "proc", 0, nullptr) != 0) {
        tell_and_exit('u');
      }
    }
    const bool ok = hold();
    char r = ok ? 'y' : 'n';
    (void)!::write(report_[1], &r, 1);
    (void)!::read(go_[0], &r, 1);  // returns at 'go' or when the test process dies
    ::_exit(0);
  }
  ~HeldElsewhere() { release(); }

  Result result() const { return result_; }

  // Lets the holder exit and waits for it.
  void release() {
    if (pid_ <= 0) return;
    const char go = 'g';
    (void)!::write(go_[1], &go, 1);
    wait_child(pid_);
    ::close(report_[0]);
    ::close(go_[1]);
    pid_ = -1;
  }

 private:
  [[noreturn]] void tell_and_exit(char r) {
    (void)!::write(report_[1], &r, 1);
    ::_exit(0);
  }
  int report_[2] = {-1, -1};
  int go_[2] = {-1, -1};
  pid_t pid_ = -1;
  Result result_ = Result::refused;
};

// ---- pid namespaces ----------------------------------------------------------

TEST(Liveness, RoleHeldInAnotherPidNamespaceIsRespected) {
  UniqueShm shm;
  Segment seg = make(shm.name(), RingKind::spsc);
  HeldElsewhere holder(
      [&] {
        Segment s = Segment::open(shm.name());
        static SpscConsumer held;  // lives until the process exits
        std::error_code ec;
        held = SpscConsumer::attach(s, {}, ec);
        return !ec && process::self()->pid == 1;
      },
      /*new_pid_namespace=*/true);
  if (holder.result() == HeldElsewhere::Result::no_namespace) {
    GTEST_SKIP() << "cannot make a pid namespace here (needs CAP_SYS_ADMIN)";
  }
  ASSERT_EQ(holder.result(), HeldElsewhere::Result::holding);
  // The record names pid 1 of the other namespace; here pid 1 is someone
  // else entirely. Only the lock tells that the holder lives.
  const auto* ctl = reinterpret_cast<const ControlArea*>(seg.base());
  EXPECT_EQ(process::pid_of(ctl->consumer.owner.identity), 1u);
  std::error_code ec;
  SpscConsumer second = SpscConsumer::attach(seg, {}, ec);
  EXPECT_EQ(ec, make_error_code(errc::role_taken)) << last_error_message();
  holder.release();
  SpscConsumer after = SpscConsumer::attach(seg, {}, ec);
  EXPECT_FALSE(ec) << "the holder is gone, its role free: " << last_error_message();
}

TEST(Liveness, LiveMpmcClaimInAnotherPidNamespaceIsNotRecovered) {
  UniqueShm shm;
  Segment seg = make(shm.name(), RingKind::mpmc);
  HeldElsewhere holder(
      [&] {
        static Segment s = Segment::open(shm.name());
        static MpmcProducer p = MpmcProducer::attach(s);
        static WriteClaim c = p.try_claim(1);  // held, never committed
        return !c.empty();
      },
      /*new_pid_namespace=*/true);
  if (holder.result() == HeldElsewhere::Result::no_namespace) {
    GTEST_SKIP() << "cannot make a pid namespace here (needs CAP_SYS_ADMIN)";
  }
  ASSERT_EQ(holder.result(), HeldElsewhere::Result::holding);
  // Attaching runs recovery; the claim's holder lives, so nothing is taken.
  MpmcConsumer rx = MpmcConsumer::attach(seg);
  MpmcProducer tx = MpmcProducer::attach(seg);
  EXPECT_EQ(tx.recover(), 0u);
  EXPECT_EQ(tx.abandoned(), 0u);
  std::uint64_t got = 0;
  std::size_t n = 0;
  EXPECT_EQ(rx.try_pop(std::as_writable_bytes(std::span(&got, 1)), n), Status::would_block);
  // Its holder gone, the claim is recovered (skipped) and the ring moves on.
  holder.release();
  EXPECT_EQ(tx.recover(), 1u);
  const std::uint64_t v = 7;
  ASSERT_EQ(tx.try_push(bytes_of(v)), Status::ok);
  ASSERT_EQ(rx.try_pop(std::as_writable_bytes(std::span(&got, 1)), n), Status::ok);
  EXPECT_EQ(got, v);
}

// ---- no descriptor left --------------------------------------------------------

// Runs `attach` in a child with every descriptor taken; the child exits 0 if
// the attach failed naming EMFILE, 1 if it succeeded, 2 for anything else.
int attach_without_descriptors(std::function<std::error_code()> attach) {
  return run_in_child([&] {
    rlimit lim{};
    ::getrlimit(RLIMIT_NOFILE, &lim);
    lim.rlim_cur = 64;
    ::setrlimit(RLIMIT_NOFILE, &lim);
    std::vector<int> taken;
    for (int fd; (fd = ::open("/dev/null", O_RDONLY | O_CLOEXEC)) >= 0;) taken.push_back(fd);
    const std::error_code ec = attach();
    // Descriptors back before anything else: sanitizer runtimes need some.
    for (const int fd : taken) ::close(fd);
    if (!ec) return 1;
    return ec == std::errc::too_many_files_open ? 0 : 2;
  });
}

TEST(Liveness, AttachWithNoDescriptorLeftFailsAndRecordsNothing) {
  UniqueShm spsc_name("spsc"), mpmc_name("mpmc");
  Segment spsc = make(spsc_name.name(), RingKind::spsc);
  Segment mpmc = make(mpmc_name.name(), RingKind::mpmc);
  EXPECT_EQ(attach_without_descriptors([&] {
              std::error_code ec;
              (void)SpscProducer::attach(spsc, {}, ec);
              return ec;
            }),
            0);
  EXPECT_EQ(attach_without_descriptors([&] {
              std::error_code ec;
              (void)MpmcProducer::attach(mpmc, {}, ec);
              return ec;
            }),
            0);
  const auto* ctl = reinterpret_cast<const ControlArea*>(spsc.base());
  EXPECT_EQ(ctl->producer.owner.identity, 0u) << "a failed attach records nobody";
  // The roles are free for processes that can prove they live.
  EXPECT_TRUE(SpscProducer::attach(spsc));
  EXPECT_TRUE(MpmcProducer::attach(mpmc));
}

// ---- fork ----------------------------------------------------------------------

TEST(Fork, InheritedHandlesRefuseToWorkAndKeepTheParentsRoles) {
  UniqueShm s_name("spsc"), m_name("mpmc");
  Segment spsc = make(s_name.name(), RingKind::spsc);
  Segment mpmc = make(m_name.name(), RingKind::mpmc);
  SpscProducer tx = SpscProducer::attach(spsc);
  SpscConsumer rx = SpscConsumer::attach(spsc);
  MpmcProducer mtx = MpmcProducer::attach(mpmc);
  MpmcConsumer mrx = MpmcConsumer::attach(mpmc);
  const std::uint64_t first = 1;
  ASSERT_EQ(tx.try_push(bytes_of(first)), Status::ok);
  ASSERT_EQ(mtx.try_push(bytes_of(first)), Status::ok);

  const int rc = run_in_child([&] {
    int wrong = 0;
    const std::uint64_t v = 99;
    std::uint64_t out = 0;
    std::size_t n = 0;
    const auto buf = std::as_writable_bytes(std::span(&out, 1));
    wrong += tx.try_push(bytes_of(v)) == Status::wrong_process;
    wrong += tx.push(bytes_of(v), 10ms) == Status::wrong_process;
    wrong += tx.try_claim(1).status() == Status::wrong_process;
    wrong += rx.try_pop(buf, n) == Status::wrong_process;
    wrong += rx.try_peek(1).status() == Status::wrong_process;
    wrong += mtx.try_push(bytes_of(v)) == Status::wrong_process;
    wrong += mtx.try_claim(1).status() == Status::wrong_process;
    wrong += mrx.try_pop(buf, n) == Status::wrong_process;
    wrong += mrx.pop(buf, n, 10ms) == Status::wrong_process;
    // The child's copies go, running their destructors: the parent's roles
    // and claim records must stay the parent's.
    { SpscProducer gone = std::move(tx); }
    { SpscConsumer gone = std::move(rx); }
    { MpmcProducer gone = std::move(mtx); }
    { MpmcConsumer gone = std::move(mrx); }
    return wrong == 9 ? 0 : 1;
  });
  EXPECT_EQ(rc, 0) << "every call through an inherited handle returns wrong_process";

  std::error_code ec;
  (void)SpscProducer::attach(spsc, {}, ec);
  EXPECT_EQ(ec, make_error_code(errc::role_taken)) << "the parent still holds its role";
  // Nothing the child did reached the rings: the parent's messages in order.
  const std::uint64_t second = 2;
  ASSERT_EQ(tx.try_push(bytes_of(second)), Status::ok);
  ASSERT_EQ(mtx.try_push(bytes_of(second)), Status::ok);
  for (std::uint64_t want : {first, second}) {
    std::uint64_t got = 0;
    std::size_t n = 0;
    ASSERT_EQ(rx.try_pop(std::as_writable_bytes(std::span(&got, 1)), n), Status::ok);
    EXPECT_EQ(got, want);
    ASSERT_EQ(mrx.try_pop(std::as_writable_bytes(std::span(&got, 1)), n), Status::ok);
    EXPECT_EQ(got, want);
  }
  std::uint64_t got = 0;
  std::size_t n = 0;
  EXPECT_EQ(rx.try_pop(std::as_writable_bytes(std::span(&got, 1)), n), Status::would_block);
  EXPECT_EQ(mrx.try_pop(std::as_writable_bytes(std::span(&got, 1)), n), Status::would_block);
}

TEST(Fork, ChildAttachesItsOwnHandles) {
  UniqueShm shm;
  Segment seg = make(shm.name(), RingKind::spsc, 64);
  SpscProducer tx = SpscProducer::attach(seg);
  // The way to hand a ring to a child: attach in the child, through the
  // inherited Segment or by name.
  const pid_t child = ::fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    SpscConsumer rx = SpscConsumer::attach(seg);
    for (std::uint64_t want = 0; want < 1000; ++want) {
      std::uint64_t got = 0;
      std::size_t n = 0;
      if (rx.pop(std::as_writable_bytes(std::span(&got, 1)), n, 10s) != Status::ok) ::_exit(1);
      if (got != want) ::_exit(2);
    }
    ::_exit(0);
  }
  for (std::uint64_t v = 0; v < 1000; ++v) ASSERT_EQ(tx.push(bytes_of(v), 10s), Status::ok);
  EXPECT_EQ(wait_child(child), 0);
}

TEST(Fork, ChildThatOutlivesItsParentDoesNotKeepTheParentsRole) {
  UniqueShm shm;
  Segment seg = make(shm.name(), RingKind::spsc);
  int grandchild_pid[2], release_grandchild[2];
  ASSERT_EQ(::pipe(grandchild_pid), 0);
  ASSERT_EQ(::pipe(release_grandchild), 0);
  // The parent attaches, forks a child that inherits the handle and lives
  // on, and dies. The child says who it is once fork() has returned in it,
  // that is once its fork handlers have let the parent's locks go.
  const int rc = run_in_child([&] {
    static SpscProducer tx = SpscProducer::attach(seg);
    const pid_t g = ::fork();
    if (g == 0) {
      const pid_t self = ::getpid();
      (void)!::write(grandchild_pid[1], &self, sizeof self);
      char c = 0;
      (void)!::read(release_grandchild[0], &c, 1);
      ::_exit(0);
    }
    return g > 0 ? 0 : 1;
  });
  ASSERT_EQ(rc, 0);
  pid_t g = 0;
  ASSERT_EQ(::read(grandchild_pid[0], &g, sizeof g), static_cast<ssize_t>(sizeof g));
  ASSERT_EQ(::kill(g, 0), 0) << "the child still runs";
  std::error_code ec;
  SpscProducer tx = SpscProducer::attach(seg, {}, ec);
  EXPECT_FALSE(ec) << "the dead parent's role is free: " << last_error_message();
  const char c = 'g';
  (void)!::write(release_grandchild[1], &c, 1);
  for (int fd :
       {grandchild_pid[0], grandchild_pid[1], release_grandchild[0], release_grandchild[1]}) {
    ::close(fd);
  }
}

TEST(Liveness, TwoHandlesOfOneProcessExcludeEachOther) {
  UniqueShm shm;
  Segment seg = make(shm.name(), RingKind::spsc);
  Segment again = Segment::open(shm.name());
  SpscProducer tx = SpscProducer::attach(seg);
  std::error_code ec;
  (void)SpscProducer::attach(seg, {}, ec);
  EXPECT_EQ(ec, make_error_code(errc::role_taken)) << "through the same Segment";
  (void)SpscProducer::attach(again, {}, ec);
  EXPECT_EQ(ec, make_error_code(errc::role_taken)) << "through another Segment of the file";
  tx = SpscProducer();
  EXPECT_TRUE(SpscProducer::attach(again)) << "given back when the handle went";
}

}  // namespace
}  // namespace shmring::test
