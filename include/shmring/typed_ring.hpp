// Ring<T>: a ring of trivially copyable T, one T per slot.
//
//   auto ring = shmring::Ring<Sample>::create("imu", 4096);
//   auto tx = ring.producer();          // in one process
//   auto rx = Ring<Sample>::open("imu").consumer();   // in another
//   tx.try_push(Sample{...});  if (auto s = rx.try_pop()) use(*s);
//
// On an SPSC ring of low-latency slots (sizeof(T) <= 4096) the consumer
// copies through the ring's copy calls instead of a peek.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstring>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <type_traits>

#include "shmring/error.hpp"
#include "shmring/mpmc_ring.hpp"
#include "shmring/segment.hpp"
#include "shmring/spsc_ring.hpp"

namespace shmring {

template <class T, RingKind Kind = RingKind::spsc>
class Ring {
  static_assert(std::is_trivially_copyable_v<T>, "Ring<T> copies T as bytes");
  using RawProducer = std::conditional_t<Kind == RingKind::spsc, SpscProducer, MpmcProducer>;
  using RawConsumer = std::conditional_t<Kind == RingKind::spsc, SpscConsumer, MpmcConsumer>;

 public:
  class Producer {
   public:
    Producer() = default;
    explicit operator bool() const noexcept { return static_cast<bool>(raw_); }
    [[nodiscard]] Status try_push(const T& value) noexcept { return raw_.try_push(bytes(value)); }
    [[nodiscard]] Status push(const T& value, std::chrono::nanoseconds timeout) noexcept {
      return raw_.push(bytes(value), timeout);
    }
    RawProducer& raw() noexcept { return raw_; }

   private:
    friend class Ring;
    explicit Producer(RawProducer raw) noexcept : raw_(std::move(raw)) {}
    static std::span<const std::byte> bytes(const T& v) noexcept {
      return std::as_bytes(std::span<const T, 1>(&v, 1));
    }
    RawProducer raw_;
  };

  class Consumer {
   public:
    Consumer() = default;
    explicit operator bool() const noexcept { return static_cast<bool>(raw_); }
    // corrupt if the message was not sizeof(T) bytes (it is consumed all the
    // same, so one stray message cannot wedge the ring).
    [[nodiscard]] Status try_pop(T& out) noexcept {
      if constexpr (Kind == RingKind::spsc) {
        if (raw_.low_latency()) {
          return copy_out(
              [&](std::span<std::byte> b, std::size_t& n) { return raw_.try_pop(b, n); }, out);
        }
      }
      return take(raw_.try_peek(1), out);
    }
    [[nodiscard]] Status pop(T& out, std::chrono::nanoseconds timeout) noexcept {
      if constexpr (Kind == RingKind::spsc) {
        if (raw_.low_latency()) {
          return copy_out(
              [&](std::span<std::byte> b, std::size_t& n) { return raw_.pop(b, n, timeout); }, out);
        }
      }
      return take(raw_.peek(1, timeout), out);
    }
    std::optional<T> try_pop() noexcept {
      T v;
      if (try_pop(v) != Status::ok) return std::nullopt;
      return v;
    }
    std::optional<T> pop(std::chrono::nanoseconds timeout) noexcept {
      T v;
      if (pop(v, timeout) != Status::ok) return std::nullopt;
      return v;
    }
    RawConsumer& raw() noexcept { return raw_; }

   private:
    friend class Ring;
    explicit Consumer(RawConsumer raw) noexcept : raw_(std::move(raw)) {}
    // Low-latency slots: pops into a buffer as large as any slot, so a
    // message of the wrong size is consumed (and reported) like in take().
    template <class Pop>
    static Status copy_out(Pop&& pop, T& out) noexcept {
      alignas(T) std::byte buf[kMaxLowLatencySlotSize];
      std::size_t n = 0;
      const Status s = pop(std::span<std::byte>(buf), n);
      if (s != Status::ok) return s;
      if (n != sizeof(T)) return Status::corrupt;
      std::memcpy(&out, buf, sizeof(T));
      return Status::ok;
    }
    Status take(ReadClaim claim, T& out) noexcept {
      if (claim.empty()) return claim.status();
      const std::span<const std::byte> m = claim[0];
      const bool fits = m.size() == sizeof(T);
      if (fits) std::memcpy(&out, m.data(), sizeof(T));
      (void)claim.release();
      return fits ? Status::ok : Status::corrupt;
    }
    RawConsumer raw_;
  };

  static Ring create(std::string_view name, std::uint64_t capacity, mode_t mode = 0600,
                     SlotFormat format = SlotFormat::plain) {
    return Ring(Segment::create(name, options(capacity, mode, format)));
  }
  static Ring open(std::string_view name,
                   std::chrono::milliseconds init_timeout = std::chrono::seconds(1)) {
    OpenOptions o;
    o.kind = Kind;
    o.init_timeout = init_timeout;
    return checked(Segment::open(name, o));
  }
  static Ring open_or_create(std::string_view name, std::uint64_t capacity, mode_t mode = 0600) {
    return checked(Segment::open_or_create(name, options(capacity, mode, SlotFormat::plain)));
  }

  Producer producer(const WaitPolicy& policy = {}) const {
    return Producer(RawProducer::attach(segment_, policy));
  }
  Consumer consumer(const WaitPolicy& policy = {}) const {
    return Consumer(RawConsumer::attach(segment_, policy));
  }
  const Segment& segment() const noexcept { return segment_; }

 private:
  explicit Ring(Segment s) noexcept : segment_(std::move(s)) {}
  static CreateOptions options(std::uint64_t capacity, mode_t mode, SlotFormat format) {
    CreateOptions o;
    o.format = format;
    o.kind = Kind;
    o.capacity = capacity;
    o.slot_size = sizeof(T);
    o.mode = mode;
    return o;
  }
  static Ring checked(Segment s) {
    if (s.geometry().slot_size < sizeof(T)) {
      throw Error(make_error_code(errc::message_too_large),
                  "segment '" + s.name() + "': slots hold " +
                      std::to_string(s.geometry().slot_size) + " bytes, the element type needs " +
                      std::to_string(sizeof(T)));
    }
    return Ring(std::move(s));
  }
  Segment segment_;
};

}  // namespace shmring
