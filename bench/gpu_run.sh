#!/usr/bin/env bash
# Runs shmring_gpu_bench on a GPU host with its defaults and keeps the report:
#   bench/results/h100/gpu.md    the markdown tables (also printed)
#   bench/results/h100/gpu.json  the same numbers, machine-readable
#
# Build (on any machine with the CUDA toolkit; no GPU needed there):
#   cmake -S . -B build-gpu -DCMAKE_BUILD_TYPE=Release -DSHMRING_BUILD_TESTS=OFF
#   cmake --build build-gpu --target shmring_gpu_bench gpu_frames -j2
# The binaries link the CUDA runtime statically and need only libstdc++ and
# libc (plus the NVIDIA driver) at run time. Copy build-gpu/bench/shmring_gpu_bench
# (and build-gpu/examples/gpu_frames) to the same paths in a checkout on the
# GPU host, then run from the repository root there:
#   bench/gpu_run.sh                  the whole benchmark, about 1-2 minutes on an H100
#   bench/gpu_run.sh --cpus 4,6       extra arguments go to shmring_gpu_bench (--help)
#   build-gpu/examples/gpu_frames     the example, on its own
# Environment: SHMRING_GPU_BENCH (the binary), SHMRING_GPU_RESULTS (the
# output folder, default bench/results/h100).
# Exit status: the benchmark's: 0 every message verified, 1 a verification or
# a run failed, 77 no CUDA device (nothing written).
set -uo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
bench=${SHMRING_GPU_BENCH:-$root/build-gpu/bench/shmring_gpu_bench}
out=${SHMRING_GPU_RESULTS:-$root/bench/results/h100}

if [[ ! -x $bench ]]; then
  echo "gpu_run.sh: $bench is missing; build it first (see the top of this script)" >&2
  exit 2
fi
mkdir -p "$out"
"$bench" --json "$out/gpu.json.tmp" "$@" | tee "$out/gpu.md.tmp"
status=${PIPESTATUS[0]}
if [[ $status -eq 77 || ! -s $out/gpu.md.tmp ]]; then
  rm -f "$out/gpu.md.tmp" "$out/gpu.json.tmp"
  rmdir "$out" 2>/dev/null
  exit "$status"
fi
mv "$out/gpu.md.tmp" "$out/gpu.md"
[[ -f $out/gpu.json.tmp ]] && mv "$out/gpu.json.tmp" "$out/gpu.json"
echo "gpu_run.sh: wrote $out/gpu.md and $out/gpu.json (exit status $status)" >&2
exit "$status"
