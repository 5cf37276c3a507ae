// Turns a failed CUDA runtime call into a Failure naming the call.
#pragma once

#include <cuda_runtime_api.h>

#include <string>
#include <string_view>

#include "detail/fail.hpp"

namespace shmring::detail {

inline Failure cuda_check(cudaError_t err, std::string_view segment, std::string_view call) {
  if (err == cudaSuccess) return {};
  cudaGetLastError();  // do not leave the error for the next unrelated call
  const errc code = err == cudaErrorNoDevice || err == cudaErrorInsufficientDriver
                        ? errc::no_gpu
                        : errc::cuda_error;
  return fail(make_error_code(code), segment,
              std::string(call) + " failed: " + cudaGetErrorName(err) + " (" +
                  cudaGetErrorString(err) + ")");
}

}  // namespace shmring::detail
