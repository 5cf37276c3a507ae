// GPU views of slots: where the calling process has registered the segment's
// mapping with CUDA (Segment.register_cuda), a slot can be lent to CuPy,
// PyTorch or any consumer of __cuda_array_interface__ (v3) or DLPack as a
// device array over the slot itself, with no copy. A view counts as an
// export of its slot (slot.hpp), so the slot is not recycled while a GPU
// array built on it lives.
#pragma once

#include <nanobind/nanobind.h>

#include <memory>
#include <string>

#include "slot.hpp"

namespace shmring_py {

// One per Python Segment, shared with its handles (and so their slots).
struct GpuState {
  GpuState();
  ~GpuState();
  GpuState(const GpuState&) = delete;
  GpuState& operator=(const GpuState&) = delete;

  // Registers the mapping with CUDA on `device` (again on the same device:
  // nothing to do; on another: an error).
  void register_segment(const shmring::Segment& segment, int device);
  bool registered() const noexcept;
  int device() const noexcept;  // -1 when not registered
  // The device address of `host`, a byte of the registered mapping.
  std::uintptr_t device_address(const std::byte* host) const;

  struct Impl;
  std::unique_ptr<Impl> impl;
};

bool built_with_cuda() noexcept;
int gpu_count() noexcept;

// Slot.cuda(): a GPU view of `slot` (an nb::object holding a Slot).
nb::object make_gpu_view(nb::handle slot);

// Binds GpuView and the module-level GPU queries.
void bind_gpu(nb::module_& m);

}  // namespace shmring_py
