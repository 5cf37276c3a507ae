// The broadcast algorithm, as a view over a segment: one producer, up to
// kMaxSubscribers subscribers, each reading every message in place.
//
//   1. The producer writes payload and length into a slot, stores the slot's
//      `committed` word (= position + 1, release), then the head once per
//      batch, exactly as an SPSC producer does. It takes the lines of the
//      next few slots past the head exclusive ahead of its writes
//      (prefetch_ahead()).
//   2. Each subscriber owns one 128-byte SubscriberBlock (layout.hpp) with its
//      cursor, polls the trailer of the slot at its cursor (acquire) and
//      reads the slot in place; several subscribers read one slot at once.
//      An empty poll reads the head only when that trailer shows 0
//      (lapped()): the head is the line the producer stores every time.
//   3. Reliable delivery: a subscriber releases by storing its cursor. The
//      producer's room is capacity minus its distance from the lowest cursor
//      of the blocks that count (active, and not evicted as dead); it keeps
//      that lowest cursor cached and scans the blocks again only when the
//      cache says "full" (refresh()).
//   4. Joining (reliable): a subscriber that joins publishes its cursor and
//      state, then reads the producer's `floor` and moves up to it if it
//      started below. The producer publishes the floor before the scan its
//      room comes from. Both pairs are seq_cst store-then-load, so either the
//      scan sees the new subscriber or the subscriber sees the floor (see
//      "Why joining is safe").
//   5. Lossy delivery: the producer never waits. Before it writes a slot it
//      stores `committed = 0` and a release fence; the payload goes in as
//      relaxed atomic words; `committed = position + 1` (release) ends it. A
//      subscriber loads `committed` (acquire) before reading and again after
//      an acquire fence: if it is no longer position + 1, the slot was being
//      rewritten while it read and what it read is discarded
//      (Status::overrun), a seqlock (see "Why the seqlock is safe").
//   6. Lapped (lossy): a slot that holds a later position, or one being
//      rewritten (committed = 0) with a head more than a lap past the
//      cursor, means the subscriber was lapped:
//      readable() says Status::overrun, recover_overrun() skips to the newest
//      message and counts what was lost in the subscriber's block.
//   7. Sleepers: as in spsc_view.hpp ("The sleeper handshake"): a publisher
//      stores (release), then loads the sleeper count (relaxed), no fence; a
//      sleeper raises its count (seq_cst read-modify-write), then re-checks
//      with seq_cst loads. All subscribers share the consumers' count; the
//      producer of a reliable ring uses the producers'.
//
// Why joining is safe. Let F be the floor store of a refresh() and S its
// second scan, and J the joiner's last cursor store and L its last floor load.
// If L comes before F in the single order of seq_cst operations, then J does
// too and so S, after F, sees J's cursor: the room it computes respects it. If
// F comes before L, L reads F's floor or a later one (the floor only grows),
// and the joiner leaves the loop only with a cursor at or above it, while the
// room from that refresh never reaches past the floor. Either way no slot at
// or above the joiner's cursor is overwritten before it releases it.
//
// Why the seqlock is safe. The writer: committed = 0 (relaxed), release
// fence, payload (relaxed atomic words), committed = pos + 1 (release). The
// reader: s1 = committed (acquire), payload (relaxed atomic words), acquire
// fence, s2 = committed (relaxed). If any payload word the reader loaded came
// from a rewrite, the writer's release fence synchronises with the reader's
// acquire fence, so the writer's `committed = 0` happens before the s2 load,
// which then sees 0 or a later position, never pos + 1: a torn copy is always
// detected. s1 == pos + 1 (acquire) makes the whole message of pos visible.
// The positions are 64-bit and never repeat, so s2 == s1 means "untouched".
//
// Single writer per word (DESIGN principle 2): the producer writes the head,
// the floor, the trailers and each block's `evicted`; a subscriber writes the
// rest of its own block. Only the sleeper counts are read-modify-written,
// each by one side (the subscribers share theirs: CPU subscribers only, or a
// GPU subscriber waits with bounded sleeps and never raises it). Every
// function is noexcept, allocation-free and system-call-free; whether a
// holder lives (and so `evict()`) is for the caller (src/subscribers.cpp).
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>

#include "shmring/ring_view.hpp"

namespace shmring {

// Where a joining subscriber starts reading.
enum class JoinAt : std::uint8_t {
  oldest,  // the oldest message still in the ring
  newest,  // the newest message already published (or the next, if none yet)
  next,    // the first message published after the join
};

struct BroadcastProducerCursor {
  std::uint64_t head = 0;   // next position to publish
  std::uint64_t limit = 0;  // reliable: no counted subscriber reads below it (cached)
  std::uint64_t floor = 0;  // reliable: the floor this producer published last
};

struct BroadcastSubscriberCursor {
  std::uint32_t index = 0;   // its block
  std::uint64_t next = 0;    // next position to read
  std::uint64_t lapped = 0;  // lossy: times lapped (mirrored in the block)
  std::uint64_t lost = 0;    // lossy: messages skipped because lapped (mirrored)
};

// Message bytes into (out of) a lossy slot as relaxed atomic 8-byte words:
// a subscriber may read the slot while the producer rewrites it, which the
// seqlock detects; atomic words keep that race out of the C++ memory model's
// undefined behaviour (and ThreadSanitizer quiet), and on x86, ARM and GPUs
// they are plain loads and stores. The payload is 64-byte aligned and a slot
// has room for the last word rounded up (the trailer starts at or past
// round_up(slot_size, 8)).
SHMRING_HD inline void store_words(std::byte* to, const void* from, std::size_t n) noexcept {
  const auto* src = static_cast<const std::byte*>(from);
  for (std::size_t i = 0; i < n; i += 8) {
    std::uint64_t w = 0;
    memcpy(&w, src + i, n - i < 8 ? n - i : 8);
    atomic::store_relaxed(reinterpret_cast<std::uint64_t*>(to + i), w);
  }
}
SHMRING_HD inline void load_words(void* to, const std::byte* from, std::size_t n) noexcept {
  auto* dst = static_cast<std::byte*>(to);
  for (std::size_t i = 0; i < n; i += 8) {
    const std::uint64_t w = atomic::load_relaxed(reinterpret_cast<const std::uint64_t*>(from + i));
    memcpy(dst + i, &w, n - i < 8 ? n - i : 8);
  }
}
static_assert(kPayloadAlign % 8 == 0 && sizeof(SlotTrailer) % 8 == 0,
              "payload words and the trailer are 8-byte aligned");

class BroadcastView : public RingView {
 public:
  BroadcastView() = default;
  SHMRING_HD BroadcastView(std::byte* base, const Geometry& g) noexcept
      : RingView(base, g),
        blocks_(reinterpret_cast<SubscriberBlock*>(base + kSlotsOffset)),
        subscribers_(g.subscribers <= kMaxSubscribers ? g.subscribers : 0),
        lossy_(g.delivery == Delivery::lossy) {}

  SHMRING_HD std::uint32_t subscribers() const noexcept { return subscribers_; }
  SHMRING_HD bool lossy() const noexcept { return lossy_; }
  SHMRING_HD Delivery delivery() const noexcept {
    return lossy_ ? Delivery::lossy : Delivery::reliable;
  }
  // Block `i` (i < subscribers(); the index is the caller's, never read from
  // the segment).
  SHMRING_HD SubscriberBlock* subscriber(std::uint32_t i) const noexcept { return blocks_ + i; }

  // ---- producer ----------------------------------------------------------

  // A producer's cursor on attach or takeover: the published head, plus any
  // slots a dead predecessor committed but never covered with a head store
  // (subscribers may have read them). The room is left at zero so that the
  // first writable() scans the subscribers.
  SHMRING_HD BroadcastProducerCursor resume() const noexcept {
    BroadcastProducerCursor c;
    c.head = atomic::load_acquire(&producer()->position);
    for (std::uint64_t n = 0; n < capacity(); ++n, ++c.head) {
      if (atomic::load_acquire(&trailer(c.head)->committed) != c.head + 1) break;
    }
    c.floor = atomic::load_acquire(&producer()->floor);
    if (static_cast<std::int64_t>(c.floor - c.head) > 0) c.floor = c.head;  // scribbled: ignored
    c.limit = c.head - capacity();
    return c;
  }

  // Slots writable from c.head now, at most `want` (and at most a lap).
  // Reliable: limited by the slowest subscriber that counts; status =
  // corrupt (and 0) when a subscriber's cursor is ahead of the head. Lossy:
  // always `want`, and the slots are marked as being rewritten (their old
  // messages are gone from here on, even if nothing is published).
  SHMRING_HD std::uint64_t writable(BroadcastProducerCursor& c, std::uint64_t want,
                                    Status& status) const noexcept {
    if (want > capacity()) want = capacity();
    if (lossy_) {
      for (std::uint64_t i = 0; i < want; ++i) {
        atomic::store_relaxed(&trailer(c.head + i)->committed, std::uint64_t{0});
      }
      // SYNC POINT (release fence, pairs with still_valid()'s acquire fence):
      // a subscriber that reads any word written after this sees
      // committed != pos + 1 when it checks again.
      atomic::fence_release();
      return want;
    }
    std::uint64_t room = room_of(c);
    if (room >= want) return want;
    if (!refresh(c, status)) return 0;
    room = room_of(c);
    return room < want ? room : want;
  }

  // Copies a message into a claimed slot: relaxed atomic words in a lossy
  // ring (see store_words), a plain copy in a reliable one, where nobody
  // reads the slot before publish(). Sets the length too.
  SHMRING_HD void write(std::uint64_t position, const void* data,
                        std::uint32_t size) const noexcept {
    if (lossy_) {
      store_words(payload(position), data, size);
    } else {
      copy_message(payload(position), data, size);
    }
    set_length(position, size);
  }

  // Publishes `count` written slots from c.head (lengths set). Returns true
  // when a subscriber sleeps and must be woken.
  SHMRING_HD bool publish(BroadcastProducerCursor& c, std::uint64_t count) const noexcept {
    for (std::uint64_t i = 0; i < count; ++i) {
      const std::uint64_t pos = c.head + i;
      // SYNC POINT (release, pairs with readable()): payload and length of
      // `pos` visible to every subscriber; in a lossy ring, the end of the
      // seqlock's write.
      atomic::store_release(&trailer(pos)->committed, pos + 1);
    }
    c.head += count;
    // SYNC POINT (release, pairs with data_ready(), join() and
    // recover_overrun()): the slots below head are published.
    atomic::store_release(&producer()->position, c.head);
    // The sleeper handshake (spsc_view.hpp): no fence between store and load.
    const bool sleepers = atomic::load_relaxed(&consumer_wait()->waiters) != 0;
    prefetch_ahead(c, count);
    return sleepers;
  }

  // Reliable: scans the subscriber blocks and recomputes c.limit (the lowest
  // cursor that counts, or the head if none does). False, with status =
  // corrupt, when a cursor is ahead of the head. Lossy: nothing to do.
  SHMRING_HD bool refresh(BroadcastProducerCursor& c, Status& status) const noexcept {
    if (lossy_) return true;
    // First scan: how far the floor may rise. It only grows (joiners rely on
    // that), so a cursor below it (a joiner still moving up) does not lower it.
    std::uint64_t lowest = c.head;
    if (!scan(c.head, lowest, /*sync=*/false)) {
      status = Status::corrupt;
      return false;
    }
    if (static_cast<std::int64_t>(lowest - c.floor) > 0) {
      c.floor = lowest;
      // SYNC POINT (seq_cst store, then the seq_cst loads of the second scan;
      // pairs with join(): its seq_cst cursor and state stores, then its
      // seq_cst floor load). Either the scan below sees the joiner, or the
      // joiner sees this floor and starts at or above it.
      atomic::store_seq_cst(&producer()->floor, c.floor);
    }
    // Second scan: the room. Never above the floor, so that a joiner this
    // scan misses (it saw the floor) is respected too.
    std::uint64_t limit = c.floor;
    if (!scan(c.head, limit, /*sync=*/true)) {
      status = Status::corrupt;
      return false;
    }
    c.limit = limit;
    return true;
  }

  // Re-check for a producer that has raised its sleeper count: is there room
  // now? An impossible cursor counts as "ready" so the caller's retry
  // reports corrupt instead of sleeping. Lossy rings always have room.
  SHMRING_HD bool space_ready(BroadcastProducerCursor& c) const noexcept {
    Status s = Status::ok;
    if (!refresh(c, s)) return true;
    return room_of(c) > 0;
  }

  // Reliable: block `index`'s holder died in session `session` (the caller
  // read the session before it found the lock free): the producer stops
  // counting it. A later join bumps the session, so this never applies to
  // the block's next holder.
  SHMRING_HD void evict(std::uint32_t index, std::uint32_t session) const noexcept {
    // Release: the cursor of the dead session no longer matters, and
    // ring-inspect reads it with the state.
    atomic::store_release(&subscriber(index)->evicted, session);
  }

  // Whether block `index` holds the producer of a reliable ring back: active
  // and not evicted.
  SHMRING_HD bool counts(std::uint32_t index) const noexcept {
    const SubscriberBlock* b = subscriber(index);
    if (atomic::load_acquire(&b->state) != kSubscriberActive) return false;
    return atomic::load_acquire(&b->session) != atomic::load_acquire(&b->evicted);
  }

  // ---- subscriber --------------------------------------------------------

  // Joins block `index`, which the caller holds (its lock byte: see
  // src/subscribers.cpp; a view-level test may simply own it), starting at
  // `where`. Never fails: a reliable subscriber starts at or above the floor,
  // so every message from its cursor on stays until it releases it.
  SHMRING_HD BroadcastSubscriberCursor join(std::uint32_t index, JoinAt where) const noexcept {
    BroadcastSubscriberCursor c;
    c.index = index;
    SubscriberBlock* b = subscriber(index);
    std::uint32_t session = atomic::load_relaxed(&b->session) + 1;
    if (session == 0) session = 1;  // never the initial `evicted` of a fresh block
    const std::uint64_t head = atomic::load_acquire(&producer()->position);
    std::uint64_t pos = head;
    if (where == JoinAt::newest && head != 0) pos = head - 1;
    if (where == JoinAt::oldest) {
      // Reliable: the floor (raised to below); lossy: a lap back.
      pos = lossy_ ? (head > capacity() ? head - capacity() : 0) : 0;
    }
    atomic::store_relaxed(&b->lapped, std::uint64_t{0});
    atomic::store_relaxed(&b->lost, std::uint64_t{0});
    atomic::store_seq_cst(&b->cursor, pos);
    atomic::store_seq_cst(&b->session, session);
    // SYNC POINT (seq_cst store, then the seq_cst floor load below; pairs
    // with refresh()'s floor store and second scan): joined.
    atomic::store_seq_cst(&b->state, kSubscriberActive);
    // The floor rises only as far as the producer's scans let it, and once a
    // scan sees this cursor no further than it; the bound keeps a hostile
    // producer that flips the floor from holding the joiner forever.
    for (int round = 0; !lossy_ && round < kJoinRounds; ++round) {
      // SYNC POINT (seq_cst load, pairs with refresh()'s seq_cst floor store).
      const std::uint64_t floor = atomic::load_seq_cst(&producer()->floor);
      if (static_cast<std::int64_t>(floor - pos) <= 0) break;
      // Positions below the floor may be overwritten already: start at it.
      pos = floor;
      atomic::store_seq_cst(&b->cursor, pos);
    }
    atomic::store_relaxed(&b->joined_at, pos);
    c.next = pos;
    return c;
  }

  // Leaves: the block is retired, and a reliable producer stops waiting for
  // it. Returns true when a producer sleeps and must be woken.
  SHMRING_HD bool leave(const BroadcastSubscriberCursor& c) const noexcept {
    // SYNC POINT (release, pairs with refresh()'s scans): done with every
    // slot; they may be rewritten.
    atomic::store_release(&subscriber(c.index)->state, kSubscriberRetired);
    return !lossy_ && atomic::load_relaxed(&producer_wait()->waiters) != 0;
  }

  // How many consecutive committed slots from c.next can be read, at most
  // `max`, each with its length validated. If none: status = overrun (lossy:
  // lapped; call recover_overrun()) or corrupt (an impossible length, or in a
  // reliable ring a slot overwritten under the cursor), else nothing yet.
  SHMRING_HD std::uint64_t readable(const BroadcastSubscriberCursor& c, std::uint64_t max,
                                    Status& status) const noexcept {
    std::uint64_t n = 0;
    for (; n < max; ++n) {
      const std::uint64_t pos = c.next + n;
      // SYNC POINT (acquire, pairs with publish()): payload of `pos` visible;
      // in a lossy ring, the seqlock's first read.
      const std::uint64_t seq = atomic::load_acquire(&trailer(pos)->committed);
      if (seq != pos + 1) {
        if (n == 0 && lapped(pos, seq)) status = lossy_ ? Status::overrun : Status::corrupt;
        break;
      }
      if (!length_ok(committed_length(pos))) {
        // Lossy: a length read while the slot was rewritten is no evidence.
        if (n == 0) status = lossy_ && !still_valid(pos) ? Status::overrun : Status::corrupt;
        break;
      }
    }
    return n;
  }

  // After reading slot `position` in place (read_slot()): whether what was
  // read is `position`'s message. Always true in a reliable ring; in a lossy
  // one false means the producer rewrote the slot meanwhile: discard what was
  // read (Status::overrun).
  SHMRING_HD bool still_valid(std::uint64_t position) const noexcept {
    if (!lossy_) return true;
    // SYNC POINT (acquire fence, pairs with writable()'s release fence): a
    // rewrite seen in any word read before this shows in `committed` below.
    atomic::fence_acquire();
    return atomic::load_relaxed(&trailer(position)->committed) == position + 1;
  }

  // Copies the message at `position` (found readable) to `out`: ok with
  // `size` set, too_large (the message is kept), overrun (lossy: rewritten
  // while copied; `out` holds garbage) or corrupt.
  SHMRING_HD Status copy_out(std::uint64_t position, void* out, std::size_t out_size,
                             std::uint32_t& size) const noexcept {
    const std::uint32_t length = committed_length(position);
    if (!length_ok(length) || length > out_size) {
      if (lossy_ && !still_valid(position)) return Status::overrun;
      return length_ok(length) ? Status::too_large : Status::corrupt;
    }
    if (lossy_) {
      load_words(out, payload(position), length);
      if (!still_valid(position)) return Status::overrun;
    } else {
      copy_message(out, payload(position), length);
    }
    size = length;
    return Status::ok;
  }

  // Hands `count` read slots back. Reliable: the producer may rewrite them;
  // returns true when it sleeps and must be woken. Lossy: the cursor is only
  // this subscriber's progress (ring-inspect shows the lag); never wakes.
  SHMRING_HD bool release(BroadcastSubscriberCursor& c, std::uint64_t count) const noexcept {
    c.next += count;
    return publish_cursor(c);
  }

  // The subscriber's cursor into its block, without the sleeper handshake:
  // for a GPU subscriber, which cannot wake a sleeper (a CPU producer polls
  // while one is attached) and would pay a PCIe round trip for the load.
  SHMRING_HD void store_cursor(const BroadcastSubscriberCursor& c) const noexcept {
    SubscriberBlock* b = subscriber(c.index);
    if (lossy_) {
      atomic::store_relaxed(&b->cursor, c.next);
      return;
    }
    // SYNC POINT (release, pairs with refresh()'s scans and space_ready()):
    // the slots below the cursor may be rewritten.
    atomic::store_release(&b->cursor, c.next);
  }

  // Lapped (readable() said overrun): skips to the newest published message,
  // counting the lap and the messages lost in the block. Returns how many
  // positions were skipped (0 if it was not lapped after all).
  SHMRING_HD std::uint64_t recover_overrun(BroadcastSubscriberCursor& c) const noexcept {
    const std::uint64_t skipped = skip_to(c, newest_position(c));
    if (skipped == 0) return 0;
    c.lapped += 1;
    c.lost += skipped;
    SubscriberBlock* b = subscriber(c.index);
    atomic::store_relaxed(&b->lapped, c.lapped);
    atomic::store_relaxed(&b->lost, c.lost);
    return skipped;
  }

  // Conflated read: moves the cursor to the newest published message if it
  // is past c.next, passing over the ones between (not counted as lost: the
  // subscriber asked). Returns how many it passed over. Then read as usual;
  // in a lossy ring a readable() that says overrun means a newer one came:
  // call newest() again. In a reliable ring the newest message cannot be
  // overwritten while the cursor is at or below it.
  SHMRING_HD std::uint64_t newest(BroadcastSubscriberCursor& c) const noexcept {
    return skip_to(c, newest_position(c));
  }

  // Re-check for a subscriber that has raised the subscribers' sleeper count:
  // has the head moved past c.next? seq_cst, to stay after the raise.
  SHMRING_HD bool data_ready(const BroadcastSubscriberCursor& c) const noexcept {
    // SYNC POINT (seq_cst load, pairs with publish()'s release head store).
    const std::uint64_t head = atomic::load_seq_cst(&producer()->position);
    return static_cast<std::int64_t>(head - c.next) > 0;
  }

 private:
  // After `count` publications (RingView::prefetch_ahead): only slots the
  // subscribers are done with, below the cached room (c.limit + capacity)
  // in a reliable ring, less than a lap past the head in a lossy one.
  SHMRING_HD void prefetch_ahead(const BroadcastProducerCursor& c,
                                 std::uint64_t count) const noexcept {
    RingView::prefetch_ahead(c.head, (lossy_ ? c.head : c.limit) + capacity(), count);
  }

  SHMRING_HD std::uint64_t room_of(const BroadcastProducerCursor& c) const noexcept {
    // head - limit above a lap: a joiner's cursor on its way up to the floor.
    const std::uint64_t used = c.head - c.limit;
    return used >= capacity() ? 0 : capacity() - used;
  }

  // Lowers `lowest` to the cursor of every block that counts. `sync`: the
  // seq_cst loads of refresh()'s second scan (the join handshake); else
  // acquire, which pairs with release() and leave(). False if a cursor is
  // ahead of `head`.
  SHMRING_HD bool scan(std::uint64_t head, std::uint64_t& lowest, bool sync) const noexcept {
    for (std::uint32_t i = 0; i < subscribers_; ++i) {
      const SubscriberBlock* b = subscriber(i);
      // SYNC POINT (acquire / seq_cst, pairs with release(), leave() and
      // join()): every slot below a counted cursor is released.
      const std::uint32_t state =
          sync ? atomic::load_seq_cst(&b->state) : atomic::load_acquire(&b->state);
      if (state != kSubscriberActive) continue;
      const std::uint32_t session =
          sync ? atomic::load_seq_cst(&b->session) : atomic::load_acquire(&b->session);
      if (session == atomic::load_relaxed(&b->evicted)) continue;  // the producer's own word
      const std::uint64_t cursor =
          sync ? atomic::load_seq_cst(&b->cursor) : atomic::load_acquire(&b->cursor);
      if (static_cast<std::int64_t>(cursor - head) > 0) return false;
      if (static_cast<std::int64_t>(cursor - lowest) < 0) lowest = cursor;
    }
    return true;
  }

  // Whether the slot at `pos` (holding `seq`) shows that the producer went
  // a lap past `pos`: it holds a later position, or it is being (re)written
  // (committed = 0: never written yet, or claimed) and the head is more than
  // a lap ahead. A slot that holds an earlier position has not been claimed
  // for `pos` yet, so the producer cannot be a lap past it, and the head is
  // not read: this is every empty poll, and the head is the line the
  // producer stores with every publication; each subscriber reading it would
  // cost the producer an invalidation per message.
  SHMRING_HD bool lapped(std::uint64_t pos, std::uint64_t seq) const noexcept {
    if (seq != 0) return static_cast<std::int64_t>(seq - (pos + 1)) > 0;
    const std::uint64_t head = atomic::load_acquire(&producer()->position);
    return static_cast<std::int64_t>(head - pos) > static_cast<std::int64_t>(capacity());
  }

  // The newest published position: head - 1, or a later one the slot at
  // c.next already names (its head store may still be on its way). A slot
  // naming a position more than a lap past the head is a scribble and is
  // not followed.
  SHMRING_HD std::uint64_t newest_position(const BroadcastSubscriberCursor& c) const noexcept {
    const std::uint64_t head = atomic::load_acquire(&producer()->position);
    std::uint64_t target = head != 0 ? head - 1 : 0;
    const std::uint64_t seq = atomic::load_acquire(&trailer(c.next)->committed);
    if (seq != 0 && static_cast<std::int64_t>(seq - 1 - target) > 0 &&
        seq - 1 - head < capacity()) {
      target = seq - 1;
    }
    return target;
  }

  SHMRING_HD std::uint64_t skip_to(BroadcastSubscriberCursor& c,
                                   std::uint64_t target) const noexcept {
    if (static_cast<std::int64_t>(target - c.next) <= 0) return 0;
    const std::uint64_t skipped = target - c.next;
    c.next = target;
    publish_cursor(c);  // a sleeping producer is woken by its next wait's re-check
    return skipped;
  }

  SHMRING_HD bool publish_cursor(const BroadcastSubscriberCursor& c) const noexcept {
    store_cursor(c);
    // The sleeper handshake, as in publish().
    return !lossy_ && atomic::load_relaxed(&producer_wait()->waiters) != 0;
  }

  static constexpr int kJoinRounds = 1 << 16;

  SubscriberBlock* blocks_ = nullptr;
  std::uint32_t subscribers_ = 0;
  bool lossy_ = false;
};

}  // namespace shmring
