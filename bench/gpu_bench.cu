// shmring_gpu_bench: CPU <-> GPU rings measured against the machine's own
// ceilings, in one run, every message verified.
//
//   ceilings     kernel 16-byte stores into / loads from a registered /dev/shm
//                segment (whole grid, and one block: an SPSC GPU side is one
//                block), cudaMemcpy H2D / D2H from / to it, and a one-flag
//                CPU <-> kernel ping-pong.
//   GPU -> CPU   one block produces (block_claim, fill, block_commit) into an
//                SPSC ring; a CPU process consumes it (try_peek / release).
//   CPU -> GPU   a CPU process produces (try_claim / commit_batch); one block
//                consumes (block_peek, read, block_release).
//   round trip   CPU push -> kernel pop + push -> CPU pop, over two rings.
//
// The CPU agent is a process forked before the first CUDA call; it uses only
// the CPU API. Message i of a ring carries i (its position) in its first 8
// bytes, its size in the next 8 and ~i in its last 8, and a fixed pattern in
// between. Consumers check the stamps of every message; the GPU consumer
// checks every byte, the CPU consumer every byte of one message in
// `--deep-bytes` worth (it cannot read at the GPU's rate from one core).
//
// Usage: shmring_gpu_bench [--json FILE] [--sizes 64,4K,64K,1M] [--volume 4G]
//          [--reps 3] [--rtt-rounds 10000] [--cpus HOST,AGENT] ... (--help)
// Prints a markdown report on stdout (progress on stderr). Exit status: 0 all
// messages verified, 1 a verification or a run failed, 2 bad usage, 77 no
// CUDA device.
#include <cuda_runtime_api.h>
#include <sched.h>
#include <signal.h>
#include <sys/epoll.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cctype>
#include <cerrno>
#include <cinttypes>
#include <cstdarg>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <cuda/atomic>
#include <exception>
#include <fstream>
#include <new>
#include <span>
#include <sstream>
#include <stdexcept>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "shmring/cuda/broadcast_device.cuh"
#include "shmring/cuda/capabilities.hpp"
#include "shmring/cuda/device.cuh"
#include "shmring/cuda/gpu_ring.hpp"
#include "shmring/cuda/registration.hpp"
#include "shmring/shmring.hpp"

namespace {

namespace sr = shmring;
namespace sc = shmring::cuda;

constexpr int kExitSkip = 77;
constexpr std::uint64_t KiB = 1024, MiB = KiB * KiB, GiB = MiB * KiB;

// ---------------------------------------------------------------------------
// Options

struct Options {
  std::string json;
  std::vector<std::uint64_t> sizes{64, 4 * KiB, 64 * KiB, MiB};
  std::uint64_t volume = 4 * GiB;        // payload bytes per throughput run
  std::uint64_t ring_bytes = 128 * MiB;  // slot area per ring (capacity rounded down to 2^k)
  std::uint64_t max_capacity = 16384;    // slots (a 64 B ring of 2 MiB stays in the CPU's cache)
  std::uint64_t gpu_claim_bytes = 16 * MiB;  // GPU producer: bytes per block_claim
  std::uint64_t gpu_peek_bytes = 16 * MiB;   // GPU consumer: bytes per block_peek
  std::uint64_t cpu_batch_bytes = 64 * KiB;  // CPU side: bytes per commit_batch / try_peek
  std::uint64_t max_gpu_claim = 4096;        // slots per block_claim
  std::uint64_t max_gpu_peek = 8192;         // slots per block_peek
  std::uint64_t deep_bytes = 16 * MiB;  // CPU consumer: one full-content check per this many bytes
  std::uint64_t cpu_prefetch = 16;      // CPU consumer: prefetch the payload this many slots ahead
  std::uint64_t ceiling_bytes = 256 * MiB;
  std::uint64_t one_block_ceiling_bytes = 64 * MiB;
  unsigned reps = 3;
  unsigned ceiling_reps = 5;
  std::uint64_t rtt_rounds = 10000;
  std::uint64_t rtt_warmup = 1000;
  unsigned gpu_threads = 1024;
  int device = 0;
  int cpu_host = -1;  // -1: chosen from the GPU's local CPUs
  int cpu_agent = -1;
  double timeout_s = 10;
  bool ceilings = true, gpu_to_cpu = true, cpu_to_gpu = true, round_trip = true;
  bool broadcast = true;
  std::vector<std::uint64_t> subscribers{1, 2, 4};  // broadcast: subscriber processes per row
  std::uint64_t broadcast_size = 64 * KiB;
  bool reference = true;   // also run the minimal hand-written variants
  bool full_write = true;  // CPU -> GPU: also rows where the CPU writes every byte
  bool diagnose = false;   // also the variants that tell costs apart
  bool cpu_check = true;   // GPU -> CPU: the CPU consumer checks messages (off: diagnosis only)
};

[[noreturn]] void usage(const char* argv0, int status) {
  std::fprintf(
      status == 0 ? stdout : stderr,
      "usage: %s [options]\n"
      "  --json FILE            also write the results as JSON\n"
      "  --sizes LIST           slot sizes, powers of two >= 32 (default 64,4K,64K,1M)\n"
      "  --volume BYTES         payload per throughput run (default 4G)\n"
      "  --reps N               runs per throughput row, median reported (default 3)\n"
      "  --ring-bytes BYTES     slot area per ring (default 128M; capacity <= --max-capacity)\n"
      "  --max-capacity N       slots per ring at most (default 16384)\n"
      "  --gpu-claim-bytes B    GPU producer bytes per block_claim (default 16M, <= "
      "--max-gpu-claim slots)\n"
      "  --max-gpu-claim N      (default 4096)\n"
      "  --gpu-peek-bytes B     GPU consumer bytes per block_peek (default 16M, <= --max-gpu-peek "
      "slots)\n"
      "  --max-gpu-peek N       (default 8192)\n"
      "  --cpu-batch-bytes B    CPU side bytes per commit_batch / try_peek (default 64K)\n"
      "  --deep-bytes B         CPU consumer: full check of one message per B bytes (default 16M)\n"
      "  --cpu-prefetch N       CPU consumer: prefetch payloads N slots ahead, 0 off (default 16)\n"
      "  --ceiling-bytes B      registered region for the ceilings (default 256M)\n"
      "  --ceiling-reps N       (default 5)\n"
      "  --rtt-rounds N         measured round trips per row (default 10000)\n"
      "  --rtt-warmup N         round trips discarded first (default 1000)\n"
      "  --gpu-threads N        threads of the one block on each ring (default 1024)\n"
      "  --device N             CUDA device (default 0)\n"
      "  --cpus HOST,AGENT      cores for this process and the CPU agent process\n"
      "                         (default: 2nd and 3rd core local to the GPU)\n"
      "  --timeout S            any single wait, seconds (default 10)\n"
      "  --only LIST            parts: ceilings,g2c,c2g,rtt,bcast (default all)\n"
      "  --subscribers LIST     bcast: CPU subscriber processes per row (default 1,2,4)\n"
      "  --broadcast-size B     bcast: slot size (default 64K)\n"
      "  --no-reference         skip the minimal hand-written variants\n"
      "  --no-full-write        skip the CPU -> GPU rows where the CPU writes every byte\n"
      "  --diagnose             GPU -> CPU 64 B: also each of the two minimal changes alone;\n"
      "                         one-block load ceiling with 4, 8 and 16 loads in flight\n"
      "  --no-cpu-check         diagnosis only: the CPU consumer reads nothing (NOT verified)\n",
      argv0);
  std::exit(status);
}

std::uint64_t parse_bytes(std::string_view s) {
  if (s.empty()) throw std::invalid_argument("empty number");
  std::size_t used = 0;
  const std::uint64_t v = std::stoull(std::string(s), &used, 10);
  std::uint64_t unit = 1;
  const std::string_view rest = s.substr(used);
  if (rest == "K" || rest == "k" || rest == "KiB")
    unit = KiB;
  else if (rest == "M" || rest == "MiB")
    unit = MiB;
  else if (rest == "G" || rest == "GiB")
    unit = GiB;
  else if (!rest.empty())
    throw std::invalid_argument("bad size '" + std::string(s) + "'");
  return v * unit;
}

std::vector<std::uint64_t> parse_list(std::string_view s) {
  std::vector<std::uint64_t> out;
  while (!s.empty()) {
    const std::size_t comma = s.find(',');
    out.push_back(parse_bytes(s.substr(0, comma)));
    s = comma == std::string_view::npos ? std::string_view{} : s.substr(comma + 1);
  }
  return out;
}

Options parse_options(int argc, char** argv) {
  Options o;
  for (int i = 1; i < argc; ++i) {
    const std::string_view a = argv[i];
    auto value = [&]() -> std::string_view {
      if (i + 1 >= argc) {
        std::fprintf(stderr, "%s needs a value\n", argv[i]);
        usage(argv[0], 2);
      }
      return argv[++i];
    };
    try {
      if (a == "--help" || a == "-h")
        usage(argv[0], 0);
      else if (a == "--json")
        o.json = value();
      else if (a == "--sizes")
        o.sizes = parse_list(value());
      else if (a == "--volume")
        o.volume = parse_bytes(value());
      else if (a == "--reps")
        o.reps = static_cast<unsigned>(parse_bytes(value()));
      else if (a == "--ring-bytes")
        o.ring_bytes = parse_bytes(value());
      else if (a == "--max-capacity")
        o.max_capacity = parse_bytes(value());
      else if (a == "--gpu-claim-bytes")
        o.gpu_claim_bytes = parse_bytes(value());
      else if (a == "--max-gpu-claim")
        o.max_gpu_claim = parse_bytes(value());
      else if (a == "--gpu-peek-bytes")
        o.gpu_peek_bytes = parse_bytes(value());
      else if (a == "--max-gpu-peek")
        o.max_gpu_peek = parse_bytes(value());
      else if (a == "--cpu-batch-bytes")
        o.cpu_batch_bytes = parse_bytes(value());
      else if (a == "--deep-bytes")
        o.deep_bytes = parse_bytes(value());
      else if (a == "--cpu-prefetch")
        o.cpu_prefetch = parse_bytes(value());
      else if (a == "--ceiling-bytes")
        o.ceiling_bytes = parse_bytes(value());
      else if (a == "--ceiling-reps")
        o.ceiling_reps = static_cast<unsigned>(parse_bytes(value()));
      else if (a == "--rtt-rounds")
        o.rtt_rounds = parse_bytes(value());
      else if (a == "--rtt-warmup")
        o.rtt_warmup = parse_bytes(value());
      else if (a == "--gpu-threads")
        o.gpu_threads = static_cast<unsigned>(parse_bytes(value()));
      else if (a == "--device")
        o.device = static_cast<int>(parse_bytes(value()));
      else if (a == "--timeout")
        o.timeout_s = std::stod(std::string(value()));
      else if (a == "--cpus") {
        const auto cpus = parse_list(value());
        if (cpus.size() != 2) throw std::invalid_argument("--cpus takes HOST,AGENT");
        o.cpu_host = static_cast<int>(cpus[0]);
        o.cpu_agent = static_cast<int>(cpus[1]);
      } else if (a == "--only") {
        const std::string parts = "," + std::string(value()) + ",";
        o.ceilings = parts.find(",ceilings,") != std::string::npos;
        o.gpu_to_cpu = parts.find(",g2c,") != std::string::npos;
        o.cpu_to_gpu = parts.find(",c2g,") != std::string::npos;
        o.round_trip = parts.find(",rtt,") != std::string::npos;
        o.broadcast = parts.find(",bcast,") != std::string::npos;
      } else if (a == "--subscribers") {
        o.subscribers = parse_list(value());
      } else if (a == "--broadcast-size") {
        o.broadcast_size = parse_bytes(value());
      } else if (a == "--no-reference")
        o.reference = false;
      else if (a == "--no-full-write")
        o.full_write = false;
      else if (a == "--diagnose")
        o.diagnose = true;
      else if (a == "--no-cpu-check")
        o.cpu_check = false;
      else {
        std::fprintf(stderr, "unknown option %s\n", argv[i]);
        usage(argv[0], 2);
      }
    } catch (const std::exception& e) {
      std::fprintf(stderr, "%s: %s\n", argv[i], e.what());
      usage(argv[0], 2);
    }
  }
  for (const std::uint64_t s : o.sizes) {
    if (s < 32 || (s & (s - 1)) != 0 || s > sr::kMaxSlotSize) {
      std::fprintf(stderr, "--sizes: %" PRIu64 " is not a power of two in [32, 1G]\n", s);
      usage(argv[0], 2);
    }
  }
  if (o.reps == 0 || o.ceiling_reps == 0 || o.gpu_threads == 0 || o.gpu_threads > 1024 ||
      o.gpu_threads % 32 != 0 || o.rtt_rounds == 0 || o.timeout_s <= 0) {
    std::fprintf(stderr,
                 "bad --reps, --ceiling-reps, --gpu-threads (32..1024, a multiple of 32), "
                 "--rtt-rounds or --timeout\n");
    usage(argv[0], 2);
  }
  return o;
}

// ---------------------------------------------------------------------------
// Small host helpers

std::int64_t now_ns() {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return std::int64_t{ts.tv_sec} * 1000000000 + ts.tv_nsec;
}

void pin_to(int cpu) {
  if (cpu < 0) return;
  cpu_set_t set;
  CPU_ZERO(&set);
  CPU_SET(cpu, &set);
  sched_setaffinity(0, sizeof set, &set);  // best effort: a refused core is reported, not fatal
}

std::vector<int> allowed_cpus() {
  cpu_set_t set;
  CPU_ZERO(&set);
  std::vector<int> cpus;
  if (sched_getaffinity(0, sizeof set, &set) == 0) {
    for (int c = 0; c < CPU_SETSIZE; ++c) {
      if (CPU_ISSET(c, &set)) cpus.push_back(c);
    }
  }
  if (cpus.empty()) cpus.push_back(0);
  return cpus;
}

std::string read_first_line(const std::string& path) {
  std::ifstream f(path);
  std::string line;
  std::getline(f, line);
  return line;
}

std::string cpu_model() {
  std::ifstream f("/proc/cpuinfo");
  std::string line;
  while (std::getline(f, line)) {
    if (line.rfind("model name", 0) == 0) {
      const auto colon = line.find(':');
      return colon == std::string::npos ? line : line.substr(colon + 2);
    }
  }
  return "unknown";
}

void cuda_ok(cudaError_t e, const char* what) {
  if (e != cudaSuccess) {
    throw std::runtime_error(std::string(what) + ": " + cudaGetErrorName(e) + " (" +
                             cudaGetErrorString(e) + ")");
  }
}

std::string human_bytes(std::uint64_t b) {
  char buf[32];
  if (b >= GiB && b % GiB == 0)
    std::snprintf(buf, sizeof buf, "%" PRIu64 " GiB", b / GiB);
  else if (b >= MiB && b % MiB == 0)
    std::snprintf(buf, sizeof buf, "%" PRIu64 " MiB", b / MiB);
  else if (b >= KiB && b % KiB == 0)
    std::snprintf(buf, sizeof buf, "%" PRIu64 " KiB", b / KiB);
  else
    std::snprintf(buf, sizeof buf, "%" PRIu64 " B", b);
  return buf;
}

std::uint64_t pow2_floor(std::uint64_t v) {
  std::uint64_t p = 1;
  while (p * 2 <= v) p *= 2;
  return p;
}

std::uint64_t clamp_u64(std::uint64_t v, std::uint64_t lo, std::uint64_t hi) {
  return v < lo ? lo : v > hi ? hi : v;
}

// Removes a segment name when the scope ends; mappings stay valid.
struct Unlink {
  std::string name;
  ~Unlink() {
    std::error_code ec;
    sr::Segment::unlink(name, ec);
  }
};

std::string segment_name(const char* what) {
  static unsigned counter = 0;
  return "shmring-gpubench-" + std::to_string(::getpid()) + "-" + what + "-" +
         std::to_string(counter++);
}

// ---------------------------------------------------------------------------
// Messages (host and device)

__host__ __device__ inline std::uint64_t pattern_word(std::uint64_t w) {
  const std::uint64_t x = (w + 1) * 0x9E3779B97F4A7C15ull;
  return x ^ (x >> 29);
}

// 16-byte vector `v` of message `seq` of `size` bytes (vps = size / 16):
// word 0 = seq, word 1 = size, last word = ~seq, the rest pattern_word(w).
__host__ __device__ inline ulonglong2 message_vector(std::uint64_t seq, std::uint64_t size,
                                                     std::uint32_t v, std::uint32_t vps) {
  ulonglong2 r;
  r.x = v == 0 ? seq : pattern_word(2ull * v);
  r.y = v == 0 ? size : v == vps - 1 ? ~seq : pattern_word(2ull * v + 1);
  return r;
}

// The message of seq 0 with its stamps zeroed: what every body compares to.
std::vector<unsigned char> host_frame(std::uint64_t size) {
  std::vector<unsigned char> f(size);
  const auto vps = static_cast<std::uint32_t>(size / 16);
  for (std::uint32_t v = 0; v < vps; ++v) {
    ulonglong2 x = message_vector(0, size, v, vps);
    if (v == 0) x.x = 0;
    if (v == vps - 1) x.y = 0;
    std::memcpy(f.data() + 16ull * v, &x, 16);
  }
  return f;
}

inline std::uint64_t load_word(const std::byte* p) {
  std::uint64_t w;
  std::memcpy(&w, p, 8);
  return w;
}
inline void store_word(std::byte* p, std::uint64_t w) { std::memcpy(p, &w, 8); }

// ---------------------------------------------------------------------------
// The CPU agent: a process forked before CUDA, running one job at a time.

enum class JobKind : std::uint32_t { consume = 1, produce = 2, quit = 3, subscribe = 4 };

struct AgentJob {
  JobKind kind = JobKind::quit;
  int cpu = -1;
  char segment[128] = {};
  std::uint64_t messages = 0;
  std::uint64_t size = 0;
  std::uint64_t batch = 0;       // try_peek / try_claim maximum
  std::uint64_t deep_every = 0;  // consumer: full body check every n-th message (0: never)
  std::uint32_t write_full = 0;  // producer: every byte, or the stamps only
  std::uint32_t check = 1;       // consumer: 0 reads nothing (diagnosis only)
  std::uint32_t prefetch = 0;    // consumer: payload prefetch distance, slots
  double timeout_s = 10;
};

struct AgentResult {
  std::uint64_t messages = 0;
  std::uint64_t errors = 0;
  std::uint64_t deep_checked = 0;
  std::int64_t t_start = 0;  // producer: first claim; consumer: first message seen
  std::int64_t t_end = 0;    // last message committed / released
  std::uint32_t ok = 0;
  char failure[256] = {};
};

struct AgentControl {
  std::atomic<std::uint32_t> posted{0};    // host: job number written
  std::atomic<std::uint32_t> attached{0};  // agent: attached for job n
  std::atomic<std::uint32_t> go{0};        // host: producer may start job n
  std::atomic<std::uint32_t> finished{0};  // agent: result of job n written
  std::atomic<std::uint32_t> abandon{0};   // host: give up job n (its GPU side failed)
  AgentJob job;
  AgentResult result;
};

// Spins on a condition; gives up `timeout_s` after the last progress, or
// when the host abandons job `job`.
struct IdleClock {
  double timeout_s;
  const std::atomic<std::uint32_t>* abandon = nullptr;
  std::uint32_t job = 0;
  std::int64_t idle_since = 0;
  std::uint32_t spins = 0;
  // true while it is still worth waiting
  bool wait() {
    sr::atomic::cpu_relax();
    if ((++spins & 1023u) != 0) return true;
    if (abandon != nullptr && abandon->load(std::memory_order_relaxed) == job) return false;
    const std::int64_t now = now_ns();
    if (idle_since == 0) idle_since = now;
    return static_cast<double>(now - idle_since) < timeout_s * 1e9;
  }
  void progress() { idle_since = 0; }
};

// Reads job.messages through `rx` (an SpscConsumer, or a BroadcastSubscriber
// of a broadcast ring), checking the stamps of every message and the whole
// body of every deep_every-th.
template <class Consumer>
void consume_checked(Consumer& rx, const sr::Segment& seg, const AgentJob& job, AgentControl* ctl,
                     std::uint32_t n, AgentResult& r) {
  ctl->attached.store(n, std::memory_order_release);
  const std::vector<unsigned char> frame = host_frame(job.size);
  const std::uint64_t size = job.size;
  const sr::RingView view(seg.base(), seg.geometry());  // addresses for prefetching only
  std::uint64_t seq = rx.position();
  const std::uint64_t end = seq + job.messages;
  std::uint64_t errors = 0, deep = 0;
  std::uint64_t until_deep = 0;  // messages before the next full check
  IdleClock idle{job.timeout_s, &ctl->abandon, n};
  while (seq < end) {
    sr::ReadClaim c = rx.try_peek(std::min<std::uint64_t>(job.batch, end - seq));
    if (c.empty()) {
      if (c.status() == sr::Status::corrupt) throw std::runtime_error("try_peek: ring corrupt");
      if (!idle.wait()) throw std::runtime_error("GPU producer stalled (nothing to read)");
      continue;
    }
    idle.progress();
    if (r.t_start == 0) r.t_start = now_ns();
    const std::size_t k = c.size();
    for (std::size_t i = 0; i < k && job.check != 0; ++i) {
      // The payload line is the consumer's second miss per small message.
      if (job.prefetch != 0 && i + job.prefetch < k)
        __builtin_prefetch(view.payload(seq + i + job.prefetch));
      const std::span<const std::byte> m = c[i];
      const std::byte* p = m.data();
      const std::uint64_t s = seq + i;
      errors += (m.size() != size) | (load_word(p) != s) | (load_word(p + 8) != size) |
                (load_word(p + size - 8) != ~s);
      if (until_deep-- == 0) {
        until_deep = job.deep_every - 1;
        ++deep;
        errors += std::memcmp(p + 16, frame.data() + 16, size - 24) != 0;
      }
    }
    c.release();
    seq += k;
  }
  r.t_end = now_ns();
  r.messages = job.messages;
  r.errors = errors;
  r.deep_checked = deep;
}

void agent_consume(const AgentJob& job, AgentControl* ctl, std::uint32_t n, AgentResult& r) {
  const sr::Segment seg = sr::Segment::open(job.segment);
  sr::SpscConsumer rx = sr::SpscConsumer::attach(seg);
  consume_checked(rx, seg, job, ctl, n, r);
}

// A subscriber of a broadcast ring, joined before the producer starts.
void agent_subscribe(const AgentJob& job, AgentControl* ctl, std::uint32_t n, AgentResult& r) {
  const sr::Segment seg = sr::Segment::open(job.segment);
  sr::BroadcastSubscriber rx = sr::BroadcastSubscriber::attach(seg, sr::JoinAt::oldest);
  consume_checked(rx, seg, job, ctl, n, r);
}

void agent_produce(const AgentJob& job, AgentControl* ctl, std::uint32_t n, AgentResult& r) {
  const sr::Segment seg = sr::Segment::open(job.segment);
  sr::SpscProducer tx = sr::SpscProducer::attach(seg);
  const std::vector<unsigned char> frame = host_frame(job.size);
  const std::uint64_t size = job.size;
  ctl->attached.store(n, std::memory_order_release);
  IdleClock idle{job.timeout_s, &ctl->abandon, n};
  while (ctl->go.load(std::memory_order_acquire) != n) {
    if (!idle.wait()) throw std::runtime_error("no start signal");
  }
  idle.progress();
  std::uint64_t seq = tx.position();
  const std::uint64_t end = seq + job.messages;
  r.t_start = now_ns();
  while (seq < end) {
    sr::WriteClaim w = tx.try_claim(std::min<std::uint64_t>(job.batch, end - seq));
    if (w.empty()) {
      if (w.status() == sr::Status::corrupt) throw std::runtime_error("try_claim: ring corrupt");
      if (!idle.wait()) throw std::runtime_error("GPU consumer stalled (no room)");
      continue;
    }
    idle.progress();
    const std::size_t k = w.size();
    for (std::size_t i = 0; i < k; ++i) {
      std::byte* p = w[i].data();
      const std::uint64_t s = seq + i;
      if (size == 64) {  // the whole message, as fixed-size stores
        std::uint64_t words[8];
        std::memcpy(words, frame.data(), 64);
        words[0] = s;
        words[1] = size;
        words[7] = ~s;
        std::memcpy(p, words, 64);
        continue;
      }
      if (job.write_full != 0) std::memcpy(p + 16, frame.data() + 16, size - 24);
      store_word(p, s);
      store_word(p + 8, size);
      store_word(p + size - 8, ~s);
    }
    w.commit_batch();
    seq += k;
  }
  r.t_end = now_ns();
  r.messages = job.messages;
}

[[noreturn]] void agent_main(AgentControl* ctl, pid_t parent) {
  prctl(PR_SET_PDEATHSIG, SIGKILL);
  if (::getppid() != parent) _exit(0);
  std::uint32_t seen = 0;
  for (;;) {
    while (ctl->posted.load(std::memory_order_acquire) == seen) {
      if (::getppid() != parent) _exit(0);
      usleep(50);
    }
    seen = ctl->posted.load(std::memory_order_acquire);
    const AgentJob job = ctl->job;
    if (job.kind == JobKind::quit) _exit(0);
    pin_to(job.cpu);
    AgentResult r;
    try {
      if (job.kind == JobKind::consume)
        agent_consume(job, ctl, seen, r);
      else if (job.kind == JobKind::subscribe)
        agent_subscribe(job, ctl, seen, r);
      else
        agent_produce(job, ctl, seen, r);
      r.ok = 1;
    } catch (const std::exception& e) {
      std::snprintf(r.failure, sizeof r.failure, "CPU agent: %s", e.what());
    }
    ctl->result = r;
    ctl->finished.store(seen, std::memory_order_release);
  }
}

class Agent {
 public:
  // Forks the agent; call before any CUDA call.
  static Agent start() {
    void* mem = mmap(nullptr, sizeof(AgentControl), PROT_READ | PROT_WRITE,
                     MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (mem == MAP_FAILED) throw std::runtime_error("mmap of the agent control block failed");
    auto* ctl = new (mem) AgentControl();
    const pid_t parent = ::getpid();
    std::fflush(nullptr);
    const pid_t pid = fork();
    if (pid < 0) throw std::runtime_error("fork failed");
    if (pid == 0) agent_main(ctl, parent);
    Agent a;
    a.ctl_ = ctl;
    a.pid_ = pid;
    return a;
  }

  // Posts a job, after abandoning one still running (its GPU side failed).
  std::uint32_t post(const AgentJob& job) {
    if (pending_ != 0) {
      ctl_->abandon.store(pending_, std::memory_order_relaxed);
      wait_finished(pending_, ctl_->job.timeout_s + 30);
    }
    ctl_->job = job;
    const std::uint32_t n = ++next_;
    pending_ = job.kind == JobKind::quit ? 0 : n;
    ctl_->posted.store(n, std::memory_order_release);
    return n;
  }
  // Waits until the agent attached for job n (or gave up on it).
  void wait_attached(std::uint32_t n, double timeout_s) {
    const std::int64_t until = now_ns() + static_cast<std::int64_t>(timeout_s * 1e9);
    while (ctl_->attached.load(std::memory_order_acquire) != n) {
      if (ctl_->finished.load(std::memory_order_acquire) == n) {
        throw std::runtime_error(ctl_->result.failure);
      }
      check_alive();
      if (now_ns() > until) throw std::runtime_error("CPU agent did not attach");
      usleep(20);
    }
  }
  void go(std::uint32_t n) { ctl_->go.store(n, std::memory_order_release); }
  AgentResult wait_finished(std::uint32_t n, double timeout_s) {
    const std::int64_t until = now_ns() + static_cast<std::int64_t>(timeout_s * 1e9);
    while (ctl_->finished.load(std::memory_order_acquire) != n) {
      check_alive();
      if (now_ns() > until) throw std::runtime_error("CPU agent did not finish");
      usleep(20);
    }
    pending_ = 0;
    return ctl_->result;
  }
  void stop() {
    if (pid_ <= 0) return;
    if (pending_ != 0) ctl_->abandon.store(pending_, std::memory_order_relaxed);
    pending_ = 0;  // the agent reads the quit job once that one is done
    AgentJob quit;
    quit.kind = JobKind::quit;
    post(quit);
    int status = 0;
    waitpid(pid_, &status, 0);
    pid_ = -1;
  }

 private:
  void check_alive() {
    int status = 0;
    if (waitpid(pid_, &status, WNOHANG) == pid_) {
      pid_ = -1;
      throw std::runtime_error("CPU agent process died");
    }
  }
  AgentControl* ctl_ = nullptr;
  pid_t pid_ = -1;
  std::uint32_t next_ = 0;
  std::uint32_t pending_ = 0;  // posted, result not read yet
};

// ---------------------------------------------------------------------------
// Kernels

struct KernelResult {
  unsigned long long messages;
  unsigned long long errors;
  unsigned long long sum;
  unsigned int status;  // the first Status other than ok, as a number
  unsigned int pad;
};

__device__ void note_status(KernelResult* r, sr::Status s) {
  if (s != sr::Status::ok) atomicCAS(&r->status, 0u, static_cast<unsigned>(s));
}

__device__ inline unsigned long long block_sum(unsigned long long v) {
  for (int o = 16; o > 0; o /= 2) v += __shfl_down_sync(sc::kFullWarp, v, o);
  return v;
}

// -- ceilings: grid-stride 16-byte stores and loads -------------------------

__global__ void store_kernel(ulonglong2* dst, std::uint64_t vectors, std::uint64_t salt) {
  const std::uint64_t stride = std::uint64_t{gridDim.x} * blockDim.x;
  for (std::uint64_t v = std::uint64_t{blockIdx.x} * blockDim.x + threadIdx.x; v < vectors;
       v += stride) {
    dst[v] = ulonglong2{(2 * v) ^ salt, (2 * v + 1) ^ salt};
  }
}

// kInFlight loads per thread before their use: over PCIe a load is a round
// trip, so bandwidth is bytes in flight / latency.
template <int kInFlight = 8>
__global__ void load_sum_kernel(const ulonglong2* src, std::uint64_t vectors,
                                unsigned long long* out) {
  const std::uint64_t stride = std::uint64_t{gridDim.x} * blockDim.x;
  unsigned long long s = 0;
  for (std::uint64_t base = std::uint64_t{blockIdx.x} * blockDim.x + threadIdx.x; base < vectors;
       base += kInFlight * stride) {
    ulonglong2 v[kInFlight];
#pragma unroll
    for (int j = 0; j < kInFlight; ++j) {
      const std::uint64_t i = base + j * stride;
      v[j] = i < vectors ? src[i] : ulonglong2{0, 0};
    }
#pragma unroll
    for (int j = 0; j < kInFlight; ++j) s += v[j].x + v[j].y;
  }
  s = block_sum(s);
  if ((threadIdx.x & 31u) == 0) atomicAdd(out, s);
}

// One flag, one writer at a time: the CPU stores 2i - 1, thread 0 answers 2i.
__global__ void flag_echo_kernel(std::uint64_t* flag, std::uint64_t rounds,
                                 std::uint64_t timeout_ns, KernelResult* r) {
  if (threadIdx.x != 0) return;
  for (std::uint64_t i = 1; i <= rounds; ++i) {
    const std::uint64_t want = 2 * i - 1;
    const std::uint64_t start = sc::global_ns();
    std::uint32_t polls = 0;
    while (sr::atomic::load_acquire(flag) != want) {
      if ((++polls & 255u) == 0 && sc::global_ns() - start > timeout_ns) {
        note_status(r, sr::Status::timeout);
        return;
      }
    }
    sr::atomic::store_release(flag, want + 1);
  }
  r->messages = rounds;
}

// -- GPU producer -----------------------------------------------------------

__device__ inline std::uint32_t log2_u32(std::uint32_t v) { return 31u - __clz(v); }

// Slots of <= `kFlatFillMax` bytes: the block fills all claimed slots at once,
// 16 bytes per thread per step (four threads write one 64-byte slot).
// Larger slots: the whole block copies one slot at a time from a frame in
// device memory (group_copy) and thread 0 writes the stamps.
constexpr std::uint32_t kFlatFillMax = 4096;

__device__ inline void fill_flat(const sr::RingView& view, std::uint64_t first, std::uint32_t count,
                                 std::uint32_t size, unsigned rank, unsigned threads) {
  const std::uint32_t vps = size / 16;
  const std::uint32_t shift = log2_u32(vps);
  const std::uint32_t total = count * vps;
  for (std::uint32_t i = rank; i < total; i += threads) {
    const std::uint32_t slot = i >> shift;
    const std::uint32_t v = i & (vps - 1);
    const std::uint64_t pos = first + slot;
    *reinterpret_cast<ulonglong2*>(view.payload(pos) + 16ull * v) =
        message_vector(pos, size, v, vps);
  }
}

__device__ inline void fill_copy(const sr::RingView& view, std::uint64_t first, std::uint32_t count,
                                 std::uint32_t size, const unsigned char* frame, unsigned rank,
                                 unsigned threads) {
  const std::uint32_t vps = size / 16;
  for (std::uint32_t i = 0; i < count; ++i) {
    const std::uint64_t pos = first + i;
    std::byte* dst = view.payload(pos);
    // The whole slot, so every warp store covers whole 32-byte sectors; then
    // the stamps over the first and last 16 bytes.
    sc::group_copy(dst, frame, size, rank, threads);
    __syncthreads();
    if (rank == 0) {
      *reinterpret_cast<ulonglong2*>(dst) = message_vector(pos, size, 0, vps);
      *reinterpret_cast<ulonglong2*>(dst + size - 16) = message_vector(pos, size, vps - 1, vps);
    }
  }
}

// group_copy with eight 16-byte loads in flight per thread before the
// stores (the compiler may not reorder group_copy's loads past its stores,
// as source and destination could overlap): a local helper, not a library call.
__device__ inline void fill_staged(const sr::RingView& view, std::uint64_t first,
                                   std::uint32_t count, std::uint32_t size,
                                   const unsigned char* frame, unsigned rank, unsigned threads) {
  const std::uint32_t vps = size / 16;
  const auto* src = reinterpret_cast<const ulonglong2*>(frame);
  for (std::uint32_t k = 0; k < count; ++k) {
    const std::uint64_t pos = first + k;
    auto* dst = reinterpret_cast<ulonglong2*>(view.payload(pos));
    for (std::uint32_t base = rank; base < vps; base += 8 * threads) {
      ulonglong2 v[8];
#pragma unroll
      for (int j = 0; j < 8; ++j) {
        const std::uint32_t i = base + j * threads;
        if (i < vps)
          v[j] = i == 0 || i == vps - 1 ? message_vector(pos, size, i, vps) : __ldg(src + i);
      }
#pragma unroll
      for (int j = 0; j < 8; ++j) {
        const std::uint32_t i = base + j * threads;
        if (i < vps) dst[i] = v[j];
      }
    }
  }
}

// The library path: block_claim, fill, block_commit. kStaged: the large-slot
// copy is fill_staged instead of group_copy.
// Producer: SpscDeviceProducer, or BroadcastDeviceProducer (the same calls).
template <bool kStaged, class Producer = sc::SpscDeviceProducer, class Ref>
__global__ void __launch_bounds__(1024)
    produce_kernel(Ref ref, std::uint64_t messages, std::uint32_t size, std::uint32_t batch,
                   const unsigned char* frame, std::uint64_t timeout_ns, KernelResult* r) {
  const Producer tx(ref);
  const unsigned rank = threadIdx.x, threads = blockDim.x;
  std::uint64_t done = 0;
  while (done < messages) {
    const std::uint64_t left = messages - done;
    const sc::DeviceClaim c =
        tx.block_claim(left < batch ? static_cast<std::uint32_t>(left) : batch, timeout_ns);
    if (c.count == 0) {
      if (rank == 0) note_status(r, c.status);
      break;
    }
    if (size <= kFlatFillMax)
      fill_flat(tx.view(), c.first, c.count, size, rank, threads);
    else if (kStaged)
      fill_staged(tx.view(), c.first, c.count, size, frame, rank, threads);
    else
      fill_copy(tx.view(), c.first, c.count, size, frame, rank, threads);
    tx.block_commit(c, c.count);  // slot_size == size: the claim's lengths stand
    done += c.count;
  }
  if (rank == 0) r->messages = done;
}

// Minimal hand-written variant over the same words (not a library call): the
// block sets the claimed slots' lengths in parallel, and each thread makes
// one system-scope release fence before its relaxed `committed` stores.
// Turning one change off (--diagnose) does that step the way block_claim
// (the leader sets every length) or block_commit (a release store per slot) do.
template <bool kParallelLengths, bool kOneFence>
__global__ void __launch_bounds__(1024)
    produce_minimal_kernel(sc::SpscProducerRef ref, std::uint64_t messages, std::uint32_t size,
                           std::uint32_t batch, std::uint64_t timeout_ns, KernelResult* r) {
  const sr::SpscView view(ref.base, ref.geometry);
  __shared__ std::uint64_t s_first;
  __shared__ std::uint32_t s_count;
  __shared__ unsigned s_status;
  const unsigned rank = threadIdx.x, threads = blockDim.x;
  std::uint64_t done = 0;
  while (done < messages) {
    if (rank == 0) {
      const std::uint64_t left = messages - done;
      const std::uint64_t want = left < batch ? left : batch;
      const sc::Deadline deadline = sc::Deadline::after(timeout_ns);
      sc::Backoff backoff;
      sr::Status st = sr::Status::ok;
      std::uint64_t n = 0;
      for (;;) {
        st = sr::Status::ok;
        n = view.writable(*ref.cursor, want, st);
        if (n != 0 || st == sr::Status::corrupt) break;
        if (deadline.passed()) {
          st = sr::Status::timeout;
          break;
        }
        backoff.pause();
      }
      s_first = ref.cursor->head;
      s_count = static_cast<std::uint32_t>(n);
      s_status = static_cast<unsigned>(st);
      if (!kParallelLengths) {
        for (std::uint64_t i = 0; i < n; ++i) view.set_length(s_first + i, size);
      }
    }
    __syncthreads();
    const std::uint64_t first = s_first;
    const std::uint32_t count = s_count;
    if (count == 0) {
      if (rank == 0) note_status(r, static_cast<sr::Status>(s_status));
      break;
    }
    if (kParallelLengths) {
      for (std::uint32_t i = rank; i < count; i += threads) view.set_length(first + i, size);
    }
    fill_flat(view, first, count, size, rank, threads);
    __syncthreads();
    // SYNC POINT (release, system scope, pairs with the consumer's acquire of
    // `committed`): one fence covers the block's payload and length writes,
    // ordered before it by the barrier.
    if (kOneFence) {
      ::cuda::atomic_thread_fence(::cuda::std::memory_order_release, ::cuda::thread_scope_system);
    }
    for (std::uint32_t i = rank; i < count; i += threads) {
      if (kOneFence) {
        sr::atomic::store_relaxed(&view.trailer(first + i)->committed, first + i + 1);
      } else {
        sr::atomic::store_release(&view.trailer(first + i)->committed, first + i + 1);
      }
    }
    __syncthreads();
    if (rank == 0) {
      ref.cursor->head = first + count;
      sr::atomic::store_release(&view.producer()->position, first + count);
    }
    done += count;
  }
  if (rank == 0) r->messages = done;
}

// -- GPU consumer: block_peek, read and check every byte, block_release -----

__global__ void __launch_bounds__(1024)
    consume_kernel(sc::SpscConsumerRef ref, std::uint64_t messages, std::uint32_t size,
                   std::uint32_t batch, std::uint64_t timeout_ns, KernelResult* r) {
  const sc::SpscDeviceConsumer rx(ref);
  const unsigned rank = threadIdx.x, threads = blockDim.x;
  const std::uint32_t vps = size / 16;
  const std::uint32_t shift = log2_u32(vps);
  unsigned long long errors = 0, sum = 0;
  std::uint64_t done = 0;
  while (done < messages) {
    const std::uint64_t left = messages - done;
    const sc::DeviceClaim c =
        rx.block_peek(left < batch ? static_cast<std::uint32_t>(left) : batch, timeout_ns);
    if (c.count == 0) {
      if (rank == 0) note_status(r, c.status);
      break;
    }
    const std::uint32_t total = c.count * vps;
    for (std::uint32_t base = rank; base < total; base += 8 * threads) {
      ulonglong2 v[8];
#pragma unroll
      for (int j = 0; j < 8; ++j) {
        const std::uint32_t i = base + j * threads;
        if (i < total) {
          v[j] = *reinterpret_cast<const ulonglong2*>(rx.view().payload(c.first + (i >> shift)) +
                                                      16ull * (i & (vps - 1)));
        }
      }
#pragma unroll
      for (int j = 0; j < 8; ++j) {
        const std::uint32_t i = base + j * threads;
        if (i < total) {
          const ulonglong2 want = message_vector(c.first + (i >> shift), size, i & (vps - 1), vps);
          errors += (v[j].x != want.x) | (v[j].y != want.y);
          sum += v[j].x ^ v[j].y;
        }
      }
    }
    for (std::uint32_t i = rank; i < c.count; i += threads) errors += rx.slot(c, i).size != size;
    rx.block_release(c, c.count);
    done += c.count;
  }
  errors = block_sum(errors);
  sum = block_sum(sum);
  if ((rank & 31u) == 0) {
    atomicAdd(&r->errors, errors);
    atomicAdd(&r->sum, sum);
  }
  if (rank == 0) r->messages = done;
}

// -- round trips --------------------------------------------------------------

__device__ inline unsigned long long ping_errors(const unsigned char* p, std::uint32_t got,
                                                 std::uint32_t size, std::uint64_t seq) {
  std::uint64_t first;
  memcpy(&first, p, 8);
  unsigned long long bad = (got != size) | (first != seq);
  if (size >= 16) {
    std::uint64_t last;
    memcpy(&last, p + size - 8, 8);
    bad |= last != ~seq;
  }
  return bad;
}

// Thread 0: pop() the ping, push() it back.
__global__ void echo_pop_push_kernel(sc::SpscConsumerRef in, sc::SpscProducerRef out,
                                     std::uint64_t rounds, std::uint32_t size,
                                     std::uint64_t timeout_ns, KernelResult* r) {
  if (threadIdx.x != 0) return;
  const sc::SpscDeviceConsumer rx(in);
  const sc::SpscDeviceProducer tx(out);
  alignas(16) unsigned char buf[64];
  for (std::uint64_t i = 0; i < rounds; ++i) {
    std::uint32_t got = 0;
    sr::Status s = rx.pop(buf, sizeof buf, got, timeout_ns);
    if (s != sr::Status::ok) return note_status(r, s);
    r->errors += ping_errors(buf, got, size, i);
    s = tx.push(buf, got, timeout_ns);
    if (s != sr::Status::ok) return note_status(r, s);
  }
  r->messages = rounds;
}

// One warp: warp_pop() the ping (each lane loads its share of the words at
// once), lane 0 push()es it back (one thread's stores do not wait on PCIe).
__global__ void echo_warp_pop_push_kernel(sc::SpscConsumerRef in, sc::SpscProducerRef out,
                                          std::uint64_t rounds, std::uint32_t size,
                                          std::uint64_t timeout_ns, KernelResult* r) {
  if (threadIdx.x >= 32) return;
  const sc::SpscDeviceConsumer rx(in);
  const sc::SpscDeviceProducer tx(out);
  __shared__ alignas(16) unsigned char buf[64];
  for (std::uint64_t i = 0; i < rounds; ++i) {
    std::uint32_t got = 0;
    sr::Status s = rx.warp_pop(buf, sizeof buf, got, timeout_ns);
    if (s != sr::Status::ok) {
      if (threadIdx.x == 0) note_status(r, s);
      return;
    }
    if (threadIdx.x == 0) {
      r->errors += ping_errors(buf, got, size, i);
      s = tx.push(buf, got, timeout_ns);
    }
    s = static_cast<sr::Status>(__shfl_sync(0xffffffffu, static_cast<int>(s), 0));
    if (s != sr::Status::ok) {
      if (threadIdx.x == 0) note_status(r, s);
      return;
    }
  }
  if (threadIdx.x == 0) r->messages = rounds;
}

// One warp: warp_peek(1), lane 0 push()es the reply from the slot, then
// warp_release: the release is off the reply's path.
__global__ void echo_peek_push_kernel(sc::SpscConsumerRef in, sc::SpscProducerRef out,
                                      std::uint64_t rounds, std::uint32_t size,
                                      std::uint64_t timeout_ns, KernelResult* r) {
  if (threadIdx.x >= 32) return;
  const sc::SpscDeviceConsumer rx(in);
  const sc::SpscDeviceProducer tx(out);
  for (std::uint64_t i = 0; i < rounds; ++i) {
    const sc::DeviceClaim c = rx.warp_peek(1, timeout_ns);
    if (c.count == 0) {
      if (threadIdx.x == 0) note_status(r, c.status);
      return;
    }
    sr::Status s = sr::Status::ok;
    if (threadIdx.x == 0) {
      const sr::ReadSlot m = rx.slot(c, 0);
      s = tx.push(m.data, m.size, timeout_ns);
      r->errors += ping_errors(reinterpret_cast<const unsigned char*>(m.data), m.size, size, i);
    }
    s = static_cast<sr::Status>(__shfl_sync(sc::kFullWarp, static_cast<int>(s), 0));
    if (s != sr::Status::ok) {
      if (threadIdx.x == 0) note_status(r, s);
      return;
    }
    rx.warp_release(c, 1);
  }
  if (threadIdx.x == 0) r->messages = rounds;
}

// Minimal hand-written echo over the same words (not a library call): a
// tight poll of `committed`; the length and the payload (slots of <= 64
// bytes, read whole) loaded together, one round trip; the reply published
// before the ping's slot is released; no loads of the CPU sleeper counts (a
// GPU cannot wake a sleeper anyway).
__global__ void echo_minimal_kernel(sc::SpscConsumerRef in, sc::SpscProducerRef out,
                                    std::uint64_t rounds, std::uint32_t size,
                                    std::uint64_t timeout_ns, KernelResult* r) {
  if (threadIdx.x != 0) return;
  const sr::SpscView rx(in.base, in.geometry);
  const sr::SpscView tx(out.base, out.geometry);
  // Whole 16-byte vectors: a slot of 8 bytes still has 16 before its trailer.
  const auto vectors = static_cast<std::uint32_t>((rx.slot_size() + 15) / 16);
  if (vectors > 4 || tx.slot_size() < rx.slot_size()) return note_status(r, sr::Status::too_large);
  std::uint64_t tail = in.cursor->tail;
  sr::SpscProducerCursor cursor = *out.cursor;
  for (std::uint64_t i = 0; i < rounds; ++i) {
    const std::uint64_t start = sc::global_ns();
    std::uint32_t polls = 0;
    // SYNC POINT (acquire, pairs with the CPU producer's release of `committed`)
    while (sr::atomic::load_acquire(&rx.trailer(tail)->committed) != tail + 1) {
      if ((++polls & 255u) == 0 && sc::global_ns() - start > timeout_ns) {
        return note_status(r, sr::Status::timeout);
      }
    }
    const std::uint32_t length = rx.committed_length(tail);
    ulonglong2 v[4];
    const auto* src = reinterpret_cast<const ulonglong2*>(rx.payload(tail));
#pragma unroll
    for (std::uint32_t k = 0; k < 4; ++k) {
      if (k < vectors) v[k] = src[k];
    }
    if (!rx.length_ok(length)) return note_status(r, sr::Status::corrupt);
    sr::Status st = sr::Status::ok;
    while (tx.writable(cursor, 1, st) == 0) {
      if (st == sr::Status::corrupt || sc::global_ns() - start > timeout_ns) {
        return note_status(r, st == sr::Status::ok ? sr::Status::timeout : st);
      }
    }
    auto* dst = reinterpret_cast<ulonglong2*>(tx.payload(cursor.head));
#pragma unroll
    for (std::uint32_t k = 0; k < 4; ++k) {
      if (k < vectors) dst[k] = v[k];
    }
    tx.set_length(cursor.head, length);
    // SYNC POINT (release, pairs with the CPU consumer's acquire of `committed`)
    sr::atomic::store_release(&tx.trailer(cursor.head)->committed, cursor.head + 1);
    ++cursor.head;
    ++tail;
    sr::atomic::store_release(&tx.producer()->position, cursor.head);
    // SYNC POINT (release, pairs with the CPU producer's acquire of the tail)
    sr::atomic::store_release(&rx.consumer()->position, tail);
    r->errors += ping_errors(reinterpret_cast<const unsigned char*>(v), length, size, i);
  }
  in.cursor->tail = tail;
  *out.cursor = cursor;
  r->messages = rounds;
}

// ---------------------------------------------------------------------------
// Measurements

struct Device {
  int id = 0;
  cudaDeviceProp prop{};
  sc::DeviceCapabilities caps;
  int driver = 0, runtime = 0;  // CUDA versions (driver API, runtime)
  std::string nvidia_driver;    // the kernel module's version
  std::string pci;
};

struct Ceilings {
  bool measured = false;
  double store_gbps = 0, load_gbps = 0;  // whole grid, median
  double store_1block_gbps = 0, load_1block_gbps = 0;
  double h2d_gbps = 0, d2h_gbps = 0;
  double register_ms = 0;
  std::vector<std::pair<std::string, double>> diagnosis;  // --diagnose: what, GB/s
  double flag_median_ns = 0, flag_p99_ns = 0, flag_min_ns = 0;
  std::uint64_t flag_rounds = 0;
  std::uint64_t errors = 0;
  std::vector<std::string> failures;
};

struct Throughput {
  std::string direction;  // gpu_to_cpu / cpu_to_gpu
  std::string method;
  std::string cpu_writes;
  bool library = true;  // only the library's own forms, no local helper
  std::uint64_t size = 0, capacity = 0, gpu_batch = 0, cpu_batch = 0, messages = 0;
  std::vector<double> seconds;
  double msg_per_s = 0, gbps = 0;
  double ceiling_gbps = 0, ratio = 0, ratio_1block = 0;
  std::uint64_t errors = 0, deep_checked = 0;
  std::string failure;
  std::string target;  // "" when none
  bool met = false;
};

struct RoundTrip {
  std::string variant;
  std::uint64_t size = 0, rounds = 0;
  double median_ns = 0, p99_ns = 0, min_ns = 0, mean_ns = 0;
  double ratio = 0;  // median / flag median
  std::uint64_t errors = 0;
  std::string failure;
  std::string target;
  bool met = false;
};

struct Context {
  Options opt;
  Device dev;
  Agent* agent = nullptr;
  std::vector<Agent>* subscribers = nullptr;  // broadcast: agents beyond the first
  std::vector<int> subscriber_cpus;           // their cores
  int cpu_host = -1, cpu_agent = -1;
  std::string cpu_choice;
  KernelResult* result = nullptr;  // device memory
  unsigned long long* scratch = nullptr;

  std::uint64_t timeout_ns() const { return static_cast<std::uint64_t>(opt.timeout_s * 1e9); }

  void reset_result() { cuda_ok(cudaMemset(result, 0, sizeof(KernelResult)), "cudaMemset"); }
  KernelResult read_result() {
    KernelResult r{};
    cuda_ok(cudaMemcpy(&r, result, sizeof r, cudaMemcpyDeviceToHost), "cudaMemcpy result");
    return r;
  }
};

void progress(const char* fmt, ...) __attribute__((format(printf, 1, 2)));
void progress(const char* fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  std::vfprintf(stderr, fmt, ap);
  va_end(ap);
  std::fputc('\n', stderr);
}

double median(std::vector<double> v) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

struct Percentiles {
  double median = 0, p99 = 0, min = 0, mean = 0;
};
Percentiles percentiles(std::vector<std::int64_t> v) {
  Percentiles p;
  if (v.empty()) return p;
  std::sort(v.begin(), v.end());
  p.median = static_cast<double>(v[v.size() / 2]);
  p.p99 = static_cast<double>(v[std::min(v.size() - 1, v.size() * 99 / 100)]);
  p.min = static_cast<double>(v.front());
  double s = 0;
  for (const auto x : v) s += static_cast<double>(x);
  p.mean = s / static_cast<double>(v.size());
  return p;
}

// Times a kernel launch with events; returns seconds.
template <class Launch>
double timed(Launch&& launch) {
  cudaEvent_t a, b;
  cuda_ok(cudaEventCreate(&a), "cudaEventCreate");
  cuda_ok(cudaEventCreate(&b), "cudaEventCreate");
  cuda_ok(cudaEventRecord(a), "cudaEventRecord");
  launch();
  cuda_ok(cudaGetLastError(), "kernel launch");
  cuda_ok(cudaEventRecord(b), "cudaEventRecord");
  cuda_ok(cudaEventSynchronize(b), "kernel");
  float ms = 0;
  cuda_ok(cudaEventElapsedTime(&ms, a, b), "cudaEventElapsedTime");
  cudaEventDestroy(a);
  cudaEventDestroy(b);
  return ms / 1e3;
}

Ceilings measure_ceilings(Context& ctx) {
  Ceilings c;
  const Options& o = ctx.opt;
  const std::uint64_t bytes = o.ceiling_bytes / 16 * 16;
  const std::uint64_t vectors = bytes / 16;
  const std::uint64_t one_block_vectors = std::min(o.one_block_ceiling_bytes, bytes) / 16;
  const std::string name = segment_name("ceiling");
  sr::CreateOptions co;
  co.capacity = pow2_floor(std::max<std::uint64_t>(1, bytes / MiB));
  if (co.capacity * MiB < bytes) co.capacity *= 2;
  co.slot_size = MiB;  // the slot area, one stretch of co.capacity MiB and a bit, is the region
  const sr::Segment seg = sr::Segment::create(name, co);
  Unlink unlink{name};
  const std::uint64_t offset = seg.geometry().slots_offset;
  const std::int64_t t0 = now_ns();
  const sc::Registration reg = sc::Registration::register_segment(seg, ctx.dev.id);
  c.register_ms = static_cast<double>(now_ns() - t0) / 1e6;
  auto* host = reinterpret_cast<std::uint64_t*>(seg.base() + offset);
  auto* dev = reinterpret_cast<ulonglong2*>(reg.device_pointer() + offset);
  const int blocks = ctx.dev.prop.multiProcessorCount * 4;
  const int threads = 512;
  progress("ceilings: %s registered in %.0f ms", human_bytes(bytes).c_str(), c.register_ms);

  auto verify_stores = [&](std::uint64_t n_vectors, std::uint64_t salt) {
    std::uint64_t bad = 0;
    for (std::uint64_t w = 0; w < 2 * n_vectors; ++w) bad += host[w] != (w ^ salt);
    return bad;
  };
  // Stores, whole grid and one block.
  std::vector<double> gbps;
  std::uint64_t salt = 0;
  for (unsigned rep = 0; rep < o.ceiling_reps + 1; ++rep) {  // the first is a warm-up
    salt = 0x1234567800000000ull + rep;
    const double s = timed([&] { store_kernel<<<blocks, threads>>>(dev, vectors, salt); });
    if (rep != 0) gbps.push_back(static_cast<double>(bytes) / s / 1e9);
  }
  c.errors += verify_stores(vectors, salt);
  c.store_gbps = median(gbps);
  gbps.clear();
  for (unsigned rep = 0; rep < 2; ++rep) {
    salt = 0xABCDEF0000000000ull + rep;
    const double s =
        timed([&] { store_kernel<<<1, o.gpu_threads>>>(dev, one_block_vectors, salt); });
    gbps.push_back(static_cast<double>(one_block_vectors * 16) / s / 1e9);
  }
  c.errors += verify_stores(one_block_vectors, salt);
  c.store_1block_gbps = *std::max_element(gbps.begin(), gbps.end());
  if (o.diagnose) {  // one block, the region shifted off its 128-byte lines
    for (const unsigned shift : {1u, 4u}) {
      double best = 0;
      for (unsigned rep = 0; rep < 2; ++rep) {
        const double s = timed([&] {
          store_kernel<<<1, o.gpu_threads>>>(dev + shift, one_block_vectors - shift, salt);
        });
        best = std::max(best, static_cast<double>((one_block_vectors - shift) * 16) / s / 1e9);
      }
      c.diagnosis.push_back({"kernel stores, one block, region starting " +
                                 std::to_string(16 * shift) + " bytes into a 128-byte line",
                             best});
    }
  }
  progress("ceilings: kernel stores %.1f GB/s (one block %.1f GB/s)", c.store_gbps,
           c.store_1block_gbps);

  // Loads: the CPU writes a pattern and its sum; the kernel sums it back.
  unsigned long long expect = 0, expect_1block = 0;
  for (std::uint64_t w = 0; w < 2 * vectors; ++w) {
    host[w] = pattern_word(w);
    expect += host[w];
    if (w + 1 == 2 * one_block_vectors) expect_1block = expect;
  }
  gbps.clear();
  for (unsigned rep = 0; rep < o.ceiling_reps + 1; ++rep) {
    cuda_ok(cudaMemset(ctx.scratch, 0, 8), "cudaMemset");
    const double s =
        timed([&] { load_sum_kernel<8><<<blocks, threads>>>(dev, vectors, ctx.scratch); });
    unsigned long long got = 0;
    cuda_ok(cudaMemcpy(&got, ctx.scratch, 8, cudaMemcpyDeviceToHost), "cudaMemcpy");
    c.errors += got != expect;
    if (rep != 0) gbps.push_back(static_cast<double>(bytes) / s / 1e9);
  }
  c.load_gbps = median(gbps);
  gbps.clear();
  for (unsigned rep = 0; rep < 2; ++rep) {
    cuda_ok(cudaMemset(ctx.scratch, 0, 8), "cudaMemset");
    const double s = timed(
        [&] { load_sum_kernel<8><<<1, o.gpu_threads>>>(dev, one_block_vectors, ctx.scratch); });
    unsigned long long got = 0;
    cuda_ok(cudaMemcpy(&got, ctx.scratch, 8, cudaMemcpyDeviceToHost), "cudaMemcpy");
    c.errors += got != expect_1block;
    gbps.push_back(static_cast<double>(one_block_vectors * 16) / s / 1e9);
  }
  c.load_1block_gbps = *std::max_element(gbps.begin(), gbps.end());
  if (o.diagnose) {
    auto one_block = [&](auto kernel, unsigned block_threads) {
      double best = 0;
      for (unsigned rep = 0; rep < 2; ++rep) {
        cuda_ok(cudaMemset(ctx.scratch, 0, 8), "cudaMemset");
        const double s =
            timed([&] { kernel<<<1, block_threads>>>(dev, one_block_vectors, ctx.scratch); });
        unsigned long long got = 0;
        cuda_ok(cudaMemcpy(&got, ctx.scratch, 8, cudaMemcpyDeviceToHost), "cudaMemcpy");
        c.errors += got != expect_1block;
        best = std::max(best, static_cast<double>(one_block_vectors * 16) / s / 1e9);
      }
      return best;
    };
    c.diagnosis.push_back({"kernel loads, one block, 4 in flight x 1024 threads",
                           one_block(load_sum_kernel<4>, 1024)});
    c.diagnosis.push_back({"kernel loads, one block, 8 in flight x 1024 threads",
                           one_block(load_sum_kernel<8>, 1024)});
    c.diagnosis.push_back({"kernel loads, one block, 16 in flight x 512 threads",
                           one_block(load_sum_kernel<16>, 512)});
    for (const auto& [what, v] : c.diagnosis) progress("ceilings: %s: %.1f GB/s", what.c_str(), v);
  }
  progress("ceilings: kernel loads %.1f GB/s (one block %.1f GB/s)", c.load_gbps,
           c.load_1block_gbps);

  // cudaMemcpy: H2D of the pattern (checked by a device sum), D2H back into
  // the cleared region (checked by the CPU).
  void* dbuf = nullptr;
  cuda_ok(cudaMalloc(&dbuf, bytes), "cudaMalloc");
  gbps.clear();
  for (unsigned rep = 0; rep < o.ceiling_reps + 1; ++rep) {
    const double s = timed([&] {
      cuda_ok(cudaMemcpyAsync(dbuf, host, bytes, cudaMemcpyHostToDevice), "cudaMemcpy H2D");
    });
    if (rep != 0) gbps.push_back(static_cast<double>(bytes) / s / 1e9);
  }
  c.h2d_gbps = median(gbps);
  cuda_ok(cudaMemset(ctx.scratch, 0, 8), "cudaMemset");
  load_sum_kernel<8>
      <<<blocks, threads>>>(static_cast<const ulonglong2*>(dbuf), vectors, ctx.scratch);
  cuda_ok(cudaDeviceSynchronize(), "device sum");
  unsigned long long got = 0;
  cuda_ok(cudaMemcpy(&got, ctx.scratch, 8, cudaMemcpyDeviceToHost), "cudaMemcpy");
  c.errors += got != expect;
  std::memset(host, 0, bytes);
  gbps.clear();
  for (unsigned rep = 0; rep < o.ceiling_reps + 1; ++rep) {
    const double s = timed([&] {
      cuda_ok(cudaMemcpyAsync(host, dbuf, bytes, cudaMemcpyDeviceToHost), "cudaMemcpy D2H");
    });
    if (rep != 0) gbps.push_back(static_cast<double>(bytes) / s / 1e9);
  }
  c.d2h_gbps = median(gbps);
  unsigned long long back = 0;
  for (std::uint64_t w = 0; w < 2 * vectors; ++w) back += host[w];
  c.errors += back != expect;
  cudaFree(dbuf);
  progress("ceilings: cudaMemcpy H2D %.1f GB/s, D2H %.1f GB/s", c.h2d_gbps, c.d2h_gbps);

  // One-flag ping-pong, this thread pinned, kernel thread 0 tight-polling.
  auto* flag = host;
  *flag = 0;
  const std::uint64_t rounds = o.rtt_warmup + o.rtt_rounds;
  ctx.reset_result();
  flag_echo_kernel<<<1, 32>>>(reinterpret_cast<std::uint64_t*>(dev), rounds, ctx.timeout_ns(),
                              ctx.result);
  cuda_ok(cudaGetLastError(), "flag kernel launch");
  std::vector<std::int64_t> samples;
  samples.reserve(o.rtt_rounds);
  IdleClock idle{o.timeout_s};
  for (std::uint64_t i = 1; i <= rounds; ++i) {
    const std::int64_t a = now_ns();
    sr::atomic::store_release(flag, 2 * i - 1);
    bool alive = true;
    while (sr::atomic::load_acquire(flag) != 2 * i && (alive = idle.wait())) {
    }
    const std::int64_t b = now_ns();
    if (!alive) {
      c.failures.push_back("flag ping-pong: no answer from the kernel");
      break;
    }
    idle.progress();
    if (i > o.rtt_warmup) samples.push_back(b - a);
  }
  cuda_ok(cudaDeviceSynchronize(), "flag kernel");
  const KernelResult kr = ctx.read_result();
  if (kr.status != 0)
    c.failures.push_back("flag kernel: " +
                         std::string(sr::to_string(static_cast<sr::Status>(kr.status))));
  const Percentiles p = percentiles(samples);
  c.flag_median_ns = p.median;
  c.flag_p99_ns = p.p99;
  c.flag_min_ns = p.min;
  c.flag_rounds = samples.size();
  progress("ceilings: flag ping-pong median %.2f us, p99 %.2f us", p.median / 1e3, p.p99 / 1e3);
  if (c.errors != 0)
    c.failures.push_back(std::to_string(c.errors) + " ceiling verification errors");
  c.measured = true;
  return c;
}

struct RingShape {
  std::uint64_t capacity, gpu_batch, gpu_peek, cpu_batch, cpu_peek;
};

RingShape ring_shape(const Options& o, std::uint64_t size) {
  sr::Geometry g;
  sr::compute_geometry(sr::RingKind::spsc, 1, size, g);
  RingShape s;
  s.capacity = clamp_u64(pow2_floor(std::max<std::uint64_t>(1, o.ring_bytes / g.slot_stride)), 4,
                         std::max<std::uint64_t>(4, o.max_capacity));
  s.gpu_batch = clamp_u64(o.gpu_claim_bytes / size, 1, std::min(o.max_gpu_claim, s.capacity / 4));
  s.gpu_peek = clamp_u64(o.gpu_peek_bytes / size, 1, std::min(o.max_gpu_peek, s.capacity / 2));
  s.cpu_batch = clamp_u64(o.cpu_batch_bytes / size, 1, s.capacity / 4);
  s.cpu_peek = clamp_u64(o.cpu_batch_bytes / size, 1, s.capacity / 4);
  return s;
}

enum class ProducerKind { library, staged_copy, minimal, serial_lengths, fence_per_slot };

const char* producer_label(ProducerKind kind, std::uint64_t size) {
  switch (kind) {
    case ProducerKind::library:
      return size <= kFlatFillMax ? "block_claim, fill, block_commit"
                                  : "block_claim, group_copy, block_commit";
    case ProducerKind::staged_copy:
      return "block_claim, staged copy (local), block_commit";
    case ProducerKind::minimal:
      return "minimal: parallel lengths, one fence per thread";
    case ProducerKind::serial_lengths:
      return "diagnostic: lengths by the leader, one fence per thread";
    case ProducerKind::fence_per_slot:
      return "diagnostic: parallel lengths, a release store per slot";
  }
  return "?";
}

Throughput measure_gpu_to_cpu(Context& ctx, std::uint64_t size, ProducerKind kind) {
  const Options& o = ctx.opt;
  const RingShape shape = ring_shape(o, size);
  Throughput t;
  t.direction = "gpu_to_cpu";
  t.method = producer_label(kind, size);
  t.library = kind == ProducerKind::library;
  if (!o.cpu_check) {
    t.cpu_writes = "- (CPU checks nothing: diagnosis)";
    t.library = false;
  }
  t.cpu_writes = "-";
  t.size = size;
  t.capacity = shape.capacity;
  t.gpu_batch = shape.gpu_batch;
  t.cpu_batch = shape.cpu_peek;
  t.messages = std::max<std::uint64_t>(1, o.volume / size);

  const std::vector<unsigned char> frame = host_frame(size);
  unsigned char* dframe = nullptr;
  cuda_ok(cudaMalloc(&dframe, size), "cudaMalloc frame");
  cuda_ok(cudaMemcpy(dframe, frame.data(), size, cudaMemcpyHostToDevice), "cudaMemcpy frame");
  for (unsigned rep = 0; rep < o.reps && t.failure.empty(); ++rep) {
    try {
      const std::string name = segment_name("g2c");
      sr::CreateOptions co;
      co.capacity = shape.capacity;
      co.slot_size = size;
      const sr::Segment seg = sr::Segment::create(name, co);
      Unlink unlink{name};
      AgentJob job;
      job.kind = JobKind::consume;
      job.cpu = ctx.cpu_agent;
      std::snprintf(job.segment, sizeof job.segment, "%s", name.c_str());
      job.messages = t.messages;
      job.size = size;
      job.batch = shape.cpu_peek;
      job.deep_every = std::max<std::uint64_t>(1, o.deep_bytes / size);
      job.check = o.cpu_check ? 1 : 0;
      job.prefetch = static_cast<std::uint32_t>(o.cpu_prefetch);
      job.timeout_s = o.timeout_s;
      const std::uint32_t n = ctx.agent->post(job);
      ctx.agent->wait_attached(n, o.timeout_s);
      const sc::Registration reg = sc::Registration::register_segment(seg, ctx.dev.id);
      const sc::GpuSpscProducer tx = sc::GpuSpscProducer::attach(seg, reg);
      ctx.reset_result();
      const std::int64_t t_go = now_ns();
      const auto s32 = static_cast<std::uint32_t>(size);
      const auto b32 = static_cast<std::uint32_t>(shape.gpu_batch);
      const unsigned threads = o.gpu_threads;
      const std::uint64_t tmo = ctx.timeout_ns();
      switch (kind) {
        case ProducerKind::library:
          produce_kernel<false>
              <<<1, threads>>>(tx.ref(), t.messages, s32, b32, dframe, tmo, ctx.result);
          break;
        case ProducerKind::staged_copy:
          produce_kernel<true>
              <<<1, threads>>>(tx.ref(), t.messages, s32, b32, dframe, tmo, ctx.result);
          break;
        case ProducerKind::minimal:
          produce_minimal_kernel<true, true>
              <<<1, threads>>>(tx.ref(), t.messages, s32, b32, tmo, ctx.result);
          break;
        case ProducerKind::serial_lengths:
          produce_minimal_kernel<false, true>
              <<<1, threads>>>(tx.ref(), t.messages, s32, b32, tmo, ctx.result);
          break;
        case ProducerKind::fence_per_slot:
          produce_minimal_kernel<true, false>
              <<<1, threads>>>(tx.ref(), t.messages, s32, b32, tmo, ctx.result);
          break;
      }
      cuda_ok(cudaGetLastError(), "producer launch");
      cuda_ok(cudaDeviceSynchronize(), "producer kernel");
      const KernelResult kr = ctx.read_result();
      const AgentResult ar = ctx.agent->wait_finished(n, o.timeout_s + 60);
      if (kr.status != 0) {
        t.failure =
            "GPU producer: " + std::string(sr::to_string(static_cast<sr::Status>(kr.status)));
      } else if (!ar.ok) {
        t.failure = ar.failure;
      } else if (kr.messages != t.messages || ar.messages != t.messages) {
        t.failure = "message count mismatch";
      }
      t.errors += ar.errors;
      t.deep_checked += ar.deep_checked;
      if (t.failure.empty()) t.seconds.push_back(static_cast<double>(ar.t_end - t_go) / 1e9);
    } catch (const std::exception& e) {
      t.failure = e.what();
    }
  }
  cudaFree(dframe);
  return t;
}

// A GPU producer (the library's block path) publishing to k CPU subscriber
// processes of a reliable broadcast ring, each checking every message as the
// GPU -> CPU consumer does. Time: from the launch until the last subscriber
// has checked the last message; GB/s: what the producer published.
Throughput measure_broadcast(Context& ctx, std::uint64_t size, std::uint64_t k) {
  const Options& o = ctx.opt;
  const RingShape shape = ring_shape(o, size);
  Throughput t;
  t.direction = "gpu_to_cpu";
  t.method = "broadcast, block_claim, group_copy, block_commit -> " + std::to_string(k) +
             (k == 1 ? " subscriber" : " subscribers");
  t.cpu_writes = "-";
  t.size = size;
  t.capacity = shape.capacity;
  t.gpu_batch = shape.gpu_batch;
  t.cpu_batch = shape.cpu_peek;
  t.messages = std::max<std::uint64_t>(1, o.volume / size / 4);
  std::vector<Agent*> agents{ctx.agent};
  for (std::uint64_t i = 1; i < k && i - 1 < ctx.subscribers->size(); ++i) {
    agents.push_back(&(*ctx.subscribers)[i - 1]);
  }
  if (agents.size() != k) {
    t.failure = "not enough subscriber agents";
    return t;
  }
  const std::vector<unsigned char> frame = host_frame(size);
  unsigned char* dframe = nullptr;
  cuda_ok(cudaMalloc(&dframe, size), "cudaMalloc frame");
  cuda_ok(cudaMemcpy(dframe, frame.data(), size, cudaMemcpyHostToDevice), "cudaMemcpy frame");
  for (unsigned rep = 0; rep < o.reps && t.failure.empty(); ++rep) {
    try {
      const std::string name = segment_name("bcast");
      sr::CreateOptions co;
      co.kind = sr::RingKind::broadcast;
      co.subscribers = static_cast<std::uint32_t>(k);
      co.capacity = shape.capacity;
      co.slot_size = size;
      const sr::Segment seg = sr::Segment::create(name, co);
      Unlink unlink{name};
      std::vector<std::uint32_t> jobs;
      for (std::size_t i = 0; i < agents.size(); ++i) {
        AgentJob job;
        job.kind = JobKind::subscribe;
        job.cpu = i == 0 ? ctx.cpu_agent : ctx.subscriber_cpus[i - 1];
        std::snprintf(job.segment, sizeof job.segment, "%s", name.c_str());
        job.messages = t.messages;
        job.size = size;
        job.batch = shape.cpu_peek;
        job.deep_every = std::max<std::uint64_t>(1, o.deep_bytes / size);
        job.prefetch = static_cast<std::uint32_t>(o.cpu_prefetch);
        job.timeout_s = o.timeout_s;
        jobs.push_back(agents[i]->post(job));
      }
      for (std::size_t i = 0; i < agents.size(); ++i)
        agents[i]->wait_attached(jobs[i], o.timeout_s);
      const sc::Registration reg = sc::Registration::register_segment(seg, ctx.dev.id);
      const sc::GpuBroadcastProducer tx = sc::GpuBroadcastProducer::attach(seg, reg);
      ctx.reset_result();
      const std::int64_t t_go = now_ns();
      produce_kernel<false, sc::BroadcastDeviceProducer><<<1, o.gpu_threads>>>(
          tx.ref(), t.messages, static_cast<std::uint32_t>(size),
          static_cast<std::uint32_t>(shape.gpu_batch), dframe, ctx.timeout_ns(), ctx.result);
      cuda_ok(cudaGetLastError(), "producer launch");
      cuda_ok(cudaDeviceSynchronize(), "producer kernel");
      const KernelResult kr = ctx.read_result();
      std::int64_t t_end = 0;
      for (std::size_t i = 0; i < agents.size(); ++i) {
        const AgentResult ar = agents[i]->wait_finished(jobs[i], o.timeout_s + 60);
        if (!ar.ok && t.failure.empty()) t.failure = ar.failure;
        if (ar.ok && ar.messages != t.messages && t.failure.empty()) {
          t.failure = "message count mismatch";
        }
        t.errors += ar.errors;
        t.deep_checked += ar.deep_checked;
        t_end = std::max(t_end, ar.t_end);
      }
      if (kr.status != 0) {
        t.failure =
            "GPU producer: " + std::string(sr::to_string(static_cast<sr::Status>(kr.status)));
      } else if (kr.messages != t.messages && t.failure.empty()) {
        t.failure = "message count mismatch";
      }
      if (t.failure.empty()) t.seconds.push_back(static_cast<double>(t_end - t_go) / 1e9);
    } catch (const std::exception& e) {
      t.failure = e.what();
    }
  }
  cudaFree(dframe);
  return t;
}

Throughput measure_cpu_to_gpu(Context& ctx, std::uint64_t size, bool write_full) {
  const Options& o = ctx.opt;
  const RingShape shape = ring_shape(o, size);
  Throughput t;
  t.direction = "cpu_to_gpu";
  t.method = "block_peek, read all, block_release";
  t.cpu_writes = size == 64 || write_full ? "every byte" : "stamps (24 B)";
  t.size = size;
  t.capacity = shape.capacity;
  t.gpu_batch = shape.gpu_peek;
  t.cpu_batch = shape.cpu_batch;
  t.messages = std::max<std::uint64_t>(1, o.volume / size);
  const std::vector<unsigned char> frame = host_frame(size);
  for (unsigned rep = 0; rep < o.reps && t.failure.empty(); ++rep) {
    try {
      const std::string name = segment_name("c2g");
      sr::CreateOptions co;
      co.capacity = shape.capacity;
      co.slot_size = size;
      const sr::Segment seg = sr::Segment::create(name, co);
      Unlink unlink{name};
      // Every slot starts with the pattern, so a producer that writes only
      // the stamps still hands over complete messages.
      const sr::RingView view(seg.base(), seg.geometry());
      for (std::uint64_t s = 0; s < shape.capacity; ++s)
        std::memcpy(view.payload(s), frame.data(), size);
      AgentJob job;
      job.kind = JobKind::produce;
      job.cpu = ctx.cpu_agent;
      std::snprintf(job.segment, sizeof job.segment, "%s", name.c_str());
      job.messages = t.messages;
      job.size = size;
      job.batch = shape.cpu_batch;
      job.write_full = write_full ? 1 : 0;
      job.timeout_s = o.timeout_s;
      const std::uint32_t n = ctx.agent->post(job);
      ctx.agent->wait_attached(n, o.timeout_s);
      const sc::Registration reg = sc::Registration::register_segment(seg, ctx.dev.id);
      const sc::GpuSpscConsumer rx = sc::GpuSpscConsumer::attach(seg, reg);
      ctx.reset_result();
      consume_kernel<<<1, o.gpu_threads>>>(rx.ref(), t.messages, static_cast<std::uint32_t>(size),
                                           static_cast<std::uint32_t>(shape.gpu_peek),
                                           ctx.timeout_ns(), ctx.result);
      cuda_ok(cudaGetLastError(), "consumer launch");
      ctx.agent->go(n);
      cuda_ok(cudaDeviceSynchronize(), "consumer kernel");
      const std::int64_t t_done = now_ns();
      const KernelResult kr = ctx.read_result();
      const AgentResult ar = ctx.agent->wait_finished(n, o.timeout_s + 60);
      if (kr.status != 0) {
        t.failure =
            "GPU consumer: " + std::string(sr::to_string(static_cast<sr::Status>(kr.status)));
      } else if (!ar.ok) {
        t.failure = ar.failure;
      } else if (kr.messages != t.messages || ar.messages != t.messages) {
        t.failure = "message count mismatch";
      }
      t.errors += kr.errors;
      t.deep_checked += kr.messages;
      if (t.failure.empty()) t.seconds.push_back(static_cast<double>(t_done - ar.t_start) / 1e9);
    } catch (const std::exception& e) {
      t.failure = e.what();
    }
  }
  return t;
}

// pop_push and low_latency_thread run the same kernel, low_latency_thread
// and low_latency_warp over rings of low-latency slots (low_latency.hpp).
enum class EchoKind { pop_push, low_latency_warp, low_latency_thread, peek_push, minimal };

// How the CPU side waits for the kernel's reply: spinning on try_pop, in a
// blocking pop that does not spin (it sleeps at once: a GPU peer cannot wake
// it, so it looks again every kGpuPeerSleep), or in epoll on the handle's
// descriptor (which a GPU peer cannot signal either: it becomes readable by
// the periodic look, as often).
enum class CpuWait { spin, blocking, epoll };

RoundTrip measure_round_trip(Context& ctx, std::uint64_t size, EchoKind kind,
                             CpuWait wait = CpuWait::spin) {
  const Options& o = ctx.opt;
  RoundTrip rt;
  const bool low_latency =
      kind == EchoKind::low_latency_warp || kind == EchoKind::low_latency_thread;
  rt.variant = kind == EchoKind::pop_push           ? "pop() + push(), thread 0"
               : kind == EchoKind::low_latency_warp ? "low-latency slots: warp_pop() + push()"
               : kind == EchoKind::low_latency_thread
                   ? "low-latency slots: pop() + push(), thread 0"
               : kind == EchoKind::peek_push ? "warp_peek(1) + push() + warp_release()"
                                             : "minimal: tight poll, no sleeper-count loads";
  if (wait == CpuWait::blocking) rt.variant += "; CPU waits in pop() without spinning";
  if (wait == CpuWait::epoll) rt.variant += "; CPU waits in epoll on event_fd()";
  rt.size = size;
  try {
    const std::string ping_name = segment_name("ping");
    const std::string pong_name = segment_name("pong");
    sr::CreateOptions co;
    co.capacity = 64;
    co.slot_size = size;
    if (low_latency) co.format = sr::SlotFormat::low_latency;
    const sr::Segment ping = sr::Segment::create(ping_name, co);
    Unlink u1{ping_name};
    const sr::Segment pong = sr::Segment::create(pong_name, co);
    Unlink u2{pong_name};
    sr::SpscProducer tx = sr::SpscProducer::attach(ping);
    sr::WaitPolicy no_spin;
    no_spin.spin_iterations = 0;
    no_spin.yield_iterations = 0;
    no_spin.spin_time = std::chrono::nanoseconds(0);
    sr::SpscConsumer rx =
        sr::SpscConsumer::attach(pong, wait == CpuWait::spin ? sr::WaitPolicy{} : no_spin);
    int epfd = -1;
    if (wait == CpuWait::epoll) {
      epfd = epoll_create1(EPOLL_CLOEXEC);
      epoll_event ev{};
      ev.events = EPOLLIN;
      if (epfd < 0 || epoll_ctl(epfd, EPOLL_CTL_ADD, rx.event_fd(), &ev) != 0) {
        throw std::runtime_error("epoll setup failed");
      }
    }
    struct CloseFd {
      int fd;
      ~CloseFd() {
        if (fd >= 0) close(fd);
      }
    } close_epfd{epfd};
    const sc::Registration reg_ping = sc::Registration::register_segment(ping, ctx.dev.id);
    const sc::Registration reg_pong = sc::Registration::register_segment(pong, ctx.dev.id);
    const sc::GpuSpscConsumer gin = sc::GpuSpscConsumer::attach(ping, reg_ping);
    const sc::GpuSpscProducer gout = sc::GpuSpscProducer::attach(pong, reg_pong);
    const std::uint64_t rounds = o.rtt_warmup + o.rtt_rounds;
    ctx.reset_result();
    const auto s32 = static_cast<std::uint32_t>(size);
    if (kind == EchoKind::low_latency_warp) {
      echo_warp_pop_push_kernel<<<1, 32>>>(gin.ref(), gout.ref(), rounds, s32, ctx.timeout_ns(),
                                           ctx.result);
    } else if (kind == EchoKind::pop_push || kind == EchoKind::low_latency_thread) {
      echo_pop_push_kernel<<<1, 32>>>(gin.ref(), gout.ref(), rounds, s32, ctx.timeout_ns(),
                                      ctx.result);
    } else if (kind == EchoKind::peek_push) {
      echo_peek_push_kernel<<<1, 32>>>(gin.ref(), gout.ref(), rounds, s32, ctx.timeout_ns(),
                                       ctx.result);
    } else {
      echo_minimal_kernel<<<1, 32>>>(gin.ref(), gout.ref(), rounds, s32, ctx.timeout_ns(),
                                     ctx.result);
    }
    cuda_ok(cudaGetLastError(), "echo launch");
    alignas(64) std::byte msg[64] = {};
    alignas(64) std::byte reply[64] = {};
    std::vector<std::int64_t> samples;
    samples.reserve(o.rtt_rounds);
    IdleClock idle{o.timeout_s};
    for (std::uint64_t i = 0; i < rounds && rt.failure.empty(); ++i) {
      store_word(msg, i);
      if (size >= 16) {
        store_word(msg + 8, size);
        store_word(msg + size - 8, ~i);
      }
      const std::int64_t a = now_ns();
      sr::Status s;
      while ((s = tx.try_push({msg, size})) == sr::Status::would_block && idle.wait()) {
      }
      std::size_t got = 0;
      if (s == sr::Status::ok && wait == CpuWait::blocking) {
        s = rx.pop(reply, got,
                   std::chrono::nanoseconds(static_cast<std::int64_t>(o.timeout_s * 1e9)));
        if (s == sr::Status::timeout) s = sr::Status::would_block;
      } else if (s == sr::Status::ok && wait == CpuWait::epoll) {
        // The protocol: try until would_block (which arms the descriptor),
        // then wait for it to become readable.
        while ((s = rx.try_pop(reply, got)) == sr::Status::would_block) {
          epoll_event ev{};
          if (epoll_wait(epfd, &ev, 1, static_cast<int>(o.timeout_s * 1000)) <= 0) break;
        }
      } else if (s == sr::Status::ok) {
        while ((s = rx.try_pop(reply, got)) == sr::Status::would_block && idle.wait()) {
        }
      }
      const std::int64_t b = now_ns();
      if (s != sr::Status::ok) {
        rt.failure = std::string("CPU side: ") +
                     (s == sr::Status::would_block ? "no reply" : sr::to_string(s));
        break;
      }
      idle.progress();
      rt.errors +=
          got != size || load_word(reply) != i || (size >= 16 && load_word(reply + size - 8) != ~i);
      if (i >= o.rtt_warmup) samples.push_back(b - a);
    }
    cuda_ok(cudaDeviceSynchronize(), "echo kernel");
    const KernelResult kr = ctx.read_result();
    if (kr.status != 0 && rt.failure.empty()) {
      rt.failure = "GPU echo: " + std::string(sr::to_string(static_cast<sr::Status>(kr.status)));
    }
    rt.errors += kr.errors;
    const Percentiles p = percentiles(samples);
    rt.rounds = samples.size();
    rt.median_ns = p.median;
    rt.p99_ns = p.p99;
    rt.min_ns = p.min;
    rt.mean_ns = p.mean;
  } catch (const std::exception& e) {
    rt.failure = e.what();
  }
  return rt;
}

void finish(Throughput& t) {
  if (t.seconds.empty()) return;
  const double s = median(t.seconds);
  t.msg_per_s = static_cast<double>(t.messages) / s;
  t.gbps = static_cast<double>(t.messages * t.size) / s / 1e9;
}

// ---------------------------------------------------------------------------
// Report

std::string json_escape(const std::string& s) {
  std::string out;
  for (const char ch : s) {
    if (ch == '"' || ch == '\\') {
      out += '\\';
      out += ch;
    } else if (static_cast<unsigned char>(ch) < 0x20) {
      char buf[8];
      std::snprintf(buf, sizeof buf, "\\u%04x", ch);
      out += buf;
    } else {
      out += ch;
    }
  }
  return out;
}

std::string num(double v, int digits = 3) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.*f", digits, v);
  return buf;
}

struct Report {
  const Context& ctx;
  const Ceilings& ceil;
  const std::vector<Throughput>& tp;
  const std::vector<RoundTrip>& rtt;
  std::string hostname;
  std::string started;

  bool all_verified() const {
    if (ceil.errors != 0 || !ceil.failures.empty()) return false;
    for (const auto& t : tp) {
      if (t.errors != 0 || !t.failure.empty()) return false;
    }
    if (!ctx.opt.cpu_check) return false;
    for (const auto& r : rtt) {
      if (r.errors != 0 || !r.failure.empty()) return false;
    }
    return true;
  }

  void markdown(std::FILE* f) const {
    const Device& d = ctx.dev;
    std::fprintf(f, "# shmring GPU benchmark\n\n");
    std::fprintf(f,
                 "%s (cc %d.%d, %d SMs, PCI %s), NVIDIA driver %s, CUDA driver API %d.%d, "
                 "runtime %d.%d; host %s, %s; "
                 "this process on CPU %d, the CPU agent process on CPU %d (%s); %s\n\n",
                 d.prop.name, d.prop.major, d.prop.minor, d.prop.multiProcessorCount, d.pci.c_str(),
                 d.nvidia_driver.c_str(), d.driver / 1000, d.driver % 1000 / 10, d.runtime / 1000,
                 d.runtime % 1000 / 10, hostname.c_str(), cpu_model().c_str(), ctx.cpu_host,
                 ctx.cpu_agent, ctx.cpu_choice.c_str(), started.c_str());
    if (ceil.measured) {
      std::fprintf(f, "## Ceilings (registered /dev/shm segment, %s)\n\n",
                   human_bytes(ctx.opt.ceiling_bytes).c_str());
      std::fprintf(f, "| what | reading |\n| --- | --- |\n");
      std::fprintf(f, "| kernel 16-byte stores into registered memory, whole grid | %.1f GB/s |\n",
                   ceil.store_gbps);
      std::fprintf(f, "| kernel 16-byte stores, one block of %u threads | %.1f GB/s |\n",
                   ctx.opt.gpu_threads, ceil.store_1block_gbps);
      std::fprintf(f, "| kernel 16-byte loads from registered memory, whole grid | %.1f GB/s |\n",
                   ceil.load_gbps);
      std::fprintf(f, "| kernel 16-byte loads, one block of %u threads | %.1f GB/s |\n",
                   ctx.opt.gpu_threads, ceil.load_1block_gbps);
      for (const auto& [what, v] : ceil.diagnosis) {
        std::fprintf(f, "| diagnosis: %s | %.1f GB/s |\n", what.c_str(), v);
      }
      std::fprintf(f, "| cudaMemcpy H2D from registered memory | %.1f GB/s |\n", ceil.h2d_gbps);
      std::fprintf(f, "| cudaMemcpy D2H to registered memory | %.1f GB/s |\n", ceil.d2h_gbps);
      std::fprintf(f,
                   "| one-flag CPU <-> kernel ping-pong, median / p99 / min (%" PRIu64
                   " round trips) | %.2f / %.2f / %.2f us |\n",
                   ceil.flag_rounds, ceil.flag_median_ns / 1e3, ceil.flag_p99_ns / 1e3,
                   ceil.flag_min_ns / 1e3);
      std::fprintf(f, "| cudaHostRegister of the region | %.0f ms |\n", ceil.register_ms);
      std::fprintf(f, "| verification | %s |\n\n",
                   ceil.errors == 0 && ceil.failures.empty() ? "ok" : "FAILED");
    }
    if (!tp.empty()) {
      std::fprintf(
          f,
          "## Throughput: one GPU block <-> one CPU process over an SPSC ring; broadcast rows: one "
          "GPU block publishing to k CPU subscriber processes (median of %u)\n\n",
          ctx.opt.reps);
      std::fprintf(
          f,
          "| direction | slot | GPU side | CPU writes | ring slots | GPU batch | CPU batch | "
          "messages | M msg/s | GB/s | vs ceiling | vs one-block ceiling | errors | target |\n");
      std::fprintf(f,
                   "| --- | --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | "
                   "---: | ---: | --- |\n");
      for (const auto& t : tp) {
        const bool g2c = t.direction == "gpu_to_cpu";
        std::string target = t.target.empty() ? "-" : t.target + (t.met ? ": met" : ": NOT met");
        std::fprintf(
            f, "| %s | %s | %s | %s | %" PRIu64 " | %" PRIu64 " | %" PRIu64 " | %" PRIu64 " | ",
            g2c ? "GPU -> CPU" : "CPU -> GPU", human_bytes(t.size).c_str(), t.method.c_str(),
            t.cpu_writes.c_str(), t.capacity, t.gpu_batch, t.cpu_batch, t.messages);
        if (!t.failure.empty()) {
          std::fprintf(f, "FAILED: %s | | | | %" PRIu64 " | %s |\n", t.failure.c_str(), t.errors,
                       target.c_str());
          continue;
        }
        std::fprintf(f, "%.2f | %.2f | %.0f%% | %.0f%% | %" PRIu64 " | %s |\n", t.msg_per_s / 1e6,
                     t.gbps, 100 * t.ratio, 100 * t.ratio_1block, t.errors, target.c_str());
      }
      std::fprintf(
          f,
          "\nGPU -> CPU: the CPU consumer checks the stamps (first 16 and last 8 bytes) of every "
          "message and every byte of one message per %s; CPU -> GPU: the kernel checks every byte "
          "of every message. \"vs ceiling\": GB/s over the whole-grid kernel store (GPU -> CPU) "
          "or load (CPU -> GPU) ceiling above. Rows whose GPU side says \"minimal\" or \"local\" "
          "use code of this benchmark instead of a device.cuh call (same slots, same "
          "synchronisation): they show what those calls could reach. CPU writes \"stamps\": the "
          "slots were filled once with the body, and the producer writes only what changes per "
          "message (the GPU still reads and checks every byte).\n\n",
          human_bytes(ctx.opt.deep_bytes).c_str());
    }
    if (!rtt.empty()) {
      std::fprintf(f,
                   "## Round trip: CPU push -> kernel -> CPU pop over two SPSC rings (%" PRIu64
                   " rounds after %" PRIu64 " warm-up)\n\n",
                   ctx.opt.rtt_rounds, ctx.opt.rtt_warmup);
      std::fprintf(f,
                   "| kernel side | message | median us | p99 us | min us | vs flag median | "
                   "errors | target |\n");
      std::fprintf(f, "| --- | --- | ---: | ---: | ---: | ---: | ---: | --- |\n");
      for (const auto& r : rtt) {
        std::string target = r.target.empty() ? "-" : r.target + (r.met ? ": met" : ": NOT met");
        if (!r.failure.empty()) {
          std::fprintf(f, "| %s | %s | FAILED: %s | | | | %" PRIu64 " | %s |\n", r.variant.c_str(),
                       human_bytes(r.size).c_str(), r.failure.c_str(), r.errors, target.c_str());
          continue;
        }
        std::fprintf(f, "| %s | %s | %.2f | %.2f | %.2f | %.2fx | %" PRIu64 " | %s |\n",
                     r.variant.c_str(), human_bytes(r.size).c_str(), r.median_ns / 1e3,
                     r.p99_ns / 1e3, r.min_ns / 1e3, r.ratio, r.errors, target.c_str());
      }
      std::fprintf(f,
                   "\nPlain slots: the kernel polls the slot's `committed` word, then reads the "
                   "length, then the payload (three dependent PCIe reads), and publishes its "
                   "reply behind a system fence. Low-latency slots (SlotFormat::low_latency): "
                   "each 8-byte word carries 4 message bytes and a flag, so the words that are "
                   "loaded are the message and the reply needs no fence; warp_pop() has each "
                   "lane load 16 bytes at once (one thread's loads of host memory follow each "
                   "other, one PCIe round trip apiece).\n");
      std::fprintf(f, "\n");
    }
    std::fprintf(f, "Verification: %s\n",
                 all_verified() ? "every message ok" : "FAILED (see above)");
  }

  void json(std::ostream& os) const {
    const Device& d = ctx.dev;
    const Options& o = ctx.opt;
    os << "{\n  \"benchmark\": \"shmring_gpu_bench\",\n";
    os << "  \"started\": \"" << json_escape(started) << "\",\n";
    os << "  \"host\": {\"hostname\": \"" << json_escape(hostname) << "\", \"cpu_model\": \""
       << json_escape(cpu_model()) << "\", \"cpu_host\": " << ctx.cpu_host
       << ", \"cpu_agent\": " << ctx.cpu_agent << ", \"cpu_choice\": \""
       << json_escape(ctx.cpu_choice) << "\"},\n";
    os << "  \"device\": {\"name\": \"" << json_escape(d.prop.name)
       << "\", \"compute_capability\": \"" << d.prop.major << "." << d.prop.minor
       << "\", \"sms\": " << d.prop.multiProcessorCount << ", \"pci\": \"" << d.pci
       << "\", \"nvidia_driver\": \"" << json_escape(d.nvidia_driver)
       << "\", \"cuda_driver_api\": " << d.driver << ", \"cuda_runtime\": " << d.runtime
       << ", \"host_native_atomics\": " << (d.caps.host_native_atomics ? "true" : "false")
       << ", \"integrated\": " << (d.caps.integrated ? "true" : "false") << "},\n";
    os << "  \"config\": {\"sizes\": [";
    for (std::size_t i = 0; i < o.sizes.size(); ++i) os << (i ? ", " : "") << o.sizes[i];
    os << "], \"volume_bytes\": " << o.volume << ", \"reps\": " << o.reps
       << ", \"ring_bytes\": " << o.ring_bytes << ", \"gpu_threads\": " << o.gpu_threads
       << ", \"rtt_rounds\": " << o.rtt_rounds << ", \"rtt_warmup\": " << o.rtt_warmup
       << ", \"ceiling_bytes\": " << o.ceiling_bytes << ", \"deep_bytes\": " << o.deep_bytes
       << ", \"timeout_s\": " << o.timeout_s << "},\n";
    os << "  \"ceilings\": ";
    if (!ceil.measured) {
      os << "null,\n";
    } else {
      os << "{\"kernel_store_GBps\": " << num(ceil.store_gbps)
         << ", \"kernel_store_one_block_GBps\": " << num(ceil.store_1block_gbps)
         << ", \"kernel_load_GBps\": " << num(ceil.load_gbps)
         << ", \"kernel_load_one_block_GBps\": " << num(ceil.load_1block_gbps)
         << ", \"memcpy_h2d_GBps\": " << num(ceil.h2d_gbps)
         << ", \"memcpy_d2h_GBps\": " << num(ceil.d2h_gbps)
         << ", \"register_ms\": " << num(ceil.register_ms, 1)
         << ", \"flag_round_trip_ns\": {\"median\": " << num(ceil.flag_median_ns, 0)
         << ", \"p99\": " << num(ceil.flag_p99_ns, 0) << ", \"min\": " << num(ceil.flag_min_ns, 0)
         << ", \"rounds\": " << ceil.flag_rounds << "}, \"diagnosis\": [";
      for (std::size_t i = 0; i < ceil.diagnosis.size(); ++i) {
        os << (i ? ", " : "") << "{\"what\": \"" << json_escape(ceil.diagnosis[i].first)
           << "\", \"GBps\": " << num(ceil.diagnosis[i].second) << "}";
      }
      os << "], \"errors\": " << ceil.errors << ", \"failures\": [";
      for (std::size_t i = 0; i < ceil.failures.size(); ++i) {
        os << (i ? ", " : "") << "\"" << json_escape(ceil.failures[i]) << "\"";
      }
      os << "]},\n";
    }
    os << "  \"throughput\": [";
    for (std::size_t i = 0; i < tp.size(); ++i) {
      const Throughput& t = tp[i];
      os << (i ? ",\n    " : "\n    ") << "{\"direction\": \"" << t.direction
         << "\", \"size\": " << t.size << ", \"gpu_side\": \"" << json_escape(t.method)
         << "\", \"cpu_writes\": \"" << json_escape(t.cpu_writes)
         << "\", \"capacity\": " << t.capacity << ", \"gpu_batch\": " << t.gpu_batch
         << ", \"cpu_batch\": " << t.cpu_batch << ", \"messages\": " << t.messages
         << ", \"seconds\": [";
      for (std::size_t k = 0; k < t.seconds.size(); ++k)
        os << (k ? ", " : "") << num(t.seconds[k], 6);
      os << "], \"msg_per_s\": " << num(t.msg_per_s, 0) << ", \"GBps\": " << num(t.gbps)
         << ", \"ceiling_GBps\": " << num(t.ceiling_gbps)
         << ", \"ratio_to_ceiling\": " << num(t.ratio)
         << ", \"ratio_to_one_block_ceiling\": " << num(t.ratio_1block)
         << ", \"errors\": " << t.errors << ", \"fully_checked_messages\": " << t.deep_checked
         << ", \"failure\": \"" << json_escape(t.failure) << "\", \"target\": \""
         << json_escape(t.target) << "\", \"target_met\": "
         << (t.target.empty() ? "null"
             : t.met          ? "true"
                              : "false")
         << "}";
    }
    os << "\n  ],\n  \"round_trip\": [";
    for (std::size_t i = 0; i < rtt.size(); ++i) {
      const RoundTrip& r = rtt[i];
      os << (i ? ",\n    " : "\n    ") << "{\"kernel_side\": \"" << json_escape(r.variant)
         << "\", \"size\": " << r.size << ", \"rounds\": " << r.rounds
         << ", \"median_ns\": " << num(r.median_ns, 0) << ", \"p99_ns\": " << num(r.p99_ns, 0)
         << ", \"min_ns\": " << num(r.min_ns, 0) << ", \"mean_ns\": " << num(r.mean_ns, 0)
         << ", \"ratio_to_flag_median\": " << num(r.ratio) << ", \"errors\": " << r.errors
         << ", \"failure\": \"" << json_escape(r.failure) << "\", \"target\": \""
         << json_escape(r.target) << "\", \"target_met\": "
         << (r.target.empty() ? "null"
             : r.met          ? "true"
                              : "false")
         << "}";
    }
    os << "\n  ],\n  \"all_verified\": " << (all_verified() ? "true" : "false") << "\n}\n";
  }
};

// "0-3,8,10-11" -> {0, 1, 2, 3, 8, 10, 11}
std::vector<int> parse_cpu_list(std::string_view s) {
  std::vector<int> cpus;
  while (!s.empty()) {
    const std::size_t comma = s.find(',');
    const std::string_view item = s.substr(0, comma);
    const std::size_t dash = item.find('-');
    const int a = std::stoi(std::string(item.substr(0, dash)));
    const int b =
        dash == std::string_view::npos ? a : std::stoi(std::string(item.substr(dash + 1)));
    for (int c = a; c <= b; ++c) cpus.push_back(c);
    s = comma == std::string_view::npos ? std::string_view{} : s.substr(comma + 1);
  }
  return cpus;
}

// The CPUs for this process and the agent: --cpus, else the 2nd and 3rd of
// the allowed cores local to the GPU (the 1st often takes interrupts).
void choose_cpus(Context& ctx) {
  if (ctx.opt.cpu_host >= 0) {
    ctx.cpu_host = ctx.opt.cpu_host;
    ctx.cpu_agent = ctx.opt.cpu_agent;
    ctx.cpu_choice = "--cpus";
    return;
  }
  const std::vector<int> allowed = allowed_cpus();
  std::vector<int> local;
  std::string pci = ctx.dev.pci;
  for (auto& ch : pci) ch = static_cast<char>(std::tolower(static_cast<unsigned char>(ch)));
  try {
    for (const int c :
         parse_cpu_list(read_first_line("/sys/bus/pci/devices/" + pci + "/local_cpulist"))) {
      if (std::find(allowed.begin(), allowed.end(), c) != allowed.end()) local.push_back(c);
    }
  } catch (const std::exception&) {
    local.clear();
  }
  const std::vector<int>& pool = local.size() >= 3 ? local : allowed;
  ctx.cpu_choice = local.size() >= 3 ? "GPU-local cores" : "allowed cores (GPU locality unknown)";
  if (pool.size() >= 3) {
    ctx.cpu_host = pool[1];
    ctx.cpu_agent = pool[2];
  } else {
    ctx.cpu_host = pool[0];
    ctx.cpu_agent = pool[pool.size() - 1];
  }
  // Broadcast subscribers beyond the first: the next cores of the pool, then
  // of every allowed core, shared round-robin if there are too few.
  std::vector<int> rest;
  for (const std::vector<int>* from : {&pool, &allowed}) {
    for (const int c : *from) {
      if (c != ctx.cpu_host && c != ctx.cpu_agent &&
          std::find(rest.begin(), rest.end(), c) == rest.end()) {
        rest.push_back(c);
      }
    }
  }
  if (rest.empty()) rest.push_back(ctx.cpu_agent);
  for (std::size_t i = 0; ctx.subscribers != nullptr && i < ctx.subscribers->size(); ++i) {
    ctx.subscriber_cpus.push_back(rest[i % rest.size()]);
  }
}

int run(int argc, char** argv) {
  Context ctx;
  ctx.opt = parse_options(argc, argv);
  const Options& o = ctx.opt;
  // Fork first: the agent must never inherit a CUDA context.
  Agent agent = Agent::start();
  ctx.agent = &agent;
  struct StopAgent {
    Agent& a;
    ~StopAgent() { a.stop(); }
  } stop_agent{agent};
  std::vector<Agent> subscribers;
  struct StopAgents {
    std::vector<Agent>& v;
    ~StopAgents() {
      for (Agent& a : v) a.stop();
    }
  } stop_subscribers{subscribers};
  if (o.broadcast) {
    std::uint64_t most = 1;
    for (const std::uint64_t k : o.subscribers) most = std::max(most, k);
    for (std::uint64_t i = 1; i < most; ++i) subscribers.push_back(Agent::start());
  }
  ctx.subscribers = &subscribers;

  if (sc::device_count() <= o.device) {
    std::fprintf(stderr, "no CUDA device: %s\n",
                 sc::device_count() == 0 ? "the CUDA driver reports none (or is not installed)"
                                         : "--device is out of range");
    return kExitSkip;
  }
  ctx.dev.id = o.device;
  cuda_ok(cudaSetDevice(o.device), "cudaSetDevice");
  cuda_ok(cudaGetDeviceProperties(&ctx.dev.prop, o.device), "cudaGetDeviceProperties");
  ctx.dev.caps = sc::query(o.device);
  cudaDriverGetVersion(&ctx.dev.driver);
  cudaRuntimeGetVersion(&ctx.dev.runtime);
  char pci[64] = {};
  cudaDeviceGetPCIBusId(pci, sizeof pci, o.device);
  ctx.dev.pci = pci;
  {  // "NVRM version: NVIDIA UNIX [Open] Kernel Module [for x86_64]  580.159.04  ..."
    std::istringstream words(read_first_line("/proc/driver/nvidia/version"));
    ctx.dev.nvidia_driver = "unknown";
    for (std::string w; words >> w;) {
      if (w.find('.') != std::string::npos &&
          w.find_first_not_of("0123456789.") == std::string::npos) {
        ctx.dev.nvidia_driver = w;
        break;
      }
    }
  }

  cuda_ok(cudaMalloc(&ctx.result, sizeof(KernelResult)), "cudaMalloc");
  cuda_ok(cudaMalloc(&ctx.scratch, 64), "cudaMalloc");
  choose_cpus(ctx);
  pin_to(ctx.cpu_host);

  char host[256] = {};
  gethostname(host, sizeof host - 1);
  char started[64] = {};
  const std::time_t now = std::time(nullptr);
  std::strftime(started, sizeof started, "%Y-%m-%dT%H:%M:%SZ", std::gmtime(&now));
  progress("%s, CPUs %d (this process) and %d (agent), %s", ctx.dev.prop.name, ctx.cpu_host,
           ctx.cpu_agent, ctx.cpu_choice.c_str());

  Ceilings ceil;
  if (o.ceilings) {
    try {
      ceil = measure_ceilings(ctx);
    } catch (const std::exception& e) {
      ceil.failures.push_back(e.what());
      progress("ceilings FAILED: %s", e.what());
    }
  }
  std::vector<Throughput> tp;
  auto add = [&](Throughput t) {
    finish(t);
    const bool g2c = t.direction == "gpu_to_cpu";
    t.ceiling_gbps = g2c ? ceil.store_gbps : ceil.load_gbps;
    const double one_block = g2c ? ceil.store_1block_gbps : ceil.load_1block_gbps;
    t.ratio = t.ceiling_gbps > 0 ? t.gbps / t.ceiling_gbps : 0;
    t.ratio_1block = one_block > 0 ? t.gbps / one_block : 0;
    const bool broadcast = t.method.rfind("broadcast", 0) == 0;
    if (!t.library) {
      // reference rows carry no target
    } else if (broadcast && t.method.find("-> 4 ") != std::string::npos) {
      t.target = ">= 70% of the store ceiling";
      t.met = t.failure.empty() && t.errors == 0 && t.ratio >= 0.7;
    } else if (broadcast) {
      // the other subscriber counts: for the scaling, no target
    } else if (g2c && t.size == 64) {
      t.target = ">= 100 M msg/s";
      t.met = t.failure.empty() && t.errors == 0 && t.msg_per_s >= 100e6;
    } else if (g2c && t.size >= 64 * KiB) {
      t.target = ">= 80% of the store ceiling";
      t.met = t.failure.empty() && t.errors == 0 && t.ratio >= 0.8;
    }
    progress("%s %s %s (%s): %s%.2f M msg/s, %.2f GB/s, %" PRIu64 " errors",
             g2c ? "GPU->CPU" : "CPU->GPU", human_bytes(t.size).c_str(), t.method.c_str(),
             t.cpu_writes.c_str(), t.failure.empty() ? "" : ("FAILED: " + t.failure + "; ").c_str(),
             t.msg_per_s / 1e6, t.gbps, t.errors);
    tp.push_back(std::move(t));
  };
  if (o.gpu_to_cpu) {
    for (const std::uint64_t size : o.sizes) {
      add(measure_gpu_to_cpu(ctx, size, ProducerKind::library));
      if (o.reference && size > kFlatFillMax)
        add(measure_gpu_to_cpu(ctx, size, ProducerKind::staged_copy));
      if (o.reference && size == 64) add(measure_gpu_to_cpu(ctx, size, ProducerKind::minimal));
      if (o.diagnose && size == 64) {
        add(measure_gpu_to_cpu(ctx, size, ProducerKind::serial_lengths));
        add(measure_gpu_to_cpu(ctx, size, ProducerKind::fence_per_slot));
      }
    }
  }
  if (o.cpu_to_gpu) {
    for (const std::uint64_t size : o.sizes) {
      add(measure_cpu_to_gpu(ctx, size, false));
      if (o.full_write && size != 64) add(measure_cpu_to_gpu(ctx, size, true));
    }
  }
  if (o.broadcast) {
    for (const std::uint64_t k : o.subscribers) add(measure_broadcast(ctx, o.broadcast_size, k));
  }
  std::vector<RoundTrip> rtt;
  if (o.round_trip) {
    for (const std::uint64_t size : {std::uint64_t{8}, std::uint64_t{64}}) {
      for (const EchoKind kind :
           {EchoKind::pop_push, EchoKind::low_latency_warp, EchoKind::low_latency_thread,
            EchoKind::peek_push, EchoKind::minimal}) {
        if (kind == EchoKind::minimal && !o.reference) continue;
        RoundTrip r = measure_round_trip(ctx, size, kind);
        r.ratio = ceil.flag_median_ns > 0 ? r.median_ns / ceil.flag_median_ns : 0;
        // The target is for the ring format made for small messages.
        if (kind == EchoKind::low_latency_warp) {
          r.target = "<= 1.2x the flag ping-pong";
          r.met = r.failure.empty() && r.errors == 0 && ceil.flag_median_ns > 0 && r.ratio <= 1.2;
        }
        progress("round trip %s %s: %s median %.2f us, p99 %.2f us (%.2fx flag)", r.variant.c_str(),
                 human_bytes(size).c_str(),
                 r.failure.empty() ? "" : ("FAILED: " + r.failure + ";").c_str(), r.median_ns / 1e3,
                 r.p99_ns / 1e3, r.ratio);
        rtt.push_back(std::move(r));
      }
    }
    // A CPU thread that sleeps while the kernel answers: the cost of being
    // woken by a peer that cannot call futex (bounded looks instead).
    for (const CpuWait wait : {CpuWait::blocking, CpuWait::epoll}) {
      RoundTrip r = measure_round_trip(ctx, 64, EchoKind::pop_push, wait);
      r.ratio = ceil.flag_median_ns > 0 ? r.median_ns / ceil.flag_median_ns : 0;
      progress("round trip %s 64 B: %s median %.2f us, p99 %.2f us", r.variant.c_str(),
               r.failure.empty() ? "" : ("FAILED: " + r.failure + ";").c_str(), r.median_ns / 1e3,
               r.p99_ns / 1e3);
      rtt.push_back(std::move(r));
    }
  }

  const Report report{ctx, ceil, tp, rtt, host, started};
  report.markdown(stdout);
  std::fflush(stdout);
  if (!o.json.empty()) {
    std::ofstream f(o.json);
    report.json(f);
    if (!f) {
      std::fprintf(stderr, "could not write %s\n", o.json.c_str());
      return 1;
    }
  }
  return report.all_verified() ? 0 : 1;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    return run(argc, argv);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "shmring_gpu_bench: %s\n", e.what());
    return 1;
  }
}
