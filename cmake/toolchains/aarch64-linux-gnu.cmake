# Cross-compiling shmring for 64-bit ARM Linux (Jetson AGX Orin and other
# aarch64 boards) from an x86-64 Debian or Ubuntu host:
#
#   cmake -S . -B build-aarch64 \
#     -DCMAKE_TOOLCHAIN_FILE=cmake/toolchains/aarch64-linux-gnu.cmake
#
# Needs the GNU cross compiler and the target's C library and libstdc++
# (Debian 12: g++-aarch64-linux-gnu, libc6-dev-arm64-cross,
# libstdc++-12-dev-arm64-cross; scripts/setup.sh installs them). Where
# qemu-aarch64 (Debian: qemu-user) is on PATH, it becomes the emulator that
# ctest runs the test executables under, with the cross C library's loader.
#
# Variables (-D... or the environment):
#   SHMRING_CROSS_PREFIX   compiler prefix (default aarch64-linux-gnu-)
#   SHMRING_CROSS_SYSROOT  the target's root: libraries and loader
#                          (default /usr/aarch64-linux-gnu, the Debian
#                          cross packages' location)

set(CMAKE_SYSTEM_NAME Linux)
set(CMAKE_SYSTEM_PROCESSOR aarch64)

foreach(var SHMRING_CROSS_PREFIX SHMRING_CROSS_SYSROOT)
  if(NOT DEFINED ${var} AND DEFINED ENV{${var}})
    set(${var} "$ENV{${var}}")
  endif()
endforeach()
if(NOT DEFINED SHMRING_CROSS_PREFIX)
  set(SHMRING_CROSS_PREFIX aarch64-linux-gnu-)
endif()
if(NOT DEFINED SHMRING_CROSS_SYSROOT)
  set(SHMRING_CROSS_SYSROOT /usr/aarch64-linux-gnu)
endif()
# try_compile() projects run this file again in a fresh scope: pass the
# choices on to them.
list(APPEND CMAKE_TRY_COMPILE_PLATFORM_VARIABLES SHMRING_CROSS_PREFIX SHMRING_CROSS_SYSROOT)

set(CMAKE_C_COMPILER ${SHMRING_CROSS_PREFIX}gcc)
set(CMAKE_CXX_COMPILER ${SHMRING_CROSS_PREFIX}g++)

# Libraries, headers and CMake packages come from the target's root only,
# never from the host's /usr (an x86-64 libgtest or libucx would not link);
# programs (the build's own tools) from the host. A mode given on the command
# line wins (-DCMAKE_FIND_ROOT_PATH_MODE_PACKAGE=BOTH finds packages installed
# into a staging prefix outside the root, as tests/package does).
list(APPEND CMAKE_FIND_ROOT_PATH ${SHMRING_CROSS_SYSROOT})
set(_shmring_modes PROGRAM NEVER LIBRARY ONLY INCLUDE ONLY PACKAGE ONLY)
while(_shmring_modes)
  list(POP_FRONT _shmring_modes kind mode)
  if(NOT DEFINED CMAKE_FIND_ROOT_PATH_MODE_${kind})
    set(CMAKE_FIND_ROOT_PATH_MODE_${kind} ${mode})
  endif()
endwhile()

# -L: where qemu finds the target's dynamic loader and shared libraries.
#
# taskset: qemu runs on one host CPU, every guest thread with it. qemu-user
# translates ARM's store-release (stlr) and load-acquire (ldar) into an x86
# store and load with no barrier between them, so a seq_cst store followed by
# a seq_cst load of another word can be reordered through the host's store
# buffer: the outcome ARMv8 forbids for that pair, and C++ for seq_cst
# (two threads, each storing one word and loading the other, both read the
# old values), which shmring's handshakes rely on (a broadcast subscriber's
# join against the producer's floor, the MPMC claim records). A two-thread
# litmus test under qemu-aarch64 on a 2-vCPU x86 VM read it in 15117 of
# 200000 rounds, and BroadcastReliable.JoinsRacingTheProducerNeverRead-
# ARewrittenSlot failed in 3 of 10 runs; on one host CPU no other thread
# sees a store still in the buffer, and that test passed 12 of 12.
if(NOT DEFINED CMAKE_CROSSCOMPILING_EMULATOR)
  find_program(SHMRING_QEMU_AARCH64 qemu-aarch64)
  find_program(SHMRING_TASKSET taskset)
  if(SHMRING_QEMU_AARCH64)
    set(CMAKE_CROSSCOMPILING_EMULATOR ${SHMRING_QEMU_AARCH64} -L ${SHMRING_CROSS_SYSROOT})
    if(SHMRING_TASKSET)
      # The first CPU this process may use (a container may exclude CPU 0).
      set(_shmring_cpu 0)
      if(EXISTS /proc/self/status)
        file(STRINGS /proc/self/status _shmring_allowed REGEX "^Cpus_allowed_list:")
        if(_shmring_allowed MATCHES "^Cpus_allowed_list:[ \t]*([0-9]+)")
          set(_shmring_cpu "${CMAKE_MATCH_1}")
        endif()
      endif()
      list(PREPEND CMAKE_CROSSCOMPILING_EMULATOR ${SHMRING_TASKSET} -c ${_shmring_cpu})
    endif()
  endif()
endif()
