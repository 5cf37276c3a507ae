// Broadcast rings: one producer, every subscriber reads every message. A
// reliable ring makes the producer wait for the slowest subscriber; a lossy
// one never does, and a subscriber it laps skips ahead. Here producer and
// subscribers are threads of one process; in real use each attaches from its
// own process, after Segment::open(name). docs/broadcast.md shows this file.
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <cstring>
#include <span>
#include <string>
#include <thread>
#include <vector>

#include "shmring/shmring.hpp"

using namespace std::chrono_literals;

namespace {

struct Frame {
  std::uint64_t seq;
  char text[24];
};

std::span<const std::byte> bytes_of(const Frame& f) { return std::as_bytes(std::span(&f, 1)); }

// Every subscriber of a reliable ring gets every frame, in order.
bool reliable(const std::string& name) {
  shmring::CreateOptions options;
  options.kind = shmring::RingKind::broadcast;
  options.subscribers = 2;  // how many may be attached at once
  options.delivery = shmring::Delivery::reliable;
  options.capacity = 16;
  options.slot_size = sizeof(Frame);
  shmring::Segment segment = shmring::Segment::create(name, options);

  // Subscribers join at JoinAt::next by default: what is published from now on.
  auto fast = shmring::BroadcastSubscriber::attach(segment);
  auto slow = shmring::BroadcastSubscriber::attach(segment);
  auto producer = shmring::BroadcastProducer::attach(segment);

  constexpr std::uint64_t kFrames = 1000;
  bool ok = true;
  auto read_all = [&](shmring::BroadcastSubscriber& sub) {
    Frame f{};
    std::size_t size = 0;
    for (std::uint64_t i = 0; i < kFrames; ++i) {
      const auto buffer = std::as_writable_bytes(std::span(&f, 1));
      if (sub.pop(buffer, size, 5s) != shmring::Status::ok || f.seq != i) ok = false;
    }
  };
  std::thread a([&] { read_all(fast); });
  std::thread b([&] { read_all(slow); });
  for (std::uint64_t i = 0; i < kFrames; ++i) {
    Frame f{i, {}};
    std::snprintf(f.text, sizeof f.text, "frame %llu", static_cast<unsigned long long>(i));
    // Waits while the slowest live subscriber has not read the slot it needs.
    if (producer.push(bytes_of(f), 5s) != shmring::Status::ok) ok = false;
  }
  a.join();
  b.join();
  shmring::Segment::unlink(name);
  return ok;
}

// A lossy ring: the producer never waits; a lapped subscriber learns it once.
bool lossy(const std::string& name) {
  shmring::CreateOptions options;
  options.kind = shmring::RingKind::broadcast;
  options.subscribers = 1;
  options.delivery = shmring::Delivery::lossy;
  options.capacity = 8;
  options.slot_size = sizeof(Frame);
  shmring::Segment segment = shmring::Segment::create(name, options);
  auto sub = shmring::BroadcastSubscriber::attach(segment);
  auto producer = shmring::BroadcastProducer::attach(segment);

  for (std::uint64_t i = 0; i < 20; ++i) (void)producer.try_push(bytes_of(Frame{i, {}}));
  Frame f{};
  std::size_t size = 0;
  const auto buffer = std::as_writable_bytes(std::span(&f, 1));
  bool ok = sub.try_pop(buffer, size) == shmring::Status::overrun;  // lapped: once
  ok = ok && sub.lapped() == 1 && sub.lost() == 19;                 // frames 0..18 missed
  ok = ok && sub.try_pop(buffer, size) == shmring::Status::ok && f.seq == 19;  // the newest

  // Conflated read: only the newest frame matters (a video display, a pose).
  for (std::uint64_t i = 20; i < 25; ++i) (void)producer.try_push(bytes_of(Frame{i, {}}));
  ok = ok && sub.try_newest(buffer, size) == shmring::Status::ok && f.seq == 24;
  ok = ok && sub.lost() == 19;  // passed over on purpose: not counted as lost
  shmring::Segment::unlink(name);
  return ok;
}

}  // namespace

int main() {
  const std::string base = "broadcast-example-" + std::to_string(::getpid());
  const bool r = reliable(base + "-reliable");
  const bool l = lossy(base + "-lossy");
  std::printf("%s reliable: every subscriber got every frame in order\n", r ? "ok  " : "FAIL");
  std::printf("%s lossy: a lap reported once, then the newest\n", l ? "ok  " : "FAIL");
  return r && l ? 0 : 1;
}
