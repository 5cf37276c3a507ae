// The CPUs a process may run on, a CPU list from a command line or the
// environment, and pinning to one CPU.
#pragma once

#include <sched.h>

#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

namespace shmring::harness {

// The CPUs this process may run on (its affinity mask), lowest first; empty
// if the mask cannot be read.
inline std::vector<int> allowed_cpus() {
  std::vector<int> cpus;
  cpu_set_t set;
  CPU_ZERO(&set);
  if (::sched_getaffinity(0, sizeof set, &set) != 0) return cpus;
  for (int c = 0; c < CPU_SETSIZE; ++c) {
    if (CPU_ISSET(c, &set)) cpus.push_back(c);
  }
  return cpus;
}

// Pins the calling thread (the process, if it has one thread) to `cpu`.
// False, with errno set, if the kernel refused.
inline bool pin_to_cpu(int cpu) noexcept {
  if (cpu < 0 || cpu >= CPU_SETSIZE) return false;
  cpu_set_t set;
  CPU_ZERO(&set);
  CPU_SET(cpu, &set);
  return ::sched_setaffinity(0, sizeof set, &set) == 0;
}

// "a,b[,c,...]", ranges "a-b" allowed, in the order given. Throws
// std::invalid_argument naming the text when it is not such a list.
inline std::vector<int> parse_cpu_list(std::string_view text) {
  const auto bad = [&](const char* what) {
    return std::invalid_argument(std::string(what) + " '" + std::string(text) + "'");
  };
  std::vector<int> cpus;
  std::size_t i = 0;
  auto number = [&](int& out) {
    if (i >= text.size() || text[i] < '0' || text[i] > '9') return false;
    out = 0;
    while (i < text.size() && text[i] >= '0' && text[i] <= '9') {
      out = out * 10 + (text[i++] - '0');
      if (out >= CPU_SETSIZE) return false;
    }
    return true;
  };
  while (i < text.size()) {
    int first = 0;
    if (!number(first)) throw bad("bad CPU list");
    int last = first;
    if (i < text.size() && text[i] == '-') {
      ++i;
      if (!number(last) || last < first) throw bad("bad CPU range in");
    }
    for (int c = first; c <= last; ++c) cpus.push_back(c);
    if (i < text.size()) {
      if (text[i] != ',') throw bad("bad CPU list");
      ++i;
    }
  }
  if (cpus.empty()) throw bad("no CPU in the list");
  return cpus;
}

}  // namespace shmring::harness
