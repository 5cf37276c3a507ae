#!/usr/bin/env bash
# Runs shmring_bridge_bench (ring-bridge over UCX on loopback, next to
# ucx_perftest on the same transport and ZeroMQ over TCP) and keeps the report:
#   bench/results/<machine>/bridge.md     the table, with machine and date
#   bench/results/<machine>/bridge.json   every repetition's figures
#
#   bench/bridge_run.sh                        5 interleaved repetitions
#   bench/bridge_run.sh --repetitions 9        extra arguments go to the benchmark
#   SHMRING_BENCH_MACHINE=h100-host bench/bridge_run.sh
# Environment: BUILD_DIR (default build-bench), UCX_TLS (default tcp: the
# messages cross sockets as between hosts).
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
build=${BUILD_DIR:-$root/build-bench}
machine=${SHMRING_BENCH_MACHINE:-$(hostname -s)-$(nproc)cpu}
out=$root/bench/results/$machine

if [[ ! -x $build/bench/shmring_bridge_bench || ! -x $build/tools/ring-bridge ]]; then
  cmake -S "$root" -B "$build" -DCMAKE_BUILD_TYPE=Release -DSHMRING_BUILD_TESTS=OFF \
    -DSHMRING_BUILD_EXAMPLES=OFF -DSHMRING_BUILD_BENCH=ON >/dev/null
  cmake --build "$build" -j2 --target shmring_bridge_bench ring-bridge
fi
command -v "${UCX_PERFTEST:-ucx_perftest}" >/dev/null || {
  echo "bridge_run.sh: ucx_perftest not found (Debian: ucx-utils)" >&2
  exit 2
}
mkdir -p "$out"
{
  echo "# ring-bridge over UCX: $machine"
  echo
  echo "- date (UTC): $(date -u +%Y-%m-%dT%H:%M:%SZ); commit $(git -C "$root" describe --always --dirty=+dirty 2>/dev/null || echo '?')"
  echo "- CPU: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), $(nproc) CPUs; UCX $(ucx_info -v 2>/dev/null | awk '/Version/ {print $3}')"
  echo "- load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
  echo "- command: bench/bridge_run.sh $*"
  echo
  UCX_TLS=${UCX_TLS:-tcp} "$build/bench/shmring_bridge_bench" --bridge "$build/tools/ring-bridge" \
    --perftest "${UCX_PERFTEST:-ucx_perftest}" --tls "${UCX_TLS:-tcp}" --json "$out/bridge.json" "$@"
  echo
  echo "- load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
} | tee "$out/bridge.md.tmp"
mv "$out/bridge.md.tmp" "$out/bridge.md"
echo "bridge_run.sh: wrote $out/bridge.md and $out/bridge.json" >&2
