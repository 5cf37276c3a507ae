// The frames of the camera examples (shmring-camera, shmring-gpu-camera,
// camera_viewer.py): a 64-byte header, then width x height x channels pixel
// bytes. Pixel byte i of frame n is (7 * i + n) mod 256, so every byte can
// be checked; the header's checksum is the wrapping sum of the pixels read
// as little-endian 64-bit words, which numpy computes in one call.
#pragma once

#include <cstdint>

#include "shmring/broadcast_view.hpp"
#include "shmring/config.hpp"
#include "shmring/segment.hpp"

namespace camera {

// 64 bytes, so that the pixels start on a cache line (and numpy's view of
// them is aligned).
struct FrameHeader {
  std::uint32_t magic;  // kMagic
  std::uint32_t width;
  std::uint32_t height;
  std::uint32_t channels;
  std::uint64_t counter;   // 0, 1, 2, ...
  std::uint64_t checksum;  // wrapping sum of the pixels as little-endian u64 words
  std::uint8_t reserved[32];
};
static_assert(sizeof(FrameHeader) == 64);
inline constexpr std::uint32_t kMagic = 0x4d435253;  // "SRCM"

SHMRING_HD constexpr std::uint8_t pixel(std::uint64_t i, std::uint64_t counter) {
  return static_cast<std::uint8_t>(7 * i + counter);
}

// How many subscriber blocks of the broadcast ring are held by an attached
// subscriber (the cameras wait for theirs before frame 0).
inline std::uint32_t attached_subscribers(const shmring::Segment& segment) {
  const shmring::BroadcastView view(segment.base(), segment.geometry());
  std::uint32_t n = 0;
  for (std::uint32_t i = 0; i < view.subscribers(); ++i) {
    if (shmring::atomic::load_acquire(&view.subscriber(i)->state) == shmring::kSubscriberActive) {
      ++n;
    }
  }
  return n;
}

}  // namespace camera
