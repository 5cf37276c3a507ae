// HMAC-SHA256 (RFC 2104 over FIPS 180-4), for the bridge's challenge-
// response: small and self-contained, so the bridge needs no crypto
// library. Checked against the RFC 4231 test vectors (tests/test_hmac.cpp).
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <span>

namespace shmring::bridge::detail {

using Digest = std::array<std::uint8_t, 32>;

class Sha256 {
 public:
  Sha256() noexcept;
  void update(std::span<const std::uint8_t> data) noexcept;
  Digest finish() noexcept;  // once

 private:
  void block(const std::uint8_t* p) noexcept;

  std::array<std::uint32_t, 8> h_;
  std::array<std::uint8_t, 64> buffer_{};
  std::size_t buffered_ = 0;
  std::uint64_t length_ = 0;  // bytes
};

Digest sha256(std::span<const std::uint8_t> data) noexcept;

// Feeds the message in parts, so a caller need not concatenate them.
class HmacSha256 {
 public:
  explicit HmacSha256(std::span<const std::uint8_t> key) noexcept;
  void update(std::span<const std::uint8_t> data) noexcept { inner_.update(data); }
  Digest finish() noexcept;

 private:
  Sha256 inner_;
  std::array<std::uint8_t, 64> outer_pad_{};
};

Digest hmac_sha256(std::span<const std::uint8_t> key,
                   std::span<const std::uint8_t> message) noexcept;

// Takes as long whichever byte differs, so a peer timing the comparison of
// its guess learns nothing about the expected value.
bool equal_constant_time(std::span<const std::uint8_t> a, std::span<const std::uint8_t> b) noexcept;

}  // namespace shmring::bridge::detail
