#!/usr/bin/env bash
# Installs what building and testing shmring needs, when it is missing.
# Idempotent: with everything present it changes nothing and needs no network.
# Debian/Ubuntu (apt-get); as root, or through sudo when available. Never
# prompts (CI=true or not).
set -euo pipefail

packages=(build-essential cmake g++ libgtest-dev libgmock-dev libbenchmark-dev libfmt-dev libcli11-dev python3 python3-dev python3-venv libucx-dev ucx-utils iproute2)
# The format and static-analysis checks (Debian 12: version 14 of both).
packages+=(clang-format clang-tidy)
# The GStreamer plugin (gst/: shmringsink, shmringsrc), its tests and
# bench/gst_bench.py (shmsink/shmsrc of plugins-bad as the peer).
packages+=(libgstreamer1.0-dev libgstreamer-plugins-base1.0-dev gstreamer1.0-tools
           gstreamer1.0-plugins-base gstreamer1.0-plugins-good gstreamer1.0-plugins-bad)
# The benchmarks' peers (bench/peer_*.cpp): iceoryx with its iox-roudi daemon,
# Boost.Interprocess, ZeroMQ (found through pkg-config), moodycamel.
packages+=(iceoryx libiceoryx-posh-dev libboost-dev libzmq3-dev pkg-config libconcurrentqueue-dev)
# The aarch64 (Jetson) cross build and its tests under emulation: the GNU
# cross compiler with the target's C library (its libstdc++ comes with g++),
# qemu-aarch64, and GoogleTest's sources to build for the target
# (/usr/src/googletest).
packages+=(g++-aarch64-linux-gnu libc6-dev-arm64-cross qemu-user googletest)

log() { printf '[setup] %s\n' "$*"; }
die() { printf '[setup] error: %s\n' "$*" >&2; exit 1; }

if ! command -v dpkg-query >/dev/null 2>&1 || ! command -v apt-get >/dev/null 2>&1; then
  # Not a Debian-family system: say what is needed and check the essentials.
  log "no apt-get/dpkg here; make sure these (or their equivalents) are installed:"
  log "  ${packages[*]}"
  for tool in cmake c++; do
    command -v "$tool" >/dev/null 2>&1 || die "'$tool' not found"
  done
  exit 0
fi

missing=()
for pkg in "${packages[@]}"; do
  status=$(dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null || true)
  [[ "$status" == "install ok installed" ]] || missing+=("$pkg")
done

check_cmake() {
  # The project needs CMake 3.25 (Debian 12 and Ubuntu 24.04 ship it).
  local v
  v=$(cmake --version | awk 'NR == 1 { print $3 }')
  printf '%s\n%s\n' 3.25 "$v" | sort -V -C || die "CMake $v is too old: 3.25 or newer is needed"
}

if ((${#missing[@]} == 0)); then
  check_cmake
  log "all build dependencies present"
  exit 0
fi

log "missing: ${missing[*]}"
if [[ $(id -u) -eq 0 ]]; then
  as_root=(env DEBIAN_FRONTEND=noninteractive)
elif command -v sudo >/dev/null 2>&1; then
  # -n: fail rather than ask for a password, unless a person is there to type it.
  as_root=(sudo -n env DEBIAN_FRONTEND=noninteractive)
  [[ -t 0 && "${CI:-}" != "true" ]] && as_root=(sudo env DEBIAN_FRONTEND=noninteractive)
else
  die "not root and no sudo: install them with: apt-get install ${missing[*]}"
fi

"${as_root[@]}" apt-get update -q
"${as_root[@]}" apt-get install -y -q --no-install-recommends "${missing[@]}"
check_cmake
log "installed: ${missing[*]}"
