// Fuzz target: ring-inspect's reader (tools/segment_reader.hpp) over a whole
// segment file. The input is written under a per-process name in /dev/shm and
// opened as the tool opens rings (by pread, never mapped); every file the
// library's own open accepts must be accepted too. When it is, the reader
// takes its snapshot, summarises owners and fill, walks the trailers
// of a lap of slots (or, where the header's flags name low-latency slots,
// decodes their words) and averages lengths, and everything it hands out
// must stay within the slot size. The slot format, like
// the rest of the geometry, comes from the input's header (its flags word).
// Broadcast rings: every subscriber block the snapshot holds (as many as the
// validated header says), its state's name and lag, and the trailers of
// slots from its cursor.
// The first bytes of the input, as a name, also go through the parser of
// creators' private names.
#include <algorithm>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <system_error>

#include "fuzz_check.hpp"
#include "segment_reader.hpp"
#include "shmring/low_latency.hpp"
#include "shmring/segment.hpp"

namespace {

using namespace shmring;
using fuzz::check;

// More slots than this find nothing new and only slow the fuzzer.
constexpr std::uint64_t kMaxWalk = 256;

// A low-latency slot's words, decoded as `dump` does: the words read lie in
// the slot, and the length and the bytes reassembled stay within the slot
// size, whatever word 0 says.
void read_low_latency(const ring_inspect::SegmentFile& file, std::uint64_t position) {
  const Geometry& g = file.geometry();
  const std::uint64_t slot_words = low_latency_words(g.slot_size);
  check(g.slot_size <= kMaxLowLatencySlotSize && g.kind == RingKind::spsc);
  check(8 * slot_words <= g.slot_stride);
  const std::uint64_t index = position & g.mask();
  for (const std::uint64_t max_bytes : {std::uint64_t{0}, std::uint64_t{5}, g.slot_size}) {
    const ring_inspect::LowLatencySlot v =
        ring_inspect::low_latency_slot_at(file, position, max_bytes);
    check(v.index == index);
    check(v.length <= g.slot_size && v.length <= v.length_raw);
    check(v.length_ok() == (v.length_raw <= g.slot_size));
    check(v.words >= 1 && v.words <= slot_words);
    check(v.mismatched < v.words);
    check(v.data.size() == std::min<std::uint64_t>(v.length, max_bytes));
    check(v.incarnation <= 0xff && v.lap_flag <= low_latency::kLapMask);
    check(v.complete() == (std::string_view(v.state()) == "complete"));
    check(!v.complete() || v.current());
  }
}

// What `show` prints for a broadcast ring's subscriber blocks, and slots
// read from each cursor as `dump` would read them.
void read_subscribers(const ring_inspect::SegmentFile& file, const ring_inspect::Snapshot& s) {
  const Geometry& g = file.geometry();
  if (!s.broadcast()) {
    check(s.subscribers.empty());
    return;
  }
  check(g.subscribers >= 1 && g.subscribers <= kMaxSubscribers);
  check(s.subscribers.size() == g.subscribers);
  check(s.lag() >= 0);  // the slowest live active subscriber's, 0 with none
  // Fewer slots per block than a lap: up to 64 blocks of them.
  const std::uint64_t walk = std::min<std::uint64_t>(g.capacity, 8);
  for (std::uint32_t i = 0; i < s.subscribers.size(); ++i) {
    const ring_inspect::Subscriber& sub = s.subscribers[i];
    check(sub.index == i);
    const std::string_view state = sub.state_name();
    check(!state.empty());
    check(!sub.evicted || sub.session != 0);
    (void)s.lag(sub);
    (void)sub.pid();
    for (std::uint64_t k = 0; k < walk; ++k) {
      const ring_inspect::SlotView v = ring_inspect::slot_at(file, sub.cursor + k, g.slot_size);
      check(v.index < g.capacity && v.length <= g.slot_size && v.data.size() == v.length);
    }
    const double mean = ring_inspect::mean_length(file, sub.cursor);
    check(mean >= 0.0 && mean <= static_cast<double>(g.slot_size));
  }
}

void read_segment(const ring_inspect::SegmentFile& file) {
  const Geometry& g = file.geometry();
  const ring_inspect::Snapshot s = ring_inspect::snapshot(file);
  check(s.geometry == g);
  check(s.fill() <= g.capacity);
  const double percent = s.fill_percent();
  check(percent >= 0.0 && percent <= 100.0);
  (void)s.lag();
  (void)s.in_use();
  (void)s.creator_alive();
  (void)s.producer.owner_state();
  (void)s.consumer.owner_state();
  read_subscribers(file, s);

  const std::uint64_t walk = std::min(g.capacity, kMaxWalk);
  for (const std::uint64_t from : {s.consumer.position, s.producer.position - walk}) {
    for (std::uint64_t i = 0; i < walk; ++i) {
      const ring_inspect::SlotView v = ring_inspect::slot_at(file, from + i, g.slot_size);
      check(v.index < g.capacity);
      check(v.length <= g.slot_size);
      check(v.length <= v.length_raw);
      check(v.data.size() == v.length);
      if (g.format == SlotFormat::low_latency) read_low_latency(file, from + i);
    }
  }
  for (const std::uint64_t at : {s.consumer.position, s.producer.position}) {
    const double mean = ring_inspect::mean_length(file, at);
    check(mean >= 0.0 && mean <= static_cast<double>(g.slot_size));
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  // A directory entry's name: at most 255 bytes, no '/' or NUL.
  const std::string_view as_name(reinterpret_cast<const char*>(data),
                                 std::min<std::size_t>(size, 64));
  if (ring_inspect::is_init_file(as_name)) check(as_name.size() >= kInitFilePrefix.size());

  if (size == 0) return 0;
  const fuzz::SegmentFile file("shmring_fuzz_inspect_", data, size);
  if (!file.ok()) return 0;
  // The tool's 50 ms wait for a creator would only slow the fuzzer.
  ring_inspect::OpenFailure failure;
  const auto inspected =
      ring_inspect::SegmentFile::open(file.name(), std::chrono::milliseconds(0), failure);
  check(static_cast<bool>(inspected) == failure.message.empty());
  OpenOptions o;
  o.read_only = true;
  o.allow_foreign_owner = true;
  o.init_timeout = std::chrono::milliseconds(0);
  std::error_code ec;
  const Segment seg = Segment::open(file.name(), o, ec);
  // The tool shows every ring the library opens (it may be more lenient).
  if (seg) check(static_cast<bool>(inspected));
  if (inspected) {
    check(inspected->geometry().segment_size == size);
    read_segment(*inspected);
  }
  return 0;
}
