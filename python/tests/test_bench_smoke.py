"""A smoke run of bench/python_bench.py (the full run is by hand): it runs,
verifies every message, and reports shmring's rows."""

from __future__ import annotations

import json
import os
import shutil
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


def test_gst_bundle_runs_the_gst_cuda_bench_producer_on_its_own(tmp_path):
    """bench/bundle.sh --gst (what a GPU host without GStreamer gets) and
    bench/gst_cuda_bench.py --gst-bundle: the bundle passes its own check
    (nothing but glibc from outside it, shmringsink run in an empty
    environment), and a producer run from it alone, with no GStreamer
    variable of this environment, writes frames whose checksums match."""
    pytest.importorskip("numpy")
    plugin = os.path.join(os.environ.get("GST_PLUGIN_PATH", ""), "libgstshmring.so")
    if not os.path.exists(plugin) or shutil.which("gst-launch-1.0") is None:
        pytest.skip("no GStreamer or no built shmring plugin (GST_PLUGIN_PATH)")
    bundle = tmp_path / "bundle"
    made = subprocess.run([os.path.join(ROOT, "bench", "bundle.sh"), str(bundle), "--gst",
                           "--plugin", plugin], capture_output=True, text=True, timeout=120)
    assert made.returncode == 0, made.stdout + made.stderr
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GST_", "LD_LIBRARY"))}
    run = subprocess.run(
        [sys.executable, os.path.join(ROOT, "bench", "gst_cuda_bench.py"), "--device", "cpu",
         "--gst-bundle", str(bundle), "--source", "gst", "--frames", "20", "--width", "320",
         "--height", "240", "--verify", "--json", str(tmp_path / "run.json")],
        capture_output=True, text=True, timeout=120, env=env)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "result: OK, every frame verified" in run.stdout, run.stdout
    figures = json.loads((tmp_path / "run.json").read_text())
    assert figures["frames"] == 20 and figures["bad_frames"] == 0, figures
    assert figures["source"] == "gst" and figures["ceilings_gbs"]["reader"] > 0, figures
