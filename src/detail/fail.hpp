// How the cold paths carry a failure to the throwing and the error_code
// forms of a call: a code plus a message naming the segment and the check.
#pragma once

#include <string>
#include <string_view>
#include <system_error>

#include "shmring/error.hpp"

namespace shmring::detail {

struct Failure {
  std::error_code code;
  std::string message;

  explicit operator bool() const noexcept { return static_cast<bool>(code); }
  void report(std::error_code& ec) const;  // sets ec and last_error_message()
  [[noreturn]] void raise() const;         // throws shmring::Error
};

inline Failure fail(std::error_code code, std::string_view segment, std::string_view what) {
  std::string m = "segment '";
  m += segment;
  m += "': ";
  m += what;
  return Failure{code, std::move(m)};
}

inline Failure fail_errno(int err, std::string_view segment, std::string_view what) {
  return fail(std::error_code(err, std::system_category()), segment, what);
}

// Runs `body(Failure&)` and delivers its result the throwing way.
template <class Body>
auto or_throw(Body&& body) {
  Failure f;
  auto result = body(f);
  if (f) f.raise();
  return result;
}

// ... or the error_code way.
template <class Body>
auto or_report(std::error_code& ec, Body&& body) {
  Failure f;
  auto result = body(f);
  if (f) {
    f.report(ec);
  } else {
    ec.clear();
  }
  return result;
}

}  // namespace shmring::detail
