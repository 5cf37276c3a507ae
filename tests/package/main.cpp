// Creates a ring, pushes one message, pops it and checks it: proof that the
// headers, the library and its link dependencies reach a consumer project.
#include <unistd.h>

#include <cstdio>
#include <cstring>
#include <shmring/shmring.hpp>
#include <span>
#include <string>
#include <string_view>

int main() {
  const std::string name = "shmring_package_test_" + std::to_string(::getpid());
  try {
    shmring::CreateOptions options;
    options.capacity = 8;
    options.slot_size = 64;
    shmring::Segment segment = shmring::Segment::create(name, options);
    shmring::Segment::unlink(name);  // the mapping outlives the name
    auto tx = shmring::SpscProducer::attach(segment);
    auto rx = shmring::SpscConsumer::attach(segment);
    const std::string_view sent = "package works";
    if (tx.try_push(std::as_bytes(std::span(sent))) != shmring::Status::ok) {
      std::fprintf(stderr, "package_test: push failed\n");
      return 1;
    }
    char buffer[64];
    std::size_t size = 0;
    const shmring::Status s = rx.try_pop(std::as_writable_bytes(std::span(buffer)), size);
    if (s != shmring::Status::ok || std::string_view(buffer, size) != sent) {
      std::fprintf(stderr, "package_test: pop returned %s, %zu bytes\n", shmring::to_string(s),
                   size);
      return 1;
    }
  } catch (const shmring::Error& e) {
    std::fprintf(stderr, "package_test: %s\n", e.what());
    return 1;
  }
  std::printf("package_test: ok\n");
  return 0;
}
