// Carries an SPSC ring to another machine over UCX: a sender drains a local
// ring and a receiver fills a ring on the far host, so producers and
// consumers keep writing and reading local rings (shmring::bridge target,
// built where UCX is found; tools/ring-bridge is the command-line form).
//
// Guarantees (the README's "Across machines" says how):
// - Order and message boundaries are kept; a batch read from the local ring
//   travels as one network message.
// - Nothing is dropped: the sender releases a local slot only after the
//   receiver has committed that message into its ring, so a slow far
//   consumer holds the sender, and through it the local producer, back.
// - Exactly once across a dropped connection and across a killed and
//   restarted bridge on either side: on every (re)connection the receiver
//   says which stream position it has committed through, derived from its
//   ring's own head, and the sender resumes from there.
// - Both ends must be the only consumer (sender) or producer (receiver) of
//   their ring; SPSC rings enforce that with their roles.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <stdexcept>
#include <stop_token>
#include <string>
#include <string_view>

namespace shmring::bridge {

// What went wrong, for callers that react differently to each.
enum class BridgeErrc {
  transport,    // UCX could not be initialised, or a listener could not bind
  unreachable,  // no bridge answered within the attempts allowed
  refused,      // the far bridge refused this stream (the message says why)
  protocol,     // the peer sent something this protocol does not allow
  ring,         // the local ring could not be opened, created or attached
  stream_gap,   // the two sides disagree on what was delivered: continuing could lose messages
  config,       // an option, or a file named by one (key file, port file), is unusable
};

class BridgeError : public std::runtime_error {
 public:
  BridgeError(BridgeErrc code, const std::string& message)
      : std::runtime_error(message), code_(code) {}
  BridgeErrc code() const noexcept { return code_; }

 private:
  BridgeErrc code_;
};

const char* to_string(BridgeErrc code) noexcept;

// Counters of one run_sender / run_receiver call.
struct BridgeStats {
  std::uint64_t messages = 0;           // carried (sent and acknowledged / received and committed)
  std::uint64_t bytes = 0;              // their payload bytes
  std::uint64_t batches = 0;            // network messages that carried them
  std::uint64_t connections = 0;        // connections established (a reconnect counts again)
  std::uint64_t connection_losses = 0;  // connections that dropped
  std::uint64_t committed_through = 0;  // stream position the far ring has committed through
};

// Informational lines (connected, dropped, retrying ...), one call per line.
using LogFn = std::function<void(std::string_view line)>;

// The shared secret of a sender and its receiver, from a file: a regular
// file of this user's that no group or other user may access, of 16 to 4096
// bytes (e.g. head -c 32 /dev/urandom > F). Throws BridgeError(config)
// naming the file and what is wrong with it.
std::string read_key_file(const std::string& path);

struct SenderOptions {
  std::string ring;  // the local SPSC ring to drain (its consumer role is taken)
  std::string host;  // the receiving bridge
  std::uint16_t port = 0;
  // Proves to a receiver that asks for it that this sender holds the key
  // (read_key_file); never sent itself. Empty: none.
  std::string key;
  std::size_t max_batch = 64;  // messages per network message (the receiver may lower it)
  // Messages sent but not yet acknowledged; 0 means four batches.
  std::size_t window = 0;
  // One connection attempt, until the receiver's answer, may take this long.
  std::chrono::milliseconds connect_timeout{3000};
  // Wait before the first retry; doubled after each failed attempt, up to
  // max_retry_interval.
  std::chrono::milliseconds retry_interval{100};
  std::chrono::milliseconds max_retry_interval{2000};
  // Consecutive failed attempts before giving up (BridgeErrc::unreachable);
  // negative: never give up.
  int max_attempts = -1;
  // With messages in flight and no word from the receiver for this long, the
  // connection is taken for dead and made anew (a cut cable sends no reset;
  // a receiver waiting for room in its ring keeps saying it is alive).
  std::chrono::milliseconds peer_timeout{10000};
  // Spin this long on an idle bridge before sleeping between polls (lower
  // latency against a busy core).
  std::chrono::microseconds idle_spin{200};
  LogFn log;
  // Called with the counters about every stats_interval (0 = never).
  std::chrono::milliseconds stats_interval{0};
  std::function<void(const BridgeStats&)> on_stats;
};

struct ReceiverOptions {
  std::string ring;  // the local SPSC ring to fill (its producer role is taken)
  // Any address but a loopback one needs a key: whoever reaches the port
  // could otherwise write into the ring.
  std::string bind_address = "127.0.0.1";
  std::uint16_t port = 0;  // 0: any free port (see on_listening)
  // Senders must prove they hold this key (read_key_file). Empty: any
  // sender is accepted, which only a loopback bind_address allows.
  std::string key;
  mode_t mode = 0600;  // permissions of a ring this side creates (within 0666)
  // The most a sender's ring may ask for; a sender beyond is refused. They
  // bound what a remote peer can make this side allocate in /dev/shm.
  std::uint64_t max_capacity = std::uint64_t{1} << 20;       // slots
  std::uint64_t max_slot_size = std::uint64_t{64} << 20;     // bytes
  std::uint64_t max_segment_bytes = std::uint64_t{1} << 30;  // bytes of the whole ring
  // Bytes of one network message at most; caps the batch the sender may use.
  std::size_t max_message_bytes = std::size_t{64} << 20;
  std::chrono::microseconds idle_spin{200};
  LogFn log;
  std::function<void(std::uint16_t port)> on_listening;  // once, with the port bound
  std::chrono::milliseconds stats_interval{0};
  std::function<void(const BridgeStats&)> on_stats;
};

// Drains options.ring to the receiver until `stop` is requested (returns
// normally) or a fatal error (throws BridgeError). Lost connections are
// reported through options.log and retried.
BridgeStats run_sender(const SenderOptions& options, std::stop_token stop);

// Accepts senders on options.port and fills options.ring (created with the
// first sender's geometry if missing) until `stop` is requested. One stream
// at a time: while one sender's stream lives, a sender of another stream is
// refused (the same stream reconnecting takes its connection over). A
// sender without the key, whose ring does not fit (another kind, a larger
// slot size) or exceeds the limits, or that speaks another protocol is
// refused with a reason it can report; the receiver goes on listening.
// Throws BridgeError only for local failures.
BridgeStats run_receiver(const ReceiverOptions& options, std::stop_token stop);

}  // namespace shmring::bridge
