// shmring-frames: a camera-like C++ producer. It opens a ring of fixed-size
// frames that a consumer created (examples/python_consumer.py makes one and
// starts this program), and writes each frame in place into a claimed slot:
// no staging buffer, no copy between the processes.
//
// Frame `seq` (width x height x channels bytes): bytes [0, 8) hold seq
// (little endian), byte i >= 8 holds (7 * i + seq) mod 256, so a consumer can
// verify every byte and a frame mixing two sequence numbers never passes.
#include <fmt/core.h>

#include <algorithm>
#include <charconv>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "shmring/shmring.hpp"

namespace {

using Clock = std::chrono::steady_clock;

struct Options {
  std::string name = "shmring-frames";
  std::uint64_t frames = 1000;
  std::uint64_t width = 640, height = 480, channels = 3;
  std::uint64_t timeout_s = 10;
};

constexpr int kExitOk = 0, kExitUsage = 2, kExitRuntime = 3;

void usage(std::FILE* to) {
  fmt::print(to,
             "usage: shmring-frames [--name NAME] [--frames N] [--width W] [--height H]\n"
             "                      [--channels C] [--timeout S]\n"
             "  Opens the frame ring NAME (made by the consumer; waits up to S seconds for it)\n"
             "  and writes N frames of W x H x C bytes in place (defaults: shmring-frames,\n"
             "  1000, 640 x 480 x 3, 10 s). Exit status: 0 all frames sent, 2 usage, 3 the\n"
             "  ring did not appear, does not match, or stayed full for S seconds.\n");
}

std::string parse(int argc, char** argv, Options& o, bool& help) {
  for (int i = 1; i < argc; ++i) {
    const std::string_view arg = argv[i];
    if (arg == "-h" || arg == "--help") {
      help = true;
      return "";
    }
    if (i + 1 >= argc) return fmt::format("{} needs a value", arg);
    const std::string_view v = argv[++i];
    if (arg == "--name") {
      o.name = std::string(v);
      continue;
    }
    std::uint64_t* target = arg == "--frames"     ? &o.frames
                            : arg == "--width"    ? &o.width
                            : arg == "--height"   ? &o.height
                            : arg == "--channels" ? &o.channels
                            : arg == "--timeout"  ? &o.timeout_s
                                                  : nullptr;
    if (target == nullptr) return fmt::format("unknown option '{}'", arg);
    const auto [end, ec] = std::from_chars(v.data(), v.data() + v.size(), *target);
    if (ec != std::errc() || end != v.data() + v.size() || *target == 0) {
      return fmt::format("{}: '{}' is not a positive number", arg, v);
    }
  }
  if (o.width * o.height * o.channels < 16) return "a frame must hold at least 16 bytes";
  return "";
}

// Waits (bounded) for the consumer to create the ring.
shmring::Segment open_ring(const Options& o) {
  const auto deadline = Clock::now() + std::chrono::seconds(o.timeout_s);
  for (;;) {
    std::error_code ec;
    shmring::Segment s = shmring::Segment::open(o.name, {}, ec);
    if (s) return s;
    if (ec != shmring::errc::not_found || Clock::now() >= deadline) {
      throw shmring::Error(ec, shmring::last_error_message());
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
}

template <class Producer>
void stream(const Options& o, const shmring::Segment& segment, std::size_t frame_bytes) {
  Producer tx = Producer::attach(segment);
  // The pattern of frame 0; frame seq adds seq to every byte (mod 256), a
  // loop the compiler vectorises.
  std::vector<std::uint8_t> base(frame_bytes);
  for (std::size_t i = 0; i < frame_bytes; ++i) base[i] = static_cast<std::uint8_t>(7 * i);
  const auto start = Clock::now();
  for (std::uint64_t seq = 0; seq < o.frames; ++seq) {
    shmring::WriteClaim c = tx.claim(1, std::chrono::seconds(o.timeout_s));
    if (c.empty()) {
      throw std::runtime_error(
          fmt::format("no free slot for {} s at frame {}: is the consumer "
                      "running?",
                      o.timeout_s, seq));
    }
    auto* frame = reinterpret_cast<std::uint8_t*>(c[0].data());
    const auto add = static_cast<std::uint8_t>(seq);
    for (std::size_t i = 8; i < frame_bytes; ++i)
      frame[i] = static_cast<std::uint8_t>(base[i] + add);
    std::memcpy(frame, &seq, sizeof seq);  // little endian on every supported host
    if (c.commit(frame_bytes) != shmring::Status::ok) throw std::runtime_error("commit failed");
  }
  const double s = std::chrono::duration<double>(Clock::now() - start).count();
  fmt::print(
      "shmring-frames: {} frames of {} B written in place in {:.3f} s ({:.0f} frames/s, "
      "{:.2f} GB/s)\n",
      o.frames, frame_bytes, s, static_cast<double>(o.frames) / s,
      static_cast<double>(o.frames * frame_bytes) / s / 1e9);
}

}  // namespace

int main(int argc, char** argv) {
  Options o;
  bool help = false;
  if (const std::string err = parse(argc, argv, o, help); !err.empty()) {
    fmt::print(stderr, "shmring-frames: {}\n\n", err);
    usage(stderr);
    return kExitUsage;
  }
  if (help) {
    usage(stdout);
    return kExitOk;
  }
  try {
    const shmring::Segment segment = open_ring(o);
    const std::size_t frame_bytes = o.width * o.height * o.channels;
    if (segment.geometry().slot_size < frame_bytes) {
      fmt::print(stderr, "shmring-frames: ring '{}' has {}-byte slots, a frame is {} bytes\n",
                 o.name, segment.geometry().slot_size, frame_bytes);
      return kExitRuntime;
    }
    if (segment.geometry().kind == shmring::RingKind::spsc) {
      stream<shmring::SpscProducer>(o, segment, frame_bytes);
    } else {
      stream<shmring::MpmcProducer>(o, segment, frame_bytes);
    }
  } catch (const std::exception& e) {
    fmt::print(stderr, "shmring-frames: {}\n", e.what());
    return kExitRuntime;
  }
  return kExitOk;
}
