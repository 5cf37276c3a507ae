// HMAC-SHA256 of the bridge's challenge-response against published vectors:
// SHA-256 from FIPS 180-4's examples, HMAC-SHA256 from RFC 4231.
#include <gtest/gtest.h>

#include <string>
#include <string_view>
#include <vector>

#include "bridge/hmac.hpp"

namespace shmring::test {
namespace {

using bridge::detail::Digest;

std::vector<std::uint8_t> bytes(std::string_view s) { return {s.begin(), s.end()}; }

std::vector<std::uint8_t> unhex(std::string_view hex) {
  std::vector<std::uint8_t> out;
  for (std::size_t i = 0; i + 1 < hex.size(); i += 2) {
    out.push_back(static_cast<std::uint8_t>(std::stoi(std::string(hex.substr(i, 2)), nullptr, 16)));
  }
  return out;
}

std::string hex(std::span<const std::uint8_t> data) {
  static constexpr char kDigits[] = "0123456789abcdef";
  std::string out;
  for (std::uint8_t b : data) {
    out += kDigits[b >> 4];
    out += kDigits[b & 15];
  }
  return out;
}

TEST(Sha256, FipsExamples) {
  EXPECT_EQ(hex(bridge::detail::sha256(bytes(""))),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
  EXPECT_EQ(hex(bridge::detail::sha256(bytes("abc"))),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  EXPECT_EQ(hex(bridge::detail::sha256(
                bytes("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq"))),
            "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1");
  // A million 'a', fed in uneven pieces across block boundaries.
  bridge::detail::Sha256 s;
  const std::vector<std::uint8_t> piece(997, 'a');
  std::size_t left = 1'000'000;
  while (left > 0) {
    const std::size_t n = std::min(left, piece.size());
    s.update(std::span(piece).first(n));
    left -= n;
  }
  EXPECT_EQ(hex(s.finish()), "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0");
}

struct Rfc4231Case {
  const char* name;
  std::vector<std::uint8_t> key;
  std::vector<std::uint8_t> data;
  const char* mac;  // hex; test case 5 gives only the first 128 bits
};

TEST(HmacSha256, Rfc4231TestCases) {
  const std::vector<Rfc4231Case> cases = {
      {"1", std::vector<std::uint8_t>(20, 0x0b), bytes("Hi There"),
       "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7"},
      {"2", bytes("Jefe"), bytes("what do ya want for nothing?"),
       "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"},
      {"3", std::vector<std::uint8_t>(20, 0xaa), std::vector<std::uint8_t>(50, 0xdd),
       "773ea91e36800e46854db8ebd09181a72959098b3ef8c122d9635514ced565fe"},
      {"4", unhex("0102030405060708090a0b0c0d0e0f10111213141516171819"),
       std::vector<std::uint8_t>(50, 0xcd),
       "82558a389a443c0ea4cc819899f2083a85f0faa3e578f8077a2e3ff46729665b"},
      {"5", std::vector<std::uint8_t>(20, 0x0c), bytes("Test With Truncation"),
       "a3b6167473100ee06e0c796c2955552b"},
      {"6", std::vector<std::uint8_t>(131, 0xaa),
       bytes("Test Using Larger Than Block-Size Key - Hash Key First"),
       "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54"},
      {"7", std::vector<std::uint8_t>(131, 0xaa),
       bytes("This is a test using a larger than block-size key and a larger than block-size "
             "data. The key needs to be hashed before being used by the HMAC algorithm."),
       "9b09ffa71b942fcb27635fbcd5b0e944bfdc63644f0713938a7f51535c3a35e2"},
  };
  for (const Rfc4231Case& c : cases) {
    const std::string mac = hex(bridge::detail::hmac_sha256(c.key, c.data));
    EXPECT_EQ(mac.substr(0, std::string_view(c.mac).size()), c.mac) << "test case " << c.name;
  }
}

TEST(HmacSha256, MessageInPartsEqualsMessageWhole) {
  const auto key = bytes("key");
  const auto whole = bytes("nonce|epoch|stream");
  bridge::detail::HmacSha256 h(key);
  h.update(std::span(whole).first(6));
  h.update(std::span(whole).subspan(6));
  EXPECT_EQ(h.finish(), bridge::detail::hmac_sha256(key, whole));
}

TEST(HmacSha256, EqualConstantTime) {
  const Digest a = bridge::detail::sha256(bytes("a"));
  Digest b = a;
  EXPECT_TRUE(bridge::detail::equal_constant_time(a, b));
  b[31] ^= 1;
  EXPECT_FALSE(bridge::detail::equal_constant_time(a, b));
  b = a;
  b[0] ^= 0x80;
  EXPECT_FALSE(bridge::detail::equal_constant_time(a, b));
  EXPECT_FALSE(bridge::detail::equal_constant_time(a, std::span(a).first(31)));
}

}  // namespace
}  // namespace shmring::test
