// The version macros a consumer sees through shmring/config.hpp are the ones
// CMakeLists.txt's project(VERSION) declares (passed in by tests/CMakeLists.txt).
#include <gtest/gtest.h>

#include <string>

#include "shmring/config.hpp"

namespace {

#define SHMRING_TEST_STR2(x) #x
#define SHMRING_TEST_STR(x) SHMRING_TEST_STR2(x)

TEST(Version, HeaderMatchesProjectVersion) {
  const std::string header = SHMRING_TEST_STR(SHMRING_VERSION_MAJOR) "." SHMRING_TEST_STR(
      SHMRING_VERSION_MINOR) "." SHMRING_TEST_STR(SHMRING_VERSION_PATCH);
  EXPECT_EQ(header, SHMRING_PROJECT_VERSION);
}

}  // namespace
