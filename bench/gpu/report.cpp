#include "report.hpp"

#include <cinttypes>

namespace gpu_bench {

namespace {

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

}  // namespace

bool Report::all_verified() const {
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

void Report::markdown(std::FILE* f) const {
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
                 "| one-flag CPU <-> kernel ping-pong (%s), median / p99 / min (%" PRIu64
                 " round trips) | %.2f / %.2f / %.2f us |\n",
                 ceil.flag_ceiling.c_str(), ceil.flag_rounds, ceil.flag_median_ns / 1e3,
                 ceil.flag_p99_ns / 1e3, ceil.flag_min_ns / 1e3);
    std::fprintf(f, "| cudaHostRegister of the region | %.0f ms |\n", ceil.register_ms);
    std::fprintf(f, "| verification | %s |\n\n",
                 ceil.errors == 0 && ceil.failures.empty() ? "ok" : "FAILED");
    if (!ceil.flag_variants.empty()) {
      std::fprintf(f,
                   "The flag ping-pong, set up each way (runs interleaved; median of the run "
                   "medians, their range, p99 and min over every round). The ceiling is the "
                   "lowest median with one poller; the plain-slot structure rows are not "
                   "candidates.\n\n"
                   "| setup | median us | run medians us | p99 us | min us | vs ceiling |\n"
                   "| --- | ---: | ---: | ---: | ---: | ---: |\n");
      for (const FlagVariant& v : ceil.flag_variants) {
        std::fprintf(f, "| %s | %.2f | %.2f-%.2f | %.2f | %.2f | %.2fx |\n", v.name.c_str(),
                     v.median_ns / 1e3, v.run_min_ns / 1e3, v.run_max_ns / 1e3, v.p99_ns / 1e3,
                     v.min_ns / 1e3,
                     ceil.flag_median_ns > 0 ? v.median_ns / ceil.flag_median_ns : 0);
      }
      std::fprintf(f, "\n");
    }
  }
  if (!tp.empty()) {
    std::fprintf(
        f,
        "## Throughput: one GPU block <-> one CPU process over an SPSC ring (GridReader rows: a "
        "grid of blocks); broadcast rows: one GPU block publishing to k CPU subscriber processes "
        "(median of %u)\n\n",
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
      std::fprintf(f,
                   "| %s | %s | %s | %s | %" PRIu64 " | %" PRIu64 " | %" PRIu64 " | %" PRIu64 " | ",
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
    std::fprintf(
        f,
        "\nPlain slots: one thread's pop() polls the slot's `committed` word, then "
        "reads the length, then the payload (three dependent PCIe reads); warp_pop() "
        "polls, then its lanes load length and payload at once (two); either way the "
        "reply is published behind a system fence. Low-latency slots (SlotFormat::low_latency): "
        "each 8-byte word carries 4 message bytes and a flag, so the words that are "
        "loaded are the message and the reply needs no fence; warp_pop() has each "
        "lane load 16 bytes at once (one thread's loads of host memory follow each "
        "other, one PCIe round trip apiece).\n");
    if (ceil.plain_structure_median_ns > 0) {
      // What the plain format costs by construction, apart from the ring.
      std::fprintf(
          f,
          "\nThe plain format's own floor: the flag ping-pong with a second dependent "
          "read and a payload store ordered before the answer (the study's \"plain-slot "
          "structure: both\") reads %.2f us, %.2fx the ceiling.",
          ceil.plain_structure_median_ns / 1e3,
          ceil.flag_median_ns > 0 ? ceil.plain_structure_median_ns / ceil.flag_median_ns : 0);
      for (const auto& r : rtt) {
        if (r.variant != "warp_pop() + warp_push_one()" || !r.failure.empty()) continue;
        std::fprintf(f, " %s plain round trip against it: %.2fx.", human_bytes(r.size).c_str(),
                     r.median_ns / ceil.plain_structure_median_ns);
      }
      std::fprintf(f, "\n");
    }
    std::fprintf(f, "\n");
  }
  std::fprintf(f, "Verification: %s\n", all_verified() ? "every message ok" : "FAILED (see above)");
}

void Report::json(std::ostream& os) const {
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
       << ", \"rounds\": " << ceil.flag_rounds << ", \"setup\": \""
       << json_escape(ceil.flag_ceiling) << "\"}, \"flag_study\": [";
    for (std::size_t i = 0; i < ceil.flag_variants.size(); ++i) {
      const FlagVariant& v = ceil.flag_variants[i];
      os << (i ? ", " : "") << "{\"setup\": \"" << json_escape(v.name)
         << "\", \"pollers\": " << v.pollers << ", \"pinned\": " << (v.pinned ? "true" : "false")
         << ", \"median_ns\": " << num(v.median_ns, 0)
         << ", \"run_min_ns\": " << num(v.run_min_ns, 0)
         << ", \"run_max_ns\": " << num(v.run_max_ns, 0) << ", \"p99_ns\": " << num(v.p99_ns, 0)
         << ", \"min_ns\": " << num(v.min_ns, 0) << ", \"rounds\": " << v.rounds
         << ", \"ceiling_candidate\": " << (v.candidate ? "true" : "false") << "}";
    }
    os << "], \"diagnosis\": [";
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

}  // namespace gpu_bench
