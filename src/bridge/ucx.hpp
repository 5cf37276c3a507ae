// A thin RAII layer over the part of UCX (UCP) the bridge uses: one context
// and worker per bridge, client-server endpoints over a socket address, and
// tagged sends and receives tracked by a Completion the caller owns.
// Single-threaded: everything, callbacks included, runs in the thread that
// calls progress().
#pragma once

#include <ucp/api/ucp.h>

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <memory>
#include <string>

namespace shmring::bridge::detail {

// One operation in flight. It must not move or die before done (the UCX
// callback writes into it); Worker::settle() waits for that.
struct Completion {
  bool pending = false;          // started and not done
  ucs_status_t status = UCS_OK;  // the result once done
  std::size_t length = 0;        // receives: bytes received
  void* request = nullptr;       // UCX's handle while pending
};

class Worker {
 public:
  Worker();  // throws BridgeError(transport)
  ~Worker();
  Worker(const Worker&) = delete;
  Worker& operator=(const Worker&) = delete;

  ucp_worker_h handle() const noexcept { return worker_; }
  unsigned progress() noexcept { return ucp_worker_progress(worker_); }

  // Starts a tagged send of `count` iov entries (or one contiguous buffer);
  // the buffers must stay valid until `c` is no longer pending.
  void send(ucp_ep_h ep, const ucp_dt_iov_t* iov, std::size_t count, std::uint64_t tag,
            Completion& c) noexcept;
  void send(ucp_ep_h ep, const void* buffer, std::size_t bytes, std::uint64_t tag,
            Completion& c) noexcept;
  // Starts a tagged receive into `buffer` of messages whose tag matches
  // `tag` under `mask`.
  void recv(void* buffer, std::size_t bytes, std::uint64_t tag, std::uint64_t mask,
            Completion& c) noexcept;
  // Asks UCX to give up on a pending operation; it completes (as cancelled)
  // during a later progress().
  void cancel(Completion& c) noexcept;
  // Progresses until `c` is done. UCX completes cancelled receives and the
  // sends of failed connections promptly; an operation still pending after
  // a few seconds (a connection cut without a reset) is freed and reported
  // as UCS_ERR_TIMED_OUT.
  void settle(Completion& c) noexcept;
  // Blocks until the network has something for this worker or `timeout`
  // passes (at once if events are pending). Call after progress() found
  // nothing to do.
  void wait(std::chrono::microseconds timeout) noexcept;

 private:
  ucp_context_h context_ = nullptr;
  ucp_worker_h worker_ = nullptr;
  int event_fd_ = -1;  // UCX's wakeup fd; -2 if the transports offer none
};

// A connection. Errors reported by UCX (peer gone, connection reset) arrive
// through the error handler and show in failed().
class Endpoint {
 public:
  // Starts connecting to host:port (the connection completes during
  // progress; the first send waits for it). Throws BridgeError(unreachable)
  // when the address cannot be resolved or UCX refuses at once.
  static std::unique_ptr<Endpoint> connect(Worker& worker, const std::string& host,
                                           std::uint16_t port);
  static std::unique_ptr<Endpoint> accept(Worker& worker, ucp_conn_request_h request);
  ~Endpoint();  // closes (forcibly if it failed) and waits for the close
  Endpoint(const Endpoint&) = delete;
  Endpoint& operator=(const Endpoint&) = delete;

  ucp_ep_h handle() const noexcept { return ep_; }
  bool failed() const noexcept { return failure_ != UCS_OK; }
  ucs_status_t failure() const noexcept { return failure_; }
  const std::string& peer() const noexcept { return peer_; }

 private:
  explicit Endpoint(Worker& worker) : worker_(worker) {}
  static void on_error(void* arg, ucp_ep_h ep, ucs_status_t status);

  Worker& worker_;
  ucp_ep_h ep_ = nullptr;
  ucs_status_t failure_ = UCS_OK;
  std::string peer_;
};

// Accepts connection requests on a socket address; they queue until taken.
class Listener {
 public:
  Listener(Worker& worker, const std::string& bind_address, std::uint16_t port);
  ~Listener();
  Listener(const Listener&) = delete;
  Listener& operator=(const Listener&) = delete;

  std::uint16_t port() const noexcept { return port_; }
  // Bound to a loopback address: only this host can connect.
  bool loopback() const noexcept { return loopback_; }
  // The oldest waiting connection request, or nullptr.
  ucp_conn_request_h take() noexcept;
  // Declines a request (the client's connection fails).
  void reject(ucp_conn_request_h request) noexcept;

 private:
  static void on_request(ucp_conn_request_h request, void* arg);

  ucp_listener_h listener_ = nullptr;
  std::uint16_t port_ = 0;
  bool loopback_ = false;
  std::deque<ucp_conn_request_h> requests_;
};

// "host:port" of a connection request's client, for logs.
std::string client_address(ucp_conn_request_h request);

}  // namespace shmring::bridge::detail
