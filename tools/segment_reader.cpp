#include "segment_reader.hpp"

#include <fcntl.h>
#include <fmt/format.h>
#include <unistd.h>

#include <algorithm>
#include <charconv>
#include <cstring>
#include <vector>

#include "shmring/atomic.hpp"
#include "shmring/low_latency.hpp"
#include "shmring/ring_view.hpp"

namespace ring_inspect {

namespace at = shmring::atomic;

shmring::OpenOptions inspect_options() {
  shmring::OpenOptions o;
  o.read_only = true;
  o.init_timeout = std::chrono::milliseconds(50);
  o.allow_foreign_owner = true;
  return o;
}

std::uint64_t Snapshot::fill() const {
  const std::int64_t l = lag();
  if (l <= 0) return 0;
  return std::min<std::uint64_t>(static_cast<std::uint64_t>(l), geometry.capacity);
}

double Snapshot::fill_percent() const {
  return geometry.capacity == 0
             ? 0.0
             : 100.0 * static_cast<double>(fill()) / static_cast<double>(geometry.capacity);
}

bool Snapshot::creator_alive() const {
  return shmring::process::alive(
      shmring::process::pack({header.creator_pid, header.creator_start_time}));
}

std::string Snapshot::in_use() const {
  std::vector<std::string> why;
  if (spsc()) {
    if (producer.owner_alive())
      why.push_back(fmt::format("producer pid {} alive", producer.owner_pid()));
    if (consumer.owner_alive())
      why.push_back(fmt::format("consumer pid {} alive", consumer.owner_pid()));
  } else {
    if (producer.attached != 0)
      why.push_back(fmt::format("{} producer(s) attached", producer.attached));
    if (consumer.attached != 0)
      why.push_back(fmt::format("{} consumer(s) attached", consumer.attached));
  }
  if (producer.gpu_attached != 0)
    why.push_back(fmt::format("{} GPU producer(s) attached", producer.gpu_attached));
  if (consumer.gpu_attached != 0)
    why.push_back(fmt::format("{} GPU consumer(s) attached", consumer.gpu_attached));
  return fmt::format("{}", fmt::join(why, ", "));
}

namespace {

Side read_side(const shmring::SideBlock& b, const shmring::WaitBlock& w,
               const shmring::ClaimTable& claims) {
  Side s;
  s.position = at::load_acquire(&b.position);
  s.notify = at::load_relaxed(&b.notify);
  s.attached = at::load_relaxed(&b.attached);
  s.owner_identity = at::load_acquire(&b.owner.identity);
  s.owner_start_time = at::load_relaxed(&b.owner.start_time);
  s.gpu_attached = at::load_relaxed(&b.gpu_attached);
  s.gpu_flags = at::load_relaxed(&b.gpu_flags);
  s.waiters = at::load_relaxed(&w.waiters);
  s.abandoned = at::load_relaxed(&b.abandoned);
  s.incarnation = at::load_relaxed(&b.incarnation);
  for (const shmring::ClaimRecord& r : claims.records) {
    const std::uint64_t holder = at::load_acquire(&r.holder);
    if (holder != 0) s.claimants.push_back(Claimant{holder, at::load_acquire(&r.low)});
  }
  return s;
}

}  // namespace

Snapshot snapshot(const shmring::Segment& seg) {
  const auto* c = reinterpret_cast<const shmring::ControlArea*>(seg.base());
  Snapshot s;
  s.name = seg.name();
  std::memcpy(&s.header, &c->header, sizeof s.header);
  s.geometry = seg.geometry();
  // Consumer first: read in this order, head - tail never goes negative on a
  // healthy ring that moves while we look.
  s.consumer = read_side(c->consumer, c->consumer_wait, c->consumer_claims);
  s.producer = read_side(c->producer, c->producer_wait, c->producer_claims);
  return s;
}

SlotView slot_at(const shmring::Segment& seg, std::uint64_t pos) {
  const auto& g = seg.geometry();
  SlotView v{};
  v.position = pos;
  v.index = pos & g.mask();
  const std::byte* slot = seg.base() + g.slots_offset + v.index * g.slot_stride;
  const auto* t = reinterpret_cast<const shmring::SlotTrailer*>(slot + g.trailer_offset());
  v.committed = at::load_acquire(&t->committed);
  v.length_raw = at::load_relaxed(&t->length);
  v.flags = at::load_relaxed(&t->flags);
  v.released = at::load_relaxed(&t->released);
  v.length = static_cast<std::uint32_t>(std::min<std::uint64_t>(v.length_raw, g.slot_size));
  v.is_committed = v.committed != 0 && v.committed == pos + 1;
  v.payload = slot;
  return v;
}

const char* LowLatencySlot::state() const {
  // Current first (a lap flag is never 0, so a current slot was written).
  if (!current()) return written() ? "other lap" : "not written";
  if (!length_ok()) return "corrupt length";
  return mismatched == 0 ? "complete" : "incomplete";
}

namespace {

const std::uint64_t* slot_words(const shmring::Segment& seg, std::uint64_t pos) {
  return shmring::low_latency::words(shmring::RingView(seg.base(), seg.geometry()), pos);
}

// Word 0's length, clamped to the slot size.
std::uint32_t low_latency_length(const shmring::Segment& seg, std::uint64_t pos) {
  const auto length = static_cast<std::uint32_t>(at::load_relaxed(slot_words(seg, pos)));
  return static_cast<std::uint32_t>(std::min<std::uint64_t>(length, seg.geometry().slot_size));
}

}  // namespace

LowLatencySlot low_latency_slot_at(const shmring::Segment& seg, std::uint64_t pos,
                                   std::uint64_t max_bytes) {
  namespace ll = shmring::low_latency;
  const auto& g = seg.geometry();
  LowLatencySlot v;
  v.position = pos;
  v.index = pos & g.mask();
  // The slot holds low_latency_words(slot_size) words (the geometry was
  // validated by open, so they lie inside the slot's stride).
  const std::uint64_t slot_words_n = shmring::low_latency_words(g.slot_size);
  const std::uint64_t* w = slot_words(seg, pos);
  const std::uint64_t w0 = at::load_relaxed(w);
  v.flag = static_cast<std::uint32_t>(w0 >> 32);
  v.incarnation = v.flag >> ll::kLapBits;
  v.lap_flag = v.flag & ll::kLapMask;
  // The library's own formula (lap mod (2^24 - 1) + 1), never a copy of it.
  v.expected_lap_flag = ll::lap_flag(shmring::RingView(seg.base(), g), pos);
  v.length_raw = static_cast<std::uint32_t>(w0);
  v.length = static_cast<std::uint32_t>(std::min<std::uint64_t>(v.length_raw, g.slot_size));
  v.words = std::min(ll::message_words(v.length), slot_words_n);
  const std::uint64_t keep = std::min<std::uint64_t>(v.length, max_bytes);
  v.data.reserve(keep);
  for (std::uint64_t k = 1; k < v.words; ++k) {
    const std::uint64_t x = at::load_relaxed(w + k);
    if (static_cast<std::uint32_t>(x >> 32) != v.flag) ++v.mismatched;
    const auto d = static_cast<std::uint32_t>(x);
    for (std::uint64_t b = 0; b < 4 && v.data.size() < keep; ++b) {
      v.data.push_back(static_cast<unsigned char>(d >> (8 * b)));
    }
  }
  return v;
}

double mean_length(const shmring::Segment& seg, std::uint64_t position) {
  const shmring::RingView view(seg.base(), seg.geometry());
  const std::uint64_t n = std::min<std::uint64_t>({position, 64, view.capacity()});
  if (n == 0) return 0.0;
  std::uint64_t total = 0;
  for (std::uint64_t p = position - n; p < position; ++p) {
    // Low-latency slots keep the length in word 0; their trailers are unused.
    total += view.low_latency() ? low_latency_length(seg, p) : view.read_slot(p).size;
  }
  return static_cast<double>(total) / static_cast<double>(n);
}

bool has_shmring_magic(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_NOFOLLOW | O_CLOEXEC | O_NONBLOCK);
  if (fd < 0) return false;
  std::uint64_t magic = 0;
  const ssize_t n = ::pread(fd, &magic, sizeof magic, 0);
  ::close(fd);
  return n == static_cast<ssize_t>(sizeof magic) && magic == shmring::kMagic;
}

std::optional<shmring::process::Identity> init_file_creator(std::string_view name) {
  if (name.substr(0, shmring::kInitFilePrefix.size()) != shmring::kInitFilePrefix) {
    return std::nullopt;
  }
  name.remove_prefix(shmring::kInitFilePrefix.size());
  // <pid>.<start time>.<counter>, all decimal.
  std::uint64_t fields[3] = {};
  for (int i = 0; i < 3; ++i) {
    const auto [end, ec] = std::from_chars(name.data(), name.data() + name.size(), fields[i]);
    if (ec != std::errc{} || end == name.data()) return std::nullopt;
    name.remove_prefix(static_cast<std::size_t>(end - name.data()));
    if (i < 2) {
      if (name.empty() || name.front() != '.') return std::nullopt;
      name.remove_prefix(1);
    }
  }
  if (!name.empty() || fields[0] == 0 || fields[0] > 0x7fffffffu) return std::nullopt;
  return shmring::process::Identity{static_cast<std::uint32_t>(fields[0]), fields[1]};
}

}  // namespace ring_inspect
