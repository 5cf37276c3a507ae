// Errors of the cold paths: create, open, attach.
//
// Every failure has a shmring::errc (or, for a failed system call, the errno
// in std::system_category) and a message that names the segment and the check
// that failed. Throwing calls raise shmring::Error carrying both; the
// std::error_code& overloads set the code and leave the message in
// shmring::last_error_message() (per thread), so nothing is lost either way.
#pragma once

#include <string>
#include <system_error>

namespace shmring {

enum class errc {
  // bad arguments
  invalid_name = 1,   // empty, too long, contains '/', "." / "..", or reserved
  invalid_capacity,   // 0, not a power of two, or above kMaxCapacity
  invalid_slot_size,  // 0 or above kMaxSlotSize
  size_overflow,      // capacity x slot size exceeds the segment limit
  // the segment as found
  not_found,       // no segment of that name
  already_exists,  // create() found one
  no_space,        // /dev/shm could not reserve the memory
  permission_denied,
  not_a_segment,      // not a regular file, or smaller than a header
  bad_magic,          // not a shmring segment
  abi_mismatch,       // made by an incompatible shmring version
  kind_mismatch,      // SPSC where MPMC was asked for, or the reverse
  geometry_mismatch,  // open_or_create found other capacity / slot size
  corrupt_header,     // header fields contradict each other
  truncated,          // the file is smaller than the header says
  init_timeout,       // the creator did not finish initialising in time
  // roles
  role_taken,         // a live process holds this SPSC role
  message_too_large,  // a typed ring's element does not fit the slot
  no_segment,         // the call needs an open segment
  // GPU
  no_gpu,           // no CUDA driver or device, or shmring built without CUDA
  cuda_error,       // a CUDA runtime call failed
  gpu_not_allowed,  // the device or the ring's other agents forbid this GPU use
  mixed_agents,     // CPU and GPU agents would share a read-modify-write counter
  // bad arguments, continued (appended: the numbers above are kept)
  invalid_slot_format,  // unknown slot format, or low-latency slots on an MPMC ring
  invalid_argument,     // any other bad argument: a mode beyond 0666, an unknown ring kind
  not_sealed,           // open_fd with require_sealed: the descriptor's size is not sealed
  // events (event.hpp)
  bad_endpoint,  // an event FIFO in /dev/shm is not a FIFO, or not its waiter's
};

const std::error_category& error_category() noexcept;

inline std::error_code make_error_code(errc e) noexcept {
  return {static_cast<int>(e), error_category()};
}

class Error : public std::system_error {
 public:
  Error(std::error_code code, const std::string& message) : std::system_error(code, message) {}
};

// The message of the last failure reported through an error_code overload on
// this thread ("" if none).
const std::string& last_error_message() noexcept;

}  // namespace shmring

template <>
struct std::is_error_code_enum<shmring::errc> : std::true_type {};
