#!/usr/bin/env bash
# Runs bench/gst_cuda_bench.py on a GPU host that has neither GStreamer nor
# the shmring wheel nor a network, from a bundle made elsewhere:
#
#   bench/bundle.sh BUNDLE --gst --wheel python3.12     (on a machine with GStreamer)
#   bench/gst_cuda_run.sh BUNDLE                       (on the GPU host, repository root)
#
# 4K I420 frames, videotestsrc ! shmringsink in one process (the bundle's
# GStreamer, through BUNDLE/gst-env: that process only), read on the GPU in
# place by this host's Python with CuPy (the bundle's wheel, unpacked into a
# temporary folder, in BUNDLE where it may write: nothing is installed). Runs:
#
#   gst            shmringsink, 4 slots, each frame summed on the GPU
#   gst-2slots     the same with 2 slots
#   gst-verify     the sink stores each frame's checksum, the GPU recomputes it
#                  (the sink's checksum on the CPU limits the rate)
#   python-stamp   a Python producer that writes each slot whole once, then only
#                  its header: what the GPU side alone reaches
#
# Each run first measures its ceilings in the same process (registered memory
# of a frame's size, no ring): the same CuPy read, a whole-grid kernel of
# 16-byte loads, cudaMemcpy to the device.
# Writes OUT/gst_cuda.md and OUT/gst_cuda.json (OUT: the environment's $OUT,
# else bench/results/h100), and each run's output in OUT/gst_cuda-RUN.txt.
# Environment: PYTHON (default python3; its version must be the wheel's),
# FRAMES (default 2000: frames per run; gst-verify runs a quarter), DEVICE
# (default cuda; cpu reads the frames with numpy: a check of this script and
# the bundle on a host without a GPU, no CuPy needed).
# Exit status: 0 every run passed, 1 a run failed or a frame failed
# verification, 2 the bundle or the host lacks something (said why).
set -uo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
die() { echo "gst_cuda_run.sh: $*" >&2; exit 2; }
[[ $# -eq 1 ]] || die "usage: bench/gst_cuda_run.sh BUNDLE (a folder made by bench/bundle.sh --gst --wheel PYTHON)"
[[ -d $1 ]] || die "no bundle folder $1"
bundle=$(cd "$1" && pwd)
out=${OUT:-$root/bench/results/h100}
python=${PYTHON:-python3}
frames=${FRAMES:-2000}
device=${DEVICE:-cuda}
[[ $device == cuda || $device == cpu ]] || die "DEVICE=$device: cuda or cpu"

# The bundle: complete, and its GStreamer runs shmringsink on its own.
"$root/bench/bundle.sh" "$bundle" --gst --check >&2 ||
  die "the bundle $1 is incomplete or does not run here (above); make it again with bench/bundle.sh BUNDLE --gst --wheel PYTHON"

# Python: the wheel of this interpreter's version, and what the benchmark imports.
command -v "$python" >/dev/null || die "no Python interpreter '$python' (set PYTHON)"
tag=$("$python" -c 'import sys; print(f"cp{sys.version_info[0]}{sys.version_info[1]}")') || die "$python does not run"
wheels=("$bundle"/wheels/shmring-*-"$tag"-*.whl)
[[ -f ${wheels[0]} ]] || die "the bundle has no shmring wheel for $tag ($python): $(ls "$bundle/wheels" 2>/dev/null | tr '\n' ' ')(make it with bench/bundle.sh ... --wheel python${tag:2:1}.${tag:3})"
# In the bundle's folder if it is writable: a /tmp mounted noexec would
# refuse to load the module from there.
pkg=$(mktemp -d "$bundle/.python-XXXXXX" 2>/dev/null || mktemp -d "${TMPDIR:-/tmp}/shmring-gst-cuda-XXXXXX")
trap 'rm -rf "$pkg"' EXIT
"$python" -m zipfile -e "${wheels[0]}" "$pkg" || die "could not unpack ${wheels[0]}"
export PYTHONPATH="$pkg${PYTHONPATH:+:$PYTHONPATH}"
"$python" -c 'import numpy' 2>/dev/null || die "$python has no numpy"
cuda=$("$python" -c 'import shmring; print(shmring.built_with_cuda(), shmring.gpu_count())') ||
  die "the wheel's shmring does not import: $("$python" -c 'import shmring' 2>&1 | tail -1)"
if [[ $device == cuda ]]; then
  "$python" -c 'import cupy' 2>/dev/null || die "$python has no CuPy ($("$python" -c 'import cupy' 2>&1 | tail -1))"
  [[ $cuda == True\ [1-9]* ]] ||
    die "shmring built with CUDA, GPUs visible: $cuda (the wheel needs CUDA, the host a GPU)"
fi
cupy_version=$("$python" -c 'import cupy; print(cupy.__version__)' 2>/dev/null || echo none)

mkdir -p "$out"
{
  echo "gpu: $(nvidia-smi --query-gpu=name,driver_version --format=csv,noheader 2>/dev/null | head -1)"
  echo "cpu: $(lscpu 2>/dev/null | sed -n 's/^Model name: *//p' | head -1), $(nproc) CPUs"
  echo "python: $("$python" --version 2>&1), numpy $("$python" -c 'import numpy; print(numpy.__version__)'), cupy $cupy_version; frames read on: $device"
  echo "gstreamer: $("$bundle/gst-env" gst-launch-1.0 --version | head -1)"
  echo "commit: $(git -C "$root" rev-parse --short HEAD 2>/dev/null || echo unknown)"
  echo "load before: $(cut -d' ' -f1-3 /proc/loadavg)"
} >"$out/gst_cuda-host.txt"
cat "$out/gst_cuda-host.txt"

bench=("$python" "$root/bench/gst_cuda_bench.py" --gst-bundle "$bundle" --device "$device")
runs=(
  "gst|--source gst --slots 4 --frames $frames"
  "gst-2slots|--source gst --slots 2 --frames $frames"
  "gst-verify|--source gst --slots 4 --verify --frames $((frames / 4))"
  "python-stamp|--source python --write stamp --slots 4 --frames $frames"
)
status=0
for run in "${runs[@]}"; do
  name=${run%%|*}
  read -ra extra <<<"${run#*|}"
  echo "== $name: ${extra[*]}"
  timeout 300 "${bench[@]}" "${extra[@]}" --json "$out/gst_cuda-$name.json" >"$out/gst_cuda-$name.txt" 2>&1
  rc=$?
  cat "$out/gst_cuda-$name.txt"
  if [[ $rc -ne 0 ]]; then
    echo "gst_cuda_run.sh: run $name ended with status $rc" >&2
    status=1
    # 1: frames failed verification, in the figures; else no figures.
    [[ $rc -eq 1 ]] || rm -f "$out/gst_cuda-$name.json"
  fi
done
echo "load after: $(cut -d' ' -f1-3 /proc/loadavg)" >>"$out/gst_cuda-host.txt"

# The report: one row per run, each against the ceilings measured in it.
"$python" - "$out" "${runs[@]%%|*}" <<'EOF'
import json, os, sys

out, names = sys.argv[1], sys.argv[2:]
host = open(os.path.join(out, "gst_cuda-host.txt")).read().strip().splitlines()
rows, data = [], {}
for name in names:
    path = os.path.join(out, f"gst_cuda-{name}.json")
    if not os.path.exists(path):
        rows.append(f"| {name} | failed (gst_cuda-{name}.txt) | | | | | | | |")
        continue
    r = json.load(open(path))
    data[name] = r
    c = r["ceilings_gbs"]
    def vs(key):
        return f"{c[key]:.1f} ({r['read_p50_gbs'] / c[key]:.0%})" if key in c else "-"
    rows.append(
        f"| {name} | {r['frames']} ({r['bad_frames']} bad) | {r['frames_per_s']:.0f} | "
        f"{r['end_to_end_gbs']:.1f} | {r['read_p50_us']:.0f} / {r['read_p99_us']:.0f} | "
        f"{r['read_p50_gbs']:.1f} | {vs('reader')} | {vs('load16')} | {vs('memcpy')} |")
md = ["# 4K frames through shmringsink, read on the GPU in place", ""]
md += [f"- {line}" for line in host]
md += ["", "```sh", "bench/gst_cuda_run.sh BUNDLE    # bench/bundle.sh BUNDLE --gst --wheel python3.12", "```", "",
       "3840x2160 I420 (12.4 MB a frame), videotestsrc pattern=black ! shmringsink mode=reliable, "
       "each slot read on the GPU where it lies (slot.cuda(), registered host memory, CuPy), "
       "then handed back. Read: the GPU's time for one frame (CUDA events), p50 / p99. "
       "Ceilings, measured in the same process before the run on registered memory of a "
       "frame's size with no ring: the same CuPy read, a whole-grid kernel of 16-byte loads, "
       "and cudaMemcpy to the device; in brackets the read at p50 as a share of each.", "",
       "| run | frames | frames/s | GB/s end to end | read p50 / p99 us | read GB/s (p50) | "
       "ceiling: same read GB/s | ceiling: 16-byte loads GB/s | ceiling: memcpy GB/s |",
       "| --- | --- | --- | --- | --- | --- | --- | --- | --- |", *rows, ""]
open(os.path.join(out, "gst_cuda.md"), "w").write("\n".join(md))
json.dump({"host": host, "runs": data}, open(os.path.join(out, "gst_cuda.json"), "w"), indent=1)
print("\n".join(md))
EOF
echo "gst_cuda_run.sh: wrote $out/gst_cuda.md and $out/gst_cuda.json (exit status $status)" >&2
exit "$status"
