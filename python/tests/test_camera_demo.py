"""The camera trio of docs/broadcast.md: the C++ camera (shmring-camera
camera) publishes frames on a reliable broadcast ring; the C++ recorder
(shmring-camera record) and the Python viewer (examples/camera_viewer.py,
numpy views of the slots) each read and verify every frame at once. With a
CUDA device, the same trio with the camera a CUDA kernel
(shmring-gpu-camera) drawing the frames in place."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _find(env: str, program: str) -> str | None:
    candidates = [os.environ.get(env, ""), os.path.join(ROOT, "build", "examples", program)]
    return next((c for c in candidates if c and os.access(c, os.X_OK)), None)


@pytest.mark.parametrize("source", ["cpu", "gpu"])
def test_camera_feeds_a_python_viewer_and_a_recorder(tmp_path, source):
    np = pytest.importorskip("numpy")
    import shmring

    camera = _find("SHMRING_CAMERA", "shmring-camera")
    if camera is None:
        pytest.skip("shmring-camera not built (build/examples/shmring-camera or $SHMRING_CAMERA)")
    camera_cmd = [camera, "camera"]
    if source == "gpu":
        gpu_camera = _find("SHMRING_GPU_CAMERA", "shmring-gpu-camera")
        if gpu_camera is None or shmring.gpu_count() == 0:
            pytest.skip("no CUDA device, or shmring-gpu-camera not built")
        camera_cmd = [gpu_camera]
    name = f"shmring-camera-test-{os.getpid()}-{source}"
    frames, width, height = 120, 320, 240
    frame_bytes = 64 + width * height * 3
    recording = tmp_path / "frames.raw"
    common = ["--name", name, "--frames", str(frames), "--timeout", "30"]
    procs = {
        "camera": subprocess.Popen(
            [*camera_cmd, *common, "--width", str(width), "--height", str(height),
             "--subscribers", "2", "--capacity", "4"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True),
        "recorder": subprocess.Popen(
            [camera, "record", *common, "--out", str(recording)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True),
        "viewer": subprocess.Popen(
            [sys.executable, os.path.join(ROOT, "examples", "camera_viewer.py"), *common],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True),
    }
    out = {}
    try:
        for who, p in procs.items():
            stdout, stderr = p.communicate(timeout=120)
            out[who] = stdout + stderr
            assert p.returncode == 0, f"{who} exited {p.returncode}:\n{out[who]}"
    finally:
        for p in procs.values():
            if p.poll() is None:
                p.kill()
                p.wait()
    drawn = "drawn in place" if source == "gpu" else "published"
    assert f"camera: {frames} frames of {width}x{height}x3 {drawn}" in out["camera"]
    assert f"recorder: OK, all {frames} frames verified ({frames * frame_bytes} B" in out["recorder"]
    assert f"viewer:   OK, all {frames} frames verified" in out["viewer"]
    # What the recorder wrote is the stream: each frame's counter in order,
    # its pixels the pattern of that frame.
    data = np.fromfile(recording, dtype=np.uint8).reshape(frames, frame_bytes)
    counters = data[:, 16:24].copy().view("<u8").reshape(-1)
    assert counters.tolist() == list(range(frames))
    pattern = (np.arange(frame_bytes - 64, dtype=np.uint64) * 7 % 256).astype(np.uint8)
    for n in (0, 1, frames - 1):
        assert np.array_equal(data[n, 64:], pattern + np.uint8(n & 0xFF))
    assert not os.path.exists(f"/dev/shm/{name}"), "the camera left its ring behind"
