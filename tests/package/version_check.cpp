// Compiled only when tests/package/CMakeLists.txt knows the expected version.
#include <shmring/config.hpp>

static_assert(SHMRING_VERSION_MAJOR == EXPECTED_MAJOR, "installed header: wrong major version");
static_assert(SHMRING_VERSION_MINOR == EXPECTED_MINOR, "installed header: wrong minor version");
static_assert(SHMRING_VERSION_PATCH == EXPECTED_PATCH, "installed header: wrong patch version");
