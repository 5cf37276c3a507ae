// The sending bridge: the consumer of a local SPSC ring that forwards its
// messages and releases each slot only once the receiver has committed it.
//
// Positions: the stream position of a message is its position in the
// sender's ring. The receiver acknowledges "committed through P"; the sender
// releases local slots below min(P, sends completed), so a slot is never
// rewritten while UCX may still read it, and a message is never dropped
// before the far ring has it. After a reconnect (or a restart of this
// process, which takes over the consumer role from the released position)
// the receiver's Welcome says where to resume.
#include <algorithm>
#include <array>
#include <chrono>
#include <cstring>
#include <deque>
#include <memory>
#include <optional>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "bridge/pacing.hpp"
#include "bridge/ucx.hpp"
#include "bridge/wire.hpp"
#include "shmring/bridge.hpp"
#include "shmring/error.hpp"
#include "shmring/layout.hpp"
#include "shmring/segment.hpp"
#include "shmring/spsc_ring.hpp"

namespace shmring::bridge {
namespace {

using detail::Completion;
using detail::Endpoint;
using detail::Worker;
using std::chrono::steady_clock;

constexpr std::size_t kAckReceives = 4;

std::uint64_t draw_epoch() {
  std::random_device device;
  std::uint64_t e = 0;
  while (e == 0) {
    e = ((std::uint64_t{device()} << 32) ^ device() ^
         static_cast<std::uint64_t>(steady_clock::now().time_since_epoch().count())) &
        wire::kEpochMask;
  }
  return e;
}

// One batch in flight: its prefix (header + lengths), the iov that points at
// it and at the slots, and the sends that carry them (one Data message, or
// with separate payloads a Data message plus one Payload message each).
struct DataSend {
  std::vector<std::byte> prefix;
  std::vector<ucp_dt_iov_t> iov;
  std::deque<Completion> parts;    // a deque: elements stay put while UCX writes them
  std::uint64_t end_position = 0;  // the stream position after its last message

  bool pending() const noexcept {
    return std::any_of(parts.begin(), parts.end(), [](const Completion& c) { return c.pending; });
  }
  ucs_status_t status() const noexcept {
    for (const Completion& c : parts) {
      if (c.status != UCS_OK) return c.status;
    }
    return UCS_OK;
  }
};

// A connection that ended in a way worth retrying (the message says how).
struct Retry {
  std::string why;
};

class Sender {
 public:
  Sender(const SenderOptions& o, std::stop_token stop) : o_(o), stop_(std::move(stop)) {}

  BridgeStats run();

 private:
  // Connects and exchanges Hello/Welcome; throws BridgeError for a refusal,
  // returns nullptr (with `retry` set) when the attempt should be repeated.
  std::unique_ptr<Endpoint> handshake(std::uint64_t epoch, wire::Welcome& welcome, Retry& retry);
  // Streams until the connection fails (returns why) or stop is requested;
  // closes the endpoint.
  std::string stream(std::unique_ptr<Endpoint>& endpoint, std::uint64_t epoch,
                     const wire::Welcome& welcome);
  // The readable messages from the released position on, at most `max`;
  // throws when the ring's producer side wrote impossible values.
  ReadClaim peek_checked(std::uint64_t max) {
    ReadClaim claim = rx_.try_peek(static_cast<std::size_t>(max));
    if (claim.status() == Status::corrupt) {
      throw BridgeError(BridgeErrc::ring,
                        "ring '" + o_.ring + "' is corrupt (impossible positions)");
    }
    return claim;
  }
  void log(const std::string& line) { detail::log_line(o_.log, line); }
  std::string where() const { return o_.host + ":" + std::to_string(o_.port); }

  const SenderOptions& o_;
  std::stop_token stop_;
  Segment segment_;
  SpscConsumer rx_;
  std::unique_ptr<Worker> worker_;
  BridgeStats stats_;
};

BridgeStats Sender::run() {
  if (o_.ring.empty()) throw BridgeError(BridgeErrc::ring, "no ring name given");
  if (o_.host.empty() || o_.port == 0) {
    throw BridgeError(BridgeErrc::unreachable, "no receiver address given (host and port)");
  }
  try {
    segment_ = Segment::open(o_.ring);
    if (segment_.geometry().kind != RingKind::spsc) {
      throw BridgeError(BridgeErrc::ring, "ring '" + o_.ring + "' is " +
                                              to_string(segment_.geometry().kind) +
                                              "; ring-bridge carries SPSC rings");
    }
    rx_ = SpscConsumer::attach(segment_);
  } catch (const Error& e) {
    throw BridgeError(BridgeErrc::ring, e.what());
  }
  worker_ = std::make_unique<Worker>();

  auto retry_in = o_.retry_interval;
  int failures = 0;
  while (!stop_.stop_requested()) {
    const std::uint64_t epoch = draw_epoch();
    wire::Welcome welcome{};
    Retry retry;
    std::unique_ptr<Endpoint> ep;
    try {
      ep = handshake(epoch, welcome, retry);
    } catch (const BridgeError& e) {
      if (e.code() != BridgeErrc::unreachable) throw;
      retry.why = e.what();
    }
    if (ep != nullptr) {
      failures = 0;
      retry_in = o_.retry_interval;
      ++stats_.connections;
      log("connected to " + where() + ": sending ring '" + o_.ring + "' from position " +
          std::to_string(welcome.committed_through));
      const std::string why = stream(ep, epoch, welcome);
      if (stop_.stop_requested()) break;
      ++stats_.connection_losses;
      log("connection to " + where() + " lost: " + why + "; reconnecting");
      continue;
    }
    if (stop_.stop_requested()) break;
    ++failures;
    if (o_.max_attempts >= 0 && failures >= o_.max_attempts) {
      throw BridgeError(BridgeErrc::unreachable, "no ring-bridge receiver at " + where() +
                                                     " after " + std::to_string(failures) +
                                                     " attempts: " + retry.why);
    }
    log("connecting to " + where() + " failed: " + retry.why + "; retrying in " +
        std::to_string(retry_in.count()) + " ms");
    const auto until = steady_clock::now() + retry_in;
    while (!stop_.stop_requested() && steady_clock::now() < until) {
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
    retry_in = std::min(retry_in * 2, o_.max_retry_interval);
  }
  return stats_;
}

std::unique_ptr<Endpoint> Sender::handshake(std::uint64_t epoch, wire::Welcome& welcome,
                                            Retry& retry) {
  auto ep = Endpoint::connect(*worker_, o_.host, o_.port);
  const auto deadline = steady_clock::now() + o_.connect_timeout;
  // Waits for one answer of the receiver; false, with retry.why set, when
  // none came (or stop was requested).
  const auto await = [&](Completion& c) {
    detail::IdlePacer pacer(o_.idle_spin);
    while (c.pending && !ep->failed() && !stop_.stop_requested() &&
           steady_clock::now() < deadline) {
      if (pacer.should_block(worker_->progress() != 0)) {
        worker_->wait(std::chrono::milliseconds(10));
      }
    }
    if (c.pending) worker_->cancel(c);
    worker_->settle(c);
    if (ep->failed()) {
      retry.why = ucs_status_string(ep->failure());
    } else if (c.status == UCS_ERR_CANCELED) {
      retry.why = "no answer within " + std::to_string(o_.connect_timeout.count()) +
                  " ms (is a ring-bridge receiver listening there?)";
    } else if (c.status != UCS_OK) {
      retry.why = ucs_status_string(c.status);
    }
    return c.status == UCS_OK && !ep->failed() && !stop_.stop_requested();
  };

  wire::Challenge challenge{};
  Completion challenged;
  worker_->recv(&challenge, sizeof challenge, wire::tag(wire::Kind::challenge, 0), wire::kKindMask,
                challenged);
  if (!await(challenged)) return nullptr;
  if (challenged.length < offsetof(wire::Challenge, flags) || challenge.magic != wire::kMagic) {
    throw BridgeError(BridgeErrc::protocol, where() + " is not a ring-bridge receiver");
  }
  if (challenge.protocol_version != wire::kProtocolVersion ||
      challenged.length != sizeof challenge) {
    throw BridgeError(BridgeErrc::protocol, where() + " speaks bridge protocol " +
                                                std::to_string(challenge.protocol_version) +
                                                ", this side " +
                                                std::to_string(wire::kProtocolVersion));
  }

  const auto* header = reinterpret_cast<const SegmentHeader*>(segment_.base());
  wire::Hello hello{};
  hello.magic = wire::kMagic;
  hello.protocol_version = wire::kProtocolVersion;
  hello.ring_kind = static_cast<std::uint32_t>(RingKind::spsc);
  hello.capacity = rx_.capacity();
  hello.slot_size = rx_.slot_size();
  hello.epoch = epoch;
  hello.stream_created_ns = header->created_unix_ns;
  hello.stream_creator = std::uint64_t{header->creator_pid} | (header->creator_start_time << 32);
  hello.next_position = rx_.position();
  hello.max_batch = std::max<std::size_t>(o_.max_batch, 1);
  std::strncpy(hello.ring_name, o_.ring.c_str(), sizeof hello.ring_name - 1);
  std::memcpy(hello.nonce, challenge.nonce, sizeof hello.nonce);
  if (!o_.key.empty()) {
    hello.flags |= wire::kHasMac;
    const detail::Digest mac = wire::hello_mac(
        {reinterpret_cast<const std::uint8_t*>(o_.key.data()), o_.key.size()}, hello);
    std::memcpy(hello.mac, mac.data(), sizeof hello.mac);
  }

  Completion answer, sent;
  worker_->recv(&welcome, sizeof welcome, wire::tag(wire::Kind::welcome, epoch), wire::kFullMask,
                answer);
  worker_->send(ep->handle(), &hello, sizeof hello, wire::tag(wire::Kind::hello, epoch), sent);
  const bool answered = await(answer);
  if (sent.pending && !answered) ep.reset();  // a forced close completes the send
  worker_->settle(sent);
  if (!answered) return nullptr;
  if (answer.length != sizeof welcome || welcome.magic != wire::kMagic || welcome.epoch != epoch) {
    throw BridgeError(BridgeErrc::protocol,
                      where() + " answered with something that is not a ring-bridge Welcome");
  }
  if (welcome.protocol_version != wire::kProtocolVersion) {
    throw BridgeError(BridgeErrc::protocol, where() + " speaks bridge protocol " +
                                                std::to_string(welcome.protocol_version) +
                                                ", this side " +
                                                std::to_string(wire::kProtocolVersion));
  }
  if (welcome.result != wire::Result::accepted) {
    welcome.reason[sizeof welcome.reason - 1] = '\0';
    const BridgeErrc code =
        welcome.result == wire::Result::stream_gap ? BridgeErrc::stream_gap : BridgeErrc::refused;
    throw BridgeError(code, where() + " refused ring '" + o_.ring + "': " + welcome.reason);
  }
  return ep;
}

std::string Sender::stream(std::unique_ptr<Endpoint>& endpoint, std::uint64_t epoch,
                           const wire::Welcome& welcome) {
  Endpoint& ep = *endpoint;
  // Resume where the receiver is: release what it already committed.
  const std::uint64_t released = rx_.position();
  // Messages stay in the ring until the receiver has committed them: every
  // peek below is put back unless it is released.
  ReadClaim claim = peek_checked(rx_.capacity());
  const std::uint64_t readable_end = released + claim.size();
  (void)claim.put_back();
  if (welcome.committed_through < released) {
    throw BridgeError(BridgeErrc::stream_gap,
                      where() + " has committed ring '" + o_.ring + "' only through position " +
                          std::to_string(welcome.committed_through) + ", but this side released " +
                          "through " + std::to_string(released) +
                          ": the messages between are gone (was the receiving ring recreated?)");
  }
  if (welcome.committed_through > readable_end) {
    throw BridgeError(BridgeErrc::stream_gap, where() + " says it committed through position " +
                                                  std::to_string(welcome.committed_through) +
                                                  ", beyond what ring '" + o_.ring + "' holds (" +
                                                  std::to_string(readable_end) +
                                                  "): it is fed by another stream");
  }
  claim = rx_.try_peek(static_cast<std::size_t>(welcome.committed_through - released));
  (void)claim.release();
  stats_.committed_through = welcome.committed_through;

  const std::size_t max_batch = static_cast<std::size_t>(std::clamp<std::uint64_t>(
      std::min<std::uint64_t>(o_.max_batch, welcome.max_batch), 1, rx_.capacity()));
  const std::uint64_t window =
      std::min<std::uint64_t>(o_.window != 0 ? o_.window : 4 * max_batch, rx_.capacity());
  const bool separate = (welcome.flags & wire::kSeparatePayloads) != 0;

  std::uint64_t acked = welcome.committed_through;
  std::uint64_t next_send = welcome.committed_through;
  std::uint64_t sends_done_through = next_send;  // every send below here has completed
  std::deque<DataSend> sends;
  std::array<wire::Ack, kAckReceives> ack_buffers{};
  std::array<Completion, kAckReceives> ack_receives{};
  std::size_t next_ack = 0;  // acks complete in the order they were posted
  for (std::size_t i = 0; i < kAckReceives; ++i) {
    worker_->recv(&ack_buffers[i], sizeof(wire::Ack), wire::tag(wire::Kind::ack, epoch),
                  wire::kFullMask, ack_receives[i]);
  }

  std::string why;
  detail::IdlePacer pacer(o_.idle_spin);
  detail::StatsTicker ticker(o_.stats_interval, o_.on_stats);
  auto heard = steady_clock::now();  // the receiver's last sign of life
  // A fatal error found in the loop is thrown only after every operation in
  // flight has finished (UCX writes into the buffers below until then).
  std::optional<BridgeError> fatal;
  try {
    while (why.empty() && !stop_.stop_requested()) {
      bool busy = worker_->progress() != 0;
      if (ep.failed()) {
        why = ucs_status_string(ep.failure());
        break;
      }
      if (next_send == acked) {
        heard = steady_clock::now();  // nothing owed: silence is normal
      } else if (steady_clock::now() - heard > o_.peer_timeout) {
        why = "no word from the receiver for " + std::to_string(o_.peer_timeout.count()) +
              " ms with " + std::to_string(next_send - acked) + " messages unacknowledged";
        break;
      }
      // Acknowledgements.
      while (!ack_receives[next_ack].pending) {
        Completion& c = ack_receives[next_ack];
        if (c.status != UCS_OK) {
          why = std::string("receiving acknowledgements failed: ") + ucs_status_string(c.status);
          break;
        }
        worker_->settle(c);
        const wire::Ack a = ack_buffers[next_ack];
        if (c.length != sizeof a || a.epoch != epoch || a.committed_through < acked ||
            a.committed_through > next_send) {
          throw BridgeError(BridgeErrc::protocol,
                            where() + " acknowledged position " +
                                std::to_string(a.committed_through) + ", outside what was sent [" +
                                std::to_string(acked) + ", " + std::to_string(next_send) + "]");
        }
        acked = a.committed_through;
        heard = steady_clock::now();
        worker_->recv(&ack_buffers[next_ack], sizeof(wire::Ack), wire::tag(wire::Kind::ack, epoch),
                      wire::kFullMask, c);
        next_ack = (next_ack + 1) % kAckReceives;
        busy = true;
      }
      if (!why.empty()) break;
      // Sends that completed locally.
      while (!sends.empty() && !sends.front().pending()) {
        DataSend& s = sends.front();
        if (s.status() != UCS_OK) {
          why = std::string("sending failed: ") + ucs_status_string(s.status());
          break;
        }
        for (Completion& c : s.parts) worker_->settle(c);
        sends_done_through = s.end_position;
        sends.pop_front();
      }
      if (!why.empty()) break;
      // Release what the far ring has committed and UCX no longer reads.
      const std::uint64_t releasable =
          std::min(acked, sends.empty() ? next_send : sends_done_through);
      if (releasable > rx_.position()) {
        const std::uint64_t from = rx_.position();
        claim = rx_.try_peek(static_cast<std::size_t>(releasable - from));
        const std::uint64_t n = std::min<std::uint64_t>(claim.size(), releasable - from);
        for (std::uint64_t i = 0; i < n; ++i) stats_.bytes += claim[i].size();
        (void)claim.release(static_cast<std::size_t>(n));
        (void)claim.put_back();
        stats_.messages += n;
        stats_.committed_through = rx_.position();
        busy = true;
      }
      // Send what is readable, within the window.
      if (next_send - acked < window) {
        // Looks no further than the batch it may send: the slots below
        // next_send are in flight already, and every slot looked at costs a
        // load of its trailer.
        const std::uint64_t first = rx_.position();
        const std::uint64_t room = std::min<std::uint64_t>(max_batch, window - (next_send - acked));
        claim = peek_checked(next_send - first + room);
        const std::uint64_t end = first + claim.size();
        const std::uint64_t n = end > next_send ? end - next_send : 0;
        if (n != 0) {
          DataSend& s = sends.emplace_back();
          s.prefix.assign(wire::data_prefix_size(static_cast<std::size_t>(n)), std::byte{0});
          wire::DataHeader h{next_send, static_cast<std::uint32_t>(n), 0};
          std::memcpy(s.prefix.data(), &h, sizeof h);
          s.iov.push_back({s.prefix.data(), s.prefix.size()});
          for (std::uint64_t i = 0; i < n; ++i) {
            const std::span<const std::byte> m =
                claim[static_cast<std::size_t>(next_send - first + i)];
            const auto length = static_cast<std::uint32_t>(m.size());
            std::memcpy(s.prefix.data() + sizeof h + i * sizeof length, &length, sizeof length);
            if (!m.empty()) s.iov.push_back({const_cast<std::byte*>(m.data()), m.size()});
          }
          // In flight from here; released once acknowledged (the slots stay
          // put until then, so the spans stay valid).
          (void)claim.put_back();
          next_send += n;
          s.end_position = next_send;
          ++stats_.batches;
          if (separate) {
            // The lengths first, then each payload from its slot, in order.
            worker_->send(ep.handle(), s.prefix.data(), s.prefix.size(),
                          wire::tag(wire::Kind::data, epoch), s.parts.emplace_back());
            for (std::size_t i = 1; i < s.iov.size(); ++i) {
              worker_->send(ep.handle(), s.iov[i].buffer, s.iov[i].length,
                            wire::tag(wire::Kind::payload, epoch), s.parts.emplace_back());
            }
          } else {
            worker_->send(ep.handle(), s.iov.data(), s.iov.size(),
                          wire::tag(wire::Kind::data, epoch), s.parts.emplace_back());
          }
          busy = true;
        }
        (void)claim.put_back();  // nothing new to send: the peek goes back unread
      }
      ticker.maybe_report(stats_);
      if (pacer.should_block(busy)) {
        if (next_send == acked) {
          // Nothing owed by the receiver: wait for the local producer (on the
          // ring's futex), looking at the network again every 20 ms.
          (void)rx_.peek(1, std::chrono::milliseconds(20)).put_back();
        } else {
          // Waiting for acknowledgements; new messages are looked for every
          // 200 us.
          worker_->wait(std::chrono::microseconds(200));
        }
      }
    }
  } catch (const BridgeError& e) {
    fatal = e;
  }
  // Every operation must finish before its buffers go: receives are
  // cancelled; the endpoint's forced close completes the sends still in
  // flight (a send may wait on a peer that no longer reads).
  for (Completion& c : ack_receives) worker_->cancel(c);
  for (Completion& c : ack_receives) worker_->settle(c);
  endpoint.reset();
  for (DataSend& s : sends) {
    for (Completion& c : s.parts) worker_->settle(c);
  }
  if (fatal) throw *fatal;
  return why.empty() ? "stopped" : why;
}

}  // namespace

const char* to_string(BridgeErrc code) noexcept {
  switch (code) {
    case BridgeErrc::transport:
      return "transport";
    case BridgeErrc::unreachable:
      return "unreachable";
    case BridgeErrc::refused:
      return "refused";
    case BridgeErrc::protocol:
      return "protocol";
    case BridgeErrc::ring:
      return "ring";
    case BridgeErrc::stream_gap:
      return "stream_gap";
    case BridgeErrc::config:
      return "config";
  }
  return "unknown";
}

BridgeStats run_sender(const SenderOptions& options, std::stop_token stop) {
  Sender sender(options, std::move(stop));
  return sender.run();
}

}  // namespace shmring::bridge
