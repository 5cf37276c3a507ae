"""``python -m shmring inspect ...``: ring-inspect's commands from Python.

The wheel carries the ring-inspect program (shmring/bin/ring-inspect); this
runs it with the arguments given, so its output (``--json`` included) and exit
status are ring-inspect's own. The ``ring-inspect`` command installed with the
package does the same.
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

USAGE = """usage: python -m shmring inspect [ring-inspect arguments]

  python -m shmring inspect list [--json]
  python -m shmring inspect show NAME [--json]
  python -m shmring inspect watch NAME [--interval MS] [--iterations N] [--json]
  python -m shmring inspect dump NAME [--count N]
  python -m shmring inspect --help     (every command and option)
"""


def _program() -> str:
    bundled = Path(__file__).resolve().parent / "bin" / "ring-inspect"
    if bundled.is_file() and os.access(bundled, os.X_OK):
        return str(bundled)
    # A build from source without the tool inside the package: one on PATH.
    found = shutil.which("ring-inspect")
    if found is None:
        raise SystemExit(
            "shmring: ring-inspect is not in this installation (shmring/bin) nor on PATH; "
            "install shmring from a wheel, or build the tools (cmake -DSHMRING_BUILD_TOOLS=ON)"
        )
    return found


def ring_inspect(args: list[str] | None = None) -> None:
    """Runs ring-inspect with `args` (default: this process's arguments) in
    place of this process."""
    argv = sys.argv[1:] if args is None else args
    program = _program()
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(program, [program, *argv])


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help", "help"):
        sys.stdout.write(USAGE)
        raise SystemExit(0 if argv else 2)
    if argv[0] != "inspect":
        sys.stderr.write(f"shmring: unknown command {argv[0]!r}\n\n{USAGE}")
        raise SystemExit(2)
    ring_inspect(argv[1:])


if __name__ == "__main__":
    main()
