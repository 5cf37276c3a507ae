#include "shmring/error.hpp"

#include "detail/fail.hpp"

namespace shmring {
namespace {

class Category final : public std::error_category {
 public:
  const char* name() const noexcept override { return "shmring"; }
  std::string message(int code) const override {
    switch (static_cast<errc>(code)) {
      case errc::invalid_name:
        return "invalid segment name";
      case errc::invalid_capacity:
        return "invalid capacity";
      case errc::invalid_slot_size:
        return "invalid slot size";
      case errc::size_overflow:
        return "segment size overflow";
      case errc::not_found:
        return "segment not found";
      case errc::already_exists:
        return "segment already exists";
      case errc::no_space:
        return "not enough shared memory";
      case errc::permission_denied:
        return "permission denied";
      case errc::not_a_segment:
        return "not a shmring segment file";
      case errc::bad_magic:
        return "bad magic";
      case errc::abi_mismatch:
        return "ABI version mismatch";
      case errc::kind_mismatch:
        return "ring kind mismatch";
      case errc::geometry_mismatch:
        return "geometry mismatch";
      case errc::corrupt_header:
        return "corrupt header";
      case errc::truncated:
        return "segment truncated";
      case errc::init_timeout:
        return "segment initialisation timed out";
      case errc::role_taken:
        return "role already taken";
      case errc::message_too_large:
        return "message too large";
      case errc::no_segment:
        return "no segment";
      case errc::no_gpu:
        return "no usable GPU";
      case errc::cuda_error:
        return "CUDA error";
      case errc::gpu_not_allowed:
        return "GPU use not allowed";
      case errc::mixed_agents:
        return "CPU and GPU agents cannot share this side";
      case errc::invalid_slot_format:
        return "invalid slot format";
      case errc::invalid_argument:
        return "invalid argument";
      case errc::not_sealed:
        return "segment descriptor not sealed";
      case errc::bad_endpoint:
        return "event endpoint is not a FIFO of the expected owner";
    }
    return "unknown shmring error";
  }
};

thread_local std::string g_last_message;

}  // namespace

const std::error_category& error_category() noexcept {
  static const Category category;
  return category;
}

const std::string& last_error_message() noexcept { return g_last_message; }

namespace detail {

void Failure::report(std::error_code& ec) const {
  ec = code;
  g_last_message = message;
}

void Failure::raise() const { throw Error(code, message); }

}  // namespace detail
}  // namespace shmring
