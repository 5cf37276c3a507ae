#!/usr/bin/env bash
# Checks that every tracked C++ and CUDA file is laid out as .clang-format
# says; lists the files that are not, with their diff. --fix reformats them.
# clang-format 14 (Debian 12's) is what CI runs: other versions lay some
# constructs out differently, so CLANG_FORMAT may name another binary but a
# version other than 14 is reported.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

fix=0
case ${1:-} in
  --fix) fix=1 ;;
  "") ;;
  *) echo "usage: $0 [--fix]" >&2; exit 2 ;;
esac

clang_format=${CLANG_FORMAT:-}
if [[ -z $clang_format ]]; then
  for candidate in clang-format-14 clang-format; do
    if command -v "$candidate" >/dev/null 2>&1; then
      clang_format=$candidate
      break
    fi
  done
fi
if [[ -z $clang_format ]]; then
  echo "[format] clang-format not found (Debian: apt-get install clang-format)" >&2
  exit 1
fi
version=$("$clang_format" --version | sed -nE 's/.*version ([0-9]+)\..*/\1/p')
if [[ $version != 14 ]]; then
  echo "[format] warning: $clang_format is version ${version:-?}; CI checks with 14" >&2
fi

mapfile -t files < <(git ls-files -- '*.c' '*.cc' '*.cpp' '*.h' '*.hpp' '*.cu' '*.cuh')
if ((fix)); then
  "$clang_format" -i "${files[@]}"
  echo "[format] formatted ${#files[@]} files"
  exit 0
fi

bad=()
for file in "${files[@]}"; do
  if ! "$clang_format" "$file" | cmp -s - "$file"; then
    bad+=("$file")
    "$clang_format" "$file" | diff -u --label "$file" --label "$file (formatted)" "$file" - | head -n 40 || true
  fi
done
if ((${#bad[@]} > 0)); then
  echo "[format] ${#bad[@]} of ${#files[@]} files differ from .clang-format:" >&2
  printf '[format]   %s\n' "${bad[@]}" >&2
  echo "[format] run scripts/check_format.sh --fix" >&2
  exit 1
fi
echo "[format] ${#files[@]} files ok"
