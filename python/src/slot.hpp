// One slot lent in place to Python, and what every role handle shares with
// the slots it lends.
//
// A Slot lends one claimed (producer) or peeked (consumer) slot through the
// buffer protocol and, where the segment is registered with CUDA, as a GPU
// view (gpu_view.hpp); it keeps its role handle, and so the mapping, alive.
// Every export (a buffer view or a GPU view) is counted. Once the slot is
// finished (committed, aborted or released) it refuses new exports. If some
// are still alive when it is finished, the slot stays held (the commit,
// abort or release is deferred until the last export goes), so no view ever
// reads or writes a recycled slot: the core's abort and release hand the
// slot's memory to the next writer at once, so neither can run while a view
// of it lives. An explicit commit/abort/release then raises BufferError to
// say so; a `with` block left by an exception does not (abandon()), so the
// block's own exception is the one that propagates.
#pragma once

#include <Python.h>
#include <nanobind/nanobind.h>

#include <cstddef>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include "shmring/shmring.hpp"

namespace shmring_py {

namespace nb = nanobind;

// A failure that maps to shmring.Error, its errc given by name
// (shmring/_errors.py picks the subclass).
struct StatusError : std::runtime_error {
  StatusError(std::string errc_, const std::string& message)
      : std::runtime_error(message), errc(std::move(errc_)) {}
  std::string errc;
};

// A fixed-shape record (a numpy dtype and shape) that typed handles lend
// every slot as; python/shmring/typed.py derives it from the dtype.
struct Record {
  std::string format;   // PEP 3118 format of one item, for the buffer protocol
  std::string typestr;  // numpy array-interface typestr ("<f4"), for GPU views
  std::size_t itemsize = 1;
  std::vector<Py_ssize_t> shape;
  std::vector<Py_ssize_t> strides;  // C-contiguous, in bytes
  int dlpack_code = -1;             // DLPack type code, -1 if it has none
  std::size_t nbytes = 0;
};

struct GpuState;  // gpu_view.hpp: the segment's CUDA registration, if any

struct Slot;

struct HandleBase {
  virtual ~HandleBase() = default;
  virtual void finish(Slot& s, bool commit) noexcept = 0;
  // Gives the role back (the core handle is reset) and drops the mapping.
  virtual void drop_role() noexcept = 0;
  bool single = false;  // SPSC: one slot lent at a time
  bool busy = false;    // a call is running (GIL released) on this handle
  int outstanding = 0;  // slots lent and not finished
  // close(): no call is accepted any more. While slots are still lent the
  // role stays held (a view may still write into one) and is given back
  // when the last of them is finished (close_pending).
  bool closed = false;
  bool close_pending = false;
  std::string segment_name;    // for messages, repr and pickling
  std::string role;            // "producer" or "consumer"
  shmring::Geometry geometry;  // the ring's, kept after close for ref() and repr
  // The ring's shared positions, for len() and repr; valid while `mapping`
  // (the segment's lifetime token) is held, i.e. until the role is dropped.
  const shmring::ControlArea* control = nullptr;
  std::shared_ptr<const void> mapping;

  void release_role() noexcept {
    drop_role();
    control = nullptr;
    mapping.reset();
    close_pending = false;
  }
  std::shared_ptr<const Record> record;  // typed handles: what each slot holds
  std::shared_ptr<GpuState> gpu;         // shared with the segment
};

struct Slot {
  enum class State { active, deferred, done };
  nb::object owner;  // the role handle: keeps it and the mapping alive
  HandleBase* handle = nullptr;
  bool writable = false;
  shmring::WriteClaim wclaim;
  shmring::ReadClaim rclaim;
  std::byte* data = nullptr;
  std::size_t capacity = 0;  // bytes exported: the slot or record (write), the message (read)
  std::size_t size = 0;      // bytes published on commit / the message's size
  // A claim publishes only a size it was given (write(), size = n or
  // commit(n)), never the whole slot by default: bytes of earlier messages
  // would go out with it. Typed slots and peeks start with it set.
  bool size_set = false;
  std::uint64_t position = 0;            // the slot's ring position, for repr
  std::shared_ptr<const Record> record;  // null: the slot is lent as plain bytes
  State state = State::active;
  bool commit_on_finish = false;
  Py_ssize_t exports = 0;  // live buffer views and GPU views

  Slot() = default;
  Slot(const Slot&) = delete;
  ~Slot() {
    if (state != State::done && handle) complete(false);
  }

  void complete(bool commit) {
    handle->finish(*this, commit && writable);
    handle->outstanding--;
    state = State::done;
    if (handle->close_pending && handle->outstanding == 0) handle->release_role();
  }

  // Commits (commit=true) or aborts a write slot, releases a read slot.
  void finish(bool commit) {
    if (state != State::active) return;
    if (exports > 0) {
      state = State::deferred;
      commit_on_finish = commit;
      throw nb::buffer_error(
          (std::to_string(exports) +
           " view(s) of the slot are still alive; the slot stays held until they are released "
           "(memoryview.release() or del)")
              .c_str());
    }
    complete(commit);
  }

  // Leaving a `with` block by an exception: aborts a claim, releases a peek,
  // or, while views are alive (a traceback's frames often hold them), defers
  // that to the last view without raising, so the exception in flight is not
  // replaced by a BufferError.
  void abandon() noexcept {
    if (state != State::active) return;
    if (exports > 0) {
      state = State::deferred;
      commit_on_finish = false;
      return;
    }
    complete(false);
  }

  // An export went away: a deferred slot completes with the last one.
  void unexport() {
    if (--exports == 0 && state == State::deferred) complete(commit_on_finish);
  }

  void set_size(std::size_t n) {
    if (!writable) throw std::runtime_error("a read slot's size cannot be set");
    if (state != State::active) throw nb::buffer_error("the slot was already finished");
    if (record && n != record->nbytes) {
      throw nb::value_error(("a typed slot always holds one record of " +
                             std::to_string(record->nbytes) + " bytes, not " + std::to_string(n))
                                .c_str());
    }
    if (n > capacity) {
      throw nb::value_error(
          ("size " + std::to_string(n) + " exceeds the slot size " + std::to_string(capacity))
              .c_str());
    }
    size = n;
    size_set = true;
  }

  // A claim about to be published must have been given its size.
  void check_size_set() const {
    if (writable && !size_set) {
      throw StatusError(
          "size_not_set",
          "the claimed slot's size was never set, so nothing says how many of its " +
              std::to_string(capacity) +
              " bytes are the message: use slot.write(data), or set slot.size = n (or "
              "commit(n)) after writing through a view");
    }
  }

  void check_active() const {
    if (state != State::active) throw nb::buffer_error("the slot was already finished");
  }
};

}  // namespace shmring_py
