// Segment lifecycle: create / open / open_or_create / unlink, and every way
// a name, an argument or a file found in /dev/shm can be refused.
#include <dirent.h>
#include <fcntl.h>
#include <gtest/gtest.h>
#include <linux/magic.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/un.h>
#include <sys/vfs.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <functional>
#include <initializer_list>
#include <set>
#include <string>
#include <string_view>
#include <thread>
#include <type_traits>
#include <vector>

#include "shmring/error.hpp"
#include "shmring/fault_injection.hpp"
#include "shmring/mpmc_ring.hpp"
#include "shmring/process.hpp"
#include "shmring/segment.hpp"
#include "shmring/segment_passing.hpp"
#include "shmring/spsc_ring.hpp"
#include "test_support.hpp"

namespace shmring {
namespace {

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

struct Reported {
  std::error_code code;
  std::string message;
};

// The throwing overload: must throw shmring::Error.
template <class Fn>
Reported thrown(Fn&& fn) {
  try {
    fn();
  } catch (const Error& e) {
    return {e.code(), e.what()};
  } catch (const std::exception& e) {
    ADD_FAILURE() << "threw something other than shmring::Error: " << e.what();
    return {};
  }
  ADD_FAILURE() << "did not throw";
  return {};
}

// The error_code overload: must not throw, must set the code, must return an
// empty (false) result, and leaves the message in last_error_message().
template <class Fn>
Reported reported(Fn&& fn) {
  std::error_code ec;
  bool result = true;
  try {
    result = static_cast<bool>(fn(ec));
  } catch (...) {
    ADD_FAILURE() << "the error_code overload threw";
  }
  EXPECT_FALSE(result) << "a failed call returns an empty result";
  return {ec, last_error_message()};
}

void expect_message(const Reported& r, errc code, std::string_view segment,
                    std::initializer_list<std::string_view> parts) {
  EXPECT_EQ(r.code, make_error_code(code)) << "got " << r.code.message() << ": " << r.message;
  const std::string named = "segment '" + std::string(segment) + "'";
  EXPECT_NE(r.message.find(named), std::string::npos)
      << "message does not name " << named << ": " << r.message;
  for (std::string_view part : parts) {
    EXPECT_NE(r.message.find(part), std::string::npos)
        << "message lacks \"" << part << "\": " << r.message;
  }
}

// Runs both overloads of one call and checks code and message of each.
template <class Throwing, class Reporting>
void expect_failure(Throwing&& throwing, Reporting&& reporting, errc code, std::string_view segment,
                    std::initializer_list<std::string_view> parts) {
  {
    SCOPED_TRACE("throwing overload");
    expect_message(thrown(throwing), code, segment, parts);
  }
  {
    SCOPED_TRACE("std::error_code overload");
    expect_message(reported(reporting), code, segment, parts);
  }
}

CreateOptions spsc(std::uint64_t capacity = 8, std::uint64_t slot_size = 64, mode_t mode = 0600) {
  CreateOptions o;
  o.kind = RingKind::spsc;
  o.capacity = capacity;
  o.slot_size = slot_size;
  o.mode = mode;
  return o;
}

CreateOptions mpmc(std::uint64_t capacity = 8, std::uint64_t slot_size = 64) {
  CreateOptions o = spsc(capacity, slot_size);
  o.kind = RingKind::mpmc;
  return o;
}

OpenOptions quick_open(std::chrono::milliseconds timeout = 50ms) {
  OpenOptions o;
  o.init_timeout = timeout;
  return o;
}

void expect_create_fails(std::string_view name, const CreateOptions& o, errc code,
                         std::string_view segment, std::initializer_list<std::string_view> parts) {
  expect_failure([&] { (void)Segment::create(name, o); },
                 [&](std::error_code& ec) { return Segment::create(name, o, ec); }, code, segment,
                 parts);
}

void expect_open_fails(std::string_view name, const OpenOptions& o, errc code,
                       std::string_view segment, std::initializer_list<std::string_view> parts) {
  expect_failure([&] { (void)Segment::open(name, o); },
                 [&](std::error_code& ec) { return Segment::open(name, o, ec); }, code, segment,
                 parts);
}

// ---- round trip ------------------------------------------------------------

TEST(Segment, CreateThenOpen) {
  test::UniqueShm shm;
  Segment created = Segment::create(shm.name(), spsc(16, 100));
  ASSERT_TRUE(created);
  EXPECT_TRUE(created.created());
  EXPECT_FALSE(created.read_only());
  EXPECT_EQ(created.name(), shm.name());
  EXPECT_EQ(created.geometry().kind, RingKind::spsc);
  EXPECT_EQ(created.geometry().capacity, 16u);
  EXPECT_EQ(created.geometry().slot_size, 100u);
  EXPECT_EQ(created.size(), created.geometry().segment_size);
  EXPECT_TRUE(test::shm_exists(shm.name()));

  Segment opened = Segment::open(shm.name());
  ASSERT_TRUE(opened);
  EXPECT_FALSE(opened.created());
  EXPECT_EQ(opened.geometry(), created.geometry());
  EXPECT_EQ(opened.name(), shm.name());
  // Two mappings of one file: a byte written through one is read through the other.
  std::byte* slot0 = created.base() + created.geometry().slots_offset;
  slot0[0] = std::byte{0x5a};
  EXPECT_EQ(opened.base()[created.geometry().slots_offset], std::byte{0x5a});
  EXPECT_NE(opened.base(), created.base());
  Segment::unlink(shm.name());
  EXPECT_FALSE(test::shm_exists(shm.name()));
}

TEST(Segment, LeadingSlashIsOptional) {
  test::UniqueShm shm;
  Segment created = Segment::create("/" + shm.name(), spsc());
  EXPECT_EQ(created.name(), shm.name()) << "name() has no leading '/'";
  EXPECT_TRUE(test::shm_exists(shm.name()));
  Segment opened = Segment::open(shm.name());
  EXPECT_EQ(opened.geometry(), created.geometry());
  Segment again = Segment::open("/" + shm.name());
  EXPECT_TRUE(again);
  std::error_code ec;
  EXPECT_TRUE(Segment::unlink(std::string("/") + shm.name(), ec));
  EXPECT_FALSE(ec);
  EXPECT_FALSE(test::shm_exists(shm.name()));
}

TEST(Segment, ErrorCodeOverloadsClearTheCodeOnSuccess) {
  test::UniqueShm shm;
  std::error_code ec = make_error_code(errc::bad_magic);
  Segment s = Segment::create(shm.name(), spsc(), ec);
  EXPECT_FALSE(ec);
  EXPECT_TRUE(s);
  ec = make_error_code(errc::bad_magic);
  Segment o = Segment::open(shm.name(), {}, ec);
  EXPECT_FALSE(ec);
  EXPECT_TRUE(o);
  ec = make_error_code(errc::bad_magic);
  Segment oc = Segment::open_or_create(shm.name(), spsc(), 1s, ec);
  EXPECT_FALSE(ec);
  EXPECT_TRUE(oc);
  ec = make_error_code(errc::bad_magic);
  EXPECT_TRUE(Segment::unlink(shm.name(), ec));
  EXPECT_FALSE(ec);
}

// ---- names -----------------------------------------------------------------

struct BadName {
  std::string name;
  std::string shown;  // how the message names it
  std::string why;
};

std::vector<BadName> bad_names() {
  const std::string long_name(256, 'n');
  return {
      {"a/b", "a/b", "contains '/'"},
      {"/a/b", "/a/b", "contains '/'"},
      {"//x", "//x", "contains '/'"},
      {"", "", "empty"},
      {"/", "/", "empty"},
      {long_name, long_name, "256 characters"},
      {"/" + long_name, "/" + long_name, "256 characters"},
      {".", ".", "'.' or '..'"},
      {"..", "..", "'.' or '..'"},
      {"/..", "/..", "'.' or '..'"},
      // The library's own: `ring-inspect gc` removes such files once unlocked.
      {".shmring-init.mine", ".shmring-init.mine", "reserved"},
      {"/.shmring-init.", "/.shmring-init.", "reserved"},
  };
}

TEST(SegmentNames, EveryCallRefusesBadNames) {
  for (const BadName& b : bad_names()) {
    SCOPED_TRACE("name \"" + b.name + "\"");
    EXPECT_NE(Segment::name_problem(b.name), "");
    expect_create_fails(b.name, spsc(), errc::invalid_name, b.shown, {b.why});
    expect_open_fails(b.name, quick_open(), errc::invalid_name, b.shown, {b.why});
    expect_failure(
        [&] { (void)Segment::open_or_create(b.name, spsc()); },
        [&](std::error_code& ec) { return Segment::open_or_create(b.name, spsc(), 1s, ec); },
        errc::invalid_name, b.shown, {b.why});
    expect_failure([&] { Segment::unlink(b.name); },
                   [&](std::error_code& ec) { return Segment::unlink(b.name, ec); },
                   errc::invalid_name, b.shown, {b.why});
  }
  // Nothing was created under a stripped or mangled form of the names.
  EXPECT_FALSE(test::shm_exists("a"));
  EXPECT_FALSE(test::shm_exists(std::string(256, 'n').substr(0, 255)));
}

// A NUL byte cannot travel through what() (a C string), so only the
// error_code overload's message is checked in full.
TEST(SegmentNames, NulByteIsRefused) {
  const std::string name("a\0b", 3);
  EXPECT_NE(Segment::name_problem(name).find("NUL"), std::string::npos);
  EXPECT_EQ(thrown([&] { (void)Segment::create(name, spsc()); }).code,
            make_error_code(errc::invalid_name));
  EXPECT_EQ(thrown([&] { (void)Segment::open(name, quick_open()); }).code,
            make_error_code(errc::invalid_name));
  // The message shows the NUL escaped, so neither form of it is cut short.
  const std::string printable = "a\\x00b";
  expect_message(reported([&](std::error_code& ec) { return Segment::create(name, spsc(), ec); }),
                 errc::invalid_name, printable, {"NUL"});
  expect_message(reported([&](std::error_code& ec) { return Segment::unlink(name, ec); }),
                 errc::invalid_name, printable, {"NUL"});
  EXPECT_NE(thrown([&] { (void)Segment::create(name, spsc()); }).message.find(printable),
            std::string::npos);
  EXPECT_FALSE(test::shm_exists("a"));
}

TEST(SegmentNames, LongestAllowedName) {
  std::string name = test::name_prefix() + "longest_";
  name.resize(kMaxNameLength, 'x');
  ASSERT_EQ(name.size(), 255u);
  test::ShmGuard guard(name);
  EXPECT_EQ(Segment::name_problem(name), "");
  EXPECT_EQ(Segment::name_problem("/" + name), "") << "the leading '/' does not count";
  Segment s = Segment::create(name, spsc());
  EXPECT_TRUE(s);
  EXPECT_TRUE(Segment::open(name));
  Segment::unlink(name);
}

// ---- create's arguments ----------------------------------------------------

TEST(SegmentCreate, BadCapacity) {
  test::UniqueShm shm;
  const std::string& n = shm.name();
  expect_create_fails(n, spsc(0), errc::invalid_capacity, n, {"capacity is 0"});
  expect_create_fails(n, spsc(3), errc::invalid_capacity, n, {"not a power of two", "capacity 3"});
  expect_create_fails(n, spsc(1000), errc::invalid_capacity, n, {"not a power of two", "1000"});
  expect_create_fails(n, spsc(kMaxCapacity * 2), errc::invalid_capacity, n,
                      {"exceeds", std::to_string(kMaxCapacity * 2)});
  EXPECT_FALSE(test::shm_exists(n)) << "a refused create leaves no file";
}

TEST(SegmentCreate, BadSlotSize) {
  test::UniqueShm shm;
  const std::string& n = shm.name();
  expect_create_fails(n, spsc(8, 0), errc::invalid_slot_size, n, {"slot size is 0"});
  expect_create_fails(n, spsc(8, kMaxSlotSize + 1), errc::invalid_slot_size, n,
                      {"slot size exceeds", std::to_string(kMaxSlotSize + 1)});
  EXPECT_FALSE(test::shm_exists(n));
}

TEST(SegmentCreate, SizeOverflow) {
  test::UniqueShm shm;
  const std::string& n = shm.name();
  expect_create_fails(
      n, spsc(kMaxCapacity, kMaxSlotSize), errc::size_overflow, n,
      {"segment limit", std::to_string(kMaxCapacity), std::to_string(kMaxSlotSize)});
  expect_create_fails(n, mpmc(std::uint64_t{1} << 16, kMaxSlotSize), errc::size_overflow, n,
                      {"segment limit"});
  EXPECT_FALSE(test::shm_exists(n));
}

TEST(SegmentCreate, ModeOutsideReadWriteBits) {
  test::UniqueShm shm;
  // A bad argument, not a refusal by the system: invalid_argument, naming it.
  expect_create_fails(shm.name(), spsc(8, 64, 0700), errc::invalid_argument, shm.name(),
                      {"mode 0700", "0666"});
  expect_create_fails(shm.name(), spsc(8, 64, 04600), errc::invalid_argument, shm.name(),
                      {"mode 04600", "0666"});
  EXPECT_FALSE(test::shm_exists(shm.name()));
}

TEST(SegmentCreate, MoreThanDevShmHolds) {
  struct statfs fs {};
  ASSERT_EQ(::statfs("/dev/shm", &fs), 0);
  const std::uint64_t total =
      static_cast<std::uint64_t>(fs.f_blocks) * static_cast<std::uint64_t>(fs.f_bsize);
  if (fs.f_type != TMPFS_MAGIC || total == 0) {
    GTEST_SKIP() << "/dev/shm is not a size-limited tmpfs; a huge reservation could exhaust memory";
  }
  // tmpfs refuses a fallocate larger than the whole file system up front.
  std::uint64_t capacity = 1;
  while (capacity * (std::uint64_t{1} << 20) <= 2 * total) capacity *= 2;
  CreateOptions o = spsc(capacity, (std::uint64_t{1} << 20) - 32);
  Geometry g;
  ASSERT_EQ(compute_geometry(o.kind, o.capacity, o.slot_size, g), GeometryCheck::ok)
      << "/dev/shm is larger than a segment may be";
  test::UniqueShm shm;
  expect_create_fails(shm.name(), o, errc::no_space, shm.name(),
                      {"cannot reserve", std::to_string(g.segment_size)});
  EXPECT_FALSE(test::shm_exists(shm.name())) << "the half-made file is removed";
}

TEST(SegmentCreate, ExistingNameIsLeftUntouched) {
  test::UniqueShm shm;
  Segment first = Segment::create(shm.name(), spsc(8, 64));
  {
    SpscProducer tx = SpscProducer::attach(first);
    ASSERT_EQ(tx.try_push(test::as_bytes("kept")), Status::ok);
  }
  const auto size_before = test::file_size(shm.name());
  expect_create_fails(shm.name(), spsc(8, 64), errc::already_exists, shm.name(),
                      {"create /dev/shm/" + shm.name()});
  expect_create_fails(shm.name(), mpmc(64, 4096), errc::already_exists, shm.name(), {"exists"});
  EXPECT_EQ(test::file_size(shm.name()), size_before);
  Segment reopened = Segment::open(shm.name());
  EXPECT_EQ(reopened.geometry(), first.geometry());
  SpscConsumer rx = SpscConsumer::attach(reopened);
  std::byte buf[64];
  std::size_t size = 0;
  ASSERT_EQ(rx.try_pop(buf, size), Status::ok);
  EXPECT_EQ(test::to_string({buf, size}), "kept");
  Segment::unlink(shm.name());
}

// ---- permissions -----------------------------------------------------------

TEST(SegmentMode, DefaultIsOwnerOnly) {
  test::UniqueShm shm;
  Segment s = Segment::create(shm.name(), spsc());
  EXPECT_EQ(test::file_mode(shm.name()), 0600u);
  Segment::unlink(shm.name());
}

TEST(SegmentMode, RequestedModeIsApplied) {
  for (mode_t mode : {mode_t{0640}, mode_t{0660}, mode_t{0644}, mode_t{0400}}) {
    test::UniqueShm shm(std::to_string(mode));
    // umask does not apply: the final mode is set explicitly.
    const mode_t old_umask = ::umask(0077);
    Segment s = Segment::create(shm.name(), spsc(8, 64, mode));
    ::umask(old_umask);
    EXPECT_EQ(test::file_mode(shm.name()), mode) << std::oct << "asked for 0" << mode;
    Segment::unlink(shm.name());
  }
}

// The umask narrows the mode open() creates the file with; create() sets the
// final mode with fchmod afterwards, so even the default 0600 survives a
// umask that clears owner bits.
TEST(SegmentMode, DefaultModeIgnoresTheUmask) {
  test::UniqueShm shm;
  const mode_t old_umask = ::umask(0277);
  std::error_code ec;
  Segment s = Segment::create(shm.name(), spsc(), ec);
  ::umask(old_umask);
  ASSERT_FALSE(ec) << last_error_message();
  EXPECT_EQ(test::file_mode(shm.name()), 0600u)
      << std::oct << "got 0" << test::file_mode(shm.name());
  Segment::unlink(shm.name());
}

TEST(SegmentCreate, UnknownRingKind) {
  test::UniqueShm shm;
  CreateOptions o = spsc();
  o.kind = static_cast<RingKind>(5);
  expect_create_fails(shm.name(), o, errc::invalid_argument, shm.name(),
                      {"ring kind 5", "is not spsc (1), mpmc (2) or broadcast (3)"});
  EXPECT_FALSE(test::shm_exists(shm.name()));
}

// ---- open ------------------------------------------------------------------

TEST(SegmentOpen, Missing) {
  test::UniqueShm shm;
  expect_open_fails(shm.name(), quick_open(), errc::not_found, shm.name(),
                    {"open /dev/shm/" + shm.name()});
  expect_failure([&] { Segment::unlink(shm.name()); },
                 [&](std::error_code& ec) { return Segment::unlink(shm.name(), ec); },
                 errc::not_found, shm.name(), {"unlink"});
}

TEST(SegmentOpen, KindIsCheckedWhenAsked) {
  test::UniqueShm a("spsc");
  test::UniqueShm b("mpmc");
  Segment s = Segment::create(a.name(), spsc());
  Segment m = Segment::create(b.name(), mpmc());
  OpenOptions want_mpmc;
  want_mpmc.kind = RingKind::mpmc;
  OpenOptions want_spsc;
  want_spsc.kind = RingKind::spsc;
  expect_open_fails(a.name(), want_mpmc, errc::kind_mismatch, a.name(),
                    {"the ring is spsc", "asked for mpmc"});
  expect_open_fails(b.name(), want_spsc, errc::kind_mismatch, b.name(),
                    {"the ring is mpmc", "asked for spsc"});
  EXPECT_EQ(Segment::open(a.name(), want_spsc).geometry().kind, RingKind::spsc);
  EXPECT_EQ(Segment::open(b.name(), want_mpmc).geometry().kind, RingKind::mpmc);
  EXPECT_EQ(Segment::open(a.name()).geometry().kind, RingKind::spsc) << "no kind: either is fine";
  EXPECT_EQ(Segment::open(b.name()).geometry().kind, RingKind::mpmc);
  Segment::unlink(a.name());
  Segment::unlink(b.name());
}

TEST(SegmentOpen, WrongMagic) {
  test::UniqueShm shm;
  { Segment s = Segment::create(shm.name(), spsc()); }
  ASSERT_TRUE(test::write_value_at<std::uint64_t>(shm.name(), 0, 0x0123456789abcdefull));
  const auto start = Clock::now();
  expect_open_fails(shm.name(), quick_open(10s), errc::bad_magic, shm.name(),
                    {"magic", "0x123456789abcdef"});
  EXPECT_LT(Clock::now() - start, 5s)
      << "a foreign magic is refused at once, not after the timeout";
  // A zero magic with a version set is not "still initialising" either.
  ASSERT_TRUE(test::write_value_at<std::uint64_t>(shm.name(), 0, 0));
  expect_open_fails(shm.name(), quick_open(10s), errc::bad_magic, shm.name(), {"magic is 0x0"});
  Segment::unlink(shm.name());
}

TEST(SegmentOpen, WrongAbiVersion) {
  test::UniqueShm shm;
  { Segment s = Segment::create(shm.name(), spsc()); }
  ASSERT_TRUE(test::write_value_at<std::uint32_t>(shm.name(), offsetof(SegmentHeader, abi_version),
                                                  kAbiVersion + 1));
  expect_open_fails(shm.name(), quick_open(), errc::abi_mismatch, shm.name(),
                    {"ABI version is " + std::to_string(kAbiVersion + 1),
                     "version " + std::to_string(kAbiVersion)});
  Segment::unlink(shm.name());
}

TEST(SegmentOpen, UnknownRingKind) {
  test::UniqueShm shm;
  { Segment s = Segment::create(shm.name(), spsc()); }
  ASSERT_TRUE(
      test::write_value_at<std::uint32_t>(shm.name(), offsetof(SegmentHeader, ring_kind), 9));
  expect_open_fails(shm.name(), quick_open(), errc::corrupt_header, shm.name(), {"ring kind 9"});
  Segment::unlink(shm.name());
}

TEST(SegmentOpen, TruncatedFile) {
  test::UniqueShm shm;
  Geometry g;
  { g = Segment::create(shm.name(), spsc(8, 64)).geometry(); }
  ASSERT_TRUE(test::truncate_file(shm.name(), g.segment_size - 1));
  expect_open_fails(shm.name(), quick_open(), errc::truncated, shm.name(),
                    {"file is " + std::to_string(g.segment_size - 1) + " bytes",
                     "header says " + std::to_string(g.segment_size)});
  ASSERT_TRUE(test::truncate_file(shm.name(), g.slots_offset));
  expect_open_fails(shm.name(), quick_open(), errc::truncated, shm.name(),
                    {"file is " + std::to_string(g.slots_offset) + " bytes"});
  Segment::unlink(shm.name());
}

TEST(SegmentOpen, LargerThanTheHeaderSays) {
  test::UniqueShm shm;
  Geometry g;
  { g = Segment::create(shm.name(), spsc(8, 64)).geometry(); }
  ASSERT_TRUE(test::truncate_file(shm.name(), g.segment_size + 4096));
  expect_open_fails(shm.name(), quick_open(), errc::corrupt_header, shm.name(),
                    {"file is " + std::to_string(g.segment_size + 4096) + " bytes", "larger than"});
  Segment::unlink(shm.name());
}

TEST(SegmentOpen, LayoutFieldsContradictTheGeometry) {
  test::UniqueShm shm;
  Geometry g;
  { g = Segment::create(shm.name(), spsc(8, 64)).geometry(); }
  struct Field {
    std::size_t offset;
    std::uint64_t value;
    const char* shows;
  };
  const Field fields[] = {
      {offsetof(SegmentHeader, slot_stride), g.slot_stride + 64, "stride"},
      {offsetof(SegmentHeader, slot_stride), g.slot_stride / 2, "stride"},
      {offsetof(SegmentHeader, slots_offset), g.slots_offset + 128, "slots at"},
      {offsetof(SegmentHeader, slots_offset), 0, "slots at 0"},
      {offsetof(SegmentHeader, segment_size), g.segment_size * 2, "size"},
      {offsetof(SegmentHeader, capacity), 16, "capacity 16"},  // valid alone, not with the rest
      {offsetof(SegmentHeader, slot_size), 1000, "slot size 1000"},
  };
  for (const Field& f : fields) {
    SCOPED_TRACE(std::string("field at ") + std::to_string(f.offset) + " = " +
                 std::to_string(f.value));
    std::uint64_t original = test::read_value_at<std::uint64_t>(shm.name(), f.offset);
    ASSERT_TRUE(test::write_value_at(shm.name(), f.offset, f.value));
    expect_open_fails(shm.name(), quick_open(), errc::corrupt_header, shm.name(),
                      {"does not match", f.shows});
    ASSERT_TRUE(test::write_value_at(shm.name(), f.offset, original));
  }
  EXPECT_TRUE(Segment::open(shm.name())) << "restored header opens again";
  Segment::unlink(shm.name());
}

TEST(SegmentOpen, HeaderGeometryBreaksTheRules) {
  test::UniqueShm shm;
  { Segment s = Segment::create(shm.name(), spsc(8, 64)); }
  struct Field {
    std::size_t offset;
    std::uint64_t value;
    const char* shows;
  };
  const Field fields[] = {
      {offsetof(SegmentHeader, capacity), 0, "capacity is 0"},
      {offsetof(SegmentHeader, capacity), 6, "not a power of two"},
      {offsetof(SegmentHeader, capacity), std::uint64_t{1} << 40, "exceeds"},
      {offsetof(SegmentHeader, slot_size), 0, "slot size is 0"},
      {offsetof(SegmentHeader, slot_size), ~0ull, "slot size exceeds"},
  };
  for (const Field& f : fields) {
    SCOPED_TRACE(f.shows);
    const auto original = test::read_value_at<std::uint64_t>(shm.name(), f.offset);
    ASSERT_TRUE(test::write_value_at(shm.name(), f.offset, f.value));
    expect_open_fails(shm.name(), quick_open(), errc::corrupt_header, shm.name(),
                      {"header geometry is invalid", f.shows});
    ASSERT_TRUE(test::write_value_at(shm.name(), f.offset, original));
  }
  Segment::unlink(shm.name());
}

TEST(SegmentOpen, BlankFileTimesOut) {
  test::UniqueShm shm;
  const std::vector<std::byte> zeros(4096);
  ASSERT_TRUE(test::make_plain_file(shm.name(), zeros));
  const auto timeout = 60ms;
  auto start = Clock::now();
  expect_message(thrown([&] { (void)Segment::open(shm.name(), quick_open(timeout)); }),
                 errc::init_timeout, shm.name(), {"after 60 ms", "4096 bytes"});
  EXPECT_GE(Clock::now() - start, timeout);
  start = Clock::now();
  expect_message(reported([&](std::error_code& ec) {
                   return Segment::open(shm.name(), quick_open(timeout), ec);
                 }),
                 errc::init_timeout, shm.name(), {"after 60 ms"});
  EXPECT_GE(Clock::now() - start, timeout);
}

TEST(SegmentOpen, EmptyOrTinyFileTimesOut) {
  for (std::size_t size : {std::size_t{0}, std::size_t{100}}) {
    test::UniqueShm shm(std::to_string(size));
    const std::vector<std::byte> bytes(size, std::byte{0x77});
    ASSERT_TRUE(test::make_plain_file(shm.name(), bytes));
    const auto start = Clock::now();
    expect_message(thrown([&] { (void)Segment::open(shm.name(), quick_open(30ms)); }),
                   errc::init_timeout, shm.name(), {"file is " + std::to_string(size) + " bytes"});
    EXPECT_GE(Clock::now() - start, 30ms);
  }
}

TEST(SegmentOpen, GarbageFileIsNotASegment) {
  test::UniqueShm shm;
  std::vector<std::byte> garbage(8192);
  std::uint32_t x = 0x9e3779b9u;
  for (auto& b : garbage) {
    x ^= x << 13;
    x ^= x >> 17;
    x ^= x << 5;
    b = static_cast<std::byte>(x);
  }
  ASSERT_TRUE(test::make_plain_file(shm.name(), garbage));
  const auto start = Clock::now();
  expect_open_fails(shm.name(), quick_open(10s), errc::bad_magic, shm.name(),
                    {"not a shmring segment"});
  EXPECT_LT(Clock::now() - start, 5s);
  expect_failure(
      [&] { (void)Segment::open_or_create(shm.name(), spsc()); },
      [&](std::error_code& ec) { return Segment::open_or_create(shm.name(), spsc(), 1s, ec); },
      errc::bad_magic, shm.name(), {"magic"});
  EXPECT_EQ(test::file_size(shm.name()), 8192) << "the foreign file is left alone";
}

TEST(SegmentOpen, WaitsForACreatorStillInitialising) {
  test::UniqueShm shm;
  { Segment s = Segment::create(shm.name(), spsc()); }
  const std::size_t at = offsetof(SegmentHeader, abi_version);
  ASSERT_TRUE(test::write_value_at<std::uint32_t>(shm.name(), at, 0));
  // The "creator" finishes while open() waits; open() succeeds whenever the
  // version appears within its (long) timeout.
  std::thread creator([&] {
    std::this_thread::sleep_for(30ms);
    EXPECT_TRUE(test::write_value_at<std::uint32_t>(shm.name(), at, kAbiVersion));
  });
  std::error_code ec;
  Segment s = Segment::open(shm.name(), quick_open(20s), ec);
  creator.join();
  EXPECT_FALSE(ec) << last_error_message();
  EXPECT_TRUE(s);
  Segment::unlink(shm.name());
}

TEST(SegmentOpen, CreatorThatNeverFinishes) {
  test::UniqueShm shm;
  { Segment s = Segment::create(shm.name(), spsc()); }
  // Magic written, version not yet: a creator that died mid-initialisation.
  ASSERT_TRUE(
      test::write_value_at<std::uint32_t>(shm.name(), offsetof(SegmentHeader, abi_version), 0));
  const auto start = Clock::now();
  expect_open_fails(shm.name(), quick_open(40ms), errc::init_timeout, shm.name(),
                    {"after 40 ms", "still initialising"});
  EXPECT_GE(Clock::now() - start, 2 * 40ms) << "both overloads waited";
  Segment::unlink(shm.name());
}

TEST(SegmentOpen, DirectoryIsNotASegment) {
  test::UniqueShm shm;
  ASSERT_EQ(::mkdir(test::shm_path(shm.name()).c_str(), 0700), 0);
  OpenOptions ro = quick_open();
  ro.read_only = true;
  expect_open_fails(shm.name(), ro, errc::not_a_segment, shm.name(), {"not a regular file"});
  // Read-write: open(2) itself refuses (EISDIR), with the same named error.
  expect_open_fails(shm.name(), quick_open(), errc::not_a_segment, shm.name(),
                    {"is a directory, not a segment"});
  ::rmdir(test::shm_path(shm.name()).c_str());
}

TEST(SegmentOpen, SocketIsNotASegment) {
  test::UniqueShm shm;
  const int sock = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  ASSERT_GE(sock, 0);
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  const std::string path = test::shm_path(shm.name());
  ASSERT_LT(path.size(), sizeof addr.sun_path);
  std::memcpy(addr.sun_path, path.c_str(), path.size() + 1);
  ASSERT_EQ(::bind(sock, reinterpret_cast<const sockaddr*>(&addr), sizeof addr), 0);
  OpenOptions ro = quick_open();
  ro.read_only = true;
  // Read-only and read-write (where open(2) says ENXIO) alike.
  expect_open_fails(shm.name(), ro, errc::not_a_segment, shm.name(), {"socket"});
  expect_open_fails(shm.name(), quick_open(), errc::not_a_segment, shm.name(), {"socket"});
  ::close(sock);
  ::unlink(path.c_str());
}

// Anybody may make a FIFO in /dev/shm under a ring's name. Opening it must be
// refused at once: a read-only open(2) of a FIFO blocks until a writer comes.
// The open runs in a child with an alarm, so a hang fails instead of hanging.
//
// A FIFO planted under a ring's name: a read-only open must not block waiting
// for a writer (open uses O_NONBLOCK), and the regular-file check refuses it.
// A file of the right size whose pages are not all there (holes, as
// ftruncate leaves them): a write to a hole when /dev/shm is full would kill
// the writer with SIGBUS. A read-write open reserves the pages, or refuses.
TEST(SegmentOpen, SparseFileIsFilledInOrRefused) {
  test::UniqueShm good("good"), sparse("sparse");
  Segment made = Segment::create(good.name(), spsc(64, 4096));
  const std::uint64_t size = made.size();
  const int fd =
      ::open(test::shm_path(sparse.name()).c_str(), O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
  ASSERT_GE(fd, 0);
  ASSERT_EQ(::ftruncate(fd, static_cast<off_t>(size)), 0);
  ASSERT_EQ(::pwrite(fd, made.base(), kSlotsOffset, 0), static_cast<ssize_t>(kSlotsOffset));
  const auto allocated = [&] {
    struct stat st {};
    ::fstat(fd, &st);
    return static_cast<std::uint64_t>(st.st_blocks) * 512;
  };
  ASSERT_LT(allocated(), size) << "the file should have holes";

  // Reading holes is harmless: a read-only open leaves the file as it is.
  OpenOptions ro = quick_open();
  ro.read_only = true;
  EXPECT_TRUE(Segment::open(sparse.name(), ro));
  EXPECT_LT(allocated(), size);
  {
    // /dev/shm cannot supply the pages: refused, naming why.
    fault::ScopedHook full(
        [](fault::Call c, void*) noexcept { return c == fault::Call::fallocate ? ENOSPC : 0; });
    expect_open_fails(sparse.name(), quick_open(), errc::no_space, sparse.name(),
                      {"sparse", "of its " + std::to_string(size) + " bytes"});
  }
  Segment opened = Segment::open(sparse.name(), quick_open());
  ASSERT_TRUE(opened);
  EXPECT_GE(allocated(), size) << "every page is there before anybody writes";
  ::close(fd);
  Segment::unlink(sparse.name());
  Segment::unlink(good.name());
}

// The names create() initialises under are drawn at random, so nobody can
// take them first (the old ones were the pid, start time and a counter).
TEST(SegmentCreate, PlantedInitialisationNamesDoNotBlockCreate) {
  std::vector<std::string> planted;
  const auto self = process::self();
  ASSERT_TRUE(self);
  for (int i = 0; i < 32; ++i) {
    const std::string name = std::string(kInitFilePrefix) + std::to_string(self->pid) + "." +
                             std::to_string(self->start_time) + "." + std::to_string(i);
    const int fd = ::open(test::shm_path(name).c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    ASSERT_GE(fd, 0);
    ::close(fd);
    planted.push_back(name);
  }
  test::UniqueShm shm;
  std::error_code ec;
  Segment s = Segment::create(shm.name(), spsc(), ec);
  EXPECT_TRUE(s) << last_error_message();
  for (const auto& name : planted) ::unlink(test::shm_path(name).c_str());
  if (s) Segment::unlink(shm.name());
}

TEST(SegmentOpen, FifoIsRefusedWithoutBlocking) {
  test::UniqueShm shm;
  ASSERT_EQ(::mkfifo(test::shm_path(shm.name()).c_str(), 0600), 0);
  for (bool read_only : {false, true}) {
    SCOPED_TRACE(read_only ? "read-only" : "read-write");
    const int rc = test::run_in_child([&] {
      ::alarm(5);
      OpenOptions o = quick_open();
      o.read_only = read_only;
      std::error_code ec;
      Segment s = Segment::open(shm.name(), o, ec);
      return ec == make_error_code(errc::not_a_segment) ? 0 : 1;
    });
    EXPECT_EQ(rc, 0) << (rc == -1 ? "open blocked (killed by the alarm)" : "wrong error");
  }
  expect_create_fails(shm.name(), spsc(), errc::already_exists, shm.name(), {"exists"});
}

// ---- symbolic links ----------------------------------------------------------

TEST(SegmentSymlink, OpenRefusesToFollow) {
  test::UniqueShm target("target");
  test::UniqueShm link("link");
  Segment real = Segment::create(target.name(), spsc());
  ASSERT_EQ(::symlink(target.path().c_str(), link.path().c_str()), 0);
  expect_open_fails(link.name(), quick_open(), errc::not_a_segment, link.name(), {"symbolic link"});
  OpenOptions ro = quick_open();
  ro.read_only = true;
  expect_open_fails(link.name(), ro, errc::not_a_segment, link.name(), {"symbolic link"});
  // Unlinking the name removes the link, never its target.
  Segment::unlink(link.name());
  EXPECT_FALSE(test::shm_exists(link.name()));
  EXPECT_TRUE(test::shm_exists(target.name()));
  Segment::unlink(target.name());
}

TEST(SegmentSymlink, CreateDoesNotWriteThroughALink) {
  test::UniqueShm target("target");
  test::UniqueShm link("link");
  // A dangling link: following it would create the target.
  ASSERT_EQ(::symlink(target.path().c_str(), link.path().c_str()), 0);
  expect_create_fails(link.name(), spsc(), errc::already_exists, link.name(), {"exists"});
  EXPECT_FALSE(test::shm_exists(target.name())) << "create followed the link";
  expect_failure(
      [&] { (void)Segment::open_or_create(link.name(), spsc()); },
      [&](std::error_code& ec) { return Segment::open_or_create(link.name(), spsc(), 1s, ec); },
      errc::not_a_segment, link.name(), {"symbolic link"});
  EXPECT_FALSE(test::shm_exists(target.name()));
  // A link to a live segment: create neither follows nor truncates it.
  Segment real = Segment::create(target.name(), mpmc());
  const auto size = test::file_size(target.name());
  expect_create_fails(link.name(), spsc(4, 4096), errc::already_exists, link.name(), {"exists"});
  EXPECT_EQ(test::file_size(target.name()), size);
  EXPECT_EQ(Segment::open(target.name()).geometry(), real.geometry());
  Segment::unlink(target.name());
}

// ---- open_or_create ----------------------------------------------------------

TEST(SegmentOpenOrCreate, CreatesThenOpens) {
  test::UniqueShm shm;
  Segment first = Segment::open_or_create(shm.name(), mpmc(32, 200));
  EXPECT_TRUE(first.created());
  EXPECT_EQ(first.geometry().capacity, 32u);
  EXPECT_EQ(first.geometry().slot_size, 200u);
  Segment second = Segment::open_or_create(shm.name(), mpmc(32, 200));
  EXPECT_FALSE(second.created());
  EXPECT_EQ(second.geometry(), first.geometry());
  first.base()[first.geometry().slots_offset] = std::byte{0x42};
  EXPECT_EQ(second.base()[first.geometry().slots_offset], std::byte{0x42}) << "the same segment";
  std::error_code ec;
  Segment third = Segment::open_or_create(shm.name(), mpmc(32, 200), 1s, ec);
  EXPECT_FALSE(ec);
  EXPECT_FALSE(third.created());
  Segment::unlink(shm.name());
}

TEST(SegmentOpenOrCreate, OtherGeometryOrKindIsRefused) {
  test::UniqueShm shm;
  Segment first = Segment::open_or_create(shm.name(), mpmc(32, 200));
  const auto other_capacity = mpmc(64, 200);
  expect_failure([&] { (void)Segment::open_or_create(shm.name(), other_capacity); },
                 [&](std::error_code& ec) {
                   return Segment::open_or_create(shm.name(), other_capacity, 1s, ec);
                 },
                 errc::geometry_mismatch, shm.name(),
                 {"capacity 32", "slot size 200", "capacity 64"});
  const auto other_slot = mpmc(32, 100);
  expect_failure(
      [&] { (void)Segment::open_or_create(shm.name(), other_slot); },
      [&](std::error_code& ec) { return Segment::open_or_create(shm.name(), other_slot, 1s, ec); },
      errc::geometry_mismatch, shm.name(), {"slot size 100"});
  const auto other_kind = spsc(32, 200);
  expect_failure(
      [&] { (void)Segment::open_or_create(shm.name(), other_kind); },
      [&](std::error_code& ec) { return Segment::open_or_create(shm.name(), other_kind, 1s, ec); },
      errc::kind_mismatch, shm.name(), {"the ring is mpmc"});
  const auto bad = mpmc(3, 200);
  expect_failure(
      [&] { (void)Segment::open_or_create(shm.name(), bad); },
      [&](std::error_code& ec) { return Segment::open_or_create(shm.name(), bad, 1s, ec); },
      errc::invalid_capacity, shm.name(), {"not a power of two"});
  EXPECT_EQ(Segment::open(shm.name()).geometry(), first.geometry()) << "existing ring unchanged";
  Segment::unlink(shm.name());
}

// ---- read-only mappings ------------------------------------------------------

TEST(SegmentReadOnly, CanInspectButNotAttach) {
  test::UniqueShm s_name("spsc");
  test::UniqueShm m_name("mpmc");
  Segment s = Segment::create(s_name.name(), spsc());
  Segment m = Segment::create(m_name.name(), mpmc());
  OpenOptions ro;
  ro.read_only = true;
  Segment rs = Segment::open(s_name.name(), ro);
  Segment rm = Segment::open(m_name.name(), ro);
  EXPECT_TRUE(rs.read_only());
  EXPECT_TRUE(rm.read_only());
  EXPECT_EQ(rs.geometry(), s.geometry());
  // Inspection reads live values.
  {
    SpscProducer tx = SpscProducer::attach(s);
    ASSERT_EQ(tx.try_push(test::as_bytes("x")), Status::ok);
    EXPECT_EQ(reinterpret_cast<const ControlArea*>(rs.base())->producer.position, 1u);
  }
  const std::string& sn = s_name.name();
  const std::string& mn = m_name.name();
  expect_failure([&] { (void)SpscProducer::attach(rs); },
                 [&](std::error_code& ec) { return SpscProducer::attach(rs, {}, ec); },
                 errc::permission_denied, sn, {"read-only", "producer"});
  expect_failure([&] { (void)SpscConsumer::attach(rs); },
                 [&](std::error_code& ec) { return SpscConsumer::attach(rs, {}, ec); },
                 errc::permission_denied, sn, {"read-only", "consumer"});
  expect_failure([&] { (void)MpmcProducer::attach(rm); },
                 [&](std::error_code& ec) { return MpmcProducer::attach(rm, {}, ec); },
                 errc::permission_denied, mn, {"read-only", "producer"});
  expect_failure([&] { (void)MpmcConsumer::attach(rm); },
                 [&](std::error_code& ec) { return MpmcConsumer::attach(rm, {}, ec); },
                 errc::permission_denied, mn, {"read-only", "consumer"});
  // The refused attaches left no trace: the roles are still free.
  EXPECT_EQ(reinterpret_cast<const ControlArea*>(s.base())->producer.owner.identity, 0u);
  EXPECT_EQ(reinterpret_cast<const ControlArea*>(s.base())->consumer.owner.identity, 0u);
  EXPECT_EQ(reinterpret_cast<const ControlArea*>(m.base())->producer.attached, 0u);
  EXPECT_EQ(reinterpret_cast<const ControlArea*>(m.base())->consumer.attached, 0u);
  Segment::unlink(sn);
  Segment::unlink(mn);
}

TEST(SegmentAttach, WrongKindOrNoSegment) {
  test::UniqueShm s_name("spsc");
  test::UniqueShm m_name("mpmc");
  Segment s = Segment::create(s_name.name(), spsc());
  Segment m = Segment::create(m_name.name(), mpmc());
  expect_failure([&] { (void)SpscProducer::attach(m); },
                 [&](std::error_code& ec) { return SpscProducer::attach(m, {}, ec); },
                 errc::kind_mismatch, m_name.name(), {"SPSC producer", "mpmc ring"});
  expect_failure([&] { (void)SpscConsumer::attach(m); },
                 [&](std::error_code& ec) { return SpscConsumer::attach(m, {}, ec); },
                 errc::kind_mismatch, m_name.name(), {"SPSC consumer"});
  expect_failure([&] { (void)MpmcProducer::attach(s); },
                 [&](std::error_code& ec) { return MpmcProducer::attach(s, {}, ec); },
                 errc::kind_mismatch, s_name.name(), {"MPMC producer", "spsc ring"});
  expect_failure([&] { (void)MpmcConsumer::attach(s); },
                 [&](std::error_code& ec) { return MpmcConsumer::attach(s, {}, ec); },
                 errc::kind_mismatch, s_name.name(), {"MPMC consumer"});
  const Segment none;
  expect_failure([&] { (void)SpscProducer::attach(none); },
                 [&](std::error_code& ec) { return SpscProducer::attach(none, {}, ec); },
                 errc::no_segment, "", {"empty Segment"});
  expect_failure([&] { (void)MpmcConsumer::attach(none); },
                 [&](std::error_code& ec) { return MpmcConsumer::attach(none, {}, ec); },
                 errc::no_segment, "", {"empty Segment"});
  Segment::unlink(s_name.name());
  Segment::unlink(m_name.name());
}

// ---- ownership of the mapping -----------------------------------------------

static_assert(!std::is_copy_constructible_v<Segment> && !std::is_copy_assignable_v<Segment>);
static_assert(std::is_nothrow_move_constructible_v<Segment> &&
              std::is_nothrow_move_assignable_v<Segment>);

TEST(SegmentOwnership, MoveLeavesAnEmptySegment) {
  test::UniqueShm shm;
  Segment a = Segment::create(shm.name(), spsc(16, 64));
  std::byte* base = a.base();
  const Geometry g = a.geometry();
  Segment b = std::move(a);
  EXPECT_TRUE(b);
  EXPECT_EQ(b.base(), base);
  EXPECT_EQ(b.geometry(), g);
  EXPECT_TRUE(b.created());
  EXPECT_FALSE(a);  // NOLINT(bugprone-use-after-move): the moved-from state is specified
  EXPECT_EQ(a.base(), nullptr);
  EXPECT_EQ(a.size(), 0u);
  EXPECT_EQ(a.name(), "");
  EXPECT_EQ(a.geometry().capacity, 0u);
  EXPECT_FALSE(a.created());
  Segment c;
  c = std::move(b);
  EXPECT_EQ(c.base(), base);
  EXPECT_FALSE(b);  // NOLINT(bugprone-use-after-move)
  Segment::unlink(shm.name());
}

TEST(SegmentOwnership, HandlesKeepTheMappingAlive) {
  test::UniqueShm shm;
  SpscProducer tx;
  SpscConsumer rx;
  std::shared_ptr<const void> token;
  std::byte* base = nullptr;
  {
    Segment s = Segment::create(shm.name(), spsc(4, 64));
    tx = SpscProducer::attach(s);
    rx = SpscConsumer::attach(s);
    token = s.lifetime();
    base = s.base();
    Segment::unlink(shm.name());
  }
  EXPECT_FALSE(test::shm_exists(shm.name()));
  // The Segment and the name are gone; the mapping is not.
  for (int i = 0; i < 10; ++i) {
    const std::string msg = "message " + std::to_string(i);
    ASSERT_EQ(tx.try_push(test::as_bytes(msg)), Status::ok);
    std::byte buf[64];
    std::size_t size = 0;
    ASSERT_EQ(rx.try_pop(buf, size), Status::ok);
    EXPECT_EQ(test::to_string({buf, size}), msg);
  }
  tx = SpscProducer();
  rx = SpscConsumer();
  // The lifetime token alone still keeps it mapped.
  auto* ctl = reinterpret_cast<ControlArea*>(base);
  EXPECT_EQ(ctl->header.magic, kMagic);
  EXPECT_EQ(ctl->producer.position, 10u);
  EXPECT_EQ(ctl->consumer.position, 10u);
  EXPECT_EQ(ctl->producer.owner.identity, 0u) << "destroyed handles released their roles";
  token.reset();
}

// ---- another user's segment ---------------------------------------------------

// A file under the name owned by another uid is refused unless the caller
// opts in (only root can make one in a test).
TEST(SegmentForeignOwner, RefusedUnlessAllowed) {
  if (::geteuid() != 0) GTEST_SKIP() << "needs root to give a file to another uid";
  test::UniqueShm shm;
  { Segment made = Segment::create(shm.name(), spsc()); }
  const uid_t other = 65534;  // nobody
  ASSERT_EQ(::chown(shm.path().c_str(), other, other), 0);
  for (bool read_only : {false, true}) {
    SCOPED_TRACE(read_only ? "read-only" : "read-write");
    OpenOptions o = quick_open();
    o.read_only = read_only;
    expect_open_fails(shm.name(), o, errc::permission_denied, shm.name(),
                      {"owned by uid 65534", "allow_foreign_owner"});
    o.allow_foreign_owner = true;
    std::error_code ec;
    Segment s = Segment::open(shm.name(), o, ec);
    EXPECT_TRUE(s) << last_error_message();
  }
  expect_failure(
      [&] { (void)Segment::open_or_create(shm.name(), spsc()); },
      [&](std::error_code& ec) { return Segment::open_or_create(shm.name(), spsc(), 1s, ec); },
      errc::permission_denied, shm.name(), {"owned by uid 65534"});
  Segment::unlink(shm.name());
}

// ---- creators that die --------------------------------------------------------

fault::Call g_kill_at;

// Kills the calling process at the system call `g_kill_at` of create().
int kill_at_hook(fault::Call call, void*) noexcept {
  if (call == g_kill_at) ::raise(SIGKILL);
  return 0;
}

std::set<std::string> init_files() {
  std::set<std::string> found;
  if (DIR* d = ::opendir(test::kShmDir)) {
    while (const dirent* e = ::readdir(d)) {
      if (std::string(e->d_name).rfind(kInitFilePrefix, 0) == 0) found.emplace(e->d_name);
    }
    ::closedir(d);
  }
  return found;
}

// A creator killed (SIGKILL) at any step of create() never leaves a
// half-made segment under the name: the next open_or_create creates at once.
TEST(SegmentStale, CreatorKilledDuringInitialisationLeavesTheNameFree) {
  for (const fault::Call call :
       {fault::Call::fallocate, fault::Call::mmap, fault::Call::fchmod, fault::Call::link}) {
    SCOPED_TRACE(fault::to_string(call));
    test::UniqueShm shm;
    g_kill_at = call;
    const std::set<std::string> before = init_files();
    const pid_t child = ::fork();
    ASSERT_GE(child, 0);
    if (child == 0) {
      fault::set_hook(kill_at_hook);
      std::error_code ec;
      (void)Segment::create(shm.name(), spsc(), ec);
      ::_exit(0);  // not reached: the hook kills the child first
    }
    int status = 0;
    ASSERT_EQ(::waitpid(child, &status, 0), child);
    ASSERT_TRUE(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL);
    EXPECT_FALSE(test::shm_exists(shm.name())) << "a half-made segment carries the name";
    // What the dead creator left is its private file, unlocked: gc collects it.
    // Other tests that ctest runs at the same time create segments too: their
    // files are locked, or for an instant just made and not yet locked, and
    // soon locked, renamed or gone. Ours stays unlocked, so wait (bounded)
    // until it is the only new unlocked one.
    std::vector<std::string> left;
    const auto new_unlocked = [&] {
      left.clear();
      for (const auto& f : init_files()) {
        if (before.count(f) == 0 && !test::creator_locked(test::kShmDir + f)) left.push_back(f);
      }
      return left.size() == 1;
    };
    (void)test::poll_until(new_unlocked, std::chrono::seconds(2));
    EXPECT_EQ(left.size(), 1u);
    for (const auto& f : left) {
      EXPECT_EQ(f.size(), kInitFilePrefix.size() + 32) << "128 random bits in hex: " << f;
      ::unlink((test::kShmDir + f).c_str());
    }

    const auto start = Clock::now();
    Segment s = Segment::open_or_create(shm.name(), spsc());
    EXPECT_TRUE(s.created());
    EXPECT_LT(Clock::now() - start, 500ms) << "open_or_create waited for a dead creator";
    Segment::unlink(shm.name());
  }
}

// A file left under the name by a creator that died mid-way (magic written,
// version never stored; what creators that initialised in place could leave)
// is replaced by open_or_create once nobody holds the creator's lock, and
// left alone while somebody does.
TEST(SegmentStale, OpenOrCreateReplacesAHalfMadeSegmentOfADeadCreator) {
  test::UniqueShm shm;
  { Segment s = Segment::create(shm.name(), mpmc(16, 32)); }
  ASSERT_TRUE(
      test::write_value_at<std::uint32_t>(shm.name(), offsetof(SegmentHeader, abi_version), 0));
  // A creator at work: it holds the lock. Left alone: open_or_create times out.
  test::CreatorLock creator(test::shm_path(shm.name()));
  ASSERT_TRUE(creator.held());
  std::error_code ec;
  EXPECT_FALSE(Segment::open_or_create(shm.name(), spsc(), 30ms, ec));
  EXPECT_EQ(ec, make_error_code(errc::init_timeout)) << last_error_message();
  EXPECT_TRUE(test::shm_exists(shm.name()));

  // The creator is gone: its lock with it.
  creator.release();
  Segment s = Segment::open_or_create(shm.name(), spsc(8, 64), 30ms, ec);
  ASSERT_TRUE(s) << last_error_message();
  EXPECT_TRUE(s.created());
  EXPECT_EQ(s.geometry().kind, RingKind::spsc);
  EXPECT_EQ(Segment::open(shm.name()).geometry(), s.geometry());
  Segment::unlink(shm.name());
}

// ---- errors ------------------------------------------------------------------

TEST(SegmentErrors, CategoryNamesEveryCode) {
  EXPECT_STREQ(error_category().name(), "shmring");
  std::set<std::string> seen;
  for (int e = static_cast<int>(errc::invalid_name); e <= static_cast<int>(errc::invalid_argument);
       ++e) {
    const std::string m = make_error_code(static_cast<errc>(e)).message();
    EXPECT_FALSE(m.empty());
    EXPECT_EQ(m.find("unknown"), std::string::npos) << "code " << e;
    EXPECT_TRUE(seen.insert(m).second) << "duplicate message " << m;
  }
  const std::error_code ec = errc::truncated;  // is_error_code_enum
  EXPECT_EQ(ec, make_error_code(errc::truncated));
  EXPECT_EQ(&ec.category(), &error_category());
}

TEST(SegmentErrors, ErrorIsASystemError) {
  test::UniqueShm shm;
  try {
    (void)Segment::open(shm.name(), quick_open());
    FAIL() << "no exception";
  } catch (const std::system_error& e) {
    EXPECT_EQ(e.code(), make_error_code(errc::not_found));
  }
}

}  // namespace
}  // namespace shmring

// ---- sealed segments -------------------------------------------------------------

namespace shmring {
namespace {

TEST(SegmentSealed, NobodyCanTruncateOrGrowIt) {
  Segment s = Segment::create_sealed("frames", spsc(8, 64));
  ASSERT_TRUE(s.sealed());
  EXPECT_EQ(s.name(), "memfd:frames");
  EXPECT_EQ(::ftruncate(s.fd(), 0), -1);
  EXPECT_EQ(errno, EPERM);
  EXPECT_EQ(::ftruncate(s.fd(), static_cast<off_t>(s.size()) * 2), -1);
  EXPECT_EQ(errno, EPERM);
  // Not even through a descriptor of its own.
  const int other = ::open(("/proc/self/fd/" + std::to_string(s.fd())).c_str(), O_RDWR);
  ASSERT_GE(other, 0);
  EXPECT_EQ(::ftruncate(other, 0), -1);
  ::close(other);
  // The seals cannot be taken off.
  EXPECT_EQ(::fcntl(s.fd(), F_ADD_SEALS, F_SEAL_WRITE), -1);
}

TEST(SegmentSealed, PassedToAnotherProcessOverAUnixSocket) {
  int sv[2];
  ASSERT_EQ(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
  constexpr std::uint64_t kMessages = 10000;
  const pid_t child = ::fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    ::close(sv[0]);
    OpenOptions o;
    o.require_sealed = true;
    Segment s = receive_segment(sv[1], o);
    if (!s.sealed() || s.name() != "memfd:passed") ::_exit(3);
    // A peer that holds the descriptor and tries to shrink it fails.
    if (::ftruncate(s.fd(), 0) == 0) ::_exit(4);
    SpscConsumer rx = SpscConsumer::attach(s);
    for (std::uint64_t want = 0; want < kMessages; ++want) {
      std::uint64_t got = 0;
      std::size_t n = 0;
      if (rx.pop(std::as_writable_bytes(std::span(&got, 1)), n, 10s) != Status::ok) ::_exit(1);
      if (n != sizeof got || got != want) ::_exit(2);
    }
    ::_exit(0);
  }
  ::close(sv[1]);
  Segment s = Segment::create_sealed("passed", spsc(64, 64));
  send_segment(sv[0], s);
  SpscProducer tx = SpscProducer::attach(s);
  for (std::uint64_t v = 0; v < kMessages; ++v) {
    ASSERT_EQ(tx.push(std::as_bytes(std::span(&v, 1)), 10s), Status::ok) << v;
  }
  EXPECT_EQ(test::wait_child(child), 0);
  ::close(sv[0]);
}

TEST(SegmentSealed, OpenFdChecksLikeOpen) {
  test::UniqueShm shm;
  Segment named = Segment::create(shm.name(), spsc());
  // A named segment's descriptor works, but is not sealed.
  const int fd = ::open(test::shm_path(shm.name()).c_str(), O_RDWR | O_CLOEXEC);
  ASSERT_GE(fd, 0);
  Segment again = Segment::open_fd(fd);
  ::close(fd);
  EXPECT_EQ(again.name(), shm.name()) << "named after the path it was opened by";
  EXPECT_FALSE(again.sealed());
  EXPECT_EQ(again.geometry(), named.geometry());
  OpenOptions sealed_only;
  sealed_only.require_sealed = true;
  std::error_code ec;
  EXPECT_FALSE(Segment::open_fd(named.fd(), sealed_only, ec));
  EXPECT_EQ(ec, make_error_code(errc::not_sealed)) << last_error_message();
  EXPECT_NE(last_error_message().find("truncate"), std::string::npos) << last_error_message();
  // Any other descriptor is refused with the check open() would make.
  const int null_fd = ::open("/dev/null", O_RDWR | O_CLOEXEC);
  EXPECT_FALSE(Segment::open_fd(null_fd, quick_open(), ec));
  EXPECT_EQ(ec, make_error_code(errc::not_a_segment)) << last_error_message();
  ::close(null_fd);
  Segment::unlink(shm.name());
}

TEST(SegmentSealed, ReceiveWithoutADescriptorIsNamed) {
  int sv[2];
  ASSERT_EQ(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
  ASSERT_EQ(::write(sv[0], "x", 1), 1);
  std::error_code ec;
  EXPECT_FALSE(receive_segment(sv[1], {}, ec));
  EXPECT_EQ(ec, make_error_code(errc::not_a_segment));
  EXPECT_NE(last_error_message().find("no descriptor"), std::string::npos) << last_error_message();
  ::close(sv[0]);
  EXPECT_FALSE(receive_segment(sv[1], {}, ec));
  EXPECT_NE(last_error_message().find("closed"), std::string::npos) << last_error_message();
  ::close(sv[1]);
}

}  // namespace
}  // namespace shmring

// ---- metadata --------------------------------------------------------------------

namespace shmring {
namespace {

TEST(SegmentMetadata, EveryOpenerReadsWhatTheCreatorWrote) {
  test::UniqueShm shm;
  CreateOptions o = spsc();
  o.metadata = std::string("{\"dtype\": \"<f4\"}\0binary", 24);
  Segment made = Segment::create(shm.name(), o);
  EXPECT_EQ(made.metadata(), o.metadata);
  EXPECT_EQ(Segment::open(shm.name()).metadata(), o.metadata);
  OpenOptions ro = quick_open();
  ro.read_only = true;
  EXPECT_EQ(Segment::open(shm.name(), ro).metadata(), o.metadata);
  // A sealed segment carries it too.
  Segment sealed = Segment::create_sealed("meta", o);
  EXPECT_EQ(Segment::open_fd(sealed.fd()).metadata(), o.metadata);
  // None given, none read.
  test::UniqueShm plain("plain");
  EXPECT_TRUE(Segment::create(plain.name(), spsc()).metadata().empty());
  Segment::unlink(plain.name());
  Segment::unlink(shm.name());
}

TEST(SegmentMetadata, TooMuchIsRefusedAndAScribbledLengthIsNamed) {
  test::UniqueShm shm;
  CreateOptions o = spsc();
  o.metadata.assign(kMetadataCapacity + 1, 'm');
  expect_create_fails(shm.name(), o, errc::invalid_argument, shm.name(),
                      {"metadata of " + std::to_string(kMetadataCapacity + 1) + " bytes"});
  o.metadata.assign(kMetadataCapacity, 'm');
  Segment made = Segment::create(shm.name(), o);
  EXPECT_EQ(made.metadata().size(), kMetadataCapacity);
  // A peer that writes an impossible length makes the next open refuse.
  ASSERT_TRUE(test::write_value_at<std::uint32_t>(
      shm.name(), offsetof(ControlArea, metadata) + offsetof(Metadata, length), 5000));
  expect_open_fails(shm.name(), quick_open(), errc::corrupt_header, shm.name(),
                    {"metadata length 5000"});
  // What was copied at open stays as it was.
  EXPECT_EQ(made.metadata().size(), kMetadataCapacity);
  Segment::unlink(shm.name());
}

}  // namespace
}  // namespace shmring
