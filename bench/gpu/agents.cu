#include <sys/prctl.h>

#include <algorithm>
#include <cstring>
#include <exception>
#include <span>
#include <vector>

#include "agents.hpp"
#include "messages.cuh"

namespace gpu_bench {

namespace {

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
      // A small message is two lines, payload and trailer (its length), and
      // the GPU's writes leave both out of this core's caches: pull both
      // ahead so that their misses overlap.
      if (job.prefetch != 0 && i + job.prefetch < k) {
        __builtin_prefetch(view.payload(seq + i + job.prefetch));
        if (view.payload_lines() != 0) __builtin_prefetch(view.trailer(seq + i + job.prefetch));
      }
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

}  // namespace

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

}  // namespace gpu_bench
