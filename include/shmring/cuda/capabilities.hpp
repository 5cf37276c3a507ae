// What a CUDA device can do with a ring in host shared memory, and the rules
// that follow from it (DESIGN principle 2 and the measured H100 facts).
//
// Part of the shmring::cuda target, built when the CUDA toolkit is found
// (it defines SHMRING_HAVE_CUDA for its users). With no driver or no device
// at run time, device_count() is 0 and query() fails with errc::no_gpu.
#pragma once

#include <string>
#include <system_error>

#include "shmring/layout.hpp"

namespace shmring::cuda {

struct DeviceCapabilities {
  int device = -1;
  std::string name;
  int compute_major = 0;
  int compute_minor = 0;
  bool integrated = false;                   // Jetson-class: the GPU shares DRAM with the CPU
  bool host_native_atomics = false;          // RMW on host memory is atomic with the CPU's
  bool host_pointer_for_registered = false;  // registered memory has one address on both sides
  bool pageable_memory_access = false;       // kernels may touch unregistered host memory
};

// Devices visible to this process; 0 with no driver or no device.
int device_count() noexcept;

DeviceCapabilities query(int device);
DeviceCapabilities query(int device, std::error_code& ec);

// Which side of a ring GPU agents take.
enum class Side { producer, consumer };

// Why GPU agents of `caps` may not take the `side` of a ring of `kind` whose
// side already has `cpu_agents` CPU handles, or "" if they may. SPSC: one
// agent per side, always allowed (loads and stores only). MPMC: the GPU
// agents coordinate in device memory and the CPU may not share their side,
// unless the device has host-native atomics, in which case both RMW the
// shared counter.
std::string gpu_use_problem(const DeviceCapabilities& caps, RingKind kind, Side side,
                            unsigned cpu_agents);

}  // namespace shmring::cuda
