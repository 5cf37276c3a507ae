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


def test_events_bench_python_round_trips(monkeypatch):
    """bench/events_bench.py's Python measurements (its C++ part has the
    ctest smoke run event_rtt_bench_smoke): each round trip checks every
    message on both sides and raises on a wrong one."""
    # On the path for the echo processes too (spawned: they import it).
    monkeypatch.syspath_prepend(os.path.join(ROOT, "bench"))
    import events_bench

    cpus = events_bench.bench_cpus()
    for result in (events_bench.python_round_trip("asyncio", 200, cpus),
                   events_bench.python_round_trip("blocking", 200, cpus),
                   events_bench.pipe_round_trip(False, 200, cpus),
                   events_bench.pipe_round_trip(True, 200, cpus)):
        assert 0 < result["p50_ns"] <= result["p99_ns"], result


@pytest.mark.parametrize("write", ["full", "stamp"])
def test_gst_cuda_bench_python_producer_on_the_cpu(write):
    """bench/gst_cuda_bench.py (run by hand on a GPU host) with its Python
    producer and numpy in place of CuPy: every frame arrives, in shmringsink's
    layout, and its checksum matches the bytes read in place."""
    pytest.importorskip("numpy")
    run = subprocess.run(
        [sys.executable, os.path.join(ROOT, "bench", "gst_cuda_bench.py"), "--device", "cpu",
         "--source", "python", "--write", write, "--frames", "40", "--width", "320",
         "--height", "240", "--verify"],
        capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "frames: 40 in" in run.stdout, run.stdout
    assert "result: OK, every frame verified" in run.stdout, run.stdout
