#include "gpu_view.hpp"

#include <nanobind/stl/optional.h>
#include <nanobind/stl/string.h>

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "dlpack.hpp"

#if SHMRING_HAVE_CUDA
#include "shmring/cuda/capabilities.hpp"
#include "shmring/cuda/registration.hpp"
#endif

namespace shmring_py {

using namespace nb::literals;

// ---- registration ------------------------------------------------------------

#if SHMRING_HAVE_CUDA
struct GpuState::Impl {
  shmring::cuda::Registration registration;
};
bool built_with_cuda() noexcept { return true; }
int gpu_count() noexcept { return shmring::cuda::device_count(); }
#else
struct GpuState::Impl {};
bool built_with_cuda() noexcept { return false; }
int gpu_count() noexcept { return 0; }
#endif

GpuState::GpuState() : impl(std::make_unique<Impl>()) {}
GpuState::~GpuState() = default;

void GpuState::register_segment(const shmring::Segment& segment, int device) {
#if SHMRING_HAVE_CUDA
  if (impl->registration) {
    if (impl->registration.device() == device) return;
    throw shmring::Error(make_error_code(shmring::errc::cuda_error),
                         "segment '" + segment.name() + "' is already registered with device " +
                             std::to_string(impl->registration.device()) + ", not " +
                             std::to_string(device));
  }
  try {
    impl->registration = shmring::cuda::Registration::register_segment(segment, device);
  } catch (const shmring::Error& e) {
    // The device checks run before the segment is looked at and name none
    // ("segment '(none)': ..."); the caller asked about this segment.
    std::string message = e.what();
    // std::system_error appended ": <code's message>"; the new Error does again.
    const std::string suffix = ": " + e.code().message();
    if (message.size() >= suffix.size() &&
        message.compare(message.size() - suffix.size(), suffix.size(), suffix) == 0) {
      message.resize(message.size() - suffix.size());
    }
    const std::string none = "segment '(none)'";
    if (const auto at = message.find(none); at != std::string::npos) {
      message.replace(at, none.size(), "segment '" + segment.name() + "'");
    } else if (message.find(segment.name()) == std::string::npos) {
      message = "segment '" + segment.name() + "': " + message;
    }
    throw shmring::Error(e.code(), message);
  }
#else
  (void)device;
  throw shmring::Error(make_error_code(shmring::errc::no_gpu),
                       "cannot register segment '" + segment.name() +
                           "' with CUDA: this shmring module was built without the CUDA toolkit");
#endif
}

bool GpuState::registered() const noexcept {
#if SHMRING_HAVE_CUDA
  return static_cast<bool>(impl->registration);
#else
  return false;
#endif
}

int GpuState::device() const noexcept {
#if SHMRING_HAVE_CUDA
  return impl->registration ? impl->registration.device() : -1;
#else
  return -1;
#endif
}

std::uintptr_t GpuState::device_address(const std::byte* host) const {
#if SHMRING_HAVE_CUDA
  const auto& r = impl->registration;
  return reinterpret_cast<std::uintptr_t>(r.device_pointer()) +
         static_cast<std::uintptr_t>(host - r.host_pointer());
#else
  (void)host;
  return 0;
#endif
}

// ---- the view ------------------------------------------------------------------

namespace {

struct GpuView {
  nb::object slot;  // the Slot; this view is one of its exports
  std::uintptr_t address = 0;
  int device = 0;
  bool readonly = false;
  std::vector<std::int64_t> shape;
  std::string typestr;
  dlpack::DataType dtype{dlpack::kUInt, 8, 1};
  bool has_dlpack_type = true;

  GpuView() = default;
  GpuView(const GpuView&) = delete;
  ~GpuView() {
    if (slot.is_valid()) nb::inst_ptr<Slot>(slot)->unexport();
  }
};

// The capsule's manager context: holds a reference to the GpuView (and so
// the slot export) until the consumer's tensor is gone.
struct Manager {
  PyObject* view;
  std::vector<std::int64_t> shape;
};

void drop_manager(void* ctx) {
  auto* m = static_cast<Manager*>(ctx);
  // DLPack deleters may run on any thread, with or without the GIL.
  if (Py_IsInitialized()) {
    PyGILState_STATE g = PyGILState_Ensure();
    Py_DECREF(m->view);
    PyGILState_Release(g);
  }
  delete m;
}

void delete_legacy(dlpack::ManagedTensor* t) {
  drop_manager(t->manager_ctx);
  delete t;
}

void delete_versioned(dlpack::ManagedTensorVersioned* t) {
  drop_manager(t->manager_ctx);
  delete t;
}

// Capsule destructors: a capsule never consumed still owns its tensor.
void legacy_capsule_destructor(PyObject* capsule) {
  if (PyCapsule_IsValid(capsule, "dltensor")) {
    auto* t = static_cast<dlpack::ManagedTensor*>(PyCapsule_GetPointer(capsule, "dltensor"));
    t->deleter(t);
  }
}

void versioned_capsule_destructor(PyObject* capsule) {
  if (PyCapsule_IsValid(capsule, "dltensor_versioned")) {
    auto* t = static_cast<dlpack::ManagedTensorVersioned*>(
        PyCapsule_GetPointer(capsule, "dltensor_versioned"));
    t->deleter(t);
  }
}

dlpack::Tensor tensor_of(GpuView& v, Manager& m) {
  dlpack::Tensor t{};
  t.data = reinterpret_cast<void*>(v.address);
  t.device = {dlpack::kCUDA, v.device};
  t.ndim = static_cast<std::int32_t>(m.shape.size());
  t.dtype = v.dtype;
  t.shape = m.shape.data();
  t.strides = nullptr;
  t.byte_offset = 0;
  return t;
}

nb::object dlpack_capsule(nb::handle self, std::optional<nb::tuple> max_version,
                          std::optional<nb::tuple> dl_device, std::optional<bool> copy) {
  GpuView& v = nb::cast<GpuView&>(self);
  if (!v.has_dlpack_type) {
    throw nb::buffer_error(("the record's dtype (typestr '" + v.typestr +
                            "') has no DLPack equivalent; use __cuda_array_interface__")
                               .c_str());
  }
  if (copy && *copy)
    throw nb::buffer_error("a GPU view of a slot is zero-copy; copy=True is refused");
  if (dl_device) {
    const int type = nb::cast<int>((*dl_device)[0]);
    const int id = nb::cast<int>((*dl_device)[1]);
    if (type != dlpack::kCUDA || id != v.device) {
      throw nb::buffer_error(("the slot is on CUDA device " + std::to_string(v.device) +
                              "; it cannot be exported to device (" + std::to_string(type) + ", " +
                              std::to_string(id) + ") without a copy")
                                 .c_str());
    }
  }
  auto* m = new Manager{self.ptr(), v.shape};
  Py_INCREF(self.ptr());
  const bool versioned =
      max_version && nb::len(*max_version) >= 1 && nb::cast<int>((*max_version)[0]) >= 1;
  PyObject* capsule = nullptr;
  if (versioned) {
    auto* t = new dlpack::ManagedTensorVersioned{};
    t->version = {1, 0};
    t->manager_ctx = m;
    t->deleter = delete_versioned;
    t->flags = v.readonly ? dlpack::kFlagReadOnly : 0;
    t->dl_tensor = tensor_of(v, *m);
    capsule = PyCapsule_New(t, "dltensor_versioned", versioned_capsule_destructor);
    if (!capsule) delete_versioned(t);
  } else {
    auto* t = new dlpack::ManagedTensor{};
    t->manager_ctx = m;
    t->deleter = delete_legacy;
    t->dl_tensor = tensor_of(v, *m);
    capsule = PyCapsule_New(t, "dltensor", legacy_capsule_destructor);
    if (!capsule) delete_legacy(t);
  }
  if (!capsule) throw nb::python_error();
  return nb::steal(capsule);
}

nb::tuple shape_tuple(const std::vector<std::int64_t>& shape) {
  PyObject* t = PyTuple_New(static_cast<Py_ssize_t>(shape.size()));
  if (!t) throw nb::python_error();
  for (std::size_t i = 0; i < shape.size(); ++i) {
    PyTuple_SET_ITEM(t, static_cast<Py_ssize_t>(i), PyLong_FromLongLong(shape[i]));
  }
  return nb::steal<nb::tuple>(t);
}

nb::dict cuda_array_interface(const GpuView& v) {
  if (v.typestr.empty()) {
    throw nb::value_error(
        "the record's dtype has no array-interface typestr (a structured dtype?)");
  }
  nb::dict d;
  d["shape"] = shape_tuple(v.shape);
  d["typestr"] = v.typestr;
  d["data"] = nb::make_tuple(nb::int_(v.address), v.readonly);
  d["strides"] = nb::none();  // C-contiguous
  d["version"] = 3;
  // The bytes were written by a CPU process or by a kernel that has
  // finished: there is no stream work to wait for.
  d["stream"] = nb::none();
  return d;
}

}  // namespace

nb::object make_gpu_view(nb::handle slot_obj) {
  Slot& s = nb::cast<Slot&>(slot_obj);
  s.check_active();
  if (!s.handle->gpu || !s.handle->gpu->registered()) {
    if (!built_with_cuda()) {
      throw shmring::Error(make_error_code(shmring::errc::no_gpu),
                           "no GPU view: this shmring module was built without the CUDA toolkit");
    }
    throw shmring::Error(make_error_code(shmring::errc::gpu_not_allowed),
                         "no GPU view: the segment is not registered with CUDA in this process "
                         "(call Segment.register_cuda() first)");
  }
  auto* v = new GpuView();
  v->address = s.handle->gpu->device_address(s.data);
  v->device = s.handle->gpu->device();
  v->readonly = !s.writable;
  if (s.record) {
    for (const Py_ssize_t n : s.record->shape) v->shape.push_back(n);
    v->typestr = s.record->typestr;
    v->has_dlpack_type = s.record->dlpack_code >= 0;
    if (v->has_dlpack_type) {
      v->dtype = {static_cast<std::uint8_t>(s.record->dlpack_code),
                  static_cast<std::uint8_t>(8 * s.record->itemsize), 1};
    }
  } else {
    v->shape.push_back(static_cast<std::int64_t>(s.capacity));
    v->typestr = "|u1";
  }
  nb::object obj = nb::cast(v, nb::rv_policy::take_ownership);
  v->slot = nb::borrow(slot_obj);
  s.exports++;
  return obj;
}

void bind_gpu(nb::module_& m) {
  nb::class_<GpuView>(m, "GpuView",
                      "A slot as a device array (no copy): cupy.asarray(view), "
                      "torch.as_tensor(view, device='cuda') or torch.from_dlpack(view). It counts "
                      "as a view of the slot: the slot is not recycled while it (or an array on "
                      "it) lives.")
      .def_prop_ro("__cuda_array_interface__", &cuda_array_interface)
      .def(
          "__dlpack__",
          [](nb::handle self, nb::handle stream, std::optional<nb::tuple> max_version,
             std::optional<nb::tuple> dl_device, std::optional<bool> copy) {
            // No stream work is pending on the slot (see "stream" above), so
            // the consumer's stream needs no event.
            (void)stream;
            return dlpack_capsule(self, max_version, dl_device, copy);
          },
          nb::kw_only(), "stream"_a = nb::none(), "max_version"_a = nb::none(),
          "dl_device"_a = nb::none(), "copy"_a = nb::none())
      .def("__dlpack_device__",
           [](const GpuView& v) { return nb::make_tuple(int(dlpack::kCUDA), v.device); })
      .def_prop_ro("device", [](const GpuView& v) { return v.device; })
      .def_prop_ro(
          "address", [](const GpuView& v) { return v.address; }, "The slot's device address.")
      .def_prop_ro("readonly", [](const GpuView& v) { return v.readonly; })
      .def_prop_ro("shape", [](const GpuView& v) { return shape_tuple(v.shape); });

  m.def("built_with_cuda", &built_with_cuda,
        "True if this module was built with the CUDA toolkit (GPU views possible).");
  m.def("gpu_count", &gpu_count,
        "CUDA devices visible to this process; 0 without driver or device.");
}

}  // namespace shmring_py
