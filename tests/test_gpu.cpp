// CPU <-> GPU through one registered ring, every direction, every message
// verified. Skips (never passes, never fails) where no CUDA device is visible.
//
// Cross-process tests fork a CPU peer that never touches CUDA; a second GPU
// process is started with fork+exec of this binary (--gpu-peer ...), so that
// it initialises CUDA itself instead of inheriting the parent's context.
#include <cuda_runtime_api.h>
#include <gtest/gtest.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <array>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <initializer_list>
#include <string>
#include <thread>
#include <vector>

#include "broadcast_support.hpp"
#include "gpu_kernels.hpp"
#include "shmring/cuda/capabilities.hpp"
#include "shmring/cuda/gpu_ring.hpp"
#include "shmring/cuda/registration.hpp"
#include "shmring/fault_injection.hpp"
#include "shmring/shmring.hpp"
#include "test_support.hpp"

extern char** environ;

namespace shmring {
namespace {

using namespace std::chrono_literals;
using cuda::GpuBroadcastProducer;
using cuda::GpuBroadcastSubscriber;
using cuda::GpuMpmcConsumers;
using cuda::GpuMpmcProducers;
using cuda::GpuSpscConsumer;
using cuda::GpuSpscProducer;
using cuda::Registration;
using test::gpu::KernelResult;
using test::gpu::MessageHeader;
using test::gpu::Mode;

constexpr std::uint64_t kKernelTimeout = 20'000'000'000ull;  // 20 s: a hang fails, never stalls CI
constexpr auto kCpuTimeout = 20s;
std::string g_self;  // this binary, for --gpu-peer

void fill(std::span<std::byte> dst, std::uint64_t seq, std::uint32_t producer, std::uint32_t size) {
  MessageHeader h{seq, producer, size};
  std::memcpy(dst.data(), &h, std::min<std::size_t>(size, sizeof h));
  for (std::uint32_t i = sizeof h; i < size; ++i) {
    dst[i] = static_cast<std::byte>(test::gpu::pattern_byte(seq, producer, i));
  }
}

bool matches(std::span<const std::byte> m, std::uint64_t seq, std::uint32_t producer,
             std::uint32_t size) {
  if (m.size() != size) return false;
  MessageHeader h{};
  std::memcpy(&h, m.data(), std::min<std::size_t>(size, sizeof h));
  if (size >= sizeof h && (h.seq != seq || h.producer != producer || h.size != size)) return false;
  for (std::uint32_t i = sizeof h; i < size; ++i) {
    if (static_cast<std::uint8_t>(m[i]) != test::gpu::pattern_byte(seq, producer, i)) return false;
  }
  return true;
}

class Gpu : public ::testing::Test {
 protected:
  void SetUp() override {
    if (cuda::device_count() == 0) GTEST_SKIP() << "no CUDA device visible: GPU tests skipped";
  }
};

CreateOptions ring(RingKind kind, std::uint64_t capacity, std::uint64_t slot) {
  CreateOptions o;
  o.kind = kind;
  o.capacity = capacity;
  o.slot_size = slot;
  return o;
}
CreateOptions spsc(std::uint64_t capacity, std::uint64_t slot) {
  return ring(RingKind::spsc, capacity, slot);
}
CreateOptions spsc_low_latency(std::uint64_t capacity, std::uint64_t slot) {
  CreateOptions o = ring(RingKind::spsc, capacity, slot);
  o.format = SlotFormat::low_latency;
  return o;
}

TEST_F(Gpu, CapabilitiesAndRegistration) {
  const cuda::DeviceCapabilities caps = cuda::query(0);
  EXPECT_EQ(caps.device, 0);
  EXPECT_FALSE(caps.name.empty());
  EXPECT_GE(caps.compute_major, 5);
  test::UniqueShm name;
  Segment seg = Segment::create(name.name(), spsc(64, 64));
  {
    Registration reg = Registration::register_segment(seg);
    ASSERT_TRUE(reg);
    EXPECT_EQ(reg.host_pointer(), seg.base());
    EXPECT_EQ(reg.same_address(), caps.host_pointer_for_registered);
    // Registering the same mapping twice is refused, with a message.
    std::error_code ec;
    Registration again = Registration::register_segment(seg, 0, ec);
    EXPECT_EQ(ec, make_error_code(errc::cuda_error));
    EXPECT_NE(last_error_message().find("already registered"), std::string::npos);
  }
  // Unregistered on destruction: it registers again.
  Registration again = Registration::register_segment(seg);
  EXPECT_TRUE(again);
  std::error_code ec;
  (void)Registration::register_segment(seg, 4096, ec);
  EXPECT_EQ(ec, make_error_code(errc::no_gpu));
}

// A registration that fails (pinned memory exhausted, injected through the
// fault hook) is reported with the call that failed and leaves nothing
// registered: the next registration of the same mapping succeeds.
TEST_F(Gpu, FailedRegistrationIsReportedAndLeavesNothing) {
  test::UniqueShm name;
  Segment seg = Segment::create(name.name(), spsc(64, 64));
  {
    fault::ScopedHook hook([](fault::Call call, void*) noexcept {
      return call == fault::Call::cuda_host_register ? ENOMEM : 0;
    });
    std::error_code ec;
    Registration reg = Registration::register_segment(seg, 0, ec);
    EXPECT_FALSE(reg);
    EXPECT_EQ(ec, make_error_code(errc::cuda_error));
    EXPECT_NE(last_error_message().find("cudaHostRegister"), std::string::npos)
        << last_error_message();
    EXPECT_NE(last_error_message().find("cudaErrorMemoryAllocation"), std::string::npos)
        << last_error_message();
    EXPECT_NE(last_error_message().find(name.name()), std::string::npos) << last_error_message();
  }
  Registration reg = Registration::register_segment(seg);
  EXPECT_TRUE(reg);
}

// CPU producer process -> kernel consumer: kCount messages of `size`, the
// kernel popping equal shares in each of `modes`, one launch per mode.
void cpu_process_to_kernel(const CreateOptions& options, std::uint32_t size,
                           std::initializer_list<Mode> modes) {
  test::UniqueShm name;
  Segment seg = Segment::create(name.name(), options);
  constexpr std::uint64_t kCount = 20000;
  const pid_t child = ::fork();
  if (child == 0) {
    Segment s = Segment::open(name.name());
    SpscProducer tx = SpscProducer::attach(s);
    std::vector<std::byte> buf(size);
    for (std::uint64_t i = 0; i < kCount; ++i) {
      fill(buf, i, 0, size);
      if (tx.push(buf, kCpuTimeout) != Status::ok) ::_exit(2);
    }
    ::_exit(0);
  }
  Registration reg = Registration::register_segment(seg);
  GpuSpscConsumer rx = GpuSpscConsumer::attach(seg, reg);
  const std::uint64_t share = kCount / modes.size();
  std::uint64_t first = 0;
  std::uint64_t checksum = 0;
  for (const Mode mode : modes) {
    KernelResult r;
    ASSERT_TRUE(test::gpu::spsc_consume(rx.ref(), mode, first, rx.position(), share, size,
                                        kKernelTimeout, &r));
    EXPECT_EQ(r.status, 0u) << to_string(static_cast<Status>(r.status));
    EXPECT_EQ(r.messages, share);
    EXPECT_EQ(r.errors, 0u);
    checksum += r.checksum;
    first += share;
  }
  EXPECT_EQ(test::wait_child(child), 0);
  EXPECT_EQ(checksum, kCount * (kCount - 1) / 2);
  EXPECT_EQ(rx.position(), kCount);
}

// Kernel producer -> CPU consumer process, which peeks (plain slots) or pops
// (low-latency slots) and checks every message.
void kernel_to_cpu_process(const CreateOptions& options, std::uint32_t size, Mode mode) {
  test::UniqueShm name;
  Segment seg = Segment::create(name.name(), options);
  constexpr std::uint64_t kCount = 20000;
  const pid_t child = ::fork();
  if (child == 0) {
    Segment s = Segment::open(name.name());
    SpscConsumer rx = SpscConsumer::attach(s);
    std::vector<std::byte> buf(s.geometry().slot_size);
    for (std::uint64_t i = 0; i < kCount;) {
      if (rx.low_latency()) {
        std::size_t n = 0;
        if (rx.pop(buf, n, kCpuTimeout) != Status::ok) ::_exit(2);
        if (!matches(std::span(buf).first(n), i++, 0, size)) ::_exit(1);
        continue;
      }
      ReadClaim c = rx.peek(64, kCpuTimeout);
      if (c.empty()) ::_exit(2);
      for (std::size_t k = 0; k < c.size(); ++k) {
        if (!matches(c[k], i + k, 0, size)) ::_exit(1);
      }
      i += c.size();
      c.release();
    }
    ::_exit(0);
  }
  Registration reg = Registration::register_segment(seg);
  GpuSpscProducer tx = GpuSpscProducer::attach(seg, reg);
  KernelResult r;
  ASSERT_TRUE(test::gpu::spsc_produce(tx.ref(), mode, 0, kCount, size, kKernelTimeout, &r));
  EXPECT_EQ(r.status, 0u) << to_string(static_cast<Status>(r.status));
  EXPECT_EQ(r.messages, kCount);
  EXPECT_EQ(test::wait_child(child), 0);
  EXPECT_EQ(tx.position(), kCount);
}

class SpscModes : public Gpu,
                  public ::testing::WithParamInterface<std::tuple<Mode, std::uint32_t>> {};

// Small rings (8 slots): many wraps.
TEST_P(SpscModes, CpuProcessToKernel) {
  const auto [mode, size] = GetParam();
  cpu_process_to_kernel(spsc(8, 256), size, {mode});
}

TEST_P(SpscModes, KernelToCpuProcess) {
  const auto [mode, size] = GetParam();
  kernel_to_cpu_process(spsc(8, 256), size, mode);
}

INSTANTIATE_TEST_SUITE_P(AllModes, SpscModes,
                         ::testing::Combine(::testing::Values(Mode::thread, Mode::warp,
                                                              Mode::block),
                                            ::testing::Values(8u, 16u, 200u)));

// warp_pop on plain slots: lane 0 polls, the lanes load the slot together;
// past 512 bytes the rest follows. Sizes below, at and above one vector per
// lane.
TEST_F(Gpu, WarpPopOnPlainSlots) {
  cpu_process_to_kernel(spsc(8, 256), 100, {Mode::warp_pop});
  cpu_process_to_kernel(spsc(8, 8), 8, {Mode::warp_pop});
  cpu_process_to_kernel(spsc(8, 1024), 1000, {Mode::warp_pop});
  cpu_process_to_kernel(spsc(8, 1024), 512, {Mode::warp_pop});
}

// warp_push_one on plain slots: the warp writes each message together.
TEST_F(Gpu, WarpPushOneOnPlainSlots) {
  for (const std::uint32_t size : {8u, 100u, 1000u}) {
    kernel_to_cpu_process(spsc(8, 1024), size, Mode::warp_one);
  }
}

// A grid of 8 blocks reads batches of 3 slots in turn (GridReader): on a
// ring of 8 slots only two batches fit, so blocks wait for room and for
// their turn to release, wrap after wrap; then on a ring where every block
// has its batch at once. Every message is checked, each exactly once.
TEST_F(Gpu, GridReaderReadsEveryMessageOnceInRingOrder) {
  cpu_process_to_kernel(spsc(8, 256), 200, {Mode::grid});
  cpu_process_to_kernel(spsc(64, 256), 16, {Mode::grid, Mode::block});
}

// A block whose batch never completes times out holding it; the blocks
// after it time out waiting for their turn; the tail stops after the last
// batch handed back, so nothing unread is released.
TEST_F(Gpu, GridReaderTimeoutReleasesOnlyWholeBatchesInOrder) {
  test::UniqueShm name;
  Segment seg = Segment::create(name.name(), spsc(16, 64));
  {
    SpscProducer tx = SpscProducer::attach(seg);
    std::vector<std::byte> buf(32);
    for (std::uint64_t i = 0; i < 10; ++i) {
      fill(buf, i, 0, 32);
      ASSERT_EQ(tx.push(buf, kCpuTimeout), Status::ok);
    }
  }
  Registration reg = Registration::register_segment(seg);
  GpuSpscConsumer rx = GpuSpscConsumer::attach(seg, reg);
  KernelResult r;
  ASSERT_TRUE(test::gpu::spsc_consume(rx.ref(), Mode::grid, 0, 0, 20, 32, 50'000'000, &r));
  EXPECT_EQ(static_cast<Status>(r.status), Status::timeout);
  EXPECT_EQ(r.errors, 0u);
  EXPECT_EQ(r.messages, 9u);  // batches [0, 3), [3, 6), [6, 9); [9, 12) holds one message
  EXPECT_EQ(r.checksum, 9u * 8u / 2u);
  EXPECT_EQ(rx.position(), 9u);
  // What the grid did not hand back is still there for the next reader.
  KernelResult rest;
  ASSERT_TRUE(test::gpu::spsc_consume(rx.ref(), Mode::thread, 9, 9, 1, 32, kKernelTimeout, &rest));
  EXPECT_EQ(rest.status, 0u);
  EXPECT_EQ(rest.errors, 0u);
  EXPECT_EQ(rx.position(), 10u);
}

// Low-latency slots: the kernel pops with one thread, then with a warp, and
// pushes with one thread; every size from the smallest to the slot size.
class LowLatencySizes : public Gpu, public ::testing::WithParamInterface<std::uint32_t> {};

TEST_P(LowLatencySizes, CpuProcessToKernel) {
  cpu_process_to_kernel(spsc_low_latency(8, 256), GetParam(), {Mode::thread, Mode::warp_pop});
}

TEST_P(LowLatencySizes, KernelToCpuProcess) {
  kernel_to_cpu_process(spsc_low_latency(8, 256), GetParam(), Mode::thread);
}

TEST_P(LowLatencySizes, KernelWarpToCpuProcess) {
  kernel_to_cpu_process(spsc_low_latency(8, 256), GetParam(), Mode::warp_one);
}

INSTANTIATE_TEST_SUITE_P(Sizes, LowLatencySizes, ::testing::Values(1u, 8u, 16u, 61u, 200u, 256u));

// The warp and block forms lend slots in place, which low-latency slots do
// not allow: they refuse, and the ring is untouched.
TEST_F(Gpu, LowLatencyGroupFormsUnsupported) {
  test::UniqueShm name;
  Segment seg = Segment::create(name.name(), spsc_low_latency(8, 64));
  Registration reg = Registration::register_segment(seg);
  {
    GpuSpscProducer tx = GpuSpscProducer::attach(seg, reg);
    for (const Mode mode : {Mode::warp, Mode::block}) {
      KernelResult r;
      ASSERT_TRUE(test::gpu::spsc_produce(tx.ref(), mode, 0, 4, 16, kKernelTimeout, &r));
      EXPECT_EQ(static_cast<Status>(r.status), Status::unsupported);
      EXPECT_EQ(r.messages, 0u);
    }
    EXPECT_EQ(tx.position(), 0u);
    KernelResult r;
    ASSERT_TRUE(test::gpu::spsc_produce(tx.ref(), Mode::thread, 0, 4, 16, kKernelTimeout, &r));
    EXPECT_EQ(r.status, 0u);
  }
  GpuSpscConsumer rx = GpuSpscConsumer::attach(seg, reg);
  for (const Mode mode : {Mode::warp, Mode::block, Mode::grid}) {
    KernelResult r;
    ASSERT_TRUE(test::gpu::spsc_consume(rx.ref(), mode, 0, 0, 4, 16, kKernelTimeout, &r));
    EXPECT_EQ(static_cast<Status>(r.status), Status::unsupported);
  }
  EXPECT_EQ(rx.position(), 0u);
  KernelResult r;
  ASSERT_TRUE(test::gpu::spsc_consume(rx.ref(), Mode::thread, 0, 0, 4, 16, kKernelTimeout, &r));
  EXPECT_EQ(r.status, 0u) << to_string(static_cast<Status>(r.status));
  EXPECT_EQ(r.messages, 4u);
  EXPECT_EQ(r.errors, 0u);
}

// Kernel -> kernel, the consumer in another process with its own CUDA context.
TEST_F(Gpu, KernelToKernelAcrossProcesses) {
  test::UniqueShm name;
  Segment seg = Segment::create(name.name(), spsc(64, 128));
  constexpr std::uint64_t kCount = 50000;
  const std::string count = std::to_string(kCount);
  const char* argv[] = {g_self.c_str(),      "--gpu-peer",  "consume",
                        name.name().c_str(), count.c_str(), nullptr};
  pid_t peer = 0;
  ASSERT_EQ(
      ::posix_spawn(&peer, g_self.c_str(), nullptr, nullptr, const_cast<char**>(argv), environ), 0);
  Registration reg = Registration::register_segment(seg);
  GpuSpscProducer tx = GpuSpscProducer::attach(seg, reg);
  KernelResult r;
  ASSERT_TRUE(test::gpu::spsc_produce(tx.ref(), Mode::block, 0, kCount, 100, kKernelTimeout, &r));
  EXPECT_EQ(r.status, 0u);
  EXPECT_EQ(test::wait_child(peer), 0)
      << "the GPU consumer process saw a wrong message or timed out";
}

// CPU <-> kernel ping-pong: the CPU sends, a persistent kernel echoes (one
// thread, or a warp popping with warp_pop), over plain and low-latency slots.
class PingPong : public Gpu, public ::testing::WithParamInterface<std::tuple<SlotFormat, bool>> {};

TEST_P(PingPong, CpuKernel) {
  const auto [format, warp] = GetParam();
  CreateOptions options = spsc(4, 64);
  options.format = format;
  test::UniqueShm ping_name("ping");
  test::UniqueShm pong_name("pong");
  Segment ping = Segment::create(ping_name.name(), options);
  Segment pong = Segment::create(pong_name.name(), options);
  constexpr std::uint64_t kRounds = 2000;
  const pid_t child = ::fork();
  if (child == 0) {
    Segment a = Segment::open(ping_name.name());
    Segment b = Segment::open(pong_name.name());
    SpscProducer tx = SpscProducer::attach(a);
    SpscConsumer rx = SpscConsumer::attach(b);
    std::vector<std::byte> out(48), in(64);
    for (std::uint64_t i = 0; i < kRounds; ++i) {
      fill(out, i, 3, 48);
      if (tx.push(out, kCpuTimeout) != Status::ok) ::_exit(2);
      std::size_t n = 0;
      if (rx.pop(in, n, kCpuTimeout) != Status::ok) ::_exit(3);
      if (!matches(std::span(in).first(n), i, 3, 48)) ::_exit(1);
    }
    ::_exit(0);
  }
  Registration r1 = Registration::register_segment(ping);
  Registration r2 = Registration::register_segment(pong);
  GpuSpscConsumer rx = GpuSpscConsumer::attach(ping, r1);
  GpuSpscProducer tx = GpuSpscProducer::attach(pong, r2);
  KernelResult r;
  ASSERT_TRUE(warp ? test::gpu::spsc_warp_echo(rx.ref(), tx.ref(), kRounds, kKernelTimeout, &r)
                   : test::gpu::spsc_echo(rx.ref(), tx.ref(), kRounds, kKernelTimeout, &r));
  EXPECT_EQ(r.status, 0u) << to_string(static_cast<Status>(r.status));
  EXPECT_EQ(r.messages, kRounds);
  EXPECT_EQ(test::wait_child(child), 0);
}

INSTANTIATE_TEST_SUITE_P(FormatsAndGroups, PingPong,
                         ::testing::Combine(::testing::Values(SlotFormat::plain,
                                                              SlotFormat::low_latency),
                                            ::testing::Bool()));

// A kernel on an empty ring (or a full one) returns timeout, and the ring is
// unchanged.
TEST_F(Gpu, KernelWaitsTimeOut) {
  test::UniqueShm name;
  Segment seg = Segment::create(name.name(), spsc(4, 64));
  Registration reg = Registration::register_segment(seg);
  {
    GpuSpscConsumer rx = GpuSpscConsumer::attach(seg, reg);
    KernelResult r;
    const auto t0 = std::chrono::steady_clock::now();
    ASSERT_TRUE(test::gpu::spsc_pop_once(rx.ref(), 5'000'000, &r));  // 5 ms
    EXPECT_GE(std::chrono::steady_clock::now() - t0, 5ms);
    EXPECT_EQ(static_cast<Status>(r.status), Status::timeout);
    EXPECT_EQ(rx.position(), 0u);
  }
  GpuSpscProducer tx = GpuSpscProducer::attach(seg, reg);
  for (int i = 0; i < 4; ++i) {
    KernelResult r;
    ASSERT_TRUE(test::gpu::spsc_push_once(tx.ref(), 32, 0, &r));
    EXPECT_EQ(static_cast<Status>(r.status), Status::ok);
  }
  KernelResult full;
  ASSERT_TRUE(test::gpu::spsc_push_once(tx.ref(), 32, 5'000'000, &full));
  EXPECT_EQ(static_cast<Status>(full.status), Status::timeout);
  KernelResult big;
  ASSERT_TRUE(test::gpu::spsc_push_once(tx.ref(), 65, 0, &big));
  EXPECT_EQ(static_cast<Status>(big.status), Status::too_large);
  EXPECT_EQ(tx.position(), 4u);
  // A CPU consumer sees the four messages and nothing else.
  SpscConsumer rx = SpscConsumer::attach(seg);
  ReadClaim c = rx.try_peek(10);
  EXPECT_EQ(c.size(), 4u);
}

// MPMC: warps of one GPU produce, two CPU consumer processes take every
// message exactly once (each reports per-producer sequence sums and counts).
TEST_F(Gpu, MpmcKernelProducersToCpuConsumers) {
  test::UniqueShm name;
  Segment seg = Segment::create(name.name(), ring(RingKind::mpmc, 256, 64));
  test::UniqueShm tally_name("tally");
  constexpr unsigned kWarps = 8;
  constexpr std::uint64_t kPerWarp = 20000;
  // Seen counts per (producer, seq), in a plain shared segment both children write.
  Segment tally = Segment::create(tally_name.name(), ring(RingKind::spsc, 1, kWarps * kPerWarp));
  auto* seen = reinterpret_cast<std::uint8_t*>(tally.base() + tally.geometry().slots_offset);
  std::vector<pid_t> children;
  for (int c = 0; c < 2; ++c) {
    const pid_t pid = ::fork();
    if (pid == 0) {
      Segment s = Segment::open(name.name());
      MpmcConsumer rx = MpmcConsumer::attach(s);
      for (;;) {
        ReadClaim claim = rx.peek(32, 3s);
        if (claim.empty()) ::_exit(claim.status() == Status::timeout ? 0 : 2);
        for (std::size_t k = 0; k < claim.size(); ++k) {
          MessageHeader h{};
          std::memcpy(&h, claim[k].data(), sizeof h);
          if (h.producer >= kWarps || h.seq >= kPerWarp ||
              !matches(claim[k], h.seq, h.producer, 64))
            ::_exit(1);
          atomic::fetch_add(&seen[h.producer * kPerWarp + h.seq], std::uint8_t{1});
        }
        claim.release();
      }
    }
    children.push_back(pid);
  }
  Registration reg = Registration::register_segment(seg);
  GpuMpmcProducers tx = GpuMpmcProducers::attach(seg, reg);
  KernelResult r;
  ASSERT_TRUE(test::gpu::mpmc_produce(tx.ref(), kWarps, kPerWarp, 64, kKernelTimeout, &r));
  EXPECT_EQ(r.status, 0u) << to_string(static_cast<Status>(r.status));
  EXPECT_EQ(r.messages, kWarps * kPerWarp);
  for (pid_t pid : children) EXPECT_EQ(test::wait_child(pid), 0);
  std::uint64_t once = 0;
  for (std::uint64_t i = 0; i < kWarps * kPerWarp; ++i) once += seen[i] == 1;
  EXPECT_EQ(once, kWarps * kPerWarp) << "every message delivered exactly once";
  EXPECT_EQ(tx.position(), kWarps * kPerWarp);
}

// MPMC: two CPU producer processes, warps of one GPU consume.
TEST_F(Gpu, MpmcCpuProducersToKernelConsumers) {
  test::UniqueShm name;
  Segment seg = Segment::create(name.name(), ring(RingKind::mpmc, 256, 64));
  constexpr std::uint32_t kProducers = 2;
  constexpr std::uint64_t kPerProducer = 50000;
  std::vector<pid_t> children;
  for (std::uint32_t p = 0; p < kProducers; ++p) {
    const pid_t pid = ::fork();
    if (pid == 0) {
      Segment s = Segment::open(name.name());
      MpmcProducer tx = MpmcProducer::attach(s);
      std::vector<std::byte> buf(64);
      for (std::uint64_t i = 0; i < kPerProducer; ++i) {
        fill(buf, i, p, 64);
        if (tx.push(buf, kCpuTimeout) != Status::ok) ::_exit(2);
      }
      ::_exit(0);
    }
    children.push_back(pid);
  }
  Registration reg = Registration::register_segment(seg);
  GpuMpmcConsumers rx = GpuMpmcConsumers::attach(seg, reg);
  std::uint32_t* seen = nullptr;
  ASSERT_EQ(cudaMalloc(reinterpret_cast<void**>(&seen),
                       kProducers * kPerProducer * sizeof(std::uint32_t)),
            cudaSuccess);
  cudaMemset(seen, 0, kProducers * kPerProducer * sizeof(std::uint32_t));
  KernelResult r;
  ASSERT_TRUE(test::gpu::mpmc_consume(rx.ref(), 8, kProducers * kPerProducer, kProducers,
                                      kPerProducer, kKernelTimeout, seen, &r));
  std::vector<std::uint32_t> host(kProducers * kPerProducer);
  cudaMemcpy(host.data(), seen, host.size() * sizeof(std::uint32_t), cudaMemcpyDeviceToHost);
  cudaFree(seen);
  for (pid_t pid : children) EXPECT_EQ(test::wait_child(pid), 0);
  EXPECT_EQ(r.status, 0u) << to_string(static_cast<Status>(r.status));
  EXPECT_EQ(r.errors, 0u);
  EXPECT_EQ(r.messages, kProducers * kPerProducer);
  std::uint64_t once = 0;
  for (std::uint32_t v : host) once += v == 1;
  EXPECT_EQ(once, kProducers * kPerProducer) << "every message delivered exactly once";
}

// One deadline per device call: a CPU producer that aborts a claim every
// millisecond (each a skipped slot the kernel passes over) cannot keep a
// kernel's warp_claim_read(timeout 10 ms) past its deadline. Each skipped
// slot used to restart the clock, which held the kernel until the aborts
// stopped (2 s here).
TEST_F(Gpu, MpmcClaimReadDeadlineHoldsAgainstAborts) {
  test::UniqueShm name;
  Segment seg = Segment::create(name.name(), ring(RingKind::mpmc, 64, 64));
  Registration reg = Registration::register_segment(seg);
  GpuMpmcConsumers rx = GpuMpmcConsumers::attach(seg, reg);
  MpmcProducer tx = MpmcProducer::attach(seg);
  constexpr std::uint64_t kTimeout = 10'000'000;  // 10 ms
  // Where the kernel's call starts (CUDA loads the module at the first
  // launch): an empty ring times out, and the ring is unchanged.
  KernelResult idle;
  ASSERT_TRUE(test::gpu::mpmc_claim_read_once(rx.ref(), 1, kTimeout, &idle));
  EXPECT_EQ(static_cast<Status>(idle.status), Status::timeout);
  EXPECT_GE(idle.elapsed_ns, kTimeout);

  std::atomic<bool> kernel_done{false};
  std::atomic<std::uint64_t> aborts{0};
  std::thread aborter([&] {
    const auto until = std::chrono::steady_clock::now() + 2s;
    while (!kernel_done.load() && std::chrono::steady_clock::now() < until) {
      WriteClaim c = tx.try_claim(1);
      if (!c.empty()) {
        c.abort();
        ++aborts;
      }
      std::this_thread::sleep_for(1ms);
    }
  });
  KernelResult r;
  const bool ran = test::gpu::mpmc_claim_read_once(rx.ref(), 1, kTimeout, &r);
  kernel_done.store(true);
  aborter.join();
  ASSERT_TRUE(ran);
  std::printf(
      "warp_claim_read(1, 10 ms) against a claim aborted every 1 ms: %s after %.3f ms "
      "(%.3f ms past its deadline); %llu aborted claims, %llu passed over\n",
      to_string(static_cast<Status>(r.status)), static_cast<double>(r.elapsed_ns) / 1e6,
      (static_cast<double>(r.elapsed_ns) - static_cast<double>(kTimeout)) / 1e6,
      static_cast<unsigned long long>(aborts.load()),
      static_cast<unsigned long long>(rx.position()));
  EXPECT_EQ(static_cast<Status>(r.status), Status::timeout) << "no message was ever committed";
  EXPECT_EQ(r.messages, 0u);
  EXPECT_GE(rx.position(), 2u) << "the kernel passed over skipped slots while it waited";
  EXPECT_GE(r.elapsed_ns, kTimeout);
  // Generous: a pass over one skipped slot is a few PCIe round trips (tens of
  // microseconds); the restarted deadline held the kernel for 2 s.
  EXPECT_LT(r.elapsed_ns, kTimeout + 50'000'000ull);
}

// Without host-native atomics a GPU side and CPU handles cannot share the
// MPMC claim counter; either order of attach is refused with a reason.
TEST_F(Gpu, MixedMpmcProducersRefused) {
  const cuda::DeviceCapabilities caps = cuda::query(0);
  if (caps.host_native_atomics)
    GTEST_SKIP() << caps.name << " has host-native atomics: mixing is allowed";
  test::UniqueShm name;
  Segment seg = Segment::create(name.name(), ring(RingKind::mpmc, 64, 64));
  Registration reg = Registration::register_segment(seg);
  {
    MpmcProducer cpu = MpmcProducer::attach(seg);
    std::error_code ec;
    GpuMpmcProducers gpu = GpuMpmcProducers::attach(seg, reg, ec);
    EXPECT_EQ(ec, make_error_code(errc::mixed_agents));
    EXPECT_NE(last_error_message().find("hostNativeAtomicSupported"), std::string::npos)
        << last_error_message();
    EXPECT_FALSE(gpu);
  }
  GpuMpmcProducers gpu = GpuMpmcProducers::attach(seg, reg);
  std::error_code ec;
  MpmcProducer cpu = MpmcProducer::attach(seg, {}, ec);
  EXPECT_EQ(ec, make_error_code(errc::mixed_agents));
  EXPECT_FALSE(cpu);
  // The consumer side is another matter: CPU consumers are fine.
  MpmcConsumer consumer = MpmcConsumer::attach(seg);
  EXPECT_TRUE(consumer);
}

// Kernels claim on a side's one shared counter; a ring of owned lanes has a
// counter per lane, so both GPU sides refuse it by name, and the CPU handles
// still work on it.
TEST_F(Gpu, MpmcOwnedLanesRefused) {
  test::UniqueShm name;
  CreateOptions o = ring(RingKind::mpmc, 64, 64);
  o.lanes = 2;
  Segment seg = Segment::create(name.name(), o);
  Registration reg = Registration::register_segment(seg);
  std::error_code ec;
  GpuMpmcProducers producers = GpuMpmcProducers::attach(seg, reg, ec);
  EXPECT_EQ(ec, make_error_code(errc::gpu_not_allowed));
  EXPECT_NE(last_error_message().find("2 owned lanes"), std::string::npos) << last_error_message();
  EXPECT_FALSE(producers);
  GpuMpmcConsumers consumers = GpuMpmcConsumers::attach(seg, reg, ec);
  EXPECT_EQ(ec, make_error_code(errc::gpu_not_allowed));
  EXPECT_FALSE(consumers);
  MpmcProducer cpu = MpmcProducer::attach(seg);
  MpmcConsumer reader = MpmcConsumer::attach(seg);
  const std::array<std::byte, 8> m{std::byte{7}};
  ASSERT_EQ(cpu.try_push(m), Status::ok);
  std::array<std::byte, 64> out{};
  std::size_t n = 0;
  ASSERT_EQ(reader.try_pop(out, n), Status::ok);
  EXPECT_EQ(n, m.size());
  EXPECT_EQ(out[0], std::byte{7});
}

// The GPU takes over the SPSC producer role like a CPU handle: a second one
// is refused while it holds it.
TEST_F(Gpu, SpscRoleIsExclusive) {
  test::UniqueShm name;
  Segment seg = Segment::create(name.name(), spsc(16, 64));
  Registration reg = Registration::register_segment(seg);
  GpuSpscProducer gpu = GpuSpscProducer::attach(seg, reg);
  std::error_code ec;
  SpscProducer cpu = SpscProducer::attach(seg, {}, ec);
  EXPECT_EQ(ec, make_error_code(errc::role_taken));
  EXPECT_EQ(seg.base() != nullptr, true);
  auto* block = &reinterpret_cast<ControlArea*>(seg.base())->producer;
  EXPECT_EQ(block->gpu_attached, 1u);
}

// ---- broadcast ----------------------------------------------------------------

// Waits (up to kCpuTimeout) until `n` subscriber blocks of the ring are
// active: the subscribers in other processes have joined.
bool subscribers_joined(const BroadcastView& view, std::uint32_t n) {
  const auto until = std::chrono::steady_clock::now() + kCpuTimeout;
  while (std::chrono::steady_clock::now() < until) {
    std::uint32_t active = 0;
    for (std::uint32_t i = 0; i < view.subscribers(); ++i) {
      if (atomic::load_acquire(&view.subscriber(i)->state) == kSubscriberActive) ++active;
    }
    if (active >= n) return true;
    std::this_thread::sleep_for(1ms);
  }
  return false;
}

// A CPU subscriber process: reads messages until it has seen `last_seq`,
// checking each. Reliable: exactly 0..last_seq in order (peeks in place).
// Lossy: copies (never torn), increasing sequence numbers. Exit status 0 if
// all was well; 1 a wrong message; 2 a failed call.
int cpu_subscriber(const std::string& name, std::uint64_t last_seq, std::uint32_t size) {
  Segment s = Segment::open(name);
  BroadcastSubscriber rx = BroadcastSubscriber::attach(s, JoinAt::oldest);
  const bool lossy = s.geometry().delivery == Delivery::lossy;
  std::vector<std::byte> buf(s.geometry().slot_size);
  for (std::uint64_t next = 0;;) {
    if (lossy) {
      std::size_t n = 0;
      const Status st = rx.pop(buf, n, kCpuTimeout);
      if (st == Status::overrun) continue;
      if (st != Status::ok) return 2;
      MessageHeader h{};
      std::memcpy(&h, buf.data(), sizeof h);
      if (h.seq < next || !matches(std::span(buf).first(n), h.seq, 0, size)) return 1;
      next = h.seq + 1;
      if (h.seq == last_seq) return 0;
      continue;
    }
    ReadClaim c = rx.peek(64, kCpuTimeout);
    if (c.empty()) return 2;
    for (std::size_t k = 0; k < c.size(); ++k) {
      if (!matches(c[k], next + k, 0, size)) return 1;
    }
    next += c.size();
    c.release();
    if (next > last_seq) return 0;
  }
}

template <class Body>
pid_t fork_child(Body&& body) {
  const pid_t pid = ::fork();
  if (pid == 0) {
    int rc = 99;
    try {
      rc = body();
    } catch (...) {
      rc = 98;
    }
    ::_exit(rc);
  }
  return pid;
}

class BroadcastModes
    : public Gpu,
      public ::testing::WithParamInterface<std::tuple<Mode, std::uint32_t, Delivery>> {};

// Kernel producer -> three CPU subscriber processes, each checking every
// message (reliable: every one, in order; lossy: none torn).
TEST_P(BroadcastModes, KernelToCpuSubscribers) {
  const auto [mode, size, delivery] = GetParam();
  test::BroadcastRing ring(test::broadcast(4, delivery, 8, size));
  constexpr std::uint32_t kSubscribers = 3;
  const std::uint64_t count = size > 4096 ? 2000 : 20000;
  std::vector<pid_t> children;
  for (std::uint32_t i = 0; i < kSubscribers; ++i) {
    children.push_back(
        fork_child([&] { return cpu_subscriber(ring.shm.name(), count - 1, size); }));
  }
  ASSERT_TRUE(subscribers_joined(ring.view(), kSubscribers));
  Registration reg = Registration::register_segment(ring.segment);
  GpuBroadcastProducer tx = GpuBroadcastProducer::attach(ring.segment, reg);
  KernelResult r;
  ASSERT_TRUE(test::gpu::broadcast_produce(tx.ref(), mode, 0, count, size, kKernelTimeout, &r));
  EXPECT_EQ(r.status, 0u) << to_string(static_cast<Status>(r.status));
  EXPECT_EQ(r.messages, count);
  for (const pid_t c : children) EXPECT_EQ(test::wait_child(c), 0);
  EXPECT_EQ(tx.position(), count);
}

// CPU producer process -> a kernel subscriber and a CPU subscriber process at
// once, both checking every message.
TEST_P(BroadcastModes, CpuProducerToKernelAndCpuSubscribers) {
  const auto [mode, size, delivery] = GetParam();
  test::BroadcastRing ring(test::broadcast(4, delivery, 8, size));
  const std::uint64_t count = size > 4096 ? 2000 : 20000;
  Registration reg = Registration::register_segment(ring.segment);
  GpuBroadcastSubscriber rx = GpuBroadcastSubscriber::attach(ring.segment, reg, JoinAt::oldest);
  const pid_t cpu_sub =
      fork_child([&] { return cpu_subscriber(ring.shm.name(), count - 1, size); });
  ASSERT_TRUE(subscribers_joined(ring.view(), 2));
  const pid_t producer = fork_child([&] {
    Segment s = Segment::open(ring.shm.name());
    BroadcastProducer tx = BroadcastProducer::attach(s);
    std::vector<std::byte> buf(size);
    for (std::uint64_t i = 0; i < count; ++i) {
      fill(buf, i, 0, size);
      if (tx.push(buf, kCpuTimeout) != Status::ok) return 2;
    }
    return 0;
  });
  KernelResult r;
  ASSERT_TRUE(
      test::gpu::broadcast_subscribe(rx.ref(), mode, 0, count - 1, size, kKernelTimeout, &r));
  EXPECT_EQ(r.status, 0u) << to_string(static_cast<Status>(r.status));
  EXPECT_EQ(r.errors, 0u);
  EXPECT_EQ(test::wait_child(producer), 0);
  EXPECT_EQ(test::wait_child(cpu_sub), 0);
  if (delivery == Delivery::reliable) {
    EXPECT_EQ(r.messages, count);
    EXPECT_EQ(r.gaps, 0u);
    EXPECT_EQ(r.checksum, count * (count - 1) / 2);
    EXPECT_EQ(rx.position(), count);
  } else {
    EXPECT_EQ(r.messages + r.gaps, count);  // every message read, or counted as skipped
    std::printf("[ lossy    ] kernel subscriber: %llu read, %llu skipped, %llu discarded\n",
                static_cast<unsigned long long>(r.messages),
                static_cast<unsigned long long>(r.gaps),
                static_cast<unsigned long long>(r.discarded));
  }
}

INSTANTIATE_TEST_SUITE_P(Gpu, BroadcastModes,
                         ::testing::Values(std::tuple{Mode::thread, 64u, Delivery::reliable},
                                           std::tuple{Mode::block, 64u << 10, Delivery::reliable},
                                           std::tuple{Mode::thread, 200u, Delivery::lossy},
                                           std::tuple{Mode::block, 16u << 10, Delivery::lossy}),
                         [](const auto& p) {
                           const Mode m = std::get<0>(p.param);
                           return std::string(m == Mode::thread ? "thread" : "block") + "_" +
                                  std::to_string(std::get<1>(p.param)) + "B_" +
                                  (std::get<2>(p.param) == Delivery::lossy ? "lossy" : "reliable");
                         });

// A kernel subscriber facing an empty ring times out by its deadline; a GPU
// subscriber handle that goes retires its block, so a reliable CPU producer
// no longer waits for it; a GPU producer sees the same room.
TEST_F(Gpu, BroadcastSubscriberTimesOutAndRetiresOnDetach) {
  test::BroadcastRing ring(test::broadcast(2, Delivery::reliable, 4, 64));
  Registration reg = Registration::register_segment(ring.segment);
  BroadcastProducer tx = BroadcastProducer::attach(ring.segment);
  {
    GpuBroadcastSubscriber rx = GpuBroadcastSubscriber::attach(ring.segment, reg);
    KernelResult r;
    const auto t0 = std::chrono::steady_clock::now();
    ASSERT_TRUE(test::gpu::broadcast_subscribe(rx.ref(), Mode::thread, 0, 0, 64,
                                               50'000'000 /* 50 ms */, &r));
    const auto took = std::chrono::steady_clock::now() - t0;
    EXPECT_EQ(static_cast<Status>(r.status), Status::timeout);
    EXPECT_LT(took, 5s);
    std::array<std::byte, 64> m{};
    for (int i = 0; i < 4; ++i) ASSERT_EQ(tx.try_push(m), Status::ok);
    EXPECT_EQ(tx.try_push(m), Status::would_block);  // the GPU subscriber holds it back
  }
  std::array<std::byte, 64> m{};
  EXPECT_EQ(tx.try_push(m), Status::ok);  // retired: no longer counted
}

// A second producer, CPU or GPU, is refused while the GPU producer holds the
// role; the role is free again when it goes.
TEST_F(Gpu, BroadcastProducerRoleIsExclusive) {
  test::BroadcastRing ring(test::broadcast(2, Delivery::reliable, 4, 64));
  Registration reg = Registration::register_segment(ring.segment);
  {
    GpuBroadcastProducer gpu = GpuBroadcastProducer::attach(ring.segment, reg);
    std::error_code ec;
    (void)BroadcastProducer::attach(ring.segment, {}, ec);
    EXPECT_EQ(ec, make_error_code(errc::role_taken));
    (void)GpuBroadcastProducer::attach(ring.segment, reg, ec);
    EXPECT_EQ(ec, make_error_code(errc::role_taken));
  }
  EXPECT_TRUE(BroadcastProducer::attach(ring.segment));
}

// With no device visible, every GPU call fails with a clear error and the
// CPU paths keep working.
TEST(NoGpu, ClearErrorsAndCpuStillWorks) {
  if (cuda::device_count() != 0) GTEST_SKIP() << "a CUDA device is visible";
  std::error_code ec;
  (void)cuda::query(0, ec);
  EXPECT_EQ(ec, make_error_code(errc::no_gpu));
  EXPECT_NE(last_error_message().find("no CUDA device"), std::string::npos) << last_error_message();
  test::UniqueShm name;
  Segment seg = Segment::create(name.name(), spsc(8, 64));
  Registration reg = Registration::register_segment(seg, 0, ec);
  EXPECT_EQ(ec, make_error_code(errc::no_gpu));
  EXPECT_NE(last_error_message().find(name.name()), std::string::npos) << last_error_message();
  EXPECT_FALSE(reg);
  GpuSpscProducer gpu = GpuSpscProducer::attach(seg, reg, ec);
  EXPECT_EQ(ec, make_error_code(errc::gpu_not_allowed));
  EXPECT_FALSE(gpu);
  // The failed GPU attach took no role: a CPU producer gets it.
  SpscProducer tx = SpscProducer::attach(seg);
  SpscConsumer rx = SpscConsumer::attach(seg);
  EXPECT_EQ(tx.try_push(test::as_bytes("still fine")), Status::ok);
  std::array<std::byte, 64> buf{};
  std::size_t n = 0;
  ASSERT_EQ(rx.try_pop(buf, n), Status::ok);
  EXPECT_EQ(test::to_string(std::span(buf).first(n)), "still fine");
}

// --gpu-peer consume NAME COUNT: the second GPU process of
// KernelToKernelAcrossProcesses (exit 0 when every message matched).
int gpu_peer(int argc, char** argv) {
  if (argc != 5 || std::string(argv[2]) != "consume") return 64;
  try {
    Segment seg = Segment::open(argv[3]);
    Registration reg = Registration::register_segment(seg);
    GpuSpscConsumer rx = GpuSpscConsumer::attach(seg, reg);
    const std::uint64_t count = std::stoull(argv[4]);
    KernelResult r;
    if (!test::gpu::spsc_consume(rx.ref(), Mode::block, 0, 0, count, 100, kKernelTimeout, &r))
      return 3;
    return r.status == 0 && r.errors == 0 && r.messages == count ? 0 : 1;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "gpu peer: %s\n", e.what());
    return 2;
  }
}

}  // namespace
}  // namespace shmring

int main(int argc, char** argv) {
  shmring::g_self = argv[0];
  if (argc > 1 && std::string(argv[1]) == "--gpu-peer") return shmring::gpu_peer(argc, argv);
  ::testing::InitGoogleTest(&argc, argv);
  const int rc = RUN_ALL_TESTS();
  // Missing hardware is "skipped" (ctest's SKIP_RETURN_CODE), never "passed".
  if (rc == 0 && shmring::cuda::device_count() == 0) {
    std::printf("no CUDA device visible: the GPU tests were skipped\n");
    return 77;
  }
  return rc;
}
