#!/bin/sh
# ctest's entry to the pytest suite (label python): runs python/tests with
# the given interpreter. Exits 77, which ctest reports as skipped, where that
# interpreter has no shmring module or no pytest (install them with
# `pip install . pytest numpy`); a module that is there but fails to import
# fails the run.
python=${1:-python3}
if ! command -v "$python" >/dev/null 2>&1; then
  echo "skipped: no Python interpreter '$python'"
  exit 77
fi
missing=$("$python" -c 'import importlib.util as u; print(" ".join(m for m in ("shmring", "pytest") if u.find_spec(m) is None))') || exit 1
if [ -n "$missing" ]; then
  echo "skipped: not installed for $python: $missing (pip install . pytest numpy)"
  exit 77
fi
exec "$python" -m pytest -q -p no:cacheprovider "$(dirname "$0")"
