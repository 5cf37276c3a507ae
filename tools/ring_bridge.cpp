// ring-bridge: carries an SPSC ring to another host over UCX.
//
//   ring-bridge recv --listen ADDRESS:PORT --key-file KEY --ring NAME   (consuming host)
//   ring-bridge send --ring NAME --to HOST:PORT --key-file KEY          (producing host)
//
// Exit status: 0 stopped by SIGINT/SIGTERM, 1 the bridge failed (refused by
// the far side, a ring problem, a protocol error, an unusable option or
// file), 2 bad command line, 3 no receiver reachable within --attempts.
#include <fmt/core.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/stat.h>

#include <CLI/CLI.hpp>
#include <chrono>
#include <cstdio>
#include <stop_token>
#include <string>
#include <thread>

#include "bridge/files.hpp"
#include "shmring/bridge.hpp"
#include "stop_signals.hpp"

namespace {

namespace bridge = shmring::bridge;
namespace tools = shmring::tools;

void log_line(const char* role, std::string_view line) {
  const auto now = std::chrono::system_clock::now();
  const std::time_t t = std::chrono::system_clock::to_time_t(now);
  std::tm tm{};
  gmtime_r(&t, &tm);
  const auto ms =
      std::chrono::duration_cast<std::chrono::milliseconds>(now.time_since_epoch()).count() % 1000;
  fmt::print(stderr, "{:02}:{:02}:{:02}.{:03} ring-bridge {}: {}\n", tm.tm_hour, tm.tm_min,
             tm.tm_sec, ms, role, line);
  std::fflush(stderr);
}

// SIGINT and SIGTERM become a stop request: blocked in every thread (the
// watcher is started after they are blocked, the bridge's threads later still),
// taken by the watcher, so the bridge loop sees a plain stop_token.
class SignalStop {
 public:
  SignalStop()
      : watcher_([this](std::stop_token self) {
          while (!self.stop_requested()) {
            if (signals_.wait_for(std::chrono::milliseconds(100))) {
              source_.request_stop();
              return;
            }
          }
        }) {}
  std::stop_token token() const { return source_.get_token(); }

 private:
  tools::StopSignals signals_{SIGINT, SIGTERM};
  std::stop_source source_;
  std::jthread watcher_;
};

std::string rate_line(const bridge::BridgeStats& now, const bridge::BridgeStats& before,
                      double seconds) {
  const double msgs = static_cast<double>(now.messages - before.messages) / seconds;
  const double mb = static_cast<double>(now.bytes - before.bytes) / seconds / 1e6;
  return fmt::format(
      "{} messages ({:.0f}/s, {:.1f} MB/s), {} batches, committed through {}, "
      "{} connections, {} lost",
      now.messages, msgs, mb, now.batches, now.committed_through, now.connections,
      now.connection_losses);
}

int exit_code(const bridge::BridgeError& e) {
  return e.code() == bridge::BridgeErrc::unreachable ? 3 : 1;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{
      "ring-bridge: carry an SPSC shmring ring to another host over UCX.\n"
      "Start the receiver on the consuming host, then the sender on the producing host.\n"
      "Between hosts, give both the same key file: the receiver accepts only senders\n"
      "that prove they hold it, and one sender per stream.\n"
      "Messages keep their order and boundaries, are delivered exactly once across\n"
      "dropped connections and restarts of either bridge, and a slow far consumer\n"
      "holds the local producer back instead of losing data.\n"
      "Exit status: 0 stopped by a signal, 1 failed, 2 bad usage, 3 receiver unreachable."};
  app.require_subcommand(1);

  bridge::SenderOptions send;
  std::string to;
  std::string key_file;
  unsigned stats_ms = 0;
  unsigned idle_spin_us = 200;
  int attempts = -1;
  unsigned connect_timeout_ms = 3000;
  unsigned peer_timeout_ms = 10000;
  auto* send_cmd = app.add_subcommand("send", "drain a local ring and send its messages");
  send_cmd->add_option("--ring", send.ring, "local SPSC ring to drain (its consumer role)")
      ->required();
  send_cmd->add_option("--to", to, "the receiving bridge, HOST:PORT")->required();
  send_cmd->add_option("--key-file", key_file,
                       "prove to the receiver that this side holds the key in this file "
                       "(private: mode 0600, this user's)");
  send_cmd->add_option("--batch", send.max_batch, "messages per network message (default 64)")
      ->check(CLI::Range(std::size_t{1}, std::size_t{4096}));
  send_cmd->add_option("--window", send.window,
                       "messages in flight before an acknowledgement (default 4 batches)");
  send_cmd->add_option("--attempts", attempts,
                       "give up after N failed connection attempts in a row (default: never)");
  send_cmd->add_option("--connect-timeout", connect_timeout_ms,
                       "ms to wait for the receiver's answer per attempt (default 3000)");
  send_cmd
      ->add_option("--peer-timeout", peer_timeout_ms,
                   "ms without word from the receiver, messages in flight, before the "
                   "connection is made anew (default 10000)")
      ->check(CLI::Range(500u, 3600000u));
  send_cmd->add_option("--stats", stats_ms, "print counters every MS milliseconds");
  send_cmd->add_option("--idle-spin", idle_spin_us,
                       "us to keep polling when idle before blocking (default 200; more: lower "
                       "latency, a busier core)");

  bridge::ReceiverOptions recv;
  std::string listen;
  std::string port_file;
  std::string mode_text = "0600";
  auto* recv_cmd = app.add_subcommand("recv", "receive messages into a local ring");
  recv_cmd
      ->add_option("--listen", listen,
                   "[ADDRESS:]PORT to listen on (PORT 0: any free port); ADDRESS is 127.0.0.1 "
                   "unless given, and any but a loopback address needs --key-file")
      ->required();
  recv_cmd->add_option("--key-file", key_file,
                       "accept only senders that prove they hold the key in this file (private: "
                       "mode 0600, this user's; 16 bytes or more, e.g. from /dev/urandom)");
  recv_cmd
      ->add_option("--ring", recv.ring,
                   "local SPSC ring to fill (its producer role); created with the "
                   "sender's geometry if missing")
      ->required();
  recv_cmd->add_option("--mode", mode_text,
                       "permissions of a ring this side creates, within 0666 (default 0600)");
  recv_cmd->add_option("--max-capacity", recv.max_capacity,
                       "refuse a sender whose ring has more slots (default 1048576)");
  recv_cmd
      ->add_option("--max-slot-size", recv.max_slot_size,
                   "refuse a sender whose ring has larger slots, bytes (default 64MiB)")
      ->transform(CLI::AsSizeValue(false));
  recv_cmd
      ->add_option("--max-segment-bytes", recv.max_segment_bytes,
                   "refuse a sender whose ring would take more of /dev/shm here (default 1GiB)")
      ->transform(CLI::AsSizeValue(false));
  recv_cmd->add_option("--port-file", port_file,
                       "write the port listened on to this file (replaced whole, links not "
                       "followed; exit status 1 if it cannot be written)");
  recv_cmd->add_option("--stats", stats_ms, "print counters every MS milliseconds");
  recv_cmd->add_option("--idle-spin", idle_spin_us,
                       "us to keep polling when idle before blocking (default 200)");

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e) == 0 ? 0 : 2;
  }

  // An idle bridge polls in short sleeps; the default 50 us timer slack
  // would stretch each one and add to every message's latency.
  prctl(PR_SET_TIMERSLACK, 1000UL, 0, 0, 0);
  SignalStop signals;
  bridge::BridgeStats last;
  auto last_time = std::chrono::steady_clock::now();
  const char* role = send_cmd->parsed() ? "send" : "recv";
  auto on_stats = [&](const bridge::BridgeStats& s) {
    const auto now = std::chrono::steady_clock::now();
    const double seconds = std::chrono::duration<double>(now - last_time).count();
    log_line(role, rate_line(s, last, seconds > 0 ? seconds : 1));
    last = s;
    last_time = now;
  };
  try {
    if (!key_file.empty()) send.key = recv.key = bridge::read_key_file(key_file);
    if (send_cmd->parsed()) {
      const auto colon = to.rfind(':');
      unsigned long port = 0;
      try {
        port = colon == std::string::npos ? 0 : std::stoul(to.substr(colon + 1));
      } catch (const std::exception&) {
      }
      if (colon == std::string::npos || colon == 0 || port == 0 || port > 65535) {
        fmt::print(stderr, "ring-bridge send: --to wants HOST:PORT, got '{}'\n", to);
        return 2;
      }
      send.host = to.substr(0, colon);
      if (send.host.size() > 2 && send.host.front() == '[' && send.host.back() == ']') {
        send.host = send.host.substr(1, send.host.size() - 2);  // [IPv6]:PORT
      }
      send.port = static_cast<std::uint16_t>(port);
      send.max_attempts = attempts;
      send.connect_timeout = std::chrono::milliseconds(connect_timeout_ms);
      send.peer_timeout = std::chrono::milliseconds(peer_timeout_ms);
      send.idle_spin = std::chrono::microseconds(idle_spin_us);
      send.log = [](std::string_view line) { log_line("send", line); };
      send.stats_interval = std::chrono::milliseconds(stats_ms);
      send.on_stats = on_stats;
      const bridge::BridgeStats s = bridge::run_sender(send, signals.token());
      log_line("send", fmt::format("stopped: {} messages delivered, {} connections, {} lost",
                                   s.messages, s.connections, s.connection_losses));
    } else {
      const auto colon = listen.rfind(':');
      const std::string port_text = colon == std::string::npos ? listen : listen.substr(colon + 1);
      if (colon != std::string::npos) recv.bind_address = listen.substr(0, colon);
      unsigned long port = 0;
      try {
        std::size_t used = 0;
        port = std::stoul(port_text, &used);
        if (used != port_text.size()) port = 65536;
      } catch (const std::exception&) {
        port = 65536;
      }
      if (port > 65535) {
        fmt::print(stderr, "ring-bridge recv: --listen wants [ADDRESS:]PORT, got '{}'\n", listen);
        return 2;
      }
      recv.port = static_cast<std::uint16_t>(port);
      try {
        std::size_t used = 0;
        const unsigned long mode = std::stoul(mode_text, &used, 8);
        if (used != mode_text.size() || mode > 0777) throw std::invalid_argument("mode");
        recv.mode = static_cast<mode_t>(mode);
      } catch (const std::exception&) {
        fmt::print(stderr, "ring-bridge recv: --mode wants octal permissions, got '{}'\n",
                   mode_text);
        return 2;
      }
      recv.idle_spin = std::chrono::microseconds(idle_spin_us);
      recv.log = [](std::string_view line) { log_line("recv", line); };
      recv.stats_interval = std::chrono::milliseconds(stats_ms);
      recv.on_stats = on_stats;
      recv.on_listening = [&](std::uint16_t bound) {
        if (port_file.empty()) return;
        // Port files go to shared directories such as /tmp, where another
        // user may have planted anything under a predictable name.
        bridge::detail::replace_file("port file", port_file, std::to_string(bound) + "\n", 0644,
                                     bridge::BridgeErrc::config);
      };
      const bridge::BridgeStats s = bridge::run_receiver(recv, signals.token());
      log_line("recv", "stopped: " + std::to_string(s.messages) + " messages received");
    }
  } catch (const bridge::BridgeError& e) {
    log_line(role, std::string("error (") + bridge::to_string(e.code()) + "): " + e.what());
    return exit_code(e);
  }
  return 0;
}
