#include "shmring/cuda/registration.hpp"

#include <cuda_runtime_api.h>
#include <unistd.h>

#include <utility>

#include "detail/cuda_check.hpp"
#include "detail/fail.hpp"
#include "detail/sys.hpp"

namespace shmring::cuda {
namespace {

std::size_t page_rounded(std::size_t size) {
  const auto page = static_cast<std::size_t>(::sysconf(_SC_PAGESIZE));
  return (size + page - 1) / page * page;
}

}  // namespace

Registration::Registration(Registration&& other) noexcept { *this = std::move(other); }

Registration& Registration::operator=(Registration&& other) noexcept {
  if (this != &other) {
    reset();
    host_ = std::exchange(other.host_, nullptr);
    device_ptr_ = std::exchange(other.device_ptr_, nullptr);
    size_ = std::exchange(other.size_, 0);
    geometry_ = other.geometry_;
    caps_ = std::move(other.caps_);
    lifetime_ = std::move(other.lifetime_);
  }
  return *this;
}

Registration::~Registration() { reset(); }

void Registration::reset() noexcept {
  if (host_ == nullptr) return;
  int previous = 0;
  const bool had = cudaGetDevice(&previous) == cudaSuccess;
  cudaSetDevice(caps_.device);
  cudaHostUnregister(host_);
  cudaGetLastError();
  if (had) cudaSetDevice(previous);
  host_ = nullptr;
  device_ptr_ = nullptr;
  lifetime_.reset();
}

Registration Registration::register_segment(const Segment& segment, int device) {
  std::error_code ec;
  Registration r = register_segment(segment, device, ec);
  if (ec) throw Error(ec, last_error_message());
  return r;
}

Registration Registration::register_segment(const Segment& segment, int device,
                                            std::error_code& ec) {
  return detail::or_report(ec, [&](detail::Failure& f) {
    Registration r;
    if (!segment) {
      f = detail::fail(make_error_code(errc::no_segment), "", "cannot register an empty Segment");
      return r;
    }
    const std::string& name = segment.name();
    std::error_code qec;
    DeviceCapabilities caps = query(device, qec);
    if (qec) {
      f = detail::fail(qec, name, "cannot register with CUDA: " + last_error_message());
      return r;
    }
    if ((f = detail::cuda_check(cudaSetDevice(device), name, "cudaSetDevice"))) return r;
    unsigned flags = cudaHostRegisterMapped | cudaHostRegisterPortable;
    if (segment.read_only()) flags |= cudaHostRegisterReadOnly;
    const std::size_t size = page_rounded(segment.size());
    // A registration failure (pinned memory exhausted) cannot be produced on
    // demand, so tests inject it through the fault hook.
    const cudaError_t err = sys::injected(fault::Call::cuda_host_register) != 0
                                ? cudaErrorMemoryAllocation
                                : cudaHostRegister(segment.base(), size, flags);
    if (err == cudaErrorHostMemoryAlreadyRegistered) {
      cudaGetLastError();
      f = detail::fail(make_error_code(errc::cuda_error), name,
                       "the mapping is already registered with CUDA in this process");
      return r;
    }
    if ((f = detail::cuda_check(
             err, name,
             "cudaHostRegister(Mapped|Portable) of " + std::to_string(size) + " bytes"))) {
      return r;
    }
    void* dptr = nullptr;
    if ((f = detail::cuda_check(cudaHostGetDevicePointer(&dptr, segment.base(), 0), name,
                                "cudaHostGetDevicePointer"))) {
      cudaHostUnregister(segment.base());
      return r;
    }
    r.host_ = segment.base();
    r.device_ptr_ = static_cast<std::byte*>(dptr);
    r.size_ = size;
    r.geometry_ = segment.geometry();
    r.caps_ = std::move(caps);
    r.lifetime_ = segment.lifetime();
    return r;
  });
}

}  // namespace shmring::cuda
