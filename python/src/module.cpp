// The _shmring extension: segments, role handles and in-place slots
// (slot.hpp says how a lent slot stays safe; gpu_view.hpp lends it to CUDA).
//
// Blocking calls release the GIL and wait in slices of kSlice, checking for
// signals between slices so that Ctrl-C interrupts them.
#include <Python.h>
#include <nanobind/nanobind.h>
#include <nanobind/stl/optional.h>
#include <nanobind/stl/string.h>
#include <nanobind/stl/vector.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <optional>
#include <span>
#include <stdexcept>
#include <string>
#include <string_view>
#include <type_traits>
#include <vector>

#include "gpu_view.hpp"
#include "shmring/shmring.hpp"
#include "slot.hpp"

namespace nb = nanobind;
using namespace nb::literals;
using std::chrono::nanoseconds;
using Clock = std::chrono::steady_clock;

namespace {

using shmring_py::GpuState;
using shmring_py::HandleBase;
using shmring_py::Record;
using shmring_py::Slot;

constexpr nanoseconds kSlice = std::chrono::milliseconds(50);

const char* errc_name(int v) {
  static const char* const names[] = {nullptr,
                                      "invalid_name",
                                      "invalid_capacity",
                                      "invalid_slot_size",
                                      "size_overflow",
                                      "not_found",
                                      "already_exists",
                                      "no_space",
                                      "permission_denied",
                                      "not_a_segment",
                                      "bad_magic",
                                      "abi_mismatch",
                                      "kind_mismatch",
                                      "geometry_mismatch",
                                      "corrupt_header",
                                      "truncated",
                                      "init_timeout",
                                      "role_taken",
                                      "message_too_large",
                                      "no_segment",
                                      "no_gpu",
                                      "cuda_error",
                                      "gpu_not_allowed",
                                      "mixed_agents",
                                      "invalid_slot_format",
                                      "invalid_argument",
                                      "not_sealed"};
  if (v <= 0 || v >= static_cast<int>(sizeof names / sizeof names[0])) return "unknown";
  return names[v];
}

using shmring_py::StatusError;

void set_python_error(nb::object errc, nb::object err_no, const char* message) {
  try {
    nb::object mod = nb::module_::import_("shmring._errors");
    nb::object inst = mod.attr("_from_cpp")(errc, err_no, message);
    PyErr_SetObject(reinterpret_cast<PyObject*>(Py_TYPE(inst.ptr())), inst.ptr());
  } catch (nb::python_error& e) {
    e.restore();
  }
}

[[noreturn]] void raise_timeout(const char* what) {
  PyErr_SetString(PyExc_TimeoutError, what);
  throw nb::python_error();
}

// Status::unsupported: the one call that returns it is a zero-copy one on a
// ring of low-latency slots (shmring.UnsupportedError).
[[noreturn]] void throw_zero_copy_unsupported() {
  throw StatusError("unsupported",
                    "zero-copy views (claim/try_claim, peek/try_peek) are not available on "
                    "low-latency slots: the bytes in such a slot are not the message. Use the "
                    "copy calls (push/try_push, pop/try_pop/pop_into/iter), which are.");
}

bool is_low_latency(const shmring::Segment& seg) {
  return seg.geometry().format == shmring::SlotFormat::low_latency;
}

// A lossy broadcast subscriber that was lapped: the call that found out
// moved it to the newest message (and counted the lap), so the next try
// reads that one. Python callers get the next whole message; lapped and
// lost say what they missed.
bool lapped(shmring::Status s) { return s == shmring::Status::overrun; }

// Whether a blocking claim/peek attempt is over: it got slots, or a status
// other than "not yet" (corrupt, unsupported).
bool claim_done(bool got, shmring::Status s) {
  return got || (s != shmring::Status::would_block && s != shmring::Status::timeout && !lapped(s));
}

[[noreturn]] void raise_status(shmring::Status s, std::size_t bytes, std::uint64_t slot_size) {
  if (s == shmring::Status::too_large) {
    throw nb::value_error(("message of " + std::to_string(bytes) +
                           " bytes does not fit the ring's " + std::to_string(slot_size) +
                           "-byte slots")
                              .c_str());
  }
  if (s == shmring::Status::corrupt) {
    throw StatusError("corrupt", "the ring is corrupt: the peer side wrote impossible values");
  }
  if (s == shmring::Status::unsupported) throw_zero_copy_unsupported();
  if (s == shmring::Status::closed) {
    throw StatusError("end_of_stream",
                      "end of stream: the ring's producer closed it and every message published "
                      "before was read");
  }
  if (s == shmring::Status::peer_dead) {
    throw StatusError("peer_dead",
                      "the other side of the ring died without closing it (every message it "
                      "published was read); one that attaches again resumes the ring");
  }
  if (s == shmring::Status::wrong_process) {
    throw StatusError("wrong_process",
                      "this handle was attached by another process (this one is a fork of it): "
                      "its calls would write over that process's messages. Attach a handle in "
                      "this process (handle.ref().attach(), or shmring.open(name) and "
                      "producer()/consumer() here).");
  }
  throw StatusError(shmring::to_string(s),
                    std::string("unexpected status ") + shmring::to_string(s));
}

// Runs attempt(slice) without the GIL until it reports done or the timeout
// passes (None: no limit); false on timeout. Signals are checked between
// slices, and a pending exception (KeyboardInterrupt) is raised.
template <class Attempt>
bool wait_loop(std::optional<double> timeout, Attempt&& attempt) {
  if (timeout && !(*timeout >= 0)) throw nb::value_error("timeout must be >= 0 or None");
  const bool forever = !timeout;
  const auto deadline =
      forever ? Clock::time_point::max()
              : Clock::now() + std::chrono::duration_cast<nanoseconds>(
                                   std::chrono::duration<double>(std::min(*timeout, 1e9)));
  for (;;) {
    nanoseconds slice = kSlice;
    if (!forever) {
      const nanoseconds left = deadline - Clock::now();
      slice = std::max(nanoseconds(0), std::min(slice, left));
    }
    bool done;
    {
      nb::gil_scoped_release release;
      done = attempt(slice);
    }
    if (done) return true;
    if (!forever && Clock::now() >= deadline) return false;
    if (PyErr_CheckSignals() != 0) throw nb::python_error();
  }
}

// Whether a buffer of this PEP 3118 / struct format is plain data, whose
// bytes mean the same in another process: "" if so, else why not. Accepted
// are bytes, characters, booleans, integers, floats and complex numbers,
// alone, repeated, in sub-arrays or in structs (with field names, byte order
// and padding). Refused: 'O' (Python objects: the buffer holds pointers to
// them), 'P' and '&' (pointers), and any code not known as plain data (for
// ctypes' 'z', a char pointer, among others).
std::string format_problem(const char* format) {
  if (format == nullptr) return {};  // unsigned bytes
  static constexpr std::string_view kPlain = "xcbB?hHiIlLqQnNefdgZspwu";
  static constexpr std::string_view kSyntax = "@=<>!^ 0123456789,(){}T";
  for (const char* p = format; *p != '\0'; ++p) {
    const char c = *p;
    if (c == ':') {  // a struct field's name, ":name:"
      const char* end = std::strchr(p + 1, ':');
      if (end == nullptr) return "a field name is not closed";
      p = end;
      continue;
    }
    if (kPlain.find(c) != std::string_view::npos || kSyntax.find(c) != std::string_view::npos) {
      continue;
    }
    if (c == 'O') return "its items are Python objects, which it holds as pointers";
    if (c == 'P' || c == '&') return "it holds pointers";
    return std::string("'") + c + "' is not a code of plain data";
  }
  return {};
}

struct Buffer {  // a C-contiguous bytes-like object of plain data, held while in use
  Py_buffer view{};
  // `flags` beyond C-contiguity and the format (PyBUF_WRITABLE).
  explicit Buffer(nb::handle o, int flags = 0) {
    if (PyObject_GetBuffer(o.ptr(), &view, PyBUF_C_CONTIGUOUS | PyBUF_FORMAT | flags) != 0) {
      throw nb::python_error();
    }
    // Pointers into this process (Python objects above all) mean nothing to
    // the peer, and bytes from the peer taken as pointers here would be
    // dereferenced: only plain data crosses the ring.
    if (std::string why = format_problem(view.format); !why.empty()) {
      const std::string format = view.format;
      PyBuffer_Release(&view);
      throw nb::type_error(("a buffer of format '" + format +
                            "' cannot go through the ring: " + why +
                            "; send plain data (bytes, or a numpy array of numbers or of "
                            "a structured dtype without objects)")
                               .c_str());
    }
  }
  ~Buffer() { PyBuffer_Release(&view); }
  Buffer(const Buffer&) = delete;
  Buffer& operator=(const Buffer&) = delete;
  std::span<const std::byte> span() const {
    return {static_cast<const std::byte*>(view.buf), static_cast<std::size_t>(view.len)};
  }
  std::span<std::byte> writable_span() const {
    return {static_cast<std::byte*>(view.buf), static_cast<std::size_t>(view.len)};
  }
};

[[noreturn]] void raise_closed(const HandleBase& h) {
  throw StatusError("closed", "this " + h.role + " of segment '" + h.segment_name +
                                  "' is closed; attach a new one (seg." + h.role + "())");
}

void check_open(const HandleBase& h) {
  if (h.closed) raise_closed(h);
}

// Messages waiting in the ring, from its shared positions: the producer
// side's (SPSC head, MPMC enqueue counter) less the consumer side's. On an
// MPMC ring this counts positions producers claimed but have not committed
// yet. The tail is loaded first: it only grows, so the head read after it is
// never behind it in a sound ring (a corrupt one is clamped).
// Messages published and not yet claimed by a consumer, over every lane of
// the ring (one, but for MPMC rings in lanes).
std::uint64_t waiting(const shmring::ControlArea* control, const shmring::Geometry& g) {
  auto* base = reinterpret_cast<std::byte*>(const_cast<shmring::ControlArea*>(control));
  const std::uint32_t lanes = g.lane_count();
  std::uint64_t total = 0;
  for (std::uint32_t l = 0; l < lanes; ++l) {
    const shmring::RingView v(base, g, l);
    const std::uint64_t tail = shmring::atomic::load_acquire(&v.consumer()->position);
    const std::uint64_t head = shmring::atomic::load_acquire(&v.producer()->position);
    total += head > tail ? std::min(head - tail, g.capacity / lanes) : 0;
  }
  return total;
}

// Marks a handle busy for one call: handles are not for concurrent use.
struct Busy {
  HandleBase& h;
  Busy(HandleBase& handle, bool uses_ring = true) : h(handle) {
    check_open(h);
    if (h.busy) throw std::runtime_error("this handle is in use by another thread");
    if (uses_ring && h.single && h.outstanding != 0) {
      throw nb::buffer_error(
          "a slot of this SPSC handle is still lent (an open claim/peek, or views of a finished "
          "one still alive); finish it or release its views first");
    }
    h.busy = true;
  }
  ~Busy() { h.busy = false; }
};

int slot_getbuffer(PyObject* self, Py_buffer* view, int flags) {
  Slot* s = nb::inst_ptr<Slot>(self);
  view->obj = nullptr;
  if (s->state != Slot::State::active) {
    PyErr_SetString(PyExc_BufferError, "the slot was already finished (committed or released)");
    return -1;
  }
  if (!s->record) {
    if (PyBuffer_FillInfo(view, self, s->data, static_cast<Py_ssize_t>(s->capacity),
                          s->writable ? 0 : 1, flags) != 0) {
      return -1;
    }
    s->exports++;
    return 0;
  }
  // A typed slot: one record, C-contiguous. A consumer that asks for no
  // shape gets the same bytes as a flat unsigned-byte buffer.
  const Record& r = *s->record;
  if ((flags & PyBUF_WRITABLE) == PyBUF_WRITABLE && !s->writable) {
    PyErr_SetString(PyExc_BufferError, "a peeked slot is read-only");
    return -1;
  }
  const bool shaped = (flags & PyBUF_ND) == PyBUF_ND;
  view->buf = s->data;
  view->len = static_cast<Py_ssize_t>(r.nbytes);
  view->readonly = s->writable ? 0 : 1;
  view->itemsize = shaped ? static_cast<Py_ssize_t>(r.itemsize) : 1;
  view->format = shaped && (flags & PyBUF_FORMAT) == PyBUF_FORMAT
                     ? const_cast<char*>(r.format.c_str())
                     : nullptr;
  view->ndim = shaped ? static_cast<int>(r.shape.size()) : 1;
  view->shape = shaped ? const_cast<Py_ssize_t*>(r.shape.data()) : nullptr;
  view->strides = shaped && (flags & PyBUF_STRIDES) == PyBUF_STRIDES
                      ? const_cast<Py_ssize_t*>(r.strides.data())
                      : nullptr;
  view->suboffsets = nullptr;
  view->internal = nullptr;
  Py_INCREF(self);
  view->obj = self;
  s->exports++;
  return 0;
}

void slot_releasebuffer(PyObject* self, Py_buffer*) { nb::inst_ptr<Slot>(self)->unexport(); }

PyType_Slot slot_type_slots[] = {{Py_bf_getbuffer, reinterpret_cast<void*>(slot_getbuffer)},
                                 {Py_bf_releasebuffer, reinterpret_cast<void*>(slot_releasebuffer)},
                                 {0, nullptr}};

void init_base(HandleBase& b, const shmring::Segment& seg, const char* role) {
  b.segment_name = seg.name();
  b.role = role;
  b.geometry = seg.geometry();
  b.control = reinterpret_cast<const shmring::ControlArea*>(seg.base());
  b.mapping = seg.lifetime();
}

template <class H>
struct Producer : HandleBase {
  H h;
  bool low_latency = false;  // SlotFormat::low_latency: copy calls only
  Producer(const shmring::Segment& seg, bool spsc, std::shared_ptr<GpuState> state)
      : h(H::attach(seg)), low_latency(is_low_latency(seg)) {
    single = spsc;
    gpu = std::move(state);
    init_base(*this, seg, "producer");
  }

  void drop_role() noexcept override { h = H(); }

  void finish(Slot& s, bool commit) noexcept override {
    if (commit) {
      (void)s.wclaim.commit(s.size);
    } else {
      s.wclaim.abort();
    }
  }

  bool try_push(nb::handle data) {
    Buffer b(data);
    Busy guard(*this);
    const shmring::Status s = h.try_push(b.span());
    if (s == shmring::Status::ok) return true;
    if (s == shmring::Status::would_block) return false;
    raise_status(s, b.span().size(), h.slot_size());
  }

  void push(nb::handle data, std::optional<double> timeout) {
    Buffer b(data);
    Busy guard(*this);
    if (b.span().size() > h.slot_size())
      raise_status(shmring::Status::too_large, b.span().size(), h.slot_size());
    shmring::Status s = shmring::Status::ok;
    const bool done = wait_loop(timeout, [&](nanoseconds slice) {
      s = h.push(b.span(), slice);
      return s != shmring::Status::timeout && s != shmring::Status::would_block;
    });
    if (!done) raise_timeout("push timed out: the ring stayed full");
    if (s != shmring::Status::ok) raise_status(s, b.span().size(), h.slot_size());
  }

  // A Slot, or None when try_once and the ring is full.
  nb::object claim(nb::handle self, std::optional<double> timeout, bool try_once) {
    if (low_latency) throw_zero_copy_unsupported();
    Busy guard(*this);
    shmring::WriteClaim c;
    if (try_once) {
      c = h.try_claim(1);
    } else {
      const bool done = wait_loop(timeout, [&](nanoseconds slice) {
        c = h.claim(1, slice);
        return claim_done(!c.empty(), c.status());
      });
      if (!done) raise_timeout("claim timed out: the ring stayed full");
    }
    if (c.empty()) {
      if (claim_done(false, c.status())) raise_status(c.status(), 0, h.slot_size());
      return nb::none();
    }
    nb::object obj = nb::cast(new Slot(), nb::rv_policy::take_ownership);
    Slot* s = nb::inst_ptr<Slot>(obj);
    s->owner = nb::borrow(self);
    s->handle = this;
    s->writable = true;
    const std::span<std::byte> bytes = c[0];
    s->data = bytes.data();
    s->capacity = record ? record->nbytes : bytes.size();
    // A typed slot always holds one whole record; an untyped claim publishes
    // only the size it is given (Slot::check_size_set).
    s->size = record ? s->capacity : 0;
    s->size_set = record != nullptr;
    s->position = c.position(0);
    s->record = record;
    s->wclaim = std::move(c);
    outstanding++;
    return obj;
  }
};

template <class H>
struct Consumer : HandleBase {
  H h;
  bool low_latency = false;  // SlotFormat::low_latency: copy calls only
  // A lossy broadcast subscriber: pop copies out through the seqlock check
  // (into `scratch`), so that it never returns a torn message.
  bool copy_reads = false;
  std::vector<std::byte> scratch;
  Consumer(const shmring::Segment& seg, bool spsc, std::shared_ptr<GpuState> state)
      : Consumer(H::attach(seg), seg, spsc, std::move(state), "consumer") {}
  Consumer(H handle, const shmring::Segment& seg, bool spsc, std::shared_ptr<GpuState> state,
           const char* role)
      : h(std::move(handle)), low_latency(is_low_latency(seg)) {
    single = spsc;
    gpu = std::move(state);
    init_base(*this, seg, role);
  }

  void drop_role() noexcept override { h = H(); }

  void finish(Slot& s, bool) noexcept override { s.rclaim.release(); }

  // Waits for one message (None: no limit); an empty claim on timeout.
  shmring::ReadClaim next(std::optional<double> timeout, bool try_once) {
    shmring::ReadClaim c;
    if (try_once) {
      c = h.try_peek(1);
      if (lapped(c.status())) c = h.try_peek(1);
    } else {
      const bool done = wait_loop(timeout, [&](nanoseconds slice) {
        c = h.peek(1, slice);
        return claim_done(!c.empty(), c.status());
      });
      if (!done) return {};
    }
    if (c.empty() && claim_done(false, c.status())) raise_status(c.status(), 0, h.slot_size());
    return c;
  }

  // Low-latency slots: the message is copied out of its words (try_pop/pop);
  // it cannot be lent in place. A slot holds at most kMaxLowLatencySlotSize
  // bytes, so a buffer on the stack takes any message.
  std::optional<nb::bytes> take_copy(std::optional<double> timeout, bool try_once) {
    std::byte buf[shmring::kMaxLowLatencySlotSize];
    const std::span<std::byte> out =
        copy_reads ? std::span<std::byte>(scratch)
                   : std::span<std::byte>(buf, std::min<std::size_t>(sizeof buf, h.slot_size()));
    std::size_t size = 0;
    shmring::Status s = shmring::Status::ok;
    if (!pop_copy(out, size, s, timeout, try_once)) return std::nullopt;
    if (s != shmring::Status::ok) raise_status(s, size, h.slot_size());
    return nb::bytes(out.data(), size);
  }

  // One copy pop into `out`: false if nothing came (try_once on an empty
  // ring, or the wait timed out), else true with the call's status in `s`.
  bool pop_copy(std::span<std::byte> out, std::size_t& size, shmring::Status& s,
                std::optional<double> timeout, bool try_once) {
    if (try_once) {
      s = h.try_pop(out, size);
      if (lapped(s)) s = h.try_pop(out, size);
      return s != shmring::Status::would_block;
    }
    return wait_loop(timeout, [&](nanoseconds slice) {
      s = h.pop(out, size, slice);
      return s != shmring::Status::timeout && s != shmring::Status::would_block && !lapped(s);
    });
  }

  std::optional<nb::bytes> take(std::optional<double> timeout, bool try_once) {
    Busy guard(*this);
    if (low_latency || copy_reads) return take_copy(timeout, try_once);
    shmring::ReadClaim c = next(timeout, try_once);
    if (c.empty()) return std::nullopt;
    const std::span<const std::byte> m = c[0];
    nb::bytes out(m.data(), m.size());
    c.release();
    return out;
  }

  nb::bytes pop(std::optional<double> timeout) {
    std::optional<nb::bytes> m = take(timeout, false);
    if (!m) raise_timeout("pop timed out: the ring stayed empty");
    return *m;
  }

  // Copies the next message into a writable C-contiguous buffer; its size,
  // or None (try_once, the ring is empty). A message larger than the buffer
  // raises ValueError and stays first in line for this handle.
  std::optional<std::size_t> pop_into(nb::handle buffer, std::optional<double> timeout,
                                      bool try_once) {
    const Buffer b(buffer, PyBUF_WRITABLE);
    Busy guard(*this);
    const std::span<std::byte> out = b.writable_span();
    std::size_t size = 0;
    shmring::Status s = shmring::Status::ok;
    if (!pop_copy(out, size, s, timeout, try_once)) {
      if (try_once) return std::nullopt;
      raise_timeout("pop timed out: the ring stayed empty");
    }
    if (s == shmring::Status::too_large) {
      throw nb::value_error(("message of " + std::to_string(size) +
                             " bytes does not fit the buffer of " + std::to_string(out.size()) +
                             " bytes; it is kept for the next pop")
                                .c_str());
    }
    if (s != shmring::Status::ok) raise_status(s, size, h.slot_size());
    return size;
  }

  // Broadcast subscribers only: the newest message not read yet, passing
  // over (and releasing) the ones before it; None if nothing new came
  // (try_once) or in time.
  std::optional<nb::bytes> newest(std::optional<double> timeout, bool try_once) {
    Busy guard(*this);
    std::size_t size = 0;
    shmring::Status s = shmring::Status::ok;
    if (try_once) {
      s = h.try_newest(scratch, size);
      if (s == shmring::Status::would_block) return std::nullopt;
    } else if (!wait_loop(timeout, [&](nanoseconds slice) {
                 s = h.newest(scratch, size, slice);
                 return s != shmring::Status::timeout && s != shmring::Status::would_block;
               })) {
      return std::nullopt;
    }
    if (s != shmring::Status::ok) raise_status(s, size, h.slot_size());
    return nb::bytes(scratch.data(), size);
  }

  nb::object peek(nb::handle self, std::optional<double> timeout, bool try_once) {
    if (low_latency) throw_zero_copy_unsupported();
    Busy guard(*this);
    shmring::ReadClaim c = next(timeout, try_once);
    if (c.empty()) {
      if (try_once) return nb::none();
      raise_timeout("peek timed out: the ring stayed empty");
    }
    if (record && c[0].size() != record->nbytes) {
      const std::size_t got = c[0].size();
      c.release();
      throw nb::value_error(("message of " + std::to_string(got) + " bytes is not one record of " +
                             std::to_string(record->nbytes) + " bytes; it was consumed")
                                .c_str());
    }
    nb::object obj = nb::cast(new Slot(), nb::rv_policy::take_ownership);
    Slot* s = nb::inst_ptr<Slot>(obj);
    s->owner = nb::borrow(self);
    s->handle = this;
    s->writable = false;
    s->record = record;
    const std::span<const std::byte> m = c[0];
    s->data = const_cast<std::byte*>(m.data());  // exported read-only
    s->capacity = m.size();
    s->size = m.size();
    s->size_set = true;
    s->position = c.position(0);
    s->rclaim = std::move(c);
    outstanding++;
    return obj;
  }
};

shmring::JoinAt parse_join(const std::string& at) {
  if (at == "next") return shmring::JoinAt::next;
  if (at == "oldest") return shmring::JoinAt::oldest;
  if (at == "newest") return shmring::JoinAt::newest;
  throw StatusError("invalid_argument",
                    "at must be 'next', 'oldest' or 'newest', not '" + at + "'");
}

// A broadcast subscriber: the consumer's calls, plus conflated reads
// (Consumer::newest) and the lap counters of a lossy ring.
using Subscriber = Consumer<shmring::BroadcastSubscriber>;

Subscriber* make_subscriber(const shmring::Segment& seg, const std::string& at,
                            std::shared_ptr<GpuState> gpu) {
  auto* s = new Subscriber(shmring::BroadcastSubscriber::attach(seg, parse_join(at)), seg, true,
                           std::move(gpu), "subscriber");
  s->copy_reads = s->h.delivery() == shmring::Delivery::lossy;
  s->scratch.resize(s->h.slot_size());
  return s;
}

// for msg in consumer.iter(timeout): bytes until a wait times out.
struct MessageIter {
  nb::object consumer;
  std::optional<double> timeout;
};

struct PySegment {
  shmring::Segment seg;
  std::string name;  // kept after close, for messages and repr
  std::shared_ptr<GpuState> gpu = std::make_shared<GpuState>();
  // How it was opened, so that a pickled copy reopens it the same way.
  bool allow_foreign_owner = false;
  double init_timeout = 1.0;
  // Remove the name on close (or collection), in the process that asked
  // for it only: a forked child's copy must not unlink its parent's ring.
  bool unlink_on_close = false;
  pid_t pid = getpid();

  explicit PySegment(shmring::Segment s) : seg(std::move(s)), name(seg.name()) {}
  PySegment(const PySegment&) = delete;
  ~PySegment() { close(); }

  bool closed() const { return !seg; }
  const shmring::Segment& open_seg() const {
    if (!seg) {
      throw StatusError("closed", "segment '" + name +
                                      "' is closed in this process; open it again "
                                      "(shmring.open(name))");
    }
    return seg;
  }
  // Drops this object's mapping; handles attached through it keep their own.
  void close() noexcept {
    if (!seg) return;
    seg = shmring::Segment();
    if (unlink_on_close && getpid() == pid) {
      std::error_code ec;
      (void)shmring::Segment::unlink(name, ec);  // already gone: nothing to do
    }
  }
  std::string kind() const { return shmring::to_string(open_seg().geometry().kind); }
  std::string slot_format() const { return shmring::to_string(open_seg().geometry().format); }
};

nb::object segment_role_ref(const PySegment& s, const char* role) {
  const shmring::Geometry& g = s.open_seg().geometry();
  return nb::module_::import_("shmring._lifetimes")
      .attr("RoleRef")(s.name, role, shmring::to_string(g.kind), g.capacity, g.slot_size,
                       shmring::to_string(g.format), nb::none(), nb::none(), s.allow_foreign_owner);
}

shmring::RingKind parse_kind(const std::string& kind) {
  if (kind == "spsc") return shmring::RingKind::spsc;
  if (kind == "mpmc") return shmring::RingKind::mpmc;
  if (kind == "broadcast") return shmring::RingKind::broadcast;
  throw StatusError("invalid_argument",
                    "kind must be 'spsc', 'mpmc' or 'broadcast', not '" + kind + "'");
}

// An unknown name is errc::invalid_slot_format, as the library reports an
// unknown format (shmring.InvalidArgumentError, a ValueError).
shmring::SlotFormat parse_slot_format(const std::string& format) {
  if (format == "plain") return shmring::SlotFormat::plain;
  if (format == "low_latency") return shmring::SlotFormat::low_latency;
  throw StatusError("invalid_slot_format",
                    "slot_format must be 'plain' or 'low_latency', not '" + format + "'");
}

// Handles of a typed ring (python/shmring/typed.py) lend every slot as one
// record; the record must fit the ring's slots.
template <class C>
void set_record(C& c, std::string format, std::string typestr, std::size_t itemsize,
                std::vector<Py_ssize_t> shape, int dlpack_code) {
  check_open(c);
  if (c.outstanding != 0) throw std::runtime_error("a slot of this handle is still lent");
  if (itemsize == 0) throw nb::value_error("a record's item size must be at least 1 byte");
  auto r = std::make_shared<Record>();
  r->format = std::move(format);
  r->typestr = std::move(typestr);
  r->itemsize = itemsize;
  r->dlpack_code = dlpack_code;
  std::size_t n = itemsize;
  for (const Py_ssize_t d : shape) {
    if (d < 0) throw nb::value_error("a record's shape must not be negative");
    n *= static_cast<std::size_t>(d);
  }
  r->shape = std::move(shape);
  r->strides.assign(r->shape.size(), 0);
  Py_ssize_t stride = static_cast<Py_ssize_t>(itemsize);
  for (std::size_t i = r->shape.size(); i-- > 0;) {
    r->strides[i] = stride;
    stride *= r->shape[i];
  }
  r->nbytes = n;
  if (n > c.h.slot_size()) {
    throw nb::value_error(("a record of " + std::to_string(n) + " bytes does not fit the ring's " +
                           std::to_string(c.h.slot_size()) + "-byte slots")
                              .c_str());
  }
  c.record = std::move(r);
}

template <class C>
void bind_record(nb::class_<C>& cls) {
  cls.def("_set_record", &set_record<C>, "format"_a, "typestr"_a, "itemsize"_a, "shape"_a,
          "dlpack_code"_a)
      .def_prop_ro("_record_nbytes", [](const C& c) -> std::optional<std::size_t> {
        if (!c.record) return std::nullopt;
        return c.record->nbytes;
      });
}

// MPMC handles: recovery of positions that dead processes of the same side
// left claimed (the blocking calls run it by themselves; see mpmc_ring.hpp).
template <class C>
void bind_recovery(nb::class_<C>& cls) {
  if constexpr (std::is_same_v<decltype(C::h), shmring::MpmcProducer> ||
                std::is_same_v<decltype(C::h), shmring::MpmcConsumer>) {
    cls.def(
           "recover",
           [](C& c) {
             Busy guard(c);
             return c.h.recover();
           },
           "Recovers the positions that dead processes of this side claimed and left, if the "
           "other side waits at one (a producer's as skipped, a consumer's as released); "
           "returns how many. The blocking calls do this by themselves.")
        .def_prop_ro(
            "abandoned",
            [](const C& c) {
              check_open(c);
              return c.h.abandoned();
            },
            "Positions of this side recovered from dead processes so far, by any process.");
  }
}

// A RoleRef (shmring/_lifetimes.py) naming this handle's segment and role:
// what a handle pickles as, since a role cannot move to another process.
nb::object role_ref(const HandleBase& b) {
  return nb::module_::import_("shmring._lifetimes")
      .attr("RoleRef")(b.segment_name, b.role, shmring::to_string(b.geometry.kind),
                       b.geometry.capacity, b.geometry.slot_size,
                       shmring::to_string(b.geometry.format));
}

template <class C>
constexpr bool kIsSubscriber = std::is_same_v<decltype(C::h), shmring::BroadcastSubscriber>;

// Messages waiting for this handle: a subscriber's own backlog, else the
// ring's (waiting()).
template <class C>
std::uint64_t waiting_for(const C& c) {
  if constexpr (kIsSubscriber<C>) {
    const std::uint64_t head = shmring::atomic::load_acquire(&c.control->producer.position);
    const std::uint64_t next = c.h.position();
    return head > next ? std::min(head - next, c.geometry.capacity) : 0;
  } else if constexpr (std::is_same_v<decltype(C::h), shmring::MpmcConsumer>) {
    // With what this consumer has read ahead (or kept for a larger buffer).
    return waiting(c.control, c.geometry) + c.h.kept();
  } else {
    return waiting(c.control, c.geometry);
  }
}

// What every role handle has: lifetime (close, with), introspection (len,
// empty, repr, name, position) and pickling (as a RoleRef).
template <class C>
void bind_handle(nb::class_<C>& cls) {
  cls.def_prop_ro("capacity", [](const C& c) { return c.geometry.capacity; })
      .def_prop_ro("slot_size", [](const C& c) { return c.geometry.slot_size; })
      .def_prop_ro("kind", [](const C& c) { return shmring::to_string(c.geometry.kind); })
      .def_prop_ro(
          "name", [](const C& c) { return c.segment_name; }, "The segment's name.")
      .def_prop_ro(
          "role", [](const C& c) { return c.role; }, "'producer', 'consumer' or 'subscriber'.")
      .def_prop_ro("closed", [](const C& c) { return c.closed; })
      .def(
          "close",
          [](C& c) {
            if (c.closed) return;
            if (c.busy) throw std::runtime_error("this handle is in use by another thread");
            c.closed = true;
            if (c.outstanding == 0) {
              c.release_role();
            } else {
              c.close_pending = true;  // a lent slot may still be written: keep the role
            }
          },
          "Gives the role back (at once, or when the last slot it lent is finished); later "
          "calls raise shmring.ClosedError. Closing again does nothing. A producer's close "
          "also ends the stream for the consumers (SPSC; MPMC: when no other producer of the "
          "ring is alive), unless close_on_exit was set to False.")
      .def(
          "event_fd",
          [](C& c) {
            check_open(c);
            return c.h.event_fd();
          },
          "A descriptor (for select, poll, selectors or loop.add_reader) readable while a try_ "
          "call of this handle may make progress or would report the end of the stream. "
          "Protocol: wait until readable, then call try_ forms until one says 'nothing' "
          "(None/False), which arms the descriptor again. The handle owns it: do not close it.")
      .def("__enter__", [](nb::handle self) { return nb::borrow(self); })
      .def(
          "__exit__",
          [](nb::handle self, nb::handle, nb::handle, nb::handle) {
            self.attr("close")();
            return false;
          },
          "exc_type"_a.none(), "exc"_a.none(), "tb"_a.none())
      .def(
          "__len__",
          [](const C& c) -> std::size_t {
            check_open(c);
            return waiting_for(c);
          },
          "Messages waiting in the ring now (from the shared positions; on an MPMC ring, "
          "positions claimed by producers count from their claim).")
      .def(
          "empty",
          [](const C& c) {
            check_open(c);
            return waiting_for(c) == 0;
          },
          "Whether no message is waiting now.")
      // A handle is always true: without this, __len__ would make an idle
      // ring's handles false.
      .def("__bool__", [](const C&) { return true; })
      .def_prop_ro(
          "position",
          [](const C& c) {
            check_open(c);
            return c.h.position();
          },
          "This side's position: messages published so far (producer), taken so far "
          "(consumer), or the next one this subscriber reads (subscriber).")
      .def_prop_rw(
          "wait_policy",
          [](const C& c) {
            check_open(c);
            return c.h.wait_policy();
          },
          [](C& c, const shmring::WaitPolicy& p) {
            check_open(c);
            c.h.set_wait_policy(p);
          },
          "How this handle's blocking calls wait (a WaitPolicy); settable. Where producer and "
          "consumer share one CPU, WaitPolicy(spin_time=0) sleeps at once instead of spinning.")
      .def(
          "ref", [](const C& c) { return role_ref(c); },
          "A RoleRef: the segment's name and this role, picklable, attaching nothing; "
          "ref.attach() in another process attaches a handle there.")
      .def("__reduce__", [](const C& c) { return role_ref(c).attr("__reduce__")(); })
      .def("__repr__", [](nb::handle self) {
        const C& c = nb::cast<const C&>(self);
        const std::string type =
            nb::cast<std::string>(nb::handle(Py_TYPE(self.ptr())).attr("__name__"));
        std::string r = "<shmring." + type + " '" + c.segment_name + "'";
        if (c.closed) return r + " closed>";
        r += " capacity=" + std::to_string(c.geometry.capacity) +
             " slot_size=" + std::to_string(c.geometry.slot_size);
        if (c.geometry.format == shmring::SlotFormat::low_latency) r += " slot_format=low_latency";
        r += " position=" + std::to_string(c.h.position()) +
             " waiting=" + std::to_string(waiting_for(c)) + ">";
        return r;
      });
}

template <class C>
void bind_producer(nb::module_& m, const char* name) {
  nb::class_<C> cls(m, name);
  bind_record(cls);
  bind_recovery(cls);
  bind_handle(cls);
  // Every producer can end the stream.
  cls.def(
         "end_stream",
         [](C& p) {
           Busy guard(p);
           const shmring::Status s = p.h.close();
           if (s != shmring::Status::ok) raise_status(s, 0, p.h.slot_size());
         },
         "Ends the stream now: consumers read what was published, then get "
         "shmring.EndOfStream (their for/async for loops end). This handle's later pushes "
         "raise EndOfStream; it keeps the role until close(). A producer that attaches later "
         "reopens the stream.")
      .def_prop_rw(
          "close_on_exit",
          [](const C& p) {
            check_open(p);
            return p.h.close_on_exit();
          },
          [](C& p, bool on) {
            check_open(p);
            p.h.set_close_on_exit(on);
          },
          "Whether close() (or the handle's collection) ends the stream; True by default. "
          "False leaves it open for a producer that attaches later.");
  cls.def_prop_ro(
         "slot_format", [](C& p) { return p.low_latency ? "low_latency" : "plain"; },
         "'plain', or 'low_latency' (copy calls only: claim raises UnsupportedError).")
      .def("try_push", &C::try_push, "data"_a,
           "Copies one message into the ring; False if it is full.")
      .def("push", &C::push, "data"_a, "timeout"_a = nb::none(),
           "Copies one message into the ring, waiting up to timeout seconds (None: no limit); "
           "TimeoutError if it stays full.")
      .def(
          "claim",
          [](nb::handle self, std::optional<double> timeout) {
            return nb::cast<C&>(self).claim(self, timeout, false);
          },
          "timeout"_a = nb::none(),
          "Lends a free slot to write in place (a Slot); TimeoutError if none frees in time. "
          "UnsupportedError on a ring of low-latency slots (use push).")
      .def(
          "try_claim", [](nb::handle self) { return nb::cast<C&>(self).claim(self, {}, true); },
          "Lends a free slot to write in place, or None if the ring is full. UnsupportedError "
          "on a ring of low-latency slots (use try_push).");
}

template <class C>
nb::class_<C> bind_consumer(nb::module_& m, const char* name) {
  nb::class_<C> cls(m, name);
  bind_recovery(cls);
  bind_record(cls);
  bind_handle(cls);
  cls.def_prop_ro(
         "slot_format", [](C& c) { return c.low_latency ? "low_latency" : "plain"; },
         "'plain', or 'low_latency' (copy calls only: peek raises UnsupportedError).")
      .def(
          "try_pop", [](C& c) { return c.take({}, true); },
          "The next message as bytes, or None if the ring is empty.")
      .def("pop", &C::pop, "timeout"_a = nb::none(),
           "The next message as bytes, waiting up to timeout seconds (None: no limit); "
           "TimeoutError if none arrives.")
      .def(
          "peek",
          [](nb::handle self, std::optional<double> timeout) {
            return nb::cast<C&>(self).peek(self, timeout, false);
          },
          "timeout"_a = nb::none(),
          "Lends the next message in place (a read-only Slot); TimeoutError if none arrives. "
          "UnsupportedError on a ring of low-latency slots (use pop or pop_into).")
      .def(
          "try_peek", [](nb::handle self) { return nb::cast<C&>(self).peek(self, {}, true); },
          "Lends the next message in place, or None if the ring is empty. UnsupportedError on a "
          "ring of low-latency slots (use try_pop or try_pop_into).")
      .def(
          "iter",
          [](nb::handle self, std::optional<double> timeout) {
            return MessageIter{nb::borrow(self), timeout};
          },
          "timeout"_a = nb::none(),
          "An iterator of messages (bytes) that ends when none arrives within timeout "
          "(None: it never ends by itself, like iterating the consumer).")
      .def(
          "__iter__",
          [](nb::handle self) {
            return MessageIter{nb::borrow(self), std::nullopt};
          },
          "Messages (bytes) as they come, each waited for without limit: the loop ends at the "
          "end of the stream (the producer closed the ring), or by break, an exception or "
          "Ctrl-C. rx.iter(timeout) also ends when none comes in time.")
      .def(
          "pop_into",
          [](C& c, nb::handle buffer, std::optional<double> timeout) {
            return *c.pop_into(buffer, timeout, false);
          },
          "buffer"_a, "timeout"_a = nb::none(),
          "Copies the next message into a writable buffer and returns its size, waiting up to "
          "timeout seconds; TimeoutError if none arrives. A message larger than the buffer "
          "raises ValueError and is kept.")
      .def(
          "try_pop_into", [](C& c, nb::handle buffer) { return c.pop_into(buffer, {}, true); },
          "buffer"_a, "Like pop_into, but None at once if the ring is empty.")
      .def("_next", [](C& c, std::optional<double> timeout) { return c.take(timeout, false); });
  return cls;
}

void bind_subscriber(nb::module_& m) {
  nb::class_<Subscriber> sub = bind_consumer<Subscriber>(m, "BroadcastSubscriber");
  sub.def(
         "newest",
         [](Subscriber& s, std::optional<double> timeout) {
           std::optional<nb::bytes> m = s.newest(timeout, false);
           if (!m) raise_timeout("newest timed out: nothing new was published");
           return *m;
         },
         "timeout"_a = nb::none(),
         "The newest message published since the last one read, as bytes, passing over the "
         "ones before it (they do not count as lost); waits up to timeout seconds (None: no "
         "limit) if there is none, then TimeoutError.")
      .def(
          "try_newest", [](Subscriber& s) { return s.newest({}, true); },
          "Like newest, but None at once if nothing new was published.")
      .def_prop_ro(
          "delivery",
          [](const Subscriber& s) {
            check_open(s);
            return shmring::to_string(s.h.delivery());
          },
          "'reliable' or 'lossy'.")
      .def_prop_ro(
          "lapped",
          [](const Subscriber& s) {
            check_open(s);
            return s.h.lapped();
          },
          "Lossy: times the producer lapped this subscriber (each time, its reads skipped "
          "ahead to the newest message).")
      .def_prop_ro(
          "lost",
          [](const Subscriber& s) {
            check_open(s);
            return s.h.lost();
          },
          "Lossy: messages this subscriber missed because it was lapped.");
}

}  // namespace

NB_MODULE(_shmring, m) {
  m.doc() = "Zero-copy SPSC/MPMC ring buffers in one /dev/shm segment";

  nb::register_exception_translator([](const std::exception_ptr& p, void*) {
    try {
      std::rethrow_exception(p);
    } catch (const shmring::Error& e) {
      const std::error_code code = e.code();
      if (code.category() == shmring::error_category()) {
        set_python_error(nb::str(errc_name(code.value())), nb::none(), e.what());
      } else {
        set_python_error(nb::none(), nb::int_(code.value()), e.what());
      }
    } catch (const StatusError& e) {
      set_python_error(nb::str(e.errc.c_str()), nb::none(), e.what());
    }
  });

  using SP = Producer<shmring::SpscProducer>;
  using MP = Producer<shmring::MpmcProducer>;
  using SC = Consumer<shmring::SpscConsumer>;
  using MC = Consumer<shmring::MpmcConsumer>;
  using BP = Producer<shmring::BroadcastProducer>;

  nb::class_<Slot>(m, "Slot", nb::type_slots(slot_type_slots),
                   "One slot lent in place: a writable buffer (claim) or a read-only one (peek). "
                   "Use it with memoryview(slot), numpy.frombuffer(slot) or the helpers below; as "
                   "a context manager it commits (or, on an exception, aborts) a claim and "
                   "releases a peek on exit. While views of the slot are alive it stays held and "
                   "the commit, abort or release happens when the last one goes; on a normal exit "
                   "BufferError says so, while an exception leaving the block propagates "
                   "unchanged.")
      .def_prop_rw(
          "size",
          [](const Slot& s) -> std::optional<std::size_t> {
            if (!s.size_set) return std::nullopt;
            return s.size;
          },
          [](Slot& s, std::size_t n) { s.set_size(n); },
          "Bytes published on commit: set by write(), by assignment, or by commit(n); None "
          "on a claim until then (a typed claim holds one record from the start). On a peek, "
          "the message's size.")
      .def_prop_ro(
          "capacity", [](const Slot& s) { return s.capacity; },
          "Bytes the buffer exposes: the slot size (claim) or the message size (peek).")
      .def_prop_ro("writable", [](const Slot& s) { return s.writable; })
      .def_prop_ro("finished", [](const Slot& s) { return s.state != Slot::State::active; })
      .def("__len__", [](const Slot& s) { return s.capacity; })
      .def(
          "write",
          [](Slot& s, nb::handle data) {
            if (!s.writable) throw std::runtime_error("a read slot cannot be written");
            s.check_active();
            Buffer b(data);
            s.set_size(b.span().size());
            std::memcpy(s.data, b.span().data(), b.span().size());
          },
          "data"_a, "Copies data to the start of the slot and sets size to its length.")
      .def(
          "tobytes",
          [](const Slot& s) {
            s.check_active();
            return nb::bytes(s.data, s.size_set ? s.size : s.capacity);
          },
          "A copy of the first size bytes (the whole slot while size is None).")
      .def(
          "commit",
          [](Slot& s, std::optional<std::size_t> n) {
            if (!s.writable)
              throw std::runtime_error("commit() is for claimed slots; use release()");
            if (n) s.set_size(*n);
            s.check_active();
            s.check_size_set();
            s.finish(true);
          },
          "size"_a = nb::none(),
          "Publishes the slot: size bytes, or the given size. A claim whose size was never "
          "set (written only through a view) raises shmring.SizeNotSetError and stays held.")
      .def(
          "abort",
          [](Slot& s) {
            if (!s.writable)
              throw std::runtime_error("abort() is for claimed slots; use release()");
            s.check_active();
            s.finish(false);
          },
          "Gives the slot back unpublished.")
      .def(
          "release",
          [](Slot& s) {
            s.check_active();
            s.check_size_set();
            s.finish(s.writable);
          },
          "Releases a peeked message (commits a claimed slot).")
      .def(
          "valid",
          [](const Slot& s) {
            return s.state == Slot::State::active && (s.writable || s.rclaim.valid());
          },
          "Whether the slot still holds what was lent: always, until it is finished, except on "
          "a lossy broadcast ring, whose producer may rewrite a peeked slot while it is read. "
          "There, read what you need, then ask: False means it was overwritten meanwhile and "
          "what was read must be discarded.")
      .def_prop_ro(
          "array",
          [](nb::handle self) {
            nb::cast<Slot&>(self).check_active();
            return nb::module_::import_("numpy").attr("asarray")(self);
          },
          "A numpy array on the slot itself (no copy): the record of a typed ring, else the "
          "slot's bytes as uint8. Like any view, it holds the slot until it is gone.")
      .def(
          "cuda", [](nb::handle self) { return shmring_py::make_gpu_view(self); },
          "A GpuView of the slot for CuPy / PyTorch (no copy); the segment must be registered "
          "with CUDA in this process (Segment.register_cuda()).")
      .def_prop_ro(
          "position", [](const Slot& s) { return s.position; }, "The slot's position in the ring.")
      .def("__repr__",
           [](const Slot& s) {
             std::string r = std::string("<shmring.Slot ") + (s.writable ? "claimed" : "peeked") +
                             " from '" + (s.handle ? s.handle->segment_name : "") +
                             "' position=" + std::to_string(s.position) +
                             " size=" + (s.size_set ? std::to_string(s.size) : "None") +
                             " capacity=" + std::to_string(s.capacity);
             if (s.state == Slot::State::deferred) r += " finishing (views alive)";
             if (s.state == Slot::State::done) r += " finished";
             return r + ">";
           })
      .def("__enter__", [](nb::handle self) { return nb::borrow(self); })
      .def(
          "__exit__",
          [](Slot& s, nb::handle exc_type, nb::handle, nb::handle) {
            if (exc_type.is_none()) {
              if (s.state == Slot::State::active && s.writable && !s.size_set) {
                // The block is over and nothing says what to publish: the
                // claim is given back unpublished, and the error says why.
                s.abandon();
                s.check_size_set();
              }
              s.finish(true);  // views still alive: BufferError, the commit waits for them
            } else {
              s.abandon();  // never raises: the block's exception propagates unchanged
            }
            return false;
          },
          "exc_type"_a.none(), "exc"_a.none(), "tb"_a.none());

  shmring_py::bind_gpu(m);

  bind_producer<SP>(m, "SpscProducer");
  bind_producer<MP>(m, "MpmcProducer");
  bind_consumer<SC>(m, "SpscConsumer");
  bind_consumer<MC>(m, "MpmcConsumer")
      .def_prop_rw(
          "read_ahead",
          [](const MC& c) {
            check_open(c);
            return c.h.read_ahead();
          },
          [](MC& c, std::size_t n) {
            check_open(c);
            c.h.set_read_ahead(n);
          },
          "Messages one claim takes at most, handed out one a call (1, the default: what each "
          "call asks for). More saves the consumers' shared counter an atomic operation per "
          "message; messages read ahead are this handle's until it reads them, and go back to "
          "the ring with it when no other consumer read past them (else they count in "
          "abandoned). Clamped to [1, a lane's capacity].");
  bind_producer<BP>(m, "BroadcastProducer");
  bind_subscriber(m);

  nb::class_<shmring::WaitPolicy>(
      m, "WaitPolicy",
      "How a blocking call waits: it polls for at most spin_time seconds and spin_iterations "
      "tries, then yields the CPU yield_iterations times, then sleeps until woken.")
      .def(
          "__init__",
          [](shmring::WaitPolicy* p, std::uint32_t spin_iterations, std::uint32_t yield_iterations,
             double spin_time) {
            if (!(spin_time >= 0.0 && spin_time <= 3600.0)) {
              throw nb::value_error("spin_time must be between 0 and 3600 seconds");
            }
            new (p) shmring::WaitPolicy{
                spin_iterations, yield_iterations,
                std::chrono::duration_cast<nanoseconds>(std::chrono::duration<double>(spin_time))};
          },
          "spin_iterations"_a = shmring::WaitPolicy{}.spin_iterations,
          "yield_iterations"_a = shmring::WaitPolicy{}.yield_iterations,
          "spin_time"_a = std::chrono::duration<double>(shmring::WaitPolicy{}.spin_time).count())
      .def_rw("spin_iterations", &shmring::WaitPolicy::spin_iterations)
      .def_rw("yield_iterations", &shmring::WaitPolicy::yield_iterations)
      .def_prop_rw(
          "spin_time",
          [](const shmring::WaitPolicy& p) {
            return std::chrono::duration<double>(p.spin_time).count();
          },
          [](shmring::WaitPolicy& p, double seconds) {
            if (!(seconds >= 0.0 && seconds <= 3600.0)) {
              throw nb::value_error("spin_time must be between 0 and 3600 seconds");
            }
            p.spin_time =
                std::chrono::duration_cast<nanoseconds>(std::chrono::duration<double>(seconds));
          },
          "Seconds of polling before yielding (float).")
      .def("__eq__",
           [](const shmring::WaitPolicy& a, const shmring::WaitPolicy& b) {
             return a.spin_iterations == b.spin_iterations &&
                    a.yield_iterations == b.yield_iterations && a.spin_time == b.spin_time;
           })
      .def("__repr__", [](const shmring::WaitPolicy& p) {
        return "WaitPolicy(spin_iterations=" + std::to_string(p.spin_iterations) +
               ", yield_iterations=" + std::to_string(p.yield_iterations) +
               ", spin_time=" + std::to_string(std::chrono::duration<double>(p.spin_time).count()) +
               ")";
      });

  nb::class_<MessageIter>(m, "MessageIter")
      .def("__iter__", [](nb::handle self) { return nb::borrow(self); })
      .def("__next__", [](MessageIter& it) {
        // The loop ends at the end of the stream (a dead producer raises).
        nb::object msg;
        try {
          msg = it.consumer.attr("_next")(it.timeout);
        } catch (nb::python_error& e) {
          // Raised through the module's translator: shmring.EndOfStream.
          const nb::object errc = nb::getattr(e.value(), "errc", nb::none());
          if (nb::isinstance<nb::str>(errc) && nb::cast<std::string>(errc) == "end_of_stream") {
            throw nb::stop_iteration();  // the stored exception is dropped with `e`
          }
          throw;
        }
        if (msg.is_none()) throw nb::stop_iteration();
        return msg;
      });

  nb::class_<PySegment>(m, "Segment",
                        "A named shared-memory segment holding one ring. A context manager: "
                        "leaving the block closes it (and unlinks it if unlink_on_close).")
      .def_prop_ro("name", [](const PySegment& s) { return s.name; })
      .def_prop_ro("kind", &PySegment::kind)
      .def_prop_ro("slot_format", &PySegment::slot_format,
                   "'plain' (bytes in place: zero-copy claims and peeks) or 'low_latency' "
                   "(messages as flagged 8-byte words: copy calls only, SPSC only).")
      .def_prop_ro(
          "metadata",
          [](const PySegment& s) {
            const std::string_view m = s.open_seg().metadata();
            return nb::bytes(m.data(), m.size());
          },
          "What the creator stored about the messages (a typed ring's dtype and shape), "
          "as read at open; b'' if nothing.")
      .def_prop_ro("capacity", [](const PySegment& s) { return s.open_seg().geometry().capacity; })
      .def_prop_ro("slot_size",
                   [](const PySegment& s) { return s.open_seg().geometry().slot_size; })
      .def_prop_ro(
          "size", [](const PySegment& s) { return s.open_seg().size(); }, "Bytes of the mapping.")
      .def_prop_ro(
          "created", [](const PySegment& s) { return s.open_seg().created(); },
          "Whether this object created the segment (rather than opening it).")
      .def_prop_ro(
          "mode",
          [](const PySegment& s) {
            struct stat st {};
            if (fstat(s.open_seg().fd(), &st) != 0) {
              throw shmring::Error(std::error_code(errno, std::system_category()),
                                   "segment '" + s.name + "': fstat");
            }
            return static_cast<unsigned>(st.st_mode & 07777);
          },
          "The segment file's permission bits (0o600 by default).")
      .def_prop_ro("closed", &PySegment::closed)
      .def_prop_rw(
          "unlink_on_close", [](const PySegment& s) { return s.unlink_on_close; },
          [](PySegment& s, bool v) {
            s.unlink_on_close = v;
            s.pid = getpid();
          },
          "Whether close() (or collection) removes the segment's name; only in the process "
          "that set it, never in a forked child.")
      .def_prop_ro(
          "_open_options",
          [](const PySegment& s) { return nb::make_tuple(s.allow_foreign_owner, s.init_timeout); })
      .def("close", &PySegment::close,
           "Drops this object's mapping (handles attached through it keep theirs) and, if "
           "unlink_on_close, removes the name. Closing again does nothing.")
      .def(
          "unlink",
          [](PySegment& s, bool missing_ok) {
            try {
              shmring::Segment::unlink(s.name);
            } catch (const shmring::Error& e) {
              if (!(missing_ok && e.code() == shmring::errc::not_found)) throw;
            }
          },
          "missing_ok"_a = false,
          "Removes the segment's name now; processes that have it mapped keep their mapping.")
      .def("__enter__", [](nb::handle self) { return nb::borrow(self); })
      .def(
          "__exit__",
          [](PySegment& s, nb::handle, nb::handle, nb::handle) {
            s.close();
            return false;
          },
          "exc_type"_a.none(), "exc"_a.none(), "tb"_a.none())
      .def(
          "__reduce__",
          [](const PySegment& s) {
            const shmring::Geometry& g = s.open_seg().geometry();
            return nb::make_tuple(
                nb::module_::import_("shmring._lifetimes").attr("_reopen_segment"),
                nb::make_tuple(s.name, shmring::to_string(g.kind), g.capacity, g.slot_size,
                               shmring::to_string(g.format), s.allow_foreign_owner,
                               s.init_timeout));
          },
          "A Segment pickles as its name and geometry; unpickling opens it by name (and "
          "checks the geometry). unlink_on_close does not travel: the copy is no owner.")
      .def(
          "producer_ref", [](const PySegment& s) { return segment_role_ref(s, "producer"); },
          "A RoleRef to this ring's producer role: picklable, attaching nothing; "
          "ref.attach() in the receiving process attaches a producer there.")
      .def(
          "consumer_ref", [](const PySegment& s) { return segment_role_ref(s, "consumer"); },
          "A RoleRef to this ring's consumer role (see producer_ref).")
      .def(
          "producer",
          [](const PySegment& s) -> nb::object {
            const shmring::Segment& seg = s.open_seg();
            if (seg.geometry().kind == shmring::RingKind::spsc) {
              return nb::cast(new SP(seg, true, s.gpu), nb::rv_policy::take_ownership);
            }
            if (seg.geometry().kind == shmring::RingKind::broadcast) {
              return nb::cast(new BP(seg, true, s.gpu), nb::rv_policy::take_ownership);
            }
            return nb::cast(new MP(seg, false, s.gpu), nb::rv_policy::take_ownership);
          },
          "Attaches a producer of the ring's kind.")
      .def(
          "consumer",
          [](const PySegment& s) -> nb::object {
            const shmring::Segment& seg = s.open_seg();
            if (seg.geometry().kind == shmring::RingKind::spsc) {
              return nb::cast(new SC(seg, true, s.gpu), nb::rv_policy::take_ownership);
            }
            if (seg.geometry().kind == shmring::RingKind::broadcast) {
              throw StatusError("kind_mismatch", "segment '" + s.name +
                                                     "' holds a broadcast ring, which has "
                                                     "subscribers: use seg.subscriber(at=...)");
            }
            return nb::cast(new MC(seg, false, s.gpu), nb::rv_policy::take_ownership);
          },
          "Attaches a consumer of the ring's kind (spsc or mpmc).")
      .def(
          "subscriber",
          [](const PySegment& s, const std::string& at) {
            const shmring::Segment& seg = s.open_seg();
            return nb::cast(make_subscriber(seg, at, s.gpu), nb::rv_policy::take_ownership);
          },
          "at"_a = "next",
          "Attaches a subscriber of a broadcast ring, which reads every message from where it "
          "joins: at='next' (default) the first one published after now, 'oldest' the oldest "
          "the ring still holds, 'newest' the last one published.")
      .def(
          "subscriber_ref", [](const PySegment& s) { return segment_role_ref(s, "subscriber"); },
          "A RoleRef to a subscriber of this broadcast ring (see producer_ref); it attaches at "
          "'next'.")
      .def_prop_ro(
          "subscribers", [](const PySegment& s) { return s.open_seg().geometry().subscribers; },
          "Broadcast: how many subscribers may be attached at once (0 for other kinds).")
      .def_prop_ro(
          "lanes", [](const PySegment& s) { return s.open_seg().geometry().lanes; },
          "MPMC: the ring's owned lanes, one producer each; 0 for one lane the producers share "
          "(and "
          "for other kinds).")
      .def_prop_ro(
          "delivery",
          [](const PySegment& s) -> std::optional<std::string> {
            const shmring::Geometry& g = s.open_seg().geometry();
            if (g.kind != shmring::RingKind::broadcast) return std::nullopt;
            return shmring::to_string(g.delivery);
          },
          "Broadcast: 'reliable' or 'lossy'; None for other kinds.")
      .def(
          "register_cuda",
          [](PySegment& s, int device) { s.gpu->register_segment(s.open_seg(), device); },
          "device"_a = 0,
          "Registers this process's mapping of the segment with CUDA (mapped, portable), so "
          "that slots can be lent as GPU views (Slot.cuda()). Once per mapping.")
      .def_prop_ro(
          "cuda_device",
          [](const PySegment& s) -> std::optional<int> {
            if (!s.gpu->registered()) return std::nullopt;
            return s.gpu->device();
          },
          "The CUDA device the mapping is registered with, or None.")
      .def("__repr__", [](const PySegment& s) {
        if (!s.seg) return "<shmring.Segment '" + s.name + "' closed>";
        const shmring::Geometry& g = s.seg.geometry();
        const auto* control = reinterpret_cast<const shmring::ControlArea*>(s.seg.base());
        struct stat st {};
        char mode[16] = "?";
        if (fstat(s.seg.fd(), &st) == 0) {
          std::snprintf(mode, sizeof mode, "0o%o", static_cast<unsigned>(st.st_mode & 07777));
        }
        return "<shmring.Segment '" + s.name + "' " + s.kind() +
               " capacity=" + std::to_string(g.capacity) +
               " slot_size=" + std::to_string(g.slot_size) +
               (is_low_latency(s.seg) ? " slot_format=low_latency" : "") + " mode=" + mode +
               " head=" +
               std::to_string(shmring::atomic::load_acquire(&control->producer.position)) +
               " tail=" +
               std::to_string(shmring::atomic::load_acquire(&control->consumer.position)) +
               (s.unlink_on_close ? " unlink_on_close" : "") + ">";
      });

  m.def(
      "create",
      [](const std::string& name, const std::string& kind, std::uint64_t capacity,
         std::uint64_t slot_size, unsigned mode, const std::string& slot_format,
         bool unlink_on_close, nb::bytes metadata, std::uint32_t subscribers,
         const std::string& delivery, std::uint32_t lanes) {
        shmring::CreateOptions o;
        o.subscribers = subscribers;
        o.lanes = lanes;
        if (delivery == "lossy") {
          o.delivery = shmring::Delivery::lossy;
        } else if (delivery != "reliable") {
          throw StatusError("invalid_argument",
                            "delivery must be 'reliable' or 'lossy', not '" + delivery + "'");
        }
        o.metadata.assign(metadata.c_str(), metadata.size());
        o.kind = parse_kind(kind);
        o.capacity = capacity;
        o.slot_size = slot_size;
        o.mode = static_cast<mode_t>(mode);
        o.format = parse_slot_format(slot_format);
        auto* s = new PySegment(shmring::Segment::create(name, o));
        s->unlink_on_close = unlink_on_close;
        return s;
      },
      "name"_a, "kind"_a = "spsc", "capacity"_a = 1024, "slot_size"_a = 1024, "mode"_a = 0600,
      "slot_format"_a = "plain", "unlink_on_close"_a = false, "metadata"_a = nb::bytes(""),
      "subscribers"_a = 0, "delivery"_a = "reliable", "lanes"_a = 0, nb::rv_policy::take_ownership,
      "Creates a segment holding one ring; slot_format is 'plain' or 'low_latency'.");
  m.def(
      "open",
      [](const std::string& name, std::optional<std::string> kind, bool allow_foreign_owner,
         double init_timeout) {
        shmring::OpenOptions o;
        if (kind) o.kind = parse_kind(*kind);
        o.allow_foreign_owner = allow_foreign_owner;
        if (!(init_timeout >= 0)) {
          throw StatusError("invalid_argument", "init_timeout must be >= 0 seconds");
        }
        o.init_timeout = std::chrono::milliseconds(static_cast<std::int64_t>(init_timeout * 1000));
        auto* s = new PySegment(shmring::Segment::open(name, o));
        s->allow_foreign_owner = allow_foreign_owner;
        s->init_timeout = init_timeout;
        return s;
      },
      "name"_a, "kind"_a = nb::none(), "allow_foreign_owner"_a = false, "init_timeout"_a = 1.0,
      nb::rv_policy::take_ownership,
      "Opens an existing segment (of the given kind, if one is given). A segment owned by "
      "another user is refused unless allow_foreign_owner; init_timeout (seconds) bounds the "
      "wait for a creator still initialising it.");
  m.def(
      "unlink",
      [](const std::string& name, bool missing_ok) {
        try {
          shmring::Segment::unlink(name);
        } catch (const shmring::Error& e) {
          if (!(missing_ok && e.code() == shmring::errc::not_found)) throw;
        }
      },
      "name"_a, "missing_ok"_a = false,
      "Removes the segment's name; processes that have it mapped keep their mapping.");
}
