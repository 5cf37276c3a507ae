// The messages every ring carries, built and checked the same way on the
// host and on the device.
//
// Message i of a ring carries i (its position) in its first 8 bytes, its
// size in the next 8 and ~i in its last 8, and a fixed pattern in between.
#pragma once

#include <cuda_runtime_api.h>

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <vector>

namespace gpu_bench {

__host__ __device__ inline std::uint64_t pattern_word(std::uint64_t w) {
  const std::uint64_t x = (w + 1) * 0x9E3779B97F4A7C15ull;
  return x ^ (x >> 29);
}

// 16-byte vector `v` of message `seq` of `size` bytes (vps = size / 16):
// word 0 = seq, word 1 = size, last word = ~seq, the rest pattern_word(w).
__host__ __device__ inline ulonglong2 message_vector(std::uint64_t seq, std::uint64_t size,
                                                     std::uint32_t v, std::uint32_t vps) {
  ulonglong2 r;
  r.x = v == 0 ? seq : pattern_word(2ull * v);
  r.y = v == 0 ? size : v == vps - 1 ? ~seq : pattern_word(2ull * v + 1);
  return r;
}

// The message of seq 0 with its stamps zeroed: what every body compares to.
inline std::vector<unsigned char> host_frame(std::uint64_t size) {
  std::vector<unsigned char> f(size);
  const auto vps = static_cast<std::uint32_t>(size / 16);
  for (std::uint32_t v = 0; v < vps; ++v) {
    ulonglong2 x = message_vector(0, size, v, vps);
    if (v == 0) x.x = 0;
    if (v == vps - 1) x.y = 0;
    std::memcpy(f.data() + 16ull * v, &x, 16);
  }
  return f;
}

inline std::uint64_t load_word(const std::byte* p) {
  std::uint64_t w;
  std::memcpy(&w, p, 8);
  return w;
}
inline void store_word(std::byte* p, std::uint64_t w) { std::memcpy(p, &w, 8); }

}  // namespace gpu_bench
