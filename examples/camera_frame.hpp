// The frames of the camera examples (shmring-camera, shmring-gpu-camera,
// camera_viewer.py): a 64-byte header, then width x height x channels pixel
// bytes. Pixel byte i of frame n is (7 * i + n) mod 256, so every byte can
// be checked; the header's checksum is the wrapping sum of the pixels read
// as little-endian 64-bit words, which numpy computes in one call.
#pragma once

#include <charconv>
#include <chrono>
#include <cstdint>
#include <string>
#include <string_view>
#include <thread>

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

// The command line the camera programs share (shmring-camera camera and
// record, shmring-gpu-camera).
struct Options {
  std::string name = "shmring-camera";
  std::uint64_t frames = 300;
  std::uint64_t width = 640, height = 480, channels = 3;
  std::uint64_t subscribers = 2;  // camera: how many to wait for before the first frame
  std::uint64_t capacity = 8;
  std::uint64_t timeout_s = 10;
  std::string out;  // record: file to write the frames to (none: count and check only)
};

// Parses the "--option value" pairs of argv[first, argc) into `o` (--out
// only where `with_out`); sets `help` for -h or --help. Returns what is
// wrong with them, or "".
inline std::string parse_options(int argc, char** argv, int first, bool with_out, Options& o,
                                 bool& help) {
  for (int i = first; i < argc; ++i) {
    const std::string arg = argv[i];
    if (arg == "-h" || arg == "--help") {
      help = true;
      return "";
    }
    if (i + 1 >= argc) return arg + " needs a value";
    const std::string_view v = argv[++i];
    if (arg == "--name" || (with_out && arg == "--out")) {
      (arg == "--name" ? o.name : o.out) = std::string(v);
      continue;
    }
    std::uint64_t* target = arg == "--frames"        ? &o.frames
                            : arg == "--width"       ? &o.width
                            : arg == "--height"      ? &o.height
                            : arg == "--channels"    ? &o.channels
                            : arg == "--subscribers" ? &o.subscribers
                            : arg == "--capacity"    ? &o.capacity
                            : arg == "--timeout"     ? &o.timeout_s
                                                     : nullptr;
    if (target == nullptr) return "unknown option '" + arg + "'";
    const auto [end, ec] = std::from_chars(v.data(), v.data() + v.size(), *target);
    if (ec != std::errc() || end != v.data() + v.size() || *target == 0) {
      return arg + ": '" + std::string(v) + "' is not a positive number";
    }
  }
  if (o.width > 16384 || o.height > 16384 || o.channels > 4) {
    return "a frame is at most 16384 x 16384 pixels of at most 4 channels";
  }
  if ((o.width * o.height * o.channels) % 8 != 0) {
    return std::to_string(o.width) + " x " + std::to_string(o.height) + " x " +
           std::to_string(o.channels) + " pixel bytes are not a whole number of 8-byte words";
  }
  if (o.subscribers > shmring::kMaxSubscribers) {
    return "--subscribers must be at most " + std::to_string(shmring::kMaxSubscribers);
  }
  if ((o.capacity & (o.capacity - 1)) != 0) {
    return "--capacity " + std::to_string(o.capacity) + " is not a power of two";
  }
  return "";
}

// The camera's ring: reliable broadcast, a slot per frame.
inline shmring::CreateOptions ring_options(const Options& o) {
  shmring::CreateOptions c;
  c.kind = shmring::RingKind::broadcast;
  c.delivery = shmring::Delivery::reliable;
  c.subscribers = static_cast<std::uint32_t>(o.subscribers);
  c.capacity = o.capacity;
  c.slot_size = sizeof(FrameHeader) + o.width * o.height * o.channels;
  return c;
}

// Waits up to --timeout for --subscribers subscribers (they join at "next":
// each must be there before frame 0 to get it). False if they did not come.
inline bool await_subscribers(const shmring::Segment& segment, const Options& o) {
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(o.timeout_s);
  while (attached_subscribers(segment) < o.subscribers) {
    if (std::chrono::steady_clock::now() >= deadline) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  return true;
}

}  // namespace camera
