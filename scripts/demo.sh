#!/usr/bin/env bash
# Sets up, builds (Release, in build/) and runs the demo pipeline: a producer
# process streams messages to a consumer process through one ring in /dev/shm,
# every message verified, then a ping/pong latency phase.
#
#   ./scripts/demo.sh                    # an SPSC and an MPMC run with defaults
#   ./scripts/demo.sh --size 4096 ...    # one run; options go to shmring-demo
#                                        # (./scripts/demo.sh --help lists them)
#   ./scripts/demo.sh --kind broadcast --subscribers 4 [--delivery lossy]
#                                        # fan-out: one producer, 4 subscriber
#                                        # processes, each verifying the stream
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

JOBS=${JOBS:-$(nproc)}
BUILD_DIR=${BUILD_DIR:-build}

./scripts/setup.sh

bench=OFF
[[ -f bench/CMakeLists.txt ]] && bench=ON
echo "[demo] configuring ${BUILD_DIR}/ (Release)"
cmake -S . -B "$BUILD_DIR" -DCMAKE_BUILD_TYPE=Release -DSHMRING_SANITIZER= \
  -DSHMRING_BUILD_EXAMPLES=ON -DSHMRING_BUILD_BENCH="$bench" >/dev/null
echo "[demo] building shmring-demo (-j${JOBS})"
cmake --build "$BUILD_DIR" -j"$JOBS" --target shmring-demo

demo="$BUILD_DIR/examples/shmring-demo"
if (($# > 0)); then
  exec "$demo" "$@"
fi
echo
"$demo" --kind spsc --messages 10000000 --size 64 --capacity 1024 --batch 16 --round-trips 200000
echo
"$demo" --kind mpmc --messages 10000000 --size 64 --capacity 1024 --batch 16 --round-trips 200000
