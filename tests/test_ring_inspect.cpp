// ring-inspect, run as an operator would: the built binary against rings this
// test makes with the library, and against damaged and foreign files.
//
// JSON members are written as `"key": value` (one space after the colon), so
// fields are checked by searching for that text.
#include <dirent.h>
#include <fcntl.h>
#include <gtest/gtest.h>
#include <poll.h>
#include <sys/ioctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <chrono>
#include <csignal>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <initializer_list>
#include <set>
#include <span>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "shmring/fault_injection.hpp"
#include "shmring/process.hpp"
#include "shmring/shmring.hpp"
#include "test_support.hpp"

#ifndef RING_INSPECT
#error "RING_INSPECT must name the ring-inspect binary"
#endif

namespace shmring::test {
namespace {

struct Result {
  int rc = -1;
  std::string out;  // stdout and stderr together
};

Result inspect(const std::string& args) {
  Result r;
  const std::string cmd = std::string("'") + RING_INSPECT + "' " + args + " 2>&1";
  FILE* p = ::popen(cmd.c_str(), "r");
  if (p == nullptr) return r;
  std::array<char, 4096> buf{};
  std::size_t n = 0;
  while ((n = std::fread(buf.data(), 1, buf.size(), p)) > 0) r.out.append(buf.data(), n);
  const int status = ::pclose(p);
  r.rc = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  return r;
}

// ring-inspect running in the background, stdout and stderr on one pipe that
// the test reads with deadlines. A run still going when the test ends is
// killed and reaped.
class Background {
 public:
  // pipe_size: the pipe's capacity (F_SETPIPE_SZ), 0 for the default.
  explicit Background(const std::vector<std::string>& args, int pipe_size = 0) {
    int fds[2];
    if (::pipe2(fds, O_CLOEXEC) != 0) return;
    if (pipe_size > 0) (void)::fcntl(fds[0], F_SETPIPE_SZ, pipe_size);
    pid_ = ::fork();
    if (pid_ == 0) {
      ::dup2(fds[1], STDOUT_FILENO);
      ::dup2(fds[1], STDERR_FILENO);
      std::vector<char*> argv{const_cast<char*>(RING_INSPECT)};
      for (const std::string& a : args) argv.push_back(const_cast<char*>(a.c_str()));
      argv.push_back(nullptr);
      ::execv(RING_INSPECT, argv.data());
      ::_exit(127);
    }
    ::close(fds[1]);
    fd_ = fds[0];
  }
  Background(const Background&) = delete;
  Background& operator=(const Background&) = delete;
  ~Background() {
    if (pid_ > 0 && status_ < 0) {
      ::kill(pid_, SIGKILL);
      ::waitpid(pid_, nullptr, 0);
    }
    if (fd_ >= 0) ::close(fd_);
  }

  bool started() const { return pid_ > 0 && fd_ >= 0; }
  const std::string& text() const { return text_; }

  // Reads until `done(text())` holds; false if the output ended or the
  // deadline passed first.
  template <class Done>
  bool read_until(Done&& done, std::chrono::seconds limit = std::chrono::seconds(20)) {
    const auto deadline = std::chrono::steady_clock::now() + limit;
    while (!done(text_)) {
      if (!read_some(deadline)) return false;
    }
    return true;
  }

  // Reads to the end of the output (within the deadline) and reaps the
  // process: its wait status, or -1 if it was still writing at the deadline.
  int finish(std::chrono::seconds limit = std::chrono::seconds(20)) {
    const auto deadline = std::chrono::steady_clock::now() + limit;
    while (read_some(deadline)) {
    }
    if (!eof_) return -1;
    int status = 0;
    if (::waitpid(pid_, &status, 0) != pid_) return -1;
    status_ = status;
    return status;
  }

  // Waits until the pipe holds `bytes` unread: the writer is then blocked
  // (or about to block) in write.
  bool wait_buffered(int bytes, std::chrono::seconds limit = std::chrono::seconds(20)) {
    const auto deadline = std::chrono::steady_clock::now() + limit;
    for (;;) {
      int n = 0;
      if (::ioctl(fd_, FIONREAD, &n) != 0) return false;
      if (n >= bytes) return true;
      if (std::chrono::steady_clock::now() >= deadline) return false;
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
  }

  int pipe_size() const { return ::fcntl(fd_, F_GETPIPE_SZ); }

  // Sends SIGINT, as Ctrl-C would.
  bool interrupt() const { return pid_ > 0 && status_ < 0 && ::kill(pid_, SIGINT) == 0; }

 private:
  // One read, waiting for data until the deadline; false at the end of the
  // output or at the deadline.
  bool read_some(std::chrono::steady_clock::time_point deadline) {
    if (eof_) return false;
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0) return false;
    pollfd p{fd_, POLLIN, 0};
    if (::poll(&p, 1, static_cast<int>(left.count())) <= 0) return false;
    char buf[4096];
    const ssize_t n = ::read(fd_, buf, sizeof buf);
    if (n <= 0) {
      eof_ = true;
      return false;
    }
    text_.append(buf, static_cast<std::size_t>(n));
    return true;
  }

  pid_t pid_ = -1;
  int fd_ = -1;
  int status_ = -1;
  bool eof_ = false;
  std::string text_;
};

std::string describe_status(int status) {
  if (status < 0) return "still running at the deadline";
  if (WIFSIGNALED(status)) return std::string("killed by ") + ::strsignal(WTERMSIG(status));
  return "exit status " + std::to_string(WEXITSTATUS(status));
}

bool contains(std::string_view hay, std::string_view needle) {
  return hay.find(needle) != std::string_view::npos;
}

// Each of `needles` in `hay`; `hay` is shown with any that is missing.
void expect_contains(const std::string& hay, std::initializer_list<std::string> needles) {
  for (const std::string& needle : needles) {
    EXPECT_TRUE(contains(hay, needle)) << "missing " << needle << " in:\n" << hay;
  }
}

// The object after "\"key\": " (a nested {...} without further nesting).
std::string member_object(const std::string& json, const std::string& key) {
  const std::string open = "\"" + key + "\": {";
  const auto at = json.find(open);
  if (at == std::string::npos) return {};
  const auto end = json.find('}', at);
  return end == std::string::npos ? std::string() : json.substr(at, end - at + 1);
}

Segment make_ring(const std::string& name, RingKind kind, std::uint64_t capacity = 8,
                  std::uint64_t slot_size = 64, std::uint32_t lanes = 0) {
  CreateOptions o;
  o.kind = kind;
  o.capacity = capacity;
  o.slot_size = slot_size;
  o.lanes = lanes;
  return Segment::create(name, o);
}

std::string message(int i) { return "message-" + std::to_string(i); }

// Pushes message(0) .. message(count - 1).
template <class Producer>
void push_messages(Producer& tx, int count) {
  for (int i = 0; i < count; ++i) ASSERT_EQ(tx.try_push(as_bytes(message(i))), Status::ok) << i;
}

// Pops `count` messages (of at most 64 bytes), which must be there.
template <class Consumer>
void pop_messages(Consumer& rx, int count) {
  std::array<std::byte, 64> buf{};
  std::size_t size = 0;
  for (int i = 0; i < count; ++i) ASSERT_EQ(rx.try_pop(buf, size), Status::ok) << i;
}

constexpr std::uint64_t kMagicOffset = 0;
constexpr std::uint64_t kAbiOffset = 8;

TEST(RingInspect, ShowReportsPositionsFillAndLiveOwners) {
  UniqueShm shm;
  auto seg = make_ring(shm.name(), RingKind::spsc);
  auto producer = SpscProducer::attach(seg);
  auto consumer = SpscConsumer::attach(seg);
  ASSERT_NO_FATAL_FAILURE(push_messages(producer, 5));
  ASSERT_NO_FATAL_FAILURE(pop_messages(consumer, 2));

  const Result r = inspect("show " + shm.name() + " --json");
  ASSERT_EQ(r.rc, 0) << r.out;
  expect_contains(r.out, {"\"name\": \"" + shm.name() + "\"", "\"kind\": \"spsc\"",
                          "\"capacity\": 8,", "\"slot_size\": 64,", "\"head\": 5,"});
  // What a GPU of this host may do: one of the three answers, never empty.
  EXPECT_TRUE(contains(r.out, "\"gpu\": \"no CUDA device visible") ||
              contains(r.out, "\"gpu\": \"this ring-inspect was built without CUDA") ||
              contains(r.out, "device 0 "))
      << r.out;
  expect_contains(r.out, {"\"tail\": 2,", "\"lag\": 3,", "\"fill\": 3,", "\"fill_percent\": 37.5,",
                          "\"creator_pid\": " + std::to_string(::getpid()) + ","});
  const std::string pid = "\"owner_pid\": " + std::to_string(::getpid()) + ",";
  const std::string prod = member_object(r.out, "producer");
  const std::string cons = member_object(r.out, "consumer");
  EXPECT_TRUE(contains(prod, pid)) << prod;
  EXPECT_TRUE(contains(prod, "\"owner_state\": \"alive\"")) << prod;
  EXPECT_TRUE(contains(cons, pid)) << cons;
  EXPECT_TRUE(contains(cons, "\"owner_state\": \"alive\"")) << cons;

  const Result text = inspect("show " + shm.name());
  ASSERT_EQ(text.rc, 0) << text.out;
  EXPECT_TRUE(contains(text.out, "fill          3 / 8 (37.5%)")) << text.out;
  EXPECT_TRUE(contains(text.out, "alive")) << text.out;
}

TEST(RingInspect, ShowMpmcReportsCountersAndAttached) {
  UniqueShm shm;
  auto seg = make_ring(shm.name(), RingKind::mpmc);
  auto p1 = MpmcProducer::attach(seg);
  auto p2 = MpmcProducer::attach(seg);
  auto consumer = MpmcConsumer::attach(seg);
  ASSERT_NO_FATAL_FAILURE(push_messages(p1, 4));
  ASSERT_NO_FATAL_FAILURE(pop_messages(consumer, 1));

  const Result r = inspect("show " + shm.name() + " --json");
  ASSERT_EQ(r.rc, 0) << r.out;
  expect_contains(r.out,
                  {"\"kind\": \"mpmc\"", "\"enqueue\": 4,", "\"dequeue\": 1,", "\"fill\": 3,"});
  EXPECT_TRUE(contains(member_object(r.out, "producer"), "\"attached\": 2,")) << r.out;
  EXPECT_TRUE(contains(member_object(r.out, "consumer"), "\"attached\": 1,")) << r.out;

  // Attached handles make remove refuse.
  const Result rm = inspect("remove " + shm.name());
  EXPECT_EQ(rm.rc, 1) << rm.out;
  EXPECT_TRUE(contains(rm.out, "attached")) << rm.out;
  EXPECT_TRUE(shm_exists(shm.name()));
}

// A ring of several lanes: the sides' counters and claimants over every
// lane, and each lane's counters.
TEST(RingInspect, ShowMpmcLanesSumsTheLanes) {
  UniqueShm shm;
  auto seg = make_ring(shm.name(), RingKind::mpmc, 16, 64, 2);
  auto p1 = MpmcProducer::attach(seg);
  auto p2 = MpmcProducer::attach(seg);
  auto consumer = MpmcConsumer::attach(seg);
  ASSERT_NO_FATAL_FAILURE(push_messages(p1, 3));
  ASSERT_NO_FATAL_FAILURE(push_messages(p2, 2));
  ASSERT_NO_FATAL_FAILURE(pop_messages(consumer, 1));

  const Result r = inspect("show " + shm.name() + " --json");
  ASSERT_EQ(r.rc, 0) << r.out;
  expect_contains(r.out, {"\"lanes\": 2,", "\"enqueue\": 5,", "\"dequeue\": 1,", "\"fill\": 4,"});
  const Result text = inspect("show " + shm.name());
  ASSERT_EQ(text.rc, 0) << text.out;
  const std::string lane_line = p1.lane() == 0 ? "3/1 2/0" : "2/1 3/0";
  EXPECT_TRUE(
      contains(text.out,
               "lanes         2 of 8 slots, one producer each (enqueued / dequeued): " + lane_line))
      << text.out;
}

TEST(RingInspect, ShowBroadcastNamesDeliverySubscribersAndCursors) {
  UniqueShm shm;
  CreateOptions o;
  o.kind = RingKind::broadcast;
  o.subscribers = 3;
  o.delivery = Delivery::reliable;
  o.capacity = 8;
  o.slot_size = 64;
  Segment seg = Segment::create(shm.name(), o);
  auto fast = BroadcastSubscriber::attach(seg);
  auto slow = BroadcastSubscriber::attach(seg);
  auto producer = BroadcastProducer::attach(seg);
  ASSERT_NO_FATAL_FAILURE(push_messages(producer, 5));
  ASSERT_NO_FATAL_FAILURE(pop_messages(fast, 4));
  ASSERT_NO_FATAL_FAILURE(pop_messages(slow, 1));

  const Result r = inspect("show " + shm.name() + " --json");
  ASSERT_EQ(r.rc, 0) << r.out;
  expect_contains(r.out, {"\"kind\": \"broadcast\"", "\"delivery\": \"reliable\"",
                          "\"subscriber_blocks\": 3,"});
  const std::string pid = "\"pid\": " + std::to_string(::getpid()) + ",";
  // Each block by its index, with its own cursor and lag behind head 5.
  expect_contains(r.out, {"\"index\": " + std::to_string(fast.block()) +
                              ", \"state\": \"active\", \"cursor\": 4, \"lag\": 1",
                          "\"index\": " + std::to_string(slow.block()) +
                              ", \"state\": \"active\", \"cursor\": 1, \"lag\": 4",
                          pid});

  const Result text = inspect("show " + shm.name());
  ASSERT_EQ(text.rc, 0) << text.out;
  expect_contains(text.out,
                  {"delivery      reliable (the producer waits for the slowest",
                   "subscribers   3 blocks, 1 never used",
                   "[" + std::to_string(fast.block()) +
                       "] active         cursor 4 lag 1 holder pid " + std::to_string(::getpid()),
                   "[" + std::to_string(slow.block()) + "] active         cursor 1 lag 4"});
  // A detached subscriber's block shows as retired.
  slow.detach();
  const Result after = inspect("show " + shm.name());
  EXPECT_TRUE(contains(after.out, "] retired")) << after.out;
}

TEST(RingInspect, DumpShowsUnreadMessagesAndClampsLengths) {
  UniqueShm shm;
  auto seg = make_ring(shm.name(), RingKind::spsc);
  auto producer = SpscProducer::attach(seg);
  auto consumer = SpscConsumer::attach(seg);
  ASSERT_NO_FATAL_FAILURE(push_messages(producer, 3));
  ASSERT_NO_FATAL_FAILURE(pop_messages(consumer, 1));

  // Default: the unread ones (positions 1 and 2).
  const Result text = inspect("dump " + shm.name());
  ASSERT_EQ(text.rc, 0) << text.out;
  EXPECT_TRUE(contains(text.out, "position 1 (slot 1): committed, length 9")) << text.out;
  EXPECT_TRUE(contains(text.out, "|message-1|")) << text.out;
  EXPECT_TRUE(contains(text.out, "|message-2|")) << text.out;
  EXPECT_FALSE(contains(text.out, "|message-0|")) << text.out;

  const Result json = inspect("dump " + shm.name() + " --from 0 --count 1 --json");
  ASSERT_EQ(json.rc, 0) << json.out;
  EXPECT_TRUE(contains(json.out, "\"count\": 1,")) << json.out;
  // "message-0" in hex.
  EXPECT_TRUE(contains(json.out, "\"data_hex\": \"6d6573736167652d30\"")) << json.out;

  // A trailer claiming more than the slot holds is clamped, never over-read.
  trailer_of(seg.base(), seg.geometry(), 2)->length = 0xffffffffu;
  const Result clamped = inspect("dump " + shm.name() + " --from 2 --count 1 --json");
  ASSERT_EQ(clamped.rc, 0) << clamped.out;
  EXPECT_TRUE(contains(clamped.out, "\"length\": 64,")) << clamped.out;
  EXPECT_TRUE(contains(clamped.out, "\"length_clamped\": true")) << clamped.out;
}

Segment make_low_latency_ring(const std::string& name, std::uint64_t capacity = 4,
                              std::uint64_t slot_size = 20) {
  CreateOptions o;
  o.kind = RingKind::spsc;
  o.capacity = capacity;
  o.slot_size = slot_size;
  o.format = SlotFormat::low_latency;
  return Segment::create(name, o);
}

// Word k of the low-latency slot that holds `position`.
std::uint64_t* low_latency_word(const Segment& seg, std::uint64_t position, std::uint64_t k) {
  const Geometry& g = seg.geometry();
  return reinterpret_cast<std::uint64_t*>(seg.base() + g.slots_offset +
                                          (position & g.mask()) * g.slot_stride) +
         k;
}

TEST(RingInspect, ShowReportsSlotFormatAndProducerIncarnation) {
  UniqueShm shm;
  auto seg = make_low_latency_ring(shm.name());
  { auto first = SpscProducer::attach(seg); }
  auto producer = SpscProducer::attach(seg);  // the second incarnation
  auto consumer = SpscConsumer::attach(seg);
  ASSERT_EQ(producer.try_push(as_bytes(message(0))), Status::ok);

  const Result r = inspect("show " + shm.name() + " --json");
  ASSERT_EQ(r.rc, 0) << r.out;
  expect_contains(r.out, {"\"slot_format\": \"low_latency\",", "\"header_flags\": 1,",
                          "\"abi_version\": " + std::to_string(kAbiVersion) + ",", "\"head\": 1,"});
  EXPECT_TRUE(contains(member_object(r.out, "producer"), "\"incarnation\": 2,")) << r.out;
  // The consumer side has no incarnation.
  EXPECT_FALSE(contains(member_object(r.out, "consumer"), "incarnation")) << r.out;

  const Result text = inspect("show " + shm.name());
  ASSERT_EQ(text.rc, 0) << text.out;
  expect_contains(text.out, {"slot format   low_latency", ", incarnation 2\n"});

  const Result list = inspect("list --json");
  ASSERT_EQ(list.rc, 0) << list.out;
  const auto at = list.out.find("{\"name\": \"" + shm.name() + "\"");
  ASSERT_NE(at, std::string::npos) << list.out;
  const std::string entry = list.out.substr(at, list.out.find('}', at) - at + 1);
  EXPECT_TRUE(contains(entry, "\"slot_size\": 20, \"capacity\": 4, \"fill\": 1,")) << entry;
  EXPECT_TRUE(contains(entry, "\"slot_format\": \"low_latency\"}")) << entry;

  // A plain ring says so.
  UniqueShm plain_shm("plain");
  auto plain = make_ring(plain_shm.name(), RingKind::mpmc);
  const Result p = inspect("show " + plain_shm.name() + " --json");
  ASSERT_EQ(p.rc, 0) << p.out;
  expect_contains(p.out, {"\"slot_format\": \"plain\",", "\"header_flags\": 0,"});
  EXPECT_FALSE(contains(p.out, "incarnation")) << p.out;
  EXPECT_TRUE(contains(inspect("show " + plain_shm.name()).out, "slot format   plain\n"));
}

TEST(RingInspect, DumpDecodesLowLatencyWords) {
  UniqueShm shm;
  auto seg = make_low_latency_ring(shm.name());  // 4 slots of 20 bytes
  auto producer = SpscProducer::attach(seg);
  auto consumer = SpscConsumer::attach(seg);
  std::array<std::byte, 64> buf{};
  std::size_t size = 0;
  // Positions 0..5: the first lap, then 4 and 5 over slots 0 and 1.
  for (int i = 0; i < 6; ++i) {
    ASSERT_EQ(producer.try_push(as_bytes(message(i))), Status::ok);
    ASSERT_EQ(consumer.try_pop(buf, size), Status::ok);
  }
  ASSERT_EQ(producer.try_push(as_bytes("hello world, 20 byte")), Status::ok);  // position 6
  ASSERT_EQ(producer.try_push(as_bytes("")), Status::ok);                      // position 7

  // Default: the unread ones, their words decoded.
  const Result text = inspect("dump " + shm.name());
  ASSERT_EQ(text.rc, 0) << text.out;
  EXPECT_TRUE(contains(text.out,
                       "position 6 (slot 2): complete, length 20, flag 0x01000002 (incarnation 1, "
                       "lap flag 2, this position's 2)"))
      << text.out;
  EXPECT_TRUE(contains(text.out, "|hello world, 20 |")) << text.out;
  EXPECT_TRUE(contains(text.out, "|byte|")) << text.out;
  EXPECT_TRUE(contains(text.out, "position 7 (slot 3): complete, length 0,")) << text.out;
  EXPECT_FALSE(contains(text.out, "committed")) << text.out;  // the trailer is unused

  const Result json = inspect("dump " + shm.name() + " --from 4 --count 4 --json");
  ASSERT_EQ(json.rc, 0) << json.out;
  EXPECT_TRUE(contains(json.out, "\"slot_format\": \"low_latency\", \"from\": 4,")) << json.out;
  // Position 4 (slot 0, second lap): "message-4".
  EXPECT_TRUE(
      contains(json.out,
               "{\"position\": 4, \"index\": 0, \"state\": \"complete\", \"complete\": true, "
               "\"flag\": 16777218, \"incarnation\": 1, \"lap_flag\": 2, "
               "\"expected_lap_flag\": 2, \"length\": 9, \"length_raw\": 9, "
               "\"length_clamped\": false, \"words\": 4, \"mismatched_words\": 0, "
               "\"data_hex\": \"6d6573736167652d34\", \"truncated\": false}"))
      << json.out;
  EXPECT_FALSE(contains(json.out, "trailer_committed")) << json.out;

  // Slots of another lap: position 8 (slot 0) still holds position 4.
  const Result other = inspect("dump " + shm.name() + " --from 8 --count 1 --json");
  EXPECT_TRUE(contains(other.out, "\"state\": \"other lap\", \"complete\": false")) << other.out;
  EXPECT_TRUE(contains(other.out, "\"lap_flag\": 2, \"expected_lap_flag\": 3,")) << other.out;

  // --max-bytes bounds the bytes shown, not the length.
  const Result cut = inspect("dump " + shm.name() + " --from 6 --count 1 --max-bytes 5 --json");
  EXPECT_TRUE(contains(cut.out, "\"length\": 20,")) << cut.out;
  EXPECT_TRUE(contains(cut.out, "\"data_hex\": \"68656c6c6f\", \"truncated\": true")) << cut.out;

  // A word of the message with another flag: incomplete (a torn message).
  std::uint64_t* w = low_latency_word(seg, 6, 3);
  *w = (*w & 0xffffffffu) | (std::uint64_t{0x01000001} << 32);
  const Result torn = inspect("dump " + shm.name() + " --from 6 --count 1");
  EXPECT_TRUE(contains(torn.out, "position 6 (slot 2): incomplete, length 20")) << torn.out;
  EXPECT_TRUE(contains(torn.out, "1 of 5 words carry another flag")) << torn.out;

  // A length word naming more than the slot holds is clamped, never over-read.
  std::uint64_t* w0 = low_latency_word(seg, 7, 0);
  *w0 = (*w0 & ~std::uint64_t{0xffffffffu}) | 0xffffffffu;
  const Result clamped = inspect("dump " + shm.name() + " --from 7 --count 1 --json");
  ASSERT_EQ(clamped.rc, 0) << clamped.out;
  EXPECT_TRUE(contains(clamped.out, "\"state\": \"corrupt length\"")) << clamped.out;
  EXPECT_TRUE(contains(clamped.out,
                       "\"length\": 20, \"length_raw\": 4294967295, "
                       "\"length_clamped\": true, \"words\": 6,"))
      << clamped.out;
  const Result clamped_text = inspect("dump " + shm.name() + " --from 7 --count 1");
  EXPECT_TRUE(contains(clamped_text.out, "(word 0 says 4294967295, clamped to the slot size)"))
      << clamped_text.out;

  // Every word scribbled: still decoded within the slot.
  const Geometry& g = seg.geometry();
  for (std::uint64_t k = 0; k < low_latency_words(g.slot_size); ++k) {
    *low_latency_word(seg, 5, k) = ~std::uint64_t{0};
  }
  const Result garbage = inspect("dump " + shm.name() + " --from 5 --count 1 --json");
  ASSERT_EQ(garbage.rc, 0) << garbage.out;
  EXPECT_TRUE(contains(garbage.out, "\"incarnation\": 255, \"lap_flag\": 16777215,"))
      << garbage.out;
  EXPECT_TRUE(contains(garbage.out, "\"length\": 20,")) << garbage.out;
  EXPECT_TRUE(contains(garbage.out, "\"data_hex\": \"" + std::string(40, 'f') + "\""))
      << garbage.out;
}

TEST(RingInspect, CorruptedMagicAndAbiAreReportedWithExit1) {
  UniqueShm bad_magic("magic");
  UniqueShm bad_abi("abi");
  make_ring(bad_magic.name(), RingKind::spsc);
  make_ring(bad_abi.name(), RingKind::spsc);
  ASSERT_TRUE(write_value_at(bad_magic.name(), kMagicOffset, std::uint64_t{0x1122334455667788}));
  ASSERT_TRUE(write_value_at(bad_abi.name(), kAbiOffset, std::uint32_t{99}));

  const Result m = inspect("show " + bad_magic.name());
  EXPECT_EQ(m.rc, 1) << m.out;
  EXPECT_TRUE(contains(m.out, bad_magic.name() + ": ")) << m.out;
  EXPECT_TRUE(contains(m.out, "magic")) << m.out;

  const Result a = inspect("show " + bad_abi.name() + " --json");
  EXPECT_EQ(a.rc, 1) << a.out;
  EXPECT_TRUE(contains(a.out, bad_abi.name() + ": ")) << a.out;

  const Result d = inspect("dump " + bad_abi.name());
  EXPECT_EQ(d.rc, 1) << d.out;

  // list: the foreign magic is skipped quietly, shmring's magic with a bad ABI
  // is a row with an error.
  const Result l = inspect("list");
  ASSERT_EQ(l.rc, 0) << l.out;
  EXPECT_FALSE(contains(l.out, bad_magic.name())) << l.out;
  EXPECT_TRUE(contains(l.out, bad_abi.name())) << l.out;
  const Result lj = inspect("list --json");
  ASSERT_EQ(lj.rc, 0) << lj.out;
  const auto row =
      lj.out.find("\"name\": \"" + bad_abi.name() + "\", \"status\": \"error\", \"error\": ");
  EXPECT_NE(row, std::string::npos) << lj.out;

  // Damaged: remove refuses without --force (no way to tell who uses it).
  EXPECT_EQ(inspect("remove " + bad_abi.name()).rc, 1);
  EXPECT_TRUE(shm_exists(bad_abi.name()));
  EXPECT_EQ(inspect("remove " + bad_abi.name() + " --force").rc, 0);
  EXPECT_FALSE(shm_exists(bad_abi.name()));
}

TEST(RingInspect, TruncatedSegmentIsReportedWithExit1) {
  UniqueShm shm;
  std::uint64_t size = 0;
  {
    auto seg = make_ring(shm.name(), RingKind::spsc, 64, 256);
    size = seg.geometry().segment_size;
  }
  // The library refuses to open a truncated file, so one is made from a good
  // segment; its control blocks are whole, its slots gone.
  ASSERT_TRUE(truncate_file(shm.name(), kSlotsOffset));
  const std::string why = "file is " + std::to_string(kSlotsOffset) + " bytes, the header says " +
                          std::to_string(size) + ": truncated";
  for (const char* cmd : {"show ", "dump ", "watch "}) {
    const Result r = inspect(cmd + shm.name());
    EXPECT_EQ(r.rc, 1) << cmd << r.out;
    EXPECT_TRUE(contains(r.out, shm.name() + ": " + why)) << cmd << r.out;
  }
  const Result lj = inspect("list --json");
  ASSERT_EQ(lj.rc, 0) << lj.out;
  EXPECT_TRUE(contains(lj.out, "{\"name\": \"" + shm.name() +
                                   "\", \"status\": \"error\", \"error\": \"" + why + "\"}"))
      << lj.out;

  ASSERT_TRUE(truncate_file(shm.name(), 1000));
  const Result r = inspect("show " + shm.name());
  EXPECT_EQ(r.rc, 1) << r.out;
  EXPECT_TRUE(contains(r.out, shm.name() + ": file is 1000 bytes")) << r.out;
  EXPECT_EQ(inspect("dump " + shm.name()).rc, 1);

  // Shorter than its magic: not recognisable, skipped by list; show still fails cleanly.
  ASSERT_TRUE(truncate_file(shm.name(), 4));
  const Result s = inspect("show " + shm.name());
  EXPECT_EQ(s.rc, 1) << s.out;
  EXPECT_TRUE(contains(s.out, shm.name() + ": ")) << s.out;
}

// A peer with write access truncates the segment while watch reads it: watch
// must not die of SIGBUS (it used to read a mapping) but stop with a message
// and exit status 1. Truncated to 0, the control blocks are gone; truncated
// to the control blocks' size, the slots are (watch reads slot lengths for
// its MB/s); a rewritten header no longer describes the ring watch checked.
TEST(RingInspect, WatchStopsWhenTheSegmentShrinksOrItsHeaderChanges) {
  struct Case {
    std::uint64_t truncate_to;  // or, if ~0, the header's capacity is rewritten
    std::string expected;
  };
  UniqueShm probe("probe");
  const std::uint64_t size = make_ring(probe.name(), RingKind::spsc).geometry().segment_size;
  const std::string says = " bytes, the header says " + std::to_string(size) + "; watch stopped";
  const Case cases[] = {
      {0, "segment shrank to 0" + says},
      {kSlotsOffset, "segment shrank to " + std::to_string(kSlotsOffset) + says},
      {~std::uint64_t{0}, "the header changed since the segment was opened"},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.expected);
    UniqueShm shm;
    {
      // Messages pushed and some popped, so watch reads slot lengths; the
      // handles and mapping are gone before the file shrinks under them.
      auto seg = make_ring(shm.name(), RingKind::spsc);
      auto producer = SpscProducer::attach(seg);
      auto consumer = SpscConsumer::attach(seg);
      ASSERT_NO_FATAL_FAILURE(push_messages(producer, 3));
      ASSERT_NO_FATAL_FAILURE(pop_messages(consumer, 2));
    }
    Background watch({"watch", shm.name(), "--interval", "20"});
    ASSERT_TRUE(watch.started());
    // The header line and the first sample.
    ASSERT_TRUE(watch.read_until([](const std::string& t) {
      return std::count(t.begin(), t.end(), '\n') >= 2;
    })) << watch.text();
    if (c.truncate_to == ~std::uint64_t{0}) {
      ASSERT_TRUE(write_value_at(shm.name(), offsetof(SegmentHeader, capacity), std::uint64_t{16}));
    } else {
      ASSERT_TRUE(truncate_file(shm.name(), c.truncate_to));
    }
    const int status = watch.finish();
    ASSERT_TRUE(status >= 0 && WIFEXITED(status)) << describe_status(status) << "\n"
                                                  << watch.text();
    EXPECT_EQ(WEXITSTATUS(status), 1) << watch.text();
    EXPECT_TRUE(contains(watch.text(), shm.name() + ": " + c.expected)) << watch.text();
  }
}

// dump reads slot after slot while it prints: a segment truncated half-way
// through is reported (exit status 1), never a SIGBUS. dump's output goes to
// a one-page pipe that the test leaves unread until it is full, so dump is
// held in write() with most slots still to read when the file shrinks.
TEST(RingInspect, DumpReportsASegmentTruncatedWhileItReads) {
  UniqueShm shm;
  constexpr std::uint64_t kSlots = 64;
  constexpr std::uint64_t kSlotSize = 4096;
  std::uint64_t size = 0;
  {
    auto seg = make_ring(shm.name(), RingKind::spsc, kSlots, kSlotSize);
    size = seg.geometry().segment_size;
    auto producer = SpscProducer::attach(seg);
    const std::string payload(kSlotSize, 'x');
    for (std::uint64_t i = 0; i < kSlots; ++i) {
      ASSERT_EQ(producer.try_push(as_bytes(payload)), Status::ok);
    }
  }
  // Each slot prints as about 20 KB of hex: far more than the pipe and
  // dump's stdio buffer hold together.
  Background dump({"dump", shm.name(), "--from", "0", "--count", std::to_string(kSlots),
                   "--max-bytes", std::to_string(kSlotSize)},
                  4096);
  ASSERT_TRUE(dump.started());
  ASSERT_TRUE(dump.wait_buffered(dump.pipe_size())) << "dump never filled its pipe";
  ASSERT_TRUE(truncate_file(shm.name(), 0));
  const int status = dump.finish();
  ASSERT_TRUE(status >= 0 && WIFEXITED(status)) << describe_status(status);
  EXPECT_EQ(WEXITSTATUS(status), 1);
  const std::string& out = dump.text();
  EXPECT_TRUE(contains(out, "position 0 (slot 0): committed, length 4096")) << out.substr(0, 200);
  const std::string expected =
      shm.name() + ": segment shrank to 0 bytes, the header says " + std::to_string(size) + "\n";
  ASSERT_GE(out.size(), expected.size());
  EXPECT_EQ(out.substr(out.size() - expected.size()), expected);
  EXPECT_FALSE(contains(out, "position " + std::to_string(kSlots - 1) + " "))
      << "dump read every slot before the file shrank: the test did not hold it";
}

TEST(RingInspect, DeadOwnerIsReportedAndDoesNotBlockRemove) {
  UniqueShm shm;
  auto seg = make_ring(shm.name(), RingKind::spsc);
  const pid_t child = ::fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    int rc = 1;
    try {
      auto p = SpscProducer::attach(seg);
      // Leave while the handle still holds the role: like a crash.
      ::_exit(p.try_push(as_bytes(message(0))) == Status::ok ? 0 : 2);
    } catch (...) {
      rc = 3;
    }
    ::_exit(rc);
  }
  ASSERT_EQ(wait_child(child), 0);

  const Result r = inspect("show " + shm.name() + " --json");
  ASSERT_EQ(r.rc, 0) << r.out;
  const std::string prod = member_object(r.out, "producer");
  EXPECT_TRUE(contains(prod, "\"owner_pid\": " + std::to_string(child) + ",")) << prod;
  EXPECT_TRUE(contains(prod, "\"owner_state\": \"dead\"")) << prod;
  EXPECT_TRUE(contains(member_object(r.out, "consumer"), "\"owner_state\": \"none\"")) << r.out;
  EXPECT_TRUE(contains(r.out, "\"head\": 1,")) << r.out;

  const Result l = inspect("list");
  EXPECT_TRUE(contains(l.out, std::to_string(child) + " dead")) << l.out;

  const Result rm = inspect("remove " + shm.name());
  EXPECT_EQ(rm.rc, 0) << rm.out;
  EXPECT_FALSE(shm_exists(shm.name()));
}

TEST(RingInspect, RemoveRefusedWhileOwnerLivesUnlessForced) {
  UniqueShm shm;
  auto seg = make_ring(shm.name(), RingKind::spsc);
  auto consumer = SpscConsumer::attach(seg);

  const Result refused = inspect("remove " + shm.name());
  EXPECT_EQ(refused.rc, 1) << refused.out;
  EXPECT_TRUE(contains(refused.out, "consumer pid " + std::to_string(::getpid()) + " alive"))
      << refused.out;
  EXPECT_TRUE(shm_exists(shm.name()));

  const Result forced = inspect("remove " + shm.name() + " --force");
  EXPECT_EQ(forced.rc, 0) << forced.out;
  EXPECT_FALSE(shm_exists(shm.name()));

  // Nothing left to remove.
  EXPECT_EQ(inspect("remove " + shm.name()).rc, 1);
}

TEST(RingInspect, ListFindsRingsByMagicAndSkipsPlainFiles) {
  UniqueShm spsc("spsc");
  UniqueShm mpmc("mpmc");
  UniqueShm plain("plain");
  UniqueShm tiny("tiny");
  auto a = make_ring(spsc.name(), RingKind::spsc, 16, 128);
  auto b = make_ring(mpmc.name(), RingKind::mpmc, 4, 32);
  auto producer = SpscProducer::attach(a);
  ASSERT_NO_FATAL_FAILURE(push_messages(producer, 3));
  ASSERT_TRUE(make_plain_file(plain.name(), as_bytes("just some bytes, not a ring at all")));
  ASSERT_TRUE(make_plain_file(tiny.name(), as_bytes("x")));

  const Result l = inspect("list");
  ASSERT_EQ(l.rc, 0) << l.out;
  EXPECT_TRUE(contains(l.out, spsc.name())) << l.out;
  EXPECT_TRUE(contains(l.out, mpmc.name())) << l.out;
  EXPECT_FALSE(contains(l.out, plain.name())) << l.out;
  EXPECT_FALSE(contains(l.out, tiny.name())) << l.out;
  EXPECT_TRUE(contains(l.out, std::to_string(::getpid()) + " alive")) << l.out;

  const Result j = inspect("list --json");
  ASSERT_EQ(j.rc, 0) << j.out;
  EXPECT_TRUE(contains(j.out, "{\"name\": \"" + spsc.name() +
                                  "\", \"status\": \"ok\", \"kind\": \"spsc\", \"slot_size\": 128, "
                                  "\"capacity\": 16, \"fill\": 3,"))
      << j.out;
  EXPECT_TRUE(contains(j.out, "{\"name\": \"" + mpmc.name() +
                                  "\", \"status\": \"ok\", \"kind\": \"mpmc\", \"slot_size\": 32, "
                                  "\"capacity\": 4, \"fill\": 0,"))
      << j.out;
  EXPECT_FALSE(contains(j.out, plain.name())) << j.out;

  // The plain file is untouched and cannot be shown.
  const Result s = inspect("show " + plain.name());
  EXPECT_EQ(s.rc, 1) << s.out;
  EXPECT_EQ(file_size(plain.name()), 34);
}

TEST(RingInspect, WatchPrintsSamples) {
  UniqueShm shm;
  auto seg = make_ring(shm.name(), RingKind::spsc);
  auto producer = SpscProducer::attach(seg);
  ASSERT_NO_FATAL_FAILURE(push_messages(producer, 2));
  const Result r = inspect("watch " + shm.name() + " --interval 10 --iterations 3");
  ASSERT_EQ(r.rc, 0) << r.out;
  EXPECT_TRUE(contains(r.out, "SECONDS")) << r.out;
  EXPECT_TRUE(contains(r.out, std::to_string(::getpid()) + " alive")) << r.out;
  std::size_t lines = 0;
  for (const char c : r.out) lines += c == '\n' ? 1 : 0;
  EXPECT_EQ(lines, 4u) << r.out;
  EXPECT_EQ(inspect("watch " + shm.name() + " --interval 0").rc, 2);
  const Result j = inspect("watch " + shm.name() + " --interval 10 --iterations 2 --json");
  ASSERT_EQ(j.rc, 0) << j.out;
  EXPECT_EQ(std::count(j.out.begin(), j.out.end(), '\n'), 2) << j.out;
  EXPECT_TRUE(contains(j.out, "\"head\": 2,")) << j.out;
  EXPECT_TRUE(contains(j.out, "\"fill\": 2,")) << j.out;
}

// Ctrl-C ends an endless watch cleanly (exit 0). The interrupt is sent once
// the watch has printed its first sample, read from its output pipe.
TEST(RingInspect, WatchEndsCleanlyOnInterrupt) {
  UniqueShm shm;
  auto seg = make_ring(shm.name(), RingKind::spsc);
  Background watch({"watch", shm.name(), "--interval", "20"});
  ASSERT_TRUE(watch.started());
  // The header and the first sample: SIGINT is blocked by then.
  ASSERT_TRUE(watch.read_until([](const std::string& t) {
    return std::count(t.begin(), t.end(), '\n') >= 2;
  })) << "watch ended before its first sample: "
      << watch.text();
  ASSERT_TRUE(watch.interrupt());
  const int status = watch.finish();
  ASSERT_GE(status, 0) << "watch still running 20 s after SIGINT:\n" << watch.text();
  ASSERT_TRUE(WIFEXITED(status)) << "ended by " << describe_status(status) << " instead of cleanly";
  EXPECT_EQ(WEXITSTATUS(status), 0) << watch.text();
  EXPECT_TRUE(contains(watch.text(), "OUT MB/S")) << watch.text();
}

TEST(RingInspect, GcRemovesOnlyAbandonedSegments) {
  UniqueShm abandoned("abandoned");  // creator and owner dead
  UniqueShm held("held");            // creator dead, a live consumer here
  UniqueShm mine("mine");            // creator (this process) alive
  UniqueShm broken("broken");        // damaged: left for remove --force
  for (const auto* n : {&abandoned, &held}) {
    const std::string name = n->name();
    ASSERT_EQ(run_in_child([&] {
                auto seg = make_ring(name, RingKind::spsc);
                auto p = SpscProducer::attach(seg);
                ::_exit(p.try_push(as_bytes(message(0))) == Status::ok ? 0 : 2);
                return 3;
              }),
              0);
  }
  auto held_seg = Segment::open(held.name());
  auto consumer = SpscConsumer::attach(held_seg);
  auto mine_seg = make_ring(mine.name(), RingKind::mpmc);
  make_ring(broken.name(), RingKind::spsc);
  ASSERT_TRUE(write_value_at(broken.name(), kAbiOffset, std::uint32_t{99}));

  const std::string prefix = name_prefix();
  const Result dry = inspect("gc --dry-run --prefix " + prefix);
  ASSERT_EQ(dry.rc, 0) << dry.out;
  EXPECT_TRUE(contains(dry.out, "would remove " + abandoned.name() + "\n")) << dry.out;
  EXPECT_TRUE(shm_exists(abandoned.name()));

  const Result gc = inspect("gc --prefix " + prefix);
  ASSERT_EQ(gc.rc, 0) << gc.out;
  EXPECT_TRUE(contains(gc.out, "removed " + abandoned.name() + "\n")) << gc.out;
  EXPECT_TRUE(contains(gc.out, "kept " + held.name() + ": consumer pid")) << gc.out;
  EXPECT_TRUE(contains(gc.out, "kept " + mine.name() + ": creator pid")) << gc.out;
  EXPECT_TRUE(contains(gc.out, "kept " + broken.name() + ": ")) << gc.out;
  EXPECT_FALSE(shm_exists(abandoned.name()));
  EXPECT_TRUE(shm_exists(held.name()));
  EXPECT_TRUE(shm_exists(mine.name()));
  EXPECT_TRUE(shm_exists(broken.name()));
}

// A creator killed before it named its segment leaves only its private file:
// list says whose it is, gc removes it once that creator is gone and keeps
// the file of a creator still at work.
TEST(RingInspect, GcCollectsWhatAKilledCreatorLeft) {
  UniqueShm never("never");  // the name the killed creator never gave
  std::set<std::string> before;
  if (DIR* d = ::opendir(kShmDir)) {
    while (const dirent* e = ::readdir(d)) before.emplace(e->d_name);
    ::closedir(d);
  }
  const pid_t child = ::fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    fault::set_hook([](fault::Call call, void*) noexcept {
      if (call == fault::Call::link) ::raise(SIGKILL);
      return 0;
    });
    (void)make_ring(never.name(), RingKind::spsc);
    ::_exit(0);
  }
  int status = 0;
  ASSERT_EQ(::waitpid(child, &status, 0), child);
  ASSERT_TRUE(WIFSIGNALED(status));
  EXPECT_FALSE(shm_exists(never.name()));
  // The private names are random: the killed creator's is the one that is
  // new and unlocked (its lock died with it).
  std::string dead_file;
  if (DIR* d = ::opendir(kShmDir)) {
    while (const dirent* e = ::readdir(d)) {
      const std::string n = e->d_name;
      if (n.rfind(kInitFilePrefix, 0) == 0 && before.count(n) == 0) dead_file = n;
    }
    ::closedir(d);
  }
  ASSERT_FALSE(dead_file.empty()) << "the killed creator left no private file";
  struct Unlink {
    std::string path;
    ~Unlink() { ::unlink(path.c_str()); }
  } dead_guard{shm_path(dead_file)};
  // A private file whose creator is at work: it holds the creator's lock.
  ShmGuard live(std::string(kInitFilePrefix) + "0123456789abcdef0123456789abcdef");
  ASSERT_TRUE(make_plain_file(live.name(), {}));
  CreatorLock creator(shm_path(live.name()));
  ASSERT_TRUE(creator.held());

  const Result list = inspect("list");
  ASSERT_EQ(list.rc, 0) << list.out;
  EXPECT_TRUE(contains(list.out, dead_file + ": left by a creator that died creating a segment"))
      << list.out;
  EXPECT_TRUE(contains(list.out, live.name() + ": segment being created")) << list.out;
  const Result json = inspect("list --json");
  EXPECT_TRUE(contains(json.out, "\"name\": \"" + dead_file + "\", \"status\": \"abandoned\""))
      << json.out;
  EXPECT_TRUE(contains(json.out, "\"name\": \"" + live.name() + "\", \"status\": \"initialising\""))
      << json.out;

  const Result keep = inspect("gc --prefix " + live.name());
  ASSERT_EQ(keep.rc, 0) << keep.out;
  EXPECT_TRUE(contains(keep.out, "kept " + live.name() + ": segment being created")) << keep.out;
  EXPECT_TRUE(shm_exists(live.name()));
  const Result gc = inspect("gc --prefix " + dead_file);
  ASSERT_EQ(gc.rc, 0) << gc.out;
  EXPECT_TRUE(contains(gc.out, "removed " + dead_file + "\n")) << gc.out;
  EXPECT_FALSE(shm_exists(dead_file));
  // Its creator gone, the other file goes too.
  creator.release();
  const Result gc2 = inspect("gc --prefix " + live.name());
  EXPECT_TRUE(contains(gc2.out, "removed " + live.name() + "\n")) << gc2.out;
  EXPECT_FALSE(shm_exists(live.name()));
}

// A live ring cannot carry a name of the library's own, so gc never takes
// one for a creator's leftover.
TEST(RingInspect, GcNeverMeetsALiveRingUnderAReservedName) {
  std::error_code ec;
  (void)Segment::create(std::string(kInitFilePrefix) + "live", CreateOptions{}, ec);
  EXPECT_EQ(ec, make_error_code(errc::invalid_name)) << last_error_message();
  EXPECT_NE(last_error_message().find("reserved"), std::string::npos) << last_error_message();
}

// MPMC: show says which process died holding claims, from where, and how
// many positions were recovered from dead processes.
TEST(RingInspect, ShowNamesWhoDiedHoldingMpmcClaims) {
  UniqueShm shm;
  auto seg = make_ring(shm.name(), RingKind::mpmc);
  auto live = MpmcProducer::attach(seg);
  auto consumer = MpmcConsumer::attach(seg);
  const pid_t child = ::fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    auto dying = MpmcProducer::attach(seg);
    (void)dying.try_push(as_bytes(message(0)));
    const WriteClaim held = dying.try_claim(2);  // positions 1 and 2, never committed
    ::raise(SIGKILL);
    ::_exit(1);
  }
  int status = 0;
  ASSERT_EQ(::waitpid(child, &status, 0), child);
  const std::string pid = std::to_string(child);
  Result show = inspect("show " + shm.name());
  ASSERT_EQ(show.rc, 0) << show.out;
  EXPECT_TRUE(contains(show.out, pid + " died holding claims from position 1")) << show.out;
  EXPECT_TRUE(contains(show.out, "claims: live pid(s) " + std::to_string(::getpid()))) << show.out;
  EXPECT_TRUE(contains(show.out, "0 position(s) recovered")) << show.out;

  std::byte buf[64];
  std::size_t size = 0;
  ASSERT_EQ(consumer.try_pop(buf, size), Status::ok);
  EXPECT_EQ(consumer.try_pop(buf, size), Status::would_block);
  EXPECT_EQ(live.recover(), 2u);
  show = inspect("show " + shm.name() + " --json");
  EXPECT_TRUE(contains(member_object(show.out, "producer"), "\"abandoned\": 2")) << show.out;
}

TEST(RingInspect, UsageErrorsExit2) {
  EXPECT_EQ(inspect("").rc, 2);
  EXPECT_EQ(inspect("frobnicate").rc, 2);
  EXPECT_EQ(inspect("show").rc, 2);
  EXPECT_EQ(inspect("dump x --count notanumber").rc, 2);
  const Result help = inspect("--help");
  EXPECT_EQ(help.rc, 0);
  EXPECT_TRUE(contains(help.out, "Exit status: 0 ok, 1")) << help.out;
}

}  // namespace
}  // namespace shmring::test
