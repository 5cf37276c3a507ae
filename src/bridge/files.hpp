// The small files a bridge reads and writes beside its ring and on its
// command line: the stream state in /dev/shm, the key file, the port file.
// They live in directories other users may write (/dev/shm, /tmp), so a
// name there is never trusted: nothing is followed through a symbolic link,
// nothing blocks on a FIFO planted under the name, and a file is written
// only under a fresh name of our own, then renamed into place.
#pragma once

#include <sys/types.h>

#include <cstddef>
#include <optional>
#include <string>
#include <string_view>

#include "shmring/bridge.hpp"

namespace shmring::bridge::detail {

enum class Secrecy { shared, secret };

// The contents of `path`, nullopt when there is none. Throws BridgeError
// (`code`: "<label> <path>: what is wrong") unless it is a regular file of
// this user's of at most `max_bytes`, and, when secret, one no group or other
// user may access.
std::optional<std::string> read_own_file(std::string_view label, const std::string& path,
                                         std::size_t max_bytes, Secrecy secrecy, BridgeErrc code);

// Replaces `path` with `contents` atomically: readers see the old file or
// the new one, never a part. Throws BridgeError(`code`) as read_own_file.
void replace_file(std::string_view label, const std::string& path, std::string_view contents,
                  mode_t mode, BridgeErrc code);

}  // namespace shmring::bridge::detail
