"""The frame pipeline of the README: the C++ shmring-frames writes frames in
place, examples/python_consumer.py verifies every byte of every frame
zero-copy (on the GPU where one is visible and PyTorch or CuPy is installed)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _find_frames() -> str | None:
    candidates = [os.environ.get("SHMRING_FRAMES", ""),
                  os.path.join(ROOT, "build", "examples", "shmring-frames")]
    return next((c for c in candidates if c and os.access(c, os.X_OK)), None)


@pytest.mark.parametrize("gpu", ["none", "auto"])
def test_cpp_frames_to_python(gpu):
    pytest.importorskip("numpy")
    producer = _find_frames()
    if producer is None:
        pytest.skip("shmring-frames not built (build/examples/shmring-frames or $SHMRING_FRAMES)")
    frames = 300
    run = subprocess.run(
        [sys.executable, os.path.join(ROOT, "examples", "python_consumer.py"), "--producer", producer,
         "--frames", str(frames), "--width", "160", "--height", "120", "--capacity", "4",
         "--gpu", gpu, "--timeout", "30"],
        capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stdout + run.stderr
    assert f"result:   OK, all {frames} frames verified" in run.stdout
    assert f"{frames} frames of 57600 B written in place" in run.stdout
