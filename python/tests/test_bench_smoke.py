"""A smoke run of bench/python_bench.py (the full run is by hand): it runs,
verifies every message, and reports shmring's rows."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_python_bench_smoke(tmp_path):
    pytest.importorskip("numpy")
    out = tmp_path / "python.md"
    run = subprocess.run(
        [sys.executable, os.path.join(ROOT, "bench", "python_bench.py"), "--quick", "--reps", "1",
         "--scale", "0.5", "--transports", "shmring,shmring-poll,mpqueue", "--out", str(out)],
        capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stdout + run.stderr
    report = out.read_text()
    assert "VERIFICATION FAILED" not in run.stdout and "verification failed" not in report
    for row in ("| shmring |", "| shmring, polling |", "| multiprocessing.Queue |", "| 1 MiB |"):
        assert row in report, report
