#!/usr/bin/env bash
# Runs clang-tidy (.clang-tidy at the root) on the library's sources, the
# src/ files in BUILD_DIR's compile_commands.json (configure with
# -DCMAKE_EXPORT_COMPILE_COMMANDS=ON; the presets do), and through them on
# the headers of include/shmring and src/. Fails on any finding.
#   scripts/clang_tidy.sh [BUILD_DIR]      (default: build)
# CLANG_TIDY names the binary (default: clang-tidy-14, else clang-tidy);
# JOBS (default: nproc) the parallelism.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

build_dir=${1:-build}
jobs=${JOBS:-$(nproc)}
database=$build_dir/compile_commands.json
if [[ ! -f $database ]]; then
  echo "[tidy] no $database: configure with -DCMAKE_EXPORT_COMPILE_COMMANDS=ON" >&2
  exit 1
fi
clang_tidy=${CLANG_TIDY:-}
if [[ -z $clang_tidy ]]; then
  for candidate in clang-tidy-14 clang-tidy; do
    if command -v "$candidate" >/dev/null 2>&1; then
      clang_tidy=$candidate
      break
    fi
  done
fi
if [[ -z $clang_tidy ]]; then
  echo "[tidy] clang-tidy not found (Debian: apt-get install clang-tidy)" >&2
  exit 1
fi

mapfile -t files < <(python3 - "$database" "$PWD/src/" <<'PY'
import json, os, sys
database, src = sys.argv[1], sys.argv[2]
files = set()
for entry in json.load(open(database)):
    path = os.path.normpath(os.path.join(entry["directory"], entry["file"]))
    if path.startswith(src):
        files.add(path)
print("\n".join(sorted(files)))
PY
)
if ((${#files[@]} == 0)); then
  echo "[tidy] no src/ files in $database" >&2
  exit 1
fi
echo "[tidy] $clang_tidy on ${#files[@]} files, $jobs at a time"
# The build's flags are GCC's; clang does not know some of its warnings.
# clang's "N warnings generated" counts the suppressed ones: noise.
status=0
printf '%s\n' "${files[@]}" |
  xargs -P "$jobs" -n 1 "$clang_tidy" -p "$build_dir" --quiet --extra-arg=-Wno-unknown-warning-option 2>&1 |
  { grep -v -E '^[0-9]+ warnings? (and [0-9]+ errors? )?generated\.$' || true; } || status=$?
if ((status != 0)); then
  echo "[tidy] findings above (fix them, or argue for a change to .clang-tidy)" >&2
  exit 1
fi
echo "[tidy] clean"
