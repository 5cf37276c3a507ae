// GPU agents on a ring: the host-side handles that give kernels a side of a
// ring, and the plain references (Refs) that kernels receive by value.
//
//   auto seg = shmring::Segment::open("frames");
//   auto reg = shmring::cuda::Registration::register_segment(seg);
//   auto tx  = shmring::cuda::GpuSpscProducer::attach(seg, reg);
//   produce<<<1, 256>>>(tx.ref());   // device.cuh: SpscDeviceProducer(ref)
//
// SPSC: the GPU side is one agent (one thread, warp or block at a time) and
// this process holds the role in the segment like a CPU handle would; its
// cursor lives in device memory and persists across launches. MPMC: any
// number of GPU threads of one device share a side; they claim positions on a
// counter in device memory (the segment's counter where the device has
// host-native atomics), and each slot is published by its one writer. CPU
// handles may not share an MPMC side with GPU agents unless the device has
// host-native atomics (DESIGN principle 2); attach refuses it with
// errc::mixed_agents, and a CPU attach after a GPU one is refused likewise.
//
// Broadcast: the GPU producer holds the producer role (one agent at a time,
// as SPSC); each GPU subscriber holds a subscriber block of its own, joined
// at attach, and is one agent too. Its cursor lives in device memory; the
// block's cursor word in the segment (which the producer and ring-inspect
// read) is stored by the kernel at each release. A reliable producer on the
// GPU cannot ask the kernel whether a subscriber died: evict_dead() (on the
// host) does, and a CPU producer does it by itself before it waits.
//
// Destroy a handle only after the kernels that use its Ref have finished.
#pragma once

#include <cstdint>
#include <memory>
#include <system_error>
#include <type_traits>

#include "shmring/broadcast_view.hpp"
#include "shmring/cuda/registration.hpp"
#include "shmring/error.hpp"
#include "shmring/layout.hpp"
#include "shmring/mpmc_view.hpp"
#include "shmring/segment.hpp"
#include "shmring/spsc_view.hpp"

namespace shmring::detail {
class Holding;
}  // namespace shmring::detail

namespace shmring::cuda {

struct SpscProducerRef {
  std::byte* base = nullptr;  // device address of the segment
  Geometry geometry;
  SpscProducerCursor* cursor = nullptr;  // device memory
};
struct SpscConsumerRef {
  std::byte* base = nullptr;
  Geometry geometry;
  SpscConsumerCursor* cursor = nullptr;
};
struct MpmcSideRef {
  std::byte* base = nullptr;
  Geometry geometry;
  std::uint64_t* counter = nullptr;  // device memory, or the segment's own counter
};
using MpmcProducerRef = MpmcSideRef;
using MpmcConsumerRef = MpmcSideRef;
struct BroadcastProducerRef {
  std::byte* base = nullptr;
  Geometry geometry;
  BroadcastProducerCursor* cursor = nullptr;  // device memory
};
struct BroadcastSubscriberRef {
  std::byte* base = nullptr;
  Geometry geometry;
  BroadcastSubscriberCursor* cursor = nullptr;  // device memory
};

// One GPU side of a ring, owned by this process; GpuHandle below fixes its
// kind and side.
class GpuSide {
 public:
  GpuSide() noexcept = default;
  GpuSide(GpuSide&& other) noexcept;
  GpuSide& operator=(GpuSide&& other) noexcept;
  GpuSide(const GpuSide&) = delete;
  GpuSide& operator=(const GpuSide&) = delete;
  ~GpuSide();

  explicit operator bool() const noexcept { return device_state_ != nullptr; }
  // The position the GPU agents have reached (copied from device memory; it
  // waits for work queued on the legacy default stream).
  std::uint64_t position() const;

 protected:
  void release() noexcept;  // gives the side back; the destructor and move-assignment
  // `at`: where a broadcast subscriber joins (ignored by the other sides).
  static GpuSide attach(const Segment& segment, const Registration& registration, RingKind kind,
                        Side side, JoinAt at, std::error_code& ec);
  // Broadcast, reliable, the producer: blocks whose holders died stop
  // holding it back (how many); see BroadcastProducer.
  std::uint32_t evict_dead_subscribers() const noexcept;
  // SPSC or broadcast producer: ends the stream (docs/events.md).
  void close_stream() noexcept;
  std::byte* device_base_ = nullptr;
  std::byte* host_base_ = nullptr;  // the same mapping on the host
  int probe_fd_ = -1;               // the segment's descriptor: whose locks live
  Geometry geometry_;
  void* device_state_ = nullptr;  // the cursor (SPSC) or the counter (MPMC)
  std::uint64_t* shared_counter_ =
      nullptr;                  // MPMC with host-native atomics: the segment's (device address)
  SideBlock* block_ = nullptr;  // our side's block, host address
  std::shared_ptr<const void>
      role_;  // SPSC, broadcast producer: the role held (given back when reset)
  std::shared_ptr<detail::Holding> subscriber_block_;  // broadcast subscriber: its block
  RingKind kind_ = RingKind::spsc;
  Side side_ = Side::producer;
  int device_ = -1;
  std::uint32_t generation_ = 0;  // process::generation() at attach
  std::shared_ptr<const void> lifetime_;
};

// GpuSide with its kind and side fixed, and the Ref kernels take.
template <RingKind Kind, Side S>
class GpuHandle : public GpuSide {
 public:
  using Ref = std::conditional_t<
      Kind == RingKind::mpmc, MpmcSideRef,
      std::conditional_t<
          Kind == RingKind::broadcast,
          std::conditional_t<S == Side::producer, BroadcastProducerRef, BroadcastSubscriberRef>,
          std::conditional_t<S == Side::producer, SpscProducerRef, SpscConsumerRef>>>;

  GpuHandle() noexcept = default;

  static GpuHandle attach(const Segment& segment, const Registration& registration) {
    std::error_code ec;
    GpuHandle h = attach(segment, registration, ec);
    if (ec) throw Error(ec, last_error_message());
    return h;
  }
  static GpuHandle attach(const Segment& segment, const Registration& registration,
                          std::error_code& ec) {
    return attach_at(segment, registration, JoinAt::next, ec);
  }
  // A broadcast subscriber joining at `at` (attach() joins at JoinAt::next).
  static GpuHandle attach(const Segment& segment, const Registration& registration,
                          JoinAt at) requires(Kind == RingKind::broadcast && S == Side::consumer) {
    std::error_code ec;
    GpuHandle h = attach_at(segment, registration, at, ec);
    if (ec) throw Error(ec, last_error_message());
    return h;
  }
  static GpuHandle attach(const Segment& segment, const Registration& registration, JoinAt at,
                          std::error_code& ec) requires(Kind == RingKind::broadcast &&
                                                        S == Side::consumer) {
    return attach_at(segment, registration, at, ec);
  }

  // Ends the stream after what the kernels published: consumers read it,
  // then get Status::closed. Call it once the producing kernels finished; a
  // GPU producer handle never closes by itself (a CPU one does at its end).
  // A producer that attaches later reopens the stream.
  void close() requires(Kind != RingKind::mpmc && S == Side::producer) { close_stream(); }

  // Reliable broadcast rings: subscribers whose processes died stop holding
  // the GPU producer back; returns how many. Call it from the host when the
  // producer's kernel times out waiting for room.
  std::uint32_t evict_dead() requires(Kind == RingKind::broadcast && S == Side::producer) {
    return evict_dead_subscribers();
  }

  Ref ref() const noexcept {
    if constexpr (Kind == RingKind::mpmc) {
      return {device_base_, geometry_,
              shared_counter_ ? shared_counter_ : static_cast<std::uint64_t*>(device_state_)};
    } else if constexpr (Kind == RingKind::broadcast && S == Side::producer) {
      return {device_base_, geometry_, static_cast<BroadcastProducerCursor*>(device_state_)};
    } else if constexpr (Kind == RingKind::broadcast) {
      return {device_base_, geometry_, static_cast<BroadcastSubscriberCursor*>(device_state_)};
    } else if constexpr (S == Side::producer) {
      return {device_base_, geometry_, static_cast<SpscProducerCursor*>(device_state_)};
    } else {
      return {device_base_, geometry_, static_cast<SpscConsumerCursor*>(device_state_)};
    }
  }

 private:
  static GpuHandle attach_at(const Segment& segment, const Registration& registration, JoinAt at,
                             std::error_code& ec) {
    GpuHandle h;
    static_cast<GpuSide&>(h) = GpuSide::attach(segment, registration, Kind, S, at, ec);
    return h;
  }
};

using GpuSpscProducer = GpuHandle<RingKind::spsc, Side::producer>;
using GpuSpscConsumer = GpuHandle<RingKind::spsc, Side::consumer>;
using GpuMpmcProducers = GpuHandle<RingKind::mpmc, Side::producer>;
using GpuMpmcConsumers = GpuHandle<RingKind::mpmc, Side::consumer>;
using GpuBroadcastProducer = GpuHandle<RingKind::broadcast, Side::producer>;
using GpuBroadcastSubscriber = GpuHandle<RingKind::broadcast, Side::consumer>;

}  // namespace shmring::cuda
