// The bytes of a segment: the ABI every process, language and GPU agrees on.
//
//   offset 0    SegmentHeader      written once by the creator, read-only after
//   offset 128  ProducerBlock      producer side's hot words (position, notify)
//   offset 256  ProducerWaitBlock  producers' sleeper count (read by consumers)
//   offset 384  ConsumerBlock      consumer side's hot words (position, notify)
//   offset 512  ConsumerWaitBlock  consumers' sleeper count (read by producers)
//   offset 640  ProducerClaims     MPMC: which processes may hold claimed positions
//   offset 2688 ConsumerClaims     MPMC: the same for the consumer side
//   offset 4736 Metadata           the creator's description of the messages
//   offset 5760 DataEvents         descriptors to signal when data comes (event.hpp)
//   offset 6912 RoomEvents         descriptors to signal when room comes
//   offset 8064 SubscriberBlock[n] broadcast rings only: one per subscriber (n = 0 otherwise)
//   then        LaneArea[lanes-1]  MPMC rings of several lanes only: lanes 1.. (lane 0's
//                                  words are the blocks above)
//   slots_offset slots[capacity]   each slot_stride bytes: payload, then trailer; an MPMC
//                                  ring's lane l owns slots l * capacity / lanes onwards
//
// Every field is fixed-width; offsets are stored, never pointers; each hot
// word sits in its own 128-byte block so the two sides never false-share
// (128, not 64: adjacent-line prefetchers pull lines in pairs). Each word that
// crosses between the producer and consumer sides has exactly one writing side
// (DESIGN principle 2), so the layout works between a CPU and a GPU that lack
// host-native atomics.
#pragma once

#include <bit>
#include <cstddef>
#include <cstdint>
#include <type_traits>

#include "shmring/config.hpp"

namespace shmring {

inline constexpr std::uint64_t kMagic = 0x31474E49524D4853ull;  // "SHMRING1", little-endian
// 2: MPMC claim tables (recovery of claims held by dead processes).
// 3: header flags name the slot format (kHeaderLowLatencySlots).
// 4: holders prove they live by locks on bytes of the file (see lock_byte);
//    the metadata block.
// 5: broadcast rings (header subscribers and delivery, subscriber blocks
//    between the control area and the slots, the producer block's floor);
//    event tables (waiters that sleep in epoll, not on the futex), after
//    the metadata block.
// 6: MPMC lanes (header lanes, lane areas between the control area and the
//    slots).
inline constexpr std::uint32_t kAbiVersion = 6;
inline constexpr std::size_t kBlockSize = 128;
inline constexpr std::size_t kPayloadAlign = 64;
// Upper bounds a creator may ask for. They keep every product below in 64 bits
// and let a length travel as a 32-bit word.
inline constexpr std::uint64_t kMaxCapacity = std::uint64_t{1} << 31;
inline constexpr std::uint64_t kMaxSlotSize = std::uint64_t{1} << 30;
inline constexpr std::uint64_t kMaxSegmentSize = std::uint64_t{1} << 44;

// broadcast: one producer, up to kMaxSubscribers subscribers that each read
// every message (broadcast_view.hpp).
enum class RingKind : std::uint32_t { spsc = 1, mpmc = 2, broadcast = 3 };

SHMRING_HD constexpr const char* to_string(RingKind k) noexcept {
  return k == RingKind::spsc        ? "spsc"
         : k == RingKind::mpmc      ? "mpmc"
         : k == RingKind::broadcast ? "broadcast"
                                    : "unknown";
}

// How a broadcast ring treats a subscriber that falls behind.
//   reliable  the producer never overwrites a slot a live subscriber has not
//             released: it waits for the slowest (back-pressure).
//   lossy     the producer never waits; a subscriber lapped by it learns so
//             (Status::overrun) and skips to the newest message. Every slot
//             carries a sequence checked before and after reading, so a
//             message overwritten while it was read is never taken as whole.
enum class Delivery : std::uint32_t { reliable = 0, lossy = 1 };

SHMRING_HD constexpr const char* to_string(Delivery d) noexcept {
  return d == Delivery::reliable ? "reliable" : d == Delivery::lossy ? "lossy" : "unknown";
}

// A broadcast ring has 1 to 64 subscriber blocks, fixed at create: the
// producer of a reliable ring scans them all when its cached room runs out.
inline constexpr std::uint32_t kMaxSubscribers = 64;

// An MPMC ring has one lane that any number of producers share (lanes 0,
// the default), or 1 to 16 lanes (a power of two), fixed at create, each
// owned by one producer. Each lane is a ring of capacity / lanes slots with
// counters and claim tables of its own (mpmc_ring.hpp, "Lanes"): consumers
// read every lane, so producers on different lanes never share a counter.
inline constexpr std::uint32_t kMaxLanes = 16;

// How a slot holds its message.
//   plain        the payload bytes as they are, published by the trailer's
//                `committed` word: zero-copy claim/commit and peek/release.
//   low_latency  SPSC only: the message as 8-byte words, each carrying 4
//                bytes of it and a 4-byte flag naming the position (see
//                low_latency.hpp). A reader sees a whole message, length
//                included, in one round of loads and a writer needs no fence,
//                which halves a small message's trips across PCIe; the bytes
//                in the slot are not the message, so copy calls only.
enum class SlotFormat : std::uint32_t { plain = 0, low_latency = 1 };

SHMRING_HD constexpr const char* to_string(SlotFormat f) noexcept {
  return f == SlotFormat::plain         ? "plain"
         : f == SlotFormat::low_latency ? "low_latency"
                                        : "unknown";
}

// SegmentHeader::flags. Any other bit is refused on open.
inline constexpr std::uint32_t kHeaderLowLatencySlots = 1;
inline constexpr std::uint32_t kHeaderKnownFlags = kHeaderLowLatencySlots;
// A low-latency producer writes every word of the slot for each message (so
// no word can keep a flag from an earlier lap); slots stay small.
inline constexpr std::uint64_t kMaxLowLatencySlotSize = 4096;

// Block 0. The creator fills it, then stores abi_version last (release): a
// reader that sees a non-zero version sees every other field.
struct SegmentHeader {
  std::uint64_t magic;
  std::uint32_t abi_version;   // 0 while the creator is still initialising
  std::uint32_t ring_kind;     // RingKind
  std::uint64_t capacity;      // slots, a power of two
  std::uint64_t slot_size;     // largest payload a slot holds, bytes
  std::uint64_t slot_stride;   // bytes from one slot to the next
  std::uint64_t slots_offset;  // where slot 0 begins
  std::uint64_t segment_size;  // bytes the file must have
  std::uint64_t created_unix_ns;
  std::uint32_t creator_pid;
  std::uint32_t flags;               // kHeaderLowLatencySlots or 0
  std::uint64_t creator_start_time;  // clock ticks since boot, /proc/<pid>/stat field 22
  std::uint32_t subscribers;         // broadcast: subscriber blocks, 1..kMaxSubscribers; else 0
  std::uint32_t delivery;            // broadcast: Delivery; else 0
  std::uint32_t lanes;               // MPMC: owned lanes, 1..kMaxLanes, or 0: one shared; else 0
  std::uint8_t reserved[36];
};

// The process that holds a role: the pid (low 32 bits) packed with the low 32
// bits of its start time, 0 for nobody. Who holds a role is decided by a lock
// on the record's first byte (lock_byte below); the identity says who that is,
// for messages and ring-inspect.
struct OwnerRecord {
  std::uint64_t identity;
  std::uint64_t start_time;  // full start time, clock ticks since boot (informational)
};

// How GPU agents take part on one side of a ring (SideBlock::gpu_flags).
// Without kGpuSharedCounter, the GPU threads of that side coordinate in device
// memory and CPU agents may not join that side (DESIGN principle 2).
inline constexpr std::uint32_t kGpuSharedCounter =
    1;  // GPU RMWs the shared counter (host-native atomics)

// One side's hot words: the producer block is written by the producer side
// only, the consumer block by the consumer side only. `position` is the SPSC
// head (next position to publish) or tail (next to read), or the MPMC
// enqueue / dequeue counter (next position to claim).
struct SideBlock {
  std::uint64_t position;
  std::uint32_t notify;        // futex word: bumped when the other side sleeps
  std::uint32_t attached;      // CPU handles attached now
  OwnerRecord owner;           // SPSC: the one process holding the role
  std::uint32_t gpu_attached;  // GPU agents attached now (they cannot call futex)
  std::uint32_t gpu_flags;     // kGpuSharedCounter or 0
  // MPMC: positions of this side recovered from dead processes (a producer's
  // claim never committed, skipped; a consumer's never released, dropped).
  std::uint64_t abandoned;
  // MPMC: the process recovering this side's dead claims now (one at a time;
  // taken over if it dies), 0 if none. Packed like OwnerRecord::identity.
  std::uint64_t recovering;
  // SPSC producer block: bumped by each producer that attaches; its low 8
  // bits go into the flags of low-latency slots (see low_latency.hpp).
  std::uint32_t incarnation;
  std::uint32_t reserved0;
  // Reliable broadcast producer block: no position at or above `floor` will
  // be overwritten until every subscriber the producer sees has released it.
  // It only grows; a subscriber that joins reads it to know where it may
  // start (broadcast_view.hpp, "Joining").
  std::uint64_t floor;
  // Producer block: kStreamOpen, or kStreamClosed once a producer ended the
  // stream (close(), or its handle went with close-on-exit). Written by the
  // producer side only (an attaching producer reopens it), after the last
  // publication, so a consumer that reads kStreamClosed and then finds the
  // ring empty has every message. In bytes that were reserved (zero in every
  // version-5 segment, hence open): no ABI bump.
  std::uint32_t stream;
  std::uint8_t reserved[52];
};
inline constexpr std::uint32_t kStreamOpen = 0;
inline constexpr std::uint32_t kStreamClosed = 1;
using ProducerBlock = SideBlock;
using ConsumerBlock = SideBlock;

// Sleeper counts live apart from the hot positions: the other side reads them
// after every publication, and they change only when somebody goes to sleep.
// One word counts both kinds of waiter, so that a publisher's one load tells
// whether anybody waits: futex sleepers in units of kFutexWaiter (the low 16
// bits), armed event descriptors (event.hpp) in units of kEventWaiter (the
// high 16). The wake path then makes the futex call only for sleepers and
// writes FIFOs only for descriptors: a descriptor armed and never waited on
// costs a publisher a load, not a system call per message.
struct WaitBlock {
  std::uint32_t waiters;
  std::uint8_t reserved[124];
};
inline constexpr std::uint32_t kFutexWaiter = 1;
inline constexpr std::uint32_t kEventWaiter = std::uint32_t{1} << 16;
inline constexpr std::uint32_t kFutexWaiterMask = kEventWaiter - 1;

// MPMC: which process may still hold claimed positions of one side. A CPU
// handle takes a record when it attaches (one CAS on `holder`, from 0 or from
// a holder that died) and gives it back when destroyed. Before a claim made
// while it holds no other, it stores in `low` the counter value it is about
// to claim from, so every position it claims until it is idle again is >=
// low; idle, low is kClaimIdle. A position that was claimed (the counter
// passed it) but never committed (or released), and that no live holder's
// `low` covers, was claimed by a process that died: it may be recovered.
// Each table is written by the agents of its own side only.
inline constexpr std::size_t kClaimRecords = 32;
inline constexpr std::uint64_t kClaimIdle = ~std::uint64_t{0};

struct ClaimRecord {
  std::uint64_t holder;  // pid | start time << 32, as OwnerRecord::identity; 0: free
  std::uint64_t low;     // kClaimIdle, or no claim of the holder is below it
  std::uint8_t reserved[48];
};

struct ClaimTable {
  ClaimRecord records[kClaimRecords];
};

// At the end of every slot, so that a small payload (at the slot's 64-byte
// aligned start) shares its cache line with the word that publishes it.
struct SlotTrailer {
  std::uint64_t committed;  // producer: position + 1 once `position`'s payload is readable
  std::uint32_t length;     // producer: payload bytes
  std::uint32_t flags;      // producer: kSlotSkipped or 0
  std::uint64_t released;   // MPMC consumer: position + capacity once rewritable
  std::uint64_t reserved;
};

// An MPMC producer that claimed a slot and gave it up still has to commit it
// (the claim moved the shared counter); consumers pass over such a slot.
inline constexpr std::uint32_t kSlotSkipped = 1;

// What the creator says about the messages, for every opener to read: a
// typed ring's dtype and shape, a video stream's caps. Opaque bytes to the
// library, written once before the ABI version is stored and never after;
// an opener copies them once and checks the length.
inline constexpr std::size_t kMetadataCapacity = 1024 - 8;

struct Metadata {
  std::uint32_t length;  // bytes of `bytes` in use, at most kMetadataCapacity
  std::uint32_t reserved;
  std::uint8_t bytes[kMetadataCapacity];
};

// Waiters that sleep in epoll/poll/select (shmring/event.hpp), one table per
// kind of progress: DataEvents for consumers waiting for data (signalled by
// producers), RoomEvents for producers waiting for room (signalled by
// consumers). Each waiter holds an entry (taken like a claim record: a lock
// on its first byte, lock_byte::event_entry) and has a FIFO in /dev/shm named
// kEventFifoPrefix (event.hpp) + the entry's endpoint id in hex. To wait it sets its bit
// in `armed` and raises the side's sleeper count (WaitBlock::waiters), so a
// publisher's one existing check of that count is the only hook on the hot
// path; a publisher that sees the count takes `armed` with one exchange and
// writes a byte to each FIFO whose bit it took. `armed` is the one word both
// sides read-modify-write: only CPU agents arm or signal (a kernel cannot
// write to a FIFO), so principle 2 holds.
inline constexpr std::size_t kEventEntries = 16;
inline constexpr std::size_t kEventIdBytes = 16;

struct EventEntry {
  std::uint64_t holder;  // pid | start time << 32, as OwnerRecord::identity; 0: free
  // 1 while this waiter's raise of the side's sleeper count is outstanding:
  // set after the raise, cleared before the matching drop, so whoever
  // collects a dead waiter's entry knows whether to drop the count for it.
  std::uint32_t raised;
  std::uint32_t uid;                     // owner the FIFO must have
  std::uint8_t endpoint[kEventIdBytes];  // random; names the FIFO; all 0: none yet
  std::uint8_t reserved[32];
};

struct EventTable {
  std::uint32_t armed;  // bit i: entry i waits and has not been signalled
  std::uint8_t reserved[124];
  EventEntry entries[kEventEntries];
};

// Broadcast rings: one block per subscriber, right after the control area.
// A subscriber takes a block by locking its lock byte (lock_byte::subscriber)
// and writes every word of it but `evicted`, the producer's one word, which
// sits in the other 64-byte line and is written only when a holder died.
//
//   state    kSubscriberFree (never used), kSubscriberActive (it reads and,
//            in a reliable ring, holds the producer back), kSubscriberRetired
//            (it left). A holder that dies leaves it active: whether the
//            block still counts is told by its lock, and the producer of a
//            reliable ring records the death in `evicted`.
//   session  bumped by every join, so that `evicted`, which names a session,
//            never applies to the block's next holder.
//   cursor   the next position it reads; in a reliable ring every slot from
//            cursor on is kept until the subscriber releases it.
inline constexpr std::uint32_t kSubscriberFree = 0;
inline constexpr std::uint32_t kSubscriberActive = 1;
inline constexpr std::uint32_t kSubscriberRetired = 2;

struct SubscriberBlock {
  std::uint64_t cursor;      // subscriber: next position to read
  std::uint64_t holder;      // subscriber: pid | start time << 32 (OwnerRecord::identity); 0: none
  std::uint64_t start_time;  // subscriber: its full start time (informational)
  std::uint32_t state;       // subscriber: kSubscriberFree / Active / Retired
  std::uint32_t session;     // subscriber: joins of this block so far
  std::uint64_t lapped;      // subscriber, lossy: times the producer lapped it
  std::uint64_t lost;        // subscriber, lossy: messages skipped because lapped
  std::uint64_t joined_at;   // subscriber: the position it joined at (informational)
  std::uint8_t reserved0[8];
  // Producer: the session it found dead (its holder's lock gone while the
  // state said active). A reliable producer no longer waits for the block
  // while `evicted == session`.
  std::uint32_t evicted;
  std::uint8_t reserved1[60];
};

struct ControlArea {
  SegmentHeader header;
  ProducerBlock producer;
  WaitBlock producer_wait;
  ConsumerBlock consumer;
  WaitBlock consumer_wait;
  ClaimTable producer_claims;
  ClaimTable consumer_claims;
  Metadata metadata;
  EventTable data_events;  // consumers waiting for data
  EventTable room_events;  // producers waiting for room
};

// An MPMC lane's own words, for lanes 1 to lanes - 1 (lane 0's are the
// control area's). The blocks sit at the offsets they have in the control
// area, so one view addresses either through the same fields (RingView::
// lane_area()); the padding is never used. Per lane: the counters, what was
// recovered, the recovery lock and the claim tables. Per ring (the control
// area's): the sleeper counts and futex words, the stream word, GPU agents
// and the count of attached handles, so that a consumer sleeps once for
// every lane.
struct LaneArea {
  std::uint8_t unused0[kBlockSize];
  SideBlock producer;
  std::uint8_t unused1[kBlockSize];
  SideBlock consumer;
  std::uint8_t unused2[kBlockSize];
  ClaimTable producer_claims;
  ClaimTable consumer_claims;
};

static_assert(std::endian::native == std::endian::little, "the segment ABI is little-endian");
static_assert(std::is_standard_layout_v<ControlArea> && std::is_trivially_copyable_v<ControlArea>);
static_assert(std::is_standard_layout_v<SlotTrailer> && std::is_trivially_copyable_v<SlotTrailer>);
static_assert(sizeof(SegmentHeader) == kBlockSize);
static_assert(offsetof(SegmentHeader, magic) == 0);
static_assert(offsetof(SegmentHeader, abi_version) == 8);
static_assert(offsetof(SegmentHeader, ring_kind) == 12);
static_assert(offsetof(SegmentHeader, capacity) == 16);
static_assert(offsetof(SegmentHeader, slot_size) == 24);
static_assert(offsetof(SegmentHeader, slot_stride) == 32);
static_assert(offsetof(SegmentHeader, slots_offset) == 40);
static_assert(offsetof(SegmentHeader, segment_size) == 48);
static_assert(offsetof(SegmentHeader, created_unix_ns) == 56);
static_assert(offsetof(SegmentHeader, creator_pid) == 64);
static_assert(offsetof(SegmentHeader, flags) == 68);
static_assert(offsetof(SegmentHeader, creator_start_time) == 72);
static_assert(offsetof(SegmentHeader, subscribers) == 80);
static_assert(offsetof(SegmentHeader, delivery) == 84);
static_assert(offsetof(SegmentHeader, lanes) == 88);
static_assert(sizeof(OwnerRecord) == 16 && offsetof(OwnerRecord, start_time) == 8);
static_assert(offsetof(OwnerRecord, identity) == 0);
static_assert(sizeof(SideBlock) == kBlockSize);
static_assert(offsetof(SideBlock, position) == 0);
static_assert(offsetof(SideBlock, notify) == 8);
static_assert(offsetof(SideBlock, attached) == 12);
static_assert(offsetof(SideBlock, owner) == 16);
static_assert(offsetof(SideBlock, gpu_attached) == 32);
static_assert(offsetof(SideBlock, gpu_flags) == 36);
static_assert(offsetof(SideBlock, abandoned) == 40 && offsetof(SideBlock, recovering) == 48);
static_assert(offsetof(SideBlock, incarnation) == 56);
static_assert(offsetof(SideBlock, floor) == 64 && offsetof(SideBlock, stream) == 72);
static_assert(sizeof(ClaimRecord) == 64 && offsetof(ClaimRecord, low) == 8);
static_assert(sizeof(ClaimTable) == 16 * kBlockSize);
static_assert(sizeof(WaitBlock) == kBlockSize && offsetof(WaitBlock, waiters) == 0);
static_assert(offsetof(ControlArea, producer) == 128, "producer block must start a 128-byte block");
static_assert(offsetof(ControlArea, producer_wait) == 256);
static_assert(offsetof(ControlArea, consumer) == 384,
              "consumer block must be 128 bytes from the producer's");
static_assert(offsetof(ControlArea, consumer_wait) == 512);
static_assert(offsetof(ControlArea, producer_claims) == 640);
static_assert(offsetof(ControlArea, consumer_claims) == 2688);
static_assert(offsetof(ControlArea, metadata) == 4736);
static_assert(sizeof(Metadata) == 8 * kBlockSize && offsetof(Metadata, bytes) == 8);
static_assert(sizeof(EventEntry) == 64 && offsetof(EventEntry, raised) == 8);
static_assert(offsetof(EventEntry, uid) == 12 && offsetof(EventEntry, endpoint) == 16);
static_assert(sizeof(EventTable) == 9 * kBlockSize && offsetof(EventTable, entries) == kBlockSize);
static_assert(kEventEntries <= 32, "one bit of EventTable::armed per entry");
static_assert(offsetof(ControlArea, data_events) == 5760);
static_assert(offsetof(ControlArea, room_events) == 6912);
static_assert(sizeof(ControlArea) == 8064);
static_assert(offsetof(LaneArea, producer) == offsetof(ControlArea, producer) &&
              offsetof(LaneArea, consumer) == offsetof(ControlArea, consumer) &&
              offsetof(LaneArea, producer_claims) == offsetof(ControlArea, producer_claims) &&
              offsetof(LaneArea, consumer_claims) == offsetof(ControlArea, consumer_claims));
static_assert(sizeof(LaneArea) == 37 * kBlockSize && std::is_standard_layout_v<LaneArea>);
static_assert(sizeof(SlotTrailer) == 32);
static_assert(sizeof(SubscriberBlock) == kBlockSize);
static_assert(std::is_standard_layout_v<SubscriberBlock> &&
              std::is_trivially_copyable_v<SubscriberBlock>);
static_assert(offsetof(SubscriberBlock, cursor) == 0 && offsetof(SubscriberBlock, holder) == 8);
static_assert(offsetof(SubscriberBlock, start_time) == 16);
static_assert(offsetof(SubscriberBlock, state) == 24 && offsetof(SubscriberBlock, session) == 28);
static_assert(offsetof(SubscriberBlock, lapped) == 32 && offsetof(SubscriberBlock, lost) == 40);
static_assert(offsetof(SubscriberBlock, joined_at) == 48);
static_assert(offsetof(SubscriberBlock, evicted) == 64,
              "the producer's word starts the block's second 64-byte line");
static_assert(offsetof(SlotTrailer, committed) == 0 && offsetof(SlotTrailer, length) == 8);
static_assert(offsetof(SlotTrailer, flags) == 12 && offsetof(SlotTrailer, released) == 16);

// Liveness. A process proves it still holds a role by keeping a write lock
// (fcntl F_OFD_SETLK) on one byte of the segment file: the first byte of the
// record that names it. The kernel drops the lock when the holder's last
// descriptor of it closes, which includes its death by any signal, so a dead
// holder is told from a live one without pids, start times or /proc, across
// users and pid namespaces. The locks cover file bytes, not memory: they
// neither stop nor slow anyone's loads and stores.
namespace lock_byte {
// The creator, from the file's creation until its header is complete.
inline constexpr std::uint64_t kCreator = 0;
constexpr std::uint64_t side(bool producer) noexcept {
  return producer ? offsetof(ControlArea, producer) : offsetof(ControlArea, consumer);
}
// The SPSC producer or consumer role.
constexpr std::uint64_t owner(bool producer) noexcept {
  return side(producer) + offsetof(SideBlock, owner);
}
// The process recovering a side's dead claims (MPMC); `lane`: where the
// lane's words begin (RingView::lane_offset(), 0 for lane 0).
constexpr std::uint64_t recovering(bool producer, std::uint64_t lane = 0) noexcept {
  return lane + side(producer) + offsetof(SideBlock, recovering);
}
// Claim record `i` of a side (MPMC), in the lane whose words begin at `lane`.
constexpr std::uint64_t claim_record(bool producer, std::size_t i,
                                     std::uint64_t lane = 0) noexcept {
  return lane +
         (producer ? offsetof(ControlArea, producer_claims)
                   : offsetof(ControlArea, consumer_claims)) +
         i * sizeof(ClaimRecord);
}
// Event entry `i` of the table of waiters for data (or for room).
constexpr std::uint64_t event_entry(bool data, std::size_t i) noexcept {
  return (data ? offsetof(ControlArea, data_events) : offsetof(ControlArea, room_events)) +
         offsetof(EventTable, entries) + i * sizeof(EventEntry);
}
static_assert(lock_byte::event_entry(true, 0) == 5888 && lock_byte::event_entry(false, 1) == 7104);
// Broadcast subscriber block `i`: the first byte of its holder word.
constexpr std::uint64_t subscriber(std::size_t i) noexcept {
  return sizeof(ControlArea) + i * sizeof(SubscriberBlock) + offsetof(SubscriberBlock, holder);
}
}  // namespace lock_byte
static_assert(lock_byte::subscriber(0) == 8072 && lock_byte::subscriber(63) == 8072 + 63 * 128);
static_assert(lock_byte::owner(true) == 144 && lock_byte::owner(false) == 400);
static_assert(lock_byte::recovering(true) == 176 && lock_byte::claim_record(false, 1) == 2752);

// Where slot 0 begins: right after the control area, and after the
// subscriber blocks of a broadcast ring (kSlotsOffset + n * 128) or the lane
// areas of an MPMC ring of several lanes.
inline constexpr std::uint64_t kSlotsOffset = sizeof(ControlArea);
static_assert(kSlotsOffset % kBlockSize == 0, "slot 0 must start a 128-byte block");
SHMRING_HD constexpr std::uint64_t slots_offset_for(std::uint32_t subscribers,
                                                    std::uint32_t lanes = 1) noexcept {
  return kSlotsOffset + std::uint64_t{subscribers} * sizeof(SubscriberBlock) +
         std::uint64_t{lanes - 1} * sizeof(LaneArea);
}
// Where the words of MPMC lane `lane` begin (0 for lane 0: the control area).
SHMRING_HD constexpr std::uint64_t lane_offset(std::uint32_t lane) noexcept {
  return lane == 0 ? 0 : kSlotsOffset + std::uint64_t{lane - 1} * sizeof(LaneArea);
}

// Why a geometry is not acceptable; shared by create's argument checks and
// open's header validation so both name the same rule.
enum class GeometryCheck : std::uint8_t {
  ok,
  capacity_zero,
  capacity_not_power_of_two,
  capacity_too_large,
  slot_size_zero,
  slot_size_too_large,
  size_overflow,
  format_unknown,
  format_needs_spsc,
  low_latency_slot_too_large,
  kind_unknown,
  subscribers_out_of_range,    // broadcast with 0 or more than kMaxSubscribers
  subscribers_need_broadcast,  // a subscriber count on an spsc or mpmc ring
  delivery_unknown,
  delivery_needs_broadcast,  // lossy delivery on an spsc or mpmc ring
  lanes_out_of_range,        // more than kMaxLanes, not a power of two, or above capacity
  lanes_need_mpmc,           // lanes on an spsc or broadcast ring
};

struct Geometry {
  RingKind kind{};
  SlotFormat format = SlotFormat::plain;
  std::uint64_t capacity = 0;
  std::uint64_t slot_size = 0;
  std::uint64_t slot_stride = 0;
  std::uint64_t slots_offset = 0;
  std::uint64_t segment_size = 0;
  std::uint32_t subscribers = 0;  // broadcast: subscriber blocks; else 0
  Delivery delivery = Delivery::reliable;
  std::uint32_t lanes = 0;  // MPMC: owned lanes, or 0 for one shared lane; else 0

  SHMRING_HD constexpr std::uint64_t mask() const noexcept { return capacity - 1; }
  // How many lanes the slots are split into: 1 for a shared lane.
  SHMRING_HD constexpr std::uint32_t lane_count() const noexcept { return lanes == 0 ? 1 : lanes; }
  // The trailer sits at the end of the slot, slot_stride - 32 bytes in.
  SHMRING_HD constexpr std::uint64_t trailer_offset() const noexcept {
    return slot_stride - sizeof(SlotTrailer);
  }
  friend constexpr bool operator==(const Geometry&, const Geometry&) = default;
};

SHMRING_HD constexpr std::uint64_t round_up(std::uint64_t v, std::uint64_t to) noexcept {
  return (v + to - 1) / to * to;
}

// Low-latency slots: one length word, then one word per 4 bytes of message,
// rounded up to an even count so the slot is written and read in 16-byte
// pairs.
SHMRING_HD constexpr std::uint64_t low_latency_words(std::uint64_t slot_size) noexcept {
  return round_up(1 + (slot_size + 3) / 4, 2);
}

// The one place the layout of the slot area is decided. `subscribers` and
// `delivery` describe broadcast rings and must be 0 and reliable for the
// others, `lanes` MPMC rings and must be 0 for the others, so that a header
// scribbled into looking like one is refused.
SHMRING_HD constexpr GeometryCheck compute_geometry(RingKind kind, std::uint64_t capacity,
                                                    std::uint64_t slot_size, Geometry& out,
                                                    SlotFormat format = SlotFormat::plain,
                                                    std::uint32_t subscribers = 0,
                                                    Delivery delivery = Delivery::reliable,
                                                    std::uint32_t lanes = 0) noexcept {
  if (kind != RingKind::spsc && kind != RingKind::mpmc && kind != RingKind::broadcast) {
    return GeometryCheck::kind_unknown;
  }
  if (capacity == 0) return GeometryCheck::capacity_zero;
  if ((capacity & (capacity - 1)) != 0) return GeometryCheck::capacity_not_power_of_two;
  if (capacity > kMaxCapacity) return GeometryCheck::capacity_too_large;
  if (slot_size == 0) return GeometryCheck::slot_size_zero;
  if (slot_size > kMaxSlotSize) return GeometryCheck::slot_size_too_large;
  if (format != SlotFormat::plain && format != SlotFormat::low_latency) {
    return GeometryCheck::format_unknown;
  }
  const bool low_latency = format == SlotFormat::low_latency;
  // Low-latency slots have no `committed` word to claim positions with, so
  // several producers (or consumers) could not share a ring of them.
  if (low_latency && kind != RingKind::spsc) return GeometryCheck::format_needs_spsc;
  if (low_latency && slot_size > kMaxLowLatencySlotSize) {
    return GeometryCheck::low_latency_slot_too_large;
  }
  const bool broadcast = kind == RingKind::broadcast;
  if (broadcast && (subscribers == 0 || subscribers > kMaxSubscribers)) {
    return GeometryCheck::subscribers_out_of_range;
  }
  if (!broadcast && subscribers != 0) return GeometryCheck::subscribers_need_broadcast;
  if (delivery != Delivery::reliable && delivery != Delivery::lossy) {
    return GeometryCheck::delivery_unknown;
  }
  if (!broadcast && delivery != Delivery::reliable) return GeometryCheck::delivery_needs_broadcast;
  if (lanes != 0 && kind != RingKind::mpmc) return GeometryCheck::lanes_need_mpmc;
  if (lanes > kMaxLanes || (lanes & (lanes - 1)) != 0 || lanes > capacity) {
    return GeometryCheck::lanes_out_of_range;
  }
  const std::uint64_t body = low_latency ? 8 * low_latency_words(slot_size) : slot_size;
  const std::uint64_t stride = round_up(body + sizeof(SlotTrailer), kPayloadAlign);
  const std::uint64_t slots_offset = slots_offset_for(subscribers, lanes == 0 ? 1 : lanes);
  // capacity <= 2^31 and stride <= 2^30 + 64: the product fits in 64 bits, but
  // not in the segment limit; check by division so the rule reads plainly.
  if (capacity > (kMaxSegmentSize - slots_offset) / stride) return GeometryCheck::size_overflow;
  out.kind = kind;
  out.format = format;
  out.capacity = capacity;
  out.slot_size = slot_size;
  out.slot_stride = stride;
  out.slots_offset = slots_offset;
  out.segment_size = slots_offset + capacity * stride;
  out.subscribers = subscribers;
  out.delivery = delivery;
  out.lanes = lanes;
  return GeometryCheck::ok;
}

SHMRING_HD constexpr const char* to_string(GeometryCheck c) noexcept {
  switch (c) {
    case GeometryCheck::ok:
      return "ok";
    case GeometryCheck::capacity_zero:
      return "capacity is 0";
    case GeometryCheck::capacity_not_power_of_two:
      return "capacity is not a power of two";
    case GeometryCheck::capacity_too_large:
      return "capacity exceeds 2^31 slots";
    case GeometryCheck::slot_size_zero:
      return "slot size is 0";
    case GeometryCheck::slot_size_too_large:
      return "slot size exceeds 1 GiB";
    case GeometryCheck::size_overflow:
      return "capacity x slot size exceeds the 16 TiB segment limit";
    case GeometryCheck::format_unknown:
      return "slot format is neither plain (0) nor low_latency (1)";
    case GeometryCheck::format_needs_spsc:
      return "low-latency slots need an spsc ring";
    case GeometryCheck::low_latency_slot_too_large:
      return "low-latency slots hold at most 4096 bytes";
    case GeometryCheck::kind_unknown:
      return "ring kind is not spsc (1), mpmc (2) or broadcast (3)";
    case GeometryCheck::subscribers_out_of_range:
      return "a broadcast ring has 1 to 64 subscribers";
    case GeometryCheck::subscribers_need_broadcast:
      return "only broadcast rings have subscribers";
    case GeometryCheck::delivery_unknown:
      return "delivery is neither reliable (0) nor lossy (1)";
    case GeometryCheck::delivery_needs_broadcast:
      return "lossy delivery needs a broadcast ring";
    case GeometryCheck::lanes_out_of_range:
      return "an mpmc ring has 0 (one shared) or 1 to 16 lanes, a power of two and at most its "
             "capacity";
    case GeometryCheck::lanes_need_mpmc:
      return "only mpmc rings have lanes";
  }
  return "unknown";
}

}  // namespace shmring
