// Many-to-many throughput: P producers stream 64-bit-tagged messages into one
// queue, C consumers take them out and verify every one. shmring's SPSC and
// MPMC rings (bench_rings.cpp) and moodycamel::ConcurrentQueue
// (peer_concurrentqueue.cpp) run through this one harness, so they are
// placed, timed and checked exactly alike, in the same run.
//
// Placement: producer i on entry 2i of the benchmark CPU list, consumer i on
// entry 2i + 1 (modulo the list). Producer 0 is the benchmark thread itself
// (pinned to the first entry by main); every other producer and every
// consumer is an agent, a thread or a forked process. Iterations count
// messages, all producers together; the time runs from the start signal
// until the last consumer has verified the last message, so nothing still
// queued counts as done. Each consumer checks every message's size and
// content and that each producer's sequence only grows; at the end the
// consumers' per-producer tallies must add up to every message exactly once.
//
// A ring is a class R, built by the caller before the run, with
//   R::Producer   Status try_push(std::span<const std::byte>) noexcept
//                 (optional) WriteClaim try_claim(std::size_t) noexcept
//   R::Consumer   Status try_pop(std::span<std::byte>, std::size_t& size) noexcept
//                 (optional) ReadClaim try_peek(std::size_t) noexcept
//   template <class Body>
//   void producer_side(unsigned index, bool own_mapping, Body&& body)
//   template <class Body> void consumer_side(bool own_mapping, Body&& body)
//                 make an endpoint (in the agent that uses it; producer
//                 `index`, 0 .. P - 1) and call body(endpoint); own_mapping:
//                 the agent is a forked process and opens the ring by name,
//                 as an unrelated process would
//   void all_mapped() noexcept
//                 every agent holds its endpoint (a name may go)
// try_push / try_pop answer Status::would_block when full / empty.
#pragma once

#include <benchmark/benchmark.h>

#include <algorithm>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <new>
#include <span>
#include <string>
#include <vector>

#include "bench_support.hpp"
#include "shmring/shmring.hpp"

namespace shmring::bench {

// ---- placement --------------------------------------------------------------------

inline int producer_cpu(const std::vector<int>& cpus, unsigned i) {
  return cpus[(2 * i) % cpus.size()];
}
inline int consumer_cpu(const std::vector<int>& cpus, unsigned i) {
  return cpus[(2 * i + 1) % cpus.size()];
}

// Whether the first `agents` agents (producer 0, consumer 0, producer 1, ...)
// do not all get a core of their own. Agents that share a core must yield in
// their spin loops, or each wait lasts a scheduler time slice.
inline bool share_cores(const std::vector<int>& cpus, unsigned agents) {
  std::vector<int> used;
  for (unsigned i = 0; i < agents; ++i) {
    const int cpu = i % 2 == 0 ? producer_cpu(cpus, i / 2) : consumer_cpu(cpus, i / 2);
    if (std::find(used.begin(), used.end(), cpu) != used.end()) return true;
    used.push_back(cpu);
  }
  return false;
}

// The NxN configurations measured: 1 and 2 always (2x2 shares cores on two
// CPUs, which is worth seeing), then 4, 8, ... while there are 2N CPUs.
inline std::vector<unsigned> pair_counts(const std::vector<int>& cpus) {
  std::vector<unsigned> counts = {1, 2};
  for (unsigned pairs = 4; 2 * pairs <= cpus.size() && pairs <= kMaxProducers; pairs *= 2) {
    counts.push_back(pairs);
  }
  return counts;
}

// ---- the copy API and the zero-copy batch API ----------------------------------

// copy: try_push / try_pop, one message a call. zerocopy: one claim and
// commit (one peek and release) a message. batch: claims and peeks of up to
// 32 slots, one publication each.
enum class Api { copy, zerocopy, batch };

inline const char* api_name(Api api) {
  return api == Api::copy ? "copy" : api == Api::zerocopy ? "zerocopy" : "batch";
}

// Sends a producer's messages, one try_push each (copy) or through claims of
// up to `batch` slots published with one commit_batch (batch).
template <class Producer>
class Sender {
 public:
  Sender(Producer& tx, Api api, std::size_t batch, std::size_t size, unsigned index,
         Control& control, int agent, Spinner& spinner)
      : tx_(tx),
        api_(api),
        batch_(batch),
        message_(size),
        index_(index),
        control_(control),
        agent_(agent),
        spinner_(spinner) {}

  // Sends `count` more messages; false when the run has to stop.
  bool send(std::uint64_t count) noexcept {
    while (count != 0) {
      if (api_ == Api::copy) {
        const Status s = tx_.try_push(message_.stamped(make_tag(index_, next_)));
        if (s == Status::ok) {
          ++next_;
          --count;
          spinner_.progress();
          continue;
        }
        if (s != Status::would_block) return broken("try_push", s);
      } else if constexpr (requires { tx_.try_claim(std::size_t{1}); }) {
        WriteClaim claim =
            tx_.try_claim(static_cast<std::size_t>(std::min<std::uint64_t>(count, batch_)));
        if (!claim.empty()) {
          for (std::size_t i = 0; i < claim.size(); ++i) {
            message_.write(claim[i].data(), make_tag(index_, next_ + i));
            if (claim.set_size(i, message_.size()) != Status::ok)
              return broken("set_size", Status::too_large);
          }
          next_ += claim.size();
          count -= claim.size();
          claim.commit_batch();
          spinner_.progress();
          continue;
        }
        if (claim.status() != Status::would_block) return broken("try_claim", claim.status());
      } else {
        control_.fail(agent_, "producer %u: this queue has no %s API", index_, api_name(api_));
        return false;
      }
      if (!spinner_.failed_attempt()) {
        if (spinner_.stalled())
          control_.fail(agent_, "producer %u stalled: ring stayed full", index_);
        return false;
      }
    }
    return true;
  }
  std::uint64_t sent() const noexcept { return next_; }

 private:
  bool broken(const char* what, Status s) noexcept {
    control_.fail(agent_, "producer %u: %s returned %s", index_, what, to_string(s));
    return false;
  }

  Producer& tx_;
  Api api_;
  std::uint64_t batch_;
  MessageTemplate message_;
  unsigned index_;
  Control& control_;
  int agent_;
  Spinner& spinner_;
  std::uint64_t next_ = 0;
};

// Reads and verifies messages until every producer is done and the ring is
// empty; records the count and tallies in the agent's record.
template <class Consumer>
void receive_all(Consumer& rx, Api api, std::size_t batch, std::size_t size, unsigned producers,
                 bool exact, Control& control, int agent, Spinner& spinner) {
  const MessageTemplate message(size);
  SequenceChecker checker(producers, exact);
  std::vector<std::byte> buffer(size);
  std::uint64_t received = 0;
  bool producers_finished = false;
  auto verify = [&](bool ok, std::uint64_t tag) {
    if (!ok) {
      control.fail(agent, "consumer: message %llu has a wrong size or content",
                   static_cast<unsigned long long>(received));
      return false;
    }
    if (const char* why = checker.accept(tag)) {
      control.fail(agent, "consumer: message %llu (tag %#llx): %s",
                   static_cast<unsigned long long>(received), static_cast<unsigned long long>(tag),
                   why);
      return false;
    }
    ++received;
    return true;
  };
  for (;;) {
    Status status = Status::would_block;
    if (api == Api::copy) {
      std::size_t got = 0;
      status = rx.try_pop(buffer, got);
      if (status == Status::ok) {
        std::uint64_t tag = 0;
        const bool intact = message.check_copied(buffer.data(), got, tag);
        if (!verify(intact, tag)) return;
        spinner.progress();
        continue;
      }
    } else if constexpr (requires { rx.try_peek(batch); }) {
      ReadClaim claim = rx.try_peek(batch);
      if (!claim.empty()) {
        for (std::size_t i = 0; i < claim.size(); ++i) {
          const std::span<const std::byte> m = claim[i];
          std::uint64_t tag = 0;
          const bool intact = message.check_in_place(m.data(), m.size(), tag);
          if (!verify(intact, tag)) return;
        }
        claim.release();
        spinner.progress();
        continue;
      }
      status = claim.status();
    } else {
      control.fail(agent, "consumer: this queue has no %s API", api_name(api));
      return;
    }
    if (status != Status::would_block) {
      control.fail(agent, "consumer: %s returned %s", api == Api::copy ? "try_pop" : "try_peek",
                   to_string(status));
      return;
    }
    // Empty. Once every producer has said it is done (after its last
    // commit), one more empty look means nothing is left for us.
    if (producers_finished) break;
    producers_finished = control.producers_done.load(std::memory_order_acquire) == producers;
    if (producers_finished) continue;
    if (!spinner.failed_attempt()) {
      if (spinner.stalled()) control.fail(agent, "consumer stalled: ring stayed empty");
      return;
    }
  }
  AgentRecord& record = control.agents[agent];
  record.messages = received;
  for (unsigned p = 0; p < producers; ++p) record.tally[p] = checker.tally()[p];
  record.state.store(kFinished, std::memory_order_release);
}

// ---- the measurement ------------------------------------------------------------

struct ThroughputShape {
  bool processes = false;  // agents are forked (else threads)
  Api api = Api::copy;
  std::size_t size = 64;
  std::uint64_t capacity = 1024;  // shown in the label
  unsigned producers = 1;
  unsigned consumers = 1;
  std::uint32_t lanes = 0;     // MPMC: owned lanes of `capacity` slots each, or 0 for one shared
  std::size_t read_ahead = 1;  // MPMC consumers' MpmcConsumer::set_read_ahead
};

// Runs one throughput measurement over `ring` (see the top of this file) in
// `state`'s benchmark, with `cpus` the benchmark CPU list. Sets the manual
// iteration time and the items / bytes processed; returns "" or, when
// anything went wrong (a stall, a damaged, lost or repeated message, an
// agent that died), what did: the caller fails the benchmark with it.
template <class Ring>
std::string run_throughput(benchmark::State& state, const ThroughputShape& c, Ring& ring,
                           const std::vector<int>& cpus) {
  using namespace std::chrono_literals;
  using Producer = typename Ring::Producer;
  using Consumer = typename Ring::Consumer;
  if (c.producers == 0 || c.producers > kMaxProducers || c.consumers == 0 ||
      c.producers + c.consumers > static_cast<unsigned>(kMaxAgents)) {
    return "run_throughput: " + std::to_string(c.producers) + " producers and " +
           std::to_string(c.consumers) + " consumers do not fit the control block";
  }
  SharedRegion region(sizeof(Control));
  Control* control = new (region.data()) Control{};

  const unsigned producers = c.producers;
  const unsigned consumers = c.consumers;
  const std::size_t batch =
      c.api == Api::batch ? static_cast<std::size_t>(std::min<std::uint64_t>(32, c.capacity / 4))
                          : 1;
  const std::uint64_t step = std::uint64_t{producers} * batch;
  const std::uint64_t rounds = (static_cast<std::uint64_t>(state.max_iterations) + step - 1) / step;
  const std::uint64_t per_producer = rounds * batch;
  const bool share = share_cores(cpus, 2 * std::max(producers, consumers));

  Team team(*control, c.processes);
  int next_agent = 0;
  for (unsigned i = 0; i < consumers; ++i) {
    const int id = next_agent++;
    team.spawn(id, consumer_cpu(cpus, i), [&, id] {
      ring.consumer_side(team.processes(), [&](Consumer& rx) {
        Spinner spinner(*control, share);
        control->agents[id].state.store(kReady, std::memory_order_release);
        receive_all(rx, c.api, batch, c.size, producers, consumers == 1, *control, id, spinner);
      });
    });
  }
  for (unsigned p = 1; p < producers; ++p) {
    const int id = next_agent++;
    team.spawn(id, producer_cpu(cpus, p), [&, id, p] {
      ring.producer_side(p, team.processes(), [&](Producer& tx) {
        Spinner spinner(*control, share);
        Sender<Producer> sender(tx, c.api, batch, c.size, p, *control, id, spinner);
        control->agents[id].state.store(kReady, std::memory_order_release);
        while (control->go.load(std::memory_order_acquire) == 0) {
          if (!spinner.failed_attempt()) return;
        }
        spinner.progress();
        if (!sender.send(per_producer)) return;
        control->agents[id].messages = sender.sent();
        control->producers_done.fetch_add(1, std::memory_order_release);
        control->agents[id].state.store(kFinished, std::memory_order_release);
      });
    });
  }

  std::string why;
  Clock::time_point t0{}, t1{};
  ring.producer_side(0, false, [&](Producer& tx) {
    Spinner spinner(*control, share, [&] { return team.children_alive(); });
    Sender<Producer> sender(tx, c.api, batch, c.size, 0, *control, kMainAgent, spinner);
    if (!team.wait_all(kReady, 20s)) {
      why = team.first_error();
      team.stop();
      if (why.empty()) why = "agents did not get ready";
      return;
    }
    ring.all_mapped();

    t0 = Clock::now();
    control->go.store(1, std::memory_order_release);
    std::uint64_t rounds_done = 0;
    bool ok = true;
    while (state.KeepRunningBatch(static_cast<benchmark::IterationCount>(step))) {
      if (ok && rounds_done < rounds) {
        ok = sender.send(batch);
        ++rounds_done;
      }
    }
    while (ok && rounds_done < rounds) {  // only if the library ran fewer batches than it said
      ok = sender.send(batch);
      ++rounds_done;
    }
    control->producers_done.fetch_add(1, std::memory_order_release);
    const bool finished = ok && team.wait_all(kFinished, 20s);
    t1 = Clock::now();
    const std::string process_problem = team.stop();

    why = team.first_error();
    if (why.empty() && control->agents[kMainAgent].state.load() == kFailed) {
      why = control->agents[kMainAgent].error;
    }
    if (why.empty() && !process_problem.empty()) why = process_problem;
    if (why.empty() && !finished) why = "agents did not finish (a peer died or stalled)";
  });
  if (!why.empty()) return why;

  // Every producer's messages arrived exactly once, over all consumers.
  const std::uint64_t expected_sum = per_producer * (per_producer - 1) / 2;
  for (unsigned p = 0; p < producers; ++p) {
    Tally total;
    for (unsigned i = 0; i < consumers; ++i) {
      total.count += control->agents[i].tally[p].count;
      total.sum += control->agents[i].tally[p].sum;
    }
    if (total.count != per_producer) {
      return "producer " + std::to_string(p) + ": consumers saw " + std::to_string(total.count) +
             " of its " + std::to_string(per_producer) + " messages";
    }
    if (total.sum != expected_sum) {
      return "producer " + std::to_string(p) + ": the sequence numbers consumers saw do not add up";
    }
  }
  const std::uint64_t total = per_producer * producers;
  state.SetIterationTime(std::chrono::duration<double>(t1 - t0).count());
  state.SetItemsProcessed(static_cast<std::int64_t>(total));
  state.SetBytesProcessed(static_cast<std::int64_t>(total * c.size));
  state.SetLabel("cap=" + std::to_string(c.capacity) + " batch=" + std::to_string(batch));
  return {};
}

}  // namespace shmring::bench
