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
// Destroy a handle only after the kernels that use its Ref have finished.
#pragma once

#include <cstdint>
#include <memory>
#include <system_error>
#include <type_traits>

#include "shmring/cuda/registration.hpp"
#include "shmring/error.hpp"
#include "shmring/layout.hpp"
#include "shmring/mpmc_view.hpp"
#include "shmring/segment.hpp"
#include "shmring/spsc_view.hpp"

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
  static GpuSide attach(const Segment& segment, const Registration& registration, RingKind kind,
                        Side side, std::error_code& ec);
  std::byte* device_base_ = nullptr;
  Geometry geometry_;
  void* device_state_ = nullptr;  // the cursor (SPSC) or the counter (MPMC)
  std::uint64_t* shared_counter_ =
      nullptr;                  // MPMC with host-native atomics: the segment's (device address)
  SideBlock* block_ = nullptr;  // our side's block, host address
  std::shared_ptr<const void> role_;  // SPSC: the role held (given back when reset)
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
  using Ref =
      std::conditional_t<Kind == RingKind::mpmc, MpmcSideRef,
                         std::conditional_t<S == Side::producer, SpscProducerRef, SpscConsumerRef>>;

  GpuHandle() noexcept = default;

  static GpuHandle attach(const Segment& segment, const Registration& registration) {
    std::error_code ec;
    GpuHandle h = attach(segment, registration, ec);
    if (ec) throw Error(ec, last_error_message());
    return h;
  }
  static GpuHandle attach(const Segment& segment, const Registration& registration,
                          std::error_code& ec) {
    GpuHandle h;
    static_cast<GpuSide&>(h) = GpuSide::attach(segment, registration, Kind, S, ec);
    return h;
  }

  Ref ref() const noexcept {
    if constexpr (Kind == RingKind::mpmc) {
      return {device_base_, geometry_,
              shared_counter_ ? shared_counter_ : static_cast<std::uint64_t*>(device_state_)};
    } else if constexpr (S == Side::producer) {
      return {device_base_, geometry_, static_cast<SpscProducerCursor*>(device_state_)};
    } else {
      return {device_base_, geometry_, static_cast<SpscConsumerCursor*>(device_state_)};
    }
  }
};

using GpuSpscProducer = GpuHandle<RingKind::spsc, Side::producer>;
using GpuSpscConsumer = GpuHandle<RingKind::spsc, Side::consumer>;
using GpuMpmcProducers = GpuHandle<RingKind::mpmc, Side::producer>;
using GpuMpmcConsumers = GpuHandle<RingKind::mpmc, Side::consumer>;

}  // namespace shmring::cuda
