// What shmringsink writes into a broadcast ring and shmringsrc (or any other
// reader: python/shmring/gst.py) reads back; docs/gstreamer.md documents the
// same layout for readers in other languages.
//
// The segment's metadata (CreateOptions::metadata) holds the stream's caps,
// so a reader knows what the frames are before the first one:
//
//   "shmring.gst 1\n" followed by the caps string (gst_caps_to_string).
//
// Each slot holds one buffer: a 64-byte SlotHeader, then the buffer's bytes.
// 64 bytes keep the payload at the slot's 64-byte alignment (a cache line,
// and what SIMD code and CUDA copies prefer).
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>
#include <string_view>

namespace shmring::gst {

inline constexpr std::string_view kMetadataPrefix = "shmring.gst 1\n";
inline constexpr std::uint32_t kSlotMagic = 0x54534753;  // "SGST" in memory
inline constexpr std::uint8_t kSlotVersion = 1;
inline constexpr std::uint64_t kNoTime = ~std::uint64_t{0};  // GST_CLOCK_TIME_NONE
// SlotHeader::header_flags
inline constexpr std::uint8_t kHasChecksum = 1;
// A skip slot: no frame (size 0). The sink publishes one where it cannot
// write a frame in position order (gst/gstshmringpool.hpp); readers pass
// over it, and its frame number is no frame missed.
inline constexpr std::uint8_t kSkip = 2;

struct SlotHeader {
  std::uint32_t magic;         // kSlotMagic
  std::uint16_t header_size;   // sizeof(SlotHeader): the payload starts here
  std::uint8_t version;        // kSlotVersion
  std::uint8_t header_flags;   // kHasChecksum, kSkip
  std::uint64_t pts;           // nanoseconds, kNoTime if none
  std::uint64_t dts;           // nanoseconds, kNoTime if none
  std::uint64_t duration;      // nanoseconds, kNoTime if none
  std::uint64_t frame;         // the ring position: 0, 1, ... from the ring's first frame
  std::uint64_t offset;        // GST_BUFFER_OFFSET as upstream set it
  std::uint32_t buffer_flags;  // GstBufferFlags
  std::uint32_t size;          // payload bytes after the header
  std::uint64_t checksum;      // payload_checksum() if kHasChecksum, else 0
};
static_assert(sizeof(SlotHeader) == 64);
static_assert(offsetof(SlotHeader, pts) == 8 && offsetof(SlotHeader, frame) == 32 &&
              offsetof(SlotHeader, buffer_flags) == 48 && offsetof(SlotHeader, checksum) == 56);

// A position-dependent sum of the payload's little-endian 64-bit words (the
// last one zero-padded): sum of word[i] * (2i + 1), modulo 2^64. Cheap enough
// to run on every frame of a test stream, sensitive to a word from another
// frame or at another place, and easy to recompute in numpy
// (python/shmring/gst.py), which is why it is not a CRC.
inline std::uint64_t payload_checksum(const void* data, std::size_t size) noexcept {
  const auto* p = static_cast<const unsigned char*>(data);
  std::uint64_t sum = 0;
  std::uint64_t odd = 1;
  std::size_t i = 0;
  for (; i + 8 <= size; i += 8, odd += 2) {
    std::uint64_t w;
    std::memcpy(&w, p + i, 8);
    sum += w * odd;
  }
  if (i < size) {
    std::uint64_t w = 0;
    std::memcpy(&w, p + i, size - i);
    sum += w * odd;
  }
  return sum;
}

inline std::string metadata_for_caps(std::string_view caps) {
  std::string m(kMetadataPrefix);
  m += caps;
  return m;
}

// The caps string a sink stored, or false if the metadata holds none.
inline bool caps_from_metadata(std::string_view metadata, std::string& caps) {
  if (metadata.substr(0, kMetadataPrefix.size()) != kMetadataPrefix) return false;
  caps.assign(metadata.substr(kMetadataPrefix.size()));
  return true;
}

}  // namespace shmring::gst
