// Frames between a CUDA kernel and a CPU process, zero copy, both ways.
//
//   kernel --- ring "to-cpu" (64 KiB frames) ---> CPU process: checks every byte
//   kernel <--- ring "to-gpu" (64 KiB frames) --- CPU process: writes in place
//                                                 (the kernel checks and sums)
//
// Both rings live in /dev/shm. The CPU side is a separate process that uses
// only the CPU API; it is forked before the first CUDA call, because a child
// must not inherit a CUDA context. The parent registers each segment with
// CUDA and hands its kernels the GPU side of each ring.
//
//   gpu_frames [frames]      (default 20000 frames each way)
//
// Exit status: 0 every frame arrived intact, 1 something failed, 77 no CUDA
// device (skipped).
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <span>
#include <stdexcept>
#include <string>
#include <system_error>

#include "shmring/cuda/capabilities.hpp"
#include "shmring/cuda/device.cuh"
#include "shmring/cuda/gpu_ring.hpp"
#include "shmring/cuda/registration.hpp"
#include "shmring/shmring.hpp"

namespace {

using namespace std::chrono_literals;
namespace gpu = shmring::cuda;

constexpr std::uint32_t kFrameBytes = 64 * 1024;
constexpr std::uint32_t kFrameWords = kFrameBytes / 8;
constexpr std::uint64_t kRingFrames = 64;     // slots per ring
constexpr std::uint32_t kFramesPerClaim = 8;  // a kernel publishes 8 frames at a time
constexpr std::uint64_t kKernelTimeoutNs = 5'000'000'000;

// Word i of frame f: word 0 is the frame number, the rest a pattern of both.
__host__ __device__ inline std::uint64_t frame_word(std::uint64_t frame, std::uint32_t i) {
  return i == 0 ? frame : (frame << 20) ^ (std::uint64_t{i} * 0x9E3779B97F4A7C15ull);
}

struct GpuReport {
  unsigned long long frames, bad_frames, checksum;
  unsigned status;  // shmring::Status of a failed claim or peek
};

// One block produces: claim up to 8 slots, every thread writes 16 bytes at a
// time into them, commit (one publication per claim).
__global__ void produce_frames(gpu::SpscProducerRef ring, std::uint64_t frames, GpuReport* out) {
  const gpu::SpscDeviceProducer tx(ring);
  for (std::uint64_t done = 0; done < frames;) {
    const std::uint64_t left = frames - done;
    const gpu::DeviceClaim claim =
        tx.block_claim(left < kFramesPerClaim ? static_cast<std::uint32_t>(left) : kFramesPerClaim,
                       kKernelTimeoutNs);
    if (claim.count == 0) {  // the CPU side stopped reading
      if (threadIdx.x == 0) out->status = static_cast<unsigned>(claim.status);
      return;
    }
    for (std::uint32_t f = 0; f < claim.count; ++f) {
      const std::uint64_t frame = claim.first + f;  // a fresh ring: position = frame number
      auto* words = reinterpret_cast<ulonglong2*>(tx.payload(frame));
      for (std::uint32_t v = threadIdx.x; v < kFrameWords / 2; v += blockDim.x) {
        words[v] = ulonglong2{frame_word(frame, 2 * v), frame_word(frame, 2 * v + 1)};
      }
    }
    tx.block_commit(claim, claim.count);  // frames fill their slots: no set_size needed
    done += claim.count;
  }
  if (threadIdx.x == 0) out->frames = frames;
}

// One block consumes: peek at up to 8 frames, every thread checks and sums
// 16 bytes at a time, release them.
__global__ void consume_frames(gpu::SpscConsumerRef ring, std::uint64_t frames, GpuReport* out) {
  const gpu::SpscDeviceConsumer rx(ring);
  unsigned long long bad = 0, sum = 0;
  for (std::uint64_t done = 0; done < frames;) {
    const gpu::DeviceClaim claim = rx.block_peek(kFramesPerClaim, kKernelTimeoutNs);
    if (claim.count == 0) {
      if (threadIdx.x == 0) out->status = static_cast<unsigned>(claim.status);
      break;
    }
    for (std::uint32_t f = 0; f < claim.count; ++f) {
      const std::uint64_t frame = done + f;
      const auto* words = reinterpret_cast<const ulonglong2*>(rx.view().payload(claim.first + f));
      bool ok = threadIdx.x != 0 || rx.slot(claim, f).size == kFrameBytes;
      for (std::uint32_t v = threadIdx.x; v < kFrameWords / 2; v += blockDim.x) {
        const ulonglong2 w = words[v];
        ok = ok && w.x == frame_word(frame, 2 * v) && w.y == frame_word(frame, 2 * v + 1);
        sum += w.x + w.y;
      }
      bad += __syncthreads_or(!ok) ? 1 : 0;  // a frame is bad if any thread saw a wrong word
    }
    rx.block_release(claim, claim.count);
    done += claim.count;
  }
  if (threadIdx.x == 0) {
    out->frames = frames;
    out->bad_frames = bad;
  }
  atomicAdd(&out->checksum, sum);
}

double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

void print_rate(const char* what, std::uint64_t frames, double s) {
  std::printf("%s: %llu frames of %u KiB in %.3f s: %.0f frames/s, %.2f GB/s\n", what,
              static_cast<unsigned long long>(frames), kFrameBytes / 1024, s, frames / s,
              frames * double{kFrameBytes} / s / 1e9);
}

// The CPU process: consume the kernel's frames, then produce frames for the
// other kernel. It waits at the gate until the parent has found a GPU.
int cpu_side(const std::string& to_cpu, const std::string& to_gpu, std::uint64_t frames, int gate) {
  char go = 0;
  if (read(gate, &go, 1) != 1) return 0;  // gate closed: no GPU, nothing to do
  shmring::Segment in = shmring::Segment::open(to_cpu);
  shmring::Segment out = shmring::Segment::open(to_gpu);
  shmring::SpscConsumer rx = shmring::SpscConsumer::attach(in);
  shmring::SpscProducer tx = shmring::SpscProducer::attach(out);

  std::uint64_t bad = 0;
  auto t0 = std::chrono::steady_clock::now();
  for (std::uint64_t frame = 0; frame < frames;) {
    shmring::ReadClaim claim = rx.peek(kRingFrames, 5s);  // frames in place, no copy
    if (claim.empty()) {
      std::fprintf(stderr, "CPU: no frame from the GPU (%s)\n", shmring::to_string(claim.status()));
      return 1;
    }
    for (std::size_t i = 0; i < claim.size(); ++i, ++frame) {
      const std::span<const std::byte> bytes = claim[i];
      bool ok = bytes.size() == kFrameBytes;
      for (std::uint32_t w = 0; ok && w < kFrameWords; ++w) {
        std::uint64_t word;
        std::memcpy(&word, bytes.data() + 8 * w, 8);
        ok = word == frame_word(frame, w);
      }
      bad += !ok;
    }
    claim.release();
  }
  print_rate("GPU -> CPU", frames, seconds_since(t0));
  std::printf("GPU -> CPU: the CPU checked every byte: %llu bad frames\n",
              static_cast<unsigned long long>(bad));

  t0 = std::chrono::steady_clock::now();
  for (std::uint64_t frame = 0; frame < frames;) {
    shmring::WriteClaim claim = tx.claim(kFramesPerClaim, 5s);  // slots to write in place
    if (claim.empty()) {
      std::fprintf(stderr, "CPU: the GPU stopped taking frames (%s)\n",
                   shmring::to_string(claim.status()));
      return 1;
    }
    const std::size_t n = std::min<std::uint64_t>(claim.size(), frames - frame);
    for (std::size_t i = 0; i < n; ++i, ++frame) {
      std::byte* bytes = claim[i].data();
      for (std::uint32_t w = 0; w < kFrameWords; ++w) {
        const std::uint64_t word = frame_word(frame, w);
        std::memcpy(bytes + 8 * w, &word, 8);
      }
    }
    claim.commit_batch(n);  // one publication for the batch
  }
  print_rate("CPU -> GPU (CPU side)", frames, seconds_since(t0));
  return bad == 0 ? 0 : 1;
}

struct Unlink {
  std::string name;
  ~Unlink() {
    std::error_code ec;
    shmring::Segment::unlink(name, ec);
  }
};

int run(std::uint64_t frames) {
  const std::string pid = std::to_string(::getpid());
  const std::string to_cpu = "gpu-frames-to-cpu-" + pid, to_gpu = "gpu-frames-to-gpu-" + pid;
  shmring::CreateOptions options;  // SPSC
  options.capacity = kRingFrames;
  options.slot_size = kFrameBytes;
  shmring::Segment to_cpu_seg = shmring::Segment::create(to_cpu, options);
  Unlink unlink_to_cpu{to_cpu};
  shmring::Segment to_gpu_seg = shmring::Segment::create(to_gpu, options);
  Unlink unlink_to_gpu{to_gpu};

  // 1. Fork the CPU side before any CUDA call; it waits at a gate.
  int gate[2];
  if (pipe(gate) != 0) throw std::runtime_error("pipe failed");
  std::fflush(nullptr);
  const pid_t child = fork();
  if (child < 0) throw std::runtime_error("fork failed");
  if (child == 0) {
    close(gate[1]);
    int status = 1;
    try {
      status = cpu_side(to_cpu, to_gpu, frames, gate[0]);
    } catch (const std::exception& e) {
      std::fprintf(stderr, "CPU: %s\n", e.what());
    }
    std::fflush(nullptr);
    _exit(status);
  }
  close(gate[0]);
  auto wait_child = [&] {
    int status = 0;
    waitpid(child, &status, 0);
    return WIFEXITED(status) ? WEXITSTATUS(status) : 1;
  };

  // 2. A GPU? Without one, close the gate and skip.
  if (gpu::device_count() == 0) {
    close(gate[1]);
    wait_child();
    std::printf("no CUDA device: the CUDA driver reports none (or is not installed); skipped\n");
    return 77;
  }

  // 3. Register the segments in this process; take the GPU side of each ring.
  const auto to_cpu_reg = gpu::Registration::register_segment(to_cpu_seg);
  const auto to_gpu_reg = gpu::Registration::register_segment(to_gpu_seg);
  const auto producer = gpu::GpuSpscProducer::attach(to_cpu_seg, to_cpu_reg);
  const auto consumer = gpu::GpuSpscConsumer::attach(to_gpu_seg, to_gpu_reg);
  std::printf("%s: %llu frames of %u KiB each way, rings of %llu slots\n",
              to_cpu_reg.capabilities().name.c_str(), static_cast<unsigned long long>(frames),
              kFrameBytes / 1024, static_cast<unsigned long long>(kRingFrames));
  std::fflush(stdout);

  GpuReport* report = nullptr;
  cudaMallocManaged(&report, 2 * sizeof(GpuReport));
  std::memset(report, 0, 2 * sizeof(GpuReport));
  if (write(gate[1], "g", 1) != 1) throw std::runtime_error("gate write failed");
  close(gate[1]);

  // 4. Run the kernels one after the other while the CPU side works.
  auto t0 = std::chrono::steady_clock::now();
  produce_frames<<<1, 1024>>>(producer.ref(), frames, &report[0]);
  cudaError_t err = cudaDeviceSynchronize();
  const double produce_s = seconds_since(t0);
  t0 = std::chrono::steady_clock::now();
  if (err == cudaSuccess) {
    consume_frames<<<1, 1024>>>(consumer.ref(), frames, &report[1]);
    err = cudaDeviceSynchronize();
  }
  const double consume_s = seconds_since(t0);
  const int cpu_status = wait_child();
  if (err != cudaSuccess) {
    std::printf("CUDA error: %s\n", cudaGetErrorString(err));
    return 1;
  }
  print_rate("GPU -> CPU (kernel side)", report[0].frames, produce_s);
  print_rate("CPU -> GPU (kernel side)", report[1].frames, consume_s);
  std::printf("CPU -> GPU: the kernel checked every byte: %llu bad frames, checksum %016llx\n",
              report[1].bad_frames, report[1].checksum);
  const bool ok = cpu_status == 0 && report[0].status == 0 && report[1].status == 0 &&
                  report[0].frames == frames && report[1].frames == frames &&
                  report[1].bad_frames == 0;
  std::printf("%s\n", ok ? "all frames intact" : "FAILED");
  cudaFree(report);
  return ok ? 0 : 1;
}

}  // namespace

int main(int argc, char** argv) {
  const std::uint64_t frames = argc > 1 ? std::strtoull(argv[1], nullptr, 10) : 20000;
  try {
    return run(frames == 0 ? 1 : frames);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "gpu_frames: %s\n", e.what());
    return 1;
  }
}
