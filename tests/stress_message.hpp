// Self-checking messages for the stress and cross-process suites: the
// harness's stamped and checksummed message (harness/message.hpp), tagged
// (producer, seq), with a length that is a pure function of (producer, seq)
// too, so a consumer can tell an intact message from a torn, stale,
// truncated or misdirected one without any shared state.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <span>

#include "harness/message.hpp"

namespace shmring::test::msg {

// What a message says about itself (decoded by check()).
struct Header {
  std::uint32_t producer;
  std::uint32_t length;  // payload bytes after the header
  std::uint64_t seq;
};
inline constexpr std::size_t kHeaderSize = harness::kStampBytes;

inline constexpr std::uint64_t mix(std::uint64_t x) noexcept {  // splitmix64 finaliser
  x += 0x9E3779B97F4A7C15ull;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
  return x ^ (x >> 31);
}

// Payload length for (producer, seq), at most `max_payload`: 1 in 16 empty,
// 1 in 16 exactly `max_payload`, the rest spread over [0, max_payload].
inline std::size_t payload_length(std::uint32_t producer, std::uint64_t seq,
                                  std::size_t max_payload) noexcept {
  const std::uint64_t s = mix(harness::make_tag(producer, seq) ^ 0x5348'4D52'494E'4721ull);
  switch (s & 15) {
    case 0:
      return 0;
    case 1:
      return max_payload;
    default:
      return static_cast<std::size_t>((s >> 4) % (max_payload + 1));
  }
}

// Writes message (producer, seq) into `out` (which must hold kHeaderSize +
// max_payload bytes) and returns its size.
inline std::size_t write(std::span<std::byte> out, std::uint32_t producer, std::uint64_t seq,
                         std::size_t max_payload) noexcept {
  const std::size_t size = kHeaderSize + payload_length(producer, seq, max_payload);
  harness::fill_message(out.first(size), harness::make_tag(producer, seq));
  return size;
}

enum class Verdict : std::uint8_t {
  ok,
  too_short,     // smaller than a header
  bad_producer,  // producer id out of range
  bad_seq,       // seq out of range
  bad_length,    // not the length (producer, seq) has
  bad_checksum,  // payload torn, stale or overwritten
};

inline const char* to_string(Verdict v) noexcept {
  switch (v) {
    case Verdict::ok:
      return "ok";
    case Verdict::too_short:
      return "shorter than a header";
    case Verdict::bad_producer:
      return "producer id out of range";
    case Verdict::bad_seq:
      return "sequence number out of range";
    case Verdict::bad_length:
      return "length differs from the one its (producer, seq) has";
    case Verdict::bad_checksum:
      return "checksum mismatch";
  }
  return "?";
}

// The header `m` carries (zeros if it is shorter than one).
inline Header header_of(std::span<const std::byte> m) noexcept {
  if (m.size() < kHeaderSize) return Header{};
  const std::uint64_t tag = harness::message_tag(m);
  return Header{static_cast<std::uint32_t>(harness::tag_sender(tag)),
                static_cast<std::uint32_t>(m.size() - kHeaderSize), harness::tag_sequence(tag)};
}

// Checks a received message. `producers` and `per_producer` bound the ids;
// the caller checks order and uniqueness with the returned header.
inline Verdict check(std::span<const std::byte> m, std::uint32_t producers,
                     std::uint64_t per_producer, std::size_t max_payload, Header& h) noexcept {
  if (m.size() < kHeaderSize) return Verdict::too_short;
  h = header_of(m);
  if (h.producer >= producers) return Verdict::bad_producer;
  if (h.seq >= per_producer) return Verdict::bad_seq;
  if (h.length != payload_length(h.producer, h.seq, max_payload)) return Verdict::bad_length;
  if (harness::verify_message(m, m.size(), harness::message_tag(m)) != harness::Verdict::ok) {
    return Verdict::bad_checksum;
  }
  return Verdict::ok;
}

// SHMRING_STRESS_SCALE=N multiplies message counts (default 1).
inline std::uint64_t stress_scale() noexcept {
  const char* s = std::getenv("SHMRING_STRESS_SCALE");
  if (s == nullptr || *s == '\0') return 1;
  const long long v = std::atoll(s);
  return v < 1 ? 1 : static_cast<std::uint64_t>(v);
}

#if defined(__SANITIZE_THREAD__)
inline constexpr bool kThreadSanitizer = true;
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
inline constexpr bool kThreadSanitizer = true;
#else
inline constexpr bool kThreadSanitizer = false;
#endif
#else
inline constexpr bool kThreadSanitizer = false;
#endif

// `base` messages scaled by SHMRING_STRESS_SCALE; under ThreadSanitizer
// (several times slower) divided by `tsan_divisor`.
inline std::uint64_t scaled(std::uint64_t base, std::uint64_t tsan_divisor = 10) noexcept {
  std::uint64_t n = base * stress_scale();
  if (kThreadSanitizer) n /= tsan_divisor;
  return n < 64 ? 64 : n;
}

}  // namespace shmring::test::msg
