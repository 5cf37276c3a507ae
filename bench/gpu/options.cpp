#include "options.hpp"

#include <cinttypes>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <stdexcept>
#include <string_view>

namespace gpu_bench {

namespace {

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
      "  --flag-reps N          interleaved runs of each flag ping-pong setup (default 5)\n"
      "  --rtt-warmup N         round trips discarded first (default 1000)\n"
      "  --gpu-threads N        threads of the one block on each ring (default 1024)\n"
      "  --grid-blocks N        CPU -> GPU: blocks of the GridReader rows (default 8; 1: none)\n"
      "  --device N             CUDA device (default 0)\n"
      "  --cpus HOST,AGENT      cores for this process and the CPU agent process\n"
      "                         (default: 2nd and 3rd core local to the GPU)\n"
      "  --timeout S            any single wait, seconds (default 10)\n"
      "  --only LIST            parts: ceilings,g2c,c2g,rtt,bcast (default all)\n"
      "  --subscribers LIST     bcast: CPU subscriber processes per row (default 1,2,4)\n"
      "  --broadcast-size B     bcast: slot size (default 64K)\n"
      "  --no-reference         skip the minimal hand-written variants\n"
      "  --no-full-write        skip the CPU -> GPU rows where the CPU writes every byte\n"
      "  --diagnose             ceilings: one-block loads with 4, 8 and 16 in flight, and\n"
      "                         the region shifted off its 128-byte lines\n"
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

}  // namespace

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
      else if (a == "--flag-reps")
        o.flag_reps = static_cast<unsigned>(parse_bytes(value()));
      else if (a == "--rtt-warmup")
        o.rtt_warmup = parse_bytes(value());
      else if (a == "--gpu-threads")
        o.gpu_threads = static_cast<unsigned>(parse_bytes(value()));
      else if (a == "--grid-blocks")
        o.grid_blocks = static_cast<unsigned>(parse_bytes(value()));
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

}  // namespace gpu_bench
