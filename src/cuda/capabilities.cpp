#include "shmring/cuda/capabilities.hpp"

#include <cuda_runtime_api.h>

#include "detail/cuda_check.hpp"
#include "detail/fail.hpp"

namespace shmring::cuda {

int device_count() noexcept {
  int n = 0;
  if (cudaGetDeviceCount(&n) != cudaSuccess) {
    cudaGetLastError();  // clear the sticky "no device" error
    return 0;
  }
  return n;
}

namespace {

DeviceCapabilities do_query(int device, detail::Failure& f) {
  DeviceCapabilities caps;
  const int n = device_count();
  if (n == 0) {
    f = detail::fail(make_error_code(errc::no_gpu), "(none)",
                     "no CUDA device is visible to this process (no driver, no device, or "
                     "CUDA_VISIBLE_DEVICES hides them)");
    return caps;
  }
  if (device < 0 || device >= n) {
    f = detail::fail(
        make_error_code(errc::no_gpu), "(none)",
        "device " + std::to_string(device) + " does not exist; " + std::to_string(n) + " visible");
    return caps;
  }
  cudaDeviceProp prop{};
  if ((f = detail::cuda_check(cudaGetDeviceProperties(&prop, device), "(none)",
                              "cudaGetDeviceProperties"))) {
    return caps;
  }
  auto attr = [&](cudaDeviceAttr a) {
    int v = 0;
    return cudaDeviceGetAttribute(&v, a, device) == cudaSuccess && v != 0;
  };
  caps.device = device;
  caps.name = prop.name;
  caps.compute_major = prop.major;
  caps.compute_minor = prop.minor;
  caps.integrated = attr(cudaDevAttrIntegrated);
  caps.host_native_atomics = attr(cudaDevAttrHostNativeAtomicSupported);
  caps.host_pointer_for_registered = attr(cudaDevAttrCanUseHostPointerForRegisteredMem);
  caps.pageable_memory_access = attr(cudaDevAttrPageableMemoryAccess);
  return caps;
}

}  // namespace

DeviceCapabilities query(int device) {
  return detail::or_throw([&](detail::Failure& f) { return do_query(device, f); });
}

DeviceCapabilities query(int device, std::error_code& ec) {
  return detail::or_report(ec, [&](detail::Failure& f) { return do_query(device, f); });
}

std::string gpu_use_problem(const DeviceCapabilities& caps, RingKind kind, Side side,
                            unsigned cpu_agents) {
  if (kind == RingKind::spsc) return {};  // loads and stores only: fine everywhere
  if (cpu_agents == 0 || caps.host_native_atomics) return {};
  const char* what = side == Side::producer ? "producers" : "consumers";
  return "MPMC " + std::string(what) + " on GPU " + std::to_string(caps.device) + " (" + caps.name +
         ") cannot join the " + std::to_string(cpu_agents) + " CPU " + what +
         " attached to this ring: the device reports hostNativeAtomicSupported = 0, so its "
         "read-modify-write on host memory is not atomic with the CPU's";
}

}  // namespace shmring::cuda
