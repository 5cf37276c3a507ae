// Fuzz target: the input is the whole file of a segment. It is written under
// a per-process name in /dev/shm and opened as any process would open a ring
// a peer made; when open accepts it, the algorithm views walk it and every
// slot they hand out must lie inside the mapping and within the slot size.
// Rings of low-latency slots are walked through low_latency::complete/read
// (their words must lie before the unused trailer, read() must agree with
// complete() and return at most the slot size) and written with
// low_latency::write on read-write opens.
//
// Broadcast rings are walked through the view from every subscriber block's
// cursor; on read-write opens blocks are joined, released and left, the
// producer evicts the blocks whose holders died (nobody holds a lock here),
// a subscriber block is taken as a subscribing process takes one, and the
// producer writes and publishes what its room allows.
//
// The last input byte chooses how it is opened (it is also part of the file):
//   bit 0: read-only (only reading calls), else read-write (claims too)
//   bits 1-2: kind asked for: 0 any, 1 spsc, 2 mpmc, 3 broadcast
//   bit 3: on a read-write open of an SPSC or MPMC ring, attach the role
//          handles (which read the owner records, MPMC claim records, sleeper
//          counts and positions, and recover dead claimants) instead of
//          walking the views, and push, pop and peek through them
#include <algorithm>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <system_error>
#include <vector>

#include "detail/holding.hpp"
#include "detail/subscribers.hpp"
#include "fuzz_check.hpp"
#include "shmring/atomic.hpp"
#include "shmring/broadcast_view.hpp"
#include "shmring/low_latency.hpp"
#include "shmring/mpmc_ring.hpp"
#include "shmring/mpmc_view.hpp"
#include "shmring/segment.hpp"
#include "shmring/spsc_ring.hpp"
#include "shmring/spsc_view.hpp"

namespace {

using namespace shmring;
using fuzz::check;
using fuzz::check_inside;
using fuzz::touch;

// Walks of more slots than this find nothing new and only slow the fuzzer.
constexpr std::uint64_t kMaxWalk = 256;

struct Bounds {
  const std::byte* lo;  // first slot byte
  const std::byte* hi;  // one past the mapping
  std::uint64_t slot_size;
  std::uint64_t capacity;

  void slot(const ReadSlot& s, std::uint64_t position) const {
    check(s.position == position);
    check(s.size <= slot_size);
    check_inside(s.data, s.size, lo, hi);
    touch(s.data, s.size);
  }
  void trailer(const RingView& v, std::uint64_t position) const {
    check_inside(v.payload(position), v.slot_size(), lo, hi);
    check_inside(v.trailer(position), sizeof(SlotTrailer), lo, hi);
  }
  // A low-latency slot: its words lie inside the mapping, before the
  // trailer; read() agrees with complete() and never returns more than the
  // slot size.
  void words(const RingView& v, std::uint64_t position, bool complete) const {
    const auto* w = reinterpret_cast<const std::byte*>(low_latency::words(v, position));
    const std::uint64_t n = 8 * low_latency_words(v.slot_size());
    check_inside(w, n, lo, hi);
    check(w + n <= reinterpret_cast<const std::byte*>(v.trailer(position)));
    static std::byte out[kMaxLowLatencySlotSize];
    std::uint32_t size = 0;
    const low_latency::Read r = low_latency::read(v, position, out, v.slot_size(), size);
    check((r == low_latency::Read::ready) == complete);
    check(r != low_latency::Read::too_large);
    if (r == low_latency::Read::ready) {
      check(size <= v.slot_size());
      touch(out, size);
    }
  }
};

// Reads from a subscriber's cursor: everything readable() grants lies in the
// slot area and fits the slot size, and so does a copy of the first message.
void read_broadcast(const BroadcastView& v, const BroadcastSubscriberCursor& c, const Bounds& b,
                    std::uint64_t walk, std::vector<std::byte>& out, Status& st, std::uint64_t& n) {
  st = Status::ok;
  n = v.readable(c, walk, st);
  check(n <= walk);
  check(n == 0 || st == Status::ok);
  for (std::uint64_t k = 0; k < walk; ++k) {
    b.trailer(v, c.next + k);
    b.slot(v.read_slot(c.next + k), c.next + k);
    (void)v.still_valid(c.next + k);
  }
  if (n != 0) {
    std::uint32_t size = 0;
    const Status copied = v.copy_out(c.next, out.data(), out.size(), size);
    if (copied == Status::ok) check(size <= b.slot_size);
  }
  (void)v.data_ready(c);
}

// A broadcast ring: the producer's scan and every subscriber block's reads,
// from whatever cursors and floor the bytes hold. Joining, evicting, taking
// a block, writing and publishing only into a writable mapping.
void walk_broadcast(const Segment& seg, const Geometry& g, const Bounds& b, bool writable_map) {
  std::byte* base = seg.base();
  const BroadcastView v(base, g);
  check(v.subscribers() == g.subscribers && g.subscribers >= 1 && g.subscribers <= 64);
  const std::uint64_t walk = std::min(g.capacity, kMaxWalk);
  std::vector<std::byte> out(g.slot_size);
  for (std::uint32_t i = 0; i < v.subscribers(); ++i) {
    check_inside(reinterpret_cast<std::byte*>(v.subscriber(i)), sizeof(SubscriberBlock), base,
                 b.lo);
    (void)v.counts(i);
    BroadcastSubscriberCursor c;
    c.index = i;
    c.next = atomic::load_relaxed(&v.subscriber(i)->cursor);
    if (writable_map && (i & 1) != 0) {
      c = v.join(i, static_cast<JoinAt>(i % 3));
      check(v.counts(i) || v.subscriber(i)->evicted == v.subscriber(i)->session);
    }
    Status st = Status::ok;
    std::uint64_t n = 0;
    read_broadcast(v, c, b, walk, out, st, n);
    if (writable_map) {
      if (n != 0) (void)v.release(c, n);
      if (st == Status::overrun) (void)v.recover_overrun(c);
      (void)v.newest(c);
      (void)v.leave(c);
    }
  }
  if (!writable_map) return;
  // Nobody holds a block's lock here: every active block's holder is dead,
  // and once the producer of a reliable ring has evicted them none counts.
  const std::uint32_t evicted = detail::evict_dead_subscribers(v, seg.fd());
  check(evicted <= v.subscribers() && (evicted == 0 || !v.lossy()));
  for (std::uint32_t i = 0; i < v.subscribers(); ++i) check(v.lossy() || !v.counts(i));
  // A subscriber as a process becomes one: take a free block, join, read, leave.
  {
    std::shared_ptr<detail::Holding> holding;
    detail::Failure f;
    const std::optional<std::uint32_t> index = detail::take_subscriber(seg, holding, f);
    if (index) {
      check(*index < v.subscribers());
      BroadcastSubscriberCursor c = v.join(*index, JoinAt::newest);
      Status st = Status::ok;
      std::uint64_t n = 0;
      read_broadcast(v, c, b, walk, out, st, n);
      if (n != 0) (void)v.release(c, n);
      (void)detail::retire_subscriber(v, c, holding);
      check(v.subscriber(*index)->state == kSubscriberRetired);
    }
  }
  BroadcastProducerCursor p = v.resume();
  Status st = Status::ok;
  const std::uint64_t room = v.writable(p, walk, st);
  check(room <= walk);
  static constexpr std::byte kMessage[64] = {};
  for (std::uint64_t k = 0; k < room; ++k) {
    v.write(p.head + k, kMessage,
            static_cast<std::uint32_t>(std::min<std::uint64_t>(64, g.slot_size)));
  }
  (void)v.publish(p, room);
  (void)v.space_ready(p);
}

void walk_spsc(std::byte* base, const Geometry& g, const Bounds& b, bool writable_map) {
  const SpscView v(base, g);
  const std::uint64_t head = atomic::load_relaxed(&v.producer()->position);
  const std::uint64_t tail = atomic::load_relaxed(&v.consumer()->position);
  const std::uint64_t walk = std::min(g.capacity, kMaxWalk);

  SpscConsumerCursor c{tail};
  Status st = Status::ok;
  const std::uint64_t n = v.readable(c, walk, st);
  check(n <= walk);
  check(st == Status::ok || (st == Status::corrupt && n == 0));
  for (std::uint64_t i = 0; i < walk; ++i) {
    b.trailer(v, tail + i);
    if (v.low_latency()) {
      // Low-latency slots: the words decide (the trailer is unused).
      const bool complete = low_latency::complete(v, tail + i);
      if (i < n) check(complete);
      b.words(v, tail + i, complete);
      continue;
    }
    b.slot(v.read_slot(tail + i), tail + i);
    if (i < n) check(v.length_ok(v.committed_length(tail + i)));
  }
  (void)v.data_ready(c);

  SpscProducerCursor p{head, head - g.capacity};  // a full cache: forces a load of the tail
  st = Status::ok;
  const std::uint64_t room = v.writable(p, g.capacity, st);
  check(room <= g.capacity);
  if (st == Status::ok) check(p.head - p.cached_tail <= g.capacity);
  (void)v.space_ready(p);
  if (head - tail <= g.capacity) {
    const std::uint64_t resumed = v.resume_head(head, tail);
    check(resumed - tail <= g.capacity);
  }

  if (writable_map && st == Status::ok) {
    // Our own file: write and publish what writable() granted, then read it
    // back through a consumer cursor.
    const std::uint64_t k = std::min(room, kMaxWalk);
    static constexpr std::byte kMessage[kMaxLowLatencySlotSize] = {};
    for (std::uint64_t i = 0; i < k; ++i) {
      b.trailer(v, p.head + i);
      if (v.low_latency()) {
        low_latency::write(v, p.head + i, p.incarnation, kMessage,
                           static_cast<std::uint32_t>(g.slot_size));
        check(low_latency::complete(v, p.head + i));
      } else {
        v.set_length(p.head + i, static_cast<std::uint32_t>(g.slot_size));
      }
    }
    (void)v.publish(p, k);
    Status rs = Status::ok;
    const std::uint64_t r = v.readable(c, walk, rs);
    for (std::uint64_t i = 0; i < r; ++i) {
      if (v.low_latency()) {
        b.words(v, c.tail + i, true);
      } else {
        b.slot(v.read_slot(c.tail + i), c.tail + i);
      }
    }
    (void)v.release(c, r);
  }
}

// One lane of an MPMC ring (the ring, with one lane).
void walk_mpmc_lane(std::byte* base, const Geometry& g, std::uint32_t lane, const Bounds& b,
                    bool writable_map) {
  const MpmcView v(base, g, lane);
  const std::uint64_t enq = atomic::load_relaxed(&v.producer()->position);
  const std::uint64_t deq = atomic::load_relaxed(&v.consumer()->position);
  const std::uint64_t walk = std::min(v.capacity(), kMaxWalk);
  for (std::uint64_t i = 0; i < walk; ++i) {
    b.trailer(v, deq + i);
    b.trailer(v, enq + i);
    (void)v.readable_at(deq + i);
    (void)v.writable_at(enq + i);
    (void)v.skipped(deq + i);
    b.slot(v.read_slot(deq + i), deq + i);
  }
  (void)v.data_ready();
  (void)v.space_ready();

  if (writable_map) {
    // Claims move the counters of our own file; every claimed position must
    // be one the counter stood at, and every slot must stay in bounds.
    for (int round = 0; round < 4; ++round) {
      Status st = Status::ok;
      const std::uint64_t before_r = atomic::load_relaxed(&v.consumer()->position);
      const MpmcRange r = v.claim_read(walk, st);
      check(r.count <= walk);
      if (r.count > 0) check(r.first == before_r);
      for (std::uint64_t i = 0; i < r.count; ++i) b.slot(v.read_slot(r.first + i), r.first + i);
      (void)v.release(r);

      st = Status::ok;
      const std::uint64_t before_w = atomic::load_relaxed(&v.producer()->position);
      const MpmcRange w = v.claim_write(walk, st);
      check(w.count <= walk);
      if (w.count > 0) check(w.first == before_w);
      for (std::uint64_t i = 0; i < w.count; ++i) {
        b.trailer(v, w.first + i);
        v.set_length(w.first + i, static_cast<std::uint32_t>(g.slot_size));
      }
      (void)v.commit(w, round == 1 ? kSlotSkipped : 0);
    }
  }
}

void walk_mpmc(std::byte* base, const Geometry& g, const Bounds& b, bool writable_map) {
  for (std::uint32_t lane = 0; lane < g.lane_count(); ++lane) {
    walk_mpmc_lane(base, g, lane, b, writable_map);
  }
}

// Pushes, pops and peeks through role handles; everything popped or peeked
// must fit the slot and lie inside the mapping.
template <class Producer, class Consumer>
void use_handles(const Segment& seg, const Bounds& b) {
  std::error_code ec;
  Consumer consumer = Consumer::attach(seg, WaitPolicy{}, ec);
  check(static_cast<bool>(consumer) == !ec);
  ec.clear();
  Producer producer = Producer::attach(seg, WaitPolicy{}, ec);
  check(static_cast<bool>(producer) == !ec);
  std::byte buffer[512] = {};
  for (int round = 0; round < 4; ++round) {
    if (consumer) {
      ReadClaim claim = consumer.try_peek(kMaxWalk);
      check(claim.size() <= b.capacity);
      for (std::size_t i = 0; i < claim.size(); ++i) {
        const std::span<const std::byte> m = claim[i];
        check(m.size() <= b.slot_size);
        check_inside(m.data(), m.size(), b.lo, b.hi);
        touch(m.data(), m.size());
      }
      claim.release();
      std::size_t size = 0;
      const Status s = consumer.try_pop(std::span<std::byte>(buffer), size);
      if (s == Status::ok || s == Status::too_large) check(size <= b.slot_size);
    }
    if (producer) {
      const std::size_t n = std::min<std::size_t>(sizeof buffer, b.slot_size);
      (void)producer.try_push(std::span<const std::byte>(buffer, n >> round));
    }
    // MPMC: recovery of dead claimants walks slots from positions and claim
    // records found in the file.
    if constexpr (requires { producer.recover(); }) {
      if (producer) (void)producer.recover();
      if (consumer) (void)consumer.recover();
    }
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size == 0) return 0;
  const fuzz::SegmentFile file("shmring_fuzz_", data, size);
  if (!file.ok()) return 0;
  const std::uint8_t mode = data[size - 1];
  OpenOptions o;
  o.init_timeout = std::chrono::milliseconds(0);
  o.read_only = (mode & 1) != 0;
  switch ((mode >> 1) & 3) {
    case 1:
      o.kind = RingKind::spsc;
      break;
    case 2:
      o.kind = RingKind::mpmc;
      break;
    case 3:
      o.kind = RingKind::broadcast;
      break;
    default:
      break;
  }
  std::error_code ec;
  Segment seg = Segment::open(file.name(), o, ec);
  check(static_cast<bool>(seg) == !ec);
  if (seg) {
    const Geometry& g = seg.geometry();
    // open accepted it: the geometry is one create could have made, and the
    // file is exactly as large as it says.
    Geometry expect;
    check(compute_geometry(g.kind, g.capacity, g.slot_size, expect, g.format, g.subscribers,
                           g.delivery, g.lanes) == GeometryCheck::ok);
    check(expect == g);
    check(g.format == SlotFormat::plain || g.kind == RingKind::spsc);
    check(seg.size() == size && g.segment_size == size);
    check(!o.kind || *o.kind == g.kind);
    std::byte* base = seg.base();
    const Bounds b{base + g.slots_offset, base + seg.size(), g.slot_size, g.capacity};
    if (g.kind == RingKind::broadcast) {
      walk_broadcast(seg, g, b, !o.read_only);  // no role handles yet
    } else if (!o.read_only && (mode & 8) != 0) {
      if (g.kind == RingKind::spsc) {
        use_handles<SpscProducer, SpscConsumer>(seg, b);
      } else {
        use_handles<MpmcProducer, MpmcConsumer>(seg, b);
      }
    } else if (g.kind == RingKind::spsc) {
      walk_spsc(base, g, b, !o.read_only);
    } else {
      check(g.kind == RingKind::mpmc);
      walk_mpmc(base, g, b, !o.read_only);
    }
  }
  return 0;
}
