// Build-wide macros shared by the host and device halves of shmring.
#pragma once

// One spelling for "callable from host and device". Under nvcc the ring views
// compile for both sides; under a plain C++ compiler the macro vanishes so the
// same headers build with g++/clang and no CUDA toolkit.
#if defined(__CUDACC__)
#define SHMRING_HD __host__ __device__
#else
#define SHMRING_HD
#endif

// Unrolls the next loop (fixed trip count) under nvcc, clang and gcc alike.
#if defined(__CUDACC__) || defined(__clang__)
#define SHMRING_UNROLL _Pragma("unroll")
#elif defined(__GNUC__)
#define SHMRING_UNROLL _Pragma("GCC unroll 16")
#else
#define SHMRING_UNROLL
#endif

#define SHMRING_VERSION_MAJOR 0
#define SHMRING_VERSION_MINOR 1
#define SHMRING_VERSION_PATCH 0
