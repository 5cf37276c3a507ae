#include "bridge/ucx.hpp"

#include <netdb.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <time.h>

#include <chrono>
#include <cstdlib>
#include <cstring>
#include <string>

#include "shmring/bridge.hpp"

namespace shmring::bridge::detail {
namespace {

std::string status_text(ucs_status_t status) { return ucs_status_string(status); }

// How long settle() and a close wait for UCX before they give an operation
// up (far longer than any operation on a live or properly failed connection).
constexpr auto kGiveUpAfter = std::chrono::seconds(3);

void on_send_done(void* /*request*/, ucs_status_t status, void* user_data) {
  auto* c = static_cast<Completion*>(user_data);
  c->status = status;
  c->pending = false;
}

void on_recv_done(void* /*request*/, ucs_status_t status, const ucp_tag_recv_info_t* info,
                  void* user_data) {
  auto* c = static_cast<Completion*>(user_data);
  c->status = status;
  c->length = status == UCS_OK && info != nullptr ? info->length : 0;
  c->pending = false;
}

// Records the outcome of a *_nbx call: done at once, failed at once, or in
// flight (the callback finishes it).
void track(ucs_status_ptr_t r, Completion& c) noexcept {
  if (r == nullptr) {
    c.status = UCS_OK;
    c.pending = false;
  } else if (UCS_PTR_IS_ERR(r)) {
    c.status = UCS_PTR_STATUS(r);
    c.pending = false;
  } else {
    c.request = r;
  }
}

struct AddrInfo {
  addrinfo* list = nullptr;
  ~AddrInfo() {
    if (list != nullptr) freeaddrinfo(list);
  }
};

// Resolves host:port (numeric or by name); throws `errc` naming the address.
AddrInfo resolve(const std::string& host, std::uint16_t port, bool passive, BridgeErrc errc) {
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  if (passive) hints.ai_flags = AI_PASSIVE;
  AddrInfo result;
  const std::string service = std::to_string(port);
  const int rc =
      getaddrinfo(host.empty() ? nullptr : host.c_str(), service.c_str(), &hints, &result.list);
  if (rc != 0 || result.list == nullptr) {
    throw BridgeError(errc, "cannot resolve '" + host + ":" + service + "': " + gai_strerror(rc));
  }
  return result;
}

std::string format_address(const sockaddr* addr, socklen_t length) {
  char host[NI_MAXHOST] = "?";
  char service[NI_MAXSERV] = "?";
  getnameinfo(addr, length, host, sizeof host, service, sizeof service,
              NI_NUMERICHOST | NI_NUMERICSERV);
  return std::string(host) + ":" + service;
}

}  // namespace

Worker::Worker() {
  // A restarted receiver must get its port back at once, although the
  // connections of the one it replaces still linger in TIME_WAIT. UCX reads
  // this transport option from the environment only; a value the user set
  // there is kept.
  ::setenv("UCX_TCP_CM_REUSEADDR", "y", 0);
  ucp_config_t* config = nullptr;
  ucs_status_t status = ucp_config_read(nullptr, nullptr, &config);
  if (status != UCS_OK) {
    throw BridgeError(BridgeErrc::transport,
                      "UCX: reading the configuration failed: " + status_text(status));
  }
  ucp_params_t params{};
  params.field_mask = UCP_PARAM_FIELD_FEATURES;
  params.features = UCP_FEATURE_TAG | UCP_FEATURE_WAKEUP;
  status = ucp_init(&params, config, &context_);
  ucp_config_release(config);
  if (status != UCS_OK) {
    throw BridgeError(BridgeErrc::transport, "UCX: ucp_init failed: " + status_text(status));
  }
  ucp_worker_params_t worker_params{};
  worker_params.field_mask = UCP_WORKER_PARAM_FIELD_THREAD_MODE;
  worker_params.thread_mode = UCS_THREAD_MODE_SINGLE;
  status = ucp_worker_create(context_, &worker_params, &worker_);
  if (status != UCS_OK) {
    ucp_cleanup(context_);
    throw BridgeError(BridgeErrc::transport,
                      "UCX: creating a worker failed: " + status_text(status));
  }
}

Worker::~Worker() {
  ucp_worker_destroy(worker_);
  ucp_cleanup(context_);
}

void Worker::send(ucp_ep_h ep, const ucp_dt_iov_t* iov, std::size_t count, std::uint64_t tag,
                  Completion& c) noexcept {
  ucp_request_param_t param{};
  param.op_attr_mask =
      UCP_OP_ATTR_FIELD_CALLBACK | UCP_OP_ATTR_FIELD_USER_DATA | UCP_OP_ATTR_FIELD_DATATYPE;
  param.cb.send = on_send_done;
  param.user_data = &c;
  param.datatype = ucp_dt_make_iov();
  c = Completion{};
  c.pending = true;
  track(ucp_tag_send_nbx(ep, iov, count, tag, &param), c);
}

void Worker::send(ucp_ep_h ep, const void* buffer, std::size_t bytes, std::uint64_t tag,
                  Completion& c) noexcept {
  ucp_request_param_t param{};
  param.op_attr_mask = UCP_OP_ATTR_FIELD_CALLBACK | UCP_OP_ATTR_FIELD_USER_DATA;
  param.cb.send = on_send_done;
  param.user_data = &c;
  c = Completion{};
  c.pending = true;
  track(ucp_tag_send_nbx(ep, buffer, bytes, tag, &param), c);
}

void Worker::recv(void* buffer, std::size_t bytes, std::uint64_t tag, std::uint64_t mask,
                  Completion& c) noexcept {
  ucp_request_param_t param{};
  // Always through the callback, so `length` is set in one place.
  param.op_attr_mask =
      UCP_OP_ATTR_FIELD_CALLBACK | UCP_OP_ATTR_FIELD_USER_DATA | UCP_OP_ATTR_FLAG_NO_IMM_CMPL;
  param.cb.recv = on_recv_done;
  param.user_data = &c;
  c = Completion{};
  c.pending = true;
  track(ucp_tag_recv_nbx(worker_, buffer, bytes, tag, mask, &param), c);
}

void Worker::cancel(Completion& c) noexcept {
  if (c.pending && c.request != nullptr) ucp_request_cancel(worker_, c.request);
}

void Worker::settle(Completion& c) noexcept {
  const auto start = std::chrono::steady_clock::now();
  auto asked = start;
  while (c.pending) {
    progress();
    const auto now = std::chrono::steady_clock::now();
    if (now - start > kGiveUpAfter && c.request != nullptr) {
      // A send on a connection that died without UCX completing it (seen
      // when a cable is cut): freed requests get no callback, so `c` is
      // ours again; UCX may still read the buffer of a send, never write.
      c.status = UCS_ERR_TIMED_OUT;
      c.pending = false;
      break;
    }
    // A cancel that raced with the operation's start is asked again.
    if (now - asked > std::chrono::seconds(1)) {
      cancel(c);
      asked = now;
    }
  }
  if (c.request != nullptr) {
    ucp_request_free(c.request);
    c.request = nullptr;
  }
}

void Worker::wait(std::chrono::microseconds timeout) noexcept {
  if (event_fd_ == -1 && ucp_worker_get_efd(worker_, &event_fd_) != UCS_OK) event_fd_ = -2;
  const auto us = timeout.count();
  const timespec step{static_cast<time_t>(us / 1'000'000),
                      static_cast<long>(us % 1'000'000) * 1000};
  if (event_fd_ < 0) {
    nanosleep(&step, nullptr);
    return;
  }
  // Arming fails with BUSY while events wait to be progressed.
  if (ucp_worker_arm(worker_) == UCS_ERR_BUSY) return;
  pollfd p{event_fd_, POLLIN, 0};
  ppoll(&p, 1, &step, nullptr);
}

std::unique_ptr<Endpoint> Endpoint::connect(Worker& worker, const std::string& host,
                                            std::uint16_t port) {
  const AddrInfo address = resolve(host, port, false, BridgeErrc::unreachable);
  std::unique_ptr<Endpoint> ep(new Endpoint(worker));
  ep->peer_ = host + ":" + std::to_string(port);
  ucp_ep_params_t params{};
  params.field_mask = UCP_EP_PARAM_FIELD_FLAGS | UCP_EP_PARAM_FIELD_SOCK_ADDR |
                      UCP_EP_PARAM_FIELD_ERR_HANDLING_MODE | UCP_EP_PARAM_FIELD_ERR_HANDLER;
  params.flags = UCP_EP_PARAMS_FLAGS_CLIENT_SERVER;
  params.sockaddr.addr = address.list->ai_addr;
  params.sockaddr.addrlen = address.list->ai_addrlen;
  params.err_mode = UCP_ERR_HANDLING_MODE_PEER;
  params.err_handler.cb = &Endpoint::on_error;
  params.err_handler.arg = ep.get();
  const ucs_status_t status = ucp_ep_create(worker.handle(), &params, &ep->ep_);
  if (status != UCS_OK) {
    throw BridgeError(BridgeErrc::unreachable,
                      "UCX: connecting to " + ep->peer_ + " failed: " + status_text(status));
  }
  return ep;
}

std::unique_ptr<Endpoint> Endpoint::accept(Worker& worker, ucp_conn_request_h request) {
  std::unique_ptr<Endpoint> ep(new Endpoint(worker));
  ep->peer_ = client_address(request);
  ucp_ep_params_t params{};
  params.field_mask = UCP_EP_PARAM_FIELD_CONN_REQUEST | UCP_EP_PARAM_FIELD_ERR_HANDLING_MODE |
                      UCP_EP_PARAM_FIELD_ERR_HANDLER;
  params.conn_request = request;
  params.err_mode = UCP_ERR_HANDLING_MODE_PEER;
  params.err_handler.cb = &Endpoint::on_error;
  params.err_handler.arg = ep.get();
  const ucs_status_t status = ucp_ep_create(worker.handle(), &params, &ep->ep_);
  if (status != UCS_OK) {
    throw BridgeError(BridgeErrc::transport, "UCX: accepting a connection from " + ep->peer_ +
                                                 " failed: " + status_text(status));
  }
  return ep;
}

void Endpoint::on_error(void* arg, ucp_ep_h /*ep*/, ucs_status_t status) {
  static_cast<Endpoint*>(arg)->failure_ = status == UCS_OK ? UCS_ERR_CONNECTION_RESET : status;
}

Endpoint::~Endpoint() {
  if (ep_ == nullptr) return;
  // Forced: a graceful close waits for the peer, which may be gone. Sends
  // still in flight complete with an error.
  ucp_request_param_t param{};
  param.op_attr_mask = UCP_OP_ATTR_FIELD_FLAGS;
  param.flags = UCP_EP_CLOSE_FLAG_FORCE;
  ucs_status_ptr_t r = ucp_ep_close_nbx(ep_, &param);
  if (r != nullptr && !UCS_PTR_IS_ERR(r)) {
    // Bounded: the close of a connection whose peer vanished without a reset
    // may never complete; freeing the request leaves the rest to UCX.
    const auto start = std::chrono::steady_clock::now();
    while (ucp_request_check_status(r) == UCS_INPROGRESS &&
           std::chrono::steady_clock::now() - start < kGiveUpAfter) {
      worker_.progress();
    }
    ucp_request_free(r);
  }
}

Listener::Listener(Worker& worker, const std::string& bind_address, std::uint16_t port) {
  const AddrInfo address = resolve(bind_address, port, true, BridgeErrc::transport);
  ucp_listener_params_t params{};
  params.field_mask = UCP_LISTENER_PARAM_FIELD_SOCK_ADDR | UCP_LISTENER_PARAM_FIELD_CONN_HANDLER;
  params.sockaddr.addr = address.list->ai_addr;
  params.sockaddr.addrlen = address.list->ai_addrlen;
  params.conn_handler.cb = &Listener::on_request;
  params.conn_handler.arg = this;
  const ucs_status_t status = ucp_listener_create(worker.handle(), &params, &listener_);
  if (status != UCS_OK) {
    throw BridgeError(BridgeErrc::transport, "UCX: listening on " + bind_address + ":" +
                                                 std::to_string(port) +
                                                 " failed: " + status_text(status));
  }
  // The address actually bound decides what is loopback, not the name
  // asked for (which a resolver could map anywhere).
  ucp_listener_attr_t attr{};
  attr.field_mask = UCP_LISTENER_ATTR_FIELD_SOCKADDR;
  if (ucp_listener_query(listener_, &attr) == UCS_OK) {
    const auto* sa = reinterpret_cast<const sockaddr*>(&attr.sockaddr);
    if (sa->sa_family == AF_INET) {
      const auto* in = reinterpret_cast<const sockaddr_in*>(sa);
      port_ = ntohs(in->sin_port);
      loopback_ = (ntohl(in->sin_addr.s_addr) >> 24) == 127;
    } else if (sa->sa_family == AF_INET6) {
      const auto* in6 = reinterpret_cast<const sockaddr_in6*>(sa);
      port_ = ntohs(in6->sin6_port);
      loopback_ = IN6_IS_ADDR_LOOPBACK(&in6->sin6_addr) ||
                  (IN6_IS_ADDR_V4MAPPED(&in6->sin6_addr) && in6->sin6_addr.s6_addr[12] == 127);
    }
  }
  if (port_ == 0) port_ = port;
}

Listener::~Listener() {
  for (ucp_conn_request_h r : requests_) ucp_listener_reject(listener_, r);
  ucp_listener_destroy(listener_);
}

void Listener::on_request(ucp_conn_request_h request, void* arg) {
  static_cast<Listener*>(arg)->requests_.push_back(request);
}

ucp_conn_request_h Listener::take() noexcept {
  if (requests_.empty()) return nullptr;
  ucp_conn_request_h r = requests_.front();
  requests_.pop_front();
  return r;
}

void Listener::reject(ucp_conn_request_h request) noexcept {
  ucp_listener_reject(listener_, request);
}

std::string client_address(ucp_conn_request_h request) {
  ucp_conn_request_attr_t attr{};
  attr.field_mask = UCP_CONN_REQUEST_ATTR_FIELD_CLIENT_ADDR;
  if (ucp_conn_request_query(request, &attr) != UCS_OK) return "?";
  return format_address(reinterpret_cast<const sockaddr*>(&attr.client_address),
                        sizeof attr.client_address);
}

}  // namespace shmring::bridge::detail
