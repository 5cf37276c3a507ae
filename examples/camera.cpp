// shmring-camera: a "camera" that publishes frames on a broadcast ring, and a
// recorder that subscribes to it. With examples/camera_viewer.py (a Python
// subscriber that checks each frame through a numpy view) they make the
// trio of docs/broadcast.md: one producer, every frame read by each
// subscriber, in place.
//
//   shmring-camera camera --name cam --frames 300 --subscribers 2 &
//   shmring-camera record --name cam --frames 300 --out frames.raw &
//   python3 examples/camera_viewer.py --name cam --frames 300
//
// The frames are camera_frame.hpp's. The ring is reliable: the camera waits
// for the slowest subscriber, so every subscriber gets every frame.
// shmring-gpu-camera (gpu_camera.cu) is the same camera drawing its frames in
// a CUDA kernel.
//
// Exit status: 0 every frame sent (camera) or received and verified
// (record), 1 a frame failed verification, 2 bad command line, 3 a runtime
// failure (no ring, no subscribers, no frame for --timeout seconds).
#include <fmt/core.h>

#include <algorithm>
#include <charconv>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <memory>
#include <span>
#include <stdexcept>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "camera_frame.hpp"
#include "shmring/shmring.hpp"

namespace {

using Clock = std::chrono::steady_clock;
using namespace std::chrono_literals;

constexpr int kExitOk = 0, kExitVerifyFailed = 1, kExitUsage = 2, kExitRuntime = 3;

using camera::FrameHeader;
using camera::kMagic;

using camera::Options;

void usage(std::FILE* to) {
  fmt::print(to,
             "usage: shmring-camera camera [--name NAME] [--frames N] [--width W] [--height H]\n"
             "                             [--channels C] [--subscribers S] [--capacity N]\n"
             "                             [--timeout S]\n"
             "       shmring-camera record [--name NAME] [--frames N] [--out FILE] [--timeout S]\n"
             "  camera: creates the reliable broadcast ring NAME (S subscriber blocks, N slots\n"
             "    of one frame), waits up to --timeout seconds for S subscribers, then\n"
             "    publishes N frames of W x H x C bytes written in place (defaults:\n"
             "    shmring-camera, 300 frames, 640 x 480 x 3, 2 subscribers, 8 slots, 10 s).\n"
             "  record: subscribes to NAME (waiting for it to appear), checks the counter\n"
             "    and checksum of N frames and, with --out, writes them to FILE.\n"
             "  Exit status: 0 ok, 1 a frame failed verification, 2 usage, 3 runtime failure.\n");
}

std::string parse(int argc, char** argv, Options& o, bool& help) {
  if (argc < 2) return "name a mode: camera or record";
  const std::string mode = argv[1];
  if (mode == "-h" || mode == "--help") {
    help = true;
    return "";
  }
  if (mode != "camera" && mode != "record") {
    return fmt::format("unknown mode '{}': camera or record", mode);
  }
  return camera::parse_options(argc, argv, 2, /*with_out=*/true, o, help);
}

// The pixels of frame `counter`, and their checksum.
void fill_pixels(std::span<std::uint8_t> pixels, std::uint64_t counter) {
  for (std::size_t i = 0; i < pixels.size(); ++i) pixels[i] = camera::pixel(i, counter);
}

std::uint64_t checksum(std::span<const std::uint8_t> pixels) {
  std::uint64_t sum = 0;
  for (std::size_t i = 0; i + 8 <= pixels.size(); i += 8) {
    std::uint64_t w;
    std::memcpy(&w, pixels.data() + i, 8);  // little endian on every supported host
    sum += w;
  }
  return sum;
}

int run_camera(const Options& o) {
  const std::size_t pixel_bytes = o.width * o.height * o.channels;
  const shmring::CreateOptions c = camera::ring_options(o);
  const shmring::Segment segment = shmring::Segment::create(o.name, c);
  // The name goes with the camera, whichever way it leaves; the subscribers
  // keep their mappings, so frames not yet read stay readable.
  struct Unlink {
    const std::string& name;
    ~Unlink() {
      std::error_code ec;
      shmring::Segment::unlink(name, ec);
    }
  } unlink{o.name};
  auto tx = shmring::BroadcastProducer::attach(segment);
  fmt::print("camera: ring /dev/shm/{} ({} slots of {} B), waiting for {} subscribers\n", o.name,
             o.capacity, c.slot_size, o.subscribers);
  std::fflush(stdout);
  if (!camera::await_subscribers(segment, o)) {
    fmt::print(stderr, "shmring-camera: only {} of {} subscribers came in {} s\n",
               camera::attached_subscribers(segment), o.subscribers, o.timeout_s);
    return kExitRuntime;
  }
  const auto start = Clock::now();
  for (std::uint64_t n = 0; n < o.frames; ++n) {
    // The frame is drawn in its slot: nothing is copied, to any subscriber.
    shmring::WriteClaim w = tx.claim(1, std::chrono::seconds(o.timeout_s));
    if (w.empty()) {
      fmt::print(stderr, "shmring-camera: no free slot for {} s at frame {} ({})\n", o.timeout_s, n,
                 shmring::to_string(w.status()));
      return kExitRuntime;
    }
    std::byte* slot = w[0].data();
    const std::span<std::uint8_t> pixels(
        reinterpret_cast<std::uint8_t*>(slot) + sizeof(FrameHeader), pixel_bytes);
    fill_pixels(pixels, n);
    FrameHeader h{};
    h.magic = kMagic;
    h.width = static_cast<std::uint32_t>(o.width);
    h.height = static_cast<std::uint32_t>(o.height);
    h.channels = static_cast<std::uint32_t>(o.channels);
    h.counter = n;
    h.checksum = checksum(pixels);
    std::memcpy(slot, &h, sizeof h);
    if (w.commit(sizeof h + pixel_bytes) != shmring::Status::ok) {
      fmt::print(stderr, "shmring-camera: commit failed at frame {}\n", n);
      return kExitRuntime;
    }
  }
  const double s = std::chrono::duration<double>(Clock::now() - start).count();
  fmt::print("camera: {} frames of {}x{}x{} published in {:.3f} s ({:.0f} frames/s)\n", o.frames,
             o.width, o.height, o.channels, s, static_cast<double>(o.frames) / s);
  return kExitOk;
}

// Waits (bounded) for the camera to create the ring.
shmring::Segment open_ring(const Options& o) {
  const auto deadline = Clock::now() + std::chrono::seconds(o.timeout_s);
  for (;;) {
    std::error_code ec;
    shmring::Segment s = shmring::Segment::open(o.name, {}, ec);
    if (s) return s;
    if (ec != shmring::errc::not_found || Clock::now() >= deadline) {
      throw shmring::Error(ec, shmring::last_error_message());
    }
    std::this_thread::sleep_for(10ms);
  }
}

int run_record(const Options& o) {
  const shmring::Segment segment = open_ring(o);
  auto sub = shmring::BroadcastSubscriber::attach(segment, shmring::JoinAt::next);
  std::unique_ptr<std::FILE, int (*)(std::FILE*)> out(nullptr, &std::fclose);
  if (!o.out.empty()) {
    out.reset(std::fopen(o.out.c_str(), "wb"));
    if (!out) {
      fmt::print(stderr, "shmring-camera: cannot write {}: {}\n", o.out, std::strerror(errno));
      return kExitRuntime;
    }
  }
  std::uint64_t verified = 0, failed = 0, bytes = 0;
  for (std::uint64_t n = 0; n < o.frames; ++n) {
    shmring::ReadClaim r = sub.peek(1, std::chrono::seconds(o.timeout_s));
    if (r.empty()) {
      fmt::print(stderr, "shmring-camera: no frame for {} s after {} ({})\n", o.timeout_s, n,
                 shmring::to_string(r.status()));
      return kExitRuntime;
    }
    // Checked and written in place, straight from the slot.
    const std::span<const std::byte> frame = r[0];
    FrameHeader h{};
    std::memcpy(&h, frame.data(), std::min(frame.size(), sizeof h));
    const std::size_t pixel_bytes = std::size_t{h.width} * h.height * h.channels;
    const bool ok = frame.size() >= sizeof h && h.magic == kMagic && h.counter == n &&
                    frame.size() == sizeof h + pixel_bytes &&
                    checksum({reinterpret_cast<const std::uint8_t*>(frame.data()) + sizeof h,
                              pixel_bytes}) == h.checksum;
    if (ok) {
      ++verified;
    } else if (failed++ == 0) {
      fmt::print(stderr, "shmring-camera: frame {} failed verification (counter {}, {} B)\n", n,
                 h.counter, frame.size());
    }
    if (out && std::fwrite(frame.data(), 1, frame.size(), out.get()) != frame.size()) {
      fmt::print(stderr, "shmring-camera: writing {}: {}\n", o.out, std::strerror(errno));
      return kExitRuntime;
    }
    bytes += frame.size();
  }
  if (out && std::fflush(out.get()) != 0) {
    fmt::print(stderr, "shmring-camera: writing {}: {}\n", o.out, std::strerror(errno));
    return kExitRuntime;
  }
  if (failed != 0) {
    fmt::print("recorder: FAILED, {} of {} frames failed verification\n", failed, o.frames);
    return kExitVerifyFailed;
  }
  fmt::print("recorder: OK, all {} frames verified ({} B{})\n", verified, bytes,
             o.out.empty() ? "" : ", written to " + o.out);
  return kExitOk;
}

}  // namespace

int main(int argc, char** argv) {
  Options o;
  bool help = false;
  if (const std::string err = parse(argc, argv, o, help); !err.empty()) {
    fmt::print(stderr, "shmring-camera: {}\n\n", err);
    usage(stderr);
    return kExitUsage;
  }
  if (help) {
    usage(stdout);
    return kExitOk;
  }
  try {
    return std::string_view(argv[1]) == "camera" ? run_camera(o) : run_record(o);
  } catch (const std::exception& e) {
    fmt::print(stderr, "shmring-camera: {}\n", e.what());
  }
  return kExitRuntime;
}
