// Registration of a segment's mapping with CUDA in the calling process
// (cudaHostRegister, mapped + portable), so kernels can load and store the
// ring in place. Each process that wants GPU access registers its own mapping;
// the segment may have been created by any other process.
#pragma once

#include <cstddef>
#include <memory>
#include <system_error>

#include "shmring/cuda/capabilities.hpp"
#include "shmring/segment.hpp"

namespace shmring::cuda {

class Registration {
 public:
  Registration() noexcept = default;
  Registration(Registration&& other) noexcept;
  Registration& operator=(Registration&& other) noexcept;
  Registration(const Registration&) = delete;
  Registration& operator=(const Registration&) = delete;
  ~Registration();

  static Registration register_segment(const Segment& segment, int device = 0);
  static Registration register_segment(const Segment& segment, int device, std::error_code& ec);

  explicit operator bool() const noexcept { return host_ != nullptr; }
  // The segment's base as kernels on device() see it.
  std::byte* device_pointer() const noexcept { return device_ptr_; }
  std::byte* host_pointer() const noexcept { return host_; }
  // True where the device address equals the host address (checked, not assumed).
  bool same_address() const noexcept { return host_ != nullptr && device_ptr_ == host_; }
  int device() const noexcept { return caps_.device; }
  const DeviceCapabilities& capabilities() const noexcept { return caps_; }
  const Geometry& geometry() const noexcept { return geometry_; }

 private:
  void reset() noexcept;
  std::byte* host_ = nullptr;
  std::byte* device_ptr_ = nullptr;
  std::size_t size_ = 0;
  Geometry geometry_;
  DeviceCapabilities caps_;
  std::shared_ptr<const void> lifetime_;  // the mapping outlives the registration
};

}  // namespace shmring::cuda
