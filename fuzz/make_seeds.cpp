// Writes seed inputs for the fuzz targets: real segment files made by the
// library (fresh, part-filled, wrapped, with skipped MPMC slots, SPSC rings of
// low-latency slots, reliable and lossy broadcast rings with subscribers
// joined at different positions, lapped, retired or evicted), and view
// programs over small geometries. Usage: fuzz_make_seeds OUT_DIR
// (writes OUT_DIR/fuzz_segment_open/ and OUT_DIR/fuzz_views/).
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <initializer_list>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "shmring/broadcast_view.hpp"
#include "shmring/low_latency.hpp"
#include "shmring/mpmc_view.hpp"
#include "shmring/segment.hpp"
#include "shmring/spsc_view.hpp"

namespace {

using namespace shmring;
namespace fs = std::filesystem;

void save(const fs::path& file, const void* p, std::size_t n) {
  std::ofstream out(file, std::ios::binary);
  out.write(static_cast<const char*>(p), static_cast<std::streamsize>(n));
}

// A segment file after `produce` messages and `consume` reads; the last byte
// of the copy is set to `mode` (how the fuzz target opens it).
void segment_seed(const fs::path& dir, RingKind kind, std::uint64_t capacity,
                  std::uint64_t slot_size, std::uint64_t produce, std::uint64_t consume,
                  std::uint8_t mode, SlotFormat format = SlotFormat::plain,
                  std::uint32_t lanes = 0) {
  const std::string name = "shmring_seed_" + std::to_string(::getpid());
  CreateOptions o;
  o.kind = kind;
  o.capacity = capacity;
  o.slot_size = slot_size;
  o.format = format;
  o.lanes = lanes;
  std::error_code ignored;
  Segment::unlink(name, ignored);
  Segment seg = Segment::create(name, o);
  const Geometry& g = seg.geometry();
  Status st = Status::ok;
  if (kind == RingKind::spsc) {
    const SpscView v(seg.base(), g);
    SpscProducerCursor p;
    SpscConsumerCursor c;
    std::uint64_t made = 0, read = 0;
    while (made < produce || read < consume) {
      if (made < produce && v.writable(p, 1, st) == 1) {
        const auto length = static_cast<std::uint32_t>(made % (slot_size + 1));
        if (format == SlotFormat::low_latency) {
          const std::vector<unsigned char> message(length, static_cast<unsigned char>(made));
          low_latency::write(v, p.head, 1, message.data(), length);
        } else {
          v.set_length(p.head, length);
        }
        v.publish(p, 1);
        ++made;
      } else if (read < consume && v.readable(c, 1, st) == 1) {
        v.release(c, 1);
        ++read;
      } else {
        break;
      }
    }
  } else {
    // Lanes: the messages go to the last lane, so that lane 0 stays fresh.
    const MpmcView v(seg.base(), g, g.lane_count() - 1);
    std::uint64_t made = 0, read = 0;
    while (made < produce || read < consume) {
      MpmcRange r{};
      if (made < produce && (r = v.claim_write(1, st)).count == 1) {
        v.set_length(r.first, static_cast<std::uint32_t>(made % (slot_size + 1)));
        v.commit(r, made % 5 == 3 ? kSlotSkipped : 0);
        ++made;
      } else if (read < consume && (r = v.claim_read(1, st)).count == 1) {
        v.release(r);
        ++read;
      } else {
        break;
      }
    }
  }
  std::vector<unsigned char> bytes(seg.size());
  std::memcpy(bytes.data(), seg.base(), seg.size());
  bytes.back() = mode;
  char file[128];
  std::snprintf(file, sizeof file, "%s%s_l%u_c%llu_s%llu_p%llu_r%llu_m%u", to_string(kind),
                format == SlotFormat::low_latency ? "_ll" : "", unsigned{lanes},
                static_cast<unsigned long long>(capacity),
                static_cast<unsigned long long>(slot_size),
                static_cast<unsigned long long>(produce), static_cast<unsigned long long>(consume),
                unsigned{mode});
  save(dir / file, bytes.data(), bytes.size());
  Segment::unlink(name);
}

// A broadcast subscriber in a seed: block `index` joins at `where` once
// `after` messages are published, then reads (and releases) up to `reads`
// of them, one per message the producer publishes; lapped in a lossy ring,
// it skips ahead. At the end it stays active, leaves (retired) or, reliable
// rings only, is evicted as a subscriber whose process died.
enum class End : std::uint8_t { stay, leave, evict };
struct Sub {
  std::uint32_t index;
  JoinAt where;
  std::uint64_t after;
  std::uint64_t reads;
  End end = End::stay;
};

// A broadcast segment file after `produce` messages (as many as the reliable
// ring's room lets the producer publish) and the subscribers' reads; the
// last byte of the copy is set to `mode`.
void broadcast_seed(const fs::path& dir, const std::string& tag, Delivery delivery,
                    std::uint32_t subscribers, std::uint64_t capacity, std::uint64_t slot_size,
                    std::uint64_t produce, const std::vector<Sub>& subs,
                    std::initializer_list<std::uint8_t> modes) {
  const std::string name = "shmring_seed_" + std::to_string(::getpid());
  CreateOptions o;
  o.kind = RingKind::broadcast;
  o.capacity = capacity;
  o.slot_size = slot_size;
  o.subscribers = subscribers;
  o.delivery = delivery;
  std::error_code ignored;
  Segment::unlink(name, ignored);
  Segment seg = Segment::create(name, o);
  const BroadcastView v(seg.base(), seg.geometry());
  BroadcastProducerCursor p = v.resume();
  std::vector<std::optional<BroadcastSubscriberCursor>> cursor(subs.size());
  std::vector<std::uint64_t> read(subs.size(), 0);
  std::vector<std::byte> message(slot_size), out(slot_size);
  for (;;) {
    bool progress = false;
    for (std::size_t i = 0; i < subs.size(); ++i) {
      if (!cursor[i] && p.head >= subs[i].after) {
        cursor[i] = v.join(subs[i].index, subs[i].where);
        // As take_subscriber() would record it: an identity (pid 4242), the
        // start time; nobody holds the lock, so the holder reads as dead.
        v.subscriber(subs[i].index)->holder = (std::uint64_t{977} << 32) | 4242u;
        v.subscriber(subs[i].index)->start_time = 977;
        progress = true;
      }
    }
    Status st = Status::ok;
    if (p.head < produce && v.writable(p, 1, st) == 1) {
      const auto length = static_cast<std::uint32_t>(p.head % (slot_size + 1));
      std::memset(message.data(), static_cast<int>(p.head & 0xff), length);
      v.write(p.head, message.data(), length);
      v.publish(p, 1);
      progress = true;
    }
    for (std::size_t i = 0; i < subs.size(); ++i) {
      if (!cursor[i] || read[i] >= subs[i].reads) continue;
      BroadcastSubscriberCursor& c = *cursor[i];
      st = Status::ok;
      if (v.readable(c, 1, st) == 1) {
        std::uint32_t size = 0;
        if (v.copy_out(c.next, out.data(), out.size(), size) == Status::ok) {
          v.release(c, 1);
          ++read[i];
          progress = true;
        }
      } else if (st == Status::overrun && v.recover_overrun(c) != 0) {
        progress = true;
      }
    }
    if (!progress) break;
  }
  if (delivery == Delivery::reliable) {
    Status st = Status::ok;
    v.refresh(p, st);  // the floor, as the producer's last scan left it
  }
  for (std::size_t i = 0; i < subs.size(); ++i) {
    if (!cursor[i]) continue;
    if (subs[i].end == End::leave) v.leave(*cursor[i]);
    if (subs[i].end == End::evict) v.evict(subs[i].index, v.subscriber(subs[i].index)->session);
  }
  std::vector<unsigned char> bytes(seg.size());
  std::memcpy(bytes.data(), seg.base(), seg.size());
  Segment::unlink(name);
  for (const std::uint8_t mode : modes) {
    bytes.back() = mode;
    char file[160];
    std::snprintf(file, sizeof file, "broadcast_%s_n%u_c%llu_s%llu_p%llu_%s_m%u",
                  delivery == Delivery::lossy ? "lossy" : "reliable", unsigned{subscribers},
                  static_cast<unsigned long long>(capacity),
                  static_cast<unsigned long long>(slot_size),
                  static_cast<unsigned long long>(p.head), tag.c_str(), unsigned{mode});
    save(dir / file, bytes.data(), bytes.size());
  }
}

void views_seed(const fs::path& dir, const std::string& file, std::vector<std::uint8_t> bytes) {
  save(dir / file, bytes.data(), bytes.size());
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: %s OUT_DIR\n", argv[0]);
    return 2;
  }
  const fs::path out(argv[1]);
  const fs::path seg_dir = out / "fuzz_segment_open";
  const fs::path view_dir = out / "fuzz_views";
  fs::create_directories(seg_dir);
  fs::create_directories(view_dir);

  for (RingKind kind : {RingKind::spsc, RingKind::mpmc}) {
    for (const std::uint8_t mode : std::initializer_list<std::uint8_t>{0, 1, 2, 5, 8, 12}) {
      segment_seed(seg_dir, kind, 4, 8, 0, 0, mode);
      segment_seed(seg_dir, kind, 8, 32, 5, 2, mode);
      segment_seed(seg_dir, kind, 8, 32, 8, 0, mode);
      segment_seed(seg_dir, kind, 16, 1, 40, 33, mode);
      segment_seed(seg_dir, kind, 2, 100, 7, 6, mode);
    }
  }
  // MPMC lanes: fresh, and one lane part-filled and wrapped.
  for (const std::uint8_t mode : std::initializer_list<std::uint8_t>{0, 1, 4, 5, 12}) {
    segment_seed(seg_dir, RingKind::mpmc, 8, 32, 0, 0, mode, SlotFormat::plain, 2);
    segment_seed(seg_dir, RingKind::mpmc, 16, 16, 9, 6, mode, SlotFormat::plain, 2);
  }
  // Low-latency slots (SPSC only): fresh, part-filled, wrapped.
  for (const std::uint8_t mode : std::initializer_list<std::uint8_t>{0, 1, 2, 5, 8, 12}) {
    segment_seed(seg_dir, RingKind::spsc, 4, 8, 0, 0, mode, SlotFormat::low_latency);
    segment_seed(seg_dir, RingKind::spsc, 8, 20, 5, 2, mode, SlotFormat::low_latency);
    segment_seed(seg_dir, RingKind::spsc, 4, 56, 11, 9, mode, SlotFormat::low_latency);
    segment_seed(seg_dir, RingKind::spsc, 2, 100, 7, 6, mode, SlotFormat::low_latency);
  }

  // Broadcast rings, opened read-write (0), read-only (1), as broadcast (6,
  // 7) and as the wrong kind (2). The subscriber blocks come after the
  // control area, so a ring of many subscribers is a larger file.
  const auto all = {std::uint8_t{0}, std::uint8_t{1}, std::uint8_t{2}, std::uint8_t{6},
                    std::uint8_t{7}};
  const auto some = {std::uint8_t{0}, std::uint8_t{7}};
  for (const Delivery d : {Delivery::reliable, Delivery::lossy}) {
    // Fresh: every block free.
    broadcast_seed(seg_dir, "fresh", d, 1, 4, 8, 0, {}, all);
    broadcast_seed(seg_dir, "fresh", d, 3, 8, 32, 0, {}, some);
    // Published with nobody subscribed (a reliable producer is not held
    // back), then joined from the oldest, the newest and the next message.
    broadcast_seed(
        seg_dir, "late", d, 3, 8, 32, 13,
        {{0, JoinAt::oldest, 13, 0}, {1, JoinAt::newest, 13, 0}, {2, JoinAt::next, 13, 0}}, all);
    // Subscribers joined at different positions, reading at different
    // speeds: a reliable ring is held back by the slowest (full), a lossy
    // one laps it.
    broadcast_seed(seg_dir, "spread", d, 4, 8, 24, 30,
                   {{0, JoinAt::oldest, 0, 30},
                    {1, JoinAt::oldest, 0, 3},
                    {2, JoinAt::newest, 5, 40},
                    {3, JoinAt::next, 9, 1}},
                   all);
    // Left and (reliable) evicted blocks among active ones; block 2 never
    // used.
    broadcast_seed(seg_dir, "ended", d, 4, 4, 100, 11,
                   {{0, JoinAt::oldest, 0, 2, End::leave},
                    {1, JoinAt::oldest, 2, 1, d == Delivery::reliable ? End::evict : End::stay},
                    {3, JoinAt::newest, 4, 20}},
                   all);
    // One slot, and a subscriber that reads everything.
    broadcast_seed(seg_dir, "one", d, 2, 1, 16, 5, {{1, JoinAt::oldest, 0, 10}}, some);
    // Wrapped many laps, one lapped subscriber (lossy) or a reader keeping up.
    broadcast_seed(
        seg_dir, "laps", d, 2, 2, 8, 70,
        {{0, JoinAt::oldest, 0, d == Delivery::lossy ? 3u : 100u}, {1, JoinAt::newest, 40, 100}},
        some);
    // The most subscriber blocks a ring may have.
    broadcast_seed(seg_dir, "max", d, kMaxSubscribers, 1, 8, 3,
                   {{0, JoinAt::oldest, 0, 3}, {kMaxSubscribers - 1, JoinAt::next, 1, 3}}, some);
  }

  // Views: [kind | log2 cap << 1 | variant << 4] [slot size - 1, 2 bytes] [K] [K ops]
  // [memory].
  const auto op = [](std::uint8_t code, std::uint8_t arg) {
    return static_cast<std::uint8_t>(code | (arg << 3));
  };
  for (const std::uint8_t kind : std::initializer_list<std::uint8_t>{0, 1}) {
    for (const std::uint8_t lcap : std::initializer_list<std::uint8_t>{0, 2, 3, 6}) {
      const std::uint8_t head = static_cast<std::uint8_t>(kind | (lcap << 1));
      std::vector<std::uint8_t> ops;
      for (int i = 0; i < 12; ++i) {
        ops.push_back(op(0, static_cast<std::uint8_t>(i % 5)));
        ops.push_back(op(1, static_cast<std::uint8_t>(i % 3)));
        ops.push_back(op(static_cast<std::uint8_t>(2 + i % 4), static_cast<std::uint8_t>(i)));
      }
      std::vector<std::uint8_t> in = {head, 31, 0, static_cast<std::uint8_t>(ops.size())};
      in.insert(in.end(), ops.begin(), ops.end());
      views_seed(view_dir, "k" + std::to_string(kind) + "_c" + std::to_string(lcap), in);
      // The same with a scribbled producer block: a position far ahead.
      in.insert(in.end(), {0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f});
      views_seed(view_dir, "k" + std::to_string(kind) + "_c" + std::to_string(lcap) + "_far", in);
    }
  }
  // MPMC views of owned lanes: byte 0 bit 4, 2^(bits 5-7) lanes. Each lane
  // picked in turn (op 6) is filled past a lap and drained, with claims held
  // back across the switches.
  for (const auto& [lcap, llanes] : std::initializer_list<std::pair<std::uint8_t, std::uint8_t>>{
           {0, 0}, {2, 1}, {3, 1}, {3, 3}, {6, 4}, {6, 2}}) {
    const std::uint8_t head = static_cast<std::uint8_t>(1 | (lcap << 1) | 0x10 | (llanes << 5));
    std::vector<std::uint8_t> ops;
    for (int i = 0; i < 16; ++i) {
      ops.push_back(op(6, static_cast<std::uint8_t>(i * 5)));
      ops.push_back(op(0, static_cast<std::uint8_t>(i % 3 == 0 ? 8 | (i % 4) : i % 4)));
      ops.push_back(op(1, static_cast<std::uint8_t>(i % 5 == 0 ? 8 | (i % 3) : i % 3)));
      ops.push_back(op(static_cast<std::uint8_t>(2 + i % 4), static_cast<std::uint8_t>(i)));
    }
    std::vector<std::uint8_t> in = {head, 31, 0, static_cast<std::uint8_t>(ops.size())};
    in.insert(in.end(), ops.begin(), ops.end());
    views_seed(view_dir, "lanes" + std::to_string(llanes) + "_c" + std::to_string(lcap), in);
  }
  // Low-latency SPSC views: byte 0 bit 4. The rest after the ops: producer
  // position (8 bytes), consumer position (8), incarnation (4), then the
  // slot area from slot 0.
  const auto le = [](std::vector<std::uint8_t>& v, std::uint64_t x, int n) {
    for (int i = 0; i < n; ++i) v.push_back(static_cast<std::uint8_t>(x >> (8 * i)));
  };
  for (const std::uint8_t lcap : std::initializer_list<std::uint8_t>{0, 2, 3, 6}) {
    const std::uint8_t head = static_cast<std::uint8_t>(0x10 | (lcap << 1));
    const std::uint64_t cap = std::uint64_t{1} << lcap;
    for (const std::uint16_t slot : std::initializer_list<std::uint16_t>{7, 31, 63, 200}) {
      std::vector<std::uint8_t> ops;
      for (int i = 0; i < 12; ++i) {
        ops.push_back(op(0, static_cast<std::uint8_t>(i % 5)));
        ops.push_back(op(1, static_cast<std::uint8_t>(i % 3)));
        ops.push_back(op(static_cast<std::uint8_t>(2 + i % 6), static_cast<std::uint8_t>(i * 5)));
        ops.push_back(static_cast<std::uint8_t>(i * 37));  // a scribble's data byte
      }
      std::vector<std::uint8_t> in = {head, static_cast<std::uint8_t>(slot & 0xff),
                                      static_cast<std::uint8_t>(slot >> 8),
                                      static_cast<std::uint8_t>(ops.size())};
      in.insert(in.end(), ops.begin(), ops.end());
      const std::string base = "ll_c" + std::to_string(lcap) + "_s" + std::to_string(slot + 1);
      views_seed(view_dir, base, in);
      // Both positions just before the lap flag wraps (lap 2^24 - 2), a
      // producer of incarnation 3.
      std::vector<std::uint8_t> wrap = in;
      const std::uint64_t pos = (low_latency::kLapMask - 1) * cap;
      le(wrap, pos, 8);
      le(wrap, pos, 8);
      le(wrap, 3, 4);
      views_seed(view_dir, base + "_wrap", wrap);
      // Positions one lap in, the slots holding lap 0's words (flag 1) for
      // messages of 5 bytes: stale, then some words of the current lap.
      std::vector<std::uint8_t> stale = in;
      le(stale, cap, 8);
      le(stale, cap, 8);
      le(stale, 1, 4);
      Geometry g;
      compute_geometry(RingKind::spsc, cap, slot + 1u, g, SlotFormat::low_latency);
      const std::uint64_t words = low_latency_words(slot + 1u);
      for (std::uint64_t i = 0; i < cap && stale.size() < 4096; ++i) {
        const std::uint32_t flag = (i % 3 == 2 ? 2u : 1u) | (1u << 24);
        for (std::uint64_t k = 0; k < g.slot_stride / 8; ++k) {
          const std::uint32_t data = k == 0 ? 5u : static_cast<std::uint32_t>(0x61626364 + k);
          le(stale, k < words ? low_latency::word(data, flag) : 0, 8);
        }
      }
      views_seed(view_dir, base + "_stale", stale);
    }
  }
  std::printf("seeds written to %s\n", out.c_str());
  return 0;
}
