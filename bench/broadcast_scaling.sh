#!/usr/bin/env bash
# How the broadcast ring's fan-out scales with subscribers, measured from
# prebuilt binaries (bench/bundle.sh folders) on a host with many cores:
# 1, 2, 4 and 8 subscriber processes (as many as SHMRING_BENCH_CPUS gives
# every agent a core of its own), 64 B messages, the copy API one message a
# call and the zero-copy API in batches, their round trips, and iceoryx's
# publish/subscribe next to them where the bundle has it. Each build is one
# bench/run.sh session: the cache-line floor is probed before the first
# part, between parts and after the last, and parts measured in a slow phase
# are set aside (report.py). Several builds (a baseline and a change) run
# pass by pass in turn, the order reversed every other pass (A B, B A, ...),
# so that they share the machine's phases.
#
#   bench/broadcast_scaling.sh [options] NAME=BUNDLE [NAME=BUNDLE ...]
#
#   NAME     the build's label (letters, digits, '-', '_'); the first is the baseline
#   BUNDLE   a folder holding shmring_bench, and where it has them iox-roudi and lib/
#            (bench/bundle.sh makes one; any folder with a shmring_bench will do)
#
# Options:
#   --reps N          passes per build (default 5)
#   --min-time S      --benchmark_min_time per benchmark, seconds (default 0.3)
#   --cpus LIST       SHMRING_BENCH_CPUS (default: that variable, else every CPU, 0-<nproc-1>)
#   --out DIR         where everything goes (default: $OUT, else
#                     build/bench-runs/broadcast-scaling/<UTC stamp>); must not exist yet
#   --subscribers L   subscriber counts, comma-separated (default 1,2,4,8; the
#                     benchmark has 4 and 8 only where the CPUs give each agent a core)
#   --no-peer         leave iceoryx out even where a bundle has it
#   --machine NAME    the machine's name in the report (default: hostname -s)
#   --reference-floor NS  the machine's known-good floor p50: parts whose probes
#                     read above 1.3 x it are set aside (report.py; default: the
#                     session's best probe)
#
# Writes OUT/broadcast_scaling.md and OUT/broadcast_scaling.json
# (bench/broadcast_scaling.py), OUT/meta.txt, and OUT/<NAME>/, each build's
# run.sh session (the JSON of every part and probe, its console output and
# report.md). Exits non-zero if a benchmark failed or left anything behind.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
reps=5
min_time=0.3
cpus=${SHMRING_BENCH_CPUS:-}
out=${OUT:-}
peer=1
subscribers=1,2,4,8
machine=${SHMRING_BENCH_MACHINE:-$(hostname -s 2>/dev/null || echo unknown)}
reference_floor=${SHMRING_BENCH_REFERENCE_FLOOR_NS:-}
names=()
bundles=()

while [[ $# -gt 0 ]]; do
  case "$1" in
    --reps) reps=$2; shift ;;
    --min-time) min_time=$2; shift ;;
    --cpus) cpus=$2; shift ;;
    --out) out=$2; shift ;;
    --subscribers) subscribers=$2; shift ;;
    --no-peer) peer=0 ;;
    --machine) machine=$2; shift ;;
    --reference-floor) reference_floor=$2; shift ;;
    -h|--help) awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "${BASH_SOURCE[0]}"; exit 0 ;;
    -*) echo "broadcast_scaling.sh: unknown option '$1' (try --help)" >&2; exit 2 ;;
    *=*)
      name=${1%%=*}
      [[ $name =~ ^[A-Za-z0-9_-]+$ ]] ||
        { echo "broadcast_scaling.sh: build name '$name' (in '$1'): letters, digits, '-' and '_' only" >&2; exit 2; }
      for n in "${names[@]}"; do
        [[ $n != "$name" ]] || { echo "broadcast_scaling.sh: build name '$name' given twice" >&2; exit 2; }
      done
      names+=("$name")
      bundles+=("$(cd "${1#*=}" 2>/dev/null && pwd || echo "${1#*=}")")
      ;;
    *) echo "broadcast_scaling.sh: '$1' is not NAME=BUNDLE (try --help)" >&2; exit 2 ;;
  esac
  shift
done
[[ ${#names[@]} -gt 0 ]] || { echo "usage: bench/broadcast_scaling.sh [options] NAME=BUNDLE [NAME=BUNDLE ...]" >&2; exit 2; }
[[ $subscribers =~ ^[1-9][0-9]*(,[1-9][0-9]*)*$ ]] ||
  { echo "broadcast_scaling.sh: --subscribers '$subscribers': counts like 1,2,4,8" >&2; exit 2; }
[[ $reps =~ ^[1-9][0-9]*$ ]] || { echo "broadcast_scaling.sh: --reps '$reps': a positive whole number" >&2; exit 2; }
for i in "${!names[@]}"; do
  [[ -x "${bundles[i]}/shmring_bench" ]] ||
    { echo "broadcast_scaling.sh: build '${names[i]}': no executable shmring_bench in ${bundles[i]}" >&2; exit 2; }
done
cpus=${cpus:-0-$(($(nproc) - 1))}
out=${out:-"$root/build/bench-runs/broadcast-scaling/$(date -u +%Y%m%dT%H%M%SZ)"}
[[ ! -e "$out" ]] || { echo "broadcast_scaling.sh: $out exists already (give a new --out)" >&2; exit 2; }

# The benchmarks, names without their /manual_time or /real_time suffix: the
# floor as a benchmark of its own too (report.py forms round trip / floor
# inside a pass), the SPSC ring's rate and round trip (the return channel of
# the fan-out's round trip, and what a change to the readers both share does
# to one-to-one), and the fan-out floors (fanout_floor.cpp: the same harness
# without a library, on shmring's slot layout and on packed payloads).
subs="(${subscribers//,/|})sub"
shmring='floor/cacheline_pingpong/process|spsc/process/copy/64B|rtt/spsc/process/copy/64B'
shmring+="|bcast/shmring/(copy|batch)/$subs/64B|rtt/bcast/shmring/(copy|zerocopy)/$subs/64B"
shmring+="|bcast/floor/(slot|cursor)/(copy|batch)/$subs/64B|rtt/bcast/floor/slot/copy/$subs/64B"
iceoryx="|bcast/iceoryx/$subs/64B|rtt/bcast/iceoryx/$subs/64B"

# Runs a command with build i's libraries and iox-roudi.
with_bundle() {
  local b=${bundles[$1]}
  shift
  local lib=${LD_LIBRARY_PATH:-} roudi=${SHMRING_BENCH_IOX_ROUDI:-}
  [[ -d "$b/lib" ]] && lib="$b/lib${lib:+:$lib}"
  [[ -x "$b/iox-roudi" ]] && roudi="$b/iox-roudi"
  LD_LIBRARY_PATH=$lib SHMRING_BENCH_IOX_ROUDI=$roudi SHMRING_BENCH_CPUS=$cpus "$@"
}

# iceoryx only where every build has it (compiled in, and an iox-roudi to
# start), so that the builds run the same list.
if [[ $peer == 1 ]]; then
  for i in "${!names[@]}"; do
    b=${bundles[i]}
    if [[ ! -x "$b/iox-roudi" ]] && ! command -v iox-roudi >/dev/null 2>&1; then
      echo "broadcast_scaling.sh: build '${names[i]}' has no iox-roudi: iceoryx left out" >&2
      peer=0
    elif ! with_bundle "$i" "$b/shmring_bench" --benchmark_list_tests --benchmark_filter='^bcast/iceoryx/' |
      grep -q .; then
      echo "broadcast_scaling.sh: build '${names[i]}' was built without iceoryx: iceoryx left out" >&2
      peer=0
    fi
  done
fi
[[ $peer == 1 ]] && shmring+=$iceoryx
filter="^(${shmring})/"
for i in "${!names[@]}"; do
  count=$(with_bundle "$i" "${bundles[i]}/shmring_bench" --benchmark_list_tests --benchmark_filter="$filter" | wc -l)
  [[ $count -gt 0 ]] || { echo "broadcast_scaling.sh: build '${names[i]}' has none of the benchmarks" >&2; exit 2; }
  echo "build ${names[i]}: $count benchmarks (${bundles[i]})"
done

load() { cut -d' ' -f1-3 /proc/loadavg; }
mkdir -p "$out"
{
  echo "machine=$machine"
  echo "date=$(date -u +%Y-%m-%dT%H:%M:%SZ)"
  echo "cpu_model=$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')"
  echo "kernel=$(uname -r)"
  echo "cpus=$cpus"
  echo "reps=$reps"
  echo "min_time=$min_time"
  echo "order=builds in turn each pass, reversed every other pass"
  echo "filter=$filter"
  for i in "${!names[@]}"; do
    info=""
    [[ -f "${bundles[i]}/build-info.txt" ]] && info=$(tr '\n' ' ' <"${bundles[i]}/build-info.txt")
    echo "build_${names[i]}=${bundles[i]}; ${info}shmring_bench sha256 $(sha256sum "${bundles[i]}/shmring_bench" | cut -c1-12)"
  done
  echo "load_before=$(load)"
} >"$out/meta.txt"

status=0
for ((r = 1; r <= reps; r++)); do
  order=("${!names[@]}")
  if ((r % 2 == 0)); then
    for ((k = 0; k < ${#order[@]}; k++)); do order[k]=$((${#names[@]} - 1 - k)); done
  fi
  for i in "${order[@]}"; do
    session="$out/${names[i]}"
    start=(--out "$session")
    [[ $r -gt 1 ]] && start=(--more "$session")
    echo "== pass $r/$reps, build ${names[i]} (load $(load))"
    with_bundle "$i" "$root/bench/run.sh" --bin "${bundles[i]}/shmring_bench" "${start[@]}" \
      --passes 1 --min-time "$min_time" --filter "$filter" --machine "$machine" \
      ${reference_floor:+--reference-floor "$reference_floor"} --no-summary --no-plots >>"$out/${names[i]}.log" 2>&1 ||
      { status=1; echo "   a benchmark failed or left something behind: $out/${names[i]}.log" >&2; }
  done
done
echo "load_after=$(load)" >>"$out/meta.txt"

builds=$(IFS=,; echo "${names[*]}")
summary_args=(--builds "$builds")
[[ -n "$reference_floor" ]] && summary_args+=(--reference-floor "$reference_floor")
python3 "$root/bench/broadcast_scaling.py" "${summary_args[@]}" "$out" >/dev/null
cat "$out/broadcast_scaling.md"
echo
echo "results: $out/broadcast_scaling.md, $out/broadcast_scaling.json"
exit $status
