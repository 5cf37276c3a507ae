// Fuzz target: ring-inspect's reader (tools/segment_reader.hpp) over a whole
// segment file. The input is written under a per-process name in /dev/shm and
// opened as the tool opens rings (read-only); when open accepts it, the
// reader takes its snapshot, summarises owners and fill, walks the trailers
// of a lap of slots and averages lengths, and everything it hands out must
// lie inside the mapping and within the slot size. The first bytes of the
// input, as a name, also go through the parser of creators' private names.
#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <system_error>

#include "fuzz_check.hpp"
#include "segment_reader.hpp"
#include "shmring/segment.hpp"

namespace {

using namespace shmring;
using fuzz::check;
using fuzz::check_inside;
using fuzz::touch;

// More slots than this find nothing new and only slow the fuzzer.
constexpr std::uint64_t kMaxWalk = 256;

const std::string& segment_name() {
  static const std::string name = "shmring_fuzz_inspect_" + std::to_string(::getpid());
  return name;
}

bool write_file(const std::string& path, const std::uint8_t* data, std::size_t size) {
  const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0600);
  if (fd < 0) return false;
  std::size_t done = 0;
  while (done < size) {
    const ssize_t n = ::write(fd, data + done, size - done);
    if (n <= 0) break;
    done += static_cast<std::size_t>(n);
  }
  ::close(fd);
  return done == size;
}

void read_segment(const Segment& seg) {
  const Geometry& g = seg.geometry();
  const std::byte* lo = seg.base() + g.slots_offset;
  const std::byte* hi = seg.base() + seg.size();
  const ring_inspect::Snapshot s = ring_inspect::snapshot(seg);
  check(s.geometry == g);
  check(s.fill() <= g.capacity);
  const double percent = s.fill_percent();
  check(percent >= 0.0 && percent <= 100.0);
  (void)s.lag();
  (void)s.in_use();
  (void)s.creator_alive();
  (void)s.producer.owner_state();
  (void)s.consumer.owner_state();

  const std::uint64_t walk = std::min(g.capacity, kMaxWalk);
  for (const std::uint64_t from : {s.consumer.position, s.producer.position - walk}) {
    for (std::uint64_t i = 0; i < walk; ++i) {
      const ring_inspect::SlotView v = ring_inspect::slot_at(seg, from + i);
      check(v.index < g.capacity);
      check(v.length <= g.slot_size);
      check(v.length <= v.length_raw);
      check_inside(v.payload, v.length, lo, hi);
      touch(v.payload, v.length);
    }
  }
  for (const std::uint64_t at : {s.consumer.position, s.producer.position}) {
    const double mean = ring_inspect::mean_length(seg, at);
    check(mean >= 0.0 && mean <= static_cast<double>(g.slot_size));
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  // A directory entry's name: at most 255 bytes, no '/' or NUL.
  const std::string_view as_name(reinterpret_cast<const char*>(data),
                                 std::min<std::size_t>(size, 64));
  if (const auto creator = ring_inspect::init_file_creator(as_name)) {
    check(creator->pid != 0 && creator->pid <= 0x7fffffffu);
    check(as_name.substr(0, kInitFilePrefix.size()) == kInitFilePrefix);
  }

  if (size == 0) return 0;
  const std::string& name = segment_name();
  const std::string path = "/dev/shm/" + name;
  if (!write_file(path, data, size)) {
    ::unlink(path.c_str());
    return 0;
  }
  OpenOptions o = ring_inspect::inspect_options();
  o.init_timeout = std::chrono::milliseconds(0);  // the tool's 50 ms would only slow the fuzzer
  std::error_code ec;
  Segment seg = Segment::open(name, o, ec);
  check(static_cast<bool>(seg) == !ec);
  if (seg) {
    check(seg.read_only());
    check(seg.size() == size);
    read_segment(seg);
  }
  ::unlink(path.c_str());
  return 0;
}
