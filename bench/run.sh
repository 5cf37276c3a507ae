#!/usr/bin/env bash
# Builds shmring_bench (Release, in build-bench/) and runs it.
#
#   bench/run.sh             measurement: several full passes of the suite, with a
#                            probe of the cache-line floor before, between parts of
#                            and after each pass. The raw session (JSON of every
#                            part and probe, console output, report, plots) goes to
#                            build/bench-runs/<machine>/<UTC stamp>/ (outside git);
#                            the summary (report.md, meta.txt, plots) replaces
#                            bench/results/<machine>/
#   bench/run.sh --smoke     CI: every benchmark once, very briefly; fails if any
#                            benchmark fails or anything is left behind: a segment
#                            or queue in /dev/shm, a socket in /tmp, RouDi's shared
#                            memory or the iox-roudi process (also: SHMRING_BENCH_SMOKE=1)
#
# The measurement also writes plots (plot.py, needs matplotlib: installed with
# pip when missing; without it the report is written and the plots skipped).
#
# Options:
#   --passes N        full passes (default 5)
#   --part-size N     benchmarks between two floor probes (default 6)
#   --min-time S      --benchmark_min_time per benchmark, seconds (default 0.3)
#   --filter REGEX    only these benchmarks (the floor is always probed)
#   --machine NAME    results folder name (default: SHMRING_BENCH_MACHINE or hostname -s)
#   --build-dir DIR   build directory (default: build-bench in the repository)
#   --bin PATH        run this shmring_bench and build nothing (a copied build)
#   --no-plots        skip plot.py (and the pip install of matplotlib)
#   --out DIR         session directory (default: $SHMRING_BENCH_RUNS/<machine>/<stamp>,
#                     SHMRING_BENCH_RUNS defaulting to build/bench-runs)
#   --more DIR        add --passes passes to an existing session (same filter and
#                     part size), e.g. to redo what slow phases spoiled; the
#                     report then covers every pass
#   --summary DIR     where the summary goes (default: bench/results/<machine>)
#   --no-summary      leave bench/results alone (exploratory or filtered runs)
#   --slow-factor F   report.py: flag a pass whose floor p50 > F x best (default 1.3)
#   --reference-floor NS  report.py: the machine's known-good floor p50, so that a
#                     session spent wholly in a slow phase is flagged too
# Environment:
#   SHMRING_BENCH_CPUS=a,b[,...]   cores to pin to (default 0,1); see bench/README.md
#   SHMRING_BENCH_JOBS=N           build parallelism (default 2)
#   SHMRING_BENCH_REFERENCE_FLOOR_NS=NS   default for --reference-floor
#   SHMRING_BENCH_RUNS=DIR         where raw sessions go (default: build/bench-runs)
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
smoke=${SHMRING_BENCH_SMOKE:-0}
passes=5
min_time=0.3
filter=""
machine=${SHMRING_BENCH_MACHINE:-$(hostname -s 2>/dev/null || echo unknown)}
build_dir="$root/build-bench"
bin=""
plots=1
more=0
out=""
summary=""
write_summary=1
slow_factor=1.3
part_size=6
reference_floor=${SHMRING_BENCH_REFERENCE_FLOOR_NS:-}

while [[ $# -gt 0 ]]; do
  case "$1" in
    --smoke) smoke=1 ;;
    --passes) passes=$2; shift ;;
    --min-time) min_time=$2; shift ;;
    --filter) filter=$2; shift ;;
    --machine) machine=$2; shift ;;
    --build-dir) build_dir=$2; shift ;;
    --bin) bin=$2; shift ;;
    --no-plots) plots=0 ;;
    --out) out=$2; shift ;;
    --more) out=$2; more=1; shift ;;
    --summary) summary=$2; shift ;;
    --no-summary) write_summary=0 ;;
    --slow-factor) slow_factor=$2; shift ;;
    --reference-floor) reference_floor=$2; shift ;;
    --part-size) part_size=$2; shift ;;
    -h|--help) awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "${BASH_SOURCE[0]}"; exit 0 ;;
    *) echo "run.sh: unknown option '$1' (try --help)" >&2; exit 2 ;;
  esac
  shift
done

# ---- build ------------------------------------------------------------------
if [[ -z "$bin" ]]; then
  if [[ ! -f "$build_dir/CMakeCache.txt" ]]; then
    cmake -S "$root" -B "$build_dir" -DCMAKE_BUILD_TYPE=Release \
      -DSHMRING_BUILD_BENCH=ON -DSHMRING_BUILD_TESTS=OFF -DSHMRING_BUILD_EXAMPLES=OFF \
      -DSHMRING_BUILD_TOOLS=OFF >/dev/null
  fi
  cmake --build "$build_dir" --target shmring_bench -j "${SHMRING_BENCH_JOBS:-2}" >/dev/null
  bin="$build_dir/bench/shmring_bench"
fi
[[ -x "$bin" ]] || { echo "run.sh: no benchmark binary at $bin" >&2; exit 2; }

filter_args=()
[[ -n "$filter" ]] && filter_args=(--benchmark_filter="$filter")

# RouDi's shared memory: iceoryx_mgmt and one segment named after the user.
iceoryx_shm=(/dev/shm/iceoryx_mgmt "/dev/shm/$(id -un)")
roudis() { pgrep -x iox-roudi 2>/dev/null | sort || true; }

# Runs the benchmark binary and checks that it removed everything it made:
# segments, Boost queues (/dev/shm) and ZeroMQ sockets (/tmp) are all named
# shmring_bench_<pid>_...; the iox-roudi it started must be gone, with its
# shared memory.
run_bench() {
  local rc=0 pid roudis_before shm_before=()
  roudis_before=$(roudis)
  for f in "${iceoryx_shm[@]}"; do [[ -e "$f" ]] && shm_before+=("$f"); done
  "$bin" "$@" &
  pid=$!
  wait "$pid" || rc=$?
  local left=()
  mapfile -t left < <(find /dev/shm /tmp -maxdepth 1 -name "shmring_bench_${pid}_*" 2>/dev/null)
  for f in "${iceoryx_shm[@]}"; do
    [[ -e "$f" && ! " ${shm_before[*]} " =~ " $f " ]] && left+=("$f")
  done
  if [[ ${#left[@]} -gt 0 ]]; then
    echo "run.sh: left behind: ${left[*]}" >&2
    rm -f "${left[@]}"
    [[ $rc -eq 0 ]] && rc=3
  fi
  local stray
  stray=$(comm -13 <(echo "$roudis_before") <(roudis) | tr '\n' ' ')
  if [[ -n "${stray// /}" ]]; then
    echo "run.sh: iox-roudi still running after the benchmark: pid $stray" >&2
    for p in $stray; do kill "$p" 2>/dev/null || true; done
    [[ $rc -eq 0 ]] && rc=3
  fi
  return $rc
}

# ---- smoke ------------------------------------------------------------------
if [[ "$smoke" == 1 ]]; then
  start=$SECONDS
  # 10 ms per benchmark still laps every ring a few times.
  if run_bench --benchmark_min_time=0.01 "${filter_args[@]}" --benchmark_color=false; then
    echo "run.sh --smoke: all benchmarks ran and verified ($((SECONDS - start)) s)"
  else
    rc=$?
    echo "run.sh --smoke: FAILED (exit $rc)" >&2
    exit "$rc"
  fi
  exit 0
fi

# ---- measurement ------------------------------------------------------------
stamp=$(date -u +%Y%m%dT%H%M%SZ)
runs=${SHMRING_BENCH_RUNS:-"$root/build/bench-runs"}
out=${out:-"$runs/$machine/$stamp"}
summary=${summary:-"$root/bench/results/$machine"}
load() { cut -d' ' -f1-3 /proc/loadavg; }
first=1
if [[ $more == 1 ]]; then
  [[ -f "$out/meta.txt" ]] || { echo "run.sh: --more: no session in $out" >&2; exit 2; }
  first=$(($(find "$out" -maxdepth 1 -name 'pass-*-part-1.json' | sed 's/.*pass-\([0-9]*\)-part.*/\1/' |
    sort -n | tail -1) + 1))
fi
mkdir -p "$out"
[[ $more == 1 ]] || {
  echo "machine=$machine"
  echo "date=$(date -u +%Y-%m-%dT%H:%M:%SZ)"
  echo "commit=$(git -C "$root" rev-parse --short HEAD 2>/dev/null || echo unknown)$(git -C "$root" diff --quiet 2>/dev/null || echo '+dirty')"
  echo "cpu_model=$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')"
  echo "kernel=$(uname -r)"
  echo "cpus=${SHMRING_BENCH_CPUS:-0,1}"
  echo "min_time=$min_time"
  echo "passes=$passes"
  echo "load_before=$(load)"
} >"$out/meta.txt"

probe() {
  run_bench --benchmark_filter='^floor/cacheline_pingpong/' --benchmark_min_time=0.2 \
    --benchmark_out="$1" --benchmark_out_format=json >/dev/null
}

# A pass is cut into parts of --part-size benchmarks with a floor probe
# between parts, so that a slow phase of a few seconds is caught next to
# the benchmarks it hit (report.py sets those measurements aside).
mapfile -t names < <("$bin" --benchmark_list_tests "${filter_args[@]}")
if [[ ${#names[@]} -eq 0 ]]; then
  echo "run.sh: no benchmark matches the filter" >&2
  exit 2
fi
parts=()
for ((k = 0; k < ${#names[@]}; k += part_size)); do
  regex=""
  for name in "${names[@]:k:part_size}"; do
    escaped=$(printf '%s' "$name" | sed 's/[][\.*^$+?(){}|]/\\&/g')
    regex+="${regex:+|}$escaped"
  done
  parts+=("^($regex)\$")
done
if [[ $more == 1 ]]; then
  grep -qx "parts=${#parts[@]}" "$out/meta.txt" ||
    { echo "run.sh: --more: the session in $out was cut into other parts (give the same --filter and --part-size)" >&2; exit 2; }
  # Only once the session is known to fit: a refused --more leaves it as it was.
  echo "more=passes $first-$((first + passes - 1)) from $(date -u +%Y-%m-%dT%H:%M:%SZ), load $(load)" >>"$out/meta.txt"
  sed -i "s/^passes=.*/passes=$((first + passes - 1))/" "$out/meta.txt"
else
  echo "parts=${#parts[@]}" >>"$out/meta.txt"
fi

status=0
for ((i = first; i < first + passes; i++)); do
  echo "== pass $i/$((first + passes - 1)): ${#names[@]} benchmarks in ${#parts[@]} parts (load $(load))"
  probe "$out/pass-$i-probe-0.json" || status=1
  for ((j = 1; j <= ${#parts[@]}; j++)); do
    run_bench --benchmark_min_time="$min_time" --benchmark_filter="${parts[j - 1]}" --benchmark_color=false \
      --benchmark_out="$out/pass-$i-part-$j.json" --benchmark_out_format=json | tee -a "$out/pass-$i.txt" || status=1
    probe "$out/pass-$i-probe-$j.json" || status=1
  done
done
echo "load_after=$(load)" >>"$out/meta.txt"

report_args=(--slow-factor "$slow_factor")
[[ -n "$reference_floor" ]] && report_args+=(--reference-floor "$reference_floor")
python3 "$root/bench/report.py" "${report_args[@]}" "$out" >"$out/report.md"
cat "$out/report.md"

# Plots are optional: matplotlib from pip when it is missing (and reachable).
if [[ $plots == 1 ]] && ! python3 -c 'import matplotlib' 2>/dev/null; then
  python3 -m pip install -q --root-user-action=ignore matplotlib >/dev/null 2>&1 ||
    echo "run.sh: matplotlib not available, no plots (bench/plot.py $out makes them later)" >&2
fi
if [[ $plots == 1 ]] && python3 -c 'import matplotlib' 2>/dev/null; then
  python3 "$root/bench/plot.py" "${report_args[@]}" "$out" || echo "run.sh: plotting failed" >&2
fi

# The summary kept in the repository: the report, the session's description
# and the plots; the JSON and console output stay in the session directory.
if [[ $write_summary == 1 ]]; then
  mkdir -p "$summary"
  rm -f "$summary"/{throughput,latency,mpmc_grid,broadcast}.png
  cp "$out/report.md" "$out/meta.txt" "$summary/"
  for f in throughput.png latency.png mpmc_grid.png broadcast.png; do
    if [[ -f "$out/$f" ]]; then cp "$out/$f" "$summary/"; fi
  done
fi
echo
echo "results: $out"
if [[ $write_summary == 1 ]]; then echo "summary: $summary"; fi
exit $status
