// The bridge protocol: a handful of UCX tagged messages between one sender
// and one receiver. Fixed-width little-endian fields; every struct's size is
// asserted, since both ends may be built apart.
//
//   sender                                   receiver
//          <------------------------------- Challenge {nonce, key required}
//   Hello {nonce, MAC, geometry, stream, epoch} -> authenticate, validate, open/create ring
//          <------------------------------- Welcome {result, committed_through, max_batch}
//   Data {first position, n, lengths, payloads} -> commit into ring
//          <------------------------------- Ack {committed_through}
//
// Large slots (kSeparatePayloadSlot and up) travel differently: Data holds
// only the lengths, and each payload follows as a Payload message of its own,
// sent from the sender's slot and received straight into a claimed slot of
// the receiver's ring, so neither side copies it (and UCX may use its
// zero-copy rendezvous protocols for it).
//
// A tag is (kind << 56) | epoch. The epoch is a random number the sender
// draws for each connection, so a message of an earlier connection can never
// be matched as one of the current one. The Challenge, sent before the
// receiver knows the epoch, has epoch 0.
//
// Tags do not say which connection a message came in on. The receiver sends
// each new connection a random nonce, and the Hello that echoes it is that
// connection's. With a key, the Hello also carries
// HMAC-SHA256(key, nonce || epoch || sender's ring name): proof that the
// sender holds the key, valid for this connection only, and no secret on
// the wire.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <span>
#include <type_traits>

#include "bridge/hmac.hpp"

namespace shmring::bridge::wire {

inline constexpr std::uint64_t kMagic = 0x31475242524d4853;  // "SHMRBRG1" little-endian
inline constexpr std::uint32_t kProtocolVersion = 2;

enum class Kind : std::uint64_t {
  hello = 1,
  welcome = 2,
  data = 3,
  ack = 4,
  payload = 5,
  challenge = 6
};

// Slots of this size and more send each payload as a Payload message.
inline constexpr std::uint64_t kSeparatePayloadSlot = std::uint64_t{64} * 1024;

inline constexpr int kKindShift = 56;
inline constexpr std::uint64_t kEpochMask = (std::uint64_t{1} << kKindShift) - 1;
inline constexpr std::uint64_t kKindMask = ~kEpochMask;
inline constexpr std::uint64_t kFullMask = ~std::uint64_t{0};

constexpr std::uint64_t tag(Kind kind, std::uint64_t epoch) noexcept {
  return (static_cast<std::uint64_t>(kind) << kKindShift) | (epoch & kEpochMask);
}

struct Challenge {
  std::uint64_t magic;
  std::uint32_t protocol_version;
  std::uint32_t flags;  // kKeyRequired
  std::uint8_t nonce[32];
};
static_assert(std::is_standard_layout_v<Challenge> && sizeof(Challenge) == 48);

// Challenge::flags: the receiver accepts only a Hello with a valid MAC.
inline constexpr std::uint32_t kKeyRequired = 1;

struct Hello {
  std::uint64_t magic;
  std::uint32_t protocol_version;
  std::uint32_t ring_kind;  // shmring::RingKind of the sender's ring
  std::uint64_t capacity;   // the sender's ring, for a receiver that creates one
  std::uint64_t slot_size;
  std::uint64_t epoch;              // this connection
  std::uint64_t stream_created_ns;  // identity of the sender's ring: its creation time
  std::uint64_t stream_creator;     // and its creator (pid | start time << 32)
  std::uint64_t next_position;      // the sender's ring has released everything below
  std::uint64_t max_batch;          // messages per Data the sender would like
  char ring_name[64];               // the sender's ring, for the receiver's log
  std::uint8_t nonce[32];           // echoes the Challenge of this connection
  std::uint8_t mac[32];             // with kHasMac: hello_mac()
  std::uint64_t flags;              // kHasMac
};
static_assert(std::is_standard_layout_v<Hello> && sizeof(Hello) == 208);

// Hello::flags: the sender has a key and proves it in Hello::mac.
inline constexpr std::uint64_t kHasMac = 1;

inline detail::Digest hello_mac(std::span<const std::uint8_t> key, const Hello& hello) noexcept {
  detail::HmacSha256 mac(key);
  mac.update(hello.nonce);
  std::uint8_t epoch[8];
  for (int i = 0; i < 8; ++i) epoch[i] = static_cast<std::uint8_t>(hello.epoch >> (8 * i));
  mac.update(epoch);
  mac.update({reinterpret_cast<const std::uint8_t*>(hello.ring_name),
              strnlen(hello.ring_name, sizeof hello.ring_name)});
  return mac.finish();
}

enum class Result : std::uint32_t {
  accepted = 0,
  bad_protocol = 1,     // magic or version
  bad_geometry = 2,     // kind or slot size does not fit the receiving ring
  ring_error = 3,       // the receiving ring could not be opened, created or attached
  stream_gap = 4,       // the sender released messages this side never committed
  unauthenticated = 5,  // no key, or not the receiver's
  busy = 6,             // another stream fills the receiving ring
};

struct Welcome {
  std::uint64_t magic;
  std::uint32_t protocol_version;
  Result result;
  std::uint64_t epoch;              // echoes the Hello
  std::uint64_t committed_through;  // send from here
  std::uint64_t max_batch;          // messages per Data, at most
  std::uint64_t capacity;           // the receiving ring
  std::uint64_t slot_size;
  std::uint64_t flags;  // kSeparatePayloads
  char reason[248];     // why, when not accepted
};
static_assert(std::is_standard_layout_v<Welcome> && sizeof(Welcome) == 312);

// Welcome::flags: payloads follow their Data as Payload messages.
inline constexpr std::uint64_t kSeparatePayloads = 1;

// Data: this header, `count` u32 lengths, padding to 8 bytes, then the
// payloads back to back (none with kSeparatePayloads: they follow, one
// Payload message per non-empty message, in order).
struct DataHeader {
  std::uint64_t first_position;
  std::uint32_t count;
  std::uint32_t reserved;
};
static_assert(std::is_standard_layout_v<DataHeader> && sizeof(DataHeader) == 16);

constexpr std::size_t data_prefix_size(std::size_t count) noexcept {
  return (sizeof(DataHeader) + count * sizeof(std::uint32_t) + 7) & ~std::size_t{7};
}

struct Ack {
  std::uint64_t epoch;
  std::uint64_t committed_through;
};
static_assert(std::is_standard_layout_v<Ack> && sizeof(Ack) == 16);

}  // namespace shmring::bridge::wire
