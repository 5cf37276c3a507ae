// Fuzz target: the input is the memory of a segment plus a program of view
// operations. The SPSC and MPMC views run over a heap buffer of exactly the
// segment's size (so a sanitizer reports any access past it), starting from
// whatever positions, turns and lengths the input wrote there, and every
// address a view hands out must lie inside the slot area.
//
// Input layout:
//   byte 0      bit 0: kind (0 spsc, 1 mpmc); bits 1-3: log2 capacity (0..6)
//   bytes 1-2   slot size - 1, little-endian, modulo 512
//   byte 3      K, the number of operation bytes
//   K bytes     operations: low 3 bits the operation, high 5 bits its argument
//   the rest    copied over the segment from offset 128 (the producer block)
//               on; bytes it does not reach keep a fresh ring's values.
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <new>

#include "fuzz_check.hpp"
#include "shmring/atomic.hpp"
#include "shmring/mpmc_view.hpp"
#include "shmring/spsc_view.hpp"

namespace {

using namespace shmring;
using fuzz::check;
using fuzz::check_inside;
using fuzz::touch;

struct Buffer {
  explicit Buffer(std::size_t n)
      : size(n), bytes(static_cast<std::byte*>(::operator new(n, std::align_val_t{kBlockSize}))) {}
  ~Buffer() { ::operator delete(bytes, std::align_val_t{kBlockSize}); }
  Buffer(const Buffer&) = delete;
  Buffer& operator=(const Buffer&) = delete;
  std::size_t size;
  std::byte* bytes;
};

struct Env {
  const std::byte* lo;  // first slot byte
  const std::byte* hi;  // one past the buffer
  const RingView* view;

  void slot(std::uint64_t position) const {
    check_inside(view->payload(position), view->slot_size(), lo, hi);
    check_inside(view->trailer(position), sizeof(SlotTrailer), lo, hi);
  }
  void read(const ReadSlot& s, std::uint64_t position) const {
    check(s.position == position);
    check(s.size <= view->slot_size());
    check_inside(s.data, s.size, lo, hi);
    touch(s.data, s.size);
  }
  void write(std::uint64_t position, std::uint32_t length) const {
    slot(position);
    std::memset(view->payload(position), static_cast<int>(position & 0xff), length);
    view->set_length(position, length);
  }
};

// A peer scribbling one word: arg chooses which and with what.
void scribble(std::byte* base, const RingView& v, std::uint64_t at, std::uint8_t arg) {
  const std::uint64_t values[] = {0, 1, v.capacity(), ~std::uint64_t{0}, std::uint64_t{1} << 63,
                                  at, at + 1, at + v.capacity()};
  const std::uint64_t value = values[arg & 7];
  switch ((arg >> 3) & 3) {
    case 0:
      atomic::store_relaxed(&v.producer()->position, value);
      break;
    case 1:
      atomic::store_relaxed(&v.consumer()->position, value);
      break;
    case 2:
      atomic::store_relaxed(&v.trailer(at)->committed, value);
      break;
    default:
      atomic::store_relaxed(&v.trailer(at)->length, static_cast<std::uint32_t>(value));
      break;
  }
  (void)base;
}

void run_spsc(std::byte* base, const Geometry& g, const Env& e, const std::uint8_t* ops,
              std::size_t nops) {
  const SpscView v(base, g);
  SpscProducerCursor p{atomic::load_relaxed(&v.producer()->position),
                       atomic::load_relaxed(&v.consumer()->position)};
  SpscConsumerCursor c{atomic::load_relaxed(&v.consumer()->position)};
  for (std::size_t i = 0; i < nops; ++i) {
    const std::uint8_t op = ops[i] & 7;
    const std::uint8_t arg = static_cast<std::uint8_t>(ops[i] >> 3);
    Status st = Status::ok;
    switch (op) {
      case 0: {  // produce up to arg + 1
        const std::uint64_t n = v.writable(p, std::uint64_t{arg} + 1, st);
        check(n <= std::uint64_t{arg} + 1);
        if (st != Status::ok) check(n == 0);
        for (std::uint64_t k = 0; k < n; ++k) {
          e.write(p.head + k, static_cast<std::uint32_t>((arg * 17u + k) % (g.slot_size + 1)));
        }
        (void)v.publish(p, n);
        break;
      }
      case 1: {  // consume up to arg + 1
        const std::uint64_t n = v.readable(c, std::uint64_t{arg} + 1, st);
        check(n <= std::uint64_t{arg} + 1);
        for (std::uint64_t k = 0; k < n; ++k) {
          check(v.length_ok(v.committed_length(c.tail + k)));
          e.read(v.read_slot(c.tail + k), c.tail + k);
        }
        (void)v.release(c, n);
        break;
      }
      case 2:  // peek at any slot, committed or not
        e.read(v.read_slot(c.tail + arg), c.tail + arg);
        break;
      case 3:
        (void)v.data_ready(c);
        (void)v.space_ready(p);
        break;
      case 4: {  // take over the producer role from the shared words
        const std::uint64_t head = atomic::load_relaxed(&v.producer()->position);
        const std::uint64_t tail = atomic::load_relaxed(&v.consumer()->position);
        if (head - tail <= g.capacity) {
          p.head = v.resume_head(head, tail);
          check(p.head - tail <= g.capacity);
          p.cached_tail = tail;
        }
        break;
      }
      case 5:  // take over the consumer role
        c.tail = atomic::load_relaxed(&v.consumer()->position);
        break;
      default:
        scribble(base, v, (arg & 1) ? c.tail : p.head, static_cast<std::uint8_t>(ops[i] >> 1));
        break;
    }
  }
}

void run_mpmc(std::byte* base, const Geometry& g, const Env& e, const std::uint8_t* ops,
              std::size_t nops) {
  const MpmcView v(base, g);
  MpmcRange held_write{};  // a claim not committed yet
  MpmcRange held_read{};   // a claim not released yet
  for (std::size_t i = 0; i < nops; ++i) {
    const std::uint8_t op = ops[i] & 7;
    const std::uint8_t arg = static_cast<std::uint8_t>(ops[i] >> 3);
    const std::uint64_t max = static_cast<std::uint64_t>(arg & 7) + 1;
    Status st = Status::ok;
    switch (op) {
      case 0: {  // claim and write; commit now unless bit 3 holds it back
        const MpmcRange r = v.claim_write(max, st);
        check(r.count <= max);
        if (st != Status::ok) check(r.count == 0);
        for (std::uint64_t k = 0; k < r.count; ++k) {
          e.write(r.first + k, static_cast<std::uint32_t>((arg * 13u + k) % (g.slot_size + 1)));
        }
        if ((arg & 8) != 0 && held_write.count == 0) {
          held_write = r;
        } else {
          (void)v.commit(r, (arg & 16) != 0 ? kSlotSkipped : 0);
        }
        break;
      }
      case 1: {  // claim and read; release now unless bit 3 holds it back
        const MpmcRange r = v.claim_read(max, st);
        check(r.count <= max);
        if (st != Status::ok) check(r.count == 0);
        for (std::uint64_t k = 0; k < r.count; ++k) e.read(v.read_slot(r.first + k), r.first + k);
        if ((arg & 8) != 0 && held_read.count == 0) {
          held_read = r;
        } else {
          (void)v.release(r);
        }
        break;
      }
      case 2:
        (void)v.commit(held_write, (arg & 1) != 0 ? kSlotSkipped : 0);
        held_write = {};
        break;
      case 3:
        (void)v.release(held_read);
        held_read = {};
        break;
      case 4: {  // a lane-parallel look at slots around the counters
        const std::uint64_t enq = atomic::load_relaxed(&v.producer()->position);
        const std::uint64_t deq = atomic::load_relaxed(&v.consumer()->position);
        e.slot(enq + arg);
        e.slot(deq + arg);
        (void)v.writable_at(enq + arg);
        (void)v.readable_at(deq + arg);
        (void)v.skipped(deq + arg);
        e.read(v.read_slot(deq + arg), deq + arg);
        break;
      }
      case 5:
        (void)v.data_ready();
        (void)v.space_ready();
        break;
      case 6: {  // claims on a private counter, as GPU agents make them
        std::uint64_t counter = atomic::load_relaxed(&v.consumer()->position) + arg;
        const MpmcRange r = (arg & 1) != 0 ? v.claim_read_on(&counter, max, st)
                                           : v.claim_write_on(&counter, max, st);
        check(r.count <= max);
        for (std::uint64_t k = 0; k < r.count; ++k) e.slot(r.first + k);
        break;
      }
      default: {
        const std::uint64_t at = atomic::load_relaxed(&v.producer()->position) + (arg & 3);
        scribble(base, v, at, static_cast<std::uint8_t>(ops[i] >> 1));
        if ((arg & 4) != 0) atomic::store_relaxed(&v.trailer(at)->released, at + arg);
        if ((arg & 8) != 0) atomic::store_relaxed(&v.trailer(at)->flags, std::uint32_t{arg});
        break;
      }
    }
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size < 4) return 0;
  const RingKind kind = (data[0] & 1) != 0 ? RingKind::mpmc : RingKind::spsc;
  const std::uint64_t capacity = std::uint64_t{1} << ((data[0] >> 1) % 7);
  const std::uint64_t slot_size = ((data[1] | (std::uint64_t{data[2]} << 8)) % 512) + 1;
  Geometry g;
  if (compute_geometry(kind, capacity, slot_size, g) != GeometryCheck::ok) __builtin_trap();
  const std::size_t nops = std::min<std::size_t>(data[3], size - 4);
  const std::uint8_t* ops = data + 4;
  const std::uint8_t* mem = ops + nops;
  const std::size_t nmem = size - 4 - nops;

  Buffer buf(g.segment_size);
  std::byte* base = buf.bytes;
  // A fresh ring, as create leaves it...
  std::memset(base, 0, buf.size);
  for (std::uint64_t i = 0; i < g.capacity; ++i) {
    reinterpret_cast<SlotTrailer*>(base + g.slots_offset + i * g.slot_stride + g.trailer_offset())
        ->released = i;
  }
  // ...then whatever a peer wrote over it.
  std::memcpy(base + kBlockSize, mem, std::min<std::size_t>(nmem, buf.size - kBlockSize));

  const RingView view(base, g);
  const Env e{base + g.slots_offset, base + buf.size, &view};
  if (kind == RingKind::spsc) {
    run_spsc(base, g, e, ops, nops);
  } else {
    run_mpmc(base, g, e, ops, nops);
  }
  return 0;
}
