#include "shmring/segment_passing.hpp"

#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <string>

#include "detail/fail.hpp"

namespace shmring {
namespace {

using detail::fail;
using detail::fail_errno;
using detail::Failure;

// One byte of payload (a stream socket carries no message without one) and
// room for one descriptor: what both ends exchange.
struct FdMessage {
  char byte = 'S';
  iovec iov{&byte, 1};
  alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int))] = {};
  msghdr msg{};

  FdMessage() noexcept {
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control;
    msg.msg_controllen = sizeof control;
  }
  FdMessage(const FdMessage&) = delete;
  FdMessage& operator=(const FdMessage&) = delete;
};

bool do_send(int socket, const Segment& segment, Failure& f) {
  if (!segment) {
    f = fail(errc::no_segment, "", "cannot send an empty Segment");
    return false;
  }
  FdMessage m;
  msghdr& msg = m.msg;
  cmsghdr* c = CMSG_FIRSTHDR(&msg);
  c->cmsg_level = SOL_SOCKET;
  c->cmsg_type = SCM_RIGHTS;
  c->cmsg_len = CMSG_LEN(sizeof(int));
  const int fd = segment.fd();
  std::memcpy(CMSG_DATA(c), &fd, sizeof fd);
  ssize_t n;
  do {
    n = ::sendmsg(socket, &msg, MSG_NOSIGNAL);
  } while (n < 0 && errno == EINTR);
  if (n != 1) {
    f = fail_errno(
        n < 0 ? errno : EIO, segment.name(),
        std::string("cannot send the segment's descriptor: ") + std::strerror(n < 0 ? errno : EIO));
    return false;
  }
  return true;
}

Segment do_receive(int socket, const OpenOptions& options, Failure& f) {
  FdMessage m;
  msghdr& msg = m.msg;
  ssize_t n;
  do {
    n = ::recvmsg(socket, &msg, MSG_CMSG_CLOEXEC);
  } while (n < 0 && errno == EINTR);
  if (n < 0) {
    f = fail_errno(errno, "", std::string("cannot receive a segment: ") + std::strerror(errno));
    return {};
  }
  int fd = -1;
  for (cmsghdr* c = CMSG_FIRSTHDR(&msg); c != nullptr; c = CMSG_NXTHDR(&msg, c)) {
    if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_RIGHTS &&
        c->cmsg_len == CMSG_LEN(sizeof(int))) {
      std::memcpy(&fd, CMSG_DATA(c), sizeof fd);
    }
  }
  if (fd < 0) {
    f = fail(errc::not_a_segment, "",
             n == 0 ? "the peer closed the socket before sending a segment"
                    : "the message carried no descriptor");
    return {};
  }
  std::error_code ec;
  Segment s = Segment::open_fd(fd, options, ec);
  ::close(fd);
  if (ec) f = Failure{ec, last_error_message()};
  return s;
}

}  // namespace

void send_segment(int socket, const Segment& segment) {
  detail::or_throw([&](Failure& f) { return do_send(socket, segment, f); });
}
bool send_segment(int socket, const Segment& segment, std::error_code& ec) {
  return detail::or_report(ec, [&](Failure& f) { return do_send(socket, segment, f); });
}
Segment receive_segment(int socket, const OpenOptions& options) {
  return detail::or_throw([&](Failure& f) { return do_receive(socket, options, f); });
}
Segment receive_segment(int socket, const OpenOptions& options, std::error_code& ec) {
  return detail::or_report(ec, [&](Failure& f) { return do_receive(socket, options, f); });
}

}  // namespace shmring
