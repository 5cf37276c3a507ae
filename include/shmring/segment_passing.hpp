// Handing a segment to another process as a descriptor, over a connected
// Unix socket (SCM_RIGHTS): the way to share a sealed segment
// (Segment::create_sealed), which has no name to open, and a way to share a
// named one with a process that may not open it by name.
#pragma once

#include <system_error>

#include "shmring/segment.hpp"

namespace shmring {

// Sends the segment's descriptor (and one byte) over `socket`.
void send_segment(int socket, const Segment& segment);
bool send_segment(int socket, const Segment& segment, std::error_code& ec);

// Receives a descriptor sent by send_segment and maps it with
// Segment::open_fd(options); the received descriptor is closed either way.
// errc::not_a_segment if the message carries no descriptor (or the peer
// closed the socket).
Segment receive_segment(int socket, const OpenOptions& options = {});
Segment receive_segment(int socket, const OpenOptions& options, std::error_code& ec);

}  // namespace shmring
