// Numbers as a run reports them to a person: durations, sizes, rates and a
// latency distribution, each scaled to a unit that keeps three or four
// significant digits ("351 ns", "1.28 ms", "132.6 KiB", "41.47 M").
#pragma once

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <string>
#include <vector>

namespace shmring::harness {

template <class... Args>
std::string format_text(const char* format, Args... args) {
  char text[64];
  std::snprintf(text, sizeof text, format, args...);
  return text;
}

inline std::string format_ns(double ns) {
  if (ns < 1e3) return format_text("%.0f ns", ns);
  if (ns < 1e6) return format_text("%.2f us", ns / 1e3);
  if (ns < 1e9) return format_text("%.2f ms", ns / 1e6);
  return format_text("%.2f s", ns / 1e9);
}

inline std::string format_bytes(std::uint64_t bytes) {
  const auto b = static_cast<double>(bytes);
  if (bytes < 1024) return format_text("%llu B", static_cast<unsigned long long>(bytes));
  if (bytes < 1024 * 1024) return format_text("%.1f KiB", b / 1024);
  if (bytes < 1024ull * 1024 * 1024) return format_text("%.1f MiB", b / (1024 * 1024));
  return format_text("%.2f GiB", b / (1024.0 * 1024 * 1024));
}

// A count per second: "41.47 M", "3.20 k", "950".
inline std::string format_rate(double per_second) {
  if (per_second >= 1e6) return format_text("%.2f M", per_second / 1e6);
  if (per_second >= 1e3) return format_text("%.2f k", per_second / 1e3);
  return format_text("%.0f", per_second);
}

// "min 210 ns  p50 340 ns  p90 380 ns  p99 441 ns  p99.9 571 ns  max 1.28 ms
// mean 351 ns" of samples in nanoseconds (sorted here; "" if none). A
// percentile is the nearest-rank sample.
inline std::string latency_summary(std::vector<std::int64_t>& ns) {
  if (ns.empty()) return {};
  std::sort(ns.begin(), ns.end());
  const auto at = [&](double p) {
    const auto i = static_cast<std::size_t>(p / 100.0 * static_cast<double>(ns.size() - 1) + 0.5);
    return format_ns(static_cast<double>(ns[std::min(i, ns.size() - 1)]));
  };
  double sum = 0;
  for (const auto v : ns) sum += static_cast<double>(v);
  return "min " + at(0) + "  p50 " + at(50) + "  p90 " + at(90) + "  p99 " + at(99) + "  p99.9 " +
         at(99.9) + "  max " + at(100) + "  mean " +
         format_ns(sum / static_cast<double>(ns.size()));
}

}  // namespace shmring::harness
