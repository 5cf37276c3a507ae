// The DLPack exchange ABI (version 1.0), declared here from the published
// specification (dmlc/dlpack) so the module needs no extra dependency. These
// structs cross library boundaries (CuPy, PyTorch), so their layout is fixed
// by the specification and must not change.
#pragma once

#include <cstdint>

namespace shmring_py::dlpack {

enum DeviceType : std::int32_t { kCPU = 1, kCUDA = 2 };

enum TypeCode : std::uint8_t {
  kInt = 0,
  kUInt = 1,
  kFloat = 2,
  kBfloat = 4,
  kComplex = 5,
  kBool = 6
};

struct Device {
  std::int32_t device_type;
  std::int32_t device_id;
};

struct DataType {
  std::uint8_t code;
  std::uint8_t bits;
  std::uint16_t lanes;
};

struct Tensor {
  void* data;
  Device device;
  std::int32_t ndim;
  DataType dtype;
  std::int64_t* shape;
  std::int64_t* strides;  // null: C-contiguous
  std::uint64_t byte_offset;
};

// The pre-1.0 capsule payload ("dltensor").
struct ManagedTensor {
  Tensor dl_tensor;
  void* manager_ctx;
  void (*deleter)(ManagedTensor* self);
};

struct Version {
  std::uint32_t major;
  std::uint32_t minor;
};

// The 1.0 capsule payload ("dltensor_versioned").
struct ManagedTensorVersioned {
  Version version;
  void* manager_ctx;
  void (*deleter)(ManagedTensorVersioned* self);
  std::uint64_t flags;
  Tensor dl_tensor;
};

constexpr std::uint64_t kFlagReadOnly = 1;

static_assert(sizeof(Device) == 8 && sizeof(DataType) == 4);
static_assert(sizeof(Tensor) == 48, "DLTensor is 48 bytes on LP64");
static_assert(sizeof(ManagedTensor) == 64 && sizeof(ManagedTensorVersioned) == 80);

}  // namespace shmring_py::dlpack
