#!/usr/bin/env bash
# Usage: .ci/cuda_toolkit.sh DIR
#
# Installs a CUDA 13 compiler toolkit from NVIDIA's PyPI wheels into DIR (a
# virtual environment, DIR/venv) and prints, one per line, the CMake
# arguments that build shmring's CUDA parts with it: for machines with PyPI
# but neither NVIDIA's package repository nor a GPU driver (a CI runner).
# Idempotent: a second run with the wheels in place changes nothing and needs
# no network.
#
# The CUDA 13 wheels unpack into one toolkit-shaped tree,
# site-packages/nvidia/cu13: bin/nvcc (with cudafe++, ptxas, fatbinary,
# nvlink), nvvm/bin/cicc, include/ (the runtime's headers, crt/, and CCCL in
# include/cccl, where nvcc.profile looks for it), lib/ (libcudart_static.a).
# DIR/cuda links to it, so the printed paths do not depend on the Python
# version. (The CUDA 12 wheels cannot do this: nvidia-cuda-nvcc-cu12 carries
# ptxas but neither nvcc nor cicc.)
#
# Progress goes to stderr; a failure says what failed and exits non-zero.
set -euo pipefail

# One CUDA release, every component pinned, so every run compiles against the
# same compiler and headers. 13.0, the first CUDA 13: the CUDA parts need
# nvcc --std=c++20 (CUDA 12 or newer), and the CUDA 12 wheels hold no nvcc.
CUDA_WHEELS=(
  nvidia-cuda-nvcc==13.0.88
  nvidia-cuda-crt==13.0.88
  nvidia-nvvm==13.0.88
  nvidia-cuda-runtime==13.0.88
  nvidia-cuda-cccl==13.0.85
)

log() { printf '[cuda-toolkit] %s\n' "$*" >&2; }
die() {
  printf '[cuda-toolkit] error: %s\n' "$*" >&2
  exit 1
}

(($# == 1)) || die "usage: $0 DIR (where to install the toolkit)"
[[ $(uname -s -m) == "Linux x86_64" ]] || die "the CUDA wheels used here are for Linux x86-64, not $(uname -s -m)"
mkdir -p "$1"
dir=$(cd "$1" && pwd)
venv=$dir/venv

if [[ ! -x $venv/bin/python3 ]]; then
  python3 -m venv "$venv" || die "python3 -m venv $venv failed (Debian: python3-venv)"
fi
log "pip install ${CUDA_WHEELS[*]}"
"$venv/bin/python3" -m pip install -q --disable-pip-version-check "${CUDA_WHEELS[@]}" ||
  die "could not install the CUDA wheels from PyPI: ${CUDA_WHEELS[*]}"

site=$("$venv/bin/python3" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
root=$site/nvidia/cu13
for f in bin/nvcc nvvm/bin/cicc include/cuda_runtime_api.h include/cccl/cuda/atomic lib/libcudart_static.a; do
  [[ -e $root/$f ]] || die "the CUDA wheels installed no $root/$f"
done
# What the wheels leave out of a toolkit's layout: lib64 (nvcc.profile links
# from there) and the development link libcudart.so (FindCUDAToolkit requires
# it even where cudart_static is what gets linked).
ln -sfn lib "$root/lib64"
ln -sfn libcudart.so.13 "$root/lib/libcudart.so"
ln -sfn "$root" "$dir/cuda"

version=$("$dir/cuda/bin/nvcc" --version | sed -n 's/.*release \([0-9.]*\),.*/\1/p') ||
  die "$dir/cuda/bin/nvcc does not run"
[[ -n $version ]] || die "$dir/cuda/bin/nvcc --version printed no release"
log "nvcc $version in $dir/cuda ($(du -sh -L "$dir/cuda" | cut -f1))"

printf '%s\n' "-DCMAKE_CUDA_COMPILER=$dir/cuda/bin/nvcc" "-DCUDAToolkit_ROOT=$dir/cuda"
