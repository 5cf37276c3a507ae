// The receiving bridge: the producer of a local SPSC ring, fed by one sender
// at a time. It commits each Data message into the ring, then acknowledges
// the stream position committed through; a full ring stops the
// acknowledgements, which stops the sender (back-pressure end to end).
//
// Every new connection is challenged first (wire.hpp) and stays apart from
// the stream until its Hello is accepted, so a connection that is refused,
// or never answers, never disturbs the stream being delivered.
//
// What has been committed is derived from the ring's head and a stream state
// recorded once per stream (stream_state.hpp), so a restarted receiver, or a
// sender that reconnects, resumes exactly where the ring is.
#include <sys/random.h>

#include <algorithm>
#include <array>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <deque>
#include <list>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "bridge/hmac.hpp"
#include "bridge/pacing.hpp"
#include "bridge/stream_state.hpp"
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

constexpr std::size_t kDataReceives = 4;  // the sender's default window is 4 batches
constexpr std::uint64_t kMaxBatch = 4096;
// How often a receiver waiting for room in its ring tells the sender it
// lives; well below any sensible SenderOptions::peer_timeout.
constexpr auto kAliveInterval = std::chrono::milliseconds(200);
// A new connection must send its Hello within this, and a refused one hang
// up; connections that do neither are closed.
constexpr auto kHandshakeTimeout = std::chrono::seconds(10);
// Connections waiting for their Hello at most; more are turned away, so a
// flood of connections costs this side a bounded amount.
constexpr std::size_t kMaxPending = 16;

struct DataReceive {
  Completion done;
  std::vector<std::byte> buffer;
};

struct AckSend {
  Completion done;
  wire::Ack ack{};
};

// A connection not yet accepted: challenged, then answered (refused) or
// moved to the stream.
struct Pending {
  std::unique_ptr<Endpoint> ep;
  wire::Challenge challenge{};
  Completion challenge_sent;
  std::chrono::steady_clock::time_point deadline;
  bool answered = false;  // refused: waits for the sender to hang up
};

// The accepted sender's connection and the stream it carries.
struct Connection {
  std::unique_ptr<Endpoint> ep;
  std::uint64_t epoch = 0;
  std::uint64_t stream_created_ns = 0;  // the stream's identity (wire::Hello)
  std::uint64_t stream_creator = 0;
  std::string stream_name;
  std::uint64_t committed = 0;
  std::uint64_t max_batch = 0;
  bool separate_payloads = false;  // wire::kSeparatePayloads
  std::array<DataReceive, kDataReceives> receives;
  std::size_t next_receive = 0;  // receives complete in the order they were posted
  std::deque<AckSend> acks;
};

class Receiver {
 public:
  Receiver(const ReceiverOptions& o, std::stop_token stop) : o_(o), stop_(std::move(stop)) {}

  BridgeStats run();

 private:
  void accept(detail::Listener& listener, ucp_conn_request_h request);
  // Closes the pending connections whose sender hung up or ran out of time.
  bool expire_pending();
  void close(std::list<Pending>::iterator it);
  void on_hello(const wire::Hello& hello, std::size_t length);
  // The reason to refuse a Hello before the ring is touched, if any.
  std::optional<std::pair<wire::Result, std::string>> screen(const wire::Hello& hello,
                                                             const std::string& peer);
  // Fills `w` with a refusal and says so in the log.
  void refuse(wire::Welcome& w, wire::Result result, const std::string& reason);
  // Opens or creates the ring for a sender's geometry and attaches its
  // producer; returns a reason when it does not fit.
  std::optional<std::string> ensure_ring(const wire::Hello& hello, wire::Result& result);
  std::uint64_t resume_position(const wire::Hello& hello);
  // Commits one received Data message; returns false to drop the connection.
  bool on_data(DataReceive& r);
  // With separate payloads: receives them straight into claimed slots and
  // commits them; returns false when the connection was dropped.
  bool receive_payloads(std::uint64_t count, const std::vector<std::uint32_t>& lengths);
  // Waits for room in the ring (claim) while the connection stays served.
  WriteClaim claim_slots(std::uint64_t count, bool& stopped);
  void post_receive(DataReceive& r);
  void send_ack();
  void drop(const std::string& why);
  void log(const std::string& line) { detail::log_line(o_.log, line); }

  const ReceiverOptions& o_;
  std::stop_token stop_;
  std::unique_ptr<Worker> worker_;
  Segment segment_;
  SpscProducer tx_;
  std::list<Pending> pending_;  // a list: UCX writes into its elements' completions
  Connection conn_;
  wire::Welcome welcome_{};  // the answer being sent
  BridgeStats stats_;
};

BridgeStats Receiver::run() {
  if (o_.ring.empty()) throw BridgeError(BridgeErrc::ring, "no ring name given");
  if (const std::string problem = Segment::name_problem(o_.ring); !problem.empty()) {
    throw BridgeError(BridgeErrc::ring, problem);
  }
  // Problems that would otherwise show only when a sender comes, and then
  // refuse every one: a mode the ring cannot be created with, a state file
  // that cannot be used.
  if ((o_.mode & ~mode_t{0666}) != 0) {
    char mode[12];  // any unsigned in octal
    std::snprintf(mode, sizeof mode, "%04o", static_cast<unsigned>(o_.mode));
    throw BridgeError(BridgeErrc::config,
                      std::string("mode ") + mode +
                          " for the ring: only read and write bits (within 0666) are allowed");
  }
  (void)detail::load_stream_state(o_.ring);
  worker_ = std::make_unique<Worker>();
  detail::Listener listener(*worker_, o_.bind_address, o_.port);
  const std::string where = o_.bind_address + ":" + std::to_string(listener.port());
  if (!listener.loopback() && o_.key.empty()) {
    throw BridgeError(BridgeErrc::config,
                      where +
                          " is not a loopback address: any host that reaches it could write "
                          "into ring '" +
                          o_.ring +
                          "'. Give a key that senders must prove (--key-file), or listen on "
                          "loopback");
  }
  log("listening on " + where + " for ring '" + o_.ring + "'" +
      (o_.key.empty() ? "" : ", senders must prove the key"));
  if (o_.on_listening) o_.on_listening(listener.port());

  wire::Hello hello{};
  Completion hello_receive;
  worker_->recv(&hello, sizeof hello, wire::tag(wire::Kind::hello, 0), wire::kKindMask,
                hello_receive);
  detail::IdlePacer pacer(o_.idle_spin);
  detail::StatsTicker ticker(o_.stats_interval, o_.on_stats);
  // A fatal error found in the loop is thrown only after every operation in
  // flight has finished (UCX writes into the buffers until then).
  std::optional<BridgeError> fatal;
  try {
    while (!stop_.stop_requested()) {
      bool busy = worker_->progress() != 0;
      while (ucp_conn_request_h request = listener.take()) {
        accept(listener, request);
        busy = true;
      }
      // Before any Hello is looked at: a stream whose connection died no
      // longer holds the ring.
      if (conn_.ep != nullptr && conn_.ep->failed()) {
        ++stats_.connection_losses;
        drop(std::string("connection from ") + conn_.ep->peer() +
             " lost: " + ucs_status_string(conn_.ep->failure()));
      }
      if (!hello_receive.pending) {
        const Completion done = hello_receive;
        worker_->settle(hello_receive);
        if (done.status == UCS_OK) {
          on_hello(hello, done.length);
        } else {
          log(std::string("unreadable Hello (") + ucs_status_string(done.status) +
              "): not a ring-bridge sender, or another protocol version");
        }
        worker_->recv(&hello, sizeof hello, wire::tag(wire::Kind::hello, 0), wire::kKindMask,
                      hello_receive);
        busy = true;
      }
      if (expire_pending()) busy = true;
      if (conn_.ep != nullptr) {
        while (conn_.ep != nullptr && !conn_.receives[conn_.next_receive].done.pending) {
          DataReceive& r = conn_.receives[conn_.next_receive];
          if (!on_data(r)) break;
          conn_.next_receive = (conn_.next_receive + 1) % kDataReceives;
          busy = true;
        }
      }
      if (conn_.ep != nullptr) {
        while (!conn_.acks.empty() && !conn_.acks.front().done.pending) {
          worker_->settle(conn_.acks.front().done);
          conn_.acks.pop_front();
        }
      }
      ticker.maybe_report(stats_);
      // Everything a receiver waits for comes over the network.
      if (pacer.should_block(busy)) worker_->wait(std::chrono::milliseconds(20));
    }
  } catch (const BridgeError& e) {
    fatal = e;
  }
  if (conn_.ep != nullptr) drop("stopped");
  while (!pending_.empty()) close(pending_.begin());
  worker_->cancel(hello_receive);
  worker_->settle(hello_receive);
  if (fatal) throw *fatal;
  return stats_;
}

void Receiver::accept(detail::Listener& listener, ucp_conn_request_h request) {
  if (pending_.size() >= kMaxPending) {
    log("turned away a connection from " + detail::client_address(request) + ": " +
        std::to_string(pending_.size()) + " others have not sent their Hello yet");
    listener.reject(request);
    return;
  }
  Pending& p = pending_.emplace_back();
  try {
    p.ep = Endpoint::accept(*worker_, request);
  } catch (const BridgeError& e) {
    log(e.what());
    pending_.pop_back();
    return;
  }
  log("connection from " + p.ep->peer());
  p.deadline = std::chrono::steady_clock::now() + kHandshakeTimeout;
  p.challenge.magic = wire::kMagic;
  p.challenge.protocol_version = wire::kProtocolVersion;
  p.challenge.flags = o_.key.empty() ? 0 : wire::kKeyRequired;
  if (::getrandom(p.challenge.nonce, sizeof p.challenge.nonce, 0) !=
      static_cast<ssize_t>(sizeof p.challenge.nonce)) {
    throw BridgeError(BridgeErrc::transport, "no random bytes for a challenge");
  }
  worker_->send(p.ep->handle(), &p.challenge, sizeof p.challenge,
                wire::tag(wire::Kind::challenge, 0), p.challenge_sent);
}

bool Receiver::expire_pending() {
  bool any = false;
  const auto now = std::chrono::steady_clock::now();
  for (auto it = pending_.begin(); it != pending_.end();) {
    const auto next = std::next(it);
    if (it->ep->failed() || now > it->deadline) {
      if (!it->answered) {
        log("connection from " + it->ep->peer() + (it->ep->failed() ? " closed" : " timed out") +
            " before its Hello");
      }
      close(it);
      any = true;
    }
    it = next;
  }
  return any;
}

void Receiver::close(std::list<Pending>::iterator it) {
  it->ep.reset();  // a forced close completes the Challenge if still in flight
  worker_->settle(it->challenge_sent);
  pending_.erase(it);
}

void Receiver::refuse(wire::Welcome& w, wire::Result result, const std::string& reason) {
  w.result = result;
  std::strncpy(w.reason, reason.c_str(), sizeof w.reason - 1);
  log("refused a sender: " + reason);
}

void Receiver::on_hello(const wire::Hello& hello, std::size_t length) {
  if (length != sizeof hello) {
    log("a Hello of " + std::to_string(length) + " bytes, expected " +
        std::to_string(sizeof hello) + ": not a ring-bridge sender of protocol " +
        std::to_string(wire::kProtocolVersion));
    return;
  }
  // Which connection sent it shows only by the nonce it echoes.
  const auto it = std::find_if(pending_.begin(), pending_.end(), [&](const Pending& p) {
    return !p.answered && detail::equal_constant_time(p.challenge.nonce, hello.nonce);
  });
  if (it == pending_.end()) {
    log("a Hello that answers no open challenge (late, or replayed): ignored");
    return;
  }
  it->answered = true;
  Endpoint& ep = *it->ep;
  wire::Welcome w{};
  w.magic = wire::kMagic;
  w.protocol_version = wire::kProtocolVersion;
  w.epoch = hello.epoch & wire::kEpochMask;
  w.result = wire::Result::accepted;
  wire::Result result = wire::Result::accepted;
  if (auto refusal = screen(hello, ep.peer())) {
    refuse(w, refusal->first, refusal->second);
  } else {
    // Past screen(), a live stream is this one's: its sender reconnected
    // before this side noticed the old connection die.
    if (conn_.ep != nullptr) drop("connection from " + conn_.ep->peer() + " replaced by a new one");
    if (auto reason = ensure_ring(hello, result)) {
      refuse(w, result, *reason);
    } else {
      try {
        const std::uint64_t resume = resume_position(hello);
        if (hello.next_position > resume) {
          refuse(w, wire::Result::stream_gap,
                 "the sender's ring released position " + std::to_string(hello.next_position) +
                     " but ring '" + o_.ring + "' here has committed only through " +
                     std::to_string(resume) + "; remove " + detail::stream_state_path(o_.ring) +
                     " to accept the loss and start over");
        } else {
          w.committed_through = resume;
        }
      } catch (const BridgeError& e) {
        refuse(w, wire::Result::ring_error, e.what());
      }
    }
  }
  if (w.result == wire::Result::accepted) {
    worker_->settle(it->challenge_sent);
    conn_.ep = std::move(it->ep);
    pending_.erase(it);
    conn_.stream_created_ns = hello.stream_created_ns;
    conn_.stream_creator = hello.stream_creator;
    conn_.stream_name.assign(hello.ring_name, strnlen(hello.ring_name, sizeof hello.ring_name));
    const std::uint64_t slot = tx_.slot_size();
    const std::uint64_t by_bytes =
        std::max<std::uint64_t>(1, o_.max_message_bytes / (slot + sizeof(std::uint32_t)));
    conn_.max_batch = std::min(
        {std::max<std::uint64_t>(hello.max_batch, 1), by_bytes, kMaxBatch, tx_.capacity()});
    conn_.epoch = w.epoch;
    conn_.committed = w.committed_through;
    conn_.next_receive = 0;
    conn_.separate_payloads = hello.slot_size >= wire::kSeparatePayloadSlot;
    for (DataReceive& r : conn_.receives) {
      r.buffer.assign(wire::data_prefix_size(conn_.max_batch) +
                          (conn_.separate_payloads ? 0 : conn_.max_batch * slot),
                      std::byte{0});
      post_receive(r);
    }
    w.flags = conn_.separate_payloads ? wire::kSeparatePayloads : 0;
    w.max_batch = conn_.max_batch;
    w.capacity = tx_.capacity();
    w.slot_size = tx_.slot_size();
    ++stats_.connections;
    stats_.committed_through = conn_.committed;
    log("stream of ring '" + conn_.stream_name + "' from " + ep.peer() + " into ring '" + o_.ring +
        "', resuming at position " + std::to_string(conn_.committed));
  }
  // Small: the send completes at once, or with an error if the peer is gone.
  welcome_ = w;
  Completion sent;
  worker_->send(ep.handle(), &welcome_, sizeof welcome_, wire::tag(wire::Kind::welcome, w.epoch),
                sent);
  worker_->settle(sent);
}

std::optional<std::pair<wire::Result, std::string>> Receiver::screen(const wire::Hello& hello,
                                                                     const std::string& peer) {
  using R = wire::Result;
  const auto n = [](std::uint64_t v) { return std::to_string(v); };
  if (hello.magic != wire::kMagic) {
    return {{R::bad_protocol, "the Hello from " + peer + " has no ring-bridge magic"}};
  }
  if (hello.protocol_version != wire::kProtocolVersion) {
    return {{R::bad_protocol, "bridge protocol " + n(hello.protocol_version) + " from " + peer +
                                  "; this receiver speaks " + n(wire::kProtocolVersion)}};
  }
  if (!o_.key.empty()) {
    const std::span key(reinterpret_cast<const std::uint8_t*>(o_.key.data()), o_.key.size());
    if ((hello.flags & wire::kHasMac) == 0) {
      return {{R::unauthenticated, "the sender at " + peer +
                                       " has no key; this receiver accepts only senders that "
                                       "hold its key (--key-file)"}};
    }
    if (!detail::equal_constant_time(hello.mac, wire::hello_mac(key, hello))) {
      return {{R::unauthenticated,
               "the sender at " + peer + " failed authentication: its key is not this receiver's"}};
    }
  }
  // Limits on what a peer may make this side allocate, checked whether or
  // not the ring exists yet, so whether a sender is accepted does not
  // depend on which one came first.
  if (hello.capacity > o_.max_capacity) {
    return {{R::bad_geometry, "the sender's ring has " + n(hello.capacity) +
                                  " slots; this receiver accepts at most " + n(o_.max_capacity) +
                                  " (--max-capacity)"}};
  }
  if (hello.slot_size > o_.max_slot_size) {
    return {{R::bad_geometry, "the sender's ring has slots of " + n(hello.slot_size) +
                                  " bytes; this receiver accepts at most " + n(o_.max_slot_size) +
                                  " (--max-slot-size)"}};
  }
  Geometry g;
  if (const GeometryCheck c = compute_geometry(RingKind::spsc, hello.capacity, hello.slot_size, g);
      c != GeometryCheck::ok) {
    return {{R::bad_geometry,
             std::string("the sender's ring geometry is impossible: ") + to_string(c)}};
  }
  if (g.segment_size > o_.max_segment_bytes) {
    return {{R::bad_geometry, "the sender's ring (" + n(hello.capacity) + " slots of " +
                                  n(hello.slot_size) + " bytes) takes " + n(g.segment_size) +
                                  " bytes; this receiver accepts at most " +
                                  n(o_.max_segment_bytes) + " (--max-segment-bytes)"}};
  }
  if (conn_.ep != nullptr && (hello.stream_created_ns != conn_.stream_created_ns ||
                              hello.stream_creator != conn_.stream_creator)) {
    return {{R::busy, "ring '" + o_.ring + "' here is being filled by the stream of ring '" +
                          conn_.stream_name + "' from " + conn_.ep->peer() +
                          "; one sender per stream"}};
  }
  return std::nullopt;
}

std::optional<std::string> Receiver::ensure_ring(const wire::Hello& hello, wire::Result& result) {
  result = wire::Result::bad_geometry;
  if (hello.ring_kind != static_cast<std::uint32_t>(RingKind::spsc)) {
    return "the sender's ring is not SPSC; ring-bridge carries SPSC rings";
  }
  if (!tx_) {
    result = wire::Result::ring_error;
    try {
      std::error_code ec;
      segment_ = Segment::open(o_.ring, OpenOptions{}, ec);
      if (ec == errc::not_found) {
        CreateOptions create;
        create.kind = RingKind::spsc;
        create.capacity = hello.capacity;
        create.slot_size = hello.slot_size;
        create.mode = o_.mode;
        segment_ = Segment::open_or_create(o_.ring, create);
        if (segment_.created()) {
          log("created ring '" + o_.ring + "': " + std::to_string(hello.capacity) + " slots of " +
              std::to_string(hello.slot_size) + " bytes");
        }
      } else if (ec) {
        return "ring '" + o_.ring + "': " + last_error_message();
      }
      if (segment_.geometry().kind != RingKind::spsc) {
        result = wire::Result::bad_geometry;
        const std::string kind = to_string(segment_.geometry().kind);
        segment_ = Segment();
        return "ring '" + o_.ring + "' here is " + kind + "; ring-bridge fills SPSC rings";
      }
      tx_ = SpscProducer::attach(segment_);
      // A relay: its restart or a reconnect is not the end of the stream.
      tx_.set_close_on_exit(false);
    } catch (const Error& e) {
      segment_ = Segment();
      return e.what();
    }
  }
  result = wire::Result::bad_geometry;
  if (hello.slot_size > tx_.slot_size()) {
    return "ring '" + o_.ring + "' here has slots of " + std::to_string(tx_.slot_size()) +
           " bytes; the sender's ring has " + std::to_string(hello.slot_size) +
           ": its messages would not fit";
  }
  result = wire::Result::accepted;
  return std::nullopt;
}

std::uint64_t Receiver::resume_position(const wire::Hello& hello) {
  const auto* header = reinterpret_cast<const SegmentHeader*>(segment_.base());
  const std::uint64_t ring_created = header->created_unix_ns;
  const std::uint64_t head = tx_.position();
  if (auto state = detail::load_stream_state(o_.ring);
      state && state->ring_created_ns == ring_created &&
      state->stream_created_ns == hello.stream_created_ns &&
      state->stream_creator == hello.stream_creator && head >= state->base_ring_position) {
    return state->base_stream_position + (head - state->base_ring_position);
  }
  // A new stream (or a new ring): it starts where the sender stands.
  detail::store_stream_state(
      o_.ring, detail::StreamState{ring_created, hello.stream_created_ns, hello.stream_creator,
                                   hello.next_position, head});
  return hello.next_position;
}

void Receiver::post_receive(DataReceive& r) {
  worker_->recv(r.buffer.data(), r.buffer.size(), wire::tag(wire::Kind::data, conn_.epoch),
                wire::kFullMask, r.done);
}

bool Receiver::on_data(DataReceive& r) {
  const Completion done = r.done;
  worker_->settle(r.done);
  if (done.status != UCS_OK) {
    drop(std::string("receiving data failed: ") + ucs_status_string(done.status));
    return false;
  }
  // Check everything before touching the ring: the sender is a peer we do
  // not trust to stay inside the geometry it announced.
  wire::DataHeader h{};
  std::string bad;
  if (done.length < sizeof h) {
    bad = "a Data message of " + std::to_string(done.length) + " bytes";
  } else {
    std::memcpy(&h, r.buffer.data(), sizeof h);
  }
  std::size_t prefix = 0;
  std::uint64_t payload = 0;
  if (bad.empty()) {
    prefix = wire::data_prefix_size(std::min<std::uint64_t>(h.count, conn_.max_batch));
    if (h.count == 0 || h.count > conn_.max_batch || done.length < prefix) {
      bad = "a batch of " + std::to_string(h.count) + " messages (at most " +
            std::to_string(conn_.max_batch) + ")";
    } else if (h.first_position > conn_.committed) {
      bad = "a batch starting at position " + std::to_string(h.first_position) + ", expected " +
            std::to_string(conn_.committed);
    }
  }
  std::vector<std::uint32_t> lengths(bad.empty() ? h.count : 0);
  if (bad.empty()) {
    std::memcpy(lengths.data(), r.buffer.data() + sizeof h, h.count * sizeof(std::uint32_t));
    for (std::uint32_t length : lengths) {
      if (length > tx_.slot_size()) {
        bad = "a message of " + std::to_string(length) + " bytes (slots hold " +
              std::to_string(tx_.slot_size()) + ")";
        break;
      }
      payload += length;
    }
    if (bad.empty() && conn_.separate_payloads) {
      if (done.length != prefix) {
        bad = "a Data message of " + std::to_string(done.length) + " bytes, expected " +
              std::to_string(prefix) + " (lengths only)";
      } else if (h.first_position != conn_.committed) {
        bad = "a batch starting at position " + std::to_string(h.first_position) + ", expected " +
              std::to_string(conn_.committed);
      }
    } else if (bad.empty() && prefix + payload != done.length) {
      bad = "a batch whose lengths add up to " + std::to_string(prefix + payload) +
            " bytes, received " + std::to_string(done.length);
    }
  }
  if (!bad.empty()) {
    log("protocol violation from " + conn_.ep->peer() + ": " + bad + "; dropping the connection");
    drop("protocol violation");
    return false;
  }
  if (conn_.separate_payloads) {
    if (!receive_payloads(h.count, lengths)) return false;
    post_receive(r);
    return true;
  }
  // A resent batch may overlap what is committed already: skip that part.
  const std::uint64_t skip = conn_.committed - h.first_position;
  const std::byte* data = r.buffer.data() + prefix;
  for (std::uint64_t i = 0; i < skip && i < h.count; ++i) data += lengths[i];
  std::uint64_t i = std::min<std::uint64_t>(skip, h.count);
  while (i < h.count) {
    bool stopped = false;
    WriteClaim claim = claim_slots(h.count - i, stopped);
    if (stopped) return false;
    for (std::size_t k = 0; k < claim.size(); ++k, ++i) {
      std::memcpy(claim[k].data(), data, lengths[i]);
      (void)claim.set_size(k, lengths[i]);
      data += lengths[i];
      stats_.bytes += lengths[i];
    }
    stats_.messages += claim.size();
    claim.commit_batch();
  }
  conn_.committed = std::max(conn_.committed, h.first_position + h.count);
  stats_.committed_through = conn_.committed;
  ++stats_.batches;
  if (conn_.ep == nullptr) return false;
  send_ack();
  post_receive(r);
  return true;
}

WriteClaim Receiver::claim_slots(std::uint64_t count, bool& stopped) {
  auto said_alive = std::chrono::steady_clock::now();
  for (;;) {
    WriteClaim claim = tx_.claim(static_cast<std::size_t>(count), std::chrono::milliseconds(1));
    if (claim.status() == Status::corrupt) {
      throw BridgeError(BridgeErrc::ring,
                        "ring '" + o_.ring + "' is corrupt (impossible positions)");
    }
    if (!claim.empty()) return claim;
    // The ring is full: keep the connection served while the consumer
    // catches up, and tell the sender this side still lives (an Ack of what
    // is committed) so it does not take the silence for a cut. On stop, what
    // is not committed will be sent again.
    worker_->progress();
    if (stop_.stop_requested()) {
      stopped = true;
      return claim;
    }
    if (std::chrono::steady_clock::now() - said_alive > kAliveInterval) {
      send_ack();
      said_alive = std::chrono::steady_clock::now();
    }
  }
}

bool Receiver::receive_payloads(std::uint64_t count, const std::vector<std::uint32_t>& lengths) {
  std::uint64_t i = 0;
  while (i < count) {
    bool stopped = false;
    WriteClaim claim = claim_slots(count - i, stopped);
    if (stopped) return false;
    std::vector<Completion> parts(claim.size());  // sized once: UCX writes into them
    for (std::size_t k = 0; k < claim.size(); ++k) {
      if (lengths[i + k] == 0) continue;  // an empty message sends no payload
      worker_->recv(claim[k].data(), claim[k].size(), wire::tag(wire::Kind::payload, conn_.epoch),
                    wire::kFullMask, parts[k]);
    }
    const auto pending = [&] {
      return std::any_of(parts.begin(), parts.end(), [](const Completion& c) { return c.pending; });
    };
    std::string bad;
    while (pending() && bad.empty()) {
      worker_->progress();
      if (conn_.ep->failed()) bad = "connection lost";
      if (stop_.stop_requested()) bad = "stopped";
    }
    for (std::size_t k = 0; k < parts.size() && bad.empty(); ++k) {
      if (parts[k].status != UCS_OK) {
        bad = std::string("receiving a payload failed: ") + ucs_status_string(parts[k].status);
      } else if (lengths[i + k] != 0 && parts[k].length != lengths[i + k]) {
        bad = "a payload of " + std::to_string(parts[k].length) + " bytes, announced as " +
              std::to_string(lengths[i + k]);
      }
    }
    if (!bad.empty()) {
      // Nothing of this claim is committed; the sender sends it again.
      for (Completion& c : parts) worker_->cancel(c);
      for (Completion& c : parts) worker_->settle(c);
      claim.abort();
      if (bad != "stopped") {
        if (conn_.ep->failed()) ++stats_.connection_losses;
        drop(bad);
      }
      return false;
    }
    for (std::size_t k = 0; k < claim.size(); ++k) {
      worker_->settle(parts[k]);
      (void)claim.set_size(k, lengths[i + k]);
      stats_.bytes += lengths[i + k];
    }
    stats_.messages += claim.size();
    i += claim.size();
    claim.commit_batch();
  }
  conn_.committed += count;
  stats_.committed_through = conn_.committed;
  ++stats_.batches;
  send_ack();
  return true;
}

void Receiver::send_ack() {
  if (conn_.ep == nullptr || conn_.ep->failed()) return;
  AckSend& a = conn_.acks.emplace_back();
  a.ack = wire::Ack{conn_.epoch, conn_.committed};
  worker_->send(conn_.ep->handle(), &a.ack, sizeof a.ack, wire::tag(wire::Kind::ack, conn_.epoch),
                a.done);
}

void Receiver::drop(const std::string& why) {
  if (conn_.ep != nullptr && why != "stopped") log(why);
  for (DataReceive& r : conn_.receives) worker_->cancel(r.done);
  for (DataReceive& r : conn_.receives) worker_->settle(r.done);
  conn_.ep.reset();  // completes the acks still in flight
  for (AckSend& a : conn_.acks) worker_->settle(a.done);
  conn_.acks.clear();
  conn_.epoch = 0;
}

}  // namespace

BridgeStats run_receiver(const ReceiverOptions& options, std::stop_token stop) {
  Receiver receiver(options, std::move(stop));
  return receiver.run();
}

}  // namespace shmring::bridge
