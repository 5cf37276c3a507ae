// shmring-gpu-camera: the camera of shmring-camera, drawing its frames in a
// CUDA kernel straight into the slots of a reliable broadcast ring that CPU
// and Python processes subscribe to (shmring-camera record,
// camera_viewer.py). Nothing is copied: one block claims a slot, draws the
// pixels and the checksum in place, and commits it; every subscriber reads
// it in place.
//
//   shmring-gpu-camera --name cam --frames 300 --subscribers 2 &
//   shmring-camera record --name cam --frames 300 &
//   python3 examples/camera_viewer.py --name cam --frames 300
//
// When the kernel is done, the stream is closed: the subscribers' loops end.
// Exit status: 0 every frame published, 2 bad command line, 3 a runtime
// failure (no subscribers, a wait timed out), 77 no CUDA device.
#include <cuda_runtime_api.h>

#include <charconv>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <exception>
#include <string>
#include <string_view>
#include <thread>

#include "camera_frame.hpp"
#include "shmring/cuda/broadcast_device.cuh"
#include "shmring/cuda/capabilities.hpp"
#include "shmring/cuda/gpu_ring.hpp"
#include "shmring/cuda/registration.hpp"
#include "shmring/shmring.hpp"

namespace {

using Clock = std::chrono::steady_clock;
using namespace std::chrono_literals;
namespace gpu = shmring::cuda;

constexpr int kExitOk = 0, kExitUsage = 2, kExitRuntime = 3, kExitNoGpu = 77;

using camera::Options;

struct Shape {
  std::uint32_t width, height, channels;
  std::uint64_t words;  // pixel bytes / 8
};

struct Result {
  std::uint64_t frames;
  std::uint32_t status;  // the Status that stopped it, 0 if none
};

// One block: frame after frame, claim a slot, draw it, commit it.
__global__ void draw_frames(gpu::BroadcastProducerRef ref, Shape shape, std::uint64_t frames,
                            std::uint64_t timeout_ns, Result* r) {
  const gpu::BroadcastDeviceProducer tx(ref);
  __shared__ unsigned long long sum;
  const unsigned rank = threadIdx.x;
  for (std::uint64_t n = 0; n < frames; ++n) {
    const gpu::DeviceClaim c = tx.block_claim(1, timeout_ns);
    if (c.count == 0) {
      if (rank == 0) r->status = static_cast<std::uint32_t>(c.status);
      return;
    }
    std::byte* slot = tx.payload(c.first);
    auto* words = reinterpret_cast<std::uint64_t*>(slot + sizeof(camera::FrameHeader));
    if (rank == 0) sum = 0;
    __syncthreads();
    unsigned long long mine = 0;  // wrapping, as the checksum is
    for (std::uint64_t w = rank; w < shape.words; w += blockDim.x) {
      std::uint64_t word = 0;
      for (unsigned b = 0; b < 8; ++b) {
        word |= std::uint64_t{camera::pixel(8 * w + b, n)} << (8 * b);  // little endian
      }
      words[w] = word;
      mine += word;
    }
    atomicAdd(&sum, mine);
    __syncthreads();
    if (rank == 0) {
      camera::FrameHeader h{};
      h.magic = camera::kMagic;
      h.width = shape.width;
      h.height = shape.height;
      h.channels = shape.channels;
      h.counter = n;
      h.checksum = sum;
      *reinterpret_cast<camera::FrameHeader*>(slot) = h;
      tx.set_size(c, 0, static_cast<std::uint32_t>(sizeof h + 8 * shape.words));
      r->frames = n + 1;
    }
    tx.block_commit(c, 1);
  }
}

void usage(std::FILE* to) {
  std::fprintf(to,
               "usage: shmring-gpu-camera [--name NAME] [--frames N] [--width W] [--height H]\n"
               "                          [--channels C] [--subscribers S] [--capacity N]\n"
               "                          [--timeout S]\n"
               "  Creates the reliable broadcast ring NAME, waits up to --timeout seconds for\n"
               "  S subscribers, then a CUDA kernel draws N frames of W x H x C bytes into\n"
               "  its slots (defaults: shmring-camera, 300 frames, 640 x 480 x 3, 2\n"
               "  subscribers, 8 slots, 10 s); then the stream is closed.\n"
               "  Exit status: 0 ok, 2 usage, 3 runtime failure, 77 no CUDA device.\n");
}

int run(const Options& o) {
  if (gpu::device_count() == 0) {
    std::printf("shmring-gpu-camera: no CUDA device visible, nothing to do\n");
    return kExitNoGpu;
  }
  const std::uint64_t pixel_bytes = o.width * o.height * o.channels;
  const shmring::CreateOptions c = camera::ring_options(o);
  const shmring::Segment segment = shmring::Segment::create(o.name, c);
  struct Unlink {
    const std::string& name;
    ~Unlink() {
      std::error_code ec;
      shmring::Segment::unlink(name, ec);
    }
  } unlink{o.name};
  const auto reg = gpu::Registration::register_segment(segment);
  auto tx = gpu::GpuBroadcastProducer::attach(segment, reg);
  std::printf("gpu camera: ring /dev/shm/%s (%llu slots of %llu B), waiting for %llu subscribers\n",
              o.name.c_str(), static_cast<unsigned long long>(o.capacity),
              static_cast<unsigned long long>(c.slot_size),
              static_cast<unsigned long long>(o.subscribers));
  std::fflush(stdout);
  if (!camera::await_subscribers(segment, o)) {
    std::fprintf(stderr, "shmring-gpu-camera: only %u of %llu subscribers came\n",
                 camera::attached_subscribers(segment),
                 static_cast<unsigned long long>(o.subscribers));
    return kExitRuntime;
  }
  Result* r = nullptr;
  if (cudaMalloc(&r, sizeof *r) != cudaSuccess || cudaMemset(r, 0, sizeof *r) != cudaSuccess) {
    std::fprintf(stderr, "shmring-gpu-camera: cudaMalloc failed\n");
    return kExitRuntime;
  }
  const Shape shape{static_cast<std::uint32_t>(o.width), static_cast<std::uint32_t>(o.height),
                    static_cast<std::uint32_t>(o.channels), pixel_bytes / 8};
  const auto start = Clock::now();
  draw_frames<<<1, 1024>>>(tx.ref(), shape, o.frames, o.timeout_s * 1'000'000'000ull, r);
  Result result{};
  const bool ok = cudaGetLastError() == cudaSuccess && cudaDeviceSynchronize() == cudaSuccess &&
                  cudaMemcpy(&result, r, sizeof result, cudaMemcpyDeviceToHost) == cudaSuccess;
  const double s = std::chrono::duration<double>(Clock::now() - start).count();
  cudaFree(r);
  tx.close();  // the subscribers read every frame, then their loops end
  if (!ok) {
    std::fprintf(stderr, "shmring-gpu-camera: the kernel failed: %s\n",
                 cudaGetErrorString(cudaGetLastError()));
    return kExitRuntime;
  }
  if (result.status != 0) {
    std::fprintf(stderr, "shmring-gpu-camera: stopped after %llu frames: %s\n",
                 static_cast<unsigned long long>(result.frames),
                 shmring::to_string(static_cast<shmring::Status>(result.status)));
    return kExitRuntime;
  }
  std::printf(
      "gpu camera: %llu frames of %llux%llux%llu drawn in place in %.3f s (%.0f frames/s)\n",
      static_cast<unsigned long long>(result.frames), static_cast<unsigned long long>(o.width),
      static_cast<unsigned long long>(o.height), static_cast<unsigned long long>(o.channels), s,
      static_cast<double>(result.frames) / s);
  return kExitOk;
}

}  // namespace

int main(int argc, char** argv) {
  Options o;
  bool help = false;
  if (const std::string err = camera::parse_options(argc, argv, 1, /*with_out=*/false, o, help);
      !err.empty()) {
    std::fprintf(stderr, "shmring-gpu-camera: %s\n\n", err.c_str());
    usage(stderr);
    return kExitUsage;
  }
  if (help) {
    usage(stdout);
    return kExitOk;
  }
  try {
    return run(o);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "shmring-gpu-camera: %s\n", e.what());
  }
  return kExitRuntime;
}
