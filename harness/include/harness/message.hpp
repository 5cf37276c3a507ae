// The self-checking message of the demo, the stress and torture tests:
//
//   [0, 8)   tag: the sender's id in the top 16 bits (a producer, a
//            producer's incarnation; 0 where there is one sender), its
//            sequence number in the low 48
//   [8, 16)  checksum of the tag, the body and the body's length
//   [16, n)  body: a function of the tag
//
// Every byte is a function of the tag and the length, so a reader that
// knows which tag to expect tells an intact message from a torn, stale,
// truncated, shifted or misdirected one without any shared state.
// The layout is fixed: python/tests/test_shmring.py writes and checks the
// same bytes when it streams to and from shmring-demo.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <span>

namespace shmring::harness {

inline constexpr std::size_t kStampBytes = 16;  // tag + checksum
inline constexpr unsigned kSenderShift = 48;
inline constexpr std::uint64_t kSequenceMask = (std::uint64_t{1} << kSenderShift) - 1;
inline constexpr std::uint64_t kMaxSender = 0xffff;

inline constexpr std::uint64_t make_tag(std::uint64_t sender, std::uint64_t sequence) noexcept {
  return (sender << kSenderShift) | (sequence & kSequenceMask);
}
inline constexpr std::uint64_t tag_sender(std::uint64_t tag) noexcept {
  return tag >> kSenderShift;
}
inline constexpr std::uint64_t tag_sequence(std::uint64_t tag) noexcept {
  return tag & kSequenceMask;
}

inline std::uint64_t load64(const std::byte* p) noexcept {
  std::uint64_t v;
  std::memcpy(&v, p, sizeof v);
  return v;
}
inline void store64(std::byte* p, std::uint64_t v) noexcept { std::memcpy(p, &v, sizeof v); }

inline constexpr std::uint64_t kPrime1 = 0x9E3779B185EBCA87ull;
inline constexpr std::uint64_t kPrime2 = 0xC2B2AE3D27D4EB4Full;

inline constexpr std::uint64_t rotl(std::uint64_t v, int r) noexcept {
  return (v << r) | (v >> (64 - r));
}

// An xxHash64-style four-lane hash: fast enough that a run measures the
// ring, not the checksum, and any flipped, lost or shifted byte changes it.
inline std::uint64_t checksum(std::uint64_t tag, std::span<const std::byte> body) noexcept {
  std::uint64_t lane[4] = {tag ^ kPrime1, tag + kPrime2, rotl(tag, 17), ~tag};
  std::size_t i = 0;
  for (; i + 32 <= body.size(); i += 32) {
    for (std::size_t l = 0; l < 4; ++l) {
      lane[l] = rotl(lane[l] + load64(body.data() + i + 8 * l) * kPrime2, 31) * kPrime1;
    }
  }
  for (; i + 8 <= body.size(); i += 8) {
    lane[0] = rotl(lane[0] + load64(body.data() + i) * kPrime2, 31) * kPrime1;
  }
  for (; i < body.size(); ++i) {
    lane[1] = rotl(lane[1] ^ (static_cast<std::uint64_t>(body[i]) * kPrime1), 11) * kPrime2;
  }
  std::uint64_t h = rotl(lane[0], 1) + rotl(lane[1], 7) + rotl(lane[2], 12) + rotl(lane[3], 18);
  h ^= body.size();
  h ^= h >> 33;
  h *= kPrime2;
  h ^= h >> 29;
  return h;
}

// Writes the message with `tag` over all of `msg` (at least kStampBytes).
inline void fill_message(std::span<std::byte> msg, std::uint64_t tag) noexcept {
  std::byte* body = msg.data() + kStampBytes;
  const std::size_t body_size = msg.size() - kStampBytes;
  std::uint64_t word = tag * kPrime1;
  std::size_t i = 0;
  for (; i + 8 <= body_size; i += 8) store64(body + i, word++);
  for (; i < body_size; ++i) body[i] = static_cast<std::byte>(word >> (8 * (i % 8)));
  store64(msg.data(), tag);
  store64(msg.data() + 8, checksum(tag, {body, body_size}));
}

// The tag a message carries (0 if it is too short to carry one).
inline std::uint64_t message_tag(std::span<const std::byte> msg) noexcept {
  return msg.size() >= 8 ? load64(msg.data()) : 0;
}

enum class Verdict { ok, wrong_size, wrong_tag, bad_checksum };

inline const char* to_string(Verdict v) noexcept {
  switch (v) {
    case Verdict::ok:
      return "ok";
    case Verdict::wrong_size:
      return "wrong size";
    case Verdict::wrong_tag:
      return "wrong sequence number";
    case Verdict::bad_checksum:
      return "bad checksum";
  }
  return "?";
}

// Checks that `msg` is the message with `tag`, `size` bytes long.
inline Verdict verify_message(std::span<const std::byte> msg, std::size_t size,
                              std::uint64_t tag) noexcept {
  if (msg.size() != size || size < kStampBytes) return Verdict::wrong_size;
  if (load64(msg.data()) != tag) return Verdict::wrong_tag;
  if (load64(msg.data() + 8) != checksum(tag, msg.subspan(kStampBytes))) {
    return Verdict::bad_checksum;
  }
  return Verdict::ok;
}

}  // namespace shmring::harness
