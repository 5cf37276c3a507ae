// The report of one run: markdown on stdout, and JSON with --json.
#pragma once

#include <cstdio>
#include <ostream>
#include <string>
#include <vector>

#include "measurements.hpp"

namespace gpu_bench {

struct Report {
  const Context& ctx;
  const Ceilings& ceil;
  const std::vector<Throughput>& tp;
  const std::vector<RoundTrip>& rtt;
  std::string hostname;
  std::string started;

  // Every message of every row verified, and nothing failed.
  bool all_verified() const;
  void markdown(std::FILE* f) const;
  void json(std::ostream& os) const;
};

}  // namespace gpu_bench
