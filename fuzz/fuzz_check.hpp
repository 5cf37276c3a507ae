// Bounds checks shared by the fuzz targets: a violation traps, so a fuzzer
// reports it as a crash and a replay fails.
#pragma once

#include <cstddef>
#include <cstdint>

namespace shmring::fuzz {

// Traps unless [p, p + n) lies inside [lo, hi).
inline void check_inside(const void* p, std::uint64_t n, const void* lo, const void* hi) {
  const auto a = reinterpret_cast<std::uintptr_t>(p);
  const auto l = reinterpret_cast<std::uintptr_t>(lo);
  const auto h = reinterpret_cast<std::uintptr_t>(hi);
  if (a < l || a > h || n > h - a) __builtin_trap();
}

inline void check(bool ok) {
  if (!ok) __builtin_trap();
}

// Reads every byte of [p, p + n) so that a sanitizer sees the access.
inline std::uint64_t touch(const std::byte* p, std::uint64_t n) {
  std::uint64_t sum = 0;
  for (std::uint64_t i = 0; i < n; ++i) sum += static_cast<std::uint8_t>(p[i]);
  return sum;
}

}  // namespace shmring::fuzz
