// Low-latency slots (SlotFormat::low_latency): a message as flagged words.
//
//   word 0        message length (low 32 bits) | flag << 32
//   word k >= 1   message bytes 4(k-1) .. 4k-1 (low 32 bits, zero-padded) | flag << 32
//   flag          incarnation << 24 | lap mod (2^24 - 1) + 1, lap = position / capacity
//                 (never 0 in its low 24 bits, so a never-written, zeroed slot
//                 is never complete, whatever position a ring starts from)
//
// Every word is written and read whole: aligned 8-byte accesses are
// single-copy atomic on x86-64 and ARMv8, and a GPU's 16-byte access to host
// memory is not split below 8 bytes on its way over PCIe (the property NCCL's
// LL protocol rests on). So a reader that finds every word of a message
// carrying one flag with its position's lap has the whole message: there is
// no separate publication word, the writer needs no fence, and the words a
// reader polls are the message. A GPU warp (SpscDeviceConsumer::warp_pop)
// loads a message of up to 252 bytes in one round of parallel loads, one
// PCIe round trip, where the plain format costs three dependent ones
// (`committed`, then the length, then the payload) and the writer a system
// fence. The price: half of each slot holds flags, and the bytes in a slot
// are not the message, so only copy calls exist.
//
// Why the lap, and why the writer rewrites every word of the slot for every
// message (not only the words its message needs): then no word is more than
// one lap old, and a lap counter tells the current lap from the previous one.
// Why the incarnation (bumped each time a producer attaches): a producer
// killed half-way through a message leaves words with the current lap; its
// successor writes the same position again, and a reader must not take a
// mix of the two as one message. Words of one message share one flag, so a
// mix shows as a flag mismatch and is read again once complete. (The flag
// keeps 8 bits of the incarnation: a mix could pass only if 256 producers in
// a row died half-way through the same position.)
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>

#include "shmring/atomic.hpp"
#include "shmring/config.hpp"
#include "shmring/ring_view.hpp"

namespace shmring::low_latency {

inline constexpr std::uint32_t kLapBits = 24;
inline constexpr std::uint32_t kLapMask = (std::uint32_t{1} << kLapBits) - 1;
// Words loaded in one round, all issued before any is looked at.
inline constexpr std::uint32_t kRound = 16;
// Words in a 64-byte line (payloads are line-aligned, so line 0 holds word 0).
inline constexpr std::uint64_t kLineWords = 8;

// The lap part of the flag that `position`'s words carry. The capacity is a
// power of two (layout.hpp): a shift, not a 64-bit division, on the path of
// every word written and every poll.
SHMRING_HD inline std::uint32_t lap_flag(const RingView& v, std::uint64_t position) noexcept {
#if defined(__CUDA_ARCH__)
  const int shift = __ffsll(static_cast<long long>(v.capacity())) - 1;
#else
  const int shift = __builtin_ctzll(v.capacity());
#endif
  return static_cast<std::uint32_t>((position >> shift) % kLapMask) + 1;
}
SHMRING_HD inline std::uint32_t flag(const RingView& v, std::uint64_t position,
                                     std::uint32_t incarnation) noexcept {
  return incarnation << kLapBits | lap_flag(v, position);
}
SHMRING_HD constexpr std::uint64_t word(std::uint32_t data, std::uint32_t flag) noexcept {
  return static_cast<std::uint64_t>(flag) << 32 | data;
}
// Words that a message of `bytes` occupies (the length word included).
SHMRING_HD constexpr std::uint64_t message_words(std::uint64_t bytes) noexcept {
  return 1 + (bytes + 3) / 4;
}

SHMRING_HD inline std::uint64_t* words(const RingView& v, std::uint64_t position) noexcept {
  return reinterpret_cast<std::uint64_t*>(v.payload(position));
}

// One 16-byte pair of words. On the GPU one vector access (a single PCIe
// transaction); on a CPU two atomic words (each word is checked on its own).
SHMRING_HD inline void store_pair(std::uint64_t* at, std::uint64_t a, std::uint64_t b) noexcept {
#if defined(__CUDA_ARCH__)
  asm volatile("st.volatile.global.v2.u64 [%0], {%1, %2};" ::"l"(at), "l"(a), "l"(b) : "memory");
#else
  atomic::store_relaxed(at, a);
  atomic::store_relaxed(at + 1, b);
#endif
}
SHMRING_HD inline void load_pair(const std::uint64_t* at, std::uint64_t& a,
                                 std::uint64_t& b) noexcept {
#if defined(__CUDA_ARCH__)
  asm volatile("ld.volatile.global.v2.u64 {%0, %1}, [%2];" : "=l"(a), "=l"(b) : "l"(at) : "memory");
#else
  a = atomic::load_relaxed(at);
  b = atomic::load_relaxed(at + 1);
#endif
}

// The 4 message bytes that word k (k >= 1) carries. Whole chunks are one
// 4-byte load; the last, partial one is assembled byte by byte (the words
// are little-endian, layout.hpp): a memcpy of a variable length would be a
// library call for every message.
SHMRING_HD inline std::uint32_t chunk(const std::byte* data, std::uint32_t size,
                                      std::uint64_t k) noexcept {
  const std::uint64_t at = 4 * (k - 1);
  std::uint32_t d = 0;
  if (at + 4 <= size) {
    std::memcpy(&d, data + at, 4);
  } else {
    for (std::uint64_t i = 0; at + i < size; ++i) {
      d |= static_cast<std::uint32_t>(data[at + i]) << (8 * i);
    }
  }
  return d;
}

// Stores pair p (words 2p and 2p + 1) of a message with flag f: one 16-byte
// access, how a GPU writes (one thread pair by pair, or a warp's lanes a pair
// each).
SHMRING_HD inline void write_pair(std::uint64_t* w, std::uint64_t p, std::uint32_t f,
                                  const std::byte* data, std::uint32_t size) noexcept {
  const std::uint64_t k = 2 * p;
  store_pair(w + k, word(k == 0 ? size : chunk(data, size, k), f),
             word(chunk(data, size, k + 1), f));
}

// Writes `size` (<= slot size) bytes as `position`'s words, every word of the
// slot (see above). The caller publishes nothing else for the reader.
// Correctness needs no order among the words; latency does. Readers load the
// length word first, and x86 stores and a GPU's posted PCIe writes arrive in
// program order, so the 64-byte line holding the length word goes last: a
// reader that sees that word finds the rest there too instead of polling
// again. Within a line the pairs go in address order, so a GPU's stores can
// leave as whole-line writes.
SHMRING_HD inline void write(const RingView& v, std::uint64_t position, std::uint32_t incarnation,
                             const void* message, std::uint32_t size) noexcept {
  const auto* data = static_cast<const std::byte*>(message);
  const std::uint32_t f = flag(v, position, incarnation);
  std::uint64_t* w = words(v, position);
  const std::uint64_t n = low_latency_words(v.slot_size());
#if !defined(__CUDA_ARCH__)
  // A CPU stores word by word: the lines after the first in address order,
  // then the rest of the first, then word 0, the word readers poll. Every
  // word carries its own flag, so no order is needed for correctness (a
  // reader that finds any word of an older lap says not_ready); the order
  // only makes a reader that sees word 0 likely to find the rest already
  // there. Three plain loops (whole chunks, the last partial one, the rest
  // of the slot) rather than a branch per word.
  const std::uint64_t whole = 1 + size / 4;  // words 1 .. whole - 1 carry 4 bytes each
  auto put = [&](std::uint64_t from, std::uint64_t to) {
    std::uint64_t k = from;
    for (; k < to && k < whole; ++k) {
      std::uint32_t d;
      std::memcpy(&d, data + 4 * (k - 1), 4);
      atomic::store_relaxed(w + k, word(d, f));
    }
    if (k < to && k == whole) {
      atomic::store_relaxed(w + k, word(chunk(data, size, k), f));
      ++k;
    }
    for (; k < to; ++k) atomic::store_relaxed(w + k, word(0, f));
  };
  const std::uint64_t line0 = n < kLineWords ? n : kLineWords;
  put(line0, n);
  put(1, line0);
  atomic::store_relaxed(w, word(size, f));  // the word readers poll, last
#else
  for (std::uint64_t line = (n - 1) / kLineWords + 1; line-- > 0;) {
    const std::uint64_t end = (line + 1) * kLineWords < n ? (line + 1) * kLineWords : n;
    for (std::uint64_t k = line * kLineWords; k < end; k += 2) write_pair(w, k / 2, f, data, size);
  }
#endif
}

enum class Read : std::uint8_t {
  ready,      // the message is in `out`, its length in `size`
  not_ready,  // not (completely) written yet: try again later
  too_large,  // complete, but longer than `capacity`; `size` is its length
  corrupt,    // the length word names more bytes than the slot holds
};

// What word 0 of `position`'s slot says; every reader starts here. state is
// not_ready (another lap's words), corrupt (a length beyond the slot) or
// ready: then the words 1 .. words - 1 after it remain to be checked.
struct Head {
  Read state;
  std::uint32_t flag;    // the flag every word of the message carries
  std::uint32_t length;  // message bytes
  std::uint64_t words;   // message_words(length)
};

SHMRING_HD inline Head head(const RingView& v, std::uint64_t position, std::uint64_t w0) noexcept {
  const auto f = static_cast<std::uint32_t>(w0 >> 32);
  const auto length = static_cast<std::uint32_t>(w0);
  if ((f & kLapMask) != lap_flag(v, position)) return {Read::not_ready, f, length, 0};
  if (length > v.slot_size()) return {Read::corrupt, f, length, 0};
  return {Read::ready, f, length, message_words(length)};
}

// Word k (1 <= k < h.words) of the message, as loaded: false if it does not
// carry the message's flag (not written yet); otherwise, when `copy`, its
// bytes go to their place in `dst`.
SHMRING_HD inline bool take(const Head& h, std::uint64_t k, std::uint64_t x, std::byte* dst,
                            bool copy) noexcept {
  if (static_cast<std::uint32_t>(x >> 32) != h.flag) return false;
  if (copy) {
    const auto d = static_cast<std::uint32_t>(x);
    const std::uint64_t at = 4 * (k - 1);
    // A whole chunk is one 4-byte store; only the message's last word may
    // carry fewer bytes (see chunk()).
    if (at + 4 <= h.length) {
      std::memcpy(dst + at, &d, 4);
    } else {
      for (std::uint64_t i = 0; at + i < h.length; ++i) dst[at + i] = std::byte(d >> (8 * i));
    }
  }
  return true;
}

// Loads words [first, first + count) of a slot, count <= kRound and even,
// all issued before any is looked at.
SHMRING_HD inline void load_round(const std::uint64_t* w, std::uint64_t first, std::uint64_t count,
                                  std::uint64_t (&r)[kRound]) noexcept {
  SHMRING_UNROLL
  for (std::uint32_t k = 0; k < kRound; k += 2) {
    if (k < count) load_pair(w + first + k, r[k], r[k + 1]);
  }
}

// Reads `position`'s message into `out` (capacity bytes): word 0 (the
// length), then what the length says is left; on a GPU the first pair, then
// a round at a time. A message not yet complete may have left some of its bytes in `out`
// all the same. Slots hold an even number of words, so a pair never reaches
// past the slot. (On a GPU one thread's loads of host memory follow each
// other, one PCIe round trip apiece; a warp reads faster, see
// SpscDeviceConsumer::warp_pop.)
SHMRING_HD inline Read read(const RingView& v, std::uint64_t position, void* out,
                            std::uint64_t capacity, std::uint32_t& size) noexcept {
  const std::uint64_t* w = words(v, position);
  auto* dst = static_cast<std::byte*>(out);
#if !defined(__CUDA_ARCH__)
  const Head h = head(v, position, atomic::load_relaxed(w));
  if (h.state != Read::ready) return h.state;
  const bool fits = h.length <= capacity;
  // A CPU issues independent loads without waiting for earlier ones, so a
  // plain loop loads as a round does: each word copied as it comes, every
  // flag folded into one test at the end.
  const std::uint64_t whole = 1 + h.length / 4;  // words 1 .. whole - 1 carry 4 bytes each
  std::uint32_t stale = 0;
  std::uint64_t k = 1;
  for (; k < whole; ++k) {
    const std::uint64_t x = atomic::load_relaxed(w + k);
    stale |= static_cast<std::uint32_t>(x >> 32) ^ h.flag;
    if (fits) {
      const auto d = static_cast<std::uint32_t>(x);
      std::memcpy(dst + 4 * (k - 1), &d, 4);
    }
  }
  if (k < h.words && !take(h, k, atomic::load_relaxed(w + k), dst, fits)) return Read::not_ready;
  if (stale != 0) return Read::not_ready;
#else
  std::uint64_t r[kRound] = {};
  load_round(w, 0, 2, r);
  const Head h = head(v, position, r[0]);
  if (h.state != Read::ready) return h.state;
  const bool fits = h.length <= capacity;
  // Round 0 is the pair already loaded; rounds after it start at even words.
  for (std::uint64_t base = 0; base < h.words;) {
    const std::uint64_t left = h.words - base;
    const std::uint64_t count = base == 0 ? 2 : left < kRound ? left : kRound;
    if (base != 0) load_round(w, base, round_up(count, 2), r);
    for (std::uint64_t i = base == 0 ? 1 : 0; i < count && base + i < h.words; ++i) {
      if (!take(h, base + i, r[i], dst, fits)) return Read::not_ready;
    }
    base += count;
  }
#endif
  size = h.length;
  return fits ? Read::ready : Read::too_large;
}

// Whether `position`'s message is completely written (a producer taking over
// resumes after such a position; see SpscView::resume_head).
SHMRING_HD inline bool complete(const RingView& v, std::uint64_t position) noexcept {
  const std::uint64_t* w = words(v, position);
  const Head h = head(v, position, atomic::load_relaxed(w));
  if (h.state != Read::ready) return false;
  for (std::uint64_t k = 1; k < h.words; ++k) {
    if (!take(h, k, atomic::load_relaxed(w + k), nullptr, false)) return false;
  }
  return true;
}

}  // namespace shmring::low_latency
