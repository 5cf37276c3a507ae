// The shmring API in one file: SPSC copy, zero-copy claim/commit and
// peek/release, a typed Ring<T>, an MPMC ring and a sealed segment. Producer and consumer live
// in one process here for brevity; in real use each attaches from its own
// process (or language) by opening the segment by name.
#include <fmt/core.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <span>
#include <string>
#include <string_view>

#include "shmring/shmring.hpp"

using namespace std::chrono_literals;

namespace {

int failures = 0;

void check(bool ok, std::string_view what) {
  fmt::print("{} {}\n", ok ? "ok  " : "FAIL", what);
  if (!ok) ++failures;
}

// Removes a segment's name when the scope ends; mappings stay valid.
struct Unlink {
  std::string name;
  ~Unlink() {
    std::error_code ec;
    shmring::Segment::unlink(name, ec);
  }
};

std::span<const std::byte> bytes(std::string_view s) { return std::as_bytes(std::span(s)); }
std::string_view text(std::span<const std::byte> b) {
  return {reinterpret_cast<const char*>(b.data()), b.size()};
}

struct Sample {
  std::uint64_t timestamp_ns;
  float x, y, z;
};

void spsc() {
  const std::string name = "quickstart-spsc-" + std::to_string(::getpid());
  shmring::CreateOptions options;                                      // SPSC by default
  options.capacity = 1024;                                             // slots, a power of two
  options.slot_size = 256;                                             // the largest message, bytes
  shmring::Segment segment = shmring::Segment::create(name, options);  // /dev/shm/<name>
  Unlink unlink{name};
  // Another process: shmring::Segment::open(name) and attach the other role.
  shmring::SpscProducer tx = shmring::SpscProducer::attach(segment);
  shmring::SpscConsumer rx = shmring::SpscConsumer::attach(segment);

  // 1. Copy in, copy out.
  check(tx.try_push(bytes("hello")) == shmring::Status::ok, "try_push");
  std::byte buffer[256];
  std::size_t size = 0;
  check(rx.pop(buffer, size, 1s) == shmring::Status::ok && text({buffer, size}) == "hello",
        "pop copies the message out");

  // 2. Zero-copy write: claim a slot, write in place, commit the bytes used.
  shmring::WriteClaim claim = tx.try_claim();
  if (claim) {
    std::memcpy(claim[0].data(), "in place", 8);
    check(claim.commit(8) == shmring::Status::ok, "claim + commit");
  }

  // 3. Zero-copy read: peek at the message in its slot, release when done.
  shmring::ReadClaim message = rx.try_peek();
  check(message && text(message[0]) == "in place", "peek reads the slot in place");
  message.release();

  // Batches: claim several slots, publish them with one store.
  shmring::WriteClaim batch = tx.try_claim(4);
  for (std::size_t i = 0; i < batch.size(); ++i) {
    std::memcpy(batch[i].data(), &i, sizeof i);
    (void)batch.set_size(i, sizeof i);
  }
  batch.commit_batch();
  shmring::ReadClaim got = rx.try_peek(4);
  check(got.size() == 4, "claim(4) + commit_batch, then peek(4)");
  got.release();
  check(rx.try_pop(buffer, size) == shmring::Status::would_block, "empty ring: would_block");
}

void typed() {
  const std::string name = "quickstart-typed-" + std::to_string(::getpid());
  auto ring = shmring::Ring<Sample>::create(name, 4096);  // slot size = sizeof(Sample)
  Unlink unlink{name};
  auto tx = ring.producer();
  auto rx = shmring::Ring<Sample>::open(name).consumer();  // as another process would
  check(tx.try_push(Sample{42, 1.0f, 2.0f, 3.0f}) == shmring::Status::ok, "Ring<T>::try_push");
  const std::optional<Sample> s = rx.try_pop();
  check(s && s->timestamp_ns == 42 && s->z == 3.0f, "Ring<T>::try_pop");
}

void mpmc() {
  const std::string name = "quickstart-mpmc-" + std::to_string(::getpid());
  shmring::CreateOptions options;
  options.kind = shmring::RingKind::mpmc;
  options.capacity = 256;
  options.slot_size = 64;
  shmring::Segment segment = shmring::Segment::create(name, options);
  Unlink unlink{name};
  // Any number of producers and consumers, in any processes.
  auto a = shmring::MpmcProducer::attach(segment);
  auto b = shmring::MpmcProducer::attach(segment);
  auto rx = shmring::MpmcConsumer::attach(segment);
  check(a.push(bytes("from a"), 1s) == shmring::Status::ok &&
            b.push(bytes("from b"), 1s) == shmring::Status::ok,
        "two MPMC producers push");
  std::byte buffer[64];
  std::size_t size = 0;
  int received = 0;
  while (rx.try_pop(buffer, size) == shmring::Status::ok) ++received;
  check(received == 2, "one MPMC consumer pops both");
}

// A sealed segment handed over a Unix socket, as between two processes.
void sealed() {
  int sockets[2];
  check(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sockets) == 0, "socketpair");
  shmring::CreateOptions options;
  options.capacity = 64;
  options.slot_size = 64;
  auto made = shmring::Segment::create_sealed("frames", options);
  shmring::send_segment(sockets[0], made);
  shmring::OpenOptions o;
  o.require_sealed = true;
  auto segment = shmring::receive_segment(sockets[1], o);
  check(segment.sealed(), "the received segment is sealed");
  auto tx = shmring::SpscProducer::attach(made);
  auto rx = shmring::SpscConsumer::attach(segment);
  check(tx.try_push(bytes("sealed")) == shmring::Status::ok, "push into the sealed ring");
  std::byte buffer[64];
  std::size_t size = 0;
  check(rx.try_pop(buffer, size) == shmring::Status::ok && size == 6,
        "pop through the received descriptor");
  ::close(sockets[0]);
  ::close(sockets[1]);
}

}  // namespace

int main() {
  try {
    spsc();
    typed();
    mpmc();
    sealed();
  } catch (const shmring::Error& e) {  // create/open/attach report failures as exceptions
    fmt::print(stderr, "error: {}\n", e.what());
    return 1;
  }
  if (failures != 0) {
    fmt::print("quickstart: {} checks failed\n", failures);
    return 1;
  }
  fmt::print("quickstart: all checks passed\n");
  return 0;
}
