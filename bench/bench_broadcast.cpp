// shmring's broadcast ring (reliable delivery) in the fan-out harness: one
// publisher process, N subscriber processes, every subscriber verifying every
// message, next to iceoryx's publish/subscribe measured the same way
// (peer_iceoryx.cpp). Two APIs:
//   copy   try_push / try_pop, one message a call;
//   batch  try_claim(up to 32) + commit_batch, try_peek(up to 32) + release,
//          each message written and checked in its slot (zero-copy).
// The round trip's return channel is an SPSC ring from subscriber 0 back to
// the publisher, driven with the same API (zero-copy: one claim / one peek).
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "fanout_harness.hpp"
#include "shmring/shmring.hpp"

namespace shmring::bench::peers {

namespace {

const char* gave_up(const Spinner& spinner) noexcept {
  return spinner.stalled() ? "stalled waiting for the peer" : "aborted";
}

Segment open_segment(const std::string& name, RingKind kind) {
  OpenOptions o;
  o.kind = kind;
  return Segment::open(name, o);
}

class BroadcastTransport {
 public:
  static constexpr bool kProcesses = true;

  explicit BroadcastTransport(const FanoutConfig& c)
      : config_(c), ring_name_(unique_name("bcast")), back_name_(unique_name("back")) {
    CreateOptions o;
    o.kind = RingKind::broadcast;
    o.capacity = c.depth;
    o.slot_size = c.size;
    o.subscribers = c.subscribers;
    o.delivery = Delivery::reliable;
    ring_ = Segment::create(ring_name_.name(), o);
    if (c.echo) {
      CreateOptions b;
      b.kind = RingKind::spsc;
      b.capacity = c.depth;
      b.slot_size = c.size;
      back_ = Segment::create(back_name_.name(), b);
    } else {
      back_name_.remove();
    }
  }
  // Every agent has opened the segments by name: the names may go.
  void all_ready() noexcept {
    ring_name_.remove();
    back_name_.remove();
  }

  struct Agent {
    explicit Agent(BroadcastTransport&) {}
  };

  class Publisher {
   public:
    Publisher(BroadcastTransport& t, Agent&)
        : segment_(open_segment(t.ring_name_.name(), RingKind::broadcast)),
          tx_(BroadcastProducer::attach(segment_)),
          zero_copy_(t.config_.zero_copy) {
      prefault(segment_.base(), segment_.size());
    }
    std::size_t publish(MessageTemplate& m, unsigned producer, std::uint64_t first, std::size_t max,
                        Spinner& spinner, const char*& problem) noexcept {
      for (;;) {
        if (!zero_copy_) {
          const Status s = tx_.try_push(m.stamped(make_tag(producer, first)));
          if (s == Status::ok) {
            spinner.progress();
            return 1;
          }
          if (s != Status::would_block) return problem = to_string(s), 0;
        } else {
          WriteClaim claim = tx_.try_claim(max);
          if (!claim.empty()) {
            const std::size_t n = claim.size();
            for (std::size_t i = 0; i < n; ++i) {
              m.write(claim[i].data(), make_tag(producer, first + i));
              if (claim.set_size(i, m.size()) != Status::ok) return problem = "set_size failed", 0;
            }
            claim.commit_batch();
            spinner.progress();
            return n;
          }
          if (claim.status() != Status::would_block) return problem = to_string(claim.status()), 0;
        }
        if (!spinner.failed_attempt()) return problem = gave_up(spinner), 0;
      }
    }

   private:
    Segment segment_;
    BroadcastProducer tx_;
    bool zero_copy_;
  };

  class Subscriber {
   public:
    // Joins at JoinAt::next before anything is published: it gets it all.
    Subscriber(BroadcastTransport& t, Agent&, unsigned /*index*/)
        : segment_(open_segment(t.ring_name_.name(), RingKind::broadcast)),
          rx_(BroadcastSubscriber::attach(segment_)),
          zero_copy_(t.config_.zero_copy),
          buffer_(t.config_.size) {
      prefault(segment_.base(), segment_.size());
    }
    std::size_t receive(const MessageTemplate& m, std::uint64_t* tags, std::size_t max,
                        Spinner& spinner, const char*& problem) noexcept {
      for (;;) {
        Status s = Status::would_block;
        if (!zero_copy_) {
          std::size_t got = 0;
          s = rx_.try_pop(buffer_, got);
          if (s == Status::ok) {
            spinner.progress();
            if (!m.check_copied(buffer_.data(), got, tags[0]))
              return problem = "message damaged", 0;
            return 1;
          }
        } else {
          ReadClaim claim = rx_.try_peek(max);
          if (!claim.empty()) {
            spinner.progress();
            const std::size_t n = claim.size();
            for (std::size_t i = 0; i < n; ++i) {
              const std::span<const std::byte> msg = claim[i];
              if (!m.check_in_place(msg.data(), msg.size(), tags[i])) {
                return problem = "message damaged", 0;
              }
            }
            claim.release();
            return n;
          }
          s = claim.status();
        }
        if (s != Status::would_block) return problem = to_string(s), 0;
        if (!spinner.failed_attempt()) return problem = gave_up(spinner), 0;
      }
    }

   private:
    Segment segment_;
    BroadcastSubscriber rx_;
    bool zero_copy_;
    std::vector<std::byte> buffer_;
  };

  // The return channel: an SPSC ring, subscriber 0 -> publisher.
  class EchoSender {
   public:
    EchoSender(BroadcastTransport& t, Agent&)
        : segment_(open_segment(t.back_name_.name(), RingKind::spsc)),
          tx_(SpscProducer::attach(segment_)),
          zero_copy_(t.config_.zero_copy) {
      prefault(segment_.base(), segment_.size());
    }
    const char* send(MessageTemplate& m, std::uint64_t tag, Spinner& spinner) noexcept {
      for (;;) {
        if (zero_copy_) {
          WriteClaim claim = tx_.try_claim(1);
          if (!claim.empty()) {
            spinner.progress();
            m.write(claim[0].data(), tag);
            const Status s = claim.commit(m.size());
            return s == Status::ok ? nullptr : to_string(s);
          }
          if (claim.status() != Status::would_block) return to_string(claim.status());
        } else {
          const Status s = tx_.try_push(m.stamped(tag));
          if (s == Status::ok) {
            spinner.progress();
            return nullptr;
          }
          if (s != Status::would_block) return to_string(s);
        }
        if (!spinner.failed_attempt()) return gave_up(spinner);
      }
    }

   private:
    Segment segment_;
    SpscProducer tx_;
    bool zero_copy_;
  };

  class EchoReceiver {
   public:
    EchoReceiver(BroadcastTransport& t, Agent&)
        : segment_(open_segment(t.back_name_.name(), RingKind::spsc)),
          rx_(SpscConsumer::attach(segment_)),
          zero_copy_(t.config_.zero_copy),
          buffer_(t.config_.size) {
      prefault(segment_.base(), segment_.size());
    }
    const char* receive(const MessageTemplate& m, std::uint64_t& tag, Spinner& spinner) noexcept {
      for (;;) {
        Status s = Status::would_block;
        if (zero_copy_) {
          ReadClaim claim = rx_.try_peek(1);
          if (!claim.empty()) {
            spinner.progress();
            const std::span<const std::byte> msg = claim[0];
            const bool intact = m.check_in_place(msg.data(), msg.size(), tag);
            claim.release();
            return intact ? nullptr : "reply damaged";
          }
          s = claim.status();
        } else {
          std::size_t got = 0;
          s = rx_.try_pop(buffer_, got);
          if (s == Status::ok) {
            spinner.progress();
            return m.check_copied(buffer_.data(), got, tag) ? nullptr : "reply damaged";
          }
        }
        if (s != Status::would_block) return to_string(s);
        if (!spinner.failed_attempt()) return gave_up(spinner);
      }
    }

   private:
    Segment segment_;
    SpscConsumer rx_;
    bool zero_copy_;
    std::vector<std::byte> buffer_;
  };

  static void leave_process() { ::_exit(0); }

 private:
  FanoutConfig config_;
  NameGuard ring_name_;
  NameGuard back_name_;
  Segment ring_;
  Segment back_;
};

}  // namespace

void register_broadcast_benchmarks() {
  const std::vector<std::size_t> sizes = {64, std::size_t{1} << 20};
  register_fanout<BroadcastTransport>("shmring/copy", "shmring/copy", sizes, false);
  register_fanout<BroadcastTransport>("shmring/batch", "shmring/zerocopy", sizes, true);
}

}  // namespace shmring::bench::peers
