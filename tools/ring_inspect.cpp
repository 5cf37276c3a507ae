// ring-inspect: the operator's view of the shmring segments in /dev/shm.
//
//   ring-inspect list [--json]                       # every segment, found by its magic
//   ring-inspect show NAME [--json]                  # header, positions, owners, waiters
//   ring-inspect dump NAME [--from POS] [--count N] [--json]  # low-latency slots: decoded words
//   ring-inspect remove NAME [--force]               # unlink, refused while in use
//   ring-inspect watch NAME [--interval MS] [--iterations N]
//   ring-inspect gc [--prefix P] [--dry-run]         # unlink abandoned segments
//
// Segments are read with pread, never mapped (segment_reader.hpp): the tool
// never writes to a live ring, and a peer that truncates a segment while it is
// read cannot crash the tool (a read past the end of a mapping is SIGBUS); the
// command reports "NAME: segment shrank to N bytes, the header says M" and
// exits 1. watch, too, stops with that message and exit status 1: a shrunken
// segment is no longer a ring any process can use (its users die of SIGBUS or
// refuse it), so there is nothing left to watch, and a script watching it
// learns so from the status. remove and gc only unlink the name; processes
// that have the segment mapped keep their mapping.
//
// Exit status: 0 ok, 1 the segment is bad (or shrank while read) or the
// request was refused, 2 usage error.
//
// JSON output (--json) is one object per line, written as `"key": value`
// with one space after each colon and ", " between members, so that scripts
// may search for fields as well as parse them.
#include <dirent.h>
#include <fcntl.h>
#include <fmt/chrono.h>
#include <fmt/core.h>
#include <fmt/format.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <optional>
#include <string>
#include <string_view>
#include <system_error>
#include <vector>

#if defined(SHMRING_HAVE_CUDA)
#include "shmring/cuda/capabilities.hpp"
#endif
#include "segment_reader.hpp"
#include "shmring/error.hpp"
#include "shmring/layout.hpp"
#include "shmring/process.hpp"
#include "shmring/ring_view.hpp"
#include "shmring/segment.hpp"
#include "stop_signals.hpp"

namespace {

constexpr int kExitOk = 0;
constexpr int kExitBad = 1;
constexpr int kExitUsage = 2;

constexpr const char* kShmDir = "/dev/shm/";

using namespace ring_inspect;

// ---- JSON ------------------------------------------------------------------

std::string json_escape(std::string_view s) {
  std::string out;
  out.reserve(s.size() + 2);
  out += '"';
  for (const char ch : s) {
    const auto c = static_cast<unsigned char>(ch);
    switch (c) {
      case '"':
        out += "\\\"";
        break;
      case '\\':
        out += "\\\\";
        break;
      case '\n':
        out += "\\n";
        break;
      case '\r':
        out += "\\r";
        break;
      case '\t':
        out += "\\t";
        break;
      default:
        // Control characters and bytes that are not ASCII (a name need not be
        // UTF-8) are written as \u00XX, so the output is always valid JSON.
        if (c < 0x20 || c >= 0x7f) {
          out += fmt::format("\\u{:04x}", static_cast<unsigned>(c));
        } else {
          out += ch;
        }
    }
  }
  out += '"';
  return out;
}

// Builds one object: {"a": 1, "b": "x"}.
class JsonObject {
 public:
  JsonObject& raw(std::string_view key, std::string_view value) {
    if (!body_.empty()) body_ += ", ";
    body_ += json_escape(key);
    body_ += ": ";
    body_ += value;
    return *this;
  }
  JsonObject& num(std::string_view key, std::uint64_t v) { return raw(key, fmt::format("{}", v)); }
  JsonObject& str(std::string_view key, std::string_view v) { return raw(key, json_escape(v)); }
  JsonObject& boolean(std::string_view key, bool v) { return raw(key, v ? "true" : "false"); }
  JsonObject& null(std::string_view key) { return raw(key, "null"); }
  std::string text() const { return "{" + body_ + "}"; }

 private:
  std::string body_;
};

std::string json_array(const std::vector<std::string>& items) {
  return "[" + fmt::format("{}", fmt::join(items, ", ")) + "]";
}

// ---- reading a segment -----------------------------------------------------

std::string strip_slash(std::string_view name) {
  if (!name.empty() && name.front() == '/') name.remove_prefix(1);
  return std::string(name);
}

// A creator still initialising gets this long to finish.
constexpr std::chrono::milliseconds kInitTimeout{50};

// Opens `name` for reading; on failure prints "NAME: message" (or stores the
// message in `failure`) and returns nothing.
std::optional<SegmentFile> open_readonly(std::string_view name, OpenFailure* failure = nullptr) {
  OpenFailure f;
  auto file = SegmentFile::open(name, kInitTimeout, f);
  if (!file) {
    if (failure != nullptr) {
      *failure = std::move(f);
    } else {
      fmt::print(stderr, "{}: {}\n", strip_slash(name), f.message);
    }
  }
  return file;
}

std::string format_time_ns(std::uint64_t ns) {
  const auto secs = static_cast<std::time_t>(ns / 1'000'000'000ull);
  return fmt::format("{:%Y-%m-%d %H:%M:%S}.{:03} UTC", fmt::gmtime(secs),
                     (ns / 1'000'000ull) % 1000);
}

const char* pos_name(bool spsc, bool producer) {
  if (spsc) return producer ? "head" : "tail";
  return producer ? "enqueue" : "dequeue";
}

// ---- list ------------------------------------------------------------------

std::string side_summary(const Snapshot& s, const Side& side) {
  std::string out;
  if (s.spsc()) {
    out = side.has_owner() ? fmt::format("{} {}", side.owner_pid(), side.owner_state()) : "-";
  } else {
    out = fmt::format("{} attached", side.attached);
  }
  if (side.gpu_attached != 0) out += fmt::format(" +{} gpu", side.gpu_attached);
  return out;
}

// A creator's private file (see shmring::kInitFilePrefix): what becomes of it.
std::string init_file_state(bool in_progress) {
  return in_progress ? "segment being created"
                     : "left by a creator that died creating a segment (gc removes it)";
}

int cmd_list(bool json) {
  std::vector<std::string> names;
  std::vector<std::pair<std::string, bool>> init_files;  // name, in progress
  if (DIR* d = ::opendir(kShmDir)) {
    while (const dirent* e = ::readdir(d)) {
      const std::string n = e->d_name;
      if (n == "." || n == "..") continue;
      const std::string path = kShmDir + n;
      struct stat st {};
      if (::lstat(path.c_str(), &st) != 0 || !S_ISREG(st.st_mode)) continue;
      if (is_init_file(n)) {
        init_files.emplace_back(n, init_file_in_progress(path));
      } else if (has_shmring_magic(path)) {
        names.push_back(n);
      }
    }
    ::closedir(d);
  } else {
    fmt::print(stderr, "cannot read {}: {}\n", kShmDir, std::strerror(errno));
    return kExitBad;
  }
  std::sort(names.begin(), names.end());
  std::sort(init_files.begin(), init_files.end(),
            [](const auto& a, const auto& b) { return a.first < b.first; });

  struct Row {
    std::string name;
    std::optional<Snapshot> snap;
    std::string error;
  };
  std::vector<Row> rows;
  for (const auto& n : names) {
    Row r{n, std::nullopt, {}};
    OpenFailure failure;
    if (auto file = open_readonly(n, &failure)) {
      try {
        r.snap = snapshot(*file);
      } catch (const ReadError& e) {
        r.error = e.detail();  // shrank (or changed) since it was opened
      }
    } else if (failure.not_found) {
      continue;  // removed since the directory was read: no longer there to list
    } else {
      r.error = failure.message;
    }
    rows.push_back(std::move(r));
  }

  if (json) {
    std::vector<std::string> items;
    for (const auto& r : rows) {
      JsonObject o;
      o.str("name", r.name);
      if (!r.snap) {
        o.str("status", "error").str("error", r.error);
      } else {
        const auto& s = *r.snap;
        o.str("status", "ok")
            .str("kind", shmring::to_string(s.geometry.kind))
            .num("slot_size", s.geometry.slot_size)
            .num("capacity", s.geometry.capacity)
            .num("fill", s.fill())
            .str("producer", side_summary(s, s.producer))
            .str("consumer", side_summary(s, s.consumer))
            .str("slot_format", shmring::to_string(s.geometry.format));
      }
      items.push_back(o.text());
    }
    for (const auto& [n, in_progress] : init_files) {
      items.push_back(JsonObject()
                          .str("name", n)
                          .str("status", in_progress ? "initialising" : "abandoned")
                          .text());
    }
    fmt::print("{}\n", JsonObject().raw("segments", json_array(items)).text());
    return kExitOk;
  }

  std::size_t w = 4;
  for (const auto& r : rows) w = std::max(w, r.name.size());
  fmt::print("{:<{}}  {:<4}  {:>9}  {:>10}  {:>10}  {:<16}  {:<16}  {}\n", "NAME", w, "KIND",
             "SLOT", "CAPACITY", "FILL", "PRODUCER", "CONSUMER", "ABI");
  for (const auto& r : rows) {
    if (!r.snap) {
      fmt::print("{:<{}}  {:<4}  {:>9}  {:>10}  {:>10}  {:<16}  {:<16}  error: {}\n", r.name, w,
                 "-", "-", "-", "-", "-", "-", r.error);
      continue;
    }
    const auto& s = *r.snap;
    fmt::print("{:<{}}  {:<4}  {:>9}  {:>10}  {:>10}  {:<16}  {:<16}  ok (v{})\n", r.name, w,
               shmring::to_string(s.geometry.kind), s.geometry.slot_size, s.geometry.capacity,
               s.fill(), side_summary(s, s.producer), side_summary(s, s.consumer),
               s.header.abi_version);
  }
  for (const auto& [n, creator] : init_files) fmt::print("{}: {}\n", n, init_file_state(creator));
  if (rows.empty() && init_files.empty()) fmt::print("(no shmring segments in {})\n", kShmDir);
  return kExitOk;
}

// ---- show ------------------------------------------------------------------

// MPMC: who holds claim records, who died holding claims, what was recovered.
std::string claims_summary(const Side& side) {
  std::vector<std::string> live;
  std::vector<std::string> dead;
  for (const Claimant& c : side.claimants) {
    if (c.alive()) {
      live.push_back(c.holding() ? fmt::format("{} (claims from position {})", c.pid(), c.low)
                                 : fmt::format("{}", c.pid()));
    } else {
      dead.push_back(c.holding()
                         ? fmt::format("{} died holding claims from position {}", c.pid(), c.low)
                         : fmt::format("{} died holding none", c.pid()));
    }
  }
  return fmt::format(
      "claims: live pid(s) {}; dead {}; {} position(s) recovered from dead processes",
      live.empty() ? "none" : fmt::format("{}", fmt::join(live, ", ")),
      dead.empty() ? "none" : fmt::format("{}", fmt::join(dead, ", ")), side.abandoned);
}

std::string side_json(const Snapshot& s, const Side& side) {
  JsonObject o;
  o.num("position", side.position).num("attached", side.attached);
  // SPSC producer: bumped by every producer that attaches (its low 8 bits
  // are in the flags of low-latency slots).
  if (s.spsc() && &side == &s.producer) o.num("incarnation", side.incarnation);
  if (side.has_owner()) {
    o.num("owner_pid", side.owner_pid()).num("owner_start_time", side.owner_start_time);
  } else {
    o.null("owner_pid").null("owner_start_time");
  }
  o.str("owner_state", side.owner_state())
      .num("waiters", side.waiters)
      .num("event_waiters", side.event_waiters)
      .num("notify", side.notify)
      .num("gpu_attached", side.gpu_attached)
      .num("gpu_flags", side.gpu_flags);
  if (!s.spsc()) {
    std::vector<std::string> claimants;
    for (const Claimant& c : side.claimants) {
      JsonObject co;
      co.num("pid", c.pid()).boolean("alive", c.alive());
      if (c.holding()) {
        co.num("claims_from", c.low);
      } else {
        co.null("claims_from");
      }
      claimants.push_back(co.text());
    }
    o.num("abandoned", side.abandoned).raw("claimants", json_array(claimants));
  }
  return o.text();
}

// What a GPU of this host may do on a ring of `kind`: whether this build has
// CUDA, the device, and whether CPU and GPU agents may share an MPMC side.
std::string gpu_summary([[maybe_unused]] shmring::RingKind kind) {
#if defined(SHMRING_HAVE_CUDA)
  const int devices = shmring::cuda::device_count();
  if (devices == 0) return "no CUDA device visible on this host";
  std::error_code ec;
  const shmring::cuda::DeviceCapabilities caps = shmring::cuda::query(0, ec);
  if (ec) return "CUDA device 0: " + shmring::last_error_message();
  std::string sharing = "loads and stores only: either side may be a GPU";
  if (kind == shmring::RingKind::mpmc) {
    sharing = caps.host_native_atomics
                  ? "host-native atomics: CPU and GPU agents may share a side"
                  : "no host-native atomics: a side is either all CPU or all GPU";
  }
  return fmt::format("{} device(s); device 0 {} ({}, registration with cudaHostRegister{}); {}",
                     devices, caps.name, caps.integrated ? "integrated" : "discrete",
                     caps.host_pointer_for_registered ? ", same address on the GPU" : "", sharing);
#else
  return "this ring-inspect was built without CUDA";
#endif
}

// Broadcast rings: the delivery mode and every subscriber block; null for
// the other kinds.
std::string broadcast_json(const Snapshot& s) {
  if (!s.broadcast()) return "null";
  std::vector<std::string> subs;
  for (const Subscriber& sub : s.subscribers) {
    JsonObject o;
    o.num("index", sub.index).str("state", sub.state_name()).num("cursor", sub.cursor);
    o.raw("lag", fmt::format("{}", s.lag(sub)));
    if (sub.holder != 0) {
      o.num("pid", sub.pid()).num("start_time", sub.start_time);
    } else {
      o.null("pid").null("start_time");
    }
    o.boolean("alive", sub.live)
        .num("session", sub.session)
        .num("joined_at", sub.joined_at)
        .num("lapped", sub.lapped)
        .num("lost", sub.lost);
    subs.push_back(o.text());
  }
  JsonObject o;
  o.str("delivery", shmring::to_string(s.geometry.delivery))
      .num("subscriber_blocks", s.geometry.subscribers)
      .num("floor", s.floor)
      .raw("subscribers", json_array(subs));
  return o.text();
}

// One line per subscriber block that was ever used (free ones are counted).
void print_subscribers(const Snapshot& s) {
  const shmring::Geometry& g = s.geometry;
  std::size_t unused = 0;
  for (const Subscriber& sub : s.subscribers)
    unused += sub.state == shmring::kSubscriberFree && !sub.live;
  fmt::print("delivery      {}{}\n", shmring::to_string(g.delivery),
             g.delivery == shmring::Delivery::lossy
                 ? " (the producer never waits; lapped subscribers skip ahead)"
                 : fmt::format(" (the producer waits for the slowest; floor {})", s.floor));
  fmt::print("subscribers   {} blocks, {} never used\n", g.subscribers, unused);
  for (const Subscriber& sub : s.subscribers) {
    if (sub.state == shmring::kSubscriberFree && !sub.live) continue;
    const std::string holder =
        sub.holder != 0 ? fmt::format("pid {} (start time {})", sub.pid(), sub.start_time)
                        : std::string("none");
    std::string line = fmt::format("  [{}] {:<14} cursor {} lag {} holder {}", sub.index,
                                   sub.state_name(), sub.cursor, s.lag(sub), holder);
    if (g.delivery == shmring::Delivery::lossy) {
      line += fmt::format(", lapped {} times, {} lost", sub.lapped, sub.lost);
    }
    fmt::print("{}\n", line);
  }
}

int cmd_show(const std::string& name, bool json) {
  auto file = open_readonly(name);
  if (!file) return kExitBad;
  const Snapshot s = snapshot(*file);
  const auto& h = s.header;
  const auto& g = s.geometry;
  if (json) {
    JsonObject o;
    o.str("name", s.name)
        .str("kind", shmring::to_string(g.kind))
        .num("abi_version", h.abi_version)
        .str("slot_format", shmring::to_string(g.format))
        .num("header_flags", h.flags)
        .num("capacity", g.capacity)
        .num("slot_size", g.slot_size)
        .num("slot_stride", g.slot_stride)
        .num("slots_offset", g.slots_offset)
        .num("segment_size", g.segment_size)
        .num("lanes", g.lanes)
        .num(pos_name(s.spsc(), true), s.producer.position)
        .num(pos_name(s.spsc(), false), s.consumer.position)
        .raw("lag", fmt::format("{}", s.lag()))
        .num("fill", s.fill())
        .raw("fill_percent", fmt::format("{:.1f}", s.fill_percent()))
        .raw("producer", side_json(s, s.producer))
        .raw("consumer", side_json(s, s.consumer))
        .raw("broadcast", broadcast_json(s))
        .num("creator_pid", h.creator_pid)
        .num("creator_start_time", h.creator_start_time)
        .boolean("creator_alive", s.creator_alive())
        .num("created_unix_ns", h.created_unix_ns)
        .str("created", format_time_ns(h.created_unix_ns))
        .str("gpu", gpu_summary(g.kind));
    fmt::print("{}\n", o.text());
    return kExitOk;
  }
  fmt::print("segment       {}{}\n", kShmDir, s.name);
  fmt::print("kind          {}\n", shmring::to_string(g.kind));
  fmt::print("abi version   {}\n", h.abi_version);
  fmt::print("slot format   {}\n",
             s.low_latency() ? "low_latency (messages as flagged 8-byte words; copy calls only)"
                             : "plain");
  fmt::print("capacity      {} slots of {} bytes (stride {}, slots at offset {})\n", g.capacity,
             g.slot_size, g.slot_stride, g.slots_offset);
  fmt::print("segment size  {} bytes\n", g.segment_size);
  fmt::print("created       {} by pid {} (start time {}, {})\n", format_time_ns(h.created_unix_ns),
             h.creator_pid, h.creator_start_time, s.creator_alive() ? "alive" : "gone");
  fmt::print("{:<13} {}\n", pos_name(s.spsc(), true), s.producer.position);
  fmt::print("{:<13} {}\n", pos_name(s.spsc(), false), s.consumer.position);
  fmt::print("lag           {}\n", s.lag());
  fmt::print("fill          {} / {} ({:.1f}%)\n", s.fill(), g.capacity, s.fill_percent());
  if (g.lanes != 0) {
    fmt::print("lanes         {} of {} slots, one producer each (enqueued / dequeued):",
               s.lanes.size(), g.capacity / g.lane_count());
    for (const Snapshot::Lane& l : s.lanes) fmt::print(" {}/{}", l.enqueued, l.dequeued);
    fmt::print("\n");
  }
  for (const bool prod : {true, false}) {
    const Side& side = prod ? s.producer : s.consumer;
    const char* label = prod ? "producer" : "consumer";
    std::string owner = "none";
    if (side.has_owner()) {
      owner = fmt::format("pid {} {} (start time {})", side.owner_pid(), side.owner_state(),
                          side.owner_start_time);
    }
    fmt::print(
        "{:<13} owner {}, {} attached, {} waiting ({} in a descriptor), {} GPU attached{}{}\n",
        label, owner, side.attached, side.waiters + side.event_waiters, side.event_waiters,
        side.gpu_attached,
        (side.gpu_flags & shmring::kGpuSharedCounter) != 0 ? " (GPU shared counter)" : "",
        s.spsc() && prod ? fmt::format(", incarnation {}", side.incarnation) : std::string());
    if (!s.spsc()) fmt::print("{:<13} {}\n", "", claims_summary(side));
  }
  if (s.broadcast()) print_subscribers(s);
  fmt::print("gpu           {}\n", gpu_summary(g.kind));
  return kExitOk;
}

// ---- dump ------------------------------------------------------------------

// `bytes` as hex and ASCII, 16 a line.
void print_hex(const std::vector<unsigned char>& bytes) {
  const std::uint64_t shown = bytes.size();
  for (std::uint64_t off = 0; off < shown; off += 16) {
    std::string hex;
    std::string ascii;
    for (std::uint64_t j = off; j < off + 16; ++j) {
      if (j < shown) {
        hex += fmt::format("{:02x} ", bytes[j]);
        ascii += (bytes[j] >= 0x20 && bytes[j] < 0x7f) ? static_cast<char>(bytes[j]) : '.';
      } else {
        hex += "   ";
      }
      if (j == off + 7) hex += ' ';
    }
    fmt::print("  {:08x}  {} |{}|\n", off, hex, ascii);
  }
}

std::string hex_string(const std::vector<unsigned char>& bytes) {
  std::string hex;
  for (const unsigned char b : bytes) hex += fmt::format("{:02x}", b);
  return hex;
}

// A low-latency slot: its words decoded (the trailer is unused there).
std::string dump_low_latency(const SegmentFile& file, std::uint64_t pos, std::uint64_t max_bytes,
                             bool json) {
  const LowLatencySlot v = low_latency_slot_at(file, pos, max_bytes);
  const bool truncated = v.data.size() < v.length;
  if (json) {
    return JsonObject()
        .num("position", v.position)
        .num("index", v.index)
        .str("state", v.state())
        .boolean("complete", v.complete())
        .num("flag", v.flag)
        .num("incarnation", v.incarnation)
        .num("lap_flag", v.lap_flag)
        .num("expected_lap_flag", v.expected_lap_flag)
        .num("length", v.length)
        .num("length_raw", v.length_raw)
        .boolean("length_clamped", !v.length_ok())
        .num("words", v.words)
        .num("mismatched_words", v.mismatched)
        .str("data_hex", hex_string(v.data))
        .boolean("truncated", truncated)
        .text();
  }
  fmt::print(
      "position {} (slot {}): {}, length {}{}, flag {:#010x} (incarnation {}, lap flag {}, "
      "this position's {}){}\n",
      v.position, v.index, v.state(), v.length,
      v.length_ok() ? std::string()
                    : fmt::format(" (word 0 says {}, clamped to the slot size)", v.length_raw),
      v.flag, v.incarnation, v.lap_flag, v.expected_lap_flag,
      v.mismatched != 0 ? fmt::format(", {} of {} words carry another flag", v.mismatched,
                                      v.words > 0 ? v.words - 1 : 0)
                        : std::string());
  print_hex(v.data);
  if (truncated) fmt::print("  ... {} more bytes\n", v.length - v.data.size());
  return {};
}

int cmd_dump(const std::string& name, std::optional<std::uint64_t> from,
             std::optional<std::uint64_t> count, std::uint64_t max_bytes, bool json) {
  auto file = open_readonly(name);
  if (!file) return kExitBad;
  const Snapshot s = snapshot(*file);
  const std::uint64_t start = from.value_or(s.consumer.position);
  std::uint64_t n = count.value_or(std::min<std::uint64_t>(s.fill(), 16));
  n = std::min(n, s.geometry.capacity);  // each slot at most once

  std::vector<std::string> items;
  for (std::uint64_t i = 0; i < n; ++i) {
    if (s.low_latency()) {
      std::string item = dump_low_latency(*file, start + i, max_bytes, json);
      if (json) items.push_back(std::move(item));
      continue;
    }
    // A copy: the ring may move under us; what was read is printed.
    const SlotView v = slot_at(*file, start + i, max_bytes);
    const std::vector<unsigned char>& bytes = v.data;
    const std::uint64_t shown = bytes.size();
    if (json) {
      const std::string hex = hex_string(bytes);
      JsonObject o;
      o.num("position", v.position)
          .num("index", v.index)
          .boolean("committed", v.is_committed)
          .boolean("skipped", (v.flags & shmring::kSlotSkipped) != 0)
          .num("length", v.length)
          .num("length_raw", v.length_raw)
          .boolean("length_clamped", v.length_raw > s.geometry.slot_size)
          .num("trailer_committed", v.committed)
          .num("trailer_released", v.released)
          .str("data_hex", hex)
          .boolean("truncated", shown < v.length);
      items.push_back(o.text());
      continue;
    }
    fmt::print("position {} (slot {}): {}{}, length {}{}\n", v.position, v.index,
               v.is_committed ? "committed" : "not committed",
               (v.flags & shmring::kSlotSkipped) != 0 ? ", skipped" : "", v.length,
               v.length_raw > s.geometry.slot_size
                   ? fmt::format(" (trailer says {}, clamped to the slot size)", v.length_raw)
                   : std::string());
    print_hex(bytes);
    if (shown < v.length) fmt::print("  ... {} more bytes\n", v.length - shown);
  }
  if (json) {
    JsonObject o;
    o.str("name", s.name)
        .str("slot_format", shmring::to_string(s.geometry.format))
        .num("from", start)
        .num("count", n)
        .num(pos_name(s.spsc(), true), s.producer.position)
        .num(pos_name(s.spsc(), false), s.consumer.position)
        .raw("slots", json_array(items));
    fmt::print("{}\n", o.text());
  } else if (n == 0) {
    fmt::print("(nothing to dump: {} {} = {} {}; use --from/--count)\n", pos_name(s.spsc(), true),
               s.producer.position, pos_name(s.spsc(), false), s.consumer.position);
  }
  return kExitOk;
}

// ---- remove ----------------------------------------------------------------

int cmd_remove(const std::string& name, bool force) {
  std::string error;
  std::string busy;
  OpenFailure failure;
  auto file = open_readonly(name, &failure);
  error = failure.message;
  if (file) {
    try {
      busy = snapshot(*file).in_use();
    } catch (const ReadError& e) {
      error = e.detail();  // shrank since it was opened: damaged
      file.reset();
    }
  }
  if (!file) {
    // A damaged segment cannot say who uses it: only --force removes it.
    struct stat st {};
    const bool exists = ::lstat((kShmDir + strip_slash(name)).c_str(), &st) == 0;
    if (!exists || !force) {
      fmt::print(stderr, "{}: {}\n", strip_slash(name), error);
      if (exists)
        fmt::print(stderr, "{}: not removed (use --force to remove it anyway)\n",
                   strip_slash(name));
      return kExitBad;
    }
  } else {
    file.reset();
    if (!busy.empty() && !force) {
      fmt::print(stderr, "{}: in use ({}); not removed (use --force to remove it anyway)\n",
                 strip_slash(name), busy);
      return kExitBad;
    }
  }
  std::error_code ec;
  shmring::Segment::unlink(name, ec);
  if (ec) {
    std::string msg = shmring::last_error_message();
    fmt::print(stderr, "{}: {}\n", strip_slash(name), msg.empty() ? ec.message() : msg);
    return kExitBad;
  }
  fmt::print("removed {}{}\n", kShmDir, strip_slash(name));
  return kExitOk;
}

// ---- watch -----------------------------------------------------------------

// Ctrl-C (SIGINT) ends the watch after the current sample, with exit status
// 0: the wait between samples is a wait for SIGINT (stop_signals.hpp).
using shmring::tools::StopSignals;

int watch_samples(const SegmentFile& file, std::uint64_t interval_ms, std::uint64_t iterations,
                  bool json, bool spsc, StopSignals& interrupt);

int cmd_watch(const std::string& name, std::uint64_t interval_ms, std::uint64_t iterations,
              bool json) {
  auto file = open_readonly(name);
  if (!file) return kExitBad;
  StopSignals interrupt{SIGINT};
  const bool spsc = file->geometry().kind == shmring::RingKind::spsc;
  if (!json) {
    fmt::print("{:>8}  {:>14}  {:>14}  {:>10}  {:>12}  {:>12}  {:>10}  {:<16}  {:<16}\n", "SECONDS",
               pos_name(spsc, true), pos_name(spsc, false), "FILL", "IN/S", "OUT/S", "OUT MB/S",
               "PRODUCER", "CONSUMER");
  }
  // A segment that shrank (or whose header changed) ends the watch: see the
  // top of this file. Samples already printed stay on stdout; the message
  // goes to stderr.
  try {
    return watch_samples(*file, interval_ms, iterations, json, spsc, interrupt);
  } catch (const ReadError& e) {
    std::fflush(stdout);
    fmt::print(stderr, "{}; watch stopped\n", e.what());
    return kExitBad;
  }
}

int watch_samples(const SegmentFile& file, std::uint64_t interval_ms, std::uint64_t iterations,
                  bool json, bool spsc, StopSignals& interrupt) {
  const auto t0 = std::chrono::steady_clock::now();
  Snapshot prev = snapshot(file);
  auto prev_t = t0;
  for (std::uint64_t i = 0; iterations == 0 || i < iterations; ++i) {
    if (i != 0 && interrupt.wait_until(prev_t + std::chrono::milliseconds(interval_ms))) break;
    const Snapshot s = snapshot(file);
    const auto now = std::chrono::steady_clock::now();
    const double dt = std::chrono::duration<double>(now - prev_t).count();
    const auto rate = [dt](std::uint64_t a, std::uint64_t b) {
      return dt > 0 && a >= b ? static_cast<double>(a - b) / dt : 0.0;
    };
    const double in_rate = i == 0 ? 0.0 : rate(s.producer.position, prev.producer.position);
    const double out_rate = i == 0 ? 0.0 : rate(s.consumer.position, prev.consumer.position);
    const double seconds = std::chrono::duration<double>(now - t0).count();
    const double out_mb = out_rate * mean_length(file, s.consumer.position) / 1e6;
    if (json) {
      JsonObject o;
      o.raw("seconds", fmt::format("{:.3f}", seconds))
          .num(pos_name(spsc, true), s.producer.position)
          .num(pos_name(spsc, false), s.consumer.position)
          .num("fill", s.fill())
          .raw("in_per_s", fmt::format("{:.0f}", in_rate))
          .raw("out_per_s", fmt::format("{:.0f}", out_rate))
          .raw("out_mb_per_s", fmt::format("{:.1f}", out_mb))
          .raw("producer", side_json(s, s.producer))
          .raw("consumer", side_json(s, s.consumer));
      fmt::print("{}\n", o.text());
    } else {
      fmt::print(
          "{:>8.1f}  {:>14}  {:>14}  {:>10}  {:>12.0f}  {:>12.0f}  {:>10.1f}  {:<16}  {:<16}\n",
          seconds, s.producer.position, s.consumer.position, s.fill(), in_rate, out_rate, out_mb,
          side_summary(s, s.producer), side_summary(s, s.consumer));
    }
    std::fflush(stdout);
    prev = s;
    prev_t = now;
  }
  return kExitOk;
}

// ---- gc --------------------------------------------------------------------

// Unlinks segments nobody can still be using: valid, not in use by the rule of
// remove, and their creator gone. Damaged segments are left for remove --force.
int cmd_gc(const std::string& prefix, bool dry_run) {
  std::vector<std::string> names;
  DIR* d = ::opendir(kShmDir);
  if (d == nullptr) {
    fmt::print(stderr, "cannot read {}: {}\n", kShmDir, std::strerror(errno));
    return kExitBad;
  }
  while (const dirent* e = ::readdir(d)) {
    const std::string n = e->d_name;
    if (n == "." || n == ".." || n.compare(0, prefix.size(), prefix) != 0) continue;
    const std::string path = kShmDir + n;
    struct stat st {};
    if (::lstat(path.c_str(), &st) != 0 || !S_ISREG(st.st_mode)) continue;
    if (is_init_file(n) || has_shmring_magic(path)) names.push_back(n);
  }
  ::closedir(d);
  std::sort(names.begin(), names.end());
  int rc = kExitOk;
  std::size_t collected = 0;
  const auto unlink_name = [&](const std::string& n) {
    if (dry_run) {
      fmt::print("would remove {}\n", n);
      ++collected;
      return;
    }
    if (::unlink((kShmDir + n).c_str()) != 0) {
      fmt::print(stderr, "{}: cannot unlink: {}\n", n, std::strerror(errno));
      rc = kExitBad;
      return;
    }
    fmt::print("removed {}\n", n);
    ++collected;
  };
  for (const auto& n : names) {
    // A creator's private file: removed once its creator is gone (a live
    // creator is about to give it its name, or to remove it).
    if (is_init_file(n)) {
      if (init_file_in_progress(kShmDir + n)) {
        fmt::print("kept {}: {}\n", n, init_file_state(true));
      } else {
        unlink_name(n);
      }
      continue;
    }
    OpenFailure failure;
    auto file = open_readonly(n, &failure);
    if (!file) {
      if (failure.not_found) continue;  // removed since the directory was read
      fmt::print("kept {}: {} (remove --force removes it)\n", n, failure.message);
      continue;
    }
    std::optional<Snapshot> snap;
    try {
      snap = snapshot(*file);
    } catch (const ReadError& e) {
      fmt::print("kept {}: {} (remove --force removes it)\n", n, e.detail());
      continue;
    }
    file.reset();
    const Snapshot& s = *snap;
    std::string why = s.in_use();
    if (why.empty() && s.creator_alive())
      why = fmt::format("creator pid {} alive", s.header.creator_pid);
    if (!why.empty()) {
      fmt::print("kept {}: {}\n", n, why);
      continue;
    }
    unlink_name(n);
  }
  fmt::print("{} segment(s) {}\n", collected, dry_run ? "to remove" : "removed");
  return rc;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"ring-inspect: list, show, dump and remove shmring segments in /dev/shm"};
  app.footer(
      "Segments are read, never mapped or written; only remove and gc change anything (they\n"
      "unlink names). A segment that shrinks while read is reported (\"segment shrank to N\n"
      "bytes\"), never a crash; watch then stops with exit status 1.\n"
      "JSON (--json): one object per line, members written as \"key\": value.\n"
      "Exit status: 0 ok, 1 the segment is bad (or shrank) or the request was refused, 2 usage "
      "error.");
  app.require_subcommand(1);

  bool json = false;
  std::string name;
  std::optional<std::uint64_t> from;
  std::optional<std::uint64_t> count;
  std::uint64_t max_bytes = 256;
  bool force = false;

  auto* list = app.add_subcommand("list", "every shmring segment in /dev/shm (found by its magic)");
  list->add_flag("--json", json, "print JSON");

  auto* show =
      app.add_subcommand("show", "header, positions, fill, owners and waiters of a segment");
  show->add_option("NAME", name, "segment name")->required();
  show->add_flag("--json", json, "print JSON");

  auto* dump = app.add_subcommand(
      "dump",
      "slots as hex and ASCII (default: the unread ones, up to 16); low-latency slots with "
      "their words decoded (flag, incarnation, lap, length)");
  dump->add_option("NAME", name, "segment name")->required();
  dump->add_option("--from", from, "first position (default: the consumer's position)");
  dump->add_option("--count", count, "how many positions (at most the capacity)");
  dump->add_option("--max-bytes", max_bytes, "bytes of each payload to print")
      ->capture_default_str();
  dump->add_flag("--json", json, "print JSON");

  auto* remove = app.add_subcommand(
      "remove", "unlink a segment; refused while an SPSC owner lives or MPMC handles are attached");
  remove->add_option("NAME", name, "segment name")->required();
  remove->add_flag("--force", force, "remove even if in use or damaged");

  std::uint64_t interval_ms = 1000;
  std::uint64_t iterations = 0;
  auto* watch = app.add_subcommand("watch", "print positions, fill and rates every interval");
  watch->add_option("NAME", name, "segment name")->required();
  watch->add_option("--interval", interval_ms, "milliseconds between samples")
      ->capture_default_str()
      ->check(CLI::Range(std::uint64_t{1}, std::uint64_t{3600000}));
  watch->add_option("--iterations", iterations, "samples to print (0: until interrupted)")
      ->capture_default_str();
  watch->add_flag("--json", json, "print one JSON object per sample");

  std::string prefix;
  bool dry_run = false;
  auto* gc = app.add_subcommand(
      "gc", "unlink abandoned segments: not in use (as for remove) and their creator gone");
  gc->add_option("--prefix", prefix, "only names that start with this");
  gc->add_flag("--dry-run", dry_run, "only say what would be removed");

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    const int rc = app.exit(e);
    return rc == 0 ? kExitOk : kExitUsage;
  }

  try {
    if (*list) return cmd_list(json);
    if (*show) return cmd_show(name, json);
    if (*dump) return cmd_dump(name, from, count, max_bytes, json);
    if (*remove) return cmd_remove(name, force);
    if (*watch) return cmd_watch(name, interval_ms, iterations, json);
    if (*gc) return cmd_gc(prefix, dry_run);
  } catch (const ReadError& e) {
    // show, dump: the segment shrank (or its header changed) while read.
    // What was printed before comes first.
    std::fflush(stdout);
    fmt::print(stderr, "{}\n", e.what());
    return kExitBad;
  } catch (const std::exception& e) {
    fmt::print(stderr, "ring-inspect: {}\n", e.what());
    return kExitBad;
  }
  return kExitUsage;
}
