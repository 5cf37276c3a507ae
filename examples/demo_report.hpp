// What each process of shmring-demo (examples/demo_pipeline.cpp) found, and
// the report printed from it: the lines docs/cpp.md shows, and the verdict
// that becomes the exit status.
#pragma once

#include <fmt/core.h>
#include <fmt/format.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "demo_options.hpp"
#include "harness/message.hpp"
#include "harness/processes.hpp"
#include "harness/report.hpp"
#include "shmring/shmring.hpp"

namespace demo {

using harness::Verdict;

// ---- what each process found ------------------------------------------------

inline std::int64_t now_ns() {
  return std::chrono::steady_clock::now().time_since_epoch() / std::chrono::nanoseconds(1);
}

// What a consumer (a subscriber) found. Plain data: a forked one writes it
// into shared memory and the parent prints it.
struct ConsumerReport {
  std::uint32_t joined = 0;  // fan-out: attached (the producer starts after all)
  std::uint64_t received = 0, verified = 0, failures = 0;
  std::uint64_t first_failure_seq = 0;  // the expected sequence number
  Verdict first_failure = Verdict::ok;
  std::int64_t first_ns = 0, last_ns = 0;  // first message seen, last released
  std::uint64_t pings_verified = 0, ping_failures = 0;
  std::uint64_t gaps = 0, lost = 0, laps = 0;  // lossy: never seen; counted by the ring
  char error[512] = {};

  // Message `m`, expected to be number `seq`. False if it failed verification.
  bool take(std::span<const std::byte> m, std::uint64_t size, std::uint64_t seq) {
    const Verdict v = harness::verify_message(m, size, seq);
    if (received++ == 0) first_ns = now_ns();
    if (v == Verdict::ok) return ++verified, true;
    if (failures++ == 0) first_failure = v, first_failure_seq = seq;
    return false;
  }
};

struct ProducerReport {
  std::uint64_t sent = 0;
  std::int64_t start_ns = 0, end_ns = 0;
  std::uint64_t pongs_verified = 0, pong_failures = 0;
  std::vector<std::int64_t> round_trip_ns;
  std::string error;
};

// ---- the report -------------------------------------------------------------

inline void print_header(const Options& o, const Segment& data, const std::string& cpu_note) {
  const std::string slots =
      fmt::format("{} slots x {}, batch {}, {} messages", o.capacity, harness::format_bytes(o.size),
                  o.batch, fmt::group_digits(o.messages));
  const std::string segment =
      fmt::format("  segment  /dev/shm/{} ({})", data.name(), harness::format_bytes(data.size()));
  if (o.kind == RingKind::broadcast) {
    fmt::print("shmring demo: broadcast ring ({}), {} to {} subscriber processes\n{}\n",
               to_string(o.delivery), slots, o.subscribers, segment);
    return;
  }
  fmt::print("shmring demo: {} ring{}, {}\n", to_string(o.kind),
             o.format == SlotFormat::low_latency ? " (low-latency slots, copy calls)" : "", slots);
  fmt::print("{}, ping/pong rings /dev/shm/{}-ping|-pong\n", segment, o.name);
  if (!cpu_note.empty()) fmt::print("  cpus     {}\n", cpu_note);
}

inline double seconds(std::int64_t ns) {
  return static_cast<double>(std::max<std::int64_t>(ns, 1)) / 1e9;
}

// A process's error (its report's text) and, for a forked one, how it ended.
// True if there was either.
inline bool print_errors(const std::string& who, const char* error, std::optional<int> status) {
  if (error[0] != '\0') fmt::print("error:    {}: {}\n", who, error);
  if (status && !harness::exited_ok(*status) && (error[0] == '\0' || WIFSIGNALED(*status))) {
    fmt::print("error:    {} {}\n", who, harness::describe_exit(*status));
  }
  return error[0] != '\0' || (status && !harness::exited_ok(*status));
}

// Prints what every process found; returns the exit status. `subs`: the
// consumer, or every subscriber (fan-out), none with --role producer;
// `statuses`: how the forked ones ended; `p`: none with --role consumer.
// Every message is accounted for: verified by each consumer, or (lossy) a
// sequence gap that the ring counted as lost. A message that failed
// verification outranks a run that stopped early.
inline int report(const Options& o, std::span<const ConsumerReport> subs,
                  std::span<const std::optional<int>> statuses, ProducerReport* p) {
  const bool fanout = o.kind == RingKind::broadcast, lossy = o.delivery == Delivery::lossy;
  bool verify_failed = false, stopped = false;
  std::uint64_t verified = 0, pings = 0;
  for (std::size_t k = 0; k < subs.size(); ++k) {
    const ConsumerReport& s = subs[k];
    const std::string who = fanout ? fmt::format("subscriber {}", k) : "consumer";
    const double secs = seconds(s.last_ns - s.first_ns),
                 rate = static_cast<double>(s.verified) / secs;
    if (fanout) {
      fmt::print("sub {:>2}:   {} verified in {:.3f} s, {:.2f} M msg/s{}\n", k,
                 fmt::group_digits(s.verified), secs, rate / 1e6,
                 lossy ? fmt::format(", {} sequence gaps ({} lost in {} laps)",
                                     fmt::group_digits(s.gaps), fmt::group_digits(s.lost), s.laps)
                       : "");
    } else if (s.received != 0 && s.last_ns > s.first_ns) {
      fmt::print("stream:   {} messages of {} received and verified in {:.3f} s\n",
                 fmt::group_digits(s.verified), harness::format_bytes(o.size), secs);
      fmt::print("          {} msg/s   {:.3f} GB/s\n", harness::format_rate(rate),
                 rate * static_cast<double>(o.size) / 1e9);
    }
    if (s.failures != 0) {
      fmt::print("FAILED:   {}: {} of {} messages failed verification; the first, #{}: {}\n", who,
                 fmt::group_digits(s.failures), fmt::group_digits(s.received), s.first_failure_seq,
                 to_string(s.first_failure));
    }
    if (s.ping_failures != 0)
      fmt::print("FAILED:   {} pings failed verification\n", s.ping_failures);
    const bool error = print_errors(who, s.error, k < statuses.size() ? statuses[k] : std::nullopt);
    const bool unaccounted =
        s.verified + (lossy ? s.gaps : 0) != o.messages || (lossy && s.gaps != s.lost);
    if (!error && s.failures == 0 && unaccounted) {
      fmt::print("FAILED:   {}: {} verified + {} gaps of {} messages; the ring counted {} lost\n",
                 who, s.verified, s.gaps, o.messages, s.lost);
    }
    verify_failed =
        verify_failed || s.failures != 0 || s.ping_failures != 0 || (!error && unaccounted);
    stopped = stopped || error;
    verified += s.verified;
    pings += s.pings_verified;
  }
  if (p != nullptr) {
    if (p->sent != 0 && (fanout || subs.empty())) {
      const double secs = seconds(p->end_ns - p->start_ns);
      fmt::print("producer: {} {} in {:.3f} s, {:.2f} M msg/s\n", fmt::group_digits(p->sent),
                 fanout ? "published" : "sent", secs, static_cast<double>(p->sent) / secs / 1e6);
    }
    if (const auto rtt = p->round_trip_ns.size(); rtt != 0) {
      fmt::print("latency:  {} round trips of {} (ping ring -> consumer -> pong ring), verified\n",
                 fmt::group_digits(rtt), harness::format_bytes(o.size));
      fmt::print("          {}\n", harness::latency_summary(p->round_trip_ns));
    }
    if (p->pong_failures != 0)
      fmt::print("FAILED:   {} pongs failed verification\n", p->pong_failures);
    verify_failed = verify_failed || p->pong_failures != 0;
    stopped = print_errors("producer", p->error.c_str(), std::nullopt) || stopped;
  }
  if (verify_failed) return kExitVerifyFailed;
  if (stopped) {
    fmt::print("FAILED:   the run stopped early{}\n",
               subs.size() != 1
                   ? ""
                   : fmt::format("; {} of {} messages were received and verified",
                                 fmt::group_digits(verified), fmt::group_digits(o.messages)));
    return kExitRuntime;
  }
  if (fanout && lossy) {
    fmt::print(
        "result:   OK, {} subscribers: every message read was whole, {} verified, every "
        "gap counted\n",
        o.subscribers, fmt::group_digits(verified));
  } else if (fanout) {
    fmt::print("result:   OK, all {} messages verified by each of {} subscribers\n",
               fmt::group_digits(o.messages), o.subscribers);
  } else {
    std::string latency;  // what the ping/pong phase verified
    if (pings != 0) latency = fmt::format(", {} pings", fmt::group_digits(pings));
    if (p != nullptr && p->pongs_verified != 0) {
      latency += fmt::format("{} {} pongs", pings != 0 ? " and" : ",",
                             fmt::group_digits(p->pongs_verified));
    }
    fmt::print("result:   OK, all {} messages{}{}{}\n", fmt::group_digits(o.messages),
               subs.empty() ? " sent" : "", latency,
               latency.empty() && subs.empty() ? "" : " verified");
  }
  return kExitOk;
}

}  // namespace demo
