#!/usr/bin/env bash
# Puts a built shmring_bench, iox-roudi and the shared libraries they load
# into one folder, for a host with neither the iceoryx packages nor a network
# (docs/benchmarks.md, "On another host"):
#
#   bench/bundle.sh OUT                 OUT/shmring_bench, OUT/iox-roudi, OUT/lib/*.so*,
#                                       OUT/build-info.txt (the commit it was built from)
#   bench/bundle.sh OUT --python        also OUT/wheels: the shmring wheel (pip wheel .)
#                                       and iceoryx2 and numpy (pip download), for
#                                       pip install --no-index --find-links OUT/wheels
#
# Options:
#   --bin PATH     the shmring_bench to take (default: build-bench/bench/shmring_bench,
#                  built as run.sh builds it when missing)
#   --roudi PATH   the iox-roudi to take (default: the one on PATH)
#
# glibc's own libraries (libc, libm, libpthread, libdl, librt, libresolv, the loader) stay
# out: the host's are used, so it needs a glibc at least as new as this one's.
# On the host, from a checkout of the same commit:
#   LD_LIBRARY_PATH=OUT/lib SHMRING_BENCH_IOX_ROUDI=OUT/iox-roudi \
#     bench/run.sh --bin OUT/shmring_bench ...
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
out=""
bin=""
roudi=""
python=0
while [[ $# -gt 0 ]]; do
  case "$1" in
    --bin) bin=$2; shift ;;
    --roudi) roudi=$2; shift ;;
    --python) python=1 ;;
    -h|--help) awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "${BASH_SOURCE[0]}"; exit 0 ;;
    -*) echo "bundle.sh: unknown option '$1' (try --help)" >&2; exit 2 ;;
    *) [[ -z "$out" ]] || { echo "bundle.sh: one output folder only" >&2; exit 2; }; out=$1 ;;
  esac
  shift
done
[[ -n "$out" ]] || { echo "usage: bench/bundle.sh OUT [--python] [--bin PATH] [--roudi PATH]" >&2; exit 2; }

if [[ -z "$bin" ]]; then
  build_dir="$root/build-bench"
  if [[ ! -f "$build_dir/CMakeCache.txt" ]]; then
    cmake -S "$root" -B "$build_dir" -DCMAKE_BUILD_TYPE=Release \
      -DSHMRING_BUILD_BENCH=ON -DSHMRING_BUILD_TESTS=OFF -DSHMRING_BUILD_EXAMPLES=OFF \
      -DSHMRING_BUILD_TOOLS=OFF >/dev/null
  fi
  cmake --build "$build_dir" --target shmring_bench -j "${SHMRING_BENCH_JOBS:-2}" >/dev/null
  bin="$build_dir/bench/shmring_bench"
  # Built from this checkout just now: its commit, and whether it had changes.
  origin="commit=$(git -C "$root" rev-parse --short HEAD 2>/dev/null || echo unknown)$(git -C "$root" diff --quiet HEAD 2>/dev/null || echo '+dirty')"
else
  origin="commit=unknown (--bin $bin)"
fi
[[ -x "$bin" ]] || { echo "bundle.sh: no benchmark binary at $bin" >&2; exit 2; }
roudi=${roudi:-$(command -v iox-roudi || true)}
[[ -n "$roudi" && -x "$roudi" ]] ||
  { echo "bundle.sh: no iox-roudi (install the iceoryx package, or --roudi PATH)" >&2; exit 2; }

mkdir -p "$out/lib"
cp "$bin" "$out/shmring_bench"
# Which build a measurement ran (bench/broadcast_scaling.sh copies it into its report).
printf '%s\nbundled=%s\n' "$origin" "$(date -u +%Y-%m-%dT%H:%M:%SZ)" >"$out/build-info.txt"
cp "$roudi" "$out/iox-roudi"
# Every library either binary loads, resolved as ldd sees it here.
ldd "$bin" "$roudi" | awk '$2 == "=>" && $3 ~ /^\// { print $3 }' | sort -u |
  while read -r lib; do
    case "$(basename "$lib")" in
      libc.so.*|libm.so.*|libpthread.so.*|libdl.so.*|librt.so.*|libresolv.so.*|ld-linux*) continue ;;
    esac
    cp -L "$lib" "$out/lib/"
  done

if [[ $python == 1 ]]; then
  mkdir -p "$out/wheels"
  python3 -m pip wheel -q --no-deps -w "$out/wheels" "$root"
  python3 -m pip download -q -d "$out/wheels" iceoryx2 numpy
fi

# The bundle must run on its own: nothing missing with only OUT/lib added.
if LD_LIBRARY_PATH="$out/lib" ldd "$out/shmring_bench" "$out/iox-roudi" | grep -q "not found"; then
  echo "bundle.sh: libraries missing from the bundle:" >&2
  LD_LIBRARY_PATH="$out/lib" ldd "$out/shmring_bench" "$out/iox-roudi" | grep "not found" >&2
  exit 1
fi
echo "bundle: $out ($(du -sh "$out" | cut -f1)); on the host, from a checkout of $(git -C "$root" rev-parse --short HEAD 2>/dev/null || echo 'the same commit'):"
echo "  LD_LIBRARY_PATH=$out/lib SHMRING_BENCH_IOX_ROUDI=$out/iox-roudi bench/run.sh --bin $out/shmring_bench"
