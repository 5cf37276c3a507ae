// Fuzz target: the input is the memory of a segment plus a program of view
// operations. The SPSC and MPMC views run over a heap buffer of exactly the
// segment's size (so a sanitizer reports any access past it), starting from
// whatever positions, turns and lengths the input wrote there, and every
// address a view hands out must lie inside the slot area.
//
// Input layout:
//   byte 0      bit 0: kind (0 spsc, 1 mpmc); bits 1-3: log2 capacity (0..6);
//               bit 4: SPSC, SlotFormat::low_latency slots; MPMC, owned lanes,
//               2^(bits 5-7 mod 5) of them (1 to 16) but at most the
//               capacity (clear: one shared lane). The bit picks the variant
//               of either kind, so the MPMC inputs that had it clear (most
//               of those in the corpus from before lanes) mean what they did.
//   bytes 1-2   slot size - 1, little-endian, modulo 512
//   byte 3      K, the number of operation bytes
//   K bytes     operations: low 3 bits the operation, high 5 bits its argument
//   the rest    plain slots: copied over the segment from offset 128 (the
//               producer block) on; bytes it does not reach keep a fresh
//               ring's values. Low-latency slots: 8 bytes over the producer's
//               position, 8 over the consumer's, 4 over the producer's
//               incarnation, then the slot area from slot 0 on (arbitrary
//               words for the readers to find). The words of MPMC lanes 1
//               and up (lane areas) begin 8064 bytes in, the slots after them.
//
// MPMC rings: every lane is driven through its own view (RingView(base, g,
// lane)), all of them one at a time, and modelled (LaneModel) while nothing
// but the views has written it: each claim must then take exactly the run
// the model predicts, each message be read once, in its lane's order, with
// its length and bytes, and the counters and turns stay what the model says.
// Of a ring of owned lanes op 6 picks the lane the next operations act on,
// the producer claims as a lane's one producer does (claim_write_owned),
// and no operation may change another lane's words or write outside its
// lane's slots.
//
// Low-latency rings drive low_latency::write/read/complete and the SPSC view
// calls over whatever the slots hold. Only the words of a slot
// (low_latency_words(slot_size) of them) may be touched: under
// AddressSanitizer the rest of every slot (the unused trailer) is poisoned,
// so a read past a slot's words is reported even when it stays inside the
// buffer. A length read back never exceeds the slot size (nor the caller's
// capacity for `ready`).
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <memory>
#include <new>
#include <optional>
#include <vector>

#if defined(__has_feature)
#if __has_feature(address_sanitizer)
#define SHMRING_FUZZ_ASAN 1
#endif
#endif
#if !defined(SHMRING_FUZZ_ASAN) && defined(__SANITIZE_ADDRESS__)
#define SHMRING_FUZZ_ASAN 1
#endif
#if defined(SHMRING_FUZZ_ASAN)
#include <sanitizer/asan_interface.h>
#define FUZZ_POISON(p, n) __asan_poison_memory_region((p), (n))
#define FUZZ_UNPOISON(p, n) __asan_unpoison_memory_region((p), (n))
#else
#define FUZZ_POISON(p, n) ((void)(p), (void)(n))
#define FUZZ_UNPOISON(p, n) ((void)(p), (void)(n))
#endif

#include "fuzz_check.hpp"
#include "shmring/atomic.hpp"
#include "shmring/low_latency.hpp"
#include "shmring/mpmc_view.hpp"
#include "shmring/spsc_view.hpp"

namespace {

using namespace shmring;
using fuzz::check;
using fuzz::check_inside;
using fuzz::touch;

struct Buffer {
  explicit Buffer(std::size_t n)
      : size(n), bytes(static_cast<std::byte*>(::operator new (n, std::align_val_t{kBlockSize}))) {}
  ~Buffer() { ::operator delete (bytes, std::align_val_t{kBlockSize}); }
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
  // Returns the sum of the bytes read.
  std::uint64_t read(const ReadSlot& s, std::uint64_t position) const {
    check(s.position == position);
    check(s.size <= view->slot_size());
    check_inside(s.data, s.size, lo, hi);
    return touch(s.data, s.size);
  }
  void write(std::uint64_t position, std::uint32_t length) const {
    slot(position);
    std::memset(view->payload(position), static_cast<int>(position & 0xff), length);
    view->set_length(position, length);
  }
};

// A peer scribbling one word: arg chooses which and with what.
void scribble(std::byte* base, const RingView& v, std::uint64_t at, std::uint8_t arg) {
  const std::uint64_t values[] = {
      0, 1, v.capacity(), ~std::uint64_t{0}, std::uint64_t{1} << 63, at, at + 1, at + v.capacity()};
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

// ---- SPSC: what both programs (plain and low-latency slots) do alike -------

// The producer and consumer roles of an SPSC program over `v`: cursors that
// take them over from the shared words (the positions, and the producer's
// incarnation, which only low-latency slots use), and the operations both
// programs run through them.
struct SpscRoles {
  explicit SpscRoles(const SpscView& view)
      : v(view),
        p{atomic::load_relaxed(&v.producer()->position),
          atomic::load_relaxed(&v.consumer()->position),
          atomic::load_relaxed(&v.producer()->incarnation)},
        c{atomic::load_relaxed(&v.consumer()->position)} {}

  // Op 0: produce up to arg + 1. The k-th position writable() grants is
  // written by write(position, length), a length from 0 to the slot size
  // that arg and k pick, and all are published.
  template <class Write>
  void produce(std::uint8_t arg, Write&& write) {
    const std::uint64_t max = std::uint64_t{arg} + 1;
    Status st = Status::ok;
    const std::uint64_t n = v.writable(p, max, st);
    check(n <= max && (st == Status::ok || n == 0));
    for (std::uint64_t k = 0; k < n; ++k) {
      write(p.head + k, static_cast<std::uint32_t>((arg * 17u + k) % (v.slot_size() + 1)));
    }
    (void)v.publish(p, n);
  }

  // Op 1: consume up to arg + 1. Each position readable() counts is checked
  // by read(position), and all are released.
  template <class Read>
  void consume(std::uint8_t arg, Read&& read) {
    const std::uint64_t max = std::uint64_t{arg} + 1;
    Status st = Status::ok;
    const std::uint64_t n = v.readable(c, max, st);
    check(n <= max);
    // corrupt only for a first slot with an impossible length; never for
    // low-latency slots, whose words complete() checks.
    check(st == Status::ok || (st == Status::corrupt && n == 0 && !v.low_latency()));
    for (std::uint64_t k = 0; k < n; ++k) read(c.tail + k);
    (void)v.release(c, n);
  }

  // Op 3: both roles' wake-up checks (the low-latency program adds a look at
  // a slot).
  void ready() const {
    (void)v.data_ready(c);
    (void)v.space_ready(p);
  }

  // Op 4: take over the producer role from the shared words. Where they are
  // consistent (head - tail <= capacity), the cursor resumes where
  // resume_head() says and the head found there is returned; else the
  // cursor is left alone.
  std::optional<std::uint64_t> take_over_producer() {
    const std::uint64_t head = atomic::load_relaxed(&v.producer()->position);
    const std::uint64_t tail = atomic::load_relaxed(&v.consumer()->position);
    if (head - tail > v.capacity()) return std::nullopt;
    p.head = v.resume_head(head, tail);
    check(p.head - tail <= v.capacity());
    p.cached_tail = tail;
    return head;
  }

  // Op 5: take over the consumer role.
  void take_over_consumer() { c.tail = atomic::load_relaxed(&v.consumer()->position); }

  const SpscView& v;
  SpscProducerCursor p;
  SpscConsumerCursor c;
};

void run_spsc(std::byte* base, const Geometry& g, const Env& e, const std::uint8_t* ops,
              std::size_t nops) {
  const SpscView v(base, g);
  SpscRoles r(v);
  for (std::size_t i = 0; i < nops; ++i) {
    const std::uint8_t op = ops[i] & 7;
    const std::uint8_t arg = static_cast<std::uint8_t>(ops[i] >> 3);
    switch (op) {
      case 0:
        r.produce(arg, [&](std::uint64_t pos, std::uint32_t length) { e.write(pos, length); });
        break;
      case 1:
        r.consume(arg, [&](std::uint64_t pos) {
          check(v.length_ok(v.committed_length(pos)));
          e.read(v.read_slot(pos), pos);
        });
        break;
      case 2:  // peek at any slot, committed or not
        e.read(v.read_slot(r.c.tail + arg), r.c.tail + arg);
        break;
      case 3:
        r.ready();
        break;
      case 4:
        (void)r.take_over_producer();
        break;
      case 5:
        r.take_over_consumer();
        break;
      default:
        scribble(base, v, (arg & 1) ? r.c.tail : r.p.head, static_cast<std::uint8_t>(ops[i] >> 1));
        break;
    }
  }
}

// ---- MPMC: one shared lane, or owned lanes -----------------------------------

// Capacities are 2^0 to 2^6 (byte 0).
constexpr std::uint64_t kMaxFuzzCapacity = 64;

constexpr bool behind(std::uint64_t turn, std::uint64_t want) {
  return static_cast<std::int64_t>(turn - want) < 0;
}

// What an MPMC lane holds while this program alone has written it. One
// agent acts at a time, so no claim loses a race and each is predicted
// exactly: every message is read once, in its lane's order, with the length
// and bytes it was written with, and after every operation the lane's
// counters and turns are what the model says. A scribble into the lane ends
// its model; words the algorithm cannot leave (the input's) give none.
struct LaneModel {
  enum class State : std::uint8_t { free, writing, committed, reading };
  struct Slot {
    std::uint64_t position = 0;  // its lap: `released` says this in every state
    State state = State::free;
    bool skipped = false;
    std::uint32_t length = 0;
    std::uint64_t sum = 0;  // of the payload's bytes (Env::read)
  };
  bool on = false;
  std::uint64_t enq = 0;
  std::uint64_t deq = 0;
  Slot slots[kMaxFuzzCapacity];
};

// One lane as the program drives it: its view (the ring's, with one shared
// lane), the bounds of its slots, the claims it holds back, its model, and
// its words as the last operation on it left them.
struct Lane {
  // Lane `lane` owns the slots from lane * capacity / lanes on, and its words
  // lie before the slots: the control area's (lane 0) or a lane area after it.
  Lane(std::byte* base, const Geometry& g, std::uint32_t lane)
      : v(base, g, lane),
        e{base + g.slots_offset + lane * (g.capacity / g.lane_count()) * g.slot_stride,
          base + g.slots_offset + (lane + 1) * (g.capacity / g.lane_count()) * g.slot_stride, &v},
        words(2 * sizeof(SideBlock) + v.capacity() * sizeof(SlotTrailer)) {
    const auto* area = reinterpret_cast<const std::byte*>(v.lane_area());
    check(lane == 0 ? area == base : area >= base + kSlotsOffset);
    check(area + sizeof(LaneArea) <= base + g.slots_offset);
    save_words();
  }
  Lane(const Lane&) = delete;
  Lane& operator=(const Lane&) = delete;

  LaneModel::Slot& at(std::uint64_t position) { return m.slots[position & (v.capacity() - 1)]; }
  const LaneModel::Slot& at(std::uint64_t position) const {
    return m.slots[position & (v.capacity() - 1)];
  }

  // Models the lane as its words are, where they are a state the algorithm
  // reaches with no claim live: deq <= enq <= deq + capacity, the positions
  // between committed (a length the slot holds) and released for their lap,
  // the others released and not yet committed.
  void adopt() {
    m.on = false;
    const std::uint64_t enq = atomic::load_relaxed(&v.producer()->position);
    const std::uint64_t deq = atomic::load_relaxed(&v.consumer()->position);
    if (enq - deq > v.capacity()) return;
    for (std::uint64_t pos = deq; pos != deq + v.capacity(); ++pos) {
      const std::uint64_t committed = atomic::load_relaxed(&v.trailer(pos)->committed);
      if (atomic::load_relaxed(&v.trailer(pos)->released) != pos) return;
      if (pos - deq < enq - deq) {
        const std::uint32_t length = v.committed_length(pos);
        if (committed != pos + 1 || !v.length_ok(length)) return;
        at(pos) = {pos, LaneModel::State::committed, v.skipped(pos), length,
                   touch(v.payload(pos), length)};
      } else {
        if (!behind(committed, pos + 1)) return;
        at(pos) = {pos, LaneModel::State::free, false, 0, 0};
      }
    }
    m.enq = enq;
    m.deq = deq;
    m.on = true;
  }

  // What a claim of up to `max` must take: the run of released slots from
  // the enqueue counter; of committed ones from the dequeue counter, where a
  // skipped slot is a run of its own.
  std::uint64_t writable(std::uint64_t max) const {
    std::uint64_t n = 0;
    while (n < max && at(m.enq + n).position == m.enq + n) {
      check(at(m.enq + n).state == LaneModel::State::free);
      ++n;
    }
    return n;
  }
  std::uint64_t readable(std::uint64_t max) const {
    const auto ready = [&](std::uint64_t pos) {
      return at(pos).position == pos && at(pos).state == LaneModel::State::committed;
    };
    if (!ready(m.deq)) return 0;
    if (at(m.deq).skipped) return 1;
    std::uint64_t n = 1;
    while (n < max && ready(m.deq + n) && !at(m.deq + n).skipped) ++n;
    return n;
  }

  void claimed_write(MpmcRange r, std::uint64_t want) {
    if (!m.on) return;
    check(r.count == want && (want == 0 || r.first == m.enq));
    m.enq += r.count;
  }
  void wrote(std::uint64_t position, std::uint32_t length) {
    if (!m.on) return;
    at(position) = {position, LaneModel::State::writing, false, length,
                    std::uint64_t{length} * (position & 0xff)};  // Env::write's bytes
  }
  void committed(MpmcRange r, std::uint32_t flags) {
    if (!m.on) return;
    for (std::uint64_t pos = r.first; pos != r.first + r.count; ++pos) {
      check(at(pos).position == pos && at(pos).state == LaneModel::State::writing);
      at(pos).state = LaneModel::State::committed;
      at(pos).skipped = flags == kSlotSkipped;
    }
  }
  void claimed_read(MpmcRange r, std::uint64_t want) {
    if (!m.on) return;
    check(r.count == want && (want == 0 || r.first == m.deq));
    m.deq += r.count;
  }
  // `sum`: of the bytes read at `position` (read_slot's length).
  void read(std::uint64_t position, std::uint32_t size, std::uint64_t sum) {
    if (!m.on) return;
    LaneModel::Slot& s = at(position);
    check(s.position == position && s.state == LaneModel::State::committed);
    check(size == s.length && sum == s.sum);
    s.state = LaneModel::State::reading;
  }
  void released(MpmcRange r) {
    if (!m.on) return;
    for (std::uint64_t pos = r.first; pos != r.first + r.count; ++pos) {
      check(at(pos).position == pos && at(pos).state == LaneModel::State::reading);
      at(pos) = {pos + v.capacity(), LaneModel::State::free, false, 0, 0};
    }
  }

  // The counters and every slot's turns, length and flag as modelled.
  void check_model() const {
    if (!m.on) return;
    check(atomic::load_relaxed(&v.producer()->position) == m.enq);
    check(atomic::load_relaxed(&v.consumer()->position) == m.deq);
    check(m.enq - m.deq <= v.capacity());
    for (std::uint64_t i = 0; i < v.capacity(); ++i) {
      const LaneModel::Slot& s = m.slots[i];
      const SlotTrailer* t = v.trailer(s.position);
      check((s.position & (v.capacity() - 1)) == i);
      check(atomic::load_relaxed(&t->released) == s.position);
      const std::uint64_t committed = atomic::load_relaxed(&t->committed);
      if (s.state == LaneModel::State::committed || s.state == LaneModel::State::reading) {
        check(committed == s.position + 1 && v.committed_length(s.position) == s.length &&
              v.skipped(s.position) == s.skipped);
      } else {
        check(behind(committed, s.position + 1));
      }
    }
  }

  // The lane's side blocks and trailers, which an operation on another lane
  // must leave as they are (its payloads: Env's bounds).
  void collect(std::byte* out) const {
    std::memcpy(out, v.producer(), sizeof(SideBlock));
    std::memcpy(out + sizeof(SideBlock), v.consumer(), sizeof(SideBlock));
    for (std::uint64_t i = 0; i < v.capacity(); ++i) {
      std::memcpy(out + 2 * sizeof(SideBlock) + i * sizeof(SlotTrailer), v.trailer(i),
                  sizeof(SlotTrailer));
    }
  }
  void save_words() { collect(words.data()); }
  void check_words_unchanged(std::byte* scratch) const {
    collect(scratch);
    check(std::memcmp(scratch, words.data(), words.size()) == 0);
  }

  MpmcView v;
  Env e;
  MpmcRange held_write{};  // a claim not committed yet
  MpmcRange held_read{};   // a claim not released yet
  LaneModel m;
  std::vector<std::byte> words;
};

// A ring of one shared lane is driven as agents that share its counters
// (claim_write's CAS; op 6, GPU agents' claims on counters of their own).
// With owned lanes (g.lanes != 0) every operation acts on the lane picked
// last by op 6, through that lane's own view, and op 0 claims as its one
// producer does (claim_write_owned, a plain store of the counter); after
// each, no other lane's words may have changed.
void run_mpmc(std::byte* base, const Geometry& g, const std::uint8_t* ops, std::size_t nops) {
  const std::uint32_t n = g.lane_count();
  std::vector<std::unique_ptr<Lane>> lanes;
  for (std::uint32_t l = 0; l < n; ++l) {
    lanes.push_back(std::make_unique<Lane>(base, g, l));
    lanes[l]->adopt();
  }
  std::vector<std::byte> scratch(lanes[0]->words.size());
  const bool owned = g.lanes != 0;
  std::uint32_t cur = 0;
  for (std::size_t i = 0; i < nops; ++i) {
    Lane& l = *lanes[cur];
    const MpmcView& v = l.v;
    const Env& e = l.e;
    const std::uint8_t op = ops[i] & 7;
    const std::uint8_t arg = static_cast<std::uint8_t>(ops[i] >> 3);
    const std::uint64_t max = static_cast<std::uint64_t>(arg & 7) + 1;
    Status st = Status::ok;
    switch (op) {
      case 0: {  // claim and write; commit now unless bit 3 holds it back
        const std::uint64_t want = l.m.on ? l.writable(max) : 0;
        const MpmcRange r =
            owned ? v.claim_write_owned(atomic::load_relaxed(&v.producer()->position), max, st)
                  : v.claim_write(max, st);
        check(r.count <= max);
        if (st != Status::ok) check(r.count == 0);
        check(!l.m.on || st == Status::ok);
        l.claimed_write(r, want);
        for (std::uint64_t k = 0; k < r.count; ++k) {
          const auto length = static_cast<std::uint32_t>((arg * 13u + k) % (g.slot_size + 1));
          e.write(r.first + k, length);
          l.wrote(r.first + k, length);
        }
        if ((arg & 8) != 0 && l.held_write.count == 0) {
          l.held_write = r;
        } else {
          const std::uint32_t flags = (arg & 16) != 0 ? kSlotSkipped : 0;
          (void)v.commit(r, flags);
          l.committed(r, flags);
        }
        break;
      }
      case 1: {  // claim and read; release now unless bit 3 holds it back
        const std::uint64_t want = l.m.on ? l.readable(max) : 0;
        const MpmcRange r = v.claim_read(max, st);
        check(r.count <= max);
        if (st != Status::ok) check(r.count == 0);
        check(!l.m.on || st == Status::ok);
        l.claimed_read(r, want);
        for (std::uint64_t k = 0; k < r.count; ++k) {
          const ReadSlot s = v.read_slot(r.first + k);
          l.read(r.first + k, s.size, e.read(s, r.first + k));
        }
        if ((arg & 8) != 0 && l.held_read.count == 0) {
          l.held_read = r;
        } else {
          (void)v.release(r);
          l.released(r);
        }
        break;
      }
      case 2: {
        const std::uint32_t flags = (arg & 1) != 0 ? kSlotSkipped : 0;
        (void)v.commit(l.held_write, flags);
        l.committed(l.held_write, flags);
        l.held_write = {};
        break;
      }
      case 3:
        (void)v.release(l.held_read);
        l.released(l.held_read);
        l.held_read = {};
        break;
      case 4: {  // a lane-parallel look at slots around the counters
        const std::uint64_t enq = atomic::load_relaxed(&v.producer()->position);
        const std::uint64_t deq = atomic::load_relaxed(&v.consumer()->position);
        e.slot(enq + arg);
        e.slot(deq + arg);
        const bool writable = v.writable_at(enq + arg);
        (void)v.readable_at(deq + arg);
        (void)v.skipped(deq + arg);
        e.read(v.read_slot(deq + arg), deq + arg);
        // A slot's `released` names its lap, whoever holds it now.
        if (l.m.on) check(writable == (l.at(enq + arg).position == enq + arg));
        break;
      }
      case 5: {
        const bool data = v.data_ready();
        const bool space = v.space_ready();
        if (l.m.on) check(data == (l.readable(1) == 1) && space == (l.writable(1) == 1));
        break;
      }
      case 6:
        if (owned) {
          // Consumers read every lane; bit 4: a handle attaching now, which
          // finds the lane's words as they are (a model again if they are
          // consistent and it holds none of the lane's claims).
          cur = arg & (n - 1);
          Lane& to = *lanes[cur];
          if ((arg & 16) != 0 && to.held_write.count == 0 && to.held_read.count == 0) to.adopt();
        } else {  // claims on a private counter, as GPU agents make them
          std::uint64_t counter = atomic::load_relaxed(&v.consumer()->position) + arg;
          const MpmcRange r = (arg & 1) != 0 ? v.claim_read_on(&counter, max, st)
                                             : v.claim_write_on(&counter, max, st);
          check(r.count <= max);
          for (std::uint64_t k = 0; k < r.count; ++k) e.slot(r.first + k);
        }
        break;
      default: {
        const std::uint64_t at = atomic::load_relaxed(&v.producer()->position) + (arg & 3);
        scribble(base, v, at, static_cast<std::uint8_t>(ops[i] >> 1));
        if ((arg & 4) != 0) atomic::store_relaxed(&v.trailer(at)->released, at + arg);
        if ((arg & 8) != 0) atomic::store_relaxed(&v.trailer(at)->flags, std::uint32_t{arg});
        l.m.on = false;
        break;
      }
    }
    for (std::uint32_t k = 0; k < n; ++k) {
      lanes[k]->check_model();
      if (k != cur && n > 1) lanes[k]->check_words_unchanged(scratch.data());
    }
    if (n > 1) lanes[cur]->save_words();
  }
}

// ---- low-latency slots -------------------------------------------------------

// The words of `position`'s slot: inside the slot area, and inside the slot.
void check_ll_slot(const Env& e, std::uint64_t position) {
  const RingView& v = *e.view;
  const std::uint64_t n = low_latency_words(v.slot_size());
  const auto* w = reinterpret_cast<const std::byte*>(low_latency::words(v, position));
  check(w == v.payload(position));
  check_inside(w, 8 * n, e.lo, e.hi);
  // The words end before the (unused) trailer: one slot never reaches the next.
  const auto* trailer = reinterpret_cast<const std::byte*>(v.trailer(position));
  check(w + 8 * n <= trailer);
}

// A buffer of exactly `n` bytes (a sanitizer reports a write past it).
struct Out {
  explicit Out(std::uint64_t n) : size(n), bytes(new std::byte[n == 0 ? 1 : n]) {
    if (n == 0) FUZZ_POISON(bytes.get(), 1);
  }
  ~Out() {
    if (size == 0) FUZZ_UNPOISON(bytes.get(), 1);
  }
  Out(const Out&) = delete;
  Out& operator=(const Out&) = delete;
  std::uint64_t size;
  std::unique_ptr<std::byte[]> bytes;
};

// Reads `position` into a buffer of `capacity` bytes and checks what read()
// says against complete() and the slot size. Returns the result.
low_latency::Read ll_read(const Env& e, std::uint64_t position, std::uint64_t capacity) {
  const RingView& v = *e.view;
  check_ll_slot(e, position);
  Out out(capacity);
  std::uint32_t size = 0xdeadbeef;
  const low_latency::Read r = low_latency::read(v, position, out.bytes.get(), capacity, size);
  const bool complete = low_latency::complete(v, position);
  switch (r) {
    case low_latency::Read::ready:
      check(size <= v.slot_size() && size <= capacity);
      check(complete);
      touch(out.bytes.get(), size);
      break;
    case low_latency::Read::too_large:
      check(size <= v.slot_size() && size > capacity);
      check(complete);
      break;
    case low_latency::Read::not_ready:
    case low_latency::Read::corrupt:
      check(size == 0xdeadbeef);  // untouched
      check(!complete);
      break;
    default:
      __builtin_trap();
  }
  return r;
}

// A message of `length` bytes (<= slot size) written as `position`'s words,
// then read back whole.
void ll_write(const Env& e, std::uint64_t position, std::uint32_t incarnation,
              std::uint32_t length) {
  const RingView& v = *e.view;
  check_ll_slot(e, position);
  check(length <= v.slot_size());
  Out message(length);
  for (std::uint32_t i = 0; i < length; ++i) {
    message.bytes[i] = static_cast<std::byte>(static_cast<std::uint8_t>(position * 31 + i));
  }
  low_latency::write(v, position, incarnation, message.bytes.get(), length);
  check(low_latency::complete(v, position));
  Out back(v.slot_size());
  std::uint32_t size = 0;
  check(low_latency::read(v, position, back.bytes.get(), back.size, size) ==
        low_latency::Read::ready);
  check(size == length);
  if (length != 0) check(std::memcmp(back.bytes.get(), message.bytes.get(), length) == 0);
}

// A peer scribbling a word of the ring: a position, the incarnation, or one
// word of the slot at `at` (`data` in its low half, a flag chosen by arg:
// `at`'s own, another lap's, another incarnation's, or none).
void scribble_ll(const RingView& v, std::uint64_t at, std::uint8_t arg, std::uint8_t data) {
  const std::uint64_t values[] = {
      0, 1, v.capacity(), ~std::uint64_t{0}, std::uint64_t{1} << 63, at, at + 1, at + v.capacity()};
  const std::uint64_t n = low_latency_words(v.slot_size());
  std::uint64_t* w = low_latency::words(v, at);
  const std::uint32_t own = low_latency::flag(v, at, data >> 5);
  const std::uint32_t flags[] = {own, low_latency::flag(v, at + v.capacity(), data >> 5),
                                 own ^ (std::uint32_t{1} << 24), 0};
  switch (arg & 7) {
    case 0:
      atomic::store_relaxed(&v.producer()->position, values[(arg >> 3) & 7]);
      break;
    case 1:
      atomic::store_relaxed(&v.consumer()->position, values[(arg >> 3) & 7]);
      break;
    case 2:
      atomic::store_relaxed(&v.producer()->incarnation, std::uint32_t{data});
      break;
    case 3: {  // word 0 with a length: small, the slot size, one past it, huge
      const std::uint32_t lengths[] = {data, static_cast<std::uint32_t>(v.slot_size()),
                                       static_cast<std::uint32_t>(v.slot_size() + 1), ~0u};
      atomic::store_relaxed(w, low_latency::word(lengths[(arg >> 3) & 3], flags[(arg >> 5) & 3]));
      break;
    }
    default:  // word k >= 1 (wrapping within the slot)
      atomic::store_relaxed(w + 1 + (data % (n - 1)),
                            low_latency::word(data * 0x01010101u, flags[(arg >> 3) & 3]));
      break;
  }
}

void run_spsc_low_latency(std::byte* base, const Geometry& g, const Env& e, const std::uint8_t* ops,
                          std::size_t nops) {
  const SpscView v(base, g);
  check(v.low_latency());
  SpscRoles r(v);
  for (std::size_t i = 0; i < nops; ++i) {
    const std::uint8_t op = ops[i] & 7;
    const std::uint8_t arg = static_cast<std::uint8_t>(ops[i] >> 3);
    switch (op) {
      case 0:
        r.produce(arg, [&](std::uint64_t pos, std::uint32_t length) {
          ll_write(e, pos, r.p.incarnation, length);
        });
        break;
      case 1:  // what readable() counts must read
        r.consume(arg, [&](std::uint64_t pos) {
          check(ll_read(e, pos, g.slot_size) == low_latency::Read::ready);
        });
        break;
      case 2:  // read any slot, written or not, into a buffer maybe too small
        (void)ll_read(e, r.c.tail + (arg & 15), (arg & 16) != 0 ? (arg & 15) * 3 : g.slot_size);
        break;
      case 3:
        r.ready();
        (void)low_latency::complete(v, r.p.head + arg);
        break;
      case 4:
        if (const std::optional<std::uint64_t> head = r.take_over_producer()) {
          // What resume_head() skipped past the old head is complete; the
          // new producer writes with the next incarnation.
          for (std::uint64_t pos = *head; pos != r.p.head; ++pos) {
            check(low_latency::complete(v, pos));
          }
          r.p.incarnation = atomic::load_relaxed(&v.producer()->incarnation) + 1;
        }
        break;
      case 5:
        r.take_over_consumer();
        break;
      default: {  // a peer scribbling: the next op byte, if any, is the data
        const std::uint8_t data = i + 1 < nops ? ops[++i] : arg;
        scribble_ll(v, (op & 1) != 0 ? r.c.tail + (arg & 3) : r.p.head + (arg & 3),
                    static_cast<std::uint8_t>(arg | data << 5), data);
        break;
      }
    }
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size < 4) return 0;
  const RingKind kind = (data[0] & 1) != 0 ? RingKind::mpmc : RingKind::spsc;
  const std::uint64_t capacity = std::uint64_t{1} << (((data[0] >> 1) & 7) % 7);
  const std::uint64_t slot_size = ((data[1] | (std::uint64_t{data[2]} << 8)) % 512) + 1;
  const SlotFormat format =
      kind == RingKind::spsc && (data[0] & 0x10) != 0 ? SlotFormat::low_latency : SlotFormat::plain;
  const std::uint32_t lanes =
      kind == RingKind::mpmc && (data[0] & 0x10) != 0
          ? static_cast<std::uint32_t>(std::min(capacity, std::uint64_t{1} << ((data[0] >> 5) % 5)))
          : 0;
  Geometry g;
  if (compute_geometry(kind, capacity, slot_size, g, format, 0, Delivery::reliable, lanes) !=
      GeometryCheck::ok) {
    __builtin_trap();
  }
  const std::size_t nops = std::min<std::size_t>(data[3], size - 4);
  const std::uint8_t* ops = data + 4;
  const std::uint8_t* mem = ops + nops;
  const std::size_t nmem = size - 4 - nops;

  Buffer buf(g.segment_size);
  std::byte* base = buf.bytes;
  // A fresh ring, as create leaves it (each slot free for its position in
  // its lane)...
  std::memset(base, 0, buf.size);
  const std::uint64_t lane_mask = g.capacity / g.lane_count() - 1;
  for (std::uint64_t i = 0; i < g.capacity; ++i) {
    reinterpret_cast<SlotTrailer*>(base + g.slots_offset + i * g.slot_stride + g.trailer_offset())
        ->released = i & lane_mask;
  }
  const RingView view(base, g);
  const Env e{base + g.slots_offset, base + buf.size, &view};
  if (format == SlotFormat::plain) {
    // ...then whatever a peer wrote over it.
    std::memcpy(base + kBlockSize, mem, std::min<std::size_t>(nmem, buf.size - kBlockSize));
    if (kind == RingKind::spsc) {
      run_spsc(base, g, e, ops, nops);
    } else {
      run_mpmc(base, g, ops, nops);
    }
    return 0;
  }

  // Low-latency: positions, incarnation, then the slot words as the input has them.
  const std::uint8_t* m = mem;
  std::size_t left = nmem;
  const auto take = [&](void* to, std::size_t n) {
    const std::size_t k = std::min(n, left);
    std::memcpy(to, m, k);
    m += k;
    left -= k;
  };
  take(&view.producer()->position, 8);
  take(&view.consumer()->position, 8);
  take(&view.producer()->incarnation, 4);
  take(base + g.slots_offset, g.segment_size - g.slots_offset);
  // Nothing past a slot's words may be touched.
  const std::uint64_t words_bytes = 8 * low_latency_words(g.slot_size);
  for (std::uint64_t i = 0; i < g.capacity; ++i) {
    FUZZ_POISON(base + g.slots_offset + i * g.slot_stride + words_bytes,
                g.slot_stride - words_bytes);
  }
  run_spsc_low_latency(base, g, e, ops, nops);
  FUZZ_UNPOISON(base + g.slots_offset, g.segment_size - g.slots_offset);
  return 0;
}
