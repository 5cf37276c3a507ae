#!/usr/bin/env bash
# Puts built binaries and the shared libraries they load into one folder,
# for a host without those packages and without a network
# (docs/benchmarks.md, "On another host"):
#
#   bench/bundle.sh OUT                 OUT/shmring_bench, OUT/iox-roudi, OUT/lib/*.so*,
#                                       OUT/build-info.txt (the commit it was built from)
#   bench/bundle.sh OUT --python        also OUT/wheels: the shmring wheel (pip wheel .)
#                                       and iceoryx2 and numpy (pip download), for
#                                       pip install --no-index --find-links OUT/wheels
#   bench/bundle.sh OUT --gst           GStreamer instead, for bench/gst_cuda_run.sh:
#                                       OUT/bin/gst-launch-1.0, gst-inspect-1.0,
#                                       OUT/libexec/gst-plugin-scanner, OUT/plugins (the
#                                       elements the benchmarks use, shmringsink and
#                                       shmringsrc among them), OUT/lib/*.so*, and OUT/gst-env,
#                                       which runs a command with that GStreamer alone
#   bench/bundle.sh OUT --gst --check   only checks that bundle: complete, nothing loaded
#                                       from outside it but glibc, shmringsink runs in an
#                                       empty environment (the bundle's own variables only)
#
# Options:
#   --bin PATH     the shmring_bench to take (default: build-bench/bench/shmring_bench,
#                  built as run.sh builds it when missing)
#   --roudi PATH   the iox-roudi to take (default: the one on PATH)
#   --plugin PATH  --gst: the libgstshmring.so to take (default:
#                  build-bench/gst/plugins/libgstshmring.so, built when missing)
#   --wheel PYTHON --gst: also OUT/wheels/shmring-*.whl, built by that interpreter
#                  (its version is the wheel's; it needs scikit-build-core and
#                  nanobind installed: the build runs without isolation, offline).
#                  The CUDA parts are built for CUDAARCHS (default 90, Hopper).
#
# glibc's own libraries (libc, libm, libpthread, libdl, librt, libresolv, the loader) stay
# out: the host's are used, so it needs a glibc at least as new as this one's.
# On the host, from a checkout of the same commit:
#   LD_LIBRARY_PATH=OUT/lib SHMRING_BENCH_IOX_ROUDI=OUT/iox-roudi \
#     bench/run.sh --bin OUT/shmring_bench ...
#   bench/gst_cuda_run.sh OUT           (a bundle made with --gst)
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
out=""
bin=""
roudi=""
plugin=""
wheel_python=""
python=0
gst=0
check=0
while [[ $# -gt 0 ]]; do
  case "$1" in
    --bin) bin=$2; shift ;;
    --roudi) roudi=$2; shift ;;
    --plugin) plugin=$2; shift ;;
    --wheel) wheel_python=$2; shift ;;
    --python) python=1 ;;
    --gst) gst=1 ;;
    --check) check=1 ;;
    -h|--help) awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "${BASH_SOURCE[0]}"; exit 0 ;;
    -*) echo "bundle.sh: unknown option '$1' (try --help)" >&2; exit 2 ;;
    *) [[ -z "$out" ]] || { echo "bundle.sh: one output folder only" >&2; exit 2; }; out=$1 ;;
  esac
  shift
done
[[ -n "$out" ]] || { echo "usage: bench/bundle.sh OUT [--python | --gst] [options] (try --help)" >&2; exit 2; }
if [[ $gst == 1 && ( $python == 1 || -n "$bin" || -n "$roudi" ) ]]; then
  echo "bundle.sh: --gst makes a GStreamer bundle; --python, --bin and --roudi are for the other" >&2
  exit 2
fi
if [[ $gst == 0 && ( -n "$plugin" || -n "$wheel_python" || $check == 1 ) ]]; then
  echo "bundle.sh: --plugin, --wheel and --check go with --gst" >&2
  exit 2
fi
[[ $check == 0 || -d $out ]] || { echo "bundle.sh: --check: no bundle folder $out" >&2; exit 2; }
mkdir -p "$out"
out=$(cd "$out" && pwd)  # ldd names what it finds through LD_LIBRARY_PATH as given

# build_target TARGET: builds TARGET in build-bench/, configured as run.sh does when missing.
build_target() {
  local build_dir="$root/build-bench"
  if [[ ! -f "$build_dir/CMakeCache.txt" ]]; then
    cmake -S "$root" -B "$build_dir" -DCMAKE_BUILD_TYPE=Release \
      -DSHMRING_BUILD_BENCH=ON -DSHMRING_BUILD_TESTS=OFF -DSHMRING_BUILD_EXAMPLES=OFF \
      -DSHMRING_BUILD_TOOLS=OFF >/dev/null
  fi
  cmake --build "$build_dir" --target "$1" -j "${SHMRING_BENCH_JOBS:-2}" >/dev/null
}

# copy_libs DEST FILE...: every library the files load, resolved as ldd sees it here.
copy_libs() {
  local dest=$1
  shift
  mkdir -p "$dest"
  ldd "$@" | awk '$2 == "=>" && $3 ~ /^\// { print $3 }' | sort -u |
    while read -r lib; do
      case "$(basename "$lib")" in
        libc.so.*|libm.so.*|libpthread.so.*|libdl.so.*|librt.so.*|libresolv.so.*|ld-linux*) continue ;;
      esac
      cp -L "$lib" "$dest/"
    done
}

# check_libs LIBDIR FILE...: the bundle must run on its own: with only LIBDIR added,
# nothing is missing, and nothing but glibc comes from outside LIBDIR.
check_libs() {
  local libdir=$1
  shift
  if ! command -v ldd >/dev/null; then
    echo "bundle.sh: no ldd here: the libraries are checked only by running the bundle" >&2
    return
  fi
  local report
  report=$(LD_LIBRARY_PATH="$libdir" ldd "$@")
  if grep -q "not found" <<<"$report"; then
    echo "bundle.sh: libraries missing from the bundle:" >&2
    grep "not found" <<<"$report" >&2
    exit 1
  fi
  local outside
  outside=$(awk -v lib="$libdir/" '$2 == "=>" && $3 ~ /^\// && index($3, lib) != 1 { print $3 }' <<<"$report" |
    grep -vE '/(libc|libm|libpthread|libdl|librt|libresolv)\.so|/ld-linux' | sort -u || true)
  if [[ -n "$outside" ]]; then
    echo "bundle.sh: libraries loaded from outside the bundle:" >&2
    echo "$outside" >&2
    exit 1
  fi
}

if [[ $gst == 1 && $check == 0 ]]; then
  if ! command -v gst-launch-1.0 >/dev/null || ! command -v pkg-config >/dev/null; then
    echo "bundle.sh: --gst needs gst-launch-1.0 and pkg-config (Debian: gstreamer1.0-tools pkg-config)" >&2
    exit 2
  fi
  plugins_dir=$(pkg-config --variable=pluginsdir gstreamer-1.0)
  scanner=$(pkg-config --variable=pluginscannerdir gstreamer-1.0)/gst-plugin-scanner
  if [[ -z "$plugin" ]]; then
    build_target gstshmring
    plugin="$root/build-bench/gst/plugins/libgstshmring.so"
  fi
  [[ -f "$plugin" ]] || { echo "bundle.sh: no shmring plugin at $plugin" >&2; exit 2; }
  [[ -x "$scanner" ]] || { echo "bundle.sh: no gst-plugin-scanner at $scanner" >&2; exit 2; }
  # coreelements: capsfilter, queue, fakesink, identity; videotestsrc; videoconvertscale
  # (videoconvert, videoscale) for pipelines that convert.
  wanted=(coreelements videotestsrc videoconvertscale)
  rm -rf "${out:?}/bin" "${out:?}/libexec" "${out:?}/plugins" "${out:?}/lib"
  mkdir -p "$out/bin" "$out/libexec" "$out/plugins"
  cp "$(command -v gst-launch-1.0)" "$(command -v gst-inspect-1.0)" "$out/bin/"
  cp "$scanner" "$out/libexec/"
  for p in "${wanted[@]}"; do
    [[ -f "$plugins_dir/libgst$p.so" ]] || { echo "bundle.sh: no $plugins_dir/libgst$p.so" >&2; exit 2; }
    cp "$plugins_dir/libgst$p.so" "$out/plugins/"
  done
  cp "$plugin" "$out/plugins/libgstshmring.so"
  copy_libs "$out/lib" "$out"/bin/* "$out"/libexec/* "$out"/plugins/*
  # Only these variables: the bundle's GStreamer and plugins and nothing of
  # the host's (GST_PLUGIN_SYSTEM_PATH replaces the system plugin folder),
  # and a registry of its own, outside the bundle (which may be read-only)
  # and per bundle folder (a registry names the plugins' paths).
  cat >"$out/gst-env" <<'EOF'
#!/bin/sh
# gst-env COMMAND [ARG...]: runs COMMAND with this bundle's GStreamer, its
# plugins and libraries, and none of the host's (bench/bundle.sh --gst).
here=$(cd "$(dirname "$0")" && pwd)
GST_REGISTRY="${TMPDIR:-/tmp}/shmring-gst-registry-$(id -u)-$(printf %s "$here" | cksum | cut -d' ' -f1).bin"
PATH="$here/bin:$PATH"
LD_LIBRARY_PATH="$here/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
GST_PLUGIN_SYSTEM_PATH="$here/plugins"
GST_PLUGIN_PATH="$here/plugins"
GST_PLUGIN_SCANNER="$here/libexec/gst-plugin-scanner"
export PATH LD_LIBRARY_PATH GST_PLUGIN_SYSTEM_PATH GST_PLUGIN_PATH GST_PLUGIN_SCANNER GST_REGISTRY
exec "$@"
EOF
  chmod +x "$out/gst-env"
  if [[ -n "$wheel_python" ]]; then
    "$wheel_python" -c 'import scikit_build_core, nanobind' 2>/dev/null ||
      { echo "bundle.sh: --wheel $wheel_python: it needs scikit-build-core and nanobind (pip install scikit-build-core nanobind)" >&2; exit 2; }
    rm -rf "$out/wheels"
    mkdir -p "$out/wheels"
    CUDAARCHS=${CUDAARCHS:-90} CMAKE_BUILD_PARALLEL_LEVEL=${SHMRING_BENCH_JOBS:-2} \
      "$wheel_python" -m pip wheel -q --no-build-isolation --no-deps -w "$out/wheels" "$root"
  fi
fi

if [[ $gst == 1 ]]; then
  for f in gst-env bin/gst-launch-1.0 bin/gst-inspect-1.0 libexec/gst-plugin-scanner \
    plugins/libgstcoreelements.so plugins/libgstvideotestsrc.so plugins/libgstshmring.so; do
    [[ -e $out/$f ]] || { echo "bundle.sh: the bundle lacks $f (make it again: bench/bundle.sh OUT --gst)" >&2; exit 1; }
  done
  files=("$out"/bin/* "$out"/libexec/* "$out"/plugins/*)
  check_libs "$out/lib" "${files[@]}"
  # And it runs with nothing else: an empty environment but PATH, the bundle's
  # variables only (gst-env), a frame through shmringsink.
  clean=(env -i PATH=/usr/bin:/bin "$out/gst-env")
  for element in shmringsink shmringsrc videotestsrc capsfilter fakesink; do
    "${clean[@]}" gst-inspect-1.0 "$element" >/dev/null 2>&1 ||
      { echo "bundle.sh: gst-inspect-1.0 $element fails in the bundle:" >&2; "${clean[@]}" gst-inspect-1.0 "$element" >&2; exit 1; }
  done
  where=$("${clean[@]}" gst-inspect-1.0 shmringsink | awk '/Filename/ { print $2 }')
  [[ $where == "$(cd "$out" && pwd)/plugins/libgstshmring.so" ]] ||
    { echo "bundle.sh: shmringsink was loaded from $where, not from the bundle" >&2; exit 1; }
  "${clean[@]}" gst-launch-1.0 -q videotestsrc num-buffers=3 ! video/x-raw,format=I420,width=64,height=48 \
    ! shmringsink ring="bundle-check-$$" mode=reliable >/dev/null ||
    { echo "bundle.sh: a pipeline into shmringsink failed in the bundle" >&2; exit 1; }
  if [[ $check == 1 ]]; then
    echo "bundle: $out is complete ($(du -sh "$out" | cut -f1))"
    exit 0
  fi
  echo "bundle: $out ($(du -sh "$out" | cut -f1)); on the host, from a checkout of $(git -C "$root" rev-parse --short HEAD 2>/dev/null || echo 'the same commit'):"
  echo "  bench/gst_cuda_run.sh $out"
  exit 0
fi

if [[ -z "$bin" ]]; then
  build_target shmring_bench
  bin="$root/build-bench/bench/shmring_bench"
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
copy_libs "$out/lib" "$bin" "$roudi"

if [[ $python == 1 ]]; then
  mkdir -p "$out/wheels"
  python3 -m pip wheel -q --no-deps -w "$out/wheels" "$root"
  python3 -m pip download -q -d "$out/wheels" iceoryx2 numpy
fi

check_libs "$out/lib" "$out/shmring_bench" "$out/iox-roudi"
echo "bundle: $out ($(du -sh "$out" | cut -f1)); on the host, from a checkout of $(git -C "$root" rev-parse --short HEAD 2>/dev/null || echo 'the same commit'):"
echo "  LD_LIBRARY_PATH=$out/lib SHMRING_BENCH_IOX_ROUDI=$out/iox-roudi bench/run.sh --bin $out/shmring_bench"
