#include "shmring/cuda/gpu_ring.hpp"

#include <cuda_runtime_api.h>
#include <unistd.h>

#include <cstddef>
#include <string>
#include <utility>

#include "detail/attach.hpp"
#include "detail/cuda_check.hpp"
#include "detail/fail.hpp"
#include "detail/subscribers.hpp"
#include "shmring/atomic.hpp"
#include "shmring/wait.hpp"

namespace shmring::cuda {

GpuSide::GpuSide(GpuSide&& other) noexcept { *this = std::move(other); }

GpuSide& GpuSide::operator=(GpuSide&& other) noexcept {
  if (this != &other) {
    release();
    device_base_ = std::exchange(other.device_base_, nullptr);
    host_base_ = std::exchange(other.host_base_, nullptr);
    probe_fd_ = other.probe_fd_;
    geometry_ = other.geometry_;
    device_state_ = std::exchange(other.device_state_, nullptr);
    shared_counter_ = std::exchange(other.shared_counter_, nullptr);
    block_ = std::exchange(other.block_, nullptr);
    role_ = std::move(other.role_);
    subscriber_block_ = std::move(other.subscriber_block_);
    kind_ = other.kind_;
    side_ = other.side_;
    device_ = other.device_;
    generation_ = other.generation_;
    lifetime_ = std::move(other.lifetime_);
  }
  return *this;
}

GpuSide::~GpuSide() { release(); }

void GpuSide::release() noexcept {
  if (block_ == nullptr || !detail::attached_here(generation_)) {
    block_ = nullptr;
    role_.reset();
    subscriber_block_.reset();
    lifetime_.reset();
    return;
  }
  int previous = 0;
  const bool had = cudaGetDevice(&previous) == cudaSuccess;
  cudaSetDevice(device_);
  if (kind_ == RingKind::mpmc && shared_counter_ == nullptr && device_state_ != nullptr) {
    // The GPU agents claimed on a device counter: hand its value back to the
    // segment so CPU agents (and inspection) continue from it.
    std::uint64_t counter = 0;
    if (cudaMemcpy(&counter, device_state_, sizeof counter, cudaMemcpyDeviceToHost) ==
        cudaSuccess) {
      atomic::store_seq_cst(&block_->position, counter);
    }
  }
  if (kind_ == RingKind::broadcast && side_ == Side::consumer && subscriber_block_) {
    // The kernel's cursor says how far it read; the block is retired (a
    // reliable producer stops waiting for it) and its lock let go.
    BroadcastSubscriberCursor cursor{};
    if (cudaMemcpy(&cursor, device_state_, sizeof cursor, cudaMemcpyDeviceToHost) == cudaSuccess) {
      const BroadcastView view(host_base_, geometry_);
      if (detail::retire_subscriber(view, cursor, subscriber_block_)) {
        futex::notify_all(&view.consumer()->notify);
      }
    }
    subscriber_block_.reset();
  }
  role_.reset();  // SPSC, broadcast producer: gives the role back
  if (device_state_ != nullptr) cudaFree(device_state_);
  cudaGetLastError();
  if (had) cudaSetDevice(previous);
  atomic::fetch_sub(&block_->gpu_attached, std::uint32_t{1});
  if (atomic::load_acquire(&block_->gpu_attached) == 0) {
    atomic::store_release(&block_->gpu_flags, std::uint32_t{0});
  }
  device_state_ = nullptr;
  block_ = nullptr;
  lifetime_.reset();
}

std::uint64_t GpuSide::position() const {
  if (block_ == nullptr) return 0;
  if (shared_counter_ != nullptr) return atomic::load_acquire(&block_->position);
  // The SPSC and broadcast producer cursors and the counter start with the
  // position; a broadcast subscriber's is its `next`.
  const std::size_t offset = kind_ == RingKind::broadcast && side_ == Side::consumer
                                 ? offsetof(BroadcastSubscriberCursor, next)
                                 : 0;
  std::uint64_t v = 0;
  cudaMemcpy(&v, static_cast<const std::byte*>(device_state_) + offset, sizeof v,
             cudaMemcpyDeviceToHost);
  return v;
}

std::uint32_t GpuSide::evict_dead_subscribers() const noexcept {
  if (block_ == nullptr || kind_ != RingKind::broadcast || side_ != Side::producer ||
      !detail::attached_here(generation_)) {
    return 0;
  }
  return detail::evict_dead_subscribers(BroadcastView(host_base_, geometry_), probe_fd_);
}

// Copies a cursor a kernel starts from into fresh device memory.
static detail::Failure device_cursor(const Segment& segment, const void* init, std::size_t size,
                                     void*& state) {
  detail::Failure f;
  if ((f = detail::cuda_check(cudaMalloc(&state, size), segment.name(), "cudaMalloc")) ||
      (f = detail::cuda_check(cudaMemcpy(state, init, size, cudaMemcpyHostToDevice), segment.name(),
                              "cudaMemcpy"))) {
    if (state != nullptr) cudaFree(state);
    state = nullptr;
  }
  return f;
}

void GpuSide::close_stream() noexcept {
  if (block_ == nullptr || side_ != Side::producer || kind_ == RingKind::mpmc ||
      !detail::attached_here(generation_)) {
    return;
  }
  // SYNC POINT (seq_cst store after the kernels' head stores, which the
  // caller waited for): as a CPU producer's close (spsc_ring.cpp).
  atomic::store_seq_cst(&block_->stream, kStreamClosed);
  futex::notify_all(&block_->notify);
}

GpuSide GpuSide::attach(const Segment& segment, const Registration& registration, RingKind kind,
                        Side side, JoinAt at, std::error_code& ec) {
  return detail::or_report(ec, [&](detail::Failure& f) {
    GpuSide g;
    const bool producer = side == Side::producer;
    const char* side_name = kind == RingKind::broadcast ? (producer ? " producer" : " subscriber")
                                                        : (producer ? " producer" : " consumer");
    const std::string role = std::string("GPU ") + to_string(kind) + side_name;
    if ((f = detail::check_attachable(segment, kind, role))) return g;
    // A kernel claims on the one shared counter of a side; owned lanes keep
    // theirs apart, and no device code walks them.
    if (segment.geometry().lanes != 0) {
      f = detail::fail(make_error_code(errc::gpu_not_allowed), segment.name(),
                       "the " + role + " needs an MPMC ring of one shared lane; this one has " +
                           std::to_string(segment.geometry().lanes) + " owned lanes");
      return g;
    }
    if (!registration || registration.host_pointer() != segment.base()) {
      f = detail::fail(make_error_code(errc::gpu_not_allowed), segment.name(),
                       "the " + role +
                           " needs this segment's mapping registered with CUDA "
                           "(Registration::register_segment of the same Segment)");
      return g;
    }
    const DeviceCapabilities& caps = registration.capabilities();
    if ((f = detail::cuda_check(cudaSetDevice(caps.device), segment.name(), "cudaSetDevice"))) {
      return g;
    }
    const RingView view(segment.base(), segment.geometry());
    SideBlock* block = producer ? view.producer() : view.consumer();
    const auto device_address = [&](const void* host) {
      return registration.device_pointer() + (static_cast<const std::byte*>(host) - segment.base());
    };

    if (kind == RingKind::spsc) {
      const detail::SpscAttachment a = detail::attach_spsc(segment, producer, f);
      if (f) return g;
      const std::size_t size = producer ? sizeof(SpscProducerCursor) : sizeof(SpscConsumerCursor);
      const void* init = producer ? static_cast<const void*>(&a.producer) : &a.consumer;
      if ((f = device_cursor(segment, init, size, g.device_state_))) return g;
      g.role_ = a.role;
    } else if (kind == RingKind::broadcast && producer) {
      detail::BroadcastProducerAttachment a = detail::attach_broadcast_producer(segment, role, f);
      if (f) return g;
      if ((f = device_cursor(segment, &a.cursor, sizeof a.cursor, g.device_state_))) return g;
      g.role_ = std::move(a.role);
    } else if (kind == RingKind::broadcast) {
      detail::BroadcastSubscription sub = detail::attach_broadcast_subscriber(segment, at, role, f);
      if (f) return g;
      if ((f = device_cursor(segment, &sub.cursor, sizeof sub.cursor, g.device_state_))) {
        (void)detail::retire_subscriber(BroadcastView(segment.base(), segment.geometry()),
                                        sub.cursor, sub.block);
        return g;
      }
      g.subscriber_block_ = std::move(sub.block);
    } else {
      // Announce ourselves before looking for CPU agents; a CPU attach does
      // the reverse, so of two racing attaches at least one sees the other.
      atomic::fetch_add(&block->gpu_attached, std::uint32_t{1});
      const unsigned cpu_agents = atomic::load_seq_cst(&block->attached);
      const std::string why = gpu_use_problem(caps, kind, side, cpu_agents);
      bool ok = why.empty();
      if (!ok) {
        f = detail::fail(make_error_code(errc::mixed_agents), segment.name(), why);
      } else if (caps.host_native_atomics) {
        // The device's RMW on host memory is atomic with the CPU's: claim on
        // the segment's own counter, and let CPU agents share the side.
        g.shared_counter_ = reinterpret_cast<std::uint64_t*>(device_address(&block->position));
        atomic::store_release(&block->gpu_flags, kGpuSharedCounter);
      } else {
        const std::uint64_t start = atomic::load_acquire(&block->position);
        ok = !(f = detail::cuda_check(cudaMalloc(&g.device_state_, sizeof start), segment.name(),
                                      "cudaMalloc")) &&
             !(f = detail::cuda_check(
                   cudaMemcpy(g.device_state_, &start, sizeof start, cudaMemcpyHostToDevice),
                   segment.name(), "cudaMemcpy"));
      }
      if (!ok) {
        if (g.device_state_ != nullptr) cudaFree(g.device_state_);
        g.device_state_ = nullptr;
        atomic::fetch_sub(&block->gpu_attached, std::uint32_t{1});
        return g;
      }
    }
    // CPU peers poll rather than wait to be woken: a GPU cannot call futex.
    // A GPU subscriber is counted on the consumer side, where a reliable
    // producer waiting for room looks.
    if (kind != RingKind::mpmc) atomic::fetch_add(&block->gpu_attached, std::uint32_t{1});
    g.device_base_ = registration.device_pointer();
    g.host_base_ = segment.base();
    g.probe_fd_ = segment.fd();
    g.geometry_ = segment.geometry();
    g.block_ = block;
    g.kind_ = kind;
    g.side_ = side;
    g.device_ = caps.device;
    g.generation_ = process::generation();
    g.lifetime_ = segment.lifetime();
    return g;
  });
}

}  // namespace shmring::cuda
