"""``python -m shmring inspect`` and the ring-inspect command that the
package installs: ring-inspect's read commands for users who only pip
install."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

import shmring


@pytest.fixture
def name():
    n = f"shmring-pytest-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    yield n
    shmring.unlink(n, missing_ok=True)


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "shmring", *args], capture_output=True,
                          text=True, timeout=60)


def test_the_package_carries_ring_inspect():
    bundled = Path(shmring.__file__).resolve().parent / "bin" / "ring-inspect"
    assert bundled.is_file() and os.access(bundled, os.X_OK), bundled


def test_inspect_show_json_describes_a_live_ring(name):
    with shmring.create(name, kind="spsc", capacity=16, slot_size=64) as seg:
        tx, rx = seg.producer(), seg.consumer()
        for i in range(5):
            assert tx.try_push(bytes([i]) * 8)
        assert rx.try_pop() == bytes([0]) * 8
        r = run("inspect", "show", name, "--json")
        assert r.returncode == 0, r.stderr
        shown = json.loads(r.stdout)
        assert (shown["name"], shown["kind"], shown["capacity"], shown["slot_size"]) == (
            name, "spsc", 16, 64)
        assert (shown["head"], shown["tail"], shown["fill"]) == (5, 1, 4)
        # The roles are held by this live process.
        assert shown["producer"]["owner_state"] == "alive"
        assert shown["producer"]["owner_pid"] == os.getpid()
        listed = json.loads(run("inspect", "list", "--json").stdout)
        assert name in [s["name"] for s in listed["segments"]]
        tx.close()
        rx.close()


def test_inspect_reports_a_missing_ring_with_its_status(name):
    r = run("inspect", "show", name)
    assert r.returncode != 0
    assert name in r.stdout + r.stderr


def test_unknown_command_and_help():
    r = run("frobnicate")
    assert r.returncode == 2 and "unknown command 'frobnicate'" in r.stderr
    r = run("--help")
    assert r.returncode == 0 and "python -m shmring inspect" in r.stdout
    r = run("inspect", "--help")
    assert r.returncode == 0 and "watch" in r.stdout


def test_ring_inspect_command_is_installed(name):
    exe = Path(sys.executable).parent / "ring-inspect"
    if not exe.exists():
        pytest.skip("not installed as a package here (no console scripts)")
    with shmring.create(name, capacity=8, slot_size=32):
        r = subprocess.run([str(exe), "show", name, "--json"], capture_output=True, text=True,
                           timeout=60)
        assert r.returncode == 0, r.stderr
        assert json.loads(r.stdout)["capacity"] == 8
