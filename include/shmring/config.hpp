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

// SHMRING_VERSION_MAJOR/MINOR/PATCH, generated from CMakeLists.txt's
// project(VERSION) into the build tree and installed beside this header.
#include "shmring/version.hpp"
